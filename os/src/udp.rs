//! The UDP side of a VTEP (RFC 7348 §4-5): batched, non-blocking receive
//! and send of VXLAN datagrams with UDP GSO and GRO, shaped like quinn-udp.
//!
//! A [`VxlanSocket`] owns one receive socket, bound to the VTEP's listen
//! address (normally UDP port 4789), and a pool of send
//! sockets bound to kernel-chosen ephemeral ports.
//!
//! - **Outer source port.** RFC 7348 §5 recommends that the outer UDP
//!   source port be "calculated using a hash of fields from the inner
//!   packet", so that ECMP in the underlay spreads tunnelled flows while
//!   keeping each flow on one path. A userspace process cannot choose an
//!   arbitrary source port per datagram on a UDP socket, so
//!   [`VxlanSocket::send`] picks send socket `flow_hash % n` from a pool of
//!   `n`: every inner flow keeps one source port, and flows spread over `n`
//!   ports.
//! - **No fragmentation.** RFC 7348 §4.3: VTEPs must not fragment VXLAN
//!   packets. Every socket is set to `IP_PMTUDISC_DO`, so the kernel sets
//!   DF and a datagram larger than the path MTU fails with `EMSGSIZE`
//!   instead of leaving in fragments.
//! - **Batching.** [`VxlanSocket::recv_batch`] fills up to [`BATCH_SIZE`]
//!   caller-owned buffers with one `recvmmsg`; its message headers, iovecs
//!   and control buffers are stack arrays, so the fast path allocates
//!   nothing.
//! - **Offloads, probed then lowered.** UDP GSO (`UDP_SEGMENT`, Linux 4.18)
//!   is probed once at bind; [`VxlanSocket::send_gso`] sends a run of
//!   equal-size datagrams with one `sendmsg`, and turns GSO off for good
//!   if the kernel or driver refuses it at run time (`EIO`, or `EINVAL`
//!   where plain sends of the same segments work), as quinn-udp does. UDP
//!   GRO (`UDP_GRO`, Linux 5.0) is opt-in through
//!   [`VxlanSocket::enable_gro`]; a coalesced buffer is reported with its
//!   [`RecvMeta::stride`].
//! - **RCO guard.** The receive socket drops VXLAN datagrams that claim
//!   remote checksum offload without an outer UDP checksum, in the kernel
//!   ([`crate::rco_guard`]).
//!
//! Linux only: `recvmmsg`, `UDP_SEGMENT` and `UDP_GRO` are Linux APIs.
//!
//! Sockets are created, bound and configured with `socket2` and `nix`, and
//! single sends go through `nix`'s `sendmsg`. Only the batched receive
//! calls `recvmmsg` through `libc` directly, for the datapath's rule that
//! nothing on the per-packet path allocates or takes a lock: nix's
//! `recvmmsg` needs a `MultiHeaders`, either allocated per call (three
//! heap allocations) or kept in the socket, where it is neither `Send` nor
//! usable through `&self` without a lock. [`VxlanSocket::recv_batch`]
//! keeps its headers, iovecs and control buffers on the stack instead.
//! (Throughput alone does not decide it: on loopback, 1400-byte datagrams
//! in batches of 64 and of 1, the two were within measurement noise.)

use std::io::{self, IoSlice};
use std::mem::{self, size_of, MaybeUninit};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt, ControlMessage, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::cmsg::{self, CmsgBuf, CMSG_BUF_LEN};

// `IP_MTU_DISCOVER`, which neither nix nor socket2 wraps. (The macro
// expands to other nix macros by their bare names.)
use nix::{setsockopt_impl, sockopt_impl};
sockopt_impl!(
    /// `IP_MTU_DISCOVER`: path MTU discovery mode (`IP_PMTUDISC_*`).
    IpMtuDiscover,
    SetOnly,
    libc::IPPROTO_IP,
    libc::IP_MTU_DISCOVER,
    libc::c_int
);

/// Most datagrams one [`VxlanSocket::recv_batch`] call returns.
pub const BATCH_SIZE: usize = 64;

/// Largest UDP payload in one IPv4 datagram: 65535 - 20 (IPv4) - 8 (UDP).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Segments one GSO send may carry: `UDP_MAX_SEGMENTS` in `linux/udp.h`
/// (64 on every kernel with `UDP_SEGMENT`; some newer kernels allow more).
const UDP_MAX_SEGMENTS: usize = 64;

/// Socket buffer size asked for on every socket. `SO_RCVBUFFORCE` /
/// `SO_SNDBUFFORCE` (root or `CAP_NET_ADMIN`) get it whole; otherwise the
/// kernel caps it at `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Why a [`VxlanSocket`] could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// `socket(AF_INET, SOCK_DGRAM)` failed (out of descriptors or memory).
    #[error("cannot create a UDP socket")]
    Create(#[source] io::Error),
    /// The receive socket could not be bound: typically the address is in
    /// use (`EADDRINUSE`) or not an address of this host (`EADDRNOTAVAIL`).
    #[error("cannot bind the VXLAN receive socket to {addr}")]
    Bind {
        /// The listen address asked for.
        addr: SocketAddrV4,
        #[source]
        source: io::Error,
    },
    /// A send socket could not be bound to an ephemeral port.
    #[error("cannot bind VXLAN send socket {index} to {addr}")]
    BindSend {
        /// Which socket of the pool.
        index: usize,
        /// The address asked for (the listen address with port 0).
        addr: SocketAddrV4,
        #[source]
        source: io::Error,
    },
    /// A socket option the VTEP relies on was refused.
    #[error("cannot set {option} on a VXLAN socket")]
    SetOption {
        /// The option, as its C name.
        option: &'static str,
        #[source]
        source: io::Error,
    },
}

impl SocketError {
    /// The underlying system error.
    pub fn io_error(&self) -> &io::Error {
        match self {
            SocketError::Create(source)
            | SocketError::Bind { source, .. }
            | SocketError::BindSend { source, .. }
            | SocketError::SetOption { source, .. } => source,
        }
    }
}

/// What [`VxlanSocket::recv_batch`] learned about one received buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecvMeta {
    /// Bytes received into the buffer.
    pub len: usize,
    /// Size of each datagram in the buffer: the GRO segment size when the
    /// kernel coalesced several datagrams of one flow into it (only after
    /// [`VxlanSocket::enable_gro`]), else `len`. Every datagram but the
    /// last is exactly `stride` bytes; use [`RecvMeta::datagrams`] to split.
    pub stride: usize,
    /// The sender (outer source address and port).
    pub src: SocketAddrV4,
    /// The datagram was longer than the buffer and its tail was discarded
    /// (`MSG_TRUNC`). A truncated buffer must not be decapsulated.
    pub truncated: bool,
}

impl Default for RecvMeta {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            stride: 0,
            src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            truncated: false,
        }
    }
}

impl RecvMeta {
    /// Splits the received bytes of `buf` (the buffer this metadata came
    /// with) into its datagrams, at every `stride` bytes. An empty datagram
    /// yields one empty slice.
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`RecvMeta::len`].
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> Datagrams<'a> {
        Datagrams {
            rest: &buf[..self.len],
            stride: self.stride.max(1),
            empty_pending: self.len == 0,
        }
    }
}

/// Iterator over the datagrams of one received buffer; see
/// [`RecvMeta::datagrams`].
#[derive(Debug, Clone)]
pub struct Datagrams<'a> {
    rest: &'a [u8],
    stride: usize,
    empty_pending: bool,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.empty_pending {
            self.empty_pending = false;
            return Some(self.rest);
        }
        if self.rest.is_empty() {
            return None;
        }
        let (head, tail) = self.rest.split_at(self.stride.min(self.rest.len()));
        self.rest = tail;
        Some(head)
    }
}

/// The UDP sockets of one VTEP: a receive socket on the listen address and
/// a pool of send sockets on ephemeral ports. See the [module
/// docs](self).
///
/// All methods take `&self`: the sockets are non-blocking and the offload
/// state is atomic, so one `VxlanSocket` may be shared between a receiving
/// and a sending thread.
#[derive(Debug)]
pub struct VxlanSocket {
    recv: Socket,
    /// Empty when the receive socket also sends.
    send: Vec<Socket>,
    local: SocketAddrV4,
    send_ports: Vec<u16>,
    /// Segments per GSO send; 1 when GSO is unsupported or was switched off.
    max_gso_segments: AtomicUsize,
    gro_enabled: AtomicBool,
}

impl VxlanSocket {
    /// Binds the receive socket to `listen` and `send_sockets` send sockets
    /// to `listen`'s address with port 0 (the kernel picks an ephemeral
    /// port for each). With `send_sockets == 0`, datagrams are sent from
    /// the receive socket.
    ///
    /// The send sockets share the listen address so that the outer source
    /// address is the VTEP's own even on a multi-homed host; with an
    /// unspecified listen address (0.0.0.0) the kernel chooses it by route.
    ///
    /// Every socket is non-blocking and close-on-exec, has large socket
    /// buffers ([`SOCKET_BUFFER_BYTES`]) and refuses to fragment
    /// (`IP_PMTUDISC_DO`). `SO_REUSEADDR` is deliberately not set: on Linux
    /// it would let a second VTEP bind the same UDP port and silently take
    /// part of the traffic, where an `EADDRINUSE` error is what an operator
    /// needs to see.
    pub fn bind(listen: SocketAddrV4, send_sockets: usize) -> Result<Self, SocketError> {
        let recv = new_udp_socket()?;
        set_buffer_sizes(&recv)?;
        set_no_fragment(&recv)?;
        crate::rco_guard::attach(&recv).map_err(|source| SocketError::SetOption {
            option: "SO_ATTACH_FILTER (remote checksum offload guard)",
            source,
        })?;
        recv.bind(&SockAddr::from(listen))
            .map_err(|source| SocketError::Bind {
                addr: listen,
                source,
            })?;
        let local = local_addr(&recv).map_err(|source| SocketError::Bind {
            addr: listen,
            source,
        })?;

        let send_addr = SocketAddrV4::new(*listen.ip(), 0);
        let mut send = Vec::with_capacity(send_sockets);
        let mut send_ports = Vec::with_capacity(send_sockets.max(1));
        for index in 0..send_sockets {
            let fd = new_udp_socket()?;
            set_buffer_sizes(&fd)?;
            set_no_fragment(&fd)?;
            let bound = fd
                .bind(&SockAddr::from(send_addr))
                .and_then(|()| local_addr(&fd))
                .map_err(|source| SocketError::BindSend {
                    index,
                    addr: send_addr,
                    source,
                })?;
            send_ports.push(bound.port());
            send.push(fd);
        }
        if send.is_empty() {
            send_ports.push(local.port());
        }

        Ok(VxlanSocket {
            recv,
            send,
            local,
            send_ports,
            max_gso_segments: AtomicUsize::new(probe_gso()),
            gro_enabled: AtomicBool::new(false),
        })
    }

    /// The address the receive socket is bound to (with the real port when
    /// bound to port 0).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The receive socket's descriptor, to register with a poller (mio's
    /// `SourceFd`). It becomes readable when [`Self::recv_batch`] has work.
    pub fn recv_fd(&self) -> RawFd {
        self.recv.as_raw_fd()
    }

    /// The outer UDP source ports datagrams leave from, indexed by
    /// `flow_hash % len`: one per send socket, or the listen port when the
    /// receive socket sends.
    pub fn send_ports(&self) -> Vec<u16> {
        self.send_ports.clone()
    }

    /// The outer UDP source port [`Self::send`] uses for `flow_hash`.
    pub fn send_port(&self, flow_hash: u32) -> u16 {
        self.send_ports[self.pool_index(flow_hash)]
    }

    /// The receive socket's buffer size as the kernel reports it (Linux
    /// doubles the requested size to account for its bookkeeping).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        self.recv.recv_buffer_size()
    }

    /// Asks the kernel to coalesce received datagrams of one flow into one
    /// buffer (`UDP_GRO`, Linux 5.0) and returns whether it accepted.
    ///
    /// Once enabled, [`Self::recv_batch`] may return up to 64 KiB in one
    /// buffer, split by [`RecvMeta::stride`], so every receive buffer should
    /// hold at least [`MAX_UDP_PAYLOAD`] bytes; a smaller one may come back
    /// [`RecvMeta::truncated`].
    pub fn enable_gro(&self) -> bool {
        let ok = setsockopt(&self.recv, sockopt::UdpGroSegment, &true).is_ok();
        if ok {
            self.gro_enabled.store(true, Ordering::Relaxed);
        }
        ok
    }

    /// Whether [`Self::enable_gro`] succeeded.
    pub fn gro_enabled(&self) -> bool {
        self.gro_enabled.load(Ordering::Relaxed)
    }

    /// Segments one `sendmsg` in [`Self::send_gso`] carries: more than 1
    /// when UDP GSO works, 1 when it is unsupported or was switched off
    /// after the kernel refused it.
    pub fn max_gso_segments(&self) -> usize {
        self.max_gso_segments.load(Ordering::Relaxed)
    }

    /// Whether [`Self::send_gso`] uses UDP GSO (see
    /// [`Self::max_gso_segments`]).
    pub fn gso_supported(&self) -> bool {
        self.max_gso_segments() > 1
    }

    /// Receives up to `min(bufs.len(), meta.len(), BATCH_SIZE)` datagrams
    /// (or GRO-coalesced runs of datagrams) with one non-blocking
    /// `recvmmsg`, filling `bufs[i]` and `meta[i]` for each `i` below the
    /// returned count.
    ///
    /// Returns `WouldBlock` when nothing is waiting, and `Ok(0)` only when
    /// there is no room (`bufs` or `meta` empty). Interrupted calls are
    /// retried. Allocates nothing.
    pub fn recv_batch(&self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let n = bufs.len().min(meta.len()).min(BATCH_SIZE);
        if n == 0 {
            return Ok(0);
        }
        let mut names = [MaybeUninit::<libc::sockaddr_in>::uninit(); BATCH_SIZE];
        let mut iovs = [MaybeUninit::<libc::iovec>::uninit(); BATCH_SIZE];
        let mut ctrl = [MaybeUninit::<CmsgBuf>::uninit(); BATCH_SIZE];
        let mut hdrs = [MaybeUninit::<libc::mmsghdr>::uninit(); BATCH_SIZE];
        for i in 0..n {
            let iov = iovs[i].write(libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: bufs[i].len(),
            });
            let mut msg = zeroed_msghdr();
            msg.msg_name = names[i].as_mut_ptr().cast();
            msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = iov;
            msg.msg_iovlen = 1;
            msg.msg_control = ctrl[i].as_mut_ptr().cast();
            msg.msg_controllen = CMSG_BUF_LEN as _;
            hdrs[i].write(libc::mmsghdr {
                msg_hdr: msg,
                msg_len: 0,
            });
        }
        let got = loop {
            // SAFETY: the first `n` entries of `hdrs` are initialised and
            // point at `n` iovecs (each covering one live, exclusively
            // borrowed buffer of `bufs`), `n` sockaddr_in slots and `n`
            // aligned control buffers of CMSG_BUF_LEN bytes, all of which
            // outlive the call. MaybeUninit<T> has T's layout, so the cast
            // pointer addresses an array of `n` mmsghdr. The timeout is null.
            let r = unsafe {
                libc::recvmmsg(
                    self.recv.as_raw_fd(),
                    hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        for i in 0..got {
            // SAFETY: entry `i < got <= n` was initialised above, and the
            // kernel filled in its results.
            let hdr = unsafe { hdrs[i].assume_init_ref() };
            let len = hdr.msg_len as usize;
            let msg = &hdr.msg_hdr;
            let src = if msg.msg_namelen as usize >= size_of::<libc::sockaddr_in>() {
                // SAFETY: the kernel wrote a whole sockaddr_in (msg_namelen
                // says so) into `names[i]`.
                let sin = unsafe { names[i].assume_init_ref() };
                if sin.sin_family == libc::AF_INET as libc::sa_family_t {
                    sockaddr_to_v4(sin)
                } else {
                    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)
                }
            } else {
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)
            };
            // SAFETY: `msg_control` points at `ctrl[i]`, aligned and
            // CMSG_BUF_LEN bytes long, and the kernel set `msg_controllen`
            // to the length of the control messages it wrote there.
            let gro = unsafe { cmsg::find::<libc::c_int>(msg, libc::SOL_UDP, libc::UDP_GRO) };
            let stride = match gro {
                Some(size) if size > 0 => size as usize,
                _ => len,
            };
            meta[i] = RecvMeta {
                len,
                stride,
                src,
                truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        Ok(got)
    }

    /// Sends the concatenation of `parts` (typically the 8-byte VXLAN header
    /// and the inner frame) as one datagram to `dst`, from send socket
    /// `flow_hash % n`, with one `sendmsg`.
    ///
    /// Errors are the kernel's: `WouldBlock` when the socket buffer is full,
    /// `EMSGSIZE` (`raw_os_error() == Some(libc::EMSGSIZE)`) when the
    /// datagram exceeds [`MAX_UDP_PAYLOAD`] or the path MTU (VXLAN packets
    /// are never fragmented). Interrupted calls are retried.
    pub fn send(&self, dst: SocketAddrV4, flow_hash: u32, parts: &[IoSlice<'_>]) -> io::Result<()> {
        self.sendmsg(self.send_fd(flow_hash), dst, parts, None)
    }

    /// Sends `buf` to `dst` as consecutive datagrams of `segment_size`
    /// bytes (the last may be shorter), from send socket `flow_hash % n`.
    ///
    /// With UDP GSO each run of up to [`Self::max_gso_segments`] datagrams
    /// (and at most 64 KiB) takes one `sendmsg` with a `UDP_SEGMENT` control
    /// message; without it, each datagram takes one [`Self::send`]. If the
    /// kernel refuses a GSO send with `EIO` (a device without checksum
    /// offload), or with `EINVAL` where plain sends of the same segments
    /// then succeed, GSO is switched off for this socket and the call
    /// completes by sending the segments one by one.
    ///
    /// On error some leading datagrams may already have been sent. A
    /// `segment_size` of 0 is `InvalidInput`.
    pub fn send_gso(
        &self,
        dst: SocketAddrV4,
        flow_hash: u32,
        buf: &[u8],
        segment_size: u16,
    ) -> io::Result<()> {
        if segment_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "GSO segment size must not be 0",
            ));
        }
        let seg = usize::from(segment_size);
        let fd = self.send_fd(flow_hash);
        let mut sent = 0;
        while sent < buf.len() {
            let max = self.max_gso_segments();
            let per_call = max.min(MAX_UDP_PAYLOAD / seg);
            let rest = &buf[sent..];
            if per_call <= 1 || rest.len() <= seg {
                let one = &rest[..seg.min(rest.len())];
                self.sendmsg(fd, dst, &[IoSlice::new(one)], None)?;
                sent += one.len();
                continue;
            }
            let run = &rest[..rest.len().min(per_call * seg)];
            match self.sendmsg(fd, dst, &[IoSlice::new(run)], Some(segment_size)) {
                Ok(()) => sent += run.len(),
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    // The device cannot checksum segmented UDP: GSO is off
                    // for good, and the loop resends this run one by one.
                    self.max_gso_segments.store(1, Ordering::Relaxed);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // EINVAL may also mean the segment does not fit the
                    // path MTU: send the first segment alone, and switch
                    // GSO off only if that works.
                    let one = &run[..seg];
                    self.sendmsg(fd, dst, &[IoSlice::new(one)], None)?;
                    sent += one.len();
                    self.max_gso_segments.store(1, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn pool_index(&self, flow_hash: u32) -> usize {
        flow_hash as usize % self.send_ports.len()
    }

    fn send_fd(&self, flow_hash: u32) -> RawFd {
        if self.send.is_empty() {
            self.recv.as_raw_fd()
        } else {
            self.send[self.pool_index(flow_hash)].as_raw_fd()
        }
    }

    /// One `sendmsg` of `parts` to `dst`, with a `UDP_SEGMENT` control
    /// message when `segment` is set. Retries on `EINTR`.
    fn sendmsg(
        &self,
        fd: RawFd,
        dst: SocketAddrV4,
        parts: &[IoSlice<'_>],
        segment: Option<u16>,
    ) -> io::Result<()> {
        let name = SockaddrIn::from(dst);
        let segment_size = segment.unwrap_or(0);
        let gso = [ControlMessage::UdpGsoSegments(&segment_size)];
        let cmsgs: &[ControlMessage<'_>] = if segment.is_some() { &gso } else { &[] };
        loop {
            match nix::sys::socket::sendmsg(fd, parts, cmsgs, MsgFlags::empty(), Some(&name)) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsRawFd for VxlanSocket {
    /// The receive socket, as [`VxlanSocket::recv_fd`].
    fn as_raw_fd(&self) -> RawFd {
        self.recv_fd()
    }
}

fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain data (integers and raw pointers, plus padding
    // fields on some libcs); all-zero is a valid, empty value.
    unsafe { mem::zeroed() }
}

fn sockaddr_to_v4(sin: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
        u16::from_be(sin.sin_port),
    )
}

/// A non-blocking, close-on-exec IPv4 UDP socket.
fn new_udp_socket() -> Result<Socket, SocketError> {
    Socket::new(
        Domain::IPV4,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )
    .map_err(SocketError::Create)
}

fn local_addr(socket: &Socket) -> io::Result<SocketAddrV4> {
    socket.local_addr()?.as_socket_ipv4().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "an IPv4 socket reports a non-IPv4 address",
        )
    })
}

/// `IP_PMTUDISC_DO`: DF on every datagram, `EMSGSIZE` instead of
/// fragmentation (RFC 7348 §4.3).
fn set_no_fragment(socket: &Socket) -> Result<(), SocketError> {
    setsockopt(socket, IpMtuDiscover, &libc::IP_PMTUDISC_DO).map_err(|e| SocketError::SetOption {
        option: "IP_MTU_DISCOVER",
        source: e.into(),
    })
}

/// Sets both socket buffers to [`SOCKET_BUFFER_BYTES`]: the `*FORCE`
/// variants first (they need `CAP_NET_ADMIN`), else the plain ones, which
/// the kernel caps at `net.core.{r,w}mem_max`.
fn set_buffer_sizes(socket: &Socket) -> Result<(), SocketError> {
    let size = SOCKET_BUFFER_BYTES;
    if setsockopt(socket, sockopt::RcvBufForce, &size).is_err() {
        socket
            .set_recv_buffer_size(size)
            .map_err(|source| SocketError::SetOption {
                option: "SO_RCVBUF",
                source,
            })?;
    }
    if setsockopt(socket, sockopt::SndBufForce, &size).is_err() {
        socket
            .set_send_buffer_size(size)
            .map_err(|source| SocketError::SetOption {
                option: "SO_SNDBUF",
                source,
            })?;
    }
    Ok(())
}

/// Segments per GSO send this kernel supports: [`UDP_MAX_SEGMENTS`] if it
/// accepts `UDP_SEGMENT` on a scratch socket, else 1. The option is sticky
/// (it would segment every later send), hence the separate socket.
fn probe_gso() -> usize {
    let Ok(socket) = new_udp_socket() else {
        return 1;
    };
    match setsockopt(&socket, sockopt::UdpGsoSegment, &1500) {
        Ok(()) => UDP_MAX_SEGMENTS,
        // EINVAL / ENOPROTOOPT: a kernel older than 4.18. Anything else
        // also means GSO cannot be relied on.
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_to_v4_reads_network_order() {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 4789u16.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([192, 0, 2, 7]),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(
            sockaddr_to_v4(&sin),
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 4789)
        );
    }

    #[test]
    fn datagrams_split_at_stride() {
        let buf: Vec<u8> = (0..25).collect();
        let meta = RecvMeta {
            len: 25,
            stride: 10,
            ..RecvMeta::default()
        };
        let parts: Vec<&[u8]> = meta.datagrams(&buf).collect();
        assert_eq!(parts, [&buf[..10], &buf[10..20], &buf[20..]]);

        let single = RecvMeta {
            len: 7,
            stride: 7,
            ..RecvMeta::default()
        };
        assert_eq!(single.datagrams(&buf).count(), 1);

        let empty = RecvMeta::default();
        let parts: Vec<&[u8]> = empty.datagrams(&buf).collect();
        assert_eq!(parts, [&[][..]]);
    }
}
