//! Raw Ethernet access to an existing interface through an `AF_PACKET`
//! socket (`packet(7)`).
//!
//! A [`PacketSocket`] is a `SOCK_RAW` packet socket for every protocol
//! (`ETH_P_ALL`) bound to one interface of the *calling thread's* network
//! namespace (use [`run_in_netns`](super::netns::run_in_netns) to open one
//! elsewhere; the descriptor keeps working from any thread afterwards). It
//! is non-blocking and close-on-exec, and is how weft reaches the world
//! through a host interface (the "uplink") with a MAC and IP of its own, the
//! way a VM on a macvlan would:
//!
//! * [`set_promiscuous`](PacketSocket::set_promiscuous) adds a
//!   `PACKET_MR_PROMISC` membership, so unicast frames to weft's MAC get past
//!   the NIC's filter. The kernel drops the membership when the socket is
//!   closed, so a crashed daemon does not leave the interface promiscuous.
//! * Our own transmissions are not read back: `PACKET_IGNORE_OUTGOING`
//!   (Linux ≥ 4.20) keeps them out of the receive queue, and on older
//!   kernels [`recv_frame`](PacketSocket::recv_frame) skips frames whose
//!   `sll_pkttype` is `PACKET_OUTGOING` (which also hides frames the host
//!   itself sends on the interface).
//! * With `PACKET_AUXDATA` the kernel says, per frame, whether its transport
//!   checksum is not filled in yet (`TP_STATUS_CSUMNOTREADY`: a frame
//!   generated on this host with checksum offload, or a TCP super-frame
//!   built by GRO); see [`RecvMeta::csum_not_ready`]. It also reports the
//!   802.1Q tag the receive path has stripped, which
//!   [`recv_frame`](PacketSocket::recv_frame) puts back so the caller sees
//!   the frame as it was on the wire.
//! * A large receive buffer ([`DEFAULT_RECV_BUFFER`]) absorbs bursts while
//!   the datapath is busy.

use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

use super::tap::validate_ifname;

/// Receive buffer requested by [`PacketSocket::open`]: 8 MiB.
///
/// Set with `SO_RCVBUFFORCE` when the caller has `CAP_NET_ADMIN`, otherwise
/// with `SO_RCVBUF`, which the kernel caps at `net.core.rmem_max`.
pub const DEFAULT_RECV_BUFFER: usize = 8 << 20;

/// `sll_pkttype` of a frame addressed to this interface's MAC.
pub const PACKET_HOST: u8 = libc::PACKET_HOST;
/// `sll_pkttype` of a broadcast frame.
pub const PACKET_BROADCAST: u8 = libc::PACKET_BROADCAST;
/// `sll_pkttype` of a multicast frame.
pub const PACKET_MULTICAST: u8 = libc::PACKET_MULTICAST;
/// `sll_pkttype` of a unicast frame to another MAC (seen in promiscuous
/// mode, or on interfaces that do no filtering, like veth).
pub const PACKET_OTHERHOST: u8 = libc::PACKET_OTHERHOST;
/// `sll_pkttype` of a frame sent by this host.
pub const PACKET_OUTGOING: u8 = libc::PACKET_OUTGOING;

/// `ARPHRD_ETHER` from `<linux/if_arp.h>`: the hardware type of Ethernet
/// interfaces.
const ARPHRD_ETHER: u16 = 1;
/// `ETH_P_8021Q`: the TPID of a customer VLAN tag.
const ETH_P_8021Q: u16 = 0x8100;
/// Length of an 802.1Q tag (TPID and TCI).
const VLAN_TAG_LEN: usize = 4;
/// Offset of the ethertype (or the first tag's TPID) in an Ethernet header.
const ETHERTYPE_OFFSET: usize = 12;

/// Errors from [`PacketSocket::open`] and the socket's configuration
/// methods.
#[derive(Debug, Error)]
pub enum PacketError {
    /// The interface name was rejected before any system call was made.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No interface of that name exists in the namespace.
    #[error(
        "network interface {name} not found in this network namespace \
         (see `ip link` for the available interfaces)"
    )]
    NotFound {
        /// The interface name.
        name: String,
        /// The error from `ioctl(SIOCGIFINDEX)` or `bind(2)` (`ENODEV`).
        #[source]
        source: io::Error,
    },
    /// The caller may not open packet sockets.
    #[error("permission denied to open a packet socket on {name} (needs CAP_NET_RAW)")]
    Permission {
        /// The interface name.
        name: String,
        /// The error from `socket(2)`.
        #[source]
        source: io::Error,
    },
    /// The interface does not carry Ethernet frames (a loopback, TUN,
    /// WireGuard or IP-in-IP device, for instance).
    #[error(
        "network interface {name} is not an Ethernet interface \
         (hardware type {hw_type}, see `ip -d link show {name}`)"
    )]
    NotEthernet {
        /// The interface name.
        name: String,
        /// Its `ARPHRD_*` hardware type.
        hw_type: u16,
    },
    /// Any other system error.
    #[error("failed to {op} packet socket on {name}")]
    Io {
        /// The interface name.
        name: String,
        /// What was being done.
        op: &'static str,
        /// The error from the system call.
        #[source]
        source: io::Error,
    },
}

/// What [`PacketSocket::recv_frame`] learnt about a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Length of the frame written at the start of the buffer.
    pub len: usize,
    /// The frame was longer than the buffer; only `len` bytes were kept.
    pub truncated: bool,
    /// The frame's transport checksum is not filled in yet
    /// (`TP_STATUS_CSUMNOTREADY`, the kernel's `CHECKSUM_PARTIAL`): the
    /// checksum field holds the pseudo-header sum and must be completed
    /// before the frame leaves the host, for example with
    /// `weft_datapath::uplink::complete_partial_csum`.
    pub csum_not_ready: bool,
    /// The NIC or the kernel has verified the frame's transport checksum
    /// (`TP_STATUS_CSUM_VALID`).
    pub csum_valid: bool,
    /// The `PACKET_*` type of the frame (`sll_pkttype`): [`PACKET_HOST`],
    /// [`PACKET_BROADCAST`], [`PACKET_MULTICAST`] or [`PACKET_OTHERHOST`].
    pub pkt_type: u8,
    /// The 802.1Q tag control information (priority, DEI, VLAN ID) of a tag
    /// the kernel had stripped and that was put back into the frame.
    pub vlan_tci: Option<u16>,
}

/// `struct ifreq`: the name, then a union of at most 24 bytes on 64-bit
/// targets (of which the calls here use an `int` or a `struct sockaddr`).
#[repr(C, align(8))]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> IfReq {
        let mut ifr = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        // The name was validated: at most IFNAMSIZ - 1 bytes, no NUL.
        for (dst, src) in ifr.name.iter_mut().zip(name.as_bytes()) {
            *dst = *src as libc::c_char;
        }
        ifr
    }

    fn int(&self) -> libc::c_int {
        libc::c_int::from_ne_bytes([self.data[0], self.data[1], self.data[2], self.data[3]])
    }
}

/// Control-message buffer for one `PACKET_AUXDATA` message, aligned for
/// `struct cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// An `AF_PACKET` socket bound to one Ethernet interface; see the
/// [module docs](self).
pub struct PacketSocket {
    fd: OwnedFd,
    name: String,
    ifindex: u32,
    ignores_outgoing: bool,
    promiscuous: AtomicBool,
}

impl fmt::Debug for PacketSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketSocket")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .field("fd", &self.fd.as_raw_fd())
            .field("ignores_outgoing", &self.ignores_outgoing)
            .field("promiscuous", &self.promiscuous.load(Ordering::Relaxed))
            .finish()
    }
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value points to a live `c_int` whose size is passed
    // along; the descriptor is open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl PacketSocket {
    /// Opens a packet socket on the interface `name` of the calling
    /// thread's network namespace.
    ///
    /// The socket receives frames of every protocol from that interface
    /// only, has `PACKET_AUXDATA` and (where the kernel supports it)
    /// `PACKET_IGNORE_OUTGOING` enabled, and asks for a receive buffer of
    /// [`DEFAULT_RECV_BUFFER`] bytes. It is not promiscuous yet (see
    /// [`set_promiscuous`](Self::set_promiscuous)). The interface need not
    /// be up, but nothing is received, and sending fails, while it is down.
    pub fn open(name: &str) -> Result<PacketSocket, PacketError> {
        validate_ifname(name).map_err(|reason| PacketError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        let io_err = |op: &'static str| {
            move |source: io::Error| PacketError::Io {
                name: name.to_owned(),
                op,
                source,
            }
        };

        // Protocol 0: nothing is queued until `bind` below names the
        // protocol and the interface, so no frame of another interface
        // slips in meanwhile.
        // SAFETY: socket(2) with constant arguments; no pointers involved.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            let source = io::Error::last_os_error();
            let name = name.to_owned();
            return Err(match source.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => PacketError::Permission { name, source },
                _ => PacketError::Io {
                    name,
                    op: "create",
                    source,
                },
            });
        }
        // SAFETY: `raw` is a descriptor socket(2) just returned, owned by
        // nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut ifr = IfReq::new(name);
        // SAFETY: `ifr` is a writable `struct ifreq`-sized buffer that
        // outlives the call; SIOCGIFINDEX reads the name and writes an int.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX, &mut ifr as *mut IfReq) };
        if rc < 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::ENODEV) => PacketError::NotFound {
                    name: name.to_owned(),
                    source,
                },
                _ => io_err("look up the interface for a")(source),
            });
        }
        let ifindex = ifr.int() as u32;

        let mut sock = PacketSocket {
            fd,
            name: name.to_owned(),
            ifindex,
            ignores_outgoing: false,
            promiscuous: AtomicBool::new(false),
        };

        let (hw_type, _) = sock
            .hw_addr()
            .map_err(io_err("read the hardware address for a"))?;
        if hw_type != ARPHRD_ETHER {
            return Err(PacketError::NotEthernet {
                name: name.to_owned(),
                hw_type,
            });
        }

        setsockopt_int(&sock.fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)
            .map_err(io_err("enable PACKET_AUXDATA on a"))?;
        sock.ignores_outgoing =
            match setsockopt_int(&sock.fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1) {
                Ok(()) => true,
                // Before Linux 4.20: recv_frame filters them instead.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EINVAL)) => {
                    false
                }
                Err(e) => return Err(io_err("enable PACKET_IGNORE_OUTGOING on a")(e)),
            };
        sock.set_recv_buffer(DEFAULT_RECV_BUFFER)
            .map_err(io_err("set the receive buffer size of a"))?;

        // SAFETY: an all-zero `sockaddr_ll` is a valid value (plain integers
        // and arrays).
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `addr` is a fully initialised `sockaddr_ll` whose size is
        // passed along; the descriptor is open.
        let rc = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) => PacketError::NotFound {
                    name: name.to_owned(),
                    source,
                },
                _ => io_err("bind a")(source),
            });
        }
        Ok(sock)
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.name
    }

    /// The interface index (in the socket's network namespace).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether the kernel keeps our own transmissions out of the receive
    /// queue (`PACKET_IGNORE_OUTGOING`, Linux ≥ 4.20). Either way
    /// [`recv_frame`](Self::recv_frame) never returns them.
    pub fn ignores_outgoing(&self) -> bool {
        self.ignores_outgoing
    }

    /// Whether this socket holds a promiscuous membership.
    pub fn is_promiscuous(&self) -> bool {
        self.promiscuous.load(Ordering::Relaxed)
    }

    /// Adds (`true`) or drops (`false`) this socket's `PACKET_MR_PROMISC`
    /// membership on the interface, so that it receives unicast frames to
    /// any MAC. The interface stays promiscuous while any socket (or `ip
    /// link set promisc on`) asks for it; the kernel drops the membership
    /// when the socket is closed. Idempotent.
    pub fn set_promiscuous(&self, on: bool) -> Result<(), PacketError> {
        if self.promiscuous.swap(on, Ordering::AcqRel) == on {
            return Ok(());
        }
        // SAFETY: an all-zero `packet_mreq` is a valid value (integers and
        // an array).
        let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
        mreq.mr_ifindex = self.ifindex as libc::c_int;
        mreq.mr_type = libc::PACKET_MR_PROMISC as libc::c_ushort;
        let opt = if on {
            libc::PACKET_ADD_MEMBERSHIP
        } else {
            libc::PACKET_DROP_MEMBERSHIP
        };
        // SAFETY: the option value points to a live `packet_mreq` whose size
        // is passed along; the descriptor is open.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                opt,
                (&mreq as *const libc::packet_mreq).cast(),
                mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let source = io::Error::last_os_error();
            self.promiscuous.store(!on, Ordering::Release);
            return Err(PacketError::Io {
                name: self.name.clone(),
                op: if on {
                    "enable promiscuous mode through a"
                } else {
                    "disable promiscuous mode through a"
                },
                source,
            });
        }
        Ok(())
    }

    /// Asks for a receive buffer of `bytes` (`SO_RCVBUFFORCE`, falling back
    /// to `SO_RCVBUF` without `CAP_NET_ADMIN`, which the kernel caps at
    /// `net.core.rmem_max`).
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        let value = bytes.min(libc::c_int::MAX as usize / 2) as libc::c_int;
        match setsockopt_int(&self.fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                setsockopt_int(&self.fd, libc::SOL_SOCKET, libc::SO_RCVBUF, value)
            }
            Err(e) => Err(e),
        }
    }

    /// The receive buffer size as the kernel reports it (`SO_RCVBUF`: twice
    /// the requested size, for bookkeeping overhead).
    pub fn recv_buffer(&self) -> io::Result<usize> {
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live locals; the kernel writes at
        // most `len` bytes to `value` and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(value.max(0) as usize)
        }
    }

    /// Runs a `SIOCGIF*` ioctl for this interface on the socket.
    fn ifreq_ioctl(&self, request: libc::Ioctl) -> io::Result<IfReq> {
        let mut ifr = IfReq::new(&self.name);
        // SAFETY: `ifr` is a writable `struct ifreq`-sized buffer that
        // outlives the call; the SIOCGIF* requests used here read the name
        // and write at most the union.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request, &mut ifr as *mut IfReq) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ifr)
        }
    }

    /// The hardware type and address (`SIOCGIFHWADDR`).
    fn hw_addr(&self) -> io::Result<(u16, [u8; 6])> {
        let ifr = self.ifreq_ioctl(libc::SIOCGIFHWADDR)?;
        // struct sockaddr: sa_family (u16), then sa_data.
        let family = u16::from_ne_bytes([ifr.data[0], ifr.data[1]]);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&ifr.data[2..8]);
        Ok((family, mac))
    }

    /// The interface's current MAC address (`SIOCGIFHWADDR`). This is the
    /// host's address on the link, not weft's.
    pub fn mac(&self) -> io::Result<[u8; 6]> {
        self.hw_addr().map(|(_, mac)| mac)
    }

    /// The interface's current MTU (`SIOCGIFMTU`): the largest IP packet
    /// it sends, so the largest frame [`send`](Self::send) accepts is 14
    /// bytes longer (18 with a VLAN tag).
    pub fn mtu(&self) -> io::Result<u32> {
        let ifr = self.ifreq_ioctl(libc::SIOCGIFMTU)?;
        Ok(ifr.int().max(0) as u32)
    }

    /// Receives one frame into `buf` and returns its length; see
    /// [`recv_frame`](Self::recv_frame).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_frame(buf).map(|meta| meta.len)
    }

    /// Receives one frame into `buf`, skipping frames this host sent.
    ///
    /// A frame longer than `buf` is truncated ([`RecvMeta::truncated`]).
    /// A VLAN tag stripped by the receive path is put back after the MAC
    /// addresses ([`RecvMeta::vlan_tci`]), taking 4 more bytes of `buf`.
    /// Returns `WouldBlock` when no frame is queued.
    pub fn recv_frame(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        loop {
            // SAFETY: an all-zero `sockaddr_ll` is a valid value.
            let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut cmsg = CmsgBuf([0; 64]);
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: an all-zero `msghdr` is a valid value (null pointers
            // and zero lengths); it may have private padding fields, so it
            // cannot be built with a literal.
            let mut msg: libc::msghdr = unsafe { mem::zeroed() };
            msg.msg_name = (&mut addr as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg.0.as_mut_ptr().cast();
            msg.msg_controllen = cmsg.0.len() as _;

            // SAFETY: `msg` points to `addr`, `iov` (covering `buf`) and
            // `cmsg`, all live and writable for the stated lengths for the
            // duration of the call.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if addr.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            // With MSG_TRUNC, recvmsg returns the frame's real length.
            let full = n as usize;
            let mut meta = RecvMeta {
                len: full.min(buf.len()),
                truncated: full > buf.len(),
                csum_not_ready: false,
                csum_valid: false,
                pkt_type: addr.sll_pkttype,
                vlan_tci: None,
            };

            if let Some(aux) = auxdata(&msg) {
                meta.csum_not_ready = aux.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0;
                meta.csum_valid = aux.tp_status & libc::TP_STATUS_CSUM_VALID != 0;
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        ETH_P_8021Q
                    };
                    reinsert_vlan_tag(buf, &mut meta, tpid, aux.tp_vlan_tci);
                }
            }
            return Ok(meta);
        }
    }

    /// Sends one complete Ethernet frame (no preamble or FCS) out of the
    /// interface. The frame must fit the interface's MTU (`EMSGSIZE`
    /// otherwise); `WouldBlock` (or `ENOBUFS`) means the device's queue is
    /// full.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: `frame` is a valid readable region of `frame.len()`
            // bytes for the duration of the call; the socket is bound, so
            // no destination address is needed.
            let n =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n as usize != frame.len() {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "packet socket on {} sent {n} of {} bytes",
                        self.name,
                        frame.len()
                    ),
                ));
            }
            return Ok(());
        }
    }
}

/// The `PACKET_AUXDATA` control message of a received frame, if any.
fn auxdata(msg: &libc::msghdr) -> Option<libc::tpacket_auxdata> {
    // SAFETY: `msg` was filled in by a successful recvmsg, so its control
    // pointer and (kernel-updated) length describe valid control messages.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR only return non-null pointers
        // to complete headers inside the control buffer.
        let hdr = unsafe { &*cmsg };
        if hdr.cmsg_level == libc::SOL_PACKET && hdr.cmsg_type == libc::PACKET_AUXDATA {
            // SAFETY: CMSG_LEN is pure arithmetic on its argument.
            let needed = unsafe { libc::CMSG_LEN(mem::size_of::<libc::tpacket_auxdata>() as u32) };
            if (hdr.cmsg_len as usize) < needed as usize {
                return None;
            }
            // SAFETY: the message's length covers a whole `tpacket_auxdata`
            // after the header; the data may be unaligned, hence
            // read_unaligned.
            let aux = unsafe {
                std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::tpacket_auxdata>())
            };
            return Some(aux);
        }
        // SAFETY: `cmsg` is a valid header within `msg`'s control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    None
}

/// Puts an 802.1Q/802.1ad tag back after the MAC addresses of the frame at
/// the start of `buf`, updating `meta` (the last 4 bytes are lost, and the
/// frame marked truncated, if `buf` is full).
fn reinsert_vlan_tag(buf: &mut [u8], meta: &mut RecvMeta, tpid: u16, tci: u16) {
    if meta.len < ETHERTYPE_OFFSET || buf.len() < ETHERTYPE_OFFSET + VLAN_TAG_LEN {
        return;
    }
    let end = (meta.len + VLAN_TAG_LEN).min(buf.len());
    if end < meta.len + VLAN_TAG_LEN {
        meta.truncated = true;
    }
    buf.copy_within(
        ETHERTYPE_OFFSET..end - VLAN_TAG_LEN,
        ETHERTYPE_OFFSET + VLAN_TAG_LEN,
    );
    buf[ETHERTYPE_OFFSET..ETHERTYPE_OFFSET + 2].copy_from_slice(&tpid.to_be_bytes());
    buf[ETHERTYPE_OFFSET + 2..ETHERTYPE_OFFSET + 4].copy_from_slice(&tci.to_be_bytes());
    meta.len = end;
    meta.vlan_tci = Some(tci);
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(len: usize) -> RecvMeta {
        RecvMeta {
            len,
            truncated: false,
            csum_not_ready: false,
            csum_valid: false,
            pkt_type: PACKET_HOST,
            vlan_tci: None,
        }
    }

    #[test]
    fn vlan_tag_is_reinserted_after_the_macs() {
        let mut buf = [0u8; 32];
        let frame: Vec<u8> = (1..=20).collect();
        buf[..20].copy_from_slice(&frame);
        let mut m = meta(20);
        reinsert_vlan_tag(&mut buf, &mut m, 0x8100, 0x2064);
        assert_eq!(m.len, 24);
        assert!(!m.truncated);
        assert_eq!(m.vlan_tci, Some(0x2064));
        assert_eq!(&buf[..12], &frame[..12]);
        assert_eq!(&buf[12..16], &[0x81, 0x00, 0x20, 0x64]);
        assert_eq!(&buf[16..24], &frame[12..]);
    }

    #[test]
    fn vlan_tag_in_a_full_buffer_truncates() {
        let mut buf: Vec<u8> = (1..=20).collect();
        let mut m = meta(20);
        reinsert_vlan_tag(&mut buf, &mut m, 0x88a8, 7);
        assert_eq!(m.len, 20);
        assert!(m.truncated);
        assert_eq!(&buf[12..16], &[0x88, 0xa8, 0, 7]);
        assert_eq!(&buf[16..20], &[13, 14, 15, 16]);
    }

    #[test]
    fn invalid_name_is_rejected_before_any_syscall() {
        let err = PacketSocket::open("this-name-is-too-long").unwrap_err();
        assert!(matches!(err, PacketError::InvalidName { .. }), "{err:?}");
    }
}
