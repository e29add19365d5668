//! Interface offload settings through the `SIOCETHTOOL` ioctl (the legacy
//! `ETHTOOL_STXCSUM` command of `linux/ethtool.h`), what `ethtool -K IF tx
//! off` does, without needing the ethtool binary.
//!
//! weft uses it where a peer's partial checksums cannot be completed in
//! userspace: a kernel VTEP on a veth underlay sends inner TCP with
//! CHECKSUM_PARTIAL, so tests turn TX checksum offload off on that link.

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

/// Turns TX checksum offload of `ifname` (in the calling thread's network
/// namespace) on or off.
pub fn set_tx_checksum(ifname: &str, on: bool) -> io::Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{ifname}` is not an interface name (1 to 15 bytes, no NUL)"),
        ));
    }
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
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
        }
    }
}
