//! Interface offload settings through the `SIOCETHTOOL` ioctl (the legacy
//! `ETHTOOL_STXCSUM` and `ETHTOOL_SGRO` commands of `linux/ethtool.h`), what
//! `ethtool -K IF tx off` and `gro off` do, without needing the ethtool
//! binary.
//!
//! weft uses the first where a peer's partial checksums cannot be completed
//! in userspace: a kernel VTEP on a veth underlay sends inner TCP with
//! CHECKSUM_PARTIAL, so tests turn TX checksum offload off on that link.
//! The second turns generic receive offload off on the TAPs weft opens with
//! NAPI ([`crate::napi`]): what weft writes is already merged (TCP
//! super-frames) or is small datagrams no socket asked to have merged, so
//! GRO would only add its per-frame lookups to the NAPI path.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// `struct ethtool_value` of linux/ethtool.h.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `ETHTOOL_STXCSUM`: set TX checksum offload.
const ETHTOOL_STXCSUM: u32 = 0x17;
/// `ETHTOOL_SGRO`: set generic receive offload.
const ETHTOOL_SGRO: u32 = 0x2c;

/// Turns TX checksum offload of `ifname` (in the calling thread's network
/// namespace) on or off.
pub fn set_tx_checksum(ifname: &str, on: bool) -> io::Result<()> {
    set_value(ifname, ETHTOOL_STXCSUM, on)
}

/// Turns generic receive offload of `ifname` (in the calling thread's
/// network namespace) on or off.
pub fn set_gro(ifname: &str, on: bool) -> io::Result<()> {
    set_value(ifname, ETHTOOL_SGRO, on)
}

/// One legacy `ETHTOOL_S*` command with an on/off value.
fn set_value(ifname: &str, cmd: u32, on: bool) -> io::Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{ifname}` is not an interface name (1 to 15 bytes, no NUL)"),
        ));
    }
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    let mut value = EthtoolValue {
        cmd,
        data: u32::from(on),
    };
    let mut req = libc::ifreq {
        ifr_name: [0; libc::IFNAMSIZ],
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_data: (&mut value as *mut EthtoolValue).cast(),
        },
    };
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` names the interface (checked above to fit with its NUL,
    // the rest zeroed) and points at `value`; both outlive the call, and
    // the descriptor is open.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut req) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_the_kernel_is_asked() {
        for bad in ["", "sixteen-bytes-xx", "a\0b"] {
            let e = set_tx_checksum(bad, false).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            let e = set_gro(bad, false).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
