//! Connection tracking: the NAT's table of flows.
//!
//! Each flow has an *original* tuple (the key of its first packet, as it
//! arrived) and a *reply* tuple (the key replies carry on the wire, after
//! translation): with SNAT to `E:e`, `H:h -> R:r` has reply tuple
//! `R:r -> E:e`. Both tuples index the same entry, so a packet of either
//! direction finds it, and the entry tells which [`Rewrite`] to apply
//! ([`Hit::rewrite`]): original-direction packets become
//! `reply.reversed()`, replies become `original.reversed()`.
//!
//! # Mappings and filtering
//!
//! SNAT is endpoint-independent (RFC 4787 REQ-1, RFC 5382 REQ-1): the first
//! flow of an internal `X:x` toward an external address `E` allocates a
//! port `e` (the original port when free, else one of the same parity:
//! [`PortAllocator::allocate_owned`]), and every later flow of `X:x` through
//! `E` reuses `E:e` whatever its destination. The mapping lives as long as
//! one of its flows does; [`Conntrack::mapping_owner`] finds it from
//! outside. The table also keeps, per mapping, which remote addresses it
//! has flows to ([`Conntrack::permits`]): the caller's address-dependent
//! filter asks it, and admits an inbound packet to a mapping with
//! [`Conntrack::create_inbound`].
//!
//! # Timeouts
//!
//! A flow expires when it has seen no packet for the timeout of its state
//! ([`Timeouts`]). The defaults are Linux's `nf_conntrack` values, except
//! for established TCP; where they are shorter than the RFCs ask, the
//! field can be raised:
//!
//! - **TCP** (RFC 5382): the established idle timeout is 2 h 4 min
//!   (7440 s, the minimum REQ-5 allows; Linux uses 5 days). The
//!   transitory states (opening and closing) use Linux's values: SYN_SENT
//!   120 s, SYN_RECV 60 s, FIN_WAIT 120 s, CLOSE_WAIT 60 s, LAST_ACK 30 s,
//!   TIME_WAIT 120 s, CLOSE (after RST) 10 s. These are shorter than the
//!   4 minutes REQ-5 asks for transitory connections; set them to 240 s
//!   for strict compliance.
//! - **UDP** (RFC 4787 §4.3): 120 s once packets have been seen in both
//!   directions (REQ-5 asks at least 2 min); a flow that never saw a reply
//!   expires after 30 s, like Linux, which is shorter than REQ-5 asks but
//!   keeps one-way scans and DNS-style lookups from filling the table.
//! - **ICMP** query sessions (RFC 5508): 30 s, Linux's value. RFC 5508
//!   REQ-1 asks for at least 60 s; set [`Timeouts::icmp`] to 60 s for
//!   strict compliance.
//!
//! TCP states follow the flags seen ([`TcpState`]); RST closes a flow.
//!
//! # Ownership and cost per packet
//!
//! The table has one owner and takes `&mut self`: weft's datapath worker
//! owns it and is the only thread that touches it, so there is no lock
//! and no atomic read-modify-write on a lookup. The control plane asks
//! the worker for [`snapshot`](Conntrack::snapshot)s and
//! [`flush`](Conntrack::flush)es through its command queue. (A program
//! that wants the table on several threads can put it behind a `Mutex`.)
//!
//! Flows are stored inline in a slab of slots (`Vec<Option<Entry>>`, a
//! free list of slot numbers), and a `HashMap` (std's, keyed SipHash, so
//! remote peers cannot aim collisions) maps both tuples of each flow to its
//! slot. All three are allocated for [`ConntrackConfig::capacity`] flows
//! when the table is made: the index holds twice the keys it can ever
//! have, so it never grows (when deletions have left too many tombstones
//! it rehashes in place, an occasional O(capacity) step without
//! allocation). So neither a lookup nor creating a flow allocates, except
//! that the first flow translated to a new external address allocates
//! that address's port bitmap ([`PortAllocator`]).
//!
//! # Time
//!
//! Nothing reads a clock: every call takes `now` as a [`Timestamp`]
//! (nanoseconds on any monotonic clock), so tests control time.
//!
//! # Expiry
//!
//! [`Conntrack::expire`] removes at most `budget` expired flows per call,
//! resuming at the slot where the previous call stopped, so the caller
//! can run it in small steps between batches of packets. Until then,
//! expired flows are treated as absent by every lookup (and reaped on the
//! spot when a lookup finds one).
//!
//! # Capacity
//!
//! At most [`ConntrackConfig::capacity`] flows exist at once. A new flow
//! beyond that, or beyond its source host's [`HostLimits`], first evicts
//! one unconfirmed flow (TCP SYN_SENT, UDP never answered), as Linux's
//! conntrack "early drop" does: the host's own at its own limit, else the
//! one of the host holding the most among the next slots scanned. Only
//! when there is none is it refused ([`ConntrackError::TableFull`],
//! [`ConntrackError::HostLimit`], counted) while existing flows keep
//! working; confirmed flows are never evicted. Flows that expired but have not
//! been reaped still count until [`Conntrack::expire`] (or a lookup) reaps
//! them.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::flow::{FlowKey, Protocol};
use crate::portalloc::{PortAllocError, PortAllocator, PortRange};
use crate::translate::Rewrite;

/// TCP flag bits as found in byte 13 of the TCP header.
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
}
use tcp_flags::{ACK, FIN, RST, SYN};

/// A point in time: nanoseconds on a monotonic clock of the caller's
/// choosing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's origin.
    pub const ZERO: Timestamp = Timestamp(0);

    /// `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    /// `secs` seconds after the origin.
    pub const fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs.saturating_mul(1_000_000_000))
    }

    /// The time of `now` measured from `epoch` (zero if `now` is earlier).
    pub fn from_instant(epoch: Instant, now: Instant) -> Timestamp {
        Timestamp(
            u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX),
        )
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Which way a packet travels relative to the flow's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Same direction as the packet that created the flow.
    Original,
    /// The other way.
    Reply,
}

impl Direction {
    const fn index(self) -> usize {
        match self {
            Direction::Original => 0,
            Direction::Reply => 1,
        }
    }

    /// The other direction.
    pub const fn opposite(self) -> Direction {
        match self {
            Direction::Original => Direction::Reply,
            Direction::Reply => Direction::Original,
        }
    }
}

/// TCP connection states (Linux `nf_conntrack` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// SYN seen from the originator.
    SynSent,
    /// SYN+ACK (or a simultaneous-open SYN) seen from the responder.
    SynRecv,
    /// Handshake completed (or flow picked up mid-stream).
    Established,
    /// First FIN seen.
    FinWait,
    /// The first FIN was acknowledged by the other side.
    CloseWait,
    /// Both sides sent FIN.
    LastAck,
    /// The last FIN was acknowledged.
    TimeWait,
    /// Reset.
    Close,
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        })
    }
}

/// Protocol state of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// A TCP connection.
    Tcp(TcpState),
    /// A UDP flow; `assured` once packets were seen both ways.
    Udp {
        /// Seen in both directions.
        assured: bool,
    },
    /// An ICMP echo session.
    Icmp,
}

impl fmt::Display for FlowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowState::Tcp(s) => s.fmt(f),
            FlowState::Udp { assured: true } => f.write_str("ASSURED"),
            FlowState::Udp { assured: false } => f.write_str("UNREPLIED"),
            FlowState::Icmp => f.write_str("-"),
        }
    }
}

/// Idle timeouts per protocol state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP SYN_SENT (default 120 s).
    pub tcp_syn_sent: Duration,
    /// TCP SYN_RECV (default 60 s).
    pub tcp_syn_recv: Duration,
    /// TCP ESTABLISHED (default 7440 s, RFC 5382 REQ-5).
    pub tcp_established: Duration,
    /// TCP FIN_WAIT (default 120 s).
    pub tcp_fin_wait: Duration,
    /// TCP CLOSE_WAIT (default 60 s).
    pub tcp_close_wait: Duration,
    /// TCP LAST_ACK (default 30 s).
    pub tcp_last_ack: Duration,
    /// TCP TIME_WAIT (default 120 s).
    pub tcp_time_wait: Duration,
    /// TCP CLOSE, after RST (default 10 s).
    pub tcp_close: Duration,
    /// UDP seen in one direction only (default 30 s).
    pub udp_unreplied: Duration,
    /// UDP seen in both directions (default 120 s, RFC 4787 REQ-5).
    pub udp_assured: Duration,
    /// ICMP echo (default 30 s; RFC 5508 REQ-1 asks for 60 s).
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(7440),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp_unreplied: s(30),
            udp_assured: s(120),
            icmp: s(30),
        }
    }
}

impl Timeouts {
    /// The defaults raised to the RFC minimums where Linux's values are
    /// shorter: every transitory TCP state 4 min (RFC 5382 REQ-5), UDP 2
    /// min even before a reply (RFC 4787 REQ-5), ICMP query 60 s (RFC
    /// 5508 REQ-1). CLOSE (after a reset, no longer a connection) keeps
    /// its 10 s.
    pub fn rfc_minimums() -> Timeouts {
        let s = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: s(240),
            tcp_syn_recv: s(240),
            tcp_fin_wait: s(240),
            tcp_close_wait: s(240),
            tcp_last_ack: s(240),
            tcp_time_wait: s(240),
            udp_unreplied: s(120),
            icmp: s(60),
            ..Timeouts::default()
        }
    }

    /// The idle timeout of a flow in `state`.
    pub fn for_state(&self, state: FlowState) -> Duration {
        match state {
            FlowState::Tcp(t) => match t {
                TcpState::SynSent => self.tcp_syn_sent,
                TcpState::SynRecv => self.tcp_syn_recv,
                TcpState::Established => self.tcp_established,
                TcpState::FinWait => self.tcp_fin_wait,
                TcpState::CloseWait => self.tcp_close_wait,
                TcpState::LastAck => self.tcp_last_ack,
                TcpState::TimeWait => self.tcp_time_wait,
                TcpState::Close => self.tcp_close,
            },
            FlowState::Udp { assured: false } => self.udp_unreplied,
            FlowState::Udp { assured: true } => self.udp_assured,
            FlowState::Icmp => self.icmp,
        }
    }
}

/// Table configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Maximum number of flows (default 65536).
    pub capacity: usize,
    /// Number of segments, rounded up to a power of two (default 64),
    /// the slots are counted in by [`ExpireReport::shards_scanned`]. The
    /// table is no longer sharded: it has a single owner.
    pub shards: usize,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Ports (and ICMP identifiers) SNAT allocates from.
    pub port_range: PortRange,
    /// Keep the original source port when it is in range and free.
    pub preserve_ports: bool,
    /// When the original port is taken, prefer a port of the same parity
    /// (RFC 4787 REQ-4).
    pub preserve_parity: bool,
    /// Only ever hand out ports of `port_range`, even when the original
    /// port lies outside it and is free (otherwise it is kept there).
    pub range_only: bool,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            capacity: 65536,
            shards: 64,
            timeouts: Timeouts::default(),
            port_range: PortRange::default(),
            preserve_ports: true,
            preserve_parity: true,
            range_only: false,
        }
    }
}

/// The translation to set up for a new flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatSpec {
    /// Masquerade: rewrite the source to this address with an allocated
    /// port (or ICMP identifier).
    pub snat: Option<Ipv4Addr>,
    /// Port forwarding: rewrite the destination to this endpoint (for
    /// ICMP only the address is used; the identifier is kept).
    pub dnat: Option<SocketAddrV4>,
    /// What the flow's source host may hold (see [`HostLimits`]).
    pub limits: HostLimits,
}

/// What one source host (the original tuple's source address) may hold
/// at once: the fair share that keeps one endpoint from taking the table
/// or the port pool from the others. The default is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// Flows whose original source is the host.
    pub flows: u32,
    /// SNAT mappings (external ports) of the host, all protocols.
    pub ports: u32,
}

impl HostLimits {
    /// No limit.
    pub const UNLIMITED: HostLimits = HostLimits {
        flows: u32::MAX,
        ports: u32::MAX,
    };
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits::UNLIMITED
    }
}

/// Why no flow was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConntrackError {
    /// The table holds `capacity` flows.
    #[error("conntrack table full ({capacity} flows)")]
    TableFull {
        /// The configured capacity.
        capacity: usize,
    },
    /// No SNAT port was free.
    #[error(transparent)]
    Ports(#[from] PortAllocError),
    /// The flow's reply tuple is already used by another live flow.
    #[error("reply tuple {0} is already in use")]
    Conflict(FlowKey),
    /// The source host holds as many flows or SNAT ports as its
    /// [`HostLimits`] allow.
    #[error("host {host} is at its limit of {limit} {what}")]
    HostLimit {
        /// The source host.
        host: Ipv4Addr,
        /// `"flows"` or `"ports"`.
        what: &'static str,
        /// The limit.
        limit: u32,
    },
}

/// Packet and byte counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen (as passed to [`Conntrack::track`]).
    pub bytes: u64,
}

/// The outcome of a lookup: what the data path does with the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The packet's direction.
    pub direction: Direction,
    /// The flow's state after this packet.
    pub state: FlowState,
    /// How to rewrite the packet (identity for untranslated flows).
    pub rewrite: Rewrite,
    /// The flow's original tuple.
    pub original: FlowKey,
    /// The flow's reply tuple.
    pub reply: FlowKey,
}

/// One row of [`Conntrack::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    /// The tuple of the first packet.
    pub original: FlowKey,
    /// The tuple replies carry.
    pub reply: FlowKey,
    /// Protocol state.
    pub state: FlowState,
    /// When the flow was created.
    pub created: Timestamp,
    /// When its last packet was seen.
    pub last_seen: Timestamp,
    /// When it expires unless another packet arrives.
    pub expires: Timestamp,
    /// Original-direction counters.
    pub orig_counters: Counters,
    /// Reply-direction counters.
    pub reply_counters: Counters,
}

impl FlowInfo {
    /// What original-direction packets look like after translation.
    pub fn translated(&self) -> FlowKey {
        self.reply.reversed()
    }

    /// Time since creation.
    pub fn age(&self, now: Timestamp) -> Duration {
        now.saturating_duration_since(self.created)
    }

    /// Time left before expiry.
    pub fn remaining(&self, now: Timestamp) -> Duration {
        self.expires.saturating_duration_since(now)
    }

    /// The protocol.
    pub fn proto(&self) -> Protocol {
        self.original.proto
    }
}

/// Table counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    /// Live flows (including expired ones not yet reaped).
    pub flows: usize,
    /// Flows created.
    pub created: u64,
    /// Flows refused because the table was full.
    pub table_full: u64,
    /// Flows refused because no SNAT port was free.
    pub port_exhausted: u64,
    /// Flows refused because their reply tuple was taken.
    pub conflicts: u64,
    /// Flows refused because their source host was at its limit.
    pub host_limited: u64,
    /// Unconfirmed flows (TCP SYN_SENT, UDP without a reply) evicted early
    /// to make room for a new flow.
    pub early_evicted: u64,
    /// Flows removed by expiry (by `expire` or reaped on lookup).
    pub expired: u64,
}

/// What one [`Conntrack::expire`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Flows removed.
    pub removed: usize,
    /// Segments of slots (see [`ConntrackConfig::shards`]) scanned to
    /// the end.
    pub shards_scanned: usize,
}

/// One flow, stored inline in a slot of the table's slab.
#[derive(Debug)]
struct Entry {
    original: FlowKey,
    reply: FlowKey,
    created: Timestamp,
    /// (external address, port) of the SNAT mapping the flow holds a
    /// reference on (the mapping of `original.src` on that address).
    snat_port: Option<(Ipv4Addr, u16)>,
    rewrite: [Rewrite; 2],
    state: FlowState,
    /// Direction of the first FIN (TCP).
    fin_dir: Option<Direction>,
    last_seen: Timestamp,
    expires: Timestamp,
    counters: [Counters; 2],
}

impl Entry {
    fn hit(&self, dir: Direction) -> Hit {
        Hit {
            direction: dir,
            state: self.state,
            rewrite: self.rewrite[dir.index()],
            original: self.original,
            reply: self.reply,
        }
    }

    fn info(&self) -> FlowInfo {
        FlowInfo {
            original: self.original,
            reply: self.reply,
            state: self.state,
            created: self.created,
            last_seen: self.last_seen,
            expires: self.expires,
            orig_counters: self.counters[0],
            reply_counters: self.counters[1],
        }
    }

    fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires
    }

    /// Not (yet) answered: TCP SYN_SENT or UDP seen one way only.
    fn is_unconfirmed(&self) -> bool {
        matches!(
            self.state,
            FlowState::Tcp(TcpState::SynSent) | FlowState::Udp { assured: false }
        )
    }
}

/// An index value: slot number and direction packed in one `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotRef(u32);

impl SlotRef {
    fn new(slot: usize, dir: Direction) -> SlotRef {
        // slot < capacity <= MAX_CAPACITY, so it fits in 31 bits.
        SlotRef(((slot as u32) << 1) | dir.index() as u32)
    }

    fn slot(self) -> usize {
        (self.0 >> 1) as usize
    }

    fn dir(self) -> Direction {
        if self.0 & 1 == 0 {
            Direction::Original
        } else {
            Direction::Reply
        }
    }
}

/// The most flows a table can hold (slot numbers are 31-bit).
pub const MAX_CAPACITY: usize = 1 << 30;

/// The next TCP state after a packet with `flags` in direction `dir`.
fn tcp_next(s: TcpState, fin_dir: &mut Option<Direction>, dir: Direction, flags: u8) -> TcpState {
    use TcpState::*;
    if flags & RST != 0 {
        return Close;
    }
    let syn = flags & SYN != 0;
    let ack = flags & ACK != 0;
    let fin = flags & FIN != 0;
    let from_closer = *fin_dir == Some(dir);
    match s {
        SynSent if dir == Direction::Reply && syn => SynRecv,
        // The handshake's last ACK: from the originator, or from the
        // remote when the flow was opened from outside (its SYN travelled
        // as a reply, see `Conntrack::create_inbound`).
        SynRecv if ack && !syn => {
            if fin {
                *fin_dir = Some(dir);
                FinWait
            } else {
                Established
            }
        }
        Established if fin => {
            *fin_dir = Some(dir);
            FinWait
        }
        FinWait | CloseWait if !from_closer && fin => LastAck,
        FinWait if !from_closer && ack => CloseWait,
        LastAck if from_closer && ack => TimeWait,
        TimeWait | Close if dir == Direction::Original && syn && !ack => {
            // The originator reuses the tuple for a new connection.
            *fin_dir = None;
            SynSent
        }
        s => s,
    }
}

/// The connection tracking table. See the module docs.
pub struct Conntrack {
    /// The flows, inline; `None` slots are on `free`. Capacity reserved
    /// up front, so it never reallocates.
    entries: Vec<Option<Entry>>,
    /// Free slots below `entries.len()`.
    free: Vec<u32>,
    /// Both tuples of every flow → its slot. Sized up front so that it
    /// never grows (see the module docs).
    index: HashMap<FlowKey, SlotRef>,
    timeouts: Timeouts,
    capacity: usize,
    /// Slots per expiry segment.
    segment: usize,
    ports: PortAllocator,
    /// Endpoint-independent mappings: (protocol, internal endpoint,
    /// external address) → external port and the flows using it.
    mappings: HashMap<MapKey, Mapping>,
    /// (protocol, external address, external port) → internal endpoint.
    mapped: HashMap<(Protocol, Ipv4Addr, u16), SocketAddrV4>,
    /// (protocol, internal endpoint, remote address) → SNAT flows between
    /// them: what address-dependent filtering admits.
    permits: HashMap<MapKey, u32>,
    /// Flows and mappings per source host.
    hosts: HashMap<Ipv4Addr, HostUse>,
    live: usize,
    /// Where the next expiry scan starts.
    cursor: usize,
    /// Where the next early-eviction scan starts.
    evict_cursor: usize,
    created: u64,
    table_full: u64,
    port_exhausted: u64,
    conflicts: u64,
    host_limited: u64,
    early_evicted: u64,
    expired: u64,
}

/// (protocol, internal endpoint, an address): the key of a mapping (the
/// address is the external one) or of a permit (the remote one).
type MapKey = (Protocol, SocketAddrV4, Ipv4Addr);

/// One endpoint-independent mapping.
#[derive(Debug, Clone, Copy)]
struct Mapping {
    port: u16,
    /// Live flows using it; it (and its port) goes with the last one.
    refs: u32,
}

/// What one source host holds.
#[derive(Debug, Clone, Copy, Default)]
struct HostUse {
    flows: u32,
    ports: u32,
}

/// How many slots an early-eviction scan looks at.
const EVICT_SCAN: usize = 256;

impl fmt::Debug for Conntrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conntrack")
            .field("capacity", &self.capacity)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack::new(ConntrackConfig::default())
    }
}

/// How many other ports SNAT tries when an allocated port's reply tuple
/// is taken by a non-SNAT flow.
const SNAT_ATTEMPTS: usize = 8;

impl Conntrack {
    /// An empty table, with room for `config.capacity` flows allocated
    /// up front (capped at [`MAX_CAPACITY`]).
    pub fn new(config: ConntrackConfig) -> Conntrack {
        let capacity = config.capacity.min(MAX_CAPACITY);
        let segments = config.shards.max(1).next_power_of_two();
        Conntrack {
            entries: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            // Two keys per flow; twice that again so the index is never
            // more than half full and can always rehash in place.
            index: HashMap::with_capacity(capacity.saturating_mul(4)),
            timeouts: config.timeouts,
            capacity,
            segment: capacity.div_ceil(segments).max(1),
            ports: PortAllocator::new(config.port_range)
                .with_port_preservation(config.preserve_ports)
                .with_parity_preservation(config.preserve_parity)
                .with_range_only(config.range_only),
            // At most one mapping, permit and host per flow; twice that
            // so they never grow (see `index`).
            mappings: HashMap::with_capacity(capacity.saturating_mul(2)),
            mapped: HashMap::with_capacity(capacity.saturating_mul(2)),
            permits: HashMap::with_capacity(capacity.saturating_mul(2)),
            hosts: HashMap::with_capacity(capacity.saturating_mul(2)),
            live: 0,
            cursor: 0,
            evict_cursor: 0,
            created: 0,
            table_full: 0,
            port_exhausted: 0,
            conflicts: 0,
            host_limited: 0,
            early_evicted: 0,
            expired: 0,
        }
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The SNAT port allocator.
    pub fn ports(&self) -> &PortAllocator {
        &self.ports
    }

    /// Live flows (including expired ones not yet reaped).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the table holds no flow.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many unconfirmed flows were evicted early so far.
    pub fn early_evicted(&self) -> u64 {
        self.early_evicted
    }

    /// Counters.
    pub fn stats(&self) -> ConntrackStats {
        ConntrackStats {
            flows: self.live,
            created: self.created,
            table_full: self.table_full,
            port_exhausted: self.port_exhausted,
            conflicts: self.conflicts,
            host_limited: self.host_limited,
            early_evicted: self.early_evicted,
            expired: self.expired,
        }
    }

    /// Removes the flow in `slot` from the table, releasing its slot and
    /// SNAT port.
    fn kill(&mut self, slot: usize, expired: bool) {
        let Some(e) = self.entries[slot].take() else {
            return;
        };
        self.index.remove(&e.original);
        if e.reply != e.original {
            self.index.remove(&e.reply);
        }
        self.free.push(slot as u32);
        self.live -= 1;
        let host = *e.original.src.ip();
        let mut ports_freed = 0;
        if let Some((ip, _)) = e.snat_port {
            let proto = e.original.proto;
            let mk = (proto, e.original.src, ip);
            if let Some(m) = self.mappings.get_mut(&mk) {
                m.refs -= 1;
                if m.refs == 0 {
                    let port = m.port;
                    self.mappings.remove(&mk);
                    self.mapped.remove(&(proto, ip, port));
                    self.ports.release_owned(proto, ip, port);
                    ports_freed = 1;
                }
            }
            let pk = (proto, e.original.src, *e.reply.src.ip());
            if let Some(n) = self.permits.get_mut(&pk) {
                *n -= 1;
                if *n == 0 {
                    self.permits.remove(&pk);
                }
            }
        }
        if let Some(u) = self.hosts.get_mut(&host) {
            u.flows -= 1;
            u.ports -= ports_freed;
            if u.flows == 0 {
                self.hosts.remove(&host);
            }
        }
        if expired {
            self.expired += 1;
        }
    }

    /// The live flow of `key` (its slot and the key's direction); an
    /// expired one is reaped on the spot.
    #[inline]
    fn find(&mut self, key: &FlowKey, now: Timestamp) -> Option<(usize, Direction)> {
        let r = *self.index.get(key)?;
        let slot = r.slot();
        let expired = self.entries[slot]
            .as_ref()
            .is_none_or(|e| e.is_expired(now));
        if expired {
            self.kill(slot, true);
            return None;
        }
        Some((slot, r.dir()))
    }

    fn entry_mut(&mut self, slot: usize) -> &mut Entry {
        self.entries[slot]
            .as_mut()
            .expect("indexed slot holds a flow")
    }

    fn account(
        timeouts: &Timeouts,
        e: &mut Entry,
        dir: Direction,
        bytes: usize,
        flags: u8,
        now: Timestamp,
    ) {
        let c = &mut e.counters[dir.index()];
        c.packets += 1;
        c.bytes += bytes as u64;
        e.state = match e.state {
            FlowState::Tcp(s) => FlowState::Tcp(tcp_next(s, &mut e.fin_dir, dir, flags)),
            FlowState::Udp { assured } => FlowState::Udp {
                assured: assured || (e.counters[0].packets > 0 && e.counters[1].packets > 0),
            },
            FlowState::Icmp => FlowState::Icmp,
        };
        if now > e.last_seen {
            e.last_seen = now;
        }
        e.expires = e.last_seen.saturating_add(timeouts.for_state(e.state));
    }

    /// The per-packet call: finds the flow of `key` (either direction),
    /// counts the packet (`bytes`, TCP `flags`), advances its state and
    /// idle timer, and says how to rewrite the packet. `None` if no live
    /// flow matches.
    #[inline]
    pub fn track(&mut self, key: &FlowKey, bytes: usize, flags: u8, now: Timestamp) -> Option<Hit> {
        let (slot, dir) = self.find(key, now)?;
        let timeouts = self.timeouts;
        let e = self.entry_mut(slot);
        Self::account(&timeouts, e, dir, bytes, flags, now);
        Some(e.hit(dir))
    }

    /// Finds the flow of `key` without counting a packet or refreshing it
    /// (for ICMP errors related to a flow).
    pub fn lookup(&mut self, key: &FlowKey, now: Timestamp) -> Option<Hit> {
        let (slot, dir) = self.find(key, now)?;
        Some(self.entry_mut(slot).hit(dir))
    }

    /// The flow of `key`, for display.
    pub fn get(&self, key: &FlowKey, now: Timestamp) -> Option<FlowInfo> {
        let r = self.index.get(key)?;
        let e = self.entries[r.slot()].as_ref()?;
        (!e.is_expired(now)).then(|| e.info())
    }

    /// [`track`](Self::track)s the packet if a live flow matches `key`;
    /// otherwise creates a flow whose original tuple is `key`, translated
    /// as `nat` says, and counts the packet in it.
    pub fn track_or_create(
        &mut self,
        key: &FlowKey,
        nat: NatSpec,
        bytes: usize,
        flags: u8,
        now: Timestamp,
    ) -> Result<Hit, ConntrackError> {
        if let Some(hit) = self.track(key, bytes, flags, now) {
            return Ok(hit);
        }
        self.create(key, nat, bytes, flags, now, Direction::Original)
    }

    /// The internal endpoint behind the external `ip:port` of `proto`, if
    /// a mapping holds it.
    pub fn mapping_owner(&self, proto: Protocol, ip: Ipv4Addr, port: u16) -> Option<SocketAddrV4> {
        self.mapped.get(&(proto, ip, port)).copied()
    }

    /// The external port of `internal`'s mapping on `ip`, if it has one.
    pub fn mapping_of(&self, proto: Protocol, internal: SocketAddrV4, ip: Ipv4Addr) -> Option<u16> {
        self.mappings.get(&(proto, internal, ip)).map(|m| m.port)
    }

    /// Whether `internal` has a live SNAT flow to `remote` (any port): what
    /// address-dependent filtering (RFC 4787 §5) admits.
    pub fn permits(&self, proto: Protocol, internal: SocketAddrV4, remote: Ipv4Addr) -> bool {
        self.permits.contains_key(&(proto, internal, remote))
    }

    /// Creates the flow an inbound packet `key` (`R:r -> E:e`) opens
    /// through the existing mapping `E:e` of `internal` (`X:x`), after the
    /// caller's filter admitted it: its original tuple is `X:x -> R:r`,
    /// its reply tuple `key`, as if `X:x` had sent first, so the packet
    /// counts as a reply and `X:x`'s answers leave from `E:e`. `None` if
    /// no mapping `E:e` of `internal` exists.
    pub fn create_inbound(
        &mut self,
        key: &FlowKey,
        internal: SocketAddrV4,
        limits: HostLimits,
        bytes: usize,
        flags: u8,
        now: Timestamp,
    ) -> Result<Option<Hit>, ConntrackError> {
        let ext = *key.dst.ip();
        if self.mapping_of(key.proto, internal, ext) != Some(key.dst.port()) {
            return Ok(None);
        }
        let original = FlowKey::new(key.proto, internal, key.src);
        let nat = NatSpec {
            snat: Some(ext),
            dnat: None,
            limits,
        };
        // The flow starts as the originator's (a TCP SYN from the inside
        // would have made it SYN_SENT), then the packet is its reply.
        let create_flags = if flags & SYN != 0 { SYN } else { 0 };
        self.create(&original, nat, 0, create_flags, now, Direction::Reply)?;
        Ok(self.track(key, bytes, flags, now))
    }

    fn create(
        &mut self,
        key: &FlowKey,
        nat: NatSpec,
        bytes: usize,
        flags: u8,
        now: Timestamp,
        first: Direction,
    ) -> Result<Hit, ConntrackError> {
        let host = *key.src.ip();
        let mut held_by_host = self.hosts.get(&host).copied().unwrap_or_default();
        if held_by_host.flows >= nat.limits.flows {
            if !self.evict_unconfirmed(Some(host), now) {
                self.host_limited += 1;
                return Err(ConntrackError::HostLimit {
                    host,
                    what: "flows",
                    limit: nat.limits.flows,
                });
            }
            held_by_host = self.hosts.get(&host).copied().unwrap_or_default();
        }
        // A full table refuses without touching the port allocator.
        if self.live >= self.capacity {
            if !self.evict_unconfirmed(None, now) {
                self.table_full += 1;
                return Err(ConntrackError::TableFull {
                    capacity: self.capacity,
                });
            }
            held_by_host = self.hosts.get(&host).copied().unwrap_or_default();
        }
        let mut existing = nat
            .snat
            .and_then(|ip| self.mappings.get(&(key.proto, key.src, ip)).map(|m| m.port));
        if self.reclaim_closed_reply(key, nat, existing, flags, now) {
            // The closed flow may have been its mapping's last.
            existing = nat
                .snat
                .and_then(|ip| self.mappings.get(&(key.proto, key.src, ip)).map(|m| m.port));
        }
        let new_mapping = nat.snat.is_some() && existing.is_none();
        if new_mapping && held_by_host.ports >= nat.limits.ports {
            self.host_limited += 1;
            return Err(ConntrackError::HostLimit {
                host,
                what: "ports",
                limit: nat.limits.ports,
            });
        }
        let mut held = [0u16; SNAT_ATTEMPTS];
        let mut nheld = 0;
        let result = loop {
            let (reply, snat_port) = match self.reply_tuple(key, nat, existing, nheld) {
                Ok(r) => r,
                Err(e) => {
                    self.port_exhausted += 1;
                    break Err(ConntrackError::Ports(e));
                }
            };
            if reply != *key && self.find(&reply, now).is_some() {
                match snat_port {
                    // Keep the clashing port claimed so the next attempt
                    // gets another one (only for a new mapping: an
                    // existing one keeps its port).
                    Some((_, port)) if new_mapping && nheld < SNAT_ATTEMPTS - 1 => {
                        held[nheld] = port;
                        nheld += 1;
                        continue;
                    }
                    _ => {
                        self.conflicts += 1;
                        if let (true, Some((ip, port))) = (new_mapping, snat_port) {
                            self.ports.release_owned(key.proto, ip, port);
                        }
                        break Err(ConntrackError::Conflict(reply));
                    }
                }
            }
            break Ok(self.insert(key, reply, snat_port, new_mapping, bytes, flags, now, first));
        };
        if let Some(ip) = nat.snat {
            for &port in &held[..nheld] {
                self.ports.release_owned(key.proto, ip, port);
            }
        }
        result
    }

    /// A TCP SYN whose mapping's reply tuple is still held by a closed
    /// connection (TIME_WAIT or CLOSE) of the same mapping takes it over:
    /// the originator has moved on (its kernel reused the source port for
    /// another destination that translates to the same backend), as
    /// Linux's conntrack lets a new SYN reopen a TIME_WAIT entry. Removes
    /// the closed flow and returns whether it did.
    fn reclaim_closed_reply(
        &mut self,
        key: &FlowKey,
        nat: NatSpec,
        existing: Option<u16>,
        flags: u8,
        now: Timestamp,
    ) -> bool {
        let (Some(ip), Some(port)) = (nat.snat, existing) else {
            return false;
        };
        if key.proto != Protocol::Tcp || flags & (SYN | ACK) != SYN {
            return false;
        }
        let reply = FlowKey::new(
            key.proto,
            nat.dnat.unwrap_or(key.dst),
            SocketAddrV4::new(ip, port),
        );
        let Some((slot, _)) = self.find(&reply, now) else {
            return false;
        };
        let closed = self.entries[slot].as_ref().is_some_and(|e| {
            matches!(
                e.state,
                FlowState::Tcp(TcpState::TimeWait) | FlowState::Tcp(TcpState::Close)
            )
        });
        if closed {
            self.kill(slot, false);
        }
        closed
    }

    /// Removes one unconfirmed flow (TCP SYN_SENT, UDP never answered) to
    /// make room, as Linux's early drop does: of `host` if given (it is at
    /// its own limit), else preferring the flow whose host holds the
    /// most. Looks at up to [`EVICT_SCAN`] slots from where the last scan
    /// stopped. Returns whether one was removed.
    fn evict_unconfirmed(&mut self, host: Option<Ipv4Addr>, now: Timestamp) -> bool {
        let n = self.entries.len();
        if n == 0 {
            return false;
        }
        let mut best: Option<(usize, u32)> = None;
        let mut idx = self.evict_cursor % n;
        for _ in 0..EVICT_SCAN.min(n) {
            if let Some(e) = &self.entries[idx] {
                let owner = *e.original.src.ip();
                let candidate =
                    e.is_expired(now) || (e.is_unconfirmed() && host.is_none_or(|h| h == owner));
                if candidate {
                    let weight = if e.is_expired(now) {
                        u32::MAX
                    } else {
                        self.hosts.get(&owner).map_or(0, |u| u.flows)
                    };
                    if best.is_none_or(|(_, w)| weight > w) {
                        best = Some((idx, weight));
                    }
                    if host.is_some() || weight == u32::MAX {
                        break;
                    }
                }
            }
            idx = (idx + 1) % n;
        }
        self.evict_cursor = idx;
        let Some((slot, weight)) = best else {
            return false;
        };
        if weight == u32::MAX {
            self.kill(slot, true);
        } else {
            self.kill(slot, false);
            self.early_evicted += 1;
        }
        true
    }

    /// Stores a new flow under both its tuples; the caller checked that
    /// there is room and that neither tuple is live.
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        key: &FlowKey,
        reply: FlowKey,
        snat_port: Option<(Ipv4Addr, u16)>,
        new_mapping: bool,
        bytes: usize,
        flags: u8,
        now: Timestamp,
        first: Direction,
    ) -> Hit {
        let host = self.hosts.entry(*key.src.ip()).or_default();
        host.flows += 1;
        if let Some((ip, port)) = snat_port {
            if new_mapping {
                host.ports += 1;
                self.mappings
                    .insert((key.proto, key.src, ip), Mapping { port, refs: 1 });
                self.mapped.insert((key.proto, ip, port), key.src);
            } else if let Some(m) = self.mappings.get_mut(&(key.proto, key.src, ip)) {
                m.refs += 1;
            }
            *self
                .permits
                .entry((key.proto, key.src, *reply.src.ip()))
                .or_default() += 1;
        }
        let initial = initial_state(key.proto, flags);
        // A flow opened from outside (`first` is the reply) has not seen
        // its original direction yet.
        let packets = u64::from(first == Direction::Original);
        let entry = Entry {
            original: *key,
            reply,
            created: now,
            snat_port,
            rewrite: [
                Rewrite::between(key, &reply.reversed()),
                Rewrite::between(&reply, &key.reversed()),
            ],
            state: initial,
            fin_dir: None,
            last_seen: now,
            expires: now.saturating_add(self.timeouts.for_state(initial)),
            counters: [
                Counters {
                    packets,
                    bytes: bytes as u64 * packets,
                },
                Counters::default(),
            ],
        };
        let hit = entry.hit(Direction::Original);
        let slot = match self.free.pop() {
            Some(slot) => {
                let slot = slot as usize;
                self.entries[slot] = Some(entry);
                slot
            }
            None => {
                // live < capacity and no free slot: len < capacity, so
                // this stays within the reserved capacity.
                self.entries.push(Some(entry));
                self.entries.len() - 1
            }
        };
        if reply != *key {
            self.index
                .insert(reply, SlotRef::new(slot, Direction::Reply));
        }
        self.index
            .insert(*key, SlotRef::new(slot, Direction::Original));
        self.live += 1;
        self.created += 1;
        hit
    }

    /// The reply tuple of a new flow, allocating an SNAT port if asked.
    fn reply_tuple(
        &mut self,
        key: &FlowKey,
        nat: NatSpec,
        existing: Option<u16>,
        attempt: usize,
    ) -> Result<(FlowKey, Option<(Ipv4Addr, u16)>), PortAllocError> {
        let icmp = key.proto == Protocol::Icmp;
        let mut dst = nat.dnat.unwrap_or(key.dst);
        if icmp {
            dst.set_port(key.dst.port());
        }
        let mut src = key.src;
        let mut snat_port = None;
        if let Some(ip) = nat.snat {
            // Endpoint-independent mapping (RFC 4787 REQ-1, RFC 5382
            // REQ-1): every flow of `key.src` leaves from the same port.
            let port = match existing {
                Some(port) => port,
                None => {
                    let hash = self.index.hasher().hash_one((key, attempt));
                    self.ports
                        .allocate_owned(key.proto, ip, key.src.port(), hash)?
                }
            };
            src = SocketAddrV4::new(ip, port);
            if icmp {
                dst.set_port(port);
            }
            snat_port = Some((ip, port));
        }
        Ok((FlowKey::new(key.proto, dst, src), snat_port))
    }

    /// Removes the flow `key` belongs to (either direction). Returns
    /// whether a flow was removed.
    pub fn remove(&mut self, key: &FlowKey) -> bool {
        let Some(r) = self.index.get(key).copied() else {
            return false;
        };
        self.kill(r.slot(), false);
        true
    }

    /// Removes at most `budget` expired flows, resuming where the previous
    /// call stopped and scanning each slot at most once per call.
    pub fn expire(&mut self, now: Timestamp, budget: usize) -> ExpireReport {
        let mut report = ExpireReport::default();
        let n = self.entries.len();
        if n == 0 {
            return report;
        }
        let mut idx = if self.cursor < n { self.cursor } else { 0 };
        let mut scanned = 0;
        while scanned < n && report.removed < budget {
            if self.entries[idx]
                .as_ref()
                .is_some_and(|e| e.is_expired(now))
            {
                self.kill(idx, true);
                report.removed += 1;
            }
            scanned += 1;
            idx += 1;
            if idx == n || idx % self.segment == 0 {
                report.shards_scanned += 1;
            }
            if idx == n {
                idx = 0;
            }
        }
        self.cursor = idx;
        report
    }

    /// Every live flow, sorted by original tuple.
    pub fn snapshot(&self, now: Timestamp) -> Vec<FlowInfo> {
        let mut out: Vec<FlowInfo> = self
            .entries
            .iter()
            .flatten()
            .filter(|e| !e.is_expired(now))
            .map(Entry::info)
            .collect();
        out.sort_by_key(|f| f.original);
        out
    }

    /// Removes every flow; returns how many there were.
    pub fn flush(&mut self) -> usize {
        let n = self.live;
        self.entries.clear();
        for ((proto, _, ip), m) in self.mappings.drain() {
            self.ports.release_owned(proto, ip, m.port);
        }
        self.mapped.clear();
        self.permits.clear();
        self.hosts.clear();
        self.free.clear();
        self.index.clear();
        self.live = 0;
        self.cursor = 0;
        n
    }
}

fn initial_state(proto: Protocol, flags: u8) -> FlowState {
    match proto {
        Protocol::Tcp if flags & RST != 0 => FlowState::Tcp(TcpState::Close),
        Protocol::Tcp if flags & SYN != 0 && flags & ACK == 0 => FlowState::Tcp(TcpState::SynSent),
        // Mid-stream pick-up (Linux's default nf_conntrack_tcp_loose).
        Protocol::Tcp => FlowState::Tcp(TcpState::Established),
        Protocol::Udp => FlowState::Udp { assured: false },
        Protocol::Icmp => FlowState::Icmp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_state_machine_handshake_and_close() {
        use Direction::{Original as O, Reply as R};
        use TcpState::*;
        let mut fd = None;
        let steps = [
            (SynSent, R, SYN | ACK, SynRecv),
            (SynRecv, O, ACK, Established),
            (Established, O, ACK, Established),
            (Established, R, FIN | ACK, FinWait),
            (FinWait, R, ACK, FinWait),
            (FinWait, O, ACK, CloseWait),
            (CloseWait, O, FIN | ACK, LastAck),
            (LastAck, O, ACK, LastAck),
            (LastAck, R, ACK, TimeWait),
            (TimeWait, O, SYN, SynSent),
        ];
        for (from, dir, flags, to) in steps {
            assert_eq!(
                tcp_next(from, &mut fd, dir, flags),
                to,
                "{from} {dir:?} {flags:#x}"
            );
        }
        assert_eq!(fd, None, "reset on reuse");
        assert_eq!(tcp_next(Established, &mut fd, O, RST), Close);
        assert_eq!(
            tcp_next(SynSent, &mut fd, R, SYN),
            SynRecv,
            "simultaneous open"
        );
        assert_eq!(tcp_next(SynSent, &mut fd, O, SYN), SynSent, "retransmit");
        // Both FINs at once then the last ACK.
        let mut fd = None;
        assert_eq!(tcp_next(Established, &mut fd, O, FIN | ACK), FinWait);
        assert_eq!(tcp_next(FinWait, &mut fd, R, FIN | ACK), LastAck);
        assert_eq!(tcp_next(LastAck, &mut fd, O, ACK), TimeWait);
    }

    #[test]
    fn timestamps() {
        assert_eq!(Timestamp::from_secs(2).as_nanos(), 2_000_000_000);
        assert_eq!(
            Timestamp::from_secs(1).saturating_add(Duration::from_millis(500)),
            Timestamp::from_nanos(1_500_000_000)
        );
        assert_eq!(
            Timestamp::from_secs(1).saturating_duration_since(Timestamp::from_secs(3)),
            Duration::ZERO
        );
        let e = Instant::now();
        assert_eq!(
            Timestamp::from_instant(e, e + Duration::from_secs(4)),
            Timestamp::from_secs(4)
        );
        assert_eq!(
            Timestamp::from_instant(e + Duration::from_secs(1), e),
            Timestamp::ZERO
        );
    }

    #[test]
    fn display_states() {
        assert_eq!(
            FlowState::Tcp(TcpState::Established).to_string(),
            "ESTABLISHED"
        );
        assert_eq!(FlowState::Udp { assured: false }.to_string(), "UNREPLIED");
        assert_eq!(FlowState::Udp { assured: true }.to_string(), "ASSURED");
    }
}
