//! Lock-free per-port and per-switch counters.
//!
//! The datapath is the only writer of a port's counters; the control plane
//! reads them at any time. Relaxed atomics suffice: each counter is
//! independent and readers only need an eventually consistent snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a frame was dropped. Every drop in the datapath has a reason here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Too short, or a header field out of range, or a bad checksum.
    Malformed,
    /// Source MAC is not the one assigned to the ingress port.
    SpoofedSourceMac,
    /// Source IPv4 address (or ARP sender address) is not the port's.
    SpoofedSourceIp,
    /// VLAN-tagged frames: weft networks are untagged.
    UnsupportedEthertype,
    /// Unicast to a MAC learned on the ingress port itself.
    SamePort,
    /// Addressed to the gateway MAC with a protocol the gateway does not handle.
    NotRoutable,
    /// Destination is in no network weft knows (ICMP net unreachable sent).
    NoRoute,
    /// Destination network is not routed to from this one (ICMP sent).
    RouteDenied,
    /// Destination address has no endpoint (ICMP host unreachable sent).
    HostUnreachable,
    /// TTL ran out (ICMP time exceeded sent).
    TtlExpired,
    /// Larger than the next hop's MTU with DF set (ICMP frag needed sent).
    FragmentationNeeded,
    /// The egress device could not take the frame (queue full).
    TxQueueFull,
    /// Writing to the egress device failed for another reason.
    TxError,
    /// The next hop's MAC is not known yet; the gateway sent an ARP request.
    NeighborUnknown,
    /// A new flow needed a connection-tracking entry and the table is full.
    ConntrackFull,
    /// SNAT found no free source port for a new flow (`--snat-ports`).
    NatNoPort,
    /// A new flow from an endpoint over its network's per-endpoint limit
    /// of tracked connections or SNAT ports (counted on its port).
    NatEndpointLimit,
    /// An inbound packet to a mapping its filter refuses (address-dependent
    /// filtering, RFC 4787 §5): the endpoint never sent to that address.
    NatFiltered,
    /// Reading from the port's device failed (e.g. its namespace is gone);
    /// the port is no longer polled until it is detached.
    RxError,
    /// A bridged frame (or, for a GSO super-frame, each of its segments) is
    /// larger than the network's MTU: the other endpoints' interfaces
    /// could not carry it, so it is dropped as a Linux bridge would.
    ExceedsMtu,
    /// Storm control: the port sent broadcasts faster than its limit.
    StormBroadcast,
    /// Storm control: the port sent multicasts faster than its limit.
    StormMulticast,
    /// Storm control: the port sent frames to unknown unicast addresses
    /// (which are flooded) faster than its limit.
    StormUnknownUnicast,
}

impl DropReason {
    pub const ALL: [DropReason; 23] = [
        DropReason::Malformed,
        DropReason::SpoofedSourceMac,
        DropReason::SpoofedSourceIp,
        DropReason::UnsupportedEthertype,
        DropReason::SamePort,
        DropReason::NotRoutable,
        DropReason::NoRoute,
        DropReason::RouteDenied,
        DropReason::HostUnreachable,
        DropReason::TtlExpired,
        DropReason::FragmentationNeeded,
        DropReason::TxQueueFull,
        DropReason::TxError,
        DropReason::NeighborUnknown,
        DropReason::ConntrackFull,
        DropReason::NatNoPort,
        DropReason::NatEndpointLimit,
        DropReason::NatFiltered,
        DropReason::RxError,
        DropReason::ExceedsMtu,
        DropReason::StormBroadcast,
        DropReason::StormMulticast,
        DropReason::StormUnknownUnicast,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The flood class whose storm-control budget a drop for this reason
    /// found spent, if it is a storm-control drop.
    pub fn storm_class(self) -> Option<crate::storm::FloodClass> {
        use crate::storm::FloodClass;
        match self {
            DropReason::StormBroadcast => Some(FloodClass::Broadcast),
            DropReason::StormMulticast => Some(FloodClass::Multicast),
            DropReason::StormUnknownUnicast => Some(FloodClass::UnknownUnicast),
            _ => None,
        }
    }

    /// The name used in `weft stats` and the API.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::SpoofedSourceMac => "spoofed_source_mac",
            DropReason::SpoofedSourceIp => "spoofed_source_ip",
            DropReason::UnsupportedEthertype => "unsupported_ethertype",
            DropReason::SamePort => "same_port",
            DropReason::NotRoutable => "not_routable",
            DropReason::NoRoute => "no_route",
            DropReason::RouteDenied => "route_denied",
            DropReason::HostUnreachable => "host_unreachable",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::FragmentationNeeded => "fragmentation_needed",
            DropReason::TxQueueFull => "tx_queue_full",
            DropReason::TxError => "tx_error",
            DropReason::NeighborUnknown => "neighbor_unknown",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::NatNoPort => "nat_no_port",
            DropReason::NatEndpointLimit => "nat_endpoint_limit",
            DropReason::NatFiltered => "nat_filtered",
            DropReason::RxError => "rx_error",
            DropReason::ExceedsMtu => "exceeds_mtu",
            DropReason::StormBroadcast => "storm_broadcast",
            DropReason::StormMulticast => "storm_multicast",
            DropReason::StormUnknownUnicast => "storm_unknown_unicast",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Traffic counters of one switch port.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Times the datapath stopped reading the port because a storm had
    /// spent its storm-control budget (frames then wait, or are dropped,
    /// in the device's own queue).
    pub storm_pauses: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
}

impl PortCounters {
    #[inline]
    pub fn count_rx(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Ordering::Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    #[inline]
    pub fn count_tx(&self, bytes: usize) {
        self.tx_packets.fetch_add(1, Ordering::Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Ordering::Relaxed)
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> PortCountersSnapshot {
        PortCountersSnapshot {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            storm_pauses: self.storm_pauses.load(Ordering::Relaxed),
            drops: DropReason::ALL
                .iter()
                .map(|&r| (r, self.drops(r)))
                .filter(|&(_, n)| n > 0)
                .collect(),
        }
    }
}

/// A point-in-time copy of [`PortCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortCountersSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub storm_pauses: u64,
    /// Non-zero drop counters.
    pub drops: Vec<(DropReason, u64)>,
}

impl PortCountersSnapshot {
    /// The non-zero drop counters under their reported names.
    pub fn drops_by_name(&self) -> std::collections::BTreeMap<String, u64> {
        self.drops
            .iter()
            .map(|(r, n)| (r.name().to_string(), *n))
            .collect()
    }
}

/// Counters that belong to the switch rather than to a port.
#[derive(Debug, Default)]
pub struct SwitchCounters {
    /// ICMP errors not sent because of the rate limit (RFC 1812 §4.3.2.8).
    pub icmp_rate_limited: AtomicU64,
    /// ICMP errors sent by the gateways.
    pub icmp_errors_sent: AtomicU64,
    /// Source addresses not learned because a network's MAC table was full.
    pub fdb_full: AtomicU64,
    /// ARP requests answered by the switch instead of flooded.
    pub arp_suppressed: AtomicU64,
    /// Frames too large for the underlay once encapsulated.
    pub tunnel_too_big: AtomicU64,
    /// VXLAN datagrams that were too short or lacked the I flag.
    pub vxlan_malformed: AtomicU64,
    /// VXLAN datagrams for a VNI this host does not serve.
    pub vxlan_unknown_vni: AtomicU64,
    /// VXLAN datagrams from an address that is not a peer.
    pub vxlan_unknown_peer: AtomicU64,
    /// VXLAN datagrams received with remote checksum offload (their inner
    /// checksum left partial, draft-herbert-vxlan-rco).
    pub vxlan_rco_rx: AtomicU64,
    /// VXLAN datagrams sent with remote checksum offload.
    pub vxlan_rco_tx: AtomicU64,
    /// New flows refused because the connection-tracking table was full.
    pub conntrack_full: AtomicU64,
    /// Unconfirmed flows evicted early to make room for new ones.
    pub conntrack_early_evicted: AtomicU64,
    /// Frames kept while their next hop's MAC was being resolved.
    pub neighbor_queued: AtomicU64,
    /// Frames dropped because the unresolved-neighbour queue was full (or
    /// they were too large to keep).
    pub neighbor_queue_full: AtomicU64,
    /// Queued frames dropped because their neighbour never answered.
    pub neighbor_queue_timeout: AtomicU64,
    /// Connections tracked, as of the worker's last expiry pass (a gauge,
    /// at most half a second old).
    pub conntrack_entries: AtomicU64,
    /// Busy-poll windows the datapath worker started after running out of
    /// work.
    pub busy_poll_spins: AtomicU64,
    /// Busy-poll windows that ended because a packet arrived (a wake-up
    /// saved).
    pub busy_poll_hits: AtomicU64,
    /// Busy-poll windows that ran out without a packet.
    pub busy_poll_misses: AtomicU64,
    /// 1 while the datapath worker does not spin because the traffic is
    /// bulk, or a flood it does not forward beside its sender, else 0 (a
    /// gauge, judged every 200 ms).
    pub busy_poll_held: AtomicU64,
    /// TAPs whose receive processing runs in a kernel thread of its own
    /// because a flood is written to them (threaded NAPI; a gauge, judged
    /// every 200 ms).
    pub receive_threaded: AtomicU64,
    /// Times the datapath worker moved next to its endpoints or back
    /// (`--worker-cpu follow`).
    pub worker_moves: AtomicU64,
    /// The CPU the worker runs on next to its endpoints, plus one; zero
    /// while it runs where the scheduler puts it. Read it with
    /// [`SwitchCounters::worker_following_cpu`].
    pub worker_following: AtomicU64,
}

impl SwitchCounters {
    /// The CPU the datapath worker follows its endpoints on, if it does.
    pub fn worker_following_cpu(&self) -> Option<usize> {
        match self.worker_following.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n as usize - 1),
        }
    }

    /// The switch-wide drop counters under their reported names: the one
    /// list `weft stats` and the metrics exporter both read.
    pub fn drops(&self) -> [(&'static str, &AtomicU64); 9] {
        [
            ("icmp_rate_limited", &self.icmp_rate_limited),
            ("fdb_full", &self.fdb_full),
            ("tunnel_too_big", &self.tunnel_too_big),
            ("vxlan_malformed", &self.vxlan_malformed),
            ("vxlan_unknown_vni", &self.vxlan_unknown_vni),
            ("vxlan_unknown_peer", &self.vxlan_unknown_peer),
            ("conntrack_full", &self.conntrack_full),
            ("neighbor_queue_full", &self.neighbor_queue_full),
            ("neighbor_queue_timeout", &self.neighbor_queue_timeout),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_indexes_match_table() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?} out of order in DropReason::ALL");
        }
    }

    #[test]
    fn snapshot_lists_nonzero_drops_only() {
        let c = PortCounters::default();
        c.count_rx(100);
        c.count_drop(DropReason::Malformed);
        c.count_drop(DropReason::Malformed);
        let s = c.snapshot();
        assert_eq!(s.rx_packets, 1);
        assert_eq!(s.rx_bytes, 100);
        assert_eq!(s.drops, vec![(DropReason::Malformed, 2)]);
    }
}
