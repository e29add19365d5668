//! The forwarding core: one learning switch per network plus its gateway.
//!
//! [`Switch::handle`] takes one received frame with its ingress port and the
//! current time, and hands every frame it decides to send to a [`Transmit`]
//! sink. It does no I/O and allocates nothing, so it runs the same under the
//! TAP datapath, in unit tests and in benchmarks.
//!
//! A network has two kinds of ports: *endpoints* (a TAP in a namespace, with
//! one MAC and one IPv4 address) and *tunnels* (one per remote VTEP of an
//! overlay network, RFC 7348). Per frame from an endpoint, in order:
//! 1. port security: the source MAC must be the port's, and for ARP and IPv4
//!    the sender address must be the port's (or 0.0.0.0 for ARP probes,
//!    RFC 5227 §2.1.1);
//! 2. ARP requests for the gateway, or for any address the switch knows, are
//!    answered locally (ARP suppression);
//! 3. IPv4 addressed to the gateway's MAC is routed ([`route`]);
//! 4. everything else is bridged within the network as IEEE 802.1D does
//!    ([`bridge`]).
//!
//! Broadcast and multicast frames from an endpoint, and unknown unicast
//! frames about to be flooded, first pass the port's storm control
//! ([`crate::storm`]).
//!
//! Frames from a tunnel may carry any source address; they teach the MAC
//! table which VTEP a MAC sits behind, and are never flooded back into
//! tunnels (split horizon: every VTEP replicates to all the others itself,
//! RFC 7348 §4.2 head-end replication).
//!
//! A third kind of port belongs to no network: the *uplink*, a host
//! interface where weft owns an address (see `nat`). [`Switch::handle`]
//! dispatches on the port's kind; frames from the uplink are answered (ARP,
//! ping) or translated back into a network (replies to masqueraded flows,
//! published ports).

mod bridge;
mod nat;
mod route;

pub use nat::{
    conntrack_time, Filtering, LoadBalance, NetworkNat, ServiceConfig, UplinkConfig, DNS_PORT,
};

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::counters::{DropReason, SwitchCounters};
use crate::frame::{Offload, NO_OFFLOAD};
use crate::gateway::{self, RateLimiter};
use crate::mac_table::{
    LearnOutcome, Learned, MacTable, SavedMac, DEFAULT_AGING, DEFAULT_CAPACITY,
};
use crate::neighbor::{Neighbor, NeighborTable, SavedNeighbor};
use crate::storm::{FloodClass, PortStorm, StormLimits};
use crate::unresolved::NeighborKey;
use crate::{NetworkId, PortId};
use ipnet::Ipv4Net;
use weft_packet::{
    arp, ethernet, read_ipv4, read_u16, MacAddr, ARP_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4,
    ETHERTYPE_QINQ, ETHERTYPE_VLAN, ETH_HEADER_LEN,
};

/// Where the core sends the frames it forwards or originates.
pub trait Transmit {
    /// Sends `frame`, with its offload metadata, out of `port`. Failures
    /// are the sink's to count.
    fn transmit(&mut self, port: PortId, frame: &[u8], offload: &Offload);

    /// Takes a packet the core does not answer itself: a DNS query to a
    /// gateway, for the resolver (see [`Punt`]). The core copies and
    /// allocates nothing; a sink that keeps the query copies it.
    ///
    /// `Err` names why the query was dropped (e.g. the resolver's queue is
    /// full: [`DropReason::TxQueueFull`]); the core returns it from
    /// [`Switch::handle`], so it is counted against the ingress port.
    fn punt(&mut self, punt: Punt<'_>) -> Result<(), DropReason>;
}

/// A DNS query to a gateway, borrowed from the received frame, that the
/// core hands to its [`Transmit`] sink for the resolver.
#[derive(Debug, Clone, Copy)]
pub struct Punt<'a> {
    /// The ingress port: where the answer goes back out.
    pub port: PortId,
    pub network: NetworkId,
    pub client_mac: MacAddr,
    pub client: SocketAddrV4,
    pub gateway_mac: MacAddr,
    pub gateway: Ipv4Addr,
    /// UDP: the DNS message. TCP: the whole IPv4 packet (a TCP segment
    /// for the gateway's port 53, for the DNS-over-TCP responder).
    pub message: &'a [u8],
    pub tcp: bool,
}

/// A network as the datapath needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub id: NetworkId,
    pub subnet: Ipv4Net,
    pub gateway_ip: Ipv4Addr,
    pub gateway_mac: MacAddr,
    /// The largest IP packet the network's interfaces carry.
    pub mtu: u32,
}

/// An endpoint port: who may send from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConfig {
    pub id: PortId,
    pub network: NetworkId,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

/// A tunnel port: the way to one remote VTEP for one overlay network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelConfig {
    pub id: PortId,
    pub network: NetworkId,
    /// The largest inner IP packet the underlay carries once encapsulated
    /// (underlay MTU minus the 50 bytes of outer headers, RFC 7348 §4.3).
    pub max_ip_len: u32,
}

/// Why a configuration change was refused by the core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("network {0:?} is already configured")]
    DuplicateNetwork(NetworkId),
    #[error("network {0:?} does not exist")]
    UnknownNetwork(NetworkId),
    #[error("network {0:?} still has ports")]
    NetworkBusy(NetworkId),
    #[error("subnet {0} overlaps a configured network")]
    Overlap(Ipv4Net),
    #[error("port {0:?} is already configured")]
    DuplicatePort(PortId),
    #[error("port {0:?} does not exist")]
    UnknownPort(PortId),
    #[error("the table of network {0:?} is full")]
    TableFull(NetworkId),
}

/// What a port id is to the core.
#[derive(Debug, Clone, Copy)]
enum PortEntry {
    Endpoint(PortConfig),
    Tunnel(TunnelConfig),
    /// The uplink (its configuration is the NAT state's): in no network.
    Uplink,
}

impl PortEntry {
    /// The network of an endpoint or tunnel; the uplink is in none.
    fn network(&self) -> Option<NetworkId> {
        match self {
            PortEntry::Endpoint(p) => Some(p.network),
            PortEntry::Tunnel(t) => Some(t.network),
            PortEntry::Uplink => None,
        }
    }
}

/// What a forwarding stage did with a packet. [`Switch::route`] tries the
/// NAT stages (own address, service VIP, masquerade) in turn: each either
/// takes the packet — it sent or consumed it ([`Verdict::Handled`]) or
/// dropped it ([`Verdict::Drop`], with the ICMP error it may have sent) —
/// or leaves it to the next stage ([`Verdict::Pass`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
enum Verdict {
    /// Sent, or consumed (e.g. punted): `Ok(())` from [`Switch::handle`].
    Handled,
    /// Dropped: `Err(reason)` from [`Switch::handle`].
    Drop(DropReason),
    /// Not this stage's packet: the next stage decides.
    Pass,
}

impl Verdict {
    /// The frame's outcome, with `reason` if no stage took it.
    fn or_drop(self, reason: DropReason) -> Result<(), DropReason> {
        match self {
            Verdict::Handled => Ok(()),
            Verdict::Drop(r) => Err(r),
            Verdict::Pass => Err(reason),
        }
    }
}

impl From<Result<(), DropReason>> for Verdict {
    /// A stage's outcome once it has taken the packet.
    fn from(result: Result<(), DropReason>) -> Self {
        match result {
            Ok(()) => Verdict::Handled,
            Err(reason) => Verdict::Drop(reason),
        }
    }
}

/// The port a frame came in on, as the forwarding steps need it.
#[derive(Debug, Clone, Copy)]
struct Ingress {
    id: PortId,
    kind: IngressKind,
}

/// Which kind of port a frame came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IngressKind {
    /// An endpoint of this network.
    Endpoint(NetworkId),
    /// A tunnel of this (overlay) network.
    Tunnel(NetworkId),
    /// The uplink, which belongs to no network: a reply to a masqueraded
    /// flow or traffic to a published port, translated into a network.
    Uplink,
}

impl Ingress {
    /// The ingress network; none for the uplink.
    #[inline]
    fn network(&self) -> Option<NetworkId> {
        match self.kind {
            IngressKind::Endpoint(n) | IngressKind::Tunnel(n) => Some(n),
            IngressKind::Uplink => None,
        }
    }

    #[inline]
    fn is_tunnel(&self) -> bool {
        matches!(self.kind, IngressKind::Tunnel(_))
    }
}

struct Network {
    cfg: NetworkConfig,
    fdb: MacTable,
    /// Endpoint ports.
    ports: Vec<PortId>,
    /// Tunnel ports (overlay networks only).
    tunnels: Vec<PortId>,
    /// The smallest `max_ip_len` of the tunnels.
    tunnel_max_ip_len: u32,
    /// Endpoint address → port, for routing into this network.
    hosts: FxHashMap<Ipv4Addr, PortId>,
    /// Remote bindings, learned over tunnels or fed by a control plane.
    neighbors: NeighborTable,
    /// Networks this one may route to.
    routes_to: Vec<NetworkId>,
}

/// ICMP errors per second the gateways may send, and the burst allowed
/// (Linux defaults: net.ipv4.icmp_msgs_per_sec = 1000, burst 50).
const ICMP_ERRORS_PER_SEC: u32 = 1000;
const ICMP_ERRORS_BURST: u32 = 50;
/// ARP requests per second the gateways may send to resolve next hops.
const ARP_REQUESTS_PER_SEC: u32 = 100;
const ARP_REQUESTS_BURST: u32 = 10;
/// Scratch space for frames the core builds: ICMP errors and fragments.
const SCRATCH_LEN: usize = 64 * 1024 + ETH_HEADER_LEN;

pub struct Switch {
    networks: Vec<Option<Network>>,
    ports: Vec<Option<PortEntry>>,
    /// Storm-control buckets, indexed like `ports`.
    storm: Vec<PortStorm>,
    storm_limits: StormLimits,
    /// Networks sorted by subnet address, for longest-prefix lookup.
    subnets: Vec<(Ipv4Net, NetworkId)>,
    aging: Duration,
    fdb_capacity: usize,
    icmp_limit: RateLimiter,
    arp_limit: RateLimiter,
    ip_ident: u16,
    scratch: Box<[u8]>,
    counters: Arc<SwitchCounters>,
    nat: nat::NatState,
}

impl Switch {
    pub fn new(counters: Arc<SwitchCounters>) -> Self {
        Self::with_conntrack(counters, weft_nat::Conntrack::default())
    }

    /// A switch whose NAT uses `conntrack`. The switch owns the table; the
    /// control plane lists and flushes it through the datapath's commands.
    pub fn with_conntrack(counters: Arc<SwitchCounters>, conntrack: weft_nat::Conntrack) -> Self {
        Switch {
            nat: nat::NatState::new(conntrack),
            networks: Vec::new(),
            ports: Vec::new(),
            storm: Vec::new(),
            storm_limits: StormLimits::default(),
            subnets: Vec::new(),
            aging: DEFAULT_AGING,
            fdb_capacity: DEFAULT_CAPACITY,
            icmp_limit: RateLimiter::new(ICMP_ERRORS_PER_SEC, ICMP_ERRORS_BURST),
            arp_limit: RateLimiter::new(ARP_REQUESTS_PER_SEC, ARP_REQUESTS_BURST),
            ip_ident: 0,
            scratch: vec![0u8; SCRATCH_LEN].into_boxed_slice(),
            counters,
        }
    }

    pub fn set_aging(&mut self, aging: Duration) {
        self.aging = aging;
    }

    pub fn aging(&self) -> Duration {
        self.aging
    }

    /// Sets every port's storm-control limits.
    pub fn set_storm_limits(&mut self, limits: StormLimits) {
        self.storm_limits = limits;
    }

    pub fn storm_limits(&self) -> StormLimits {
        self.storm_limits
    }

    /// Whether `port` may flood one more frame of `class` at `now`.
    #[inline]
    fn storm_allows(&mut self, port: PortId, class: FloodClass, now: Instant) -> bool {
        match self.storm.get_mut(port.0 as usize) {
            Some(s) => s.allow(&self.storm_limits, class, now),
            None => true,
        }
    }

    /// How long after `now` port `port`'s `class` budget holds `frames`
    /// frames again (zero for an unlimited class or an unknown port): how
    /// long the datapath may stop reading a port whose budget a storm
    /// spent ([`crate::storm::PortStorm::wait`]).
    pub fn storm_wait(
        &self,
        port: PortId,
        class: FloodClass,
        frames: u32,
        now: Instant,
    ) -> Duration {
        match self.storm.get(port.0 as usize) {
            Some(s) => s.wait(&self.storm_limits, class, frames, now),
            None => Duration::ZERO,
        }
    }

    pub fn add_network(&mut self, cfg: NetworkConfig) -> Result<(), ConfigError> {
        if self.network(cfg.id).is_some() {
            return Err(ConfigError::DuplicateNetwork(cfg.id));
        }
        if self
            .subnets
            .iter()
            .any(|(s, _)| s.contains(&cfg.subnet.network()) || cfg.subnet.contains(&s.network()))
        {
            return Err(ConfigError::Overlap(cfg.subnet));
        }
        let index = cfg.id.0 as usize;
        if self.networks.len() <= index {
            self.networks.resize_with(index + 1, || None);
        }
        self.subnets.push((cfg.subnet, cfg.id));
        self.subnets.sort_by_key(|(s, _)| u32::from(s.network()));
        self.networks[index] = Some(Network {
            fdb: MacTable::with_capacity(self.fdb_capacity),
            ports: Vec::new(),
            tunnels: Vec::new(),
            tunnel_max_ip_len: u32::MAX,
            hosts: FxHashMap::default(),
            neighbors: NeighborTable::with_capacity(self.fdb_capacity),
            routes_to: Vec::new(),
            cfg,
        });
        Ok(())
    }

    pub fn remove_network(&mut self, id: NetworkId) -> Result<(), ConfigError> {
        let net = self.network(id).ok_or(ConfigError::UnknownNetwork(id))?;
        if !net.ports.is_empty() || !net.tunnels.is_empty() {
            return Err(ConfigError::NetworkBusy(id));
        }
        self.networks[id.0 as usize] = None;
        self.set_network_nat(id, nat::NetworkNat::default());
        self.subnets.retain(|&(_, n)| n != id);
        for net in self.networks.iter_mut().flatten() {
            net.routes_to.retain(|&n| n != id);
        }
        Ok(())
    }

    /// Opens (`allowed`) or closes routing between two networks, both ways.
    pub fn set_route(
        &mut self,
        a: NetworkId,
        b: NetworkId,
        allowed: bool,
    ) -> Result<(), ConfigError> {
        for id in [a, b] {
            self.network(id).ok_or(ConfigError::UnknownNetwork(id))?;
        }
        for (from, to) in [(a, b), (b, a)] {
            let net = self.network_mut(from).expect("checked above");
            net.routes_to.retain(|&n| n != to);
            if allowed {
                net.routes_to.push(to);
            }
        }
        Ok(())
    }

    fn insert_port(&mut self, id: PortId, entry: PortEntry) {
        let index = id.0 as usize;
        if self.ports.len() <= index {
            self.ports.resize(index + 1, None);
            self.storm.resize(index + 1, PortStorm::default());
        }
        self.ports[index] = Some(entry);
        self.storm[index] = PortStorm::default();
    }

    pub fn add_port(&mut self, cfg: PortConfig) -> Result<(), ConfigError> {
        if self.port_entry(cfg.id).is_some() {
            return Err(ConfigError::DuplicatePort(cfg.id));
        }
        let net = self
            .network_mut(cfg.network)
            .ok_or(ConfigError::UnknownNetwork(cfg.network))?;
        net.ports.push(cfg.id);
        net.hosts.insert(cfg.ip, cfg.id);
        self.insert_port(cfg.id, PortEntry::Endpoint(cfg));
        Ok(())
    }

    pub fn add_tunnel(&mut self, cfg: TunnelConfig) -> Result<(), ConfigError> {
        if self.port_entry(cfg.id).is_some() {
            return Err(ConfigError::DuplicatePort(cfg.id));
        }
        let net = self
            .network_mut(cfg.network)
            .ok_or(ConfigError::UnknownNetwork(cfg.network))?;
        net.tunnels.push(cfg.id);
        net.tunnel_max_ip_len = net.tunnel_max_ip_len.min(cfg.max_ip_len);
        self.insert_port(cfg.id, PortEntry::Tunnel(cfg));
        Ok(())
    }

    /// Removes an endpoint or tunnel port and forgets what was learned on it.
    /// The uplink is removed with [`Switch::remove_uplink`].
    pub fn remove_port(&mut self, id: PortId) -> Result<(), ConfigError> {
        let entry = self.port_entry(id).ok_or(ConfigError::UnknownPort(id))?;
        let Some(network) = entry.network() else {
            return Err(ConfigError::UnknownPort(id));
        };
        self.ports[id.0 as usize] = None;
        let ports = &self.ports;
        if let Some(net) = self
            .networks
            .get_mut(network.0 as usize)
            .and_then(Option::as_mut)
        {
            net.ports.retain(|&p| p != id);
            net.tunnels.retain(|&p| p != id);
            if let PortEntry::Endpoint(cfg) = entry {
                net.hosts.remove(&cfg.ip);
            }
            net.tunnel_max_ip_len = net
                .tunnels
                .iter()
                .filter_map(|t| match ports.get(t.0 as usize).copied().flatten() {
                    Some(PortEntry::Tunnel(c)) => Some(c.max_ip_len),
                    _ => None,
                })
                .min()
                .unwrap_or(u32::MAX);
            net.fdb.forget_port(id);
        }
        Ok(())
    }

    /// Feeds a MAC → port binding from a control plane (never aged).
    pub fn set_static_mac(
        &mut self,
        network: NetworkId,
        mac: MacAddr,
        port: PortId,
        now: Instant,
    ) -> Result<(), ConfigError> {
        if self.port_entry(port).and_then(|p| p.network()) != Some(network) {
            return Err(ConfigError::UnknownPort(port));
        }
        let net = self
            .network_mut(network)
            .ok_or(ConfigError::UnknownNetwork(network))?;
        if net.fdb.set_static(mac, port, now) {
            Ok(())
        } else {
            Err(ConfigError::TableFull(network))
        }
    }

    /// Feeds an IPv4 → MAC binding from a control plane (never aged).
    pub fn set_static_neighbor(
        &mut self,
        network: NetworkId,
        ip: Ipv4Addr,
        mac: MacAddr,
        now: Instant,
    ) -> Result<(), ConfigError> {
        let net = self
            .network_mut(network)
            .ok_or(ConfigError::UnknownNetwork(network))?;
        if net.neighbors.set_static(ip, mac, now) {
            Ok(())
        } else {
            Err(ConfigError::TableFull(network))
        }
    }

    /// A copy of `mac`'s forwarding entry in `network`, to restore later.
    pub fn mac_entry(&self, network: NetworkId, mac: MacAddr) -> Option<SavedMac> {
        self.network(network)?.fdb.entry(mac)
    }

    /// Puts back what [`Switch::mac_entry`] copied (`None`: no entry).
    pub fn restore_mac_entry(&mut self, network: NetworkId, mac: MacAddr, saved: Option<SavedMac>) {
        if let Some(net) = self.network_mut(network) {
            net.fdb.restore(mac, saved);
        }
    }

    /// A copy of `ip`'s neighbour binding in `network`, to restore later.
    pub fn neighbor_entry(&self, network: NetworkId, ip: Ipv4Addr) -> Option<SavedNeighbor> {
        self.network(network)?.neighbors.entry(ip)
    }

    /// Puts back what [`Switch::neighbor_entry`] copied (`None`: no binding).
    pub fn restore_neighbor_entry(
        &mut self,
        network: NetworkId,
        ip: Ipv4Addr,
        saved: Option<SavedNeighbor>,
    ) {
        if let Some(net) = self.network_mut(network) {
            net.neighbors.restore(ip, saved);
        }
    }

    /// Whether routing from `a` to `b` is allowed.
    pub fn route_allowed(&self, a: NetworkId, b: NetworkId) -> bool {
        self.network(a).is_some_and(|n| n.routes_to.contains(&b))
    }

    /// Whether network `id` exists.
    pub fn has_network(&self, id: NetworkId) -> bool {
        self.network(id).is_some()
    }

    /// The endpoint and tunnel ports of network `id`.
    pub fn network_ports(&self, id: NetworkId) -> Option<Vec<PortId>> {
        let net = self.network(id)?;
        Some(net.ports.iter().chain(&net.tunnels).copied().collect())
    }

    /// The network of endpoint or tunnel port `id` (none for the uplink or
    /// an unknown port).
    pub fn port_network(&self, id: PortId) -> Option<NetworkId> {
        self.port_entry(id)?.network()
    }

    /// Ages out MAC table and neighbour entries; call about once a second.
    pub fn expire(&mut self, now: Instant) {
        let aging = self.aging;
        for net in self.networks.iter_mut().flatten() {
            net.fdb.expire(now, aging);
            net.neighbors.expire(now, aging);
        }
        self.expire_nat(now);
    }

    /// The learned addresses of one network, or of all.
    pub fn fdb(&self, network: Option<NetworkId>, now: Instant) -> Vec<(NetworkId, Learned)> {
        self.networks
            .iter()
            .flatten()
            .filter(|n| network.is_none_or(|id| id == n.cfg.id))
            .flat_map(|n| n.fdb.dump(now).into_iter().map(move |l| (n.cfg.id, l)))
            .collect()
    }

    /// The remote IPv4 → MAC bindings of one network, or of all.
    pub fn neighbors(
        &self,
        network: Option<NetworkId>,
        now: Instant,
    ) -> Vec<(NetworkId, Neighbor)> {
        self.networks
            .iter()
            .flatten()
            .filter(|n| network.is_none_or(|id| id == n.cfg.id))
            .flat_map(|n| {
                n.neighbors
                    .dump(now)
                    .into_iter()
                    .map(move |b| (n.cfg.id, b))
            })
            .collect()
    }

    #[inline]
    fn network(&self, id: NetworkId) -> Option<&Network> {
        self.networks.get(id.0 as usize).and_then(Option::as_ref)
    }

    #[inline]
    fn network_mut(&mut self, id: NetworkId) -> Option<&mut Network> {
        self.networks
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
    }

    /// The network a frame came in from; none for the uplink.
    #[inline]
    fn ingress_network(&self, ingress: &Ingress) -> Option<&Network> {
        self.network(ingress.network()?)
    }

    #[inline]
    fn port_entry(&self, id: PortId) -> Option<PortEntry> {
        self.ports.get(id.0 as usize).copied().flatten()
    }

    #[inline]
    fn is_tunnel(&self, id: PortId) -> bool {
        matches!(self.port_entry(id), Some(PortEntry::Tunnel(_)))
    }

    /// The network whose subnet holds `ip`. Subnets never overlap, so the
    /// candidate is the one with the greatest network address ≤ `ip`.
    #[inline]
    fn network_for(&self, ip: Ipv4Addr) -> Option<NetworkId> {
        let key = u32::from(ip);
        let idx = self
            .subnets
            .partition_point(|(s, _)| u32::from(s.network()) <= key);
        let (subnet, id) = *self.subnets.get(idx.checked_sub(1)?)?;
        subnet.contains(&ip).then_some(id)
    }

    /// The MAC bound to `ip` in `net`: a local endpoint's, or a neighbour's.
    #[inline]
    fn resolve(&self, net: &Network, ip: Ipv4Addr) -> Option<MacAddr> {
        if let Some(&port) = net.hosts.get(&ip) {
            if let Some(PortEntry::Endpoint(p)) = self.port_entry(port) {
                return Some(p.mac);
            }
        }
        net.neighbors.lookup(ip)
    }

    /// Processes one frame received on `ingress` at `now`.
    ///
    /// `frame` is the received frame, which the core may rewrite in place
    /// (replies, routed packets), and `offload` its metadata, passed on with
    /// the frame wherever it is forwarded. `Err` names why the frame was
    /// dropped; the caller counts it against the ingress port.
    pub fn handle<T: Transmit>(
        &mut self,
        ingress: PortId,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        if frame.len() < ETH_HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        match self.port_entry(ingress).ok_or(DropReason::NotRoutable)? {
            PortEntry::Endpoint(port) => self.handle_endpoint_frame(&port, frame, offload, now, tx),
            PortEntry::Tunnel(tunnel) => self.handle_tunnel_frame(&tunnel, frame, offload, now, tx),
            PortEntry::Uplink => self.handle_uplink_frame(frame, offload, now, tx),
        }
    }

    fn handle_endpoint_frame<T: Transmit>(
        &mut self,
        port: &PortConfig,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        if MacAddr::read(frame, ethernet::SRC) != port.mac {
            return Err(DropReason::SpoofedSourceMac);
        }
        let ingress = Ingress {
            id: port.id,
            kind: IngressKind::Endpoint(port.network),
        };
        let dst = MacAddr::read(frame, ethernet::DST);
        if dst.is_multicast() {
            let (class, reason) = if dst == MacAddr::BROADCAST {
                (FloodClass::Broadcast, DropReason::StormBroadcast)
            } else {
                (FloodClass::Multicast, DropReason::StormMulticast)
            };
            if !self.storm_allows(port.id, class, now) {
                return Err(reason);
            }
        }
        let ethertype = read_u16(frame, ethernet::ETHERTYPE);
        let (gateway_mac, gateway_ip) = {
            let net = self.network(port.network).ok_or(DropReason::NotRoutable)?;
            (net.cfg.gateway_mac, net.cfg.gateway_ip)
        };
        match ethertype {
            ETHERTYPE_ARP => {
                check_arp(frame, port)?;
                self.learn(&ingress, port.mac, now);
                let target = read_ipv4(&frame[ETH_HEADER_LEN..], arp::TPA);
                let is_request = read_u16(&frame[ETH_HEADER_LEN..], arp::OPER) == arp::OP_REQUEST;
                if is_request && (target == gateway_ip || self.is_vip(port.network, target)) {
                    // The gateway answers for its address and for the
                    // network's service VIPs, which it serves.
                    gateway::arp_reply_in_place(frame, gateway_mac, target);
                    tx.transmit(port.id, &frame[..ETH_HEADER_LEN + ARP_LEN], &NO_OFFLOAD);
                    return Ok(());
                }
                if self.suppress_arp(port, frame, tx) {
                    return Ok(());
                }
                if dst == gateway_mac {
                    return Err(DropReason::NotRoutable);
                }
            }
            ETHERTYPE_IPV4 => {
                let meta = gateway::parse_ipv4(frame).map_err(|_| DropReason::Malformed)?;
                if meta.src != port.ip {
                    return Err(DropReason::SpoofedSourceIp);
                }
                if dst == gateway_mac {
                    self.learn(&ingress, port.mac, now);
                    return self.route(&ingress, frame, offload, &meta, now, tx);
                }
            }
            ETHERTYPE_VLAN | ETHERTYPE_QINQ => return Err(DropReason::UnsupportedEthertype),
            _ => {
                if dst == gateway_mac {
                    return Err(DropReason::NotRoutable);
                }
            }
        }
        self.learn(&ingress, port.mac, now);
        self.bridge(&ingress, frame, offload, now, tx)
    }

    fn handle_tunnel_frame<T: Transmit>(
        &mut self,
        tunnel: &TunnelConfig,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        let src = MacAddr::read(frame, ethernet::SRC);
        if src.is_multicast() {
            return Err(DropReason::Malformed);
        }
        let ingress = Ingress {
            id: tunnel.id,
            kind: IngressKind::Tunnel(tunnel.network),
        };
        let dst = MacAddr::read(frame, ethernet::DST);
        let (gateway_mac, gateway_ip, subnet) = {
            let net = self
                .network(tunnel.network)
                .ok_or(DropReason::NotRoutable)?;
            (net.cfg.gateway_mac, net.cfg.gateway_ip, net.cfg.subnet)
        };
        match read_u16(frame, ethernet::ETHERTYPE) {
            ETHERTYPE_ARP => {
                if !arp_format_ok(frame) {
                    return Err(DropReason::Malformed);
                }
                let a = &frame[ETH_HEADER_LEN..];
                let (sha, spa) = (MacAddr::read(a, arp::SHA), read_ipv4(a, arp::SPA));
                if sha.is_unicast() && is_host(&subnet, spa) && spa != gateway_ip {
                    if let Some(net) = self.network_mut(tunnel.network) {
                        net.neighbors.learn(spa, sha, now);
                    }
                    // Frames routed to `spa` while it was unresolved.
                    let key = NeighborKey::Network(tunnel.network, spa);
                    self.flush_unresolved(key, tunnel.id, sha, tx);
                }
                if dst == gateway_mac {
                    // A reply to the gateway's own request: learned above.
                    return Ok(());
                }
            }
            ETHERTYPE_IPV4 if dst == gateway_mac => {
                let meta = gateway::parse_ipv4(frame).map_err(|_| DropReason::Malformed)?;
                return self.route(&ingress, frame, offload, &meta, now, tx);
            }
            ETHERTYPE_VLAN | ETHERTYPE_QINQ => return Err(DropReason::UnsupportedEthertype),
            _ => {}
        }
        if dst == gateway_mac {
            return Err(DropReason::NotRoutable);
        }
        if src != gateway_mac {
            self.learn(&ingress, src, now);
        }
        self.bridge(&ingress, frame, offload, now, tx)
    }

    /// Records that `mac` was seen as a source on the ingress port.
    #[inline]
    fn learn(&mut self, ingress: &Ingress, mac: MacAddr, now: Instant) {
        let net = ingress
            .network()
            .and_then(|n| self.networks.get_mut(n.0 as usize))
            .and_then(Option::as_mut);
        if let Some(net) = net {
            if net.fdb.learn(mac, ingress.id, now) == LearnOutcome::Full {
                self.counters.fdb_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Answers an ARP request for an address the switch knows, instead of
    /// flooding it (and across every tunnel). A gratuitous ARP, or a request
    /// for the asker's own address, is left to flood.
    fn suppress_arp<T: Transmit>(
        &mut self,
        port: &PortConfig,
        frame: &mut [u8],
        tx: &mut T,
    ) -> bool {
        let a = &frame[ETH_HEADER_LEN..];
        if read_u16(a, arp::OPER) != arp::OP_REQUEST {
            return false;
        }
        let (spa, tpa) = (read_ipv4(a, arp::SPA), read_ipv4(a, arp::TPA));
        if spa == tpa || tpa == port.ip {
            return false;
        }
        let Some(net) = self.network(port.network) else {
            return false;
        };
        let Some(mac) = self.resolve(net, tpa) else {
            return false;
        };
        gateway::arp_reply_in_place(frame, mac, tpa);
        tx.transmit(port.id, &frame[..ETH_HEADER_LEN + ARP_LEN], &NO_OFFLOAD);
        self.counters.arp_suppressed.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Checks an ARP packet's length and format (RFC 826, Ethernet/IPv4 only).
#[inline]
pub(super) fn arp_format_ok(frame: &[u8]) -> bool {
    if frame.len() < ETH_HEADER_LEN + ARP_LEN {
        return false;
    }
    let a = &frame[ETH_HEADER_LEN..];
    read_u16(a, arp::HTYPE) == arp::HTYPE_ETHERNET
        && read_u16(a, arp::PTYPE) == ETHERTYPE_IPV4
        && a[arp::HLEN] == 6
        && a[arp::PLEN] == 4
        && matches!(read_u16(a, arp::OPER), arp::OP_REQUEST | arp::OP_REPLY)
}

/// Checks an ARP packet's format and that its sender fields are the port's
/// own.
#[inline]
fn check_arp(frame: &[u8], port: &PortConfig) -> Result<(), DropReason> {
    if !arp_format_ok(frame) {
        return Err(DropReason::Malformed);
    }
    let a = &frame[ETH_HEADER_LEN..];
    if MacAddr::read(a, arp::SHA) != port.mac {
        return Err(DropReason::SpoofedSourceMac);
    }
    let sender = read_ipv4(a, arp::SPA);
    if sender != port.ip && !sender.is_unspecified() {
        return Err(DropReason::SpoofedSourceIp);
    }
    Ok(())
}

/// Whether `ip` is a host address of `subnet` (not its network or
/// broadcast address).
fn is_host(subnet: &Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
}
