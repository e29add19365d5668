//! Linux TAP devices on `/dev/net/tun`.
//!
//! A [`Tap`] owns the file descriptor returned by opening `/dev/net/tun` and
//! attaching it to a fresh TAP interface with `TUNSETIFF`. The interface is
//! created in the network namespace of the *calling thread* (the kernel
//! records the namespace when `/dev/net/tun` is opened); use
//! [`run_in_netns`](super::netns::run_in_netns) to create one elsewhere. The
//! descriptor keeps working from any thread and namespace afterwards.
//!
//! A new device is not persistent: dropping the [`Tap`] closes the
//! descriptor and the kernel removes the interface. [`Tap::set_persist`]
//! (`TUNSETPERSIST`) makes it outlive its descriptor, so a daemon can exit
//! or be killed and the interface stays, with its addresses, MAC and
//! routes; [`Tap::reattach`] takes such a device back by name. Dropping a
//! persistent [`Tap`] clears the flag first, so an explicit removal still
//! removes the device; only a process that ends without dropping it (exit,
//! `kill -9`) leaves the device behind.
//!
//! With [`TapOptions::napi`] the device is multi-queue, so that a second
//! queue whose receive processing runs in a kernel thread can be attached
//! beside the first ([`crate::napi`]); both descriptors belong to the
//! [`Tap`].
//!
//! Frames are plain Ethernet frames (`IFF_NO_PI`). With
//! [`TapOptions::vnet_hdr`] every frame read or written is preceded by a
//! 12-byte [`VirtioNetHdr`] (`virtio_net_hdr_v1`, the same layout as
//! `virtio_net_hdr_mrg_rxbuf`), which carries checksum and segmentation
//! offload metadata; enable the offloads themselves with
//! [`Tap::set_offload`].

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use thiserror::Error;

use crate::napi::NapiQueue;

/// Path of the TUN/TAP clone device.
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const IFNAME_MAX_LEN: usize = 15;

/// `TUNSETOFFLOAD`: the reader of the TAP accepts frames with partial
/// checksums (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
pub const TUN_F_CSUM: u32 = 0x01;
/// `TUNSETOFFLOAD`: the reader accepts TCP-over-IPv4 GSO frames.
pub const TUN_F_TSO4: u32 = 0x02;
/// `TUNSETOFFLOAD`: the reader accepts TCP-over-IPv6 GSO frames.
pub const TUN_F_TSO6: u32 = 0x04;
/// `TUNSETOFFLOAD`: the reader accepts TSO frames with ECN (CWR) set.
pub const TUN_F_TSO_ECN: u32 = 0x08;

/// Length in bytes of the virtio-net header used with `vnet_hdr` TAPs.
pub const VIRTIO_NET_HDR_LEN: usize = 12;
/// `VirtioNetHdr::flags`: the checksum at `csum_start + csum_offset` must be
/// completed (it holds the pseudo-header sum).
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `VirtioNetHdr::flags`: the checksum has been validated.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// `VirtioNetHdr::gso_type`: not a GSO frame.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `VirtioNetHdr::gso_type`: TCP over IPv4 segmentation.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `VirtioNetHdr::gso_type`: UDP fragmentation (UFO).
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `VirtioNetHdr::gso_type`: TCP over IPv6 segmentation.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `VirtioNetHdr::gso_type` bit: the TCP segments carry ECN.
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// Why a [`Tap`] made without [`TapOptions::napi`] has no NAPI queue.
const NO_NAPI: &str = "the TAP was made with a single queue, without NAPI";

/// How to create a [`Tap`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// Prefix every frame with a 12-byte [`VirtioNetHdr`] (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// Create a multi-queue device (`IFF_MULTI_QUEUE`).
    pub multi_queue: bool,
    /// Make the device multi-queue, so that a second queue with NAPI can
    /// be attached beside this plain one ([`crate::napi`]).
    pub napi: bool,
}

/// Errors from [`Tap::create`].
#[derive(Debug, Error)]
pub enum TapError {
    /// The interface name was rejected before any system call was made.
    #[error("invalid TAP interface name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// `/dev/net/tun` could not be opened.
    #[error("failed to open {TUN_DEVICE} to create TAP {name}")]
    Open {
        /// The interface that was to be created.
        name: String,
        /// The error from `open(2)`.
        #[source]
        source: io::Error,
    },
    /// An interface with this name already exists in the namespace.
    #[error("cannot create TAP {name}: an interface with that name already exists")]
    NameInUse {
        /// The interface name.
        name: String,
        /// The error from `TUNSETIFF` (`EBUSY`).
        #[source]
        source: io::Error,
    },
    /// `TUNSETIFF` failed.
    #[error("failed to create TAP {name} (TUNSETIFF)")]
    Create {
        /// The interface name.
        name: String,
        /// The error from `ioctl(2)`.
        #[source]
        source: io::Error,
    },
    /// `TUNSETPERSIST` failed.
    #[error("failed to make TAP {name} persistent (TUNSETPERSIST)")]
    Persist {
        /// The interface name.
        name: String,
        /// The error from `ioctl(2)`.
        #[source]
        source: io::Error,
    },
    /// The interface to re-attach to is not a TAP weft can take back.
    #[error("cannot take back TAP {name}: it is not a TAP device with the expected flags, or another process holds it")]
    Reattach {
        /// The interface name.
        name: String,
        /// The error from `TUNSETIFF` (`EINVAL`, `EBUSY` or `EPERM`).
        #[source]
        source: io::Error,
    },
    /// `TUNSETVNETHDRSZ` failed.
    #[error("failed to set the virtio-net header size on TAP {name} (TUNSETVNETHDRSZ)")]
    VnetHdrSize {
        /// The interface name.
        name: String,
        /// The error from `ioctl(2)`.
        #[source]
        source: io::Error,
    },
}

/// Checks `name` the way the kernel's `dev_valid_name()` does.
///
/// Returns the reason on failure.
pub fn validate_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > IFNAME_MAX_LEN {
        return Err("the name is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are not interface names");
    }
    if name.contains('/') {
        return Err("the name contains '/'");
    }
    if name.contains(':') {
        return Err("the name contains ':'");
    }
    if name.contains('\0') {
        return Err("the name contains a NUL byte");
    }
    if name.chars().any(char::is_whitespace) {
        return Err("the name contains whitespace");
    }
    Ok(())
}

/// `struct ifreq` as used by `TUNSETIFF`: the name followed by the flags in
/// the union (which is 24 bytes on 64-bit targets, 16 on 32-bit; 24 is enough
/// for both since the kernel copies `sizeof(struct ifreq)`, at most 40).
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A TAP interface, removed when this value is dropped.
pub struct Tap {
    fd: OwnedFd,
    name: String,
    vnet_hdr: bool,
    /// Whether `TUNSETPERSIST` is set, so drop must clear it.
    persistent: bool,
    /// The device's second queue, whose NAPI runs threaded
    /// ([`crate::napi`]), or why weft has none.
    napi: Result<NapiQueue, String>,
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap")
            .field("name", &self.name)
            .field("fd", &self.fd.as_raw_fd())
            .field("vnet_hdr", &self.vnet_hdr)
            .finish()
    }
}

impl Tap {
    /// Creates the TAP interface `name` in the calling thread's network
    /// namespace and attaches to it.
    ///
    /// The interface is created with `IFF_TUN_EXCL`, so an existing interface
    /// (TAP or not) with the same name is an error ([`TapError::NameInUse`])
    /// rather than something to attach to. The new interface is down and has
    /// a random MAC address.
    pub fn create(name: &str, opts: TapOptions) -> Result<Tap, TapError> {
        Self::open(name, opts, true)
    }

    /// Attaches to the existing persistent TAP `name` of the calling
    /// thread's namespace (made by [`Tap::create`] and
    /// [`Tap::set_persist`], its descriptor since closed). The device keeps
    /// its configuration; the returned [`Tap`] is persistent.
    ///
    /// Beware: `TUNSETIFF` creates the device when it does not exist, so
    /// check that it does first. A device that is not a TAP, has other
    /// queue flags or is held by another descriptor is refused
    /// ([`TapError::Reattach`]).
    pub fn reattach(name: &str, opts: TapOptions) -> Result<Tap, TapError> {
        let mut tap = Self::open(name, opts, false).map_err(|e| match e {
            TapError::Create { name, source } | TapError::NameInUse { name, source } => {
                TapError::Reattach { name, source }
            }
            other => other,
        })?;
        tap.persistent = true;
        Ok(tap)
    }

    fn open(name: &str, opts: TapOptions, exclusive: bool) -> Result<Tap, TapError> {
        validate_ifname(name).map_err(|reason| TapError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if exclusive {
            flags |= libc::IFF_TUN_EXCL;
        }
        if opts.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if opts.multi_queue || opts.napi {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let (fd, actual) = attach_queue(name, flags)?;

        if opts.vnet_hdr {
            let size: libc::c_int = VIRTIO_NET_HDR_LEN as libc::c_int;
            // SAFETY: `fd` is attached to a TAP; TUNSETVNETHDRSZ reads one
            // `int` through the pointer, which points to a live local.
            let rc = unsafe {
                libc::ioctl(
                    fd.as_raw_fd(),
                    libc::TUNSETVNETHDRSZ,
                    &size as *const libc::c_int,
                )
            };
            if rc < 0 {
                return Err(TapError::VnetHdrSize {
                    name: actual,
                    source: io::Error::last_os_error(),
                });
            }
        }

        Ok(Tap {
            fd,
            name: actual,
            vnet_hdr: opts.vnet_hdr,
            persistent: false,
            napi: Err(NO_NAPI.to_owned()),
        })
    }

    /// Attaches a second queue with NAPI (`IFF_NAPI`) to this multi-queue
    /// TAP (made with [`TapOptions::napi`]), in the calling thread's
    /// namespace, which must be the device's.
    pub(crate) fn attach_napi_queue(&self) -> Result<OwnedFd, TapError> {
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | libc::IFF_NAPI;
        if self.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        let (fd, _) = attach_queue(&self.name, flags)?;
        Ok(fd)
    }
}

/// Opens `/dev/net/tun` and attaches it to TAP `name` with `flags`
/// (`TUNSETIFF`): a new device, or a queue of an existing one. Returns the
/// descriptor and the name the kernel gave the device.
fn attach_queue(name: &str, flags: libc::c_int) -> Result<(OwnedFd, String), TapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(|source| TapError::Open {
            name: name.to_owned(),
            source,
        })?;
    let fd = OwnedFd::from(file);
    let mut ifr = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: flags as libc::c_short,
        _pad: [0; 22],
    };
    for (dst, src) in ifr.name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }

    // SAFETY: `fd` is an open /dev/net/tun descriptor and `ifr` is a
    // properly initialised, writable `struct ifreq`-sized buffer that
    // outlives the call; TUNSETIFF reads and writes at most that struct.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut IfReq) };
    if rc < 0 {
        let source = io::Error::last_os_error();
        let name = name.to_owned();
        return Err(match source.raw_os_error() {
            Some(libc::EBUSY) | Some(libc::EEXIST) => TapError::NameInUse { name, source },
            _ => TapError::Create { name, source },
        });
    }

    // The kernel writes back the final name (relevant for "%d" templates).
    let len = ifr
        .name
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(ifr.name.len());
    let actual: Vec<u8> = ifr.name[..len].iter().map(|&c| c as u8).collect();
    let actual = String::from_utf8(actual).unwrap_or_else(|_| name.to_owned());

    Ok((fd, actual))
}

impl Tap {
    /// Makes the device outlive this descriptor (`TUNSETPERSIST`), or not.
    pub fn set_persist(&mut self, persist: bool) -> Result<(), TapError> {
        // SAFETY: TUNSETPERSIST takes its argument by value; the descriptor
        // is attached to a TAP.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETPERSIST,
                libc::c_ulong::from(persist),
            )
        };
        if rc < 0 {
            return Err(TapError::Persist {
                name: self.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        self.persistent = persist;
        Ok(())
    }

    /// Gives up the descriptor without clearing `TUNSETPERSIST`: closing
    /// it leaves a persistent device in place, as a process exit does.
    pub fn into_fd(self) -> OwnedFd {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped or used again, so the descriptor
        // is moved out exactly once; `name` is dropped in place below.
        let fd = unsafe { std::ptr::read(&this.fd) };
        // SAFETY: as above, for the name's heap buffer.
        drop(unsafe { std::ptr::read(&this.name) });
        // SAFETY: as above, for the NAPI queue's descriptors.
        drop(unsafe { std::ptr::read(&this.napi) });
        fd
    }

    /// Whether the device outlives its descriptor.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// A TAP attached through a descriptor made elsewhere (received from
    /// the rootless helper, [`crate::userns`]).
    pub(crate) fn from_parts(fd: OwnedFd, name: String, vnet_hdr: bool) -> Tap {
        Tap {
            fd,
            name,
            vnet_hdr,
            persistent: false,
            napi: Err(NO_NAPI.to_owned()),
        }
    }

    /// Keeps the device's NAPI queue with it, or why there is none.
    pub(crate) fn set_napi(&mut self, napi: Result<NapiQueue, String>) {
        self.napi = napi;
    }

    /// The device's second queue, with NAPI ([`crate::napi`]), or why
    /// weft has none.
    pub fn napi(&self) -> Result<&NapiQueue, &str> {
        self.napi.as_ref().map_err(String::as_str)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether frames carry a [`VirtioNetHdr`] prefix.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Switches the descriptors (both queues') between blocking and
    /// non-blocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        set_nonblocking(self.fd.as_fd(), nonblocking)?;
        if let Ok(napi) = &self.napi {
            set_nonblocking(napi.as_fd(), nonblocking)?;
        }
        Ok(())
    }

    /// Reads one frame (with its virtio-net header if enabled) into `buf`.
    ///
    /// A frame longer than `buf` is truncated. In non-blocking mode, returns
    /// `WouldBlock` when no frame is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        read(self.fd.as_fd(), buf)
    }

    /// Writes one frame (with its virtio-net header if enabled).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid readable region of `buf.len()` bytes for
        // the duration of the call; the descriptor is open.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one frame gathered from several slices (typically the
    /// virtio-net header and the frame) with a single `writev`.
    pub fn write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Ok(nix::sys::uio::writev(&self.fd, bufs)?)
    }

    /// Tells the kernel which offloads the reader of this TAP handles
    /// (`TUNSETOFFLOAD`; a combination of the `TUN_F_*` constants).
    ///
    /// Any non-zero `flags` require a TAP created with
    /// [`TapOptions::vnet_hdr`], since the offload metadata travels in the
    /// virtio-net header; otherwise this returns `InvalidInput`.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        if flags != 0 && !self.vnet_hdr {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "TAP {}: offloads need a virtio-net header (create it with vnet_hdr)",
                    self.name
                ),
            ));
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the descriptor
        // is attached to a TAP.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                flags as libc::c_ulong,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Switches `fd` between blocking and non-blocking mode.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL on an open descriptor; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: F_SETFL on an open descriptor with an integer argument.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads one frame from a TAP queue into `buf`.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable region of `buf.len()` bytes for
    // the duration of the call; the descriptor is open.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl Drop for Tap {
    /// Clears `TUNSETPERSIST` so that closing the descriptor removes the
    /// device, as for a device that was never persistent.
    fn drop(&mut self) {
        if self.persistent {
            let _ = self.set_persist(false);
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The virtio-net header (`struct virtio_net_hdr_v1`) that precedes frames on
/// a TAP created with [`TapOptions::vnet_hdr`]. Multi-byte fields are
/// little-endian on the wire (the kernel uses the host byte order unless told
/// otherwise, and weft only targets little-endian hosts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*` flags.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*` type, optionally with the ECN bit.
    pub gso_type: u8,
    /// Length of the Ethernet + IP + transport headers (GSO).
    pub hdr_len: u16,
    /// Payload size of each segment (GSO).
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the frame.
    pub csum_start: u16,
    /// Where the checksum is stored, from `csum_start`.
    pub csum_offset: u16,
    /// Number of merged receive buffers (unused on TAPs, 0).
    pub num_buffers: u16,
}

impl VirtioNetHdr {
    /// Parses the header from the first [`VIRTIO_NET_HDR_LEN`] bytes of
    /// `buf`; `None` if `buf` is shorter.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let b = buf.get(..VIRTIO_NET_HDR_LEN)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        })
    }

    /// Writes the header into the first [`VIRTIO_NET_HDR_LEN`] bytes of
    /// `buf`.
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`VIRTIO_NET_HDR_LEN`].
    pub fn write_to(&self, buf: &mut [u8]) {
        let b = &mut buf[..VIRTIO_NET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; VIRTIO_NET_HDR_LEN] {
        let mut b = [0; VIRTIO_NET_HDR_LEN];
        self.write_to(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::run_in_netns;
    use crate::testns::{ip_json, TestNs};

    #[test]
    fn constants_match_libc() {
        assert_eq!(TUN_F_CSUM, libc::TUN_F_CSUM);
        assert_eq!(TUN_F_TSO4, libc::TUN_F_TSO4);
        assert_eq!(TUN_F_TSO6, libc::TUN_F_TSO6);
        assert_eq!(TUN_F_TSO_ECN, libc::TUN_F_TSO_ECN);
        assert!(std::mem::size_of::<IfReq>() >= 32);
        assert!(std::mem::size_of::<IfReq>() <= 40);
    }

    #[test]
    fn rejects_bad_names_before_any_syscall() {
        for bad in ["", "a-very-long-name", "a/b", "a b", "tab\tx", "..", "a:b"] {
            match Tap::create(bad, TapOptions::default()) {
                Err(TapError::InvalidName { name, .. }) => assert_eq!(name, bad),
                other => panic!("{bad:?}: expected InvalidName, got {other:?}"),
            }
        }
        assert!(validate_ifname("exactly15bytes_").is_ok());
        assert!(validate_ifname("eth0").is_ok());
    }

    #[test]
    fn virtio_net_hdr_round_trips() {
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0x0102,
        };
        let mut buf = [0xffu8; 20];
        hdr.write_to(&mut buf);
        assert_eq!(
            &buf[..12],
            &[0x01, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0x02, 0x01]
        );
        assert_eq!(buf[12], 0xff, "write_to must not touch bytes after 12");
        assert_eq!(VirtioNetHdr::parse(&buf), Some(hdr));
        assert_eq!(VirtioNetHdr::parse(&hdr.to_bytes()), Some(hdr));
        assert_eq!(VirtioNetHdr::parse(&buf[..11]), None);
        assert_eq!(VirtioNetHdr::default().to_bytes(), [0; 12]);
    }

    #[test]
    fn tap_lifecycle_in_netns() {
        let Some(ns) = TestNs::new("tap-life") else {
            return;
        };
        let tap = run_in_netns(ns.path(), || Tap::create("weft-tl0", TapOptions::default()))
            .expect("run_in_netns")
            .expect("create tap");
        assert_eq!(tap.name(), "weft-tl0");
        assert!(!tap.vnet_hdr());
        let links = ip_json(&ns, &["link", "show", "dev", "weft-tl0"]);
        assert_eq!(links[0]["ifname"], "weft-tl0");
        assert!(tap.as_raw_fd() >= 0);

        // A second TAP with the same name is refused, not attached to.
        let again = run_in_netns(ns.path(), || Tap::create("weft-tl0", TapOptions::default()))
            .expect("run_in_netns");
        assert!(
            matches!(again, Err(TapError::NameInUse { .. })),
            "{again:?}"
        );

        // Offloads need the virtio-net header.
        assert_eq!(
            tap.set_offload(TUN_F_CSUM).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        tap.set_offload(0)
            .expect("clearing offloads is always fine");

        tap.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        // The link is down, so nothing is queued.
        assert_eq!(
            tap.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        tap.set_nonblocking(false).unwrap();

        drop(tap);
        assert!(
            ns.wait_link_gone("weft-tl0"),
            "TAP still present after drop"
        );
    }

    #[test]
    fn vnet_hdr_tap_accepts_offloads() {
        let Some(ns) = TestNs::new("tap-vnet") else {
            return;
        };
        let tap = run_in_netns(ns.path(), || {
            Tap::create(
                "weft-tv0",
                TapOptions {
                    vnet_hdr: true,
                    multi_queue: true,
                    napi: false,
                },
            )
        })
        .expect("run_in_netns")
        .expect("create vnet_hdr tap");
        assert!(tap.vnet_hdr());
        tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            .expect("set_offload");
        tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)
            .expect("set_offload with ECN");
        let links = ip_json(&ns, &["link", "show", "dev", "weft-tv0"]);
        assert_eq!(links[0]["ifname"], "weft-tv0");
    }
}
