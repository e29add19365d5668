//! The socket uplink: the I/O half of `weft-hostnet`.
//!
//! [`SocketUplink`] sits where the AF_PACKET uplink would: the switch
//! sends it the frames it routes out (already masqueraded to the uplink
//! address, so the endpoints' flows arrive as flows of one host) and
//! receives from it the frames coming back. Behind it there is no link,
//! only the daemon's own sockets:
//!
//! * ARP for any address but the uplink's is answered with the virtual
//!   host's MAC, so the switch's next hop resolves at once.
//! * TCP: each flow gets a host `SOCK_STREAM` socket connecting to the
//!   destination; [`crate::tcp`] keeps the two halves in step. A flow to
//!   the host's loopback uses [`LOOPBACK_CONGESTION`] (cubic) rather than
//!   the system default: a paced default such as BBR paces a flow that
//!   has no network to be fair to (measured, namespace → host at MTU
//!   65520 under load: 4.3–4.8 → 5.9–7.3 Gbit/s, and 1.02 → 0.85 CPU
//!   seconds per GB for the whole pipeline).
//! * UDP: each flow gets a connected host `SOCK_DGRAM` socket, closed after
//!   [`UDP_IDLE`] ([`UDP_IDLE_REPLIED`] once the far side answered), the
//!   way conntrack expires UDP entries.
//! * ICMP echo: a ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP`) per flow,
//!   where `net.ipv4.ping_group_range` lets the daemon's group open one;
//!   where it does not, the request is dropped and counted
//!   ([`Counters::ping_refused`]).
//! * The virtual host's own address ([`Config::host_ip`]) stands for the
//!   host's loopback: a flow to it connects to 127.0.0.1, and a client of
//!   a published port on the host's loopback appears as it.
//! * Published ports: a listening host socket per port; each accepted
//!   connection (each UDP client) is handed to the switch as a new flow
//!   from the client's real address to the uplink address, which the
//!   switch's DNAT sends on to the endpoint.
//!
//! All sockets are non-blocking and registered with one inner `epoll`
//! (mio); its descriptor is what the datapath polls for this port. Frames
//! are built straight into the caller's buffers: host data is peeked out
//! of the socket into the frame, behind the headers. Flows live in a slab
//! sized at start (its map reserved to match), so the steady state
//! allocates nothing.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use rustc_hash::FxHashMap;
use socket2::{Domain, Protocol as SockProto, Socket, Type};

use crate::tcp::{self, Phase, Segment, TcpConn, ACK, FIN, PSH, RST, SYN};
use crate::wire::{self, Link, L3_END, TCP_HEADERS, UDP_HEADERS};
use weft_os::hostsock;
use weft_packet::{
    MacAddr, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HEADER_LEN, IP_PROTO_ICMP, IP_PROTO_TCP,
    IP_PROTO_UDP,
};
use weft_switch::frame::{Offload, NO_OFFLOAD};

/// A UDP flow nobody answered is closed after this long idle.
pub const UDP_IDLE: Duration = Duration::from_secs(30);
/// A UDP flow that saw an answer is closed after this long idle.
pub const UDP_IDLE_REPLIED: Duration = Duration::from_secs(180);
/// A ping flow is closed after this long idle.
pub const ICMP_IDLE: Duration = Duration::from_secs(30);
/// Sent data not acknowledged for this long is sent again.
pub const RETRANSMIT_AFTER: Duration = Duration::from_millis(300);
/// A handshake weft started towards an endpoint gives up after this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often timers are checked.
const TICK: Duration = Duration::from_millis(100);
/// Flows the uplink carries at once unless told otherwise.
pub const DEFAULT_MAX_FLOWS: usize = 16384;
/// Control frames (ACK, SYN, RST, ARP) waiting for the next receive call.
const PENDING_CAP: usize = 4096;
/// Largest TCP payload in one frame: an IPv4 packet is at most 64 KiB.
const MAX_TCP_PAYLOAD: usize = 65535 - 40;
/// Largest UDP payload: an IPv4 datagram is at most 64 KiB.
const MAX_UDP_PAYLOAD: usize = 65535 - 28;
/// The congestion control of host sockets to the host's loopback: one
/// that does not pace (see [`SocketUplink`]'s TCP flows).
pub const LOOPBACK_CONGESTION: &[u8] = b"cubic";
/// Published ports one uplink listens on.
pub const MAX_LISTENERS: usize = 1000;

const WAKE: Token = Token(0);
const TIMER: Token = Token(1);
const LISTENER_BASE: usize = 16;
const FLOW_BASE: usize = LISTENER_BASE + MAX_LISTENERS;

/// What the socket uplink is, on its virtual link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The switch's uplink address: every flow's local end.
    pub uplink_ip: Ipv4Addr,
    /// The switch's uplink MAC.
    pub uplink_mac: MacAddr,
    /// The virtual host's address: the uplink's next hop, and the host's
    /// loopback as endpoints see it.
    pub host_ip: Ipv4Addr,
    pub host_mac: MacAddr,
    pub max_flows: usize,
}

/// What the socket uplink did and refused; relaxed atomics, read by
/// anyone.
#[derive(Debug, Default)]
pub struct Counters {
    pub tcp_opened: AtomicU64,
    pub udp_opened: AtomicU64,
    pub icmp_opened: AtomicU64,
    pub published_accepted: AtomicU64,
    /// Echo requests dropped because `net.ipv4.ping_group_range` does not
    /// include the daemon's group.
    pub ping_refused: AtomicU64,
    /// New flows dropped because the flow table was full.
    pub table_full: AtomicU64,
    /// Host sockets that could not be made or connected.
    pub socket_errors: AtomicU64,
    /// Frames not understood (truncated, not IPv4, not from the uplink).
    pub malformed: AtomicU64,
    /// IPv4 protocols and ICMP types the uplink does not carry.
    pub unsupported: AtomicU64,
    /// Control frames dropped because their queue was full.
    pub pending_full: AtomicU64,
    /// Data sent again after a timeout or duplicate ACKs.
    pub retransmits: AtomicU64,
}

impl Counters {
    /// Every counter with its name, for `weft stats` and the metrics.
    pub fn all(&self) -> [(&'static str, &AtomicU64); 11] {
        [
            ("tcp_opened", &self.tcp_opened),
            ("udp_opened", &self.udp_opened),
            ("icmp_opened", &self.icmp_opened),
            ("published_accepted", &self.published_accepted),
            ("ping_refused", &self.ping_refused),
            ("table_full", &self.table_full),
            ("socket_errors", &self.socket_errors),
            ("malformed", &self.malformed),
            ("unsupported", &self.unsupported),
            ("pending_full", &self.pending_full),
            ("retransmits", &self.retransmits),
        ]
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A buffer the uplink builds one frame into: the datapath's packet
/// buffers implement it.
pub trait FrameBuf {
    /// Where the frame goes (at least `weft_switch::frame::MAX_FRAME_LEN` bytes).
    fn frame_space(&mut self) -> &mut [u8];
    /// The frame is `len` bytes long with this offload metadata.
    fn set_frame(&mut self, len: usize, offload: Offload);
}

/// Errors making the uplink.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("creating the socket uplink's poller failed")]
    Poll(#[source] io::Error),
    #[error("creating the socket uplink's timer failed")]
    Timer(#[source] nix::Error),
    #[error("serving host port {port}/{proto} failed")]
    Listen {
        port: u16,
        proto: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the socket uplink already listens on {MAX_LISTENERS} ports")]
    TooManyListeners,
}

/// A flow's identity as the switch's frames show it: protocol, the local
/// port (or echo identifier) on the uplink address, and the remote end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    proto: u8,
    port: u16,
    remote: SocketAddrV4,
}

enum Kind {
    Tcp {
        sock: TcpStream,
        conn: TcpConn,
        /// The host socket refused some of the endpoint's data: when it
        /// drains, duplicate ACKs make the endpoint resend at once.
        short_write: bool,
        /// The advertised window was small: when the socket drains, say
        /// it grew.
        want_update: bool,
        /// When acknowledged data last moved (for the retransmit timer).
        progress: Instant,
    },
    Udp {
        sock: UdpSocket,
        replied: bool,
    },
    /// A client of a published UDP port, answered through the listener.
    UdpPublished {
        listener: usize,
        client: SocketAddrV4,
    },
    Icmp {
        sock: UdpSocket,
        ident: u16,
    },
}

struct Flow {
    key: Key,
    kind: Kind,
    /// In the ready list (host data may be waiting).
    queued: bool,
    /// An ACK is queued ([`Pending::Ack`]): one carries everything, and
    /// several identical ones would look like duplicate ACKs.
    ack_queued: bool,
    last: Instant,
}

struct Slot {
    gen: u32,
    flow: Option<Flow>,
}

/// A frame to build at the next receive call.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Arp {
        ip: Ipv4Addr,
        to_mac: MacAddr,
        to_ip: Ipv4Addr,
    },
    /// A segment of flow `idx` (if still generation `gen`) with `flags`:
    /// SYN, SYN-ACK, or a deliberate duplicate ACK.
    Tcp { idx: u32, gen: u32, flags: u8 },
    /// The ACK of flow `idx`, at most one queued per flow, built with the
    /// latest sequence numbers and window.
    Ack { idx: u32, gen: u32 },
    /// A RST for a segment that has no flow.
    Rst {
        key: Key,
        seq: u32,
        ack: u32,
        flags: u8,
    },
}

/// A bound host socket for a published port: a TCP listener or a UDP
/// socket, made by whoever may bind it (the control plane, to report a
/// port in use or privileged before anything changes).
#[derive(Debug)]
pub enum HostListener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl HostListener {
    /// Binds `host` for a published port: a TCP listener (`tcp`) or a UDP
    /// socket, non-blocking.
    pub fn bind(tcp: bool, host: SocketAddrV4) -> io::Result<HostListener> {
        if tcp {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            s.bind(&SocketAddr::V4(host).into())?;
            s.listen(1024)?;
            Ok(HostListener::Tcp(s.into()))
        } else {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
            s.set_nonblocking(true)?;
            s.bind(&SocketAddr::V4(host).into())?;
            Ok(HostListener::Udp(s.into()))
        }
    }

    /// Whether it is the TCP kind, and its port.
    pub fn port(&self) -> (bool, u16) {
        let addr = match self {
            HostListener::Tcp(l) => l.local_addr(),
            HostListener::Udp(u) => u.local_addr(),
        };
        (
            matches!(self, HostListener::Tcp(_)),
            addr.map_or(0, |a| a.port()),
        )
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            HostListener::Tcp(l) => l.as_raw_fd(),
            HostListener::Udp(u) => u.as_raw_fd(),
        }
    }
}

enum Listener {
    Tcp(TcpListener, u16),
    Udp(UdpSocket, u16),
}

/// See the [module docs](self).
pub struct SocketUplink {
    cfg: Config,
    link: Link,
    poll: Poll,
    events: Option<Events>,
    waker: Waker,
    /// The wake-up is armed and not yet consumed.
    woken: bool,
    timer: TimerFd,
    slots: Vec<Slot>,
    free: Vec<u32>,
    map: FxHashMap<Key, u32>,
    listeners: Vec<Option<Listener>>,
    /// UDP listeners with datagrams waiting.
    ready_listeners: Vec<usize>,
    pending: VecDeque<Pending>,
    ready: VecDeque<u32>,
    counters: Arc<Counters>,
    ident: u16,
    isn: u64,
    next_tick: Instant,
}

impl std::fmt::Debug for SocketUplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketUplink")
            .field("cfg", &self.cfg)
            .field("flows", &self.map.len())
            .finish_non_exhaustive()
    }
}

fn local_ip(ip: Ipv4Addr) -> bool {
    ip.is_loopback()
}

impl SocketUplink {
    pub fn new(cfg: Config) -> Result<SocketUplink, UplinkError> {
        let poll = Poll::new().map_err(UplinkError::Poll)?;
        let waker = Waker::new(poll.registry(), WAKE).map_err(UplinkError::Poll)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(UplinkError::Timer)?;
        timer
            .set(
                Expiration::Interval(TimeSpec::from_duration(TICK)),
                TimerSetTimeFlags::empty(),
            )
            .map_err(UplinkError::Timer)?;
        poll.registry()
            .register(
                &mut SourceFd(&timer.as_fd().as_raw_fd()),
                TIMER,
                Interest::READABLE,
            )
            .map_err(UplinkError::Poll)?;
        let max = cfg.max_flows.max(1);
        let mut map = FxHashMap::default();
        map.reserve(max);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(SocketUplink {
            link: Link {
                uplink_mac: cfg.uplink_mac,
                host_mac: cfg.host_mac,
            },
            cfg,
            poll,
            events: Some(Events::with_capacity(256)),
            waker,
            woken: false,
            timer,
            slots: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            map,
            listeners: Vec::with_capacity(MAX_LISTENERS),
            ready_listeners: Vec::with_capacity(MAX_LISTENERS),
            pending: VecDeque::with_capacity(PENDING_CAP),
            ready: VecDeque::with_capacity(max),
            counters: Arc::new(Counters::default()),
            ident: 1,
            isn: weft_packet::splitmix64(seed),
            next_tick: Instant::now() + TICK,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Flows open now.
    pub fn flows(&self) -> usize {
        self.map.len()
    }

    /// The descriptor that becomes readable when there is something to
    /// receive (the inner epoll's).
    pub fn poll_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// Serves a published port on a bound socket ([`HostListener::bind`]).
    pub fn listen(&mut self, listener: HostListener) -> Result<(), UplinkError> {
        let (tcp, port) = listener.port();
        let slot = match self.listeners.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.listeners.len() < MAX_LISTENERS => {
                self.listeners.push(None);
                self.listeners.len() - 1
            }
            None => return Err(UplinkError::TooManyListeners),
        };
        self.poll
            .registry()
            .register(
                &mut SourceFd(&listener.raw_fd()),
                Token(LISTENER_BASE + slot),
                Interest::READABLE,
            )
            .map_err(|source| UplinkError::Listen {
                port,
                proto: if tcp { "tcp" } else { "udp" },
                source,
            })?;
        self.listeners[slot] = Some(match listener {
            HostListener::Tcp(l) => Listener::Tcp(l, port),
            HostListener::Udp(u) => Listener::Udp(u, port),
        });
        // Connections may already wait.
        self.listener_event(slot, Instant::now());
        self.wake();
        Ok(())
    }

    /// Stops serving a published port and gives its socket back;
    /// connections already accepted go on.
    pub fn unlisten(&mut self, tcp: bool, port: u16) -> Option<HostListener> {
        let slot = self.listeners.iter().position(|l| match l {
            Some(Listener::Tcp(_, p)) => tcp && *p == port,
            Some(Listener::Udp(_, p)) => !tcp && *p == port,
            None => false,
        })?;
        let l = self.listeners[slot].take()?;
        self.ready_listeners.retain(|&h| h != slot);
        let l = match l {
            Listener::Tcp(l, _) => HostListener::Tcp(l),
            Listener::Udp(u, _) => HostListener::Udp(u),
        };
        let _ = self.poll.registry().deregister(&mut SourceFd(&l.raw_fd()));
        Some(l)
    }

    fn wake(&mut self) {
        if !self.woken {
            self.woken = true;
            let _ = self.waker.wake();
        }
    }

    fn push_pending(&mut self, p: Pending) {
        if self.pending.len() >= PENDING_CAP {
            bump(&self.counters.pending_full);
            return;
        }
        self.pending.push_back(p);
        self.wake();
    }

    /// Asks for a writable event on flow `idx`'s socket once its send
    /// buffer has room: re-registering makes epoll poll the socket now,
    /// which marks it as waiting for space if it has none, so the kernel
    /// wakes it when space comes back, with no write having failed.
    fn watch_writable(&mut self, idx: u32, fd: RawFd) {
        let _ = self.poll.registry().reregister(
            &mut SourceFd(&fd),
            Token(FLOW_BASE + idx as usize),
            Interest::READABLE | Interest::WRITABLE,
        );
    }

    /// Queues flow `idx`'s ACK unless one is queued already.
    fn push_ack(&mut self, idx: u32, gen: u32) {
        let Some(flow) = self.slots[idx as usize].flow.as_mut() else {
            return;
        };
        if !flow.ack_queued {
            flow.ack_queued = true;
            self.push_pending(Pending::Ack { idx, gen });
            // A full queue dropped it: let a later segment queue another.
            if !matches!(self.pending.back(), Some(Pending::Ack { idx: i, .. }) if *i == idx) {
                if let Some(flow) = self.slots[idx as usize].flow.as_mut() {
                    flow.ack_queued = false;
                }
            }
        }
    }

    fn enqueue(&mut self, idx: u32) {
        if let Some(flow) = self.slots[idx as usize].flow.as_mut() {
            if !flow.queued {
                flow.queued = true;
                self.ready.push_back(idx);
                self.wake();
            }
        }
    }

    /// The host address a flow's remote end stands for.
    fn host_side(&self, remote: SocketAddrV4) -> SocketAddrV4 {
        if *remote.ip() == self.cfg.host_ip {
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, remote.port())
        } else {
            remote
        }
    }

    /// How a host address appears to endpoints.
    fn endpoint_side(&self, addr: SocketAddrV4) -> SocketAddrV4 {
        if local_ip(*addr.ip()) {
            SocketAddrV4::new(self.cfg.host_ip, addr.port())
        } else {
            addr
        }
    }

    fn next_isn(&mut self) -> u32 {
        self.isn = weft_packet::splitmix64(self.isn);
        self.isn as u32
    }

    fn insert(&mut self, key: Key, kind: Kind, now: Instant) -> Option<u32> {
        if self.map.len() >= self.cfg.max_flows {
            bump(&self.counters.table_full);
            return None;
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { gen: 0, flow: None });
                (self.slots.len() - 1) as u32
            }
        };
        let fd = match &kind {
            Kind::Tcp { sock, .. } => Some(sock.as_raw_fd()),
            Kind::Udp { sock, .. } | Kind::Icmp { sock, .. } => Some(sock.as_raw_fd()),
            Kind::UdpPublished { .. } => None,
        };
        if let Some(fd) = fd {
            let interest = match kind {
                Kind::Tcp { .. } => Interest::READABLE | Interest::WRITABLE,
                _ => Interest::READABLE,
            };
            if self
                .poll
                .registry()
                .register(
                    &mut SourceFd(&fd),
                    Token(FLOW_BASE + idx as usize),
                    interest,
                )
                .is_err()
            {
                bump(&self.counters.socket_errors);
                self.free.push(idx);
                return None;
            }
        }
        self.slots[idx as usize].flow = Some(Flow {
            key,
            kind,
            queued: false,
            ack_queued: false,
            last: now,
        });
        self.map.insert(key, idx);
        Some(idx)
    }

    fn remove(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        let Some(flow) = slot.flow.take() else { return };
        slot.gen = slot.gen.wrapping_add(1);
        self.map.remove(&flow.key);
        let fd = match &flow.kind {
            Kind::Tcp { sock, .. } => Some(sock.as_raw_fd()),
            Kind::Udp { sock, .. } | Kind::Icmp { sock, .. } => Some(sock.as_raw_fd()),
            Kind::UdpPublished { .. } => None,
        };
        if let Some(fd) = fd {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        self.free.push(idx);
        // Its socket closes as `flow` drops; a queued index is skipped
        // when the ready list reaches it.
    }

    /// Resets flow `idx` towards the endpoint and forgets it.
    fn abort(&mut self, idx: u32) {
        if let Some(Flow {
            key,
            kind: Kind::Tcp { conn, sock, .. },
            ..
        }) = &self.slots[idx as usize].flow
        {
            let _ = socket2::SockRef::from(sock).set_linger(Some(Duration::ZERO));
            let p = Pending::Rst {
                key: *key,
                seq: conn.snd_nxt,
                ack: conn.rcv_nxt,
                flags: RST | ACK,
            };
            self.push_pending(p);
        }
        self.remove(idx);
    }

    // ---- Frames from the switch (egress) ----------------------------

    /// Takes one frame the switch sent out through the uplink. Frames the
    /// uplink cannot carry are counted and dropped; this never fails.
    pub fn send_frame(&mut self, frame: &[u8], now: Instant) {
        if frame.len() < ETH_HEADER_LEN {
            bump(&self.counters.malformed);
            return;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if ethertype == ETHERTYPE_ARP {
            if let Some((mac, sip, tip)) = wire::arp_request(frame) {
                if tip != self.cfg.uplink_ip {
                    self.push_pending(Pending::Arp {
                        ip: tip,
                        to_mac: mac,
                        to_ip: sip,
                    });
                }
            }
            return;
        }
        if ethertype != ETHERTYPE_IPV4 {
            bump(&self.counters.unsupported);
            return;
        }
        let ip = &frame[ETH_HEADER_LEN..];
        if ip.len() < 20 || ip[0] >> 4 != 4 {
            bump(&self.counters.malformed);
            return;
        }
        let ihl = usize::from(ip[0] & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if ihl < 20 || total < ihl || total > ip.len() {
            bump(&self.counters.malformed);
            return;
        }
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        if src != self.cfg.uplink_ip || frag & 0x3fff != 0 {
            // Not masqueraded by the switch, or a fragment: host sockets
            // carry neither.
            bump(&self.counters.unsupported);
            return;
        }
        let l4 = &ip[ihl..total];
        match ip[9] {
            IP_PROTO_TCP => self.egress_tcp(dst, l4, now),
            IP_PROTO_UDP => self.egress_udp(dst, l4, now),
            IP_PROTO_ICMP => self.egress_icmp(dst, l4, now),
            _ => bump(&self.counters.unsupported),
        }
    }

    fn egress_tcp(&mut self, dst: Ipv4Addr, l4: &[u8], now: Instant) {
        let Ok(seg) = Segment::parse(l4) else {
            bump(&self.counters.malformed);
            return;
        };
        let key = Key {
            proto: IP_PROTO_TCP,
            port: seg.src_port,
            remote: SocketAddrV4::new(dst, seg.dst_port),
        };
        let Some(&idx) = self.map.get(&key) else {
            if seg.flags & (SYN | ACK | RST) == SYN {
                self.open_tcp(key, &seg, now);
            } else if seg.flags & RST == 0 {
                // RFC 9293 §3.10.7.1: a segment for no connection is reset.
                let (seq, ack, flags) = if seg.flags & ACK != 0 {
                    (seg.ack, 0, RST)
                } else {
                    (0, seg.seq.wrapping_add(seg.seq_len()), RST | ACK)
                };
                self.push_pending(Pending::Rst {
                    key,
                    seq,
                    ack,
                    flags,
                });
            }
            return;
        };
        let gen = self.slots[idx as usize].gen;
        let Some(flow) = self.slots[idx as usize].flow.as_mut() else {
            return;
        };
        flow.last = now;
        let Kind::Tcp {
            sock,
            conn,
            short_write,
            progress,
            ..
        } = &mut flow.kind
        else {
            return;
        };
        let rx = conn.on_segment(&seg);
        if rx.reset {
            let _ = socket2::SockRef::from(&*sock).set_linger(Some(Duration::ZERO));
            self.remove(idx);
            return;
        }
        let mut dead = false;
        if rx.acked > 0 {
            *progress = now;
            let mut left = rx.acked as usize;
            while left > 0 {
                match hostsock::discard(sock.as_fd(), left) {
                    Ok(0) => break,
                    Ok(n) => left -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        dead = true;
                        break;
                    }
                }
            }
        }
        if rx.rewind {
            bump(&self.counters.retransmits);
            let _ = hostsock::set_peek_off(sock.as_fd(), 0);
        }
        let mut fin = rx.fin;
        if let Some(skip) = rx.write {
            let data = &l4[seg.payload_off + skip..];
            match sock.write(data) {
                Ok(n) => {
                    conn.accepted(n);
                    if n < data.len() {
                        *short_write = true;
                        fin = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    *short_write = true;
                    fin = false;
                }
                Err(_) => dead = true,
            }
        }
        if fin && !dead {
            conn.fin_from_endpoint();
            let _ = sock.shutdown(Shutdown::Write);
        }
        let closed = conn.closed();
        if dead {
            self.abort(idx);
            return;
        }
        if closed {
            // The ACK is built from the flow, which goes once it is sent.
            self.push_ack(idx, gen);
            return;
        }
        if rx.syn_ack {
            self.push_pending(Pending::Tcp {
                idx,
                gen,
                flags: SYN | ACK,
            });
        }
        if rx.ack_now || rx.established {
            self.push_ack(idx, gen);
        }
        if rx.may_send || rx.rewind || rx.established {
            self.enqueue(idx);
        }
    }

    fn open_tcp(&mut self, key: Key, seg: &Segment, now: Instant) {
        let target = self.host_side(key.remote);
        let sock = match Socket::new(Domain::IPV4, Type::STREAM, None) {
            Ok(s) => s,
            Err(_) => {
                bump(&self.counters.socket_errors);
                return;
            }
        };
        let _ = sock.set_nonblocking(true);
        let _ = sock.set_tcp_nodelay(true);
        if target.ip().is_loopback() {
            // Where the system's default is a paced algorithm (BBR), a
            // flow that never leaves the host gains nothing from pacing
            // and was measured slower: such flows use cubic. Where cubic
            // is not available, the default stays.
            let _ = sock.set_tcp_congestion(LOOPBACK_CONGESTION);
        }
        match sock.connect(&SocketAddr::V4(target).into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc_einprogress()) => {}
            Err(_) => {
                bump(&self.counters.socket_errors);
                self.push_pending(Pending::Rst {
                    key,
                    seq: 0,
                    ack: seg.seq.wrapping_add(1),
                    flags: RST | ACK,
                });
                return;
            }
        }
        let iss = self.next_isn();
        let kind = Kind::Tcp {
            sock: sock.into(),
            conn: TcpConn::accept_syn(seg, iss),
            short_write: false,
            want_update: false,
            progress: now,
        };
        if self.insert(key, kind, now).is_some() {
            bump(&self.counters.tcp_opened);
        }
    }

    fn egress_udp(&mut self, dst: Ipv4Addr, l4: &[u8], now: Instant) {
        if l4.len() < 8 {
            bump(&self.counters.malformed);
            return;
        }
        let sport = u16::from_be_bytes([l4[0], l4[1]]);
        let dport = u16::from_be_bytes([l4[2], l4[3]]);
        let ulen = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
        if ulen < 8 || ulen > l4.len() {
            bump(&self.counters.malformed);
            return;
        }
        let payload = &l4[8..ulen];
        let key = Key {
            proto: IP_PROTO_UDP,
            port: sport,
            remote: SocketAddrV4::new(dst, dport),
        };
        let idx = match self.map.get(&key) {
            Some(&i) => i,
            None => {
                let target = self.host_side(key.remote);
                let sock = Socket::new(Domain::IPV4, Type::DGRAM, None).and_then(|s| {
                    s.set_nonblocking(true)?;
                    s.connect(&SocketAddr::V4(target).into())?;
                    Ok(s)
                });
                let Ok(sock) = sock else {
                    bump(&self.counters.socket_errors);
                    return;
                };
                let kind = Kind::Udp {
                    sock: sock.into(),
                    replied: false,
                };
                let Some(i) = self.insert(key, kind, now) else {
                    return;
                };
                bump(&self.counters.udp_opened);
                i
            }
        };
        let Some(flow) = self.slots[idx as usize].flow.as_mut() else {
            return;
        };
        flow.last = now;
        let sent = match &flow.kind {
            Kind::Udp { sock, .. } => sock.send(payload).map(drop),
            Kind::UdpPublished { listener, client } => {
                match self.listeners.get(*listener).and_then(Option::as_ref) {
                    Some(Listener::Udp(l, _)) => l.send_to(payload, *client).map(drop),
                    _ => Err(io::ErrorKind::NotConnected.into()),
                }
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            // ECONNREFUSED from an earlier ICMP error, a full buffer: the
            // datagram is lost, as it could be on any link.
            bump(&self.counters.socket_errors);
        }
    }

    fn egress_icmp(&mut self, dst: Ipv4Addr, l4: &[u8], now: Instant) {
        // RFC 792: echo request is type 8, code 0; identifier at 4.
        if l4.len() < 8 {
            bump(&self.counters.malformed);
            return;
        }
        if l4[0] != 8 || l4[1] != 0 {
            bump(&self.counters.unsupported);
            return;
        }
        let ident = u16::from_be_bytes([l4[4], l4[5]]);
        let key = Key {
            proto: IP_PROTO_ICMP,
            port: ident,
            remote: SocketAddrV4::new(dst, 0),
        };
        let idx = match self.map.get(&key) {
            Some(&i) => i,
            None => {
                let target = self.host_side(key.remote);
                let sock = match Socket::new(Domain::IPV4, Type::DGRAM, Some(SockProto::ICMPV4)) {
                    Ok(s) => s,
                    Err(e) if matches!(e.kind(), io::ErrorKind::PermissionDenied) => {
                        if self.counters.ping_refused.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!(
                                "pings from endpoints are dropped: this daemon's group may not open ping sockets; allow it with `sysctl net.ipv4.ping_group_range=\"0 2147483647\"` (or a range holding its group)"
                            );
                        }
                        return;
                    }
                    Err(_) => {
                        bump(&self.counters.socket_errors);
                        return;
                    }
                };
                if sock.set_nonblocking(true).is_err()
                    || sock.connect(&SocketAddr::V4(target).into()).is_err()
                {
                    bump(&self.counters.socket_errors);
                    return;
                }
                let kind = Kind::Icmp {
                    sock: sock.into(),
                    ident,
                };
                let Some(i) = self.insert(key, kind, now) else {
                    return;
                };
                bump(&self.counters.icmp_opened);
                i
            }
        };
        let Some(flow) = self.slots[idx as usize].flow.as_mut() else {
            return;
        };
        flow.last = now;
        if let Kind::Icmp { sock, .. } = &flow.kind {
            // The kernel sets the identifier and checksum.
            if sock.send(l4).is_err() {
                bump(&self.counters.socket_errors);
            }
        }
    }

    // ---- Frames to the switch (ingress) ------------------------------

    /// Fills up to `bufs.len()` buffers with frames for the switch and
    /// returns how many; fewer only when nothing more is waiting.
    pub fn recv_batch<B: FrameBuf>(&mut self, bufs: &mut [B], now: Instant) -> usize {
        let mut filled = 0;
        loop {
            while filled < bufs.len() {
                let Some(p) = self.pending.pop_front() else {
                    break;
                };
                if let Some((len, off)) = self.build_pending(p, bufs[filled].frame_space()) {
                    bufs[filled].set_frame(len, off);
                    filled += 1;
                }
            }
            while filled < bufs.len() {
                let Some(&idx) = self.ready.front() else {
                    break;
                };
                match self.fill_from(idx, bufs[filled].frame_space(), now) {
                    Some((len, off)) => {
                        bufs[filled].set_frame(len, off);
                        filled += 1;
                    }
                    None => {
                        self.ready.pop_front();
                        if let Some(f) = self.slots[idx as usize].flow.as_mut() {
                            f.queued = false;
                        }
                    }
                }
                // Control frames the last fill queued (a RST) go before
                // more data.
                if !self.pending.is_empty() {
                    break;
                }
            }
            while filled < bufs.len() {
                let Some(&h) = self.ready_listeners.last() else {
                    break;
                };
                match self.fill_listener(h, bufs[filled].frame_space(), now) {
                    Some((len, off)) => {
                        bufs[filled].set_frame(len, off);
                        filled += 1;
                    }
                    None => {
                        self.ready_listeners.pop();
                    }
                }
            }
            if filled == bufs.len() {
                return filled;
            }
            if !self.pending.is_empty()
                || !self.ready.is_empty()
                || !self.ready_listeners.is_empty()
            {
                continue;
            }
            // Nothing queued: see what the sockets have.
            self.woken = false;
            let Some(mut events) = self.events.take() else {
                return filled;
            };
            if self.poll.poll(&mut events, Some(Duration::ZERO)).is_err() || events.is_empty() {
                self.events = Some(events);
                return filled;
            }
            let mut tick = false;
            for ev in events.iter() {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                match ev.token() {
                    WAKE => {}
                    TIMER => tick = true,
                    Token(t) if t >= FLOW_BASE => {
                        self.flow_event((t - FLOW_BASE) as u32, readable, ev.is_writable(), now)
                    }
                    Token(t) => self.listener_event(t - LISTENER_BASE, now),
                }
            }
            self.events = Some(events);
            if tick {
                let _ = self.timer.wait();
            }
            if tick || now >= self.next_tick {
                self.next_tick = now + TICK;
                self.on_tick(now);
            }
        }
    }

    fn flow_event(&mut self, idx: u32, readable: bool, writable: bool, now: Instant) {
        let gen = self.slots[idx as usize].gen;
        let Some(flow) = self
            .slots
            .get_mut(idx as usize)
            .and_then(|s| s.flow.as_mut())
        else {
            return;
        };
        match &mut flow.kind {
            Kind::Tcp {
                sock,
                conn,
                short_write,
                want_update,
                ..
            } => {
                if conn.phase == Phase::Connecting {
                    if !writable && !readable {
                        return;
                    }
                    match sock.take_error() {
                        Ok(None) if sock.peer_addr().is_ok() => {
                            conn.connected();
                            let _ = hostsock::set_peek_off(sock.as_fd(), 0);
                            self.push_pending(Pending::Tcp {
                                idx,
                                gen,
                                flags: SYN | ACK,
                            });
                        }
                        Ok(None) => {}
                        _ => {
                            // Refused or unreachable: the endpoint gets RST.
                            bump(&self.counters.socket_errors);
                            self.abort(idx);
                        }
                    }
                    return;
                }
                if writable && *short_write {
                    // A window update, then three duplicates, so the
                    // endpoint resends what the socket refused now
                    // (RFC 5681 §3.2).
                    *short_write = false;
                    *want_update = false;
                    for _ in 0..4 {
                        self.push_pending(Pending::Tcp {
                            idx,
                            gen,
                            flags: ACK,
                        });
                    }
                } else if writable && *want_update {
                    // The send buffer drained: say the window opened.
                    *want_update = false;
                    self.push_ack(idx, gen);
                }
                if readable {
                    self.enqueue(idx);
                }
            }
            _ => {
                if readable {
                    flow.last = now;
                    self.enqueue(idx);
                }
            }
        }
    }

    fn listener_event(&mut self, handle: usize, now: Instant) {
        loop {
            let (accepted, port) = match self.listeners.get(handle) {
                Some(Some(Listener::Tcp(l, port))) => (l.accept(), *port),
                Some(Some(Listener::Udp(..))) => {
                    if !self.ready_listeners.contains(&handle) {
                        self.ready_listeners.push(handle);
                    }
                    return;
                }
                _ => return,
            };
            let (sock, peer) = match accepted {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let SocketAddr::V4(peer) = peer else { continue };
            if sock.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = sock.set_nodelay(true);
            // Host data leaves by peeking, from the start of the queue.
            if hostsock::set_peek_off(sock.as_fd(), 0).is_err() {
                bump(&self.counters.socket_errors);
                continue;
            }
            let key = Key {
                proto: IP_PROTO_TCP,
                port,
                remote: self.endpoint_side(peer),
            };
            if self.map.contains_key(&key) {
                continue; // the same client address twice: refused
            }
            let iss = self.next_isn();
            let kind = Kind::Tcp {
                sock,
                conn: TcpConn::connect(iss),
                short_write: false,
                want_update: false,
                progress: now,
            };
            if let Some(idx) = self.insert(key, kind, now) {
                bump(&self.counters.published_accepted);
                let gen = self.slots[idx as usize].gen;
                self.push_pending(Pending::Tcp {
                    idx,
                    gen,
                    flags: SYN,
                });
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        for idx in 0..self.slots.len() as u32 {
            let Some(flow) = self.slots[idx as usize].flow.as_mut() else {
                continue;
            };
            let idle = now.saturating_duration_since(flow.last);
            match &mut flow.kind {
                Kind::Tcp {
                    sock,
                    conn,
                    progress,
                    ..
                } => {
                    if conn.phase == Phase::SynSent {
                        if now.saturating_duration_since(*progress) > HANDSHAKE_TIMEOUT {
                            self.remove(idx);
                        } else if now.saturating_duration_since(*progress) > RETRANSMIT_AFTER {
                            *progress = now;
                            let gen = self.slots[idx as usize].gen;
                            self.push_pending(Pending::Tcp {
                                idx,
                                gen,
                                flags: SYN,
                            });
                        }
                        continue;
                    }
                    if conn.phase == Phase::Established
                        && conn.in_flight() > 0
                        && now.saturating_duration_since(*progress) > RETRANSMIT_AFTER
                    {
                        conn.rewind();
                        *progress = now;
                        let _ = hostsock::set_peek_off(sock.as_fd(), 0);
                        bump(&self.counters.retransmits);
                        self.enqueue(idx);
                    }
                }
                Kind::Udp { replied, .. } => {
                    let limit = if *replied { UDP_IDLE_REPLIED } else { UDP_IDLE };
                    if idle > limit {
                        self.remove(idx);
                    }
                }
                Kind::UdpPublished { .. } => {
                    if idle > UDP_IDLE_REPLIED {
                        self.remove(idx);
                    }
                }
                Kind::Icmp { .. } => {
                    if idle > ICMP_IDLE {
                        self.remove(idx);
                    }
                }
            }
        }
    }

    fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    /// Builds a queued control frame into `out`.
    fn build_pending(&mut self, p: Pending, out: &mut [u8]) -> Option<(usize, Offload)> {
        let ident = self.next_ident();
        match p {
            Pending::Arp { ip, to_mac, to_ip } => Some((
                wire::write_arp_reply(out, &self.link, ip, to_mac, to_ip),
                NO_OFFLOAD,
            )),
            Pending::Rst {
                key,
                seq,
                ack,
                flags,
            } => {
                let l3 = wire::write_ipv4(
                    out,
                    &self.link,
                    *key.remote.ip(),
                    self.cfg.uplink_ip,
                    IP_PROTO_TCP,
                    20,
                    ident,
                );
                tcp::write_header(
                    &mut out[l3..],
                    key.remote.port(),
                    key.port,
                    seq,
                    ack,
                    flags,
                    0,
                    None,
                );
                let off = wire::finish_tcp(&mut out[..TCP_HEADERS], 20, tcp::DEFAULT_MSS);
                Some((TCP_HEADERS, off))
            }
            Pending::Ack { idx, gen } | Pending::Tcp { idx, gen, .. } => {
                let flags = match p {
                    Pending::Tcp { flags, .. } => flags,
                    _ => ACK,
                };
                let slot = self.slots.get_mut(idx as usize)?;
                if slot.gen != gen {
                    return None;
                }
                let flow = slot.flow.as_mut()?;
                if matches!(p, Pending::Ack { .. }) {
                    flow.ack_queued = false;
                }
                let key = flow.key;
                let Kind::Tcp {
                    sock,
                    conn,
                    want_update,
                    ..
                } = &mut flow.kind
                else {
                    return None;
                };
                let (free, small) = free_space(sock);
                let watch = small && !*want_update;
                *want_update |= small;
                let fd = sock.as_raw_fd();
                let (seq, ack, window, opts) = if flags & SYN != 0 {
                    let wscale = (conn.our_wscale > 0).then_some(tcp::OUR_WSCALE);
                    let ack = if flags & ACK != 0 { conn.rcv_nxt } else { 0 };
                    // A SYN's window is never scaled (RFC 7323 §2.2).
                    (
                        conn.syn_seq(),
                        ack,
                        free.min(usize::from(u16::MAX)) as u16,
                        Some((tcp::OUR_MSS, wscale)),
                    )
                } else {
                    (conn.snd_nxt, conn.rcv_nxt, conn.window_field(free), None)
                };
                let closed = conn.closed();
                let hdr = 20 + if opts.is_some() { 8 } else { 0 };
                let l3 = wire::write_ipv4(
                    out,
                    &self.link,
                    *key.remote.ip(),
                    self.cfg.uplink_ip,
                    IP_PROTO_TCP,
                    hdr,
                    ident,
                );
                let hdr = tcp::write_header(
                    &mut out[l3..],
                    key.remote.port(),
                    key.port,
                    seq,
                    ack,
                    flags,
                    window,
                    opts,
                );
                let len = L3_END + hdr;
                let off = wire::finish_tcp(&mut out[..len], hdr, tcp::DEFAULT_MSS);
                if closed {
                    self.remove(idx);
                } else if watch {
                    self.watch_writable(idx, fd);
                }
                Some((len, off))
            }
        }
    }

    /// Builds the next frame of host data for flow `idx`; `None` when it
    /// has nothing more to send now.
    fn fill_from(&mut self, idx: u32, out: &mut [u8], now: Instant) -> Option<(usize, Offload)> {
        let ident = self.next_ident();
        let uplink_ip = self.cfg.uplink_ip;
        let link = self.link;
        let flow = self.slots.get_mut(idx as usize)?.flow.as_mut()?;
        let key = flow.key;
        match &mut flow.kind {
            Kind::Tcp {
                sock,
                conn,
                progress,
                want_update,
                ..
            } => {
                let mut watch = None;
                let room = conn
                    .send_room()
                    .min(MAX_TCP_PAYLOAD)
                    .min(out.len().saturating_sub(TCP_HEADERS));
                if room == 0 {
                    return None;
                }
                let (n, flags) = match sock.peek(&mut out[TCP_HEADERS..TCP_HEADERS + room]) {
                    Ok(0) => (0, FIN | ACK),
                    Ok(n) => (n, ACK | PSH),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
                    Err(_) => {
                        self.abort(idx);
                        return None;
                    }
                };
                if conn.in_flight() == 0 {
                    *progress = now;
                }
                let seq = conn.snd_nxt;
                if n == 0 {
                    conn.sent_fin();
                } else {
                    conn.sent(n);
                }
                let (free, small) = free_space(sock);
                let window = conn.window_field(free);
                if small && !*want_update {
                    *want_update = true;
                    watch = Some(sock.as_raw_fd());
                }
                let l3 = wire::write_ipv4(
                    out,
                    &link,
                    *key.remote.ip(),
                    uplink_ip,
                    IP_PROTO_TCP,
                    20 + n,
                    ident,
                );
                tcp::write_header(
                    &mut out[l3..],
                    key.remote.port(),
                    key.port,
                    seq,
                    conn.rcv_nxt,
                    flags,
                    window,
                    None,
                );
                let len = TCP_HEADERS + n;
                let off = wire::finish_tcp(&mut out[..len], 20, conn.mss);
                if let Some(fd) = watch {
                    self.watch_writable(idx, fd);
                }
                Some((len, off))
            }
            Kind::Udp { sock, replied } => loop {
                let end = (UDP_HEADERS + MAX_UDP_PAYLOAD).min(out.len());
                match sock.recv(&mut out[UDP_HEADERS..end]) {
                    Ok(n) => {
                        *replied = true;
                        flow.last = now;
                        let l3 = wire::write_ipv4(
                            out,
                            &link,
                            *key.remote.ip(),
                            uplink_ip,
                            IP_PROTO_UDP,
                            8 + n,
                            ident,
                        );
                        let len = l3 + 8 + n;
                        wire::finish_udp(&mut out[..len], key.remote.port(), key.port);
                        return Some((len, NO_OFFLOAD));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                    // An ICMP error reported on the socket: try the next datagram.
                    Err(_) => continue,
                }
            },
            Kind::Icmp { sock, ident: id } => loop {
                match sock.recv(&mut out[L3_END..]) {
                    Ok(n) if n >= 8 && out[L3_END] == 0 => {
                        flow.last = now;
                        out[L3_END + 4..L3_END + 6].copy_from_slice(&id.to_be_bytes());
                        wire::write_ipv4(
                            out,
                            &link,
                            *key.remote.ip(),
                            uplink_ip,
                            IP_PROTO_ICMP,
                            n,
                            ident,
                        );
                        let len = L3_END + n;
                        wire::finish_icmp(&mut out[..len]);
                        return Some((len, NO_OFFLOAD));
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                    Err(_) => continue,
                }
            },
            Kind::UdpPublished { .. } => None,
        }
    }

    /// Builds a frame from the next datagram a published UDP port
    /// received; `None` when there is none.
    fn fill_listener(
        &mut self,
        handle: usize,
        out: &mut [u8],
        now: Instant,
    ) -> Option<(usize, Offload)> {
        let ident = self.next_ident();
        let (n, client, port) = loop {
            let Some(Some(Listener::Udp(sock, port))) = self.listeners.get(handle) else {
                return None;
            };
            let end = (UDP_HEADERS + MAX_UDP_PAYLOAD).min(out.len());
            match sock.recv_from(&mut out[UDP_HEADERS..end]) {
                Ok((n, SocketAddr::V4(c))) => break (n, c, *port),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(_) => continue,
            }
        };
        let remote = self.endpoint_side(client);
        let key = Key {
            proto: IP_PROTO_UDP,
            port,
            remote,
        };
        match self.map.get(&key) {
            Some(&idx) => {
                if let Some(f) = self.slots[idx as usize].flow.as_mut() {
                    f.last = now;
                }
            }
            None => {
                let kind = Kind::UdpPublished {
                    listener: handle,
                    client,
                };
                self.insert(key, kind, now)?;
            }
        }
        let l3 = wire::write_ipv4(
            out,
            &self.link,
            *remote.ip(),
            self.cfg.uplink_ip,
            IP_PROTO_UDP,
            8 + n,
            ident,
        );
        let len = l3 + 8 + n;
        wire::finish_udp(&mut out[..len], remote.port(), port);
        Some((len, NO_OFFLOAD))
    }
}

/// Room in a host TCP socket's send buffer: what it will take now, less an
/// eighth for the kernel's per-buffer overhead; and whether that is small
/// (under an eighth of the buffer) so the window advertised from it needs
/// an update once the socket drains. The kernel calls a TCP socket
/// writable again once its free space reaches half of what it holds
/// (`sk_stream_is_writeable`), which always leaves more than an eighth
/// here, so a watch for writability never fires into another one.
fn free_space(sock: &TcpStream) -> (usize, bool) {
    let buf = socket2::SockRef::from(sock).send_buffer_size().unwrap_or(0);
    let queued = hostsock::outq(sock.as_fd()).unwrap_or(buf);
    let free = buf.saturating_sub(queued).saturating_sub(buf / 8);
    (free, free < buf / 8)
}

fn libc_einprogress() -> i32 {
    nix::errno::Errno::EINPROGRESS as i32
}
