//! The gateway's part of the core: IPv4 sent to a gateway's MAC is routed
//! as RFC 1812 §5.2-5.3 describes — to another network only where a route
//! was allowed, with the TTL decremented, and with an ICMP error
//! (§4.3.2.7 rules, rate limited per §4.3.2.8) wherever a packet cannot be
//! delivered. The packet operations themselves are in [`crate::gateway`].

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::counters::DropReason;
use crate::frame::{is_gso, needs_csum, Offload, NO_OFFLOAD};
use crate::gateway::{self, IcmpError};
use crate::unresolved::{NeighborKey, SLOT_LEN};
use crate::{NetworkId, PortId};
use weft_packet::meta::Ipv4Meta;
use weft_packet::{
    arp, ethernet, icmp, write_ipv4, write_u16, MacAddr, ARP_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4,
    ETH_HEADER_LEN, IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP,
};

use super::{Ingress, PortEntry, Switch, Transmit, Verdict};

/// Where a routed packet goes next.
enum NextHop {
    Port {
        port: PortId,
        mac: MacAddr,
        mtu: usize,
    },
    /// The destination's MAC is not known yet: ARP for it.
    Resolve,
    Unreachable,
}

impl Switch {
    pub(super) fn route<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        frame: &mut [u8],
        offload: &Offload,
        meta: &Ipv4Meta,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        if !gateway::ipv4_checksum_ok(frame, meta) || !gateway::fragment_in_bounds(meta) {
            return Err(DropReason::Malformed);
        }
        if self.is_own_address(meta.dst) {
            match self.nat_to_own_address(ingress, frame, offload, meta, now, tx) {
                Verdict::Pass => {}
                Verdict::Handled => return Ok(()),
                Verdict::Drop(reason) => return Err(reason),
            }
        }
        let in_net = self
            .ingress_network(ingress)
            .ok_or(DropReason::NotRoutable)?;
        let in_ip = in_net.cfg.gateway_ip;
        if meta.dst == in_ip {
            return self.deliver_local(ingress, frame, meta, in_ip, now, tx);
        }
        if meta.dst.is_broadcast()
            || meta.dst.is_multicast()
            || meta.dst == in_net.cfg.subnet.broadcast()
        {
            return Err(DropReason::NotRoutable);
        }
        match self.nat_service(ingress, frame, offload, meta, now, tx) {
            Verdict::Pass => {}
            Verdict::Handled => return Ok(()),
            Verdict::Drop(reason) => return Err(reason),
        }
        let Some(target) = self.network_for(meta.dst) else {
            match self.nat_egress(ingress, frame, offload, meta, now, tx) {
                Verdict::Pass => {}
                Verdict::Handled => return Ok(()),
                Verdict::Drop(reason) => return Err(reason),
            }
            self.icmp_unreachable(ingress, frame, meta, icmp::CODE_NET_UNREACHABLE, now, tx);
            return Err(DropReason::NoRoute);
        };
        let in_net = self
            .ingress_network(ingress)
            .ok_or(DropReason::NotRoutable)?;
        if Some(target) != ingress.network() && !in_net.routes_to.contains(&target) {
            self.icmp_unreachable(ingress, frame, meta, icmp::CODE_ADMIN_PROHIBITED, now, tx);
            return Err(DropReason::RouteDenied);
        }
        let out_net = self.network(target).ok_or(DropReason::NotRoutable)?;
        if meta.dst == out_net.cfg.gateway_ip {
            // Another gateway of this router, reachable from here.
            return self.deliver_local(ingress, frame, meta, meta.dst, now, tx);
        }
        self.forward_to(ingress, target, frame, offload, meta, now, tx)
    }

    /// Routes a packet whose addresses NAT just rewrote to wherever its new
    /// destination is.
    pub(super) fn forward_translated<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        let meta = gateway::parse_ipv4(frame).map_err(|_| DropReason::Malformed)?;
        match self.network_for(meta.dst) {
            Some(target) => self.forward_to(ingress, target, frame, offload, &meta, now, tx),
            None => self
                .nat_egress(ingress, frame, offload, &meta, now, tx)
                .or_drop(DropReason::NoRoute),
        }
    }

    /// Delivers a routed packet into network `target`: TTL, next hop, MTU.
    #[allow(clippy::too_many_arguments)]
    fn forward_to<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        target: NetworkId,
        frame: &mut [u8],
        offload: &Offload,
        meta: &Ipv4Meta,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        let out_net = self.network(target).ok_or(DropReason::NotRoutable)?;
        if meta.ttl <= 1 {
            let error = (icmp::TIME_EXCEEDED, icmp::CODE_TTL_EXCEEDED, 0);
            self.send_icmp_error(ingress, frame, meta, error.0, error.1, error.2, now, tx);
            return Err(DropReason::TtlExpired);
        }
        let out_gw_mac = out_net.cfg.gateway_mac;
        let (out_port, out_mac, mtu) = match self.next_hop(target, meta.dst) {
            NextHop::Port { port, mac, mtu } => (port, mac, mtu),
            NextHop::Resolve => {
                self.send_arp_request(target, meta.dst, now, tx);
                // Kept for the ARP reply if it fits the tunnels as it is.
                let tunnel_mtu = self.network(target).map_or(0, |n| {
                    (n.cfg.mtu as usize).min(n.tunnel_max_ip_len as usize)
                });
                let end = ETH_HEADER_LEN + meta.total_len;
                if is_gso(offload) || meta.total_len > tunnel_mtu || end > SLOT_LEN {
                    return Err(DropReason::NeighborUnknown);
                }
                gateway::decrement_ttl(frame);
                out_gw_mac.write(frame, ethernet::SRC);
                let key = NeighborKey::Network(target, meta.dst);
                return match self.queue_unresolved(key, &frame[..end], offload, now) {
                    Verdict::Drop(reason) => Err(reason),
                    _ => Ok(()),
                };
            }
            NextHop::Unreachable => {
                self.icmp_unreachable(ingress, frame, meta, icmp::CODE_HOST_UNREACHABLE, now, tx);
                return Err(DropReason::HostUnreachable);
            }
        };

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
                ingress,
                frame,
                meta,
                icmp::DEST_UNREACHABLE,
                icmp::CODE_FRAG_NEEDED,
                mtu.min(usize::from(u16::MAX)) as u16,
                now,
                tx,
            );
            return Err(DropReason::FragmentationNeeded);
        }

        gateway::decrement_ttl(frame);
        out_mac.write(frame, ethernet::DST);
        out_gw_mac.write(frame, ethernet::SRC);
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

    /// The port, MAC and MTU toward `dst` in network `target`.
    fn next_hop(&self, target: NetworkId, dst: Ipv4Addr) -> NextHop {
        let Some(net) = self.network(target) else {
            return NextHop::Unreachable;
        };
        let mtu = net.cfg.mtu as usize;
        if let Some(&port) = net.hosts.get(&dst) {
            return match self.port_entry(port) {
                Some(PortEntry::Endpoint(p)) => NextHop::Port {
                    port,
                    mac: p.mac,
                    mtu,
                },
                _ => NextHop::Unreachable,
            };
        }
        if net.tunnels.is_empty() {
            return NextHop::Unreachable;
        }
        // An overlay network: the host may live behind a remote VTEP.
        match net.neighbors.lookup(dst) {
            Some(mac) => match net.fdb.lookup(mac) {
                Some(port) if self.is_tunnel(port) => NextHop::Port {
                    port,
                    mac,
                    mtu: mtu.min(net.tunnel_max_ip_len as usize),
                },
                _ => NextHop::Resolve,
            },
            None => NextHop::Resolve,
        }
    }

    /// Floods an ARP request for `ip` from the gateway of `network` into its
    /// tunnels (local endpoints are known without asking), rate limited.
    fn send_arp_request<T: Transmit>(
        &mut self,
        network: NetworkId,
        ip: Ipv4Addr,
        now: Instant,
        tx: &mut T,
    ) {
        if !self.arp_limit.allow(now) {
            return;
        }
        let Switch {
            networks, scratch, ..
        } = self;
        let Some(net) = networks.get(network.0 as usize).and_then(Option::as_ref) else {
            return;
        };
        let f = &mut scratch[..ETH_HEADER_LEN + ARP_LEN];
        MacAddr::BROADCAST.write(f, ethernet::DST);
        net.cfg.gateway_mac.write(f, ethernet::SRC);
        write_u16(f, ethernet::ETHERTYPE, ETHERTYPE_ARP);
        let a = &mut f[ETH_HEADER_LEN..];
        write_u16(a, arp::HTYPE, arp::HTYPE_ETHERNET);
        write_u16(a, arp::PTYPE, ETHERTYPE_IPV4);
        a[arp::HLEN] = 6;
        a[arp::PLEN] = 4;
        write_u16(a, arp::OPER, arp::OP_REQUEST);
        net.cfg.gateway_mac.write(a, arp::SHA);
        write_ipv4(a, arp::SPA, net.cfg.gateway_ip);
        MacAddr::ZERO.write(a, arp::THA);
        write_ipv4(a, arp::TPA, ip);
        for &t in &net.tunnels {
            tx.transmit(t, f, &NO_OFFLOAD);
        }
    }

    /// Packets for one of the gateway's own addresses.
    fn deliver_local<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        frame: &mut [u8],
        meta: &Ipv4Meta,
        local_ip: Ipv4Addr,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        let gateway_mac = self
            .ingress_network(ingress)
            .ok_or(DropReason::NotRoutable)?
            .cfg
            .gateway_mac;
        if gateway::is_valid_echo_request(frame, meta) {
            let len = gateway::echo_reply_in_place(frame, meta, gateway_mac, local_ip);
            tx.transmit(ingress.id, &frame[..len], &NO_OFFLOAD);
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
        self.icmp_unreachable(ingress, frame, meta, code, now, tx);
        Err(DropReason::NotRoutable)
    }

    /// ICMP host unreachable back to the sender.
    pub(super) fn icmp_unreachable_pub<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        frame: &[u8],
        meta: &Ipv4Meta,
        now: Instant,
        tx: &mut T,
    ) {
        self.icmp_unreachable(ingress, frame, meta, icmp::CODE_HOST_UNREACHABLE, now, tx);
    }

    fn icmp_unreachable<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        frame: &[u8],
        meta: &Ipv4Meta,
        code: u8,
        now: Instant,
        tx: &mut T,
    ) {
        self.send_icmp_error(
            ingress,
            frame,
            meta,
            icmp::DEST_UNREACHABLE,
            code,
            0,
            now,
            tx,
        );
    }

    /// Sends an ICMP error about `frame` back out of the ingress port, from
    /// the ingress network's gateway, if RFC 1812 §4.3.2.7 and the rate
    /// limit allow.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_icmp_error<T: Transmit>(
        &mut self,
        ingress: &Ingress,
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
        let Some(net) = ingress
            .network()
            .and_then(|n| self.networks.get(n.0 as usize))
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
        tx.transmit(ingress.id, &self.scratch[..len], &NO_OFFLOAD);
    }
}
