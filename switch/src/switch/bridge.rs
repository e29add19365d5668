//! IEEE 802.1D forwarding within a network (802.1D-2004 §7.7): known unicast
//! to its port, group and unknown destinations flooded to every other port
//! of the network — tunnels included for frames from endpoints, excluded for
//! frames from tunnels (split horizon).
//!
//! Every endpoint of a network has the network's MTU, and a bridge does not
//! fragment (802.1D-2004 §7.7.1: a frame larger than the egress port's
//! maximum is discarded): a frame whose payload is larger — an endpoint
//! that raised its own interface's MTU — is dropped and counted
//! ([`DropReason::ExceedsMtu`]). A GSO super-frame is judged by the
//! segments it will be cut into, not by its own size.
//!
//! A frame entering a tunnel must fit the underlay once encapsulated
//! (RFC 7348 §4.3 forbids fragmenting the outer packet). One that does not
//! is never dropped silently: an IPv4 packet with DF set (or a TCP
//! super-frame, whose segments all carry DF) gets ICMP "fragmentation
//! needed" from the gateway so path-MTU discovery works (RFC 1191); other
//! IPv4 packets are fragmented (RFC 791 §3.2).

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::counters::DropReason;
use crate::frame::{is_gso, needs_csum, Offload, NO_OFFLOAD};
use crate::gateway;
use crate::storm::FloodClass;
use weft_packet::{ethernet, icmp, read_u16, MacAddr, ETHERTYPE_IPV4, ETH_HEADER_LEN};

use super::{Ingress, Switch, Transmit};
use crate::PortId;

/// Whether a frame fits under `max_ip_len` once it leaves as segments.
enum Fit {
    Fits,
    /// IPv4 that may be fragmented.
    Fragment,
    /// Must not be fragmented: answer with ICMP (IPv4) or drop.
    TooBig {
        icmp: bool,
    },
}

/// Which tunnels of the network a frame goes into.
#[derive(Clone, Copy)]
pub(super) enum Tunnels {
    One(PortId),
    All,
}

impl Switch {
    pub(super) fn bridge<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        let net = self
            .ingress_network(ingress)
            .ok_or(DropReason::NotRoutable)?;
        if wire_payload_len(frame, offload)? > net.cfg.mtu as usize {
            return Err(DropReason::ExceedsMtu);
        }
        let dst = MacAddr::read(frame, ethernet::DST);
        if dst.is_unicast() {
            match net.fdb.lookup(dst) {
                Some(out) if out == ingress.id => return Err(DropReason::SamePort),
                Some(out) if self.is_tunnel(out) => {
                    if ingress.is_tunnel() {
                        // Split horizon: the sending VTEP reaches it itself.
                        return Err(DropReason::SamePort);
                    }
                    return self.send_into_tunnels(
                        ingress,
                        Tunnels::One(out),
                        frame,
                        offload,
                        now,
                        tx,
                    );
                }
                Some(out) => {
                    tx.transmit(out, frame, offload);
                    return Ok(());
                }
                None => {
                    if !self.storm_allows(ingress.id, FloodClass::UnknownUnicast, now) {
                        return Err(DropReason::StormUnknownUnicast);
                    }
                }
            }
        }
        let net = self
            .ingress_network(ingress)
            .ok_or(DropReason::NotRoutable)?;
        for &out in &net.ports {
            if out != ingress.id {
                tx.transmit(out, frame, offload);
            }
        }
        if ingress.is_tunnel() || net.tunnels.is_empty() {
            return Ok(());
        }
        // Flooding into the overlay: head-end replication to every VTEP.
        self.send_into_tunnels(ingress, Tunnels::All, frame, offload, now, tx)
    }

    /// Sends a frame into tunnels of the ingress network, minding the
    /// underlay's size.
    pub(super) fn send_into_tunnels<T: Transmit>(
        &mut self,
        ingress: &Ingress,
        targets: Tunnels,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
        tx: &mut T,
    ) -> Result<(), DropReason> {
        let Switch {
            networks, scratch, ..
        } = self;
        let net = ingress
            .network()
            .and_then(|n| networks.get(n.0 as usize))
            .and_then(Option::as_ref)
            .ok_or(DropReason::NotRoutable)?;
        let one;
        let targets: &[PortId] = match targets {
            Tunnels::One(t) => {
                one = [t];
                &one
            }
            Tunnels::All => &net.tunnels,
        };
        let limit = net.tunnel_max_ip_len;
        match fit(frame, offload, limit as usize)? {
            Fit::Fits => {
                for &t in targets {
                    tx.transmit(t, frame, offload);
                }
                Ok(())
            }
            Fit::Fragment => {
                let meta = gateway::parse_ipv4(frame).map_err(|_| DropReason::Malformed)?;
                let frame = &mut frame[..ETH_HEADER_LEN + meta.total_len];
                if needs_csum(offload) {
                    gateway::complete_checksum(frame, offload).ok_or(DropReason::Malformed)?;
                }
                for &t in targets {
                    gateway::fragment(frame, &meta, limit as usize, scratch, |p| {
                        tx.transmit(t, p, &NO_OFFLOAD)
                    });
                }
                Ok(())
            }
            Fit::TooBig { icmp } => {
                self.counters.tunnel_too_big.fetch_add(1, Ordering::Relaxed);
                if icmp && !ingress.is_tunnel() {
                    let meta = gateway::parse_ipv4(frame).map_err(|_| DropReason::Malformed)?;
                    self.send_icmp_error(
                        ingress,
                        frame,
                        &meta,
                        icmp::DEST_UNREACHABLE,
                        icmp::CODE_FRAG_NEEDED,
                        limit.min(u32::from(u16::MAX)) as u16,
                        now,
                        tx,
                    );
                }
                Err(DropReason::FragmentationNeeded)
            }
        }
    }
}

/// The largest Ethernet payload `frame` puts on a wire: its own, or for a
/// GSO super-frame that of each segment (headers plus `gso_size`).
fn wire_payload_len(frame: &[u8], offload: &Offload) -> Result<usize, DropReason> {
    if !is_gso(offload) {
        return Ok(frame.len().saturating_sub(ETH_HEADER_LEN));
    }
    if read_u16(frame, ethernet::ETHERTYPE) == ETHERTYPE_IPV4 {
        let meta = gateway::parse_ipv4(frame).map_err(|_| DropReason::Malformed)?;
        return gateway::gso_segment_ip_len(frame, &meta, offload).ok_or(DropReason::Malformed);
    }
    Ok(usize::from(offload.hdr_len).saturating_sub(ETH_HEADER_LEN) + usize::from(offload.gso_size))
}

/// How a frame compares with an IP size limit.
fn fit(frame: &[u8], offload: &Offload, limit: usize) -> Result<Fit, DropReason> {
    let ethertype = read_u16(frame, ethernet::ETHERTYPE);
    if ethertype != ETHERTYPE_IPV4 {
        let len = if is_gso(offload) {
            // TCP over IPv6: the segment headers plus gso_size.
            usize::from(offload.hdr_len).saturating_sub(ETH_HEADER_LEN)
                + usize::from(offload.gso_size)
        } else {
            frame.len() - ETH_HEADER_LEN
        };
        return Ok(if len <= limit {
            Fit::Fits
        } else {
            Fit::TooBig { icmp: false }
        });
    }
    let meta = gateway::parse_ipv4(frame).map_err(|_| DropReason::Malformed)?;
    let len = if is_gso(offload) {
        gateway::gso_segment_ip_len(frame, &meta, offload).ok_or(DropReason::Malformed)?
    } else {
        meta.total_len
    };
    Ok(if len <= limit {
        Fit::Fits
    } else if meta.dont_fragment() || is_gso(offload) {
        Fit::TooBig { icmp: true }
    } else {
        Fit::Fragment
    })
}
