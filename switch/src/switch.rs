//! The forwarding core: one learning switch per network plus its gateway.
//!
//! [`Switch::handle`] takes one received frame with its ingress port and the
//! current time, and hands every frame it decides to send to a [`Transmit`]
//! sink. It does no I/O and allocates nothing, so it runs the same under the
//! TAP datapath, in unit tests and in benchmarks.
//!
//! Per frame, in order:
//! 1. port security: the source MAC must be the port's, and for ARP and IPv4
//!    the sender address must be the port's (or 0.0.0.0 for ARP probes,
//!    RFC 5227 §2.1.1);
//! 2. ARP requests for the gateway are answered; IPv4 addressed to the
//!    gateway's MAC is routed (see [`crate::gateway`]);
//! 3. everything else is bridged within the network as IEEE 802.1D does:
//!    learn the source, forward known unicast, flood group and unknown
//!    destinations to every other port of the same network.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::counters::{DropReason, SwitchCounters};
use crate::gateway::{self, IcmpError, Ipv4Meta, RateLimiter};
use crate::ipam::Ipv4Net;
use crate::mac_table::{LearnOutcome, Learned, MacTable, DEFAULT_AGING, DEFAULT_CAPACITY};
use crate::port::{is_gso, needs_csum, Offload, NO_OFFLOAD};
use crate::wire::{
    arp, eth, icmp, read_ipv4, read_u16, MacAddr, ARP_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4,
    ETHERTYPE_QINQ, ETHERTYPE_VLAN, ETH_HEADER_LEN, IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP,
};
use crate::{NetworkId, PortId};

/// Where the core sends the frames it forwards or originates.
pub trait Transmit {
    /// Sends `frame`, with its offload metadata, out of `port`. Failures
    /// are the sink's to count.
    fn transmit(&mut self, port: PortId, frame: &[u8], offload: &Offload);
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

/// A port as the datapath needs to know it: who may send from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConfig {
    pub id: PortId,
    pub network: NetworkId,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
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
}

struct Network {
    cfg: NetworkConfig,
    fdb: MacTable,
    ports: Vec<PortId>,
    /// Endpoint address → port, for routing into this network.
    hosts: FxHashMap<Ipv4Addr, PortId>,
    /// Networks this one may route to.
    routes_to: Vec<NetworkId>,
}

/// ICMP errors per second the gateways may send, and the burst allowed
/// (Linux defaults: net.ipv4.icmp_msgs_per_sec = 1000, burst 50).
const ICMP_ERRORS_PER_SEC: u32 = 1000;
const ICMP_ERRORS_BURST: u32 = 50;
/// Scratch space for frames the core builds: ICMP errors and fragments.
const SCRATCH_LEN: usize = 64 * 1024 + ETH_HEADER_LEN;

pub struct Switch {
    networks: Vec<Option<Network>>,
    ports: Vec<Option<PortConfig>>,
    /// Networks sorted by subnet address, for longest-prefix lookup.
    subnets: Vec<(Ipv4Net, NetworkId)>,
    aging: Duration,
    fdb_capacity: usize,
    icmp_limit: RateLimiter,
    ip_ident: u16,
    scratch: Box<[u8]>,
    counters: Arc<SwitchCounters>,
}

impl Switch {
    pub fn new(counters: Arc<SwitchCounters>) -> Self {
        Switch {
            networks: Vec::new(),
            ports: Vec::new(),
            subnets: Vec::new(),
            aging: DEFAULT_AGING,
            fdb_capacity: DEFAULT_CAPACITY,
            icmp_limit: RateLimiter::new(ICMP_ERRORS_PER_SEC, ICMP_ERRORS_BURST),
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

    pub fn add_network(&mut self, cfg: NetworkConfig) -> Result<(), ConfigError> {
        if self.network(cfg.id).is_some() {
            return Err(ConfigError::DuplicateNetwork(cfg.id));
        }
        if self.subnets.iter().any(|(s, _)| s.overlaps(cfg.subnet)) {
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
            hosts: FxHashMap::default(),
            routes_to: Vec::new(),
            cfg,
        });
        Ok(())
    }

    pub fn remove_network(&mut self, id: NetworkId) -> Result<(), ConfigError> {
        let net = self.network(id).ok_or(ConfigError::UnknownNetwork(id))?;
        if !net.ports.is_empty() {
            return Err(ConfigError::NetworkBusy(id));
        }
        self.networks[id.0 as usize] = None;
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

    pub fn add_port(&mut self, cfg: PortConfig) -> Result<(), ConfigError> {
        if self.port(cfg.id).is_some() {
            return Err(ConfigError::DuplicatePort(cfg.id));
        }
        let net = self
            .network_mut(cfg.network)
            .ok_or(ConfigError::UnknownNetwork(cfg.network))?;
        net.ports.push(cfg.id);
        net.hosts.insert(cfg.ip, cfg.id);
        let index = cfg.id.0 as usize;
        if self.ports.len() <= index {
            self.ports.resize(index + 1, None);
        }
        self.ports[index] = Some(cfg);
        Ok(())
    }

    pub fn remove_port(&mut self, id: PortId) -> Result<(), ConfigError> {
        let cfg = self.port(id).ok_or(ConfigError::UnknownPort(id))?;
        self.ports[id.0 as usize] = None;
        if let Some(net) = self.network_mut(cfg.network) {
            net.ports.retain(|&p| p != id);
            net.hosts.remove(&cfg.ip);
            net.fdb.forget_port(id);
        }
        Ok(())
    }

    /// Ages out MAC table entries; call about once a second.
    pub fn expire(&mut self, now: Instant) {
        let aging = self.aging;
        for net in self.networks.iter_mut().flatten() {
            net.fdb.expire(now, aging);
        }
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

    #[inline]
    fn port(&self, id: PortId) -> Option<PortConfig> {
        self.ports.get(id.0 as usize).copied().flatten()
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
        subnet.contains(ip).then_some(id)
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
        let port = self.port(ingress).ok_or(DropReason::NotRoutable)?;
        if frame.len() < ETH_HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        if MacAddr::read(frame, eth::SRC) != port.mac {
            return Err(DropReason::SpoofedSourceMac);
        }
        let dst = MacAddr::read(frame, eth::DST);
        let ethertype = read_u16(frame, eth::ETHERTYPE);
        let (gateway_mac, gateway_ip) = {
            let net = self.network(port.network).ok_or(DropReason::NotRoutable)?;
            (net.cfg.gateway_mac, net.cfg.gateway_ip)
        };
        match ethertype {
            ETHERTYPE_ARP => {
                check_arp(frame, &port)?;
                if gateway::is_arp_request_for(frame, gateway_ip) {
                    self.learn(&port, now);
                    gateway::arp_reply_in_place(frame, gateway_mac, gateway_ip);
                    tx.transmit(ingress, &frame[..ETH_HEADER_LEN + ARP_LEN], &NO_OFFLOAD);
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
                    self.learn(&port, now);
                    return self.route(&port, frame, offload, &meta, now, tx);
                }
            }
            ETHERTYPE_VLAN | ETHERTYPE_QINQ => return Err(DropReason::UnsupportedEthertype),
            _ => {
                if dst == gateway_mac {
                    return Err(DropReason::NotRoutable);
                }
            }
        }
        self.bridge(&port, frame, offload, now, tx)
    }

    #[inline]
    fn learn(&mut self, port: &PortConfig, now: Instant) {
        let net = self
            .networks
            .get_mut(port.network.0 as usize)
            .and_then(Option::as_mut);
        if let Some(net) = net {
            if net.fdb.learn(port.mac, port.id, now) == LearnOutcome::Full {
                self.counters.fdb_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// IEEE 802.1D forwarding within the ingress port's network.
    #[inline]
    fn bridge<T: Transmit>(
        &mut self,
        port: &PortConfig,
        frame: &[u8],
        offload: &Offload,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        self.learn(port, now);
        let net = self.network(port.network).ok_or(DropReason::NotRoutable)?;
        let dst = MacAddr::read(frame, eth::DST);
        if dst.is_unicast() {
            match net.fdb.lookup(dst) {
                Some(out) if out == port.id => return Err(DropReason::SamePort),
                Some(out) => {
                    tx.transmit(out, frame, offload);
                    return Ok(());
                }
                None => {}
            }
        }
        for &out in &net.ports {
            if out != port.id {
                tx.transmit(out, frame, offload);
            }
        }
        Ok(())
    }

    /// The gateway's part: IPv4 sent to the gateway's MAC (RFC 1812 §5.2).
    fn route<T: Transmit>(
        &mut self,
        port: &PortConfig,
        frame: &mut [u8],
        offload: &Offload,
        meta: &Ipv4Meta,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        if !gateway::ipv4_checksum_ok(frame, meta) {
            return Err(DropReason::Malformed);
        }
        let ingress = self.network(port.network).ok_or(DropReason::NotRoutable)?;
        let in_ip = ingress.cfg.gateway_ip;
        if meta.dst == in_ip {
            return self.deliver_local(port, frame, meta, in_ip, now, tx);
        }
        if meta.dst.is_broadcast()
            || meta.dst.is_multicast()
            || meta.dst == ingress.cfg.subnet.broadcast()
        {
            return Err(DropReason::NotRoutable);
        }
        let Some(target) = self.network_for(meta.dst) else {
            self.send_icmp_error(
                port,
                frame,
                meta,
                icmp::DEST_UNREACHABLE,
                icmp::CODE_NET_UNREACHABLE,
                0,
                now,
                tx,
            );
            return Err(DropReason::NoRoute);
        };
        if target != port.network && !ingress.routes_to.contains(&target) {
            self.send_icmp_error(
                port,
                frame,
                meta,
                icmp::DEST_UNREACHABLE,
                icmp::CODE_ADMIN_PROHIBITED,
                0,
                now,
                tx,
            );
            return Err(DropReason::RouteDenied);
        }
        let out_net = self.network(target).ok_or(DropReason::NotRoutable)?;
        if meta.dst == out_net.cfg.gateway_ip {
            // Another gateway of this router, reachable from here.
            return self.deliver_local(port, frame, meta, meta.dst, now, tx);
        }
        if meta.ttl <= 1 {
            self.send_icmp_error(
                port,
                frame,
                meta,
                icmp::TIME_EXCEEDED,
                icmp::CODE_TTL_EXCEEDED,
                0,
                now,
                tx,
            );
            return Err(DropReason::TtlExpired);
        }
        let Some(out_port) = out_net.hosts.get(&meta.dst).copied() else {
            self.send_icmp_error(
                port,
                frame,
                meta,
                icmp::DEST_UNREACHABLE,
                icmp::CODE_HOST_UNREACHABLE,
                0,
                now,
                tx,
            );
            return Err(DropReason::HostUnreachable);
        };
        let out_mac = self.port(out_port).ok_or(DropReason::HostUnreachable)?.mac;
        let out_gw_mac = out_net.cfg.gateway_mac;
        let mtu = out_net.cfg.mtu as usize;

        // A GSO super-frame leaves as segments of its gso_size: those must fit.
        let wire_len = if is_gso(offload) {
            gateway::gso_segment_ip_len(frame, meta, offload).ok_or(DropReason::Malformed)?
        } else {
            meta.total_len
        };
        let fits = wire_len <= mtu;
        if !fits && (meta.dont_fragment() || is_gso(offload)) {
            // RFC 1191: tell the sender the next hop's MTU; quote the packet
            // as it arrived.
            self.send_icmp_error(
                port,
                frame,
                meta,
                icmp::DEST_UNREACHABLE,
                icmp::CODE_FRAG_NEEDED,
                mtu as u16,
                now,
                tx,
            );
            return Err(DropReason::FragmentationNeeded);
        }

        gateway::decrement_ttl(frame);
        out_mac.write(frame, eth::DST);
        out_gw_mac.write(frame, eth::SRC);
        let frame = &mut frame[..ETH_HEADER_LEN + meta.total_len];
        if fits {
            tx.transmit(out_port, frame, offload);
            return Ok(());
        }
        if needs_csum(offload) {
            // Fragments cannot carry a partial checksum: finish it first.
            gateway::complete_checksum(frame, offload).ok_or(DropReason::Malformed)?;
        }
        gateway::fragment(frame, meta, mtu, &mut self.scratch, |piece| {
            tx.transmit(out_port, piece, &NO_OFFLOAD)
        });
        Ok(())
    }

    /// Packets for one of the gateway's own addresses.
    #[allow(clippy::too_many_arguments)]
    fn deliver_local<T: Transmit>(
        &mut self,
        port: &PortConfig,
        frame: &mut [u8],
        meta: &Ipv4Meta,
        local_ip: Ipv4Addr,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        let gateway_mac = self
            .network(port.network)
            .ok_or(DropReason::NotRoutable)?
            .cfg
            .gateway_mac;
        if gateway::is_valid_echo_request(frame, meta) {
            let len = gateway::echo_reply_in_place(frame, meta, gateway_mac, local_ip);
            tx.transmit(port.id, &frame[..len], &NO_OFFLOAD);
            return Ok(());
        }
        let code = match meta.proto {
            IP_PROTO_UDP | IP_PROTO_TCP => icmp::CODE_PORT_UNREACHABLE,
            IP_PROTO_ICMP => return Err(DropReason::NotRoutable),
            _ => icmp::CODE_PROTOCOL_UNREACHABLE,
        };
        if meta.is_fragment() {
            return Err(DropReason::NotRoutable);
        }
        self.send_icmp_error(port, frame, meta, icmp::DEST_UNREACHABLE, code, 0, now, tx);
        Err(DropReason::NotRoutable)
    }

    /// Sends an ICMP error about `frame` back out of the ingress port, from
    /// the ingress network's gateway, if RFC 1812 §4.3.2.7 and the rate
    /// limit allow.
    #[allow(clippy::too_many_arguments)]
    fn send_icmp_error<T: Transmit>(
        &mut self,
        port: &PortConfig,
        frame: &[u8],
        meta: &Ipv4Meta,
        ty: u8,
        code: u8,
        next_hop_mtu: u16,
        now: Instant,
        tx: &mut T,
    ) {
        if !gateway::may_send_icmp_error(frame, meta) {
            return;
        }
        if !self.icmp_limit.allow(now) {
            self.counters
                .icmp_rate_limited
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(net) = self
            .networks
            .get(port.network.0 as usize)
            .and_then(Option::as_ref)
        else {
            return;
        };
        self.ip_ident = self.ip_ident.wrapping_add(1);
        let error = IcmpError {
            ty,
            code,
            next_hop_mtu,
        };
        let len = gateway::build_icmp_error(
            &mut self.scratch,
            frame,
            meta,
            net.cfg.gateway_mac,
            net.cfg.gateway_ip,
            error,
            self.ip_ident,
        );
        self.counters
            .icmp_errors_sent
            .fetch_add(1, Ordering::Relaxed);
        tx.transmit(port.id, &self.scratch[..len], &NO_OFFLOAD);
    }
}

/// Checks an ARP packet's format (RFC 826, Ethernet/IPv4 only) and that its
/// sender fields are the port's own.
#[inline]
fn check_arp(frame: &[u8], port: &PortConfig) -> Result<(), DropReason> {
    if frame.len() < ETH_HEADER_LEN + ARP_LEN {
        return Err(DropReason::Malformed);
    }
    let a = &frame[ETH_HEADER_LEN..];
    if read_u16(a, arp::HTYPE) != arp::HTYPE_ETHERNET
        || read_u16(a, arp::PTYPE) != ETHERTYPE_IPV4
        || a[arp::HLEN] != 6
        || a[arp::PLEN] != 4
        || !matches!(read_u16(a, arp::OPER), arp::OP_REQUEST | arp::OP_REPLY)
    {
        return Err(DropReason::Malformed);
    }
    if MacAddr::read(a, arp::SHA) != port.mac {
        return Err(DropReason::SpoofedSourceMac);
    }
    let sender = read_ipv4(a, arp::SPA);
    if sender != port.ip && !sender.is_unspecified() {
        return Err(DropReason::SpoofedSourceIp);
    }
    Ok(())
}
