//! Reaching out and being reached: the uplink, masquerade, published ports
//! and service VIPs, on top of [`weft_nat`]'s connection tracking.
//!
//! * The uplink is a host interface on which weft owns an address and MAC
//!   of its own: it answers ARP for it and resolves next hops by ARP
//!   (RFC 826), like any host on that link.
//! * Traffic from a network's endpoints to anything outside weft's networks
//!   leaves through the uplink with the uplink address as its source
//!   (traditional NAPT, RFC 3022 §2.2; UDP and TCP behaviour per RFC 4787
//!   and RFC 5382, ICMP per RFC 5508). Mappings are endpoint-independent;
//!   inbound packets to a mapping pass its network's filter
//!   ([`Filtering`]: address-dependent by default, endpoint-independent on
//!   request, RFC 4787 REQ-8). Replies and ICMP errors about a translated
//!   flow are translated back, the quoted header too.
//! * An endpoint reaching the uplink address is hairpinned to the endpoint
//!   behind the mapping or published port it names, with its own mapping
//!   as the source (RFC 4787 REQ-9, RFC 5382 REQ-8).
//! * Each network sets per-endpoint limits on flows and mappings
//!   ([`NetworkNat`]), so one endpoint cannot take the table or the port
//!   pool from the others.
//! * A frame whose next hop on the uplink is not resolved yet waits in a
//!   bounded queue ([`crate::unresolved`]) for the ARP reply.
//! * A published port sends traffic that reaches the uplink address on the
//!   host port to an endpoint; the endpoint sees the real client address.
//!   From inside weft (hairpin) the source is also rewritten to the asker's
//!   mapping on the uplink address so the reply comes back through weft.
//! * A service VIP spreads new connections over its backends (round robin
//!   or a hash of the 5-tuple); conntrack keeps each connection on its
//!   backend for its life. The source becomes the gateway, as with hairpin,
//!   because client and backend share the L2 network.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};
use weft_nat::conntrack::{Hit, HostLimits, Timestamp};
use weft_nat::translate::{inspect_parsed, translate_parsed, TranslateOptions};
use weft_nat::{Conntrack, ConntrackError, FlowKey, NatSpec, Protocol};

use crate::counters::DropReason;
use crate::frame::{is_gso, needs_csum, Offload, NO_OFFLOAD};
use crate::gateway;
use crate::neighbor::NeighborTable;
use crate::unresolved::{NeighborKey, UnresolvedQueue, SLOT_LEN};
use crate::{NetworkId, PortId};
use weft_packet::meta::Ipv4Meta;
use weft_packet::{
    arp, ethernet, icmp, read_ipv4, read_u16, write_ipv4, write_u16, MacAddr, ARP_LEN,
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HEADER_LEN, IP_PROTO_TCP, IP_PROTO_UDP,
};

use super::{
    arp_format_ok, ConfigError, Ingress, IngressKind, PortEntry, Punt, Switch, Transmit, Verdict,
};

/// The DNS port the gateways answer on.
pub const DNS_PORT: u16 = 53;
/// Expired flows removed per expiry tick.
const EXPIRE_BUDGET: usize = 4096;
/// Bindings the uplink's neighbour table holds.
const UPLINK_NEIGHBORS: usize = 4096;

/// The uplink: a host interface where weft owns an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkConfig {
    /// The port the uplink device is attached as.
    pub port: PortId,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: MacAddr,
    /// The next hop for everything off the uplink's subnet.
    pub gateway: Option<Ipv4Addr>,
    /// The largest IP packet the uplink carries.
    pub mtu: u32,
}

impl UplinkConfig {
    fn on_link(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        };
        u32::from(ip) & mask == u32::from(self.ip) & mask
    }
}

/// How a service picks a backend for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalance {
    RoundRobin,
    /// A hash of the connection's 5-tuple.
    Hash,
}

/// A service VIP in one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub network: NetworkId,
    pub vip: Ipv4Addr,
    pub proto: Protocol,
    pub port: u16,
    /// Backend addresses in the network; the service port is kept.
    pub backends: Vec<Ipv4Addr>,
    pub lb: LoadBalance,
}

struct Service {
    cfg: ServiceConfig,
    next: usize,
}

/// Which inbound packets a mapping admits (RFC 4787 §5 and REQ-8, RFC
/// 5382 REQ-3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Filtering {
    /// From any address and port the endpoint has sent to from that
    /// mapping's address: from any port of such an address.
    #[default]
    AddressDependent,
    /// From anyone, while the mapping lives (what peer-to-peer software
    /// likes best).
    EndpointIndependent,
}

/// A network's NAT behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkNat {
    pub filtering: Filtering,
    /// What each endpoint of the network may hold in the conntrack table
    /// and the SNAT port pool.
    pub limits: HostLimits,
}

/// The switch's NAT state.
pub(super) struct NatState {
    /// Owned by the switch (so by the datapath worker): no lock.
    conntrack: Conntrack,
    uplink: Option<(UplinkConfig, NeighborTable)>,
    /// (protocol, host port) → endpoint.
    published: FxHashMap<(Protocol, u16), SocketAddrV4>,
    /// (VIP, protocol, port) → service.
    services: FxHashMap<(Ipv4Addr, Protocol, u16), Service>,
    internal: FxHashSet<NetworkId>,
    /// Networks whose NAT behaviour is not the default.
    policies: FxHashMap<NetworkId, NetworkNat>,
    /// Frames waiting for a next hop's MAC.
    unresolved: UnresolvedQueue,
    /// Whether DNS queries to the gateways are punted to the sink.
    dns: bool,
}

/// The conntrack clock's origin, shared by the datapath and the control
/// plane so that both read flow ages the same way.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// `now` on the conntrack clock.
pub fn conntrack_time(now: Instant) -> Timestamp {
    Timestamp::from_instant(*EPOCH.get_or_init(Instant::now), now)
}

impl NatState {
    pub(super) fn new(conntrack: Conntrack) -> Self {
        NatState {
            conntrack,
            uplink: None,
            published: FxHashMap::default(),
            services: FxHashMap::default(),
            internal: FxHashSet::default(),
            policies: FxHashMap::default(),
            unresolved: UnresolvedQueue::new(),
            dns: false,
        }
    }

    fn now(&self, now: Instant) -> Timestamp {
        conntrack_time(now)
    }
}

fn protocol_of(proto: u8) -> Option<Protocol> {
    match proto {
        weft_packet::IP_PROTO_TCP => Some(Protocol::Tcp),
        IP_PROTO_UDP => Some(Protocol::Udp),
        weft_packet::IP_PROTO_ICMP => Some(Protocol::Icmp),
        _ => None,
    }
}

/// A 5-tuple hash for backend selection.
fn flow_hash(key: &FlowKey) -> u64 {
    let mut h = weft_packet::splitmix64(
        u64::from(u32::from(*key.src.ip())) << 16 | u64::from(key.src.port()),
    );
    h = weft_packet::splitmix64(
        h ^ (u64::from(u32::from(*key.dst.ip())) << 16 | u64::from(key.dst.port())),
    );
    h
}

impl Switch {
    /// The connection tracking table. The switch owns it; the datapath's
    /// control plane reaches it through commands.
    pub fn conntrack(&self) -> &Conntrack {
        &self.nat.conntrack
    }

    /// The connection tracking table, to flush or remove flows.
    pub fn conntrack_mut(&mut self) -> &mut Conntrack {
        &mut self.nat.conntrack
    }

    /// Attaches (or replaces) the uplink as port `cfg.port`, which must not
    /// be an endpoint's or a tunnel's.
    pub fn set_uplink(&mut self, cfg: UplinkConfig) -> Result<(), ConfigError> {
        if matches!(
            self.port_entry(cfg.port),
            Some(PortEntry::Endpoint(_) | PortEntry::Tunnel(_))
        ) {
            return Err(ConfigError::DuplicatePort(cfg.port));
        }
        self.remove_uplink();
        self.insert_port(cfg.port, PortEntry::Uplink);
        self.nat.uplink = Some((cfg, NeighborTable::with_capacity(UPLINK_NEIGHBORS)));
        Ok(())
    }

    pub fn remove_uplink(&mut self) -> Option<UplinkConfig> {
        let (cfg, _) = self.nat.uplink.take()?;
        self.ports[cfg.port.0 as usize] = None;
        Some(cfg)
    }

    pub fn uplink_port(&self) -> Option<PortId> {
        self.nat.uplink.as_ref().map(|(cfg, _)| cfg.port)
    }

    /// Marks a network internal (nothing leaves it through the uplink).
    pub fn set_internal(&mut self, network: NetworkId, internal: bool) {
        if internal {
            self.nat.internal.insert(network);
        } else {
            self.nat.internal.remove(&network);
        }
    }

    /// Sets network `network`'s NAT behaviour.
    pub fn set_network_nat(&mut self, network: NetworkId, nat: NetworkNat) {
        if nat == NetworkNat::default() {
            self.nat.policies.remove(&network);
        } else {
            self.nat.policies.insert(network, nat);
        }
    }

    /// Network `network`'s NAT behaviour.
    pub fn network_nat(&self, network: NetworkId) -> NetworkNat {
        self.nat.policies.get(&network).copied().unwrap_or_default()
    }

    /// The NAT behaviour of the network `ip` is in (the default outside).
    fn nat_policy_of(&self, ip: Ipv4Addr) -> NetworkNat {
        self.network_for(ip)
            .map(|n| self.network_nat(n))
            .unwrap_or_default()
    }

    /// Whether network `id` is marked internal.
    pub fn is_internal(&self, network: NetworkId) -> bool {
        self.nat.internal.contains(&network)
    }

    /// Where traffic for `host_port` is published to, if anywhere.
    pub fn published(&self, proto: Protocol, host_port: u16) -> Option<SocketAddrV4> {
        self.nat.published.get(&(proto, host_port)).copied()
    }

    /// The configuration of a service, if there is one.
    pub fn service(&self, vip: Ipv4Addr, proto: Protocol, port: u16) -> Option<ServiceConfig> {
        self.nat
            .services
            .get(&(vip, proto, port))
            .map(|s| s.cfg.clone())
    }

    pub fn publish(&mut self, proto: Protocol, host_port: u16, target: SocketAddrV4) {
        self.nat.published.insert((proto, host_port), target);
    }

    pub fn unpublish(&mut self, proto: Protocol, host_port: u16) -> bool {
        self.nat.published.remove(&(proto, host_port)).is_some()
    }

    /// Adds or replaces a service.
    pub fn set_service(&mut self, cfg: ServiceConfig) {
        let key = (cfg.vip, cfg.proto, cfg.port);
        let next = self.nat.services.get(&key).map_or(0, |s| s.next);
        self.nat.services.insert(key, Service { cfg, next });
    }

    pub fn remove_service(&mut self, vip: Ipv4Addr, proto: Protocol, port: u16) -> bool {
        self.nat.services.remove(&(vip, proto, port)).is_some()
    }

    /// Whether DNS queries to the gateways are handed to the sink
    /// ([`Transmit::punt`]); if not, they are refused with ICMP port
    /// unreachable like any closed port.
    pub fn set_dns(&mut self, enabled: bool) {
        self.nat.dns = enabled;
    }

    pub(super) fn is_vip(&self, network: NetworkId, ip: Ipv4Addr) -> bool {
        self.nat
            .services
            .values()
            .any(|s| s.cfg.network == network && s.cfg.vip == ip)
    }

    pub(super) fn expire_nat(&mut self, now: Instant) {
        let ts = self.nat.now(now);
        self.nat.conntrack.expire(ts, EXPIRE_BUDGET);
        let aging = self.aging;
        if let Some((_, neighbors)) = self.nat.uplink.as_mut() {
            neighbors.expire(now, aging);
        }
        let dropped = self.nat.unresolved.expire(now);
        if dropped > 0 {
            self.counters
                .neighbor_queue_timeout
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    /// Keeps a frame whose next hop's MAC is unknown until `key` resolves
    /// (see [`crate::unresolved`]); [`Verdict::Handled`] if kept.
    pub(super) fn queue_unresolved(
        &mut self,
        key: NeighborKey,
        frame: &[u8],
        offload: &Offload,
        now: Instant,
    ) -> Verdict {
        match self.nat.unresolved.push(key, frame, offload, now) {
            Ok(()) => {
                self.counters
                    .neighbor_queued
                    .fetch_add(1, Ordering::Relaxed);
                Verdict::Handled
            }
            Err(_) => {
                self.counters
                    .neighbor_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                Verdict::Drop(DropReason::NeighborUnknown)
            }
        }
    }

    /// Sends the frames waiting for `key` out of `port` to `mac`.
    pub(super) fn flush_unresolved<T: Transmit>(
        &mut self,
        key: NeighborKey,
        port: PortId,
        mac: MacAddr,
        tx: &mut T,
    ) {
        self.nat.unresolved.flush(key, |frame, offload| {
            mac.write(frame, ethernet::DST);
            tx.transmit(port, frame, offload);
        });
    }

    /// Whether `ip` is one of weft's own addresses: a gateway or the uplink.
    pub(super) fn is_own_address(&self, ip: Ipv4Addr) -> bool {
        if self.nat.uplink.as_ref().is_some_and(|(u, _)| u.ip == ip) {
            return true;
        }
        self.network_for(ip)
            .and_then(|id| self.network(id))
            .is_some_and(|n| n.cfg.gateway_ip == ip)
    }

    /// Looks up (or creates, with `nat`) the flow of an IPv4 packet and
    /// translates it in place. `Ok(None)`: no flow and none to create.
    fn nat_translate(
        &mut self,
        frame: &mut [u8],
        offload: &Offload,
        meta: &Ipv4Meta,
        create: Option<NatSpec>,
        now: Instant,
    ) -> Result<Option<Hit>, DropReason> {
        let ts = self.nat.now(now);
        let packet = &mut frame[ETH_HEADER_LEN..ETH_HEADER_LEN + meta.total_len];
        let Ok(info) = inspect_parsed(packet, meta) else {
            return Ok(None);
        };
        let ct = &mut self.nat.conntrack;
        let evicted = ct.early_evicted();
        let hit = if info.icmp_error {
            ct.lookup(&info.key, ts)
        } else {
            match ct.track(&info.key, info.len, info.tcp_flags, ts) {
                Some(hit) => Some(hit),
                None => match create {
                    Some(spec) => {
                        match ct.track_or_create(&info.key, spec, info.len, info.tcp_flags, ts) {
                            Ok(hit) => Some(hit),
                            Err(ConntrackError::TableFull { .. }) => {
                                self.counters.conntrack_full.fetch_add(1, Ordering::Relaxed);
                                return Err(DropReason::ConntrackFull);
                            }
                            Err(ConntrackError::HostLimit { .. }) => {
                                return Err(DropReason::NatEndpointLimit)
                            }
                            // No free source port (or reply tuple) for SNAT:
                            // the table has room, the port range does not.
                            Err(_) => return Err(DropReason::NatNoPort),
                        }
                    }
                    None => None,
                },
            }
        };
        let now_evicted = self.nat.conntrack.early_evicted();
        if now_evicted != evicted {
            self.counters
                .conntrack_early_evicted
                .fetch_add(now_evicted - evicted, Ordering::Relaxed);
        }
        let Some(hit) = hit else {
            return Ok(None);
        };
        let opts = TranslateOptions {
            partial_csum: needs_csum(offload),
        };
        translate_parsed(packet, meta, &hit.rewrite, opts).map_err(|_| DropReason::Malformed)?;
        Ok(Some(hit))
    }

    /// A packet from outside to the uplink address that no flow and no
    /// published port claims: if an endpoint's mapping holds its
    /// destination port and the endpoint's network's filter admits its
    /// source, opens a flow to the endpoint and translates the packet.
    /// `Ok(false)`: no mapping holds the port.
    fn nat_inbound_mapping(
        &mut self,
        frame: &mut [u8],
        offload: &Offload,
        meta: &Ipv4Meta,
        now: Instant,
    ) -> Result<bool, DropReason> {
        let Some((uplink, _)) = self.nat.uplink.as_ref() else {
            return Ok(false);
        };
        let uplink_ip = uplink.ip;
        let packet = &mut frame[ETH_HEADER_LEN..ETH_HEADER_LEN + meta.total_len];
        let Ok(info) = inspect_parsed(packet, meta) else {
            return Ok(false);
        };
        let key = info.key;
        if info.icmp_error || key.proto == Protocol::Icmp {
            return Ok(false);
        }
        let ct = &self.nat.conntrack;
        let Some(owner) = ct.mapping_owner(key.proto, uplink_ip, key.dst.port()) else {
            return Ok(false);
        };
        let policy = self.nat_policy_of(*owner.ip());
        let admitted = policy.filtering == Filtering::EndpointIndependent
            || ct.permits(key.proto, owner, *key.src.ip());
        if !admitted {
            return Err(DropReason::NatFiltered);
        }
        let ts = self.nat.now(now);
        let hit = match self.nat.conntrack.create_inbound(
            &key,
            owner,
            policy.limits,
            info.len,
            info.tcp_flags,
            ts,
        ) {
            Ok(Some(hit)) => hit,
            Ok(None) => return Ok(false),
            Err(ConntrackError::TableFull { .. }) => {
                self.counters.conntrack_full.fetch_add(1, Ordering::Relaxed);
                return Err(DropReason::ConntrackFull);
            }
            Err(ConntrackError::HostLimit { .. }) => return Err(DropReason::NatEndpointLimit),
            Err(_) => return Err(DropReason::NatNoPort),
        };
        let opts = TranslateOptions {
            partial_csum: needs_csum(offload),
        };
        translate_parsed(packet, meta, &hit.rewrite, opts).map_err(|_| DropReason::Malformed)?;
        Ok(true)
    }

    /// Packets to one of weft's own addresses that belong to a translated
    /// flow (replies to hairpin and service connections), and DNS queries.
    /// [`Verdict::Pass`] when neither applies.
    pub(super) fn nat_to_own_address<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        frame: &mut [u8],
        offload: &Offload,
        meta: &Ipv4Meta,
        now: Instant,
        tx: &mut T,
    ) -> Verdict {
        if self
            .nat
            .uplink
            .as_ref()
            .is_some_and(|(u, _)| u.ip == meta.dst)
        {
            // Hairpin: an endpoint reaching a published port.
            return self.nat_published(ingress, frame, offload, meta, now, tx);
        }
        match self.nat_translate(frame, offload, meta, None, now) {
            Err(reason) => return Verdict::Drop(reason),
            Ok(Some(hit)) if !hit.rewrite.is_identity() => {
                return self
                    .forward_translated(ingress, frame, offload, now, tx)
                    .into();
            }
            Ok(_) => {}
        }
        let is_dns_transport = meta.proto == IP_PROTO_UDP || meta.proto == IP_PROTO_TCP;
        if is_dns_transport && !meta.is_fragment() && self.nat.dns {
            return self.punt_dns(ingress, frame, meta, tx).into();
        }
        Verdict::Pass
    }

    /// New connections to a service VIP of the ingress network.
    pub(super) fn nat_service<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        frame: &mut [u8],
        offload: &Offload,
        meta: &Ipv4Meta,
        now: Instant,
        tx: &mut T,
    ) -> Verdict {
        if self.nat.services.is_empty() {
            return Verdict::Pass;
        }
        let Some(proto) = protocol_of(meta.proto) else {
            return Verdict::Pass;
        };
        let packet = &frame[ETH_HEADER_LEN..ETH_HEADER_LEN + meta.total_len];
        let Ok(info) = inspect_parsed(packet, meta) else {
            return Verdict::Pass;
        };
        let key = (meta.dst, proto, info.key.dst.port());
        let Some(net) = self.ingress_network(ingress) else {
            return Verdict::Pass;
        };
        let (in_network, gateway) = (net.cfg.id, net.cfg.gateway_ip);
        if self
            .nat
            .services
            .get(&key)
            .is_none_or(|s| s.cfg.network != in_network)
        {
            return Verdict::Pass;
        }
        // A packet of a connection already placed keeps its backend and
        // moves the round robin on by nothing.
        match self.nat_translate(frame, offload, meta, None, now) {
            Ok(Some(_)) => {
                return self
                    .forward_translated(ingress, frame, offload, now, tx)
                    .into()
            }
            Ok(None) => {}
            Err(reason) => return Verdict::Drop(reason),
        }
        let Some(service) = self.nat.services.get_mut(&key) else {
            return Verdict::Pass;
        };
        let backend = if service.cfg.backends.is_empty() {
            None
        } else {
            let n = service.cfg.backends.len();
            let i = match service.cfg.lb {
                LoadBalance::RoundRobin => {
                    let i = service.next % n;
                    service.next = service.next.wrapping_add(1);
                    i
                }
                LoadBalance::Hash => (flow_hash(&info.key) % n as u64) as usize,
            };
            Some(SocketAddrV4::new(service.cfg.backends[i], service.cfg.port))
        };
        // An existing connection keeps its backend even if it was removed;
        // a new one with no backend left is refused.
        let limits = self.network_nat(in_network).limits;
        let spec = backend.map(|b| NatSpec {
            snat: Some(gateway),
            dnat: Some(b),
            limits,
        });
        match self.nat_translate(frame, offload, meta, spec, now) {
            Ok(Some(_)) => self
                .forward_translated(ingress, frame, offload, now, tx)
                .into(),
            Ok(None) => {
                self.icmp_unreachable_pub(ingress, frame, meta, now, tx);
                Verdict::Drop(DropReason::HostUnreachable)
            }
            Err(reason) => Verdict::Drop(reason),
        }
    }

    /// Traffic to a published port on the uplink address, from inside
    /// (hairpin) or outside; from inside, also traffic to an endpoint's
    /// mapping (hairpinning, RFC 4787 REQ-9, RFC 5382 REQ-8). Hairpinned
    /// packets present the sender's own mapping, the uplink address and
    /// its external port (REQ-9a), so both sides see each other as a peer
    /// outside would.
    fn nat_published<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        frame: &mut [u8],
        offload: &Offload,
        meta: &Ipv4Meta,
        now: Instant,
        tx: &mut T,
    ) -> Verdict {
        let uplink_ip = self.nat.uplink.as_ref().map(|(u, _)| u.ip);
        let from_inside = self.ingress_network(ingress).map(|n| n.cfg.id);
        let spec = protocol_of(meta.proto).and_then(|proto| {
            let packet = &frame[ETH_HEADER_LEN..ETH_HEADER_LEN + meta.total_len];
            let info = inspect_parsed(packet, meta).ok()?;
            if info.icmp_error {
                return None;
            }
            let port = info.key.dst.port();
            let target = match self.nat.published.get(&(proto, port)) {
                Some(&target) => target,
                None if proto != Protocol::Icmp => {
                    from_inside?;
                    self.nat.conntrack.mapping_owner(proto, uplink_ip?, port)?
                }
                None => return None,
            };
            let limits = match from_inside {
                Some(net) => self.network_nat(net).limits,
                None => self.nat_policy_of(*target.ip()).limits,
            };
            Some(NatSpec {
                snat: from_inside.and(uplink_ip),
                dnat: Some(target),
                limits,
            })
        });
        match self.nat_translate(frame, offload, meta, spec, now) {
            Ok(Some(_)) => self
                .forward_translated(ingress, frame, offload, now, tx)
                .into(),
            Ok(None) => Verdict::Pass,
            Err(reason) => Verdict::Drop(reason),
        }
    }

    /// Traffic from an endpoint to outside weft: masquerade through the
    /// uplink. [`Verdict::Pass`] when there is no uplink or the network is
    /// internal, or the destination is off the uplink's subnet and it has no
    /// gateway.
    pub(super) fn nat_egress<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        frame: &mut [u8],
        offload: &Offload,
        meta: &Ipv4Meta,
        now: Instant,
        tx: &mut T,
    ) -> Verdict {
        let Some((uplink, _)) = self.nat.uplink.as_ref() else {
            return Verdict::Pass;
        };
        let uplink = *uplink;
        if ingress
            .network()
            .is_some_and(|n| self.nat.internal.contains(&n))
        {
            return Verdict::Pass;
        }
        if meta.ttl <= 1 {
            self.send_icmp_error(
                ingress,
                frame,
                meta,
                icmp::TIME_EXCEEDED,
                icmp::CODE_TTL_EXCEEDED,
                0,
                now,
                tx,
            );
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let next_hop = if uplink.on_link(meta.dst) {
            meta.dst
        } else {
            let Some(gateway) = uplink.gateway else {
                return Verdict::Pass;
            };
            gateway
        };
        let wire_len = if is_gso(offload) {
            let Some(len) = gateway::gso_segment_ip_len(frame, meta, offload) else {
                return Verdict::Pass;
            };
            len
        } else {
            meta.total_len
        };
        if wire_len > uplink.mtu as usize && (meta.dont_fragment() || is_gso(offload)) {
            let mtu = uplink.mtu.min(u32::from(u16::MAX)) as u16;
            self.send_icmp_error(
                ingress,
                frame,
                meta,
                icmp::DEST_UNREACHABLE,
                icmp::CODE_FRAG_NEEDED,
                mtu,
                now,
                tx,
            );
            return Verdict::Drop(DropReason::FragmentationNeeded);
        }
        let mac = self
            .nat
            .uplink
            .as_ref()
            .and_then(|(_, n)| n.lookup(next_hop));
        if mac.is_none() && (is_gso(offload) || ETH_HEADER_LEN + meta.total_len > SLOT_LEN) {
            // Too large to keep while the next hop is resolved.
            self.arp_on_uplink(next_hop, now, tx);
            return Verdict::Drop(DropReason::NeighborUnknown);
        }
        let limits = ingress
            .network()
            .map(|n| self.network_nat(n).limits)
            .unwrap_or_default();
        let spec = NatSpec {
            snat: Some(uplink.ip),
            dnat: None,
            limits,
        };
        match self.nat_translate(frame, offload, meta, Some(spec), now) {
            Ok(Some(_)) => {}
            Ok(None) => return Verdict::Drop(DropReason::NotRoutable),
            Err(reason) => return Verdict::Drop(reason),
        }
        gateway::decrement_ttl(frame);
        uplink.mac.write(frame, ethernet::SRC);
        let frame = &mut frame[..ETH_HEADER_LEN + meta.total_len];
        let Some(next_mac) = mac else {
            // Translated and ready but for the next hop's MAC: kept until
            // the ARP reply comes.
            self.arp_on_uplink(next_hop, now, tx);
            return self.queue_unresolved(NeighborKey::Uplink(next_hop), frame, offload, now);
        };
        next_mac.write(frame, ethernet::DST);
        tx.transmit(uplink.port, frame, offload);
        Verdict::Handled
    }

    /// Frames received on the uplink.
    pub(super) fn handle_uplink_frame<T: Transmit>(
        &mut self,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        let Some((uplink, _)) = self.nat.uplink.as_ref() else {
            return Err(DropReason::NotRoutable);
        };
        let uplink = *uplink;
        let dst = MacAddr::read(frame, ethernet::DST);
        if dst != uplink.mac && !dst.is_multicast() {
            // Promiscuous receive: another host's frame, not ours to count.
            return Ok(());
        }
        match read_u16(frame, ethernet::ETHERTYPE) {
            ETHERTYPE_ARP => {
                if !arp_format_ok(frame) {
                    return Err(DropReason::Malformed);
                }
                let a = &frame[ETH_HEADER_LEN..];
                let (sha, spa) = (MacAddr::read(a, arp::SHA), read_ipv4(a, arp::SPA));
                if sha.is_unicast() && uplink.on_link(spa) && spa != uplink.ip {
                    if let Some((_, neighbors)) = self.nat.uplink.as_mut() {
                        neighbors.learn(spa, sha, now);
                    }
                    self.flush_unresolved(NeighborKey::Uplink(spa), uplink.port, sha, tx);
                }
                if gateway::is_arp_request_for(frame, uplink.ip) {
                    gateway::arp_reply_in_place(frame, uplink.mac, uplink.ip);
                    tx.transmit(uplink.port, &frame[..ETH_HEADER_LEN + ARP_LEN], &NO_OFFLOAD);
                }
                Ok(())
            }
            ETHERTYPE_IPV4 if dst == uplink.mac => {
                let meta = gateway::parse_ipv4(frame).map_err(|_| DropReason::Malformed)?;
                if !gateway::ipv4_checksum_ok(frame, &meta) || !gateway::fragment_in_bounds(&meta) {
                    return Err(DropReason::Malformed);
                }
                if meta.dst != uplink.ip {
                    return Err(DropReason::NotRoutable);
                }
                let ingress = Ingress {
                    id: uplink.port,
                    kind: IngressKind::Uplink,
                };
                if self
                    .nat_translate(frame, offload, &meta, None, now)?
                    .is_some()
                {
                    return self.forward_translated(&ingress, frame, offload, now, tx);
                }
                match self.nat_published(&ingress, frame, offload, &meta, now, tx) {
                    Verdict::Pass => {}
                    Verdict::Handled => return Ok(()),
                    Verdict::Drop(reason) => return Err(reason),
                }
                if self.nat_inbound_mapping(frame, offload, &meta, now)? {
                    return self.forward_translated(&ingress, frame, offload, now, tx);
                }
                if gateway::is_valid_echo_request(frame, &meta) {
                    let len = gateway::echo_reply_in_place(frame, &meta, uplink.mac, uplink.ip);
                    tx.transmit(uplink.port, &frame[..len], &NO_OFFLOAD);
                    return Ok(());
                }
                Err(DropReason::NoRoute)
            }
            _ => Ok(()),
        }
    }

    /// Asks the uplink's gateway for its MAC, so the first packet out does
    /// not wait for it.
    pub fn resolve_uplink_gateway<T: Transmit>(&mut self, now: Instant, tx: &mut T) {
        if let Some(gateway) = self.nat.uplink.as_ref().and_then(|(u, _)| u.gateway) {
            self.arp_on_uplink(gateway, now, tx);
        }
    }

    /// Sends an ARP request for `ip` out of the uplink, rate limited.
    fn arp_on_uplink<T: Transmit>(&mut self, ip: Ipv4Addr, now: Instant, tx: &mut T) {
        if !self.arp_limit.allow(now) {
            return;
        }
        let Some((uplink, _)) = self.nat.uplink.as_ref() else {
            return;
        };
        let f = &mut self.scratch[..ETH_HEADER_LEN + ARP_LEN];
        MacAddr::BROADCAST.write(f, ethernet::DST);
        uplink.mac.write(f, ethernet::SRC);
        write_u16(f, ethernet::ETHERTYPE, ETHERTYPE_ARP);
        let a = &mut f[ETH_HEADER_LEN..];
        write_u16(a, arp::HTYPE, arp::HTYPE_ETHERNET);
        write_u16(a, arp::PTYPE, ETHERTYPE_IPV4);
        a[arp::HLEN] = 6;
        a[arp::PLEN] = 4;
        write_u16(a, arp::OPER, arp::OP_REQUEST);
        uplink.mac.write(a, arp::SHA);
        write_ipv4(a, arp::SPA, uplink.ip);
        MacAddr::ZERO.write(a, arp::THA);
        write_ipv4(a, arp::TPA, ip);
        tx.transmit(uplink.port, f, &NO_OFFLOAD);
    }

    /// Hands a DNS query for the gateway to the sink, for the resolver.
    fn punt_dns<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        frame: &[u8],
        meta: &Ipv4Meta,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        let udp = ETH_HEADER_LEN + meta.header_len;
        let end = ETH_HEADER_LEN + meta.total_len;
        let tcp = meta.proto == IP_PROTO_TCP;
        let min = if tcp { 20 } else { 8 };
        if end < udp + min || read_u16(frame, udp + 2) != DNS_PORT {
            return Err(DropReason::NotRoutable);
        }
        let Some(net) = self.ingress_network(ingress) else {
            return Err(DropReason::NotRoutable);
        };
        tx.punt(Punt {
            port: ingress.id,
            network: net.cfg.id,
            client_mac: MacAddr::read(frame, ethernet::SRC),
            client: SocketAddrV4::new(meta.src, read_u16(frame, udp)),
            gateway_mac: net.cfg.gateway_mac,
            gateway: meta.dst,
            message: if tcp {
                &frame[ETH_HEADER_LEN..end]
            } else {
                &frame[udp + 8..end]
            },
            tcp,
        })
    }
}
