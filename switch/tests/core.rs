//! Integration tests of the I/O-free forwarding core, [`Switch`], through its
//! public API only: frames are built with etherparse, fed to
//! `Switch::handle` with synthetic timestamps, and what comes out of the
//! recording [`Transmit`] sink is checked with etherparse.
//!
//! The fixture has three networks:
//!
//! | network | subnet       | gateway   | MTU  | ports (MAC 02:00:00:nn:00:pp, IP .10+p) |
//! |---------|--------------|-----------|------|------------------------------------------|
//! | A (1)   | 10.1.0.0/24  | 10.1.0.1  | 1500 | 1, 2, 3                                  |
//! | B (2)   | 10.2.0.0/24  | 10.2.0.1  | 1000 | 4, 5, 6                                  |
//! | C (3)   | 10.3.0.0/24  | 10.3.0.1  | 1500 | 7, 8                                     |
//!
//! Routing is open between A and B, closed to and from C.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etherparse::{
    ArpOperation, ArpPacket, EtherType, IpHeaders, IpNumber, Ipv4Header, NetSlice, PacketBuilder,
    SlicedPacket, TransportSlice,
};
use ipnet::Ipv4Net;
use weft_packet::MacAddr;
use weft_switch::counters::{DropReason, SwitchCounters};
use weft_switch::frame::{Offload, NO_OFFLOAD};
use weft_switch::switch::{
    ConfigError, NetworkConfig, PortConfig, Punt, Switch, Transmit, UplinkConfig,
};
use weft_switch::{NetworkId, PortId};

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

const NET_A: NetworkId = NetworkId(1);
const NET_B: NetworkId = NetworkId(2);
const NET_C: NetworkId = NetworkId(3);

const P1: PortId = PortId(1);
const P2: PortId = PortId(2);
const P3: PortId = PortId(3);
const P4: PortId = PortId(4);
const P5: PortId = PortId(5);
const P6: PortId = PortId(6);
const P7: PortId = PortId(7);
const P8: PortId = PortId(8);

const MTU_B: u32 = 1000;

/// A `Transmit` that records every frame with its egress port, and (in the
/// same order) the offload metadata it was sent with; and every punted DNS
/// query, refusing it with `.3` when that is set (a full resolver queue).
#[derive(Debug, Default)]
struct Rec(
    Vec<(PortId, Vec<u8>)>,
    Vec<Offload>,
    Vec<Punted>,
    Option<DropReason>,
);

/// A punted DNS query as the sink saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Punted {
    port: PortId,
    network: NetworkId,
    client_mac: MacAddr,
    client: SocketAddrV4,
    gateway_mac: MacAddr,
    gateway: Ipv4Addr,
    message: Vec<u8>,
    tcp: bool,
}

impl Transmit for Rec {
    fn transmit(&mut self, port: PortId, frame: &[u8], offload: &Offload) {
        self.0.push((port, frame.to_vec()));
        self.1.push(*offload);
    }

    fn punt(&mut self, punt: Punt<'_>) -> Result<(), DropReason> {
        self.2.push(Punted {
            port: punt.port,
            network: punt.network,
            client_mac: punt.client_mac,
            client: punt.client,
            gateway_mac: punt.gateway_mac,
            gateway: punt.gateway,
            message: punt.message.to_vec(),
            tcp: punt.tcp,
        });
        self.3.map_or(Ok(()), Err)
    }
}

impl Rec {
    fn ports(&self) -> Vec<PortId> {
        let mut p: Vec<PortId> = self.0.iter().map(|(p, _)| *p).collect();
        p.sort();
        p
    }

    /// The one frame sent, which must have gone out of `port`.
    fn only(&self, port: PortId) -> &[u8] {
        assert_eq!(self.ports(), vec![port], "expected exactly one frame");
        &self.0[0].1
    }
}

fn net_index(id: NetworkId) -> u8 {
    id.0 as u8
}

fn gw_mac(net: NetworkId) -> MacAddr {
    MacAddr([0x02, 0xaa, 0, 0, 0, net_index(net)])
}

fn gw_ip(net: NetworkId) -> Ipv4Addr {
    Ipv4Addr::new(10, net_index(net), 0, 1)
}

fn network_of(port: PortId) -> NetworkId {
    match port.0 {
        1..=3 => NET_A,
        4..=6 => NET_B,
        7..=8 => NET_C,
        _ => panic!("no such port in the fixture"),
    }
}

fn mac(port: PortId) -> MacAddr {
    MacAddr([0x02, 0, 0, net_index(network_of(port)), 0, port.0 as u8])
}

fn ip(port: PortId) -> Ipv4Addr {
    Ipv4Addr::new(10, net_index(network_of(port)), 0, 10 + port.0 as u8)
}

fn net_cfg(id: NetworkId, mtu: u32) -> NetworkConfig {
    NetworkConfig {
        id,
        subnet: Ipv4Net::new(Ipv4Addr::new(10, net_index(id), 0, 0), 24).unwrap(),
        gateway_ip: gw_ip(id),
        gateway_mac: gw_mac(id),
        mtu,
    }
}

fn port_cfg(id: PortId) -> PortConfig {
    PortConfig {
        id,
        network: network_of(id),
        mac: mac(id),
        ip: ip(id),
    }
}

struct Fx {
    sw: Switch,
    counters: Arc<SwitchCounters>,
    t0: Instant,
}

impl Fx {
    fn new() -> Fx {
        let counters = Arc::new(SwitchCounters::default());
        let mut sw = Switch::new(counters.clone());
        sw.add_network(net_cfg(NET_A, 1500)).unwrap();
        sw.add_network(net_cfg(NET_B, MTU_B)).unwrap();
        sw.add_network(net_cfg(NET_C, 1500)).unwrap();
        for p in [P1, P2, P3, P4, P5, P6, P7, P8] {
            sw.add_port(port_cfg(p)).unwrap();
        }
        sw.set_route(NET_A, NET_B, true).unwrap();
        Fx {
            sw,
            counters,
            t0: Instant::now(),
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    /// Feeds `frame` with `offload` in on `port` at t0 + `secs`.
    fn send_full(
        &mut self,
        port: PortId,
        frame: &[u8],
        offload: &Offload,
        secs: u64,
    ) -> (Result<(), DropReason>, Rec) {
        let mut rec = Rec::default();
        let mut buf = frame.to_vec();
        let now = self.at(secs);
        let r = self.sw.handle(port, &mut buf, offload, now, &mut rec);
        assert_eq!(rec.0.len(), rec.1.len());
        (r, rec)
    }

    /// Feeds `frame` in on `port` at t0 + `secs`.
    fn send_at(&mut self, port: PortId, frame: &[u8], secs: u64) -> (Result<(), DropReason>, Rec) {
        self.send_full(port, frame, &NO_OFFLOAD, secs)
    }

    fn send(&mut self, port: PortId, frame: &[u8]) -> (Result<(), DropReason>, Rec) {
        self.send_at(port, frame, 0)
    }

    /// Feeds `frame` in on `port` at t0 + `secs`; it must be accepted.
    fn ok_at(&mut self, port: PortId, frame: &[u8], secs: u64) -> Rec {
        let (r, rec) = self.send_at(port, frame, secs);
        assert_eq!(r, Ok(()));
        rec
    }

    fn icmp_rate_limited(&self) -> u64 {
        self.counters.icmp_rate_limited.load(Ordering::Relaxed)
    }

    fn icmp_errors_sent(&self) -> u64 {
        self.counters.icmp_errors_sent.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------
// Frame builders
// ---------------------------------------------------------------------------

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, df: bool) -> Ipv4Header {
    let mut h = Ipv4Header::new(0, ttl, IpNumber::UDP, src.octets(), dst.octets()).unwrap();
    h.dont_fragment = df;
    h.identification = 0x4242;
    h
}

#[allow(clippy::too_many_arguments)]
fn udp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    df: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ip(IpHeaders::Ipv4(
            ipv4_header(src, dst, ttl, df),
            Default::default(),
        ))
        .udp(40000, 5353)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// UDP from `port` (its own addresses) to `dst` via its gateway.
fn routed_udp(port: PortId, dst: Ipv4Addr, ttl: u8, df: bool, payload: &[u8]) -> Vec<u8> {
    udp_frame(
        mac(port),
        gw_mac(network_of(port)),
        ip(port),
        dst,
        ttl,
        df,
        payload,
    )
}

/// UDP from `from` bridged to `to` (both in one network).
fn bridged_udp(from: PortId, to_mac: MacAddr, to_ip: Ipv4Addr) -> Vec<u8> {
    udp_frame(mac(from), to_mac, ip(from), to_ip, 64, true, b"hello")
}

fn ip_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpNumber,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ip(IpHeaders::Ipv4(
            ipv4_header(src, dst, 64, true),
            Default::default(),
        ))
        .write(&mut out, proto, payload)
        .unwrap();
    out
}

fn echo_request(port: PortId, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac(port).0, gw_mac(network_of(port)).0)
        .ip(IpHeaders::Ipv4(
            ipv4_header(ip(port), dst, ttl, false),
            Default::default(),
        ))
        .icmpv4_echo_request(0xbeef, 42)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn icmp_raw(port: PortId, dst: Ipv4Addr, ty: u8, code: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac(port).0, gw_mac(network_of(port)).0)
        .ip(IpHeaders::Ipv4(
            ipv4_header(ip(port), dst, ttl, false),
            Default::default(),
        ))
        .icmpv4_raw(ty, code, [0; 4])
        .write(&mut out, payload)
        .unwrap();
    out
}

#[allow(clippy::too_many_arguments)]
fn arp_frame(
    eth_src: MacAddr,
    eth_dst: MacAddr,
    op: ArpOperation,
    sha: MacAddr,
    spa: Ipv4Addr,
    tha: MacAddr,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let arp = ArpPacket::new(
        etherparse::ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &sha.0,
        &spa.octets(),
        &tha.0,
        &tpa.octets(),
    )
    .unwrap();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(eth_src.0, eth_dst.0)
        .arp(arp)
        .write(&mut out)
        .unwrap();
    out
}

/// A broadcast ARP request from `port` for `target`.
fn arp_request(port: PortId, target: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        mac(port),
        MacAddr::BROADCAST,
        ArpOperation::REQUEST,
        mac(port),
        ip(port),
        MacAddr::ZERO,
        target,
    )
}

fn raw_eth(src: MacAddr, dst: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Recomputes the IPv4 header checksum of the (IHL 5) header in `frame`.
/// Frames too short to hold one are left alone.
fn fix_ipv4_checksum(frame: &mut [u8]) {
    if frame.len() < 34 {
        return;
    }
    frame[24] = 0;
    frame[25] = 0;
    let sum = ones_complement_checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
}

fn ones_complement_checksum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for w in data.chunks(2) {
        let hi = u32::from(w[0]) << 8;
        let lo = w.get(1).copied().map(u32::from).unwrap_or(0);
        acc += hi | lo;
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

// ---------------------------------------------------------------------------
// Checkers
// ---------------------------------------------------------------------------

fn eth_dst(f: &[u8]) -> MacAddr {
    MacAddr(f[0..6].try_into().unwrap())
}

fn eth_src(f: &[u8]) -> MacAddr {
    MacAddr(f[6..12].try_into().unwrap())
}

/// The IPv4 header of `frame`, checked to carry a valid header checksum.
fn checked_ipv4(frame: &[u8]) -> Ipv4Header {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse rejects the frame");
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4: {frame:02x?}")
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.calc_header_checksum(),
        h.header_checksum,
        "bad IPv4 header checksum"
    );
    assert_eq!(
        usize::from(h.total_len),
        frame.len() - 14,
        "frame carries padding or is cut short"
    );
    h
}

/// An ICMP message from the core, checked (IP and ICMP checksums).
struct Icmp {
    ip: Ipv4Header,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    payload: Vec<u8>,
}

fn checked_icmp(frame: &[u8]) -> Icmp {
    let ip = checked_ipv4(frame);
    assert_eq!(ip.protocol, IpNumber::ICMP);
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
        panic!("not ICMP")
    };
    assert_eq!(
        icmp.icmp_type().calc_checksum(icmp.payload()),
        icmp.checksum(),
        "bad ICMP checksum"
    );
    // Independent check: the whole ICMP message sums to zero.
    assert_eq!(ones_complement_checksum(icmp.slice()), 0);
    Icmp {
        ip,
        ty: icmp.type_u8(),
        code: icmp.code_u8(),
        rest: icmp.bytes5to8(),
        payload: icmp.payload().to_vec(),
    }
}

/// Checks that `rec` holds exactly one ICMP error of `ty`/`code`, sent back
/// out of `port` from its gateway, quoting the start of `original`.
fn expect_icmp_error(rec: &Rec, port: PortId, original: &[u8], ty: u8, code: u8) -> Icmp {
    let f = rec.only(port);
    let net = network_of(port);
    assert_eq!(
        eth_src(f),
        gw_mac(net),
        "ICMP error not from the gateway MAC"
    );
    assert_eq!(eth_dst(f), mac(port), "ICMP error not to the sender's MAC");
    let m = checked_icmp(f);
    assert_eq!((m.ty, m.code), (ty, code), "ICMP type/code");
    assert_eq!(Ipv4Addr::from(m.ip.source), gw_ip(net));
    assert_eq!(Ipv4Addr::from(m.ip.destination), ip(port));
    assert!(m.ip.time_to_live > 0);
    // RFC 792: the IP header plus at least the first 64 bits of data.
    let quoted = &original[14..];
    assert!(m.payload.len() >= 28.min(quoted.len()));
    assert!(m.payload.len() <= 576 - 28);
    let n = m.payload.len();
    assert_eq!(&m.payload[..n], &quoted[..n], "quoted packet differs");
    m
}

// ---------------------------------------------------------------------------
// Bridging
// ---------------------------------------------------------------------------

#[test]
fn unknown_unicast_floods_within_the_network_only() {
    let mut fx = Fx::new();
    let f = bridged_udp(P1, mac(P2), ip(P2));
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2, P3]);
    for (_, out) in &rec.0 {
        assert_eq!(out, &f, "bridged frames are not rewritten");
    }

    // In network B too, and never into A or C.
    let f = bridged_udp(P4, mac(P6), ip(P6));
    let (r, rec) = fx.send(P4, &f);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P5, P6]);

    // A MAC that no port has: flooded all the same.
    let stranger = MacAddr([0x02, 0x99, 0x99, 0x99, 0x99, 0x99]);
    let (r, rec) = fx.send(P7, &bridged_udp(P7, stranger, ip(P8)));
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P8]);
}

#[test]
fn learned_unicast_goes_to_one_port() {
    let mut fx = Fx::new();
    // P1 → P2 floods: nobody is known yet.
    let (_, rec) = fx.send(P1, &bridged_udp(P1, mac(P2), ip(P2)));
    assert_eq!(rec.ports(), vec![P2, P3]);
    // P2 → P1: P1 was learned from the first frame.
    let f = bridged_udp(P2, mac(P1), ip(P1));
    let (r, rec) = fx.send(P2, &f);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.only(P1), &f[..]);
    // P1 → P2 again: now P2 is known too.
    let (r, rec) = fx.send(P1, &bridged_udp(P1, mac(P2), ip(P2)));
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2]);
    // A non-IP ethertype is bridged the same way.
    let f = raw_eth(mac(P3), mac(P1), 0x88b5, &[1, 2, 3, 4]);
    let (r, rec) = fx.send(P3, &f);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.only(P1), &f[..]);
}

#[test]
fn learned_addresses_do_not_leak_across_networks() {
    let mut fx = Fx::new();
    // P4 (network B) is learned in B only.
    fx.ok_at(P4, &bridged_udp(P4, MacAddr::BROADCAST, ip(P5)), 0);
    let (r, rec) = fx.send(P1, &bridged_udp(P1, mac(P4), ip(P2)));
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2, P3], "B's MAC must not be known in A");
    assert!(fx
        .sw
        .fdb(Some(NET_A), fx.t0)
        .iter()
        .all(|(_, l)| l.mac != mac(P4)));
}

#[test]
fn broadcast_and_multicast_flood_within_the_network() {
    let mut fx = Fx::new();
    // Learn everyone first: group addresses flood regardless.
    for p in [P1, P2, P3, P4, P5, P6] {
        fx.ok_at(
            p,
            &bridged_udp(p, MacAddr::BROADCAST, Ipv4Addr::BROADCAST),
            0,
        );
    }
    // A request for an address no endpoint holds floods (one for a known
    // endpoint is answered by the switch: see arp_for_a_known_endpoint...).
    let nobody = Ipv4Addr::new(10, 1, 0, 200);
    let arp = arp_request(P1, nobody);
    let (r, rec) = fx.send(P1, &arp);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2, P3]);

    let mdns = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    let f = udp_frame(
        mac(P5),
        mdns,
        ip(P5),
        Ipv4Addr::new(224, 0, 0, 251),
        255,
        true,
        b"q",
    );
    let (r, rec) = fx.send(P5, &f);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P4, P6]);

    let (r, rec) = fx.send(P8, &bridged_udp(P8, MacAddr::BROADCAST, ip(P7)));
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P7]);
}

#[test]
fn unicast_to_a_mac_on_the_ingress_port_is_dropped() {
    let mut fx = Fx::new();
    let f = bridged_udp(P1, mac(P1), ip(P1));
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Err(DropReason::SamePort));
    assert!(rec.0.is_empty());
    // And again, once learned for certain.
    fx.ok_at(P1, &bridged_udp(P1, MacAddr::BROADCAST, ip(P2)), 0);
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Err(DropReason::SamePort));
    assert!(rec.0.is_empty());
}

#[test]
fn entries_age_out_and_unicast_floods_again() {
    let mut fx = Fx::new();
    assert_eq!(fx.sw.aging(), Duration::from_secs(300), "802.1D default");
    fx.sw.set_aging(Duration::from_secs(10));
    assert_eq!(fx.sw.aging(), Duration::from_secs(10));

    // P2 is seen at t=0, P1 at t=5.
    fx.ok_at(P2, &bridged_udp(P2, MacAddr::BROADCAST, ip(P1)), 0);
    let (_, rec) = fx.send_at(P1, &bridged_udp(P1, mac(P2), ip(P2)), 5);
    assert_eq!(rec.ports(), vec![P2]);

    // At t=9 both are still there; ages are reported from `now`.
    fx.sw.expire(fx.at(9));
    let fdb = fx.sw.fdb(Some(NET_A), fx.at(9));
    let mut rows: Vec<(MacAddr, PortId, Duration)> = fdb
        .iter()
        .map(|(n, l)| {
            assert_eq!(*n, NET_A);
            (l.mac, l.port, l.age)
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            (mac(P1), P1, Duration::from_secs(4)),
            (mac(P2), P2, Duration::from_secs(9)),
        ]
    );
    let (_, rec) = fx.send_at(P1, &bridged_udp(P1, mac(P2), ip(P2)), 9);
    assert_eq!(rec.ports(), vec![P2]);

    // At t=20, P2 (last seen at 0) has aged out; P1 (refreshed at 9) too.
    fx.sw.expire(fx.at(20));
    assert!(fx.sw.fdb(Some(NET_A), fx.at(20)).is_empty());
    let (r, rec) = fx.send_at(P1, &bridged_udp(P1, mac(P2), ip(P2)), 20);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2, P3], "aged-out destination floods");
}

#[test]
fn expire_keeps_recent_entries() {
    let mut fx = Fx::new();
    fx.sw.set_aging(Duration::from_secs(10));
    fx.ok_at(P2, &bridged_udp(P2, MacAddr::BROADCAST, ip(P1)), 0);
    fx.ok_at(P3, &bridged_udp(P3, MacAddr::BROADCAST, ip(P1)), 8);
    fx.sw.expire(fx.at(12));
    let fdb = fx.sw.fdb(Some(NET_A), fx.at(12));
    assert_eq!(fdb.len(), 1);
    assert_eq!(fdb[0].1.mac, mac(P3));
    assert_eq!(fdb[0].1.port, P3);
    assert_eq!(fdb[0].1.age, Duration::from_secs(4));
    // Exactly at the aging time, the entry goes (age >= aging).
    fx.sw.expire(fx.at(18));
    assert!(fx.sw.fdb(Some(NET_A), fx.at(18)).is_empty());
}

#[test]
fn fdb_reports_per_network_and_all() {
    let mut fx = Fx::new();
    fx.ok_at(P1, &bridged_udp(P1, MacAddr::BROADCAST, ip(P2)), 1);
    fx.ok_at(P4, &bridged_udp(P4, MacAddr::BROADCAST, ip(P5)), 2);
    fx.ok_at(P7, &bridged_udp(P7, MacAddr::BROADCAST, ip(P8)), 3);
    let now = fx.at(10);

    let a = fx.sw.fdb(Some(NET_A), now);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].0, a[0].1.mac, a[0].1.port), (NET_A, mac(P1), P1));
    assert_eq!(a[0].1.age, Duration::from_secs(9));

    let mut all: Vec<(NetworkId, MacAddr, PortId, Duration)> = fx
        .sw
        .fdb(None, now)
        .into_iter()
        .map(|(n, l)| (n, l.mac, l.port, l.age))
        .collect();
    all.sort();
    assert_eq!(
        all,
        vec![
            (NET_A, mac(P1), P1, Duration::from_secs(9)),
            (NET_B, mac(P4), P4, Duration::from_secs(8)),
            (NET_C, mac(P7), P7, Duration::from_secs(7)),
        ]
    );
    assert!(fx.sw.fdb(Some(NetworkId(99)), now).is_empty());
}

// ---------------------------------------------------------------------------
// Port security and malformed input
// ---------------------------------------------------------------------------

#[test]
fn wrong_source_mac_is_dropped() {
    let mut fx = Fx::new();
    // Somebody else's MAC (P2's) from P1, and a made-up one.
    for src in [mac(P2), MacAddr([0x02, 1, 2, 3, 4, 5]), gw_mac(NET_A)] {
        let f = udp_frame(src, MacAddr::BROADCAST, ip(P1), ip(P3), 64, true, b"x");
        let (r, rec) = fx.send(P1, &f);
        assert_eq!(r, Err(DropReason::SpoofedSourceMac));
        assert!(rec.0.is_empty());
    }
    // The spoofed MAC was not learned on P1: P3 → P2 still floods.
    assert!(fx.sw.fdb(None, fx.t0).is_empty());
    let (_, rec) = fx.send(P3, &bridged_udp(P3, mac(P2), ip(P2)));
    assert_eq!(rec.ports(), vec![P1, P2]);
}

#[test]
fn wrong_source_ip_is_dropped() {
    let mut fx = Fx::new();
    for src in [ip(P2), Ipv4Addr::new(10, 1, 0, 200), Ipv4Addr::UNSPECIFIED] {
        // Bridged...
        let f = udp_frame(mac(P1), MacAddr::BROADCAST, src, ip(P2), 64, true, b"x");
        let (r, rec) = fx.send(P1, &f);
        assert_eq!(r, Err(DropReason::SpoofedSourceIp));
        assert!(rec.0.is_empty());
        // ...and routed.
        let f = udp_frame(mac(P1), gw_mac(NET_A), src, ip(P5), 64, true, b"x");
        let (r, rec) = fx.send(P1, &f);
        assert_eq!(r, Err(DropReason::SpoofedSourceIp));
        assert!(rec.0.is_empty());
    }
    assert!(fx.sw.fdb(None, fx.t0).is_empty(), "nothing learned");
}

#[test]
fn arp_with_foreign_sender_is_dropped() {
    let mut fx = Fx::new();
    // Sender hardware address not the port's (Ethernet source is).
    let f = arp_frame(
        mac(P1),
        MacAddr::BROADCAST,
        ArpOperation::REQUEST,
        mac(P2),
        ip(P1),
        MacAddr::ZERO,
        ip(P3),
    );
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Err(DropReason::SpoofedSourceMac));
    assert!(rec.0.is_empty());

    // Sender protocol address not the port's: ARP spoofing of P2, and a
    // gratuitous reply claiming the gateway's address.
    for (op, spa, tpa) in [
        (ArpOperation::REQUEST, ip(P2), ip(P3)),
        (ArpOperation::REPLY, gw_ip(NET_A), gw_ip(NET_A)),
        (ArpOperation::REQUEST, ip(P2), gw_ip(NET_A)),
    ] {
        let f = arp_frame(
            mac(P1),
            MacAddr::BROADCAST,
            op,
            mac(P1),
            spa,
            MacAddr::ZERO,
            tpa,
        );
        let (r, rec) = fx.send(P1, &f);
        assert_eq!(r, Err(DropReason::SpoofedSourceIp), "{op:?} {spa} {tpa}");
        assert!(rec.0.is_empty());
    }
}

#[test]
fn arp_probe_from_unspecified_address_is_allowed() {
    let mut fx = Fx::new();
    // RFC 5227 probe: sender IP 0.0.0.0, target the address being probed.
    let f = arp_frame(
        mac(P1),
        MacAddr::BROADCAST,
        ArpOperation::REQUEST,
        mac(P1),
        Ipv4Addr::UNSPECIFIED,
        MacAddr::ZERO,
        ip(P1),
    );
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2, P3]);
    // Gratuitous ARP (announcement) with the port's own address, too.
    let f = arp_frame(
        mac(P1),
        MacAddr::BROADCAST,
        ArpOperation::REQUEST,
        mac(P1),
        ip(P1),
        MacAddr::ZERO,
        ip(P1),
    );
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2, P3]);
}

#[test]
fn arp_reply_between_endpoints_is_bridged() {
    let mut fx = Fx::new();
    fx.ok_at(P1, &arp_request(P1, ip(P2)), 0);
    let reply = arp_frame(
        mac(P2),
        mac(P1),
        ArpOperation::REPLY,
        mac(P2),
        ip(P2),
        mac(P1),
        ip(P1),
    );
    let (r, rec) = fx.send(P2, &reply);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.only(P1), &reply[..]);
}

#[test]
fn vlan_tagged_frames_are_refused() {
    let mut fx = Fx::new();
    let inner = bridged_udp(P1, MacAddr::BROADCAST, ip(P2));
    for tpid in [0x8100u16, 0x88a8] {
        let mut tagged = raw_eth(mac(P1), MacAddr::BROADCAST, tpid, &[0x00, 0x05]);
        tagged.extend_from_slice(&inner[12..]);
        let (r, rec) = fx.send(P1, &tagged);
        assert_eq!(r, Err(DropReason::UnsupportedEthertype));
        assert!(rec.0.is_empty());
        // Even a bare 14-byte header.
        let (r, _) = fx.send(P1, &tagged[..14]);
        assert_eq!(r, Err(DropReason::UnsupportedEthertype));
    }
}

#[test]
fn frames_shorter_than_an_ethernet_header_are_malformed() {
    let mut fx = Fx::new();
    let f = bridged_udp(P1, MacAddr::BROADCAST, ip(P2));
    for len in 0..14 {
        let (r, rec) = fx.send(P1, &f[..len]);
        assert_eq!(r, Err(DropReason::Malformed), "len {len}");
        assert!(rec.0.is_empty());
    }
}

#[test]
fn every_truncation_of_ipv4_and_arp_is_malformed() {
    let mut fx = Fx::new();
    let frames = [
        bridged_udp(P1, MacAddr::BROADCAST, ip(P2)),
        routed_udp(P1, ip(P5), 64, true, b"payload"),
        echo_request(P1, gw_ip(NET_A), 64, b"ping"),
        arp_request(P1, ip(P2)),
        arp_request(P1, gw_ip(NET_A)),
    ];
    for f in &frames {
        for len in 14..f.len() {
            let (r, rec) = fx.send(P1, &f[..len]);
            assert_eq!(r, Err(DropReason::Malformed), "len {len} of {f:02x?}");
            assert!(rec.0.is_empty());
        }
    }
}

#[test]
fn bad_ipv4_headers_are_malformed() {
    let mut fx = Fx::new();
    let good = bridged_udp(P1, MacAddr::BROADCAST, ip(P2));
    assert_eq!(fx.send(P1, &good).0, Ok(()));

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for ihl in [0u8, 1, 4] {
        let mut f = good.clone();
        f[14] = 0x40 | ihl;
        cases.push(("IHL < 5", f));
    }
    let mut f = good.clone();
    f[14] = 0x4f; // 60-byte header in a 33-byte packet
    cases.push(("IHL beyond frame", f));
    let mut f = good.clone();
    f[14] = 0x65;
    cases.push(("version 6", f));
    let mut f = good.clone();
    let too_long = (good.len() - 14 + 1) as u16;
    f[16..18].copy_from_slice(&too_long.to_be_bytes());
    cases.push(("total length beyond frame", f));
    let mut f = good.clone();
    f[16..18].copy_from_slice(&19u16.to_be_bytes());
    cases.push(("total length < header", f));
    let mut f = good.clone();
    f[16..18].copy_from_slice(&0xffffu16.to_be_bytes());
    cases.push(("total length 65535", f));
    // A 19-byte "IPv4 header".
    cases.push(("short header", good[..14 + 19].to_vec()));

    for (what, mut f) in cases {
        fix_ipv4_checksum(&mut f);
        let (r, rec) = fx.send(P1, &f);
        assert_eq!(r, Err(DropReason::Malformed), "{what}");
        assert!(rec.0.is_empty(), "{what}");
        // Sent to the gateway instead, the same.
        f[0..6].copy_from_slice(&gw_mac(NET_A).0);
        let (r, rec) = fx.send(P1, &f);
        assert_eq!(r, Err(DropReason::Malformed), "{what} to gateway");
        assert!(rec.0.is_empty(), "{what} to gateway");
    }
}

#[test]
fn ethernet_padding_after_ipv4_is_accepted() {
    let mut fx = Fx::new();
    let mut f = bridged_udp(P1, MacAddr::BROADCAST, ip(P2));
    f.resize(60, 0);
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2, P3]);
}

#[test]
fn bad_arp_headers_are_malformed() {
    let mut fx = Fx::new();
    let good = arp_request(P1, ip(P2));
    assert_eq!(good.len(), 42);
    let mut cases = Vec::new();
    for (at, value) in [
        (14usize, 0x01u8), // HTYPE 0x0101
        (15, 0x06),        // HTYPE 6 (IEEE 802)
        (16, 0x86),        // PTYPE 0x86dd
        (18, 8),           // HLEN
        (19, 16),          // PLEN
        (21, 3),           // OPER: RARP request
        (21, 0),           // OPER 0
    ] {
        let mut f = good.clone();
        f[at] = value;
        assert_ne!(f, good);
        cases.push(f);
    }
    for f in cases {
        let (r, rec) = fx.send(P1, &f);
        assert_eq!(r, Err(DropReason::Malformed), "{f:02x?}");
        assert!(rec.0.is_empty());
    }
}

#[test]
fn frames_from_unknown_ports_are_dropped() {
    let mut fx = Fx::new();
    let f = bridged_udp(P1, MacAddr::BROADCAST, ip(P2));
    let (r, rec) = fx.send(PortId(99), &f);
    assert!(r.is_err());
    assert!(rec.0.is_empty());
    let (r, _) = fx.send(PortId(99), &[]);
    assert!(r.is_err());
}

// ---------------------------------------------------------------------------
// Gateway: ARP and ICMP echo
// ---------------------------------------------------------------------------

#[test]
fn arp_request_for_gateway_is_answered_on_the_ingress_port_only() {
    let mut fx = Fx::new();
    for p in [P2, P5] {
        let net = network_of(p);
        let (r, rec) = fx.send(p, &arp_request(p, gw_ip(net)));
        assert_eq!(r, Ok(()));
        let f = rec.only(p);
        assert_eq!(eth_dst(f), mac(p));
        assert_eq!(eth_src(f), gw_mac(net));
        let parsed = SlicedPacket::from_ethernet(f).unwrap();
        let Some(NetSlice::Arp(arp)) = parsed.net else {
            panic!("not ARP")
        };
        assert_eq!(arp.operation(), ArpOperation::REPLY);
        assert_eq!(arp.hw_addr_type(), etherparse::ArpHardwareId::ETHERNET);
        assert_eq!(arp.proto_addr_type(), EtherType::IPV4);
        assert_eq!(arp.sender_hw_addr(), &gw_mac(net).0);
        assert_eq!(arp.sender_protocol_addr(), &gw_ip(net).octets());
        assert_eq!(arp.target_hw_addr(), &mac(p).0);
        assert_eq!(arp.target_protocol_addr(), &ip(p).octets());
    }
    // The requester was learned on the way.
    let (_, rec) = fx.send(P1, &bridged_udp(P1, mac(P2), ip(P2)));
    assert_eq!(rec.ports(), vec![P2]);
}

#[test]
fn unicast_arp_request_for_gateway_is_answered() {
    let mut fx = Fx::new();
    let f = arp_frame(
        mac(P1),
        gw_mac(NET_A),
        ArpOperation::REQUEST,
        mac(P1),
        ip(P1),
        gw_mac(NET_A),
        gw_ip(NET_A),
    );
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Ok(()));
    assert_eq!(eth_dst(rec.only(P1)), mac(P1));
}

#[test]
fn arp_for_another_networks_gateway_is_not_answered() {
    let mut fx = Fx::new();
    // 10.2.0.1 is not on network A's link: no proxy ARP, just bridging.
    let f = arp_request(P1, gw_ip(NET_B));
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2, P3]);
    assert!(rec.0.iter().all(|(_, out)| out == &f));
}

#[test]
fn other_traffic_to_the_gateway_mac_is_not_routable() {
    let mut fx = Fx::new();
    // An ARP reply to the gateway: the gateway never asks.
    let f = arp_frame(
        mac(P1),
        gw_mac(NET_A),
        ArpOperation::REPLY,
        mac(P1),
        ip(P1),
        gw_mac(NET_A),
        gw_ip(NET_A),
    );
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Err(DropReason::NotRoutable));
    assert!(rec.0.is_empty());
    // IPv6 and anything else to the gateway MAC.
    for et in [0x86ddu16, 0x88b5] {
        let (r, rec) = fx.send(P1, &raw_eth(mac(P1), gw_mac(NET_A), et, &[0; 40]));
        assert_eq!(r, Err(DropReason::NotRoutable));
        assert!(rec.0.is_empty());
    }
}

#[test]
fn echo_to_the_gateway_is_answered() {
    let mut fx = Fx::new();
    let payload: Vec<u8> = (0..56u8).collect();
    let req = echo_request(P2, gw_ip(NET_A), 17, &payload);
    let (r, rec) = fx.send(P2, &req);
    assert_eq!(r, Ok(()));
    let f = rec.only(P2);
    assert_eq!(eth_dst(f), mac(P2));
    assert_eq!(eth_src(f), gw_mac(NET_A));
    let m = checked_icmp(f);
    assert_eq!(Ipv4Addr::from(m.ip.source), gw_ip(NET_A));
    assert_eq!(Ipv4Addr::from(m.ip.destination), ip(P2));
    assert_eq!(m.ip.time_to_live, 64);
    assert_eq!((m.ty, m.code), (0, 0), "echo reply");
    assert_eq!(m.rest, [0xbe, 0xef, 0, 42], "identifier and sequence kept");
    assert_eq!(m.payload, payload);
}

#[test]
fn echo_reply_drops_ethernet_padding() {
    let mut fx = Fx::new();
    let mut req = echo_request(P1, gw_ip(NET_A), 64, b"ab");
    let ip_len = req.len() - 14;
    req.resize(60, 0xee);
    let (r, rec) = fx.send(P1, &req);
    assert_eq!(r, Ok(()));
    let f = rec.only(P1);
    assert_eq!(f.len(), 14 + ip_len);
    let m = checked_icmp(f);
    assert_eq!(m.payload, b"ab");
}

#[test]
fn echo_with_bad_icmp_checksum_is_not_answered() {
    let mut fx = Fx::new();
    let mut req = echo_request(P1, gw_ip(NET_A), 64, b"abcd");
    let last = req.len() - 1;
    req[last] ^= 0x55;
    let (r, rec) = fx.send(P1, &req);
    assert_eq!(r, Err(DropReason::NotRoutable));
    assert!(rec.0.is_empty());
}

#[test]
fn echo_to_another_reachable_gateway_is_answered_from_it() {
    let mut fx = Fx::new();
    let req = echo_request(P1, gw_ip(NET_B), 64, b"hi");
    let (r, rec) = fx.send(P1, &req);
    assert_eq!(r, Ok(()));
    let f = rec.only(P1);
    // Ethernet-wise from A's gateway (the only one on P1's link), IP-wise
    // from the address that was pinged.
    assert_eq!(eth_src(f), gw_mac(NET_A));
    assert_eq!(eth_dst(f), mac(P1));
    let m = checked_icmp(f);
    assert_eq!(Ipv4Addr::from(m.ip.source), gw_ip(NET_B));
    assert_eq!(m.ty, 0);
}

#[test]
fn echo_to_an_unreachable_gateway_is_denied() {
    let mut fx = Fx::new();
    let req = echo_request(P1, gw_ip(NET_C), 64, b"hi");
    let (r, rec) = fx.send(P1, &req);
    assert_eq!(r, Err(DropReason::RouteDenied));
    expect_icmp_error(&rec, P1, &req, 3, 13);
}

// ---------------------------------------------------------------------------
// Gateway: forwarding
// ---------------------------------------------------------------------------

/// Checks a routed copy of `sent` delivered to `to`.
fn check_routed(sent: &[u8], out: &[u8], to: PortId) {
    assert_eq!(eth_dst(out), mac(to), "dst MAC is the endpoint's");
    assert_eq!(
        eth_src(out),
        gw_mac(network_of(to)),
        "src MAC is the egress gateway's"
    );
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    let before = Ipv4Header::from_slice(&sent[14..]).unwrap().0;
    let after = checked_ipv4(out);
    assert_eq!(after.time_to_live, before.time_to_live - 1);
    assert_eq!(after.source, before.source);
    assert_eq!(after.destination, before.destination);
    assert_eq!(after.identification, before.identification);
    assert_eq!(after.total_len, before.total_len);
    assert_eq!(after.dont_fragment, before.dont_fragment);
    assert_eq!(after.protocol, before.protocol);
    let hl = before.header_len();
    assert_eq!(
        &out[14 + hl..],
        &sent[14 + hl..14 + usize::from(before.total_len)],
        "payload changed"
    );
}

#[test]
fn routed_packets_reach_the_right_port_rewritten() {
    let mut fx = Fx::new();
    let payload: Vec<u8> = (0..200).map(|i| (i * 7) as u8).collect();
    for (from, to) in [(P1, P5), (P3, P4), (P6, P2), (P4, P1)] {
        let sent = routed_udp(from, ip(to), 64, true, &payload);
        let (r, rec) = fx.send(from, &sent);
        assert_eq!(r, Ok(()), "{from:?} → {to:?}");
        let out = rec.only(to);
        check_routed(&sent, out, to);
        // The UDP checksum still verifies (the pseudo-header did not change).
        let p = SlicedPacket::from_ethernet(out).unwrap();
        let Some(TransportSlice::Udp(udp)) = p.transport else {
            panic!("not UDP")
        };
        let Some(NetSlice::Ipv4(ipv4)) = p.net else {
            panic!()
        };
        assert_eq!(
            udp.to_header()
                .calc_checksum_ipv4(&ipv4.header().to_header(), udp.payload())
                .unwrap(),
            udp.checksum()
        );
        assert_eq!(udp.payload(), &payload[..]);
    }
}

#[test]
fn routed_ttl_edge_values_keep_the_checksum_valid() {
    let mut fx = Fx::new();
    for ttl in [2u8, 3, 64, 128, 254, 255] {
        for df in [true, false] {
            let sent = routed_udp(P1, ip(P5), ttl, df, b"ttl");
            let (r, rec) = fx.send(P1, &sent);
            assert_eq!(r, Ok(()), "ttl {ttl}");
            check_routed(&sent, rec.only(P5), P5);
        }
    }
}

#[test]
fn routed_frames_lose_ethernet_padding() {
    let mut fx = Fx::new();
    let mut sent = routed_udp(P1, ip(P5), 64, true, b"xy");
    let real = sent.len();
    sent.resize(60, 0xcc);
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.only(P5).len(), real);
    check_routed(&sent, rec.only(P5), P5);
}

#[test]
fn routing_does_not_flood_or_learn_the_destination() {
    let mut fx = Fx::new();
    let (r, rec) = fx.send(P1, &routed_udp(P1, ip(P6), 64, true, b"x"));
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P6]);
    // Only the sender was learned, in its own network.
    let fdb = fx.sw.fdb(None, fx.t0);
    assert_eq!(fdb.len(), 1);
    assert_eq!(
        (fdb[0].0, fdb[0].1.mac, fdb[0].1.port),
        (NET_A, mac(P1), P1)
    );
}

#[test]
fn hairpin_routing_within_a_network() {
    let mut fx = Fx::new();
    // Sent to the gateway MAC but for a neighbour: routed back into A.
    let sent = routed_udp(P1, ip(P2), 64, true, b"hairpin");
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Ok(()));
    check_routed(&sent, rec.only(P2), P2);
}

#[test]
fn routing_to_a_denied_network_sends_admin_prohibited() {
    let mut fx = Fx::new();
    for (from, to) in [(P1, P7), (P5, P8), (P7, P1), (P8, P4)] {
        let sent = routed_udp(from, ip(to), 64, true, b"nope");
        let (r, rec) = fx.send(from, &sent);
        assert_eq!(r, Err(DropReason::RouteDenied), "{from:?} → {to:?}");
        expect_icmp_error(&rec, from, &sent, 3, 13);
    }
    assert_eq!(fx.icmp_errors_sent(), 4);
}

#[test]
fn routing_to_no_network_sends_net_unreachable() {
    let mut fx = Fx::new();
    for dst in [
        Ipv4Addr::new(192, 168, 5, 5),
        Ipv4Addr::new(10, 4, 0, 1),
        Ipv4Addr::new(8, 8, 8, 8),
        Ipv4Addr::new(10, 0, 255, 255),
    ] {
        let sent = routed_udp(P2, dst, 64, true, b"where");
        let (r, rec) = fx.send(P2, &sent);
        assert_eq!(r, Err(DropReason::NoRoute), "{dst}");
        let m = expect_icmp_error(&rec, P2, &sent, 3, 0);
        assert_eq!(m.rest, [0; 4]);
    }
}

#[test]
fn routing_to_an_unused_address_sends_host_unreachable() {
    let mut fx = Fx::new();
    for dst in [Ipv4Addr::new(10, 2, 0, 200), Ipv4Addr::new(10, 1, 0, 99)] {
        let sent = routed_udp(P1, dst, 64, true, b"anyone?");
        let (r, rec) = fx.send(P1, &sent);
        assert_eq!(r, Err(DropReason::HostUnreachable), "{dst}");
        expect_icmp_error(&rec, P1, &sent, 3, 1);
    }
}

#[test]
fn routing_to_the_own_subnet_broadcast_or_multicast_is_not_routable() {
    let mut fx = Fx::new();
    for dst in [
        Ipv4Addr::new(10, 1, 0, 255),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
    ] {
        let sent = routed_udp(P1, dst, 64, true, b"all");
        let (r, rec) = fx.send(P1, &sent);
        assert_eq!(r, Err(DropReason::NotRoutable), "{dst}");
        assert!(rec.0.is_empty(), "{dst}");
    }
}

#[test]
fn ttl_expiry_sends_time_exceeded() {
    let mut fx = Fx::new();
    for ttl in [0u8, 1] {
        let sent = routed_udp(P1, ip(P5), ttl, true, b"late");
        let (r, rec) = fx.send(P1, &sent);
        assert_eq!(r, Err(DropReason::TtlExpired), "ttl {ttl}");
        expect_icmp_error(&rec, P1, &sent, 11, 0);
    }
    // TTL 2 still goes through, arriving with 1.
    let sent = routed_udp(P1, ip(P5), 2, true, b"just");
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Ok(()));
    check_routed(&sent, rec.only(P5), P5);
}

#[test]
fn icmp_error_quotes_at_most_576_bytes() {
    let mut fx = Fx::new();
    let sent = routed_udp(P1, Ipv4Addr::new(192, 0, 2, 1), 64, true, &[0x5a; 1400]);
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Err(DropReason::NoRoute));
    let m = expect_icmp_error(&rec, P1, &sent, 3, 0);
    assert_eq!(usize::from(m.ip.total_len), 576);
}

/// A DF packet over the egress MTU: the error's type, code, next-hop MTU and
/// IP addressing.
#[test]
fn df_packet_over_the_mtu_sends_frag_needed() {
    let mut fx = Fx::new();
    let sent = routed_udp(P1, ip(P5), 64, true, &[0x11; 1200]);
    assert!(sent.len() - 14 > MTU_B as usize);
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Err(DropReason::FragmentationNeeded));
    let f = rec.only(P1);
    assert_eq!(eth_src(f), gw_mac(NET_A));
    let m = checked_icmp(f);
    assert_eq!((m.ty, m.code), (3, 4));
    assert_eq!(u16::from_be_bytes([m.rest[2], m.rest[3]]), MTU_B as u16);
    assert_eq!(u16::from_be_bytes([m.rest[0], m.rest[1]]), 0, "unused");
    assert_eq!(Ipv4Addr::from(m.ip.source), gw_ip(NET_A));
    assert_eq!(Ipv4Addr::from(m.ip.destination), ip(P1));
    // The quote names the flow: addresses, protocol, ports.
    let quoted = Ipv4Header::from_slice(&m.payload).unwrap().0;
    assert_eq!(quoted.source, ip(P1).octets());
    assert_eq!(quoted.destination, ip(P5).octets());
    assert_eq!(quoted.protocol, IpNumber::UDP);
    assert_eq!(&m.payload[20..28], &sent[34..42], "UDP header quoted");

    // Exactly the MTU fits, DF or not.
    let fits = routed_udp(P1, ip(P5), 64, true, &vec![0x22; MTU_B as usize - 28]);
    assert_eq!(fits.len() - 14, MTU_B as usize);
    let (r, rec) = fx.send(P1, &fits);
    assert_eq!(r, Ok(()));
    check_routed(&fits, rec.only(P5), P5);
}

/// Regression: the error used to be built from the already-rewritten frame
/// (Ethernet destination = the egress gateway's MAC, quoted TTL decremented).
#[test]
fn frag_needed_error_goes_to_the_sender_and_quotes_the_original() {
    let mut fx = Fx::new();
    let sent = routed_udp(P1, ip(P5), 64, true, &[0x11; 1200]);
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Err(DropReason::FragmentationNeeded));
    // Checks Ethernet source/destination and that the quote is the packet
    // as it arrived (TTL 64, original checksum).
    expect_icmp_error(&rec, P1, &sent, 3, 4);
}

/// Regression: `original.ttl += 1` on the received TTL overflowed (a panic
/// in debug builds) for TTL 255.
#[test]
fn frag_needed_with_ttl_255_does_not_panic() {
    let mut fx = Fx::new();
    let sent = routed_udp(P1, ip(P5), 255, true, &[0x11; 1200]);
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Err(DropReason::FragmentationNeeded));
    assert_eq!(rec.ports(), vec![P1]);
}

#[test]
fn non_df_packet_over_the_mtu_is_fragmented() {
    let mut fx = Fx::new();
    for len in [MTU_B as usize - 28 + 1, 1200, 2500, 2977, 9000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let sent = routed_udp(P1, ip(P5), 64, false, &payload);
        let original = Ipv4Header::from_slice(&sent[14..]).unwrap().0;
        assert!(!original.dont_fragment);
        let (r, rec) = fx.send(P1, &sent);
        assert_eq!(r, Ok(()), "len {len}");
        assert!(rec.0.len() >= 2, "len {len}: {} pieces", rec.0.len());

        let mut data = Vec::new();
        for (i, (port, f)) in rec.0.iter().enumerate() {
            assert_eq!(*port, P5);
            assert_eq!(eth_dst(f), mac(P5));
            assert_eq!(eth_src(f), gw_mac(NET_B));
            let h = checked_ipv4(f);
            assert!(usize::from(h.total_len) <= MTU_B as usize);
            assert_eq!(h.time_to_live, 63);
            assert_eq!(h.identification, original.identification);
            assert_eq!(h.source, original.source);
            assert_eq!(h.destination, original.destination);
            assert_eq!(h.protocol, IpNumber::UDP);
            assert!(!h.dont_fragment);
            let last = i + 1 == rec.0.len();
            assert_eq!(h.more_fragments, !last, "MF of piece {i}");
            let piece = &f[14 + h.header_len()..];
            if !last {
                assert_eq!(piece.len() % 8, 0);
            }
            assert_eq!(usize::from(h.fragment_offset.value()) * 8, data.len());
            data.extend_from_slice(piece);
        }
        assert_eq!(data, &sent[34..], "reassembled payload, len {len}");
    }
}

#[test]
fn fragmenting_a_fragment_keeps_offsets_and_more_fragments() {
    let mut fx = Fx::new();
    // A first fragment (MF set, offset 0) of a bigger datagram arrives from A
    // with 1480 bytes of data; B's MTU splits it further.
    let payload: Vec<u8> = (0..1472).map(|i| i as u8).collect();
    let mut sent = routed_udp(P1, ip(P5), 64, false, &payload);
    sent[20] |= 0x20; // MF
    fix_ipv4_checksum(&mut sent);
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Ok(()));
    assert!(rec.0.len() >= 2);
    let mut data = Vec::new();
    for (_, f) in &rec.0 {
        let h = checked_ipv4(f);
        assert!(
            h.more_fragments,
            "every piece of a non-last fragment has MF"
        );
        assert_eq!(usize::from(h.fragment_offset.value()) * 8, data.len());
        data.extend_from_slice(&f[34..]);
    }
    assert_eq!(data, &sent[34..]);
}

// ---------------------------------------------------------------------------
// Gateway: local delivery and ICMP error rules
// ---------------------------------------------------------------------------

#[test]
fn udp_and_tcp_to_the_gateway_send_port_unreachable() {
    let mut fx = Fx::new();
    let sent = routed_udp(P2, gw_ip(NET_A), 64, true, b"dns?");
    let (r, rec) = fx.send(P2, &sent);
    assert_eq!(r, Err(DropReason::NotRoutable));
    expect_icmp_error(&rec, P2, &sent, 3, 3);

    let tcp = ip_frame(
        mac(P2),
        gw_mac(NET_A),
        ip(P2),
        gw_ip(NET_A),
        IpNumber::TCP,
        &[0; 20],
    );
    let (r, rec) = fx.send(P2, &tcp);
    assert_eq!(r, Err(DropReason::NotRoutable));
    expect_icmp_error(&rec, P2, &tcp, 3, 3);

    // Another reachable gateway's address is local, too.
    let sent = routed_udp(P2, gw_ip(NET_B), 64, true, b"dns?");
    let (r, rec) = fx.send(P2, &sent);
    assert_eq!(r, Err(DropReason::NotRoutable));
    expect_icmp_error(&rec, P2, &sent, 3, 3);
}

#[test]
fn unknown_protocol_to_the_gateway_sends_protocol_unreachable() {
    let mut fx = Fx::new();
    let gre = ip_frame(
        mac(P1),
        gw_mac(NET_A),
        ip(P1),
        gw_ip(NET_A),
        IpNumber::GRE,
        &[0; 12],
    );
    let (r, rec) = fx.send(P1, &gre);
    assert_eq!(r, Err(DropReason::NotRoutable));
    expect_icmp_error(&rec, P1, &gre, 3, 2);
}

#[test]
fn no_icmp_error_about_an_icmp_error() {
    let mut fx = Fx::new();
    let quoted = &routed_udp(P5, ip(P1), 64, true, b"orig")[14..42];
    for ty in [3u8, 4, 5, 11, 12] {
        for dst in [
            Ipv4Addr::new(192, 168, 1, 1), // no route
            ip(P7),                        // denied
            Ipv4Addr::new(10, 2, 0, 77),   // no host
        ] {
            let f = icmp_raw(P1, dst, ty, 0, 64, quoted);
            let (r, rec) = fx.send(P1, &f);
            assert!(r.is_err(), "type {ty} to {dst}");
            assert!(rec.0.is_empty(), "ICMP error about ICMP type {ty} to {dst}");
        }
        // TTL running out, likewise.
        let f = icmp_raw(P1, ip(P5), ty, 0, 1, quoted);
        let (r, rec) = fx.send(P1, &f);
        assert_eq!(r, Err(DropReason::TtlExpired));
        assert!(rec.0.is_empty());
        // And an ICMP error sent to the gateway itself is silently dropped.
        let f = icmp_raw(P1, gw_ip(NET_A), ty, 0, 64, quoted);
        let (r, rec) = fx.send(P1, &f);
        assert!(r.is_err());
        assert!(rec.0.is_empty());
    }
    assert_eq!(fx.icmp_errors_sent(), 0);

    // Informational ICMP (echo) does get errors.
    let f = echo_request(P1, Ipv4Addr::new(192, 168, 1, 1), 64, b"ping");
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Err(DropReason::NoRoute));
    expect_icmp_error(&rec, P1, &f, 3, 0);
}

#[test]
fn no_icmp_error_about_later_fragments() {
    let mut fx = Fx::new();
    let mut f = routed_udp(P1, Ipv4Addr::new(192, 168, 1, 1), 64, false, b"tail");
    f[21] = 10; // offset 80 bytes
    fix_ipv4_checksum(&mut f);
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Err(DropReason::NoRoute));
    assert!(rec.0.is_empty());
    // A first fragment does get one.
    let mut f = routed_udp(P1, Ipv4Addr::new(192, 168, 1, 1), 64, false, b"head");
    f[20] |= 0x20;
    fix_ipv4_checksum(&mut f);
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Err(DropReason::NoRoute));
    expect_icmp_error(&rec, P1, &f, 3, 0);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut fx = Fx::new();
    let sent = routed_udp(P1, Ipv4Addr::new(192, 168, 7, 7), 64, true, b"flood");
    let mut errors = 0;
    for _ in 0..80 {
        let (r, rec) = fx.send_at(P1, &sent, 1);
        assert_eq!(r, Err(DropReason::NoRoute));
        assert!(rec.0.len() <= 1);
        errors += rec.0.len();
    }
    assert!(errors > 0, "some errors go out");
    assert!(errors <= 50, "{errors} errors at one instant");
    assert_eq!(errors, 50, "the burst is 50");
    assert_eq!(fx.icmp_errors_sent(), errors as u64);
    assert_eq!(fx.icmp_rate_limited(), 80 - errors as u64);
    assert!(fx.icmp_rate_limited() > 0);

    // The drop reason is the same when rate limited, and forwarding of good
    // packets is unaffected.
    let (r, rec) = fx.send_at(P1, &routed_udp(P1, ip(P5), 64, true, b"ok"), 1);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P5]);

    // A second later the bucket has refilled.
    let (_, rec) = fx.send_at(P1, &sent, 2);
    assert_eq!(rec.ports(), vec![P1]);
}

#[test]
fn bad_header_checksum_toward_the_gateway_is_malformed() {
    let mut fx = Fx::new();
    let frames = [
        echo_request(P1, gw_ip(NET_A), 64, b"ping"),
        routed_udp(P1, ip(P5), 64, true, b"data"),
        routed_udp(P1, Ipv4Addr::new(192, 168, 0, 1), 64, true, b"data"),
        routed_udp(P1, ip(P5), 1, true, b"data"),
    ];
    for good in frames {
        let mut bad = good.clone();
        bad[24] ^= 0x01;
        let (r, rec) = fx.send(P1, &bad);
        assert_eq!(r, Err(DropReason::Malformed));
        assert!(rec.0.is_empty());
    }
    assert_eq!(fx.icmp_errors_sent(), 0);
}

#[test]
fn bridged_ipv4_with_bad_header_checksum_is_still_bridged() {
    // The switch checks IPv4 checksums only where it acts as a router.
    let mut fx = Fx::new();
    let mut f = bridged_udp(P1, MacAddr::BROADCAST, ip(P2));
    f[24] ^= 0x01;
    let (r, rec) = fx.send(P1, &f);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2, P3]);
}

// ---------------------------------------------------------------------------
// Configuration changes
// ---------------------------------------------------------------------------

#[test]
fn set_route_false_closes_the_route_both_ways() {
    let mut fx = Fx::new();
    let ab = routed_udp(P1, ip(P5), 64, true, b"x");
    let ba = routed_udp(P5, ip(P1), 64, true, b"x");
    assert_eq!(fx.send(P1, &ab).0, Ok(()));
    assert_eq!(fx.send(P5, &ba).0, Ok(()));

    fx.sw.set_route(NET_B, NET_A, false).unwrap();
    let (r, rec) = fx.send(P1, &ab);
    assert_eq!(r, Err(DropReason::RouteDenied));
    expect_icmp_error(&rec, P1, &ab, 3, 13);
    let (r, rec) = fx.send(P5, &ba);
    assert_eq!(r, Err(DropReason::RouteDenied));
    expect_icmp_error(&rec, P5, &ba, 3, 13);

    // Opening twice, then closing once, closes it.
    fx.sw.set_route(NET_A, NET_B, true).unwrap();
    fx.sw.set_route(NET_A, NET_B, true).unwrap();
    assert_eq!(fx.send(P1, &ab).0, Ok(()));
    fx.sw.set_route(NET_A, NET_B, false).unwrap();
    assert_eq!(fx.send(P1, &ab).0, Err(DropReason::RouteDenied));

    // Opening A↔C does not open B↔C.
    fx.sw.set_route(NET_A, NET_C, true).unwrap();
    assert_eq!(
        fx.send(P1, &routed_udp(P1, ip(P8), 64, true, b"x")).0,
        Ok(())
    );
    assert_eq!(
        fx.send(P4, &routed_udp(P4, ip(P8), 64, true, b"x")).0,
        Err(DropReason::RouteDenied)
    );
}

#[test]
fn set_route_with_unknown_network_is_refused() {
    let mut fx = Fx::new();
    assert_eq!(
        fx.sw.set_route(NET_A, NetworkId(42), true),
        Err(ConfigError::UnknownNetwork(NetworkId(42)))
    );
    assert_eq!(
        fx.sw.set_route(NetworkId(42), NET_A, true),
        Err(ConfigError::UnknownNetwork(NetworkId(42)))
    );
    // Nothing half-applied: A still routes to B and not to C.
    assert_eq!(
        fx.send(P1, &routed_udp(P1, ip(P5), 64, true, b"x")).0,
        Ok(())
    );
}

#[test]
fn remove_port_stops_forwarding_and_forgets_its_macs() {
    let mut fx = Fx::new();
    // Everyone in B speaks, so P5 is known.
    for p in [P4, P5, P6] {
        fx.ok_at(p, &bridged_udp(p, MacAddr::BROADCAST, ip(P4)), 0);
    }
    let (_, rec) = fx.send(P4, &bridged_udp(P4, mac(P5), ip(P5)));
    assert_eq!(rec.ports(), vec![P5]);

    fx.sw.remove_port(P5).unwrap();
    assert!(fx
        .sw
        .fdb(Some(NET_B), fx.t0)
        .iter()
        .all(|(_, l)| l.port != P5 && l.mac != mac(P5)));
    // Unicast to its MAC now floods, but not to P5.
    let (r, rec) = fx.send(P4, &bridged_udp(P4, mac(P5), ip(P5)));
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P6]);
    // Broadcasts skip it.
    let (_, rec) = fx.send(P6, &bridged_udp(P6, MacAddr::BROADCAST, ip(P4)));
    assert_eq!(rec.ports(), vec![P4]);
    // Routing to its address: host unreachable.
    let sent = routed_udp(P1, ip(P5), 64, true, b"gone");
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Err(DropReason::HostUnreachable));
    expect_icmp_error(&rec, P1, &sent, 3, 1);
    // Frames claiming to come in on it are dropped.
    let (r, rec) = fx.send(P5, &bridged_udp(P5, MacAddr::BROADCAST, ip(P4)));
    assert!(r.is_err());
    assert!(rec.0.is_empty());
    // Removing it again is an error.
    assert_eq!(fx.sw.remove_port(P5), Err(ConfigError::UnknownPort(P5)));

    // Re-adding it brings it back.
    fx.sw.add_port(port_cfg(P5)).unwrap();
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Ok(()));
    check_routed(&sent, rec.only(P5), P5);
}

#[test]
fn remove_network_refuses_while_ports_remain() {
    let mut fx = Fx::new();
    assert_eq!(
        fx.sw.remove_network(NET_C),
        Err(ConfigError::NetworkBusy(NET_C))
    );
    fx.sw.remove_port(P7).unwrap();
    assert_eq!(
        fx.sw.remove_network(NET_C),
        Err(ConfigError::NetworkBusy(NET_C))
    );
    fx.sw.remove_port(P8).unwrap();
    assert_eq!(fx.sw.remove_network(NET_C), Ok(()));
    assert_eq!(
        fx.sw.remove_network(NET_C),
        Err(ConfigError::UnknownNetwork(NET_C))
    );
    // Its subnet is now nowhere.
    let sent = routed_udp(P1, Ipv4Addr::new(10, 3, 0, 17), 64, true, b"x");
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Err(DropReason::NoRoute));
    expect_icmp_error(&rec, P1, &sent, 3, 0);
    // Ports cannot be added to it.
    assert_eq!(
        fx.sw.add_port(port_cfg(P7)),
        Err(ConfigError::UnknownNetwork(NET_C))
    );
}

#[test]
fn removed_network_takes_its_routes_with_it() {
    let mut fx = Fx::new();
    for p in [P4, P5, P6] {
        fx.sw.remove_port(p).unwrap();
    }
    fx.sw.remove_network(NET_B).unwrap();
    // Re-created with the same id and subnet: no route until set again.
    fx.sw.add_network(net_cfg(NET_B, MTU_B)).unwrap();
    fx.sw.add_port(port_cfg(P5)).unwrap();
    let sent = routed_udp(P1, ip(P5), 64, true, b"x");
    assert_eq!(fx.send(P1, &sent).0, Err(DropReason::RouteDenied));
    fx.sw.set_route(NET_A, NET_B, true).unwrap();
    let (r, rec) = fx.send(P1, &sent);
    assert_eq!(r, Ok(()));
    check_routed(&sent, rec.only(P5), P5);
}

#[test]
fn overlapping_and_duplicate_networks_are_refused() {
    let mut fx = Fx::new();
    let cfg = |id: u32, a: [u8; 4], len: u8| NetworkConfig {
        id: NetworkId(id),
        subnet: Ipv4Net::new(Ipv4Addr::from(a), len).unwrap(),
        gateway_ip: Ipv4Addr::new(a[0], a[1], a[2], a[3] + 1),
        gateway_mac: MacAddr([2, 0xbb, 0, 0, 0, id as u8]),
        mtu: 1500,
    };
    for (a, len) in [
        ([10, 1, 0, 0], 24),   // same
        ([10, 0, 0, 0], 8),    // covers all three
        ([10, 1, 0, 0], 16),   // covers A and B
        ([10, 1, 0, 128], 25), // inside A
        ([10, 3, 0, 252], 30), // inside C
    ] {
        let c = cfg(10, a, len);
        assert_eq!(
            fx.sw.add_network(c.clone()),
            Err(ConfigError::Overlap(c.subnet))
        );
    }
    assert_eq!(
        fx.sw.add_network(cfg(1, [10, 9, 0, 0], 24)),
        Err(ConfigError::DuplicateNetwork(NET_A))
    );
    // Adjacent subnets are fine, and are routed to the right network.
    fx.sw.add_network(cfg(10, [10, 1, 1, 0], 24)).unwrap();
    fx.sw.add_network(cfg(11, [10, 0, 255, 0], 24)).unwrap();
    // Still no route from A to 10.1.1.0/24 (denied, not "no route").
    let sent = routed_udp(P1, Ipv4Addr::new(10, 1, 1, 5), 64, true, b"x");
    assert_eq!(fx.send(P1, &sent).0, Err(DropReason::RouteDenied));
    let sent = routed_udp(P1, Ipv4Addr::new(10, 0, 255, 5), 64, true, b"x");
    assert_eq!(fx.send(P1, &sent).0, Err(DropReason::RouteDenied));
    // The original networks still route as before.
    let sent = routed_udp(P1, ip(P5), 64, true, b"x");
    assert_eq!(fx.send(P1, &sent).0, Ok(()));
}

#[test]
fn duplicate_and_orphan_ports_are_refused() {
    let mut fx = Fx::new();
    assert_eq!(
        fx.sw.add_port(port_cfg(P1)),
        Err(ConfigError::DuplicatePort(P1))
    );
    let orphan = PortConfig {
        id: PortId(50),
        network: NetworkId(77),
        mac: MacAddr([2, 5, 5, 5, 5, 5]),
        ip: Ipv4Addr::new(10, 77, 0, 2),
    };
    assert_eq!(
        fx.sw.add_port(orphan),
        Err(ConfigError::UnknownNetwork(NetworkId(77)))
    );
    assert_eq!(
        fx.sw.remove_port(PortId(50)),
        Err(ConfigError::UnknownPort(PortId(50)))
    );
}

// ---------------------------------------------------------------------------
// Offload metadata (virtio-net header) through the core
// ---------------------------------------------------------------------------

const NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;

/// Partial-checksum metadata for the UDP or TCP header after a 20-byte IPv4
/// header.
fn partial_csum(proto: IpNumber) -> Offload {
    Offload {
        flags: NEEDS_CSUM,
        csum_start: 34,
        csum_offset: if proto == IpNumber::TCP { 16 } else { 6 },
        ..NO_OFFLOAD
    }
}

/// Replaces the transport checksum of `frame` (IHL 5) with the folded
/// pseudo-header sum, as a sender using checksum offload leaves it.
fn make_checksum_partial(frame: &mut [u8], offload: &Offload) {
    let ip_len = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let l4_len = (ip_len - 20) as u32;
    let mut sum: u32 = 0;
    for w in frame[26..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    sum += u32::from(frame[23]) + l4_len;
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let at = usize::from(offload.csum_start + offload.csum_offset);
    frame[at..at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
}

/// A TCP segment from `port` to `dst` via its gateway, DF set (as TSO
/// senders do).
fn routed_tcp(port: PortId, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac(port).0, gw_mac(network_of(port)).0)
        .ip(IpHeaders::Ipv4(
            ipv4_header(ip(port), dst, 64, true),
            Default::default(),
        ))
        .tcp(40000, 80, 1, 65535)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn tso(gso_size: u16) -> Offload {
    Offload {
        gso_type: GSO_TCPV4,
        gso_size,
        hdr_len: 54,
        ..partial_csum(IpNumber::TCP)
    }
}

#[test]
fn bridged_frames_keep_their_offload() {
    let mut fx = Fx::new();
    let off = partial_csum(IpNumber::UDP);
    let mut f = bridged_udp(P1, MacAddr::BROADCAST, ip(P2));
    make_checksum_partial(&mut f, &off);
    let (r, rec) = fx.send_full(P1, &f, &off, 0);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2, P3]);
    assert!(rec.1.iter().all(|o| *o == off));
    assert!(rec.0.iter().all(|(_, out)| out == &f), "left partial");

    // A TSO super-frame bigger than any MTU (whose segments fit network B's
    // MTU of 1000) is bridged whole, too.
    let off = tso(900);
    let mut f = udp_frame(mac(P4), mac(P5), ip(P4), ip(P5), 64, true, &[0; 8]);
    f.truncate(14);
    f.extend_from_slice(&routed_tcp(P4, ip(P5), &[7; 5000])[14..]);
    let (r, rec) = fx.send_full(P4, &f, &off, 0);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P5, P6]);
    assert!(rec.1.iter().all(|o| *o == off));
}

#[test]
fn bridged_frames_larger_than_the_mtu_are_dropped() {
    let mut fx = Fx::new();
    // Network A: MTU 1500. A 1500-byte IP packet is bridged …
    let fits = udp_frame(
        mac(P1),
        MacAddr::BROADCAST,
        ip(P1),
        ip(P2),
        64,
        false,
        &[1; 1472],
    );
    assert_eq!(fits.len(), 14 + 1500);
    let (r, rec) = fx.send(P1, &fits);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P2, P3]);
    // … one byte more is not, unicast or flooded, DF or not.
    let jumbo = udp_frame(mac(P1), mac(P2), ip(P1), ip(P2), 64, false, &[1; 8972]);
    let (r, rec) = fx.send(P1, &jumbo);
    assert_eq!(r, Err(DropReason::ExceedsMtu));
    assert!(rec.0.is_empty());
    let over = udp_frame(
        mac(P1),
        MacAddr::BROADCAST,
        ip(P1),
        ip(P2),
        64,
        true,
        &[1; 1473],
    );
    let (r, rec) = fx.send(P1, &over);
    assert_eq!(r, Err(DropReason::ExceedsMtu));
    assert!(rec.0.is_empty());
    // Non-IP frames are judged by their payload too.
    let (r, _) = fx.send(P1, &raw_eth(mac(P1), mac(P2), 0x88b5, &[0; 1501]));
    assert_eq!(r, Err(DropReason::ExceedsMtu));
    let (r, _) = fx.send(P1, &raw_eth(mac(P1), mac(P2), 0x88b5, &[0; 1500]));
    assert_eq!(r, Ok(()));

    // A TSO super-frame is judged by its segments: network B's MTU is
    // 1000, so 960 bytes of payload per segment (+ 40 of headers) fit …
    let mut f = udp_frame(mac(P4), mac(P5), ip(P4), ip(P5), 64, true, &[0; 8]);
    f.truncate(14);
    f.extend_from_slice(&routed_tcp(P4, ip(P5), &[7; 5000])[14..]);
    let (r, rec) = fx.send_full(P4, &f, &tso(960), 0);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P5, P6]);
    // … 961 do not.
    let (r, rec) = fx.send_full(P4, &f, &tso(961), 0);
    assert_eq!(r, Err(DropReason::ExceedsMtu));
    assert!(rec.0.is_empty());
}

#[test]
fn storm_control_limits_each_port_and_class_on_its_own() {
    use weft_switch::storm::{Rate, StormLimits};
    let mut fx = Fx::new();
    fx.sw.set_storm_limits(StormLimits {
        broadcast: Rate {
            per_sec: 10,
            burst: 5,
        },
        multicast: Rate {
            per_sec: 10,
            burst: 3,
        },
        unknown_unicast: Rate {
            per_sec: 10,
            burst: 4,
        },
    });
    // An ARP storm from P1: the burst passes (answered or flooded), the
    // rest is dropped and counted as a broadcast storm.
    let arp = arp_request(P1, ip(P2));
    let results: Vec<_> = (0..20).map(|_| fx.send(P1, &arp).0).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
    assert!(results[5..]
        .iter()
        .all(|r| *r == Err(DropReason::StormBroadcast)));
    // Another port of the same network is not affected …
    for _ in 0..5 {
        let (r, rec) = fx.send(P2, &arp_request(P2, ip(P3)));
        assert_eq!(r, Ok(()));
        assert!(!rec.0.is_empty(), "answered (suppressed) or flooded");
    }
    // … nor are P1's multicasts, unicasts to known MACs, or routed traffic.
    let mcast = MacAddr([0x01, 0x00, 0x5e, 0, 0, 0xfb]);
    let mut f = bridged_udp(P1, mcast, Ipv4Addr::new(224, 0, 0, 251));
    fix_ipv4_checksum(&mut f);
    let results: Vec<_> = (0..6).map(|_| fx.send(P1, &f).0).collect();
    assert_eq!(
        results,
        [
            Ok(()),
            Ok(()),
            Ok(()),
            Err(DropReason::StormMulticast),
            Err(DropReason::StormMulticast),
            Err(DropReason::StormMulticast)
        ]
    );
    // P3 has been seen (it sent nothing yet: learn it now).
    assert_eq!(fx.send(P3, &arp_request(P3, ip(P1))).0, Ok(()));
    for _ in 0..50 {
        let (r, rec) = fx.send(P1, &bridged_udp(P1, mac(P3), ip(P3)));
        assert_eq!(r, Ok(()));
        assert_eq!(rec.ports(), vec![P3]);
    }
    for _ in 0..50 {
        assert_eq!(
            fx.send(P1, &echo_request(P1, gw_ip(NET_A), 64, b"x")).0,
            Ok(())
        );
    }
    // Unicast to a MAC nobody has: flooded within the limit, then dropped.
    let stranger = MacAddr([0x02, 0x99, 0x99, 0x99, 0x99, 0x99]);
    let f = bridged_udp(P1, stranger, ip(P2));
    let results: Vec<_> = (0..6).map(|_| fx.send(P1, &f).0).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    assert_eq!(results[5], Err(DropReason::StormUnknownUnicast));
    // The bucket refills: 10 per second.
    let (r, _) = fx.send_at(P1, &arp, 1);
    assert_eq!(r, Ok(()));
}

#[test]
fn frames_the_gateway_makes_carry_no_offload() {
    let mut fx = Fx::new();
    let off = partial_csum(IpNumber::UDP);
    let (r, rec) = fx.send_full(P1, &arp_request(P1, gw_ip(NET_A)), &off, 0);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.1, vec![NO_OFFLOAD]);
    let (r, rec) = fx.send_full(P1, &echo_request(P1, gw_ip(NET_A), 64, b"x"), &off, 0);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.1, vec![NO_OFFLOAD]);
    let sent = routed_udp(P1, Ipv4Addr::new(192, 0, 2, 9), 64, true, b"x");
    let (r, rec) = fx.send_full(P1, &sent, &off, 0);
    assert_eq!(r, Err(DropReason::NoRoute));
    assert_eq!(rec.1, vec![NO_OFFLOAD]);
}

#[test]
fn arp_reply_drops_ethernet_padding() {
    let mut fx = Fx::new();
    let mut req = arp_request(P1, gw_ip(NET_A));
    req.resize(60, 0xee);
    let (r, rec) = fx.send(P1, &req);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.only(P1).len(), 42);
}

#[test]
fn routed_frame_that_fits_keeps_its_offload() {
    let mut fx = Fx::new();
    let off = partial_csum(IpNumber::UDP);
    let mut sent = routed_udp(P1, ip(P5), 64, true, &[3; 300]);
    make_checksum_partial(&mut sent, &off);
    let (r, rec) = fx.send_full(P1, &sent, &off, 0);
    assert_eq!(r, Ok(()));
    check_routed(&sent, rec.only(P5), P5);
    assert_eq!(rec.1, vec![off]);
}

#[test]
fn routed_tso_frame_whose_segments_fit_is_forwarded_whole() {
    let mut fx = Fx::new();
    // B's MTU is 1000: segments of 900 bytes + 40 of headers fit.
    let off = tso(900);
    let mut sent = routed_tcp(P1, ip(P5), &[9; 6000]);
    make_checksum_partial(&mut sent, &off);
    let (r, rec) = fx.send_full(P1, &sent, &off, 0);
    assert_eq!(r, Ok(()));
    check_routed(&sent, rec.only(P5), P5);
    assert_eq!(rec.1, vec![off]);
    // The boundary: 960 + 40 = 1000.
    let (r, rec) = fx.send_full(P1, &sent, &tso(960), 0);
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P5]);
}

#[test]
fn routed_tso_frame_whose_segments_do_not_fit_gets_frag_needed() {
    let mut fx = Fx::new();
    let mut sent = routed_tcp(P1, ip(P5), &[9; 6000]);
    make_checksum_partial(&mut sent, &tso(961));
    let (r, rec) = fx.send_full(P1, &sent, &tso(961), 0);
    assert_eq!(r, Err(DropReason::FragmentationNeeded));
    let m = expect_icmp_error(&rec, P1, &sent, 3, 4);
    assert_eq!(u16::from_be_bytes([m.rest[2], m.rest[3]]), MTU_B as u16);
    // Even with DF clear: a super-frame cannot be fragmented.
    let mut no_df = sent.clone();
    no_df[20] &= !0x40;
    fix_ipv4_checksum(&mut no_df);
    let (r, rec) = fx.send_full(P1, &no_df, &tso(1448), 0);
    assert_eq!(r, Err(DropReason::FragmentationNeeded));
    expect_icmp_error(&rec, P1, &no_df, 3, 4);
}

#[test]
fn routed_tso_frame_with_a_cut_tcp_header_is_malformed() {
    let mut fx = Fx::new();
    // IPv4 claiming TCP with only 10 bytes after the IP header.
    let f = ip_frame(
        mac(P1),
        gw_mac(NET_A),
        ip(P1),
        ip(P5),
        IpNumber::TCP,
        &[0; 10],
    );
    let (r, rec) = fx.send_full(P1, &f, &tso(500), 0);
    assert_eq!(r, Err(DropReason::Malformed));
    assert!(rec.0.is_empty());
}

#[test]
fn partial_checksum_is_completed_before_fragmenting() {
    let mut fx = Fx::new();
    let off = partial_csum(IpNumber::UDP);
    let payload: Vec<u8> = (0..2500).map(|i| (i * 13 % 256) as u8).collect();
    let good = routed_udp(P1, ip(P5), 64, false, &payload);
    let good_csum = [good[40], good[41]];
    let mut sent = good.clone();
    make_checksum_partial(&mut sent, &off);
    assert_ne!([sent[40], sent[41]], good_csum);
    let (r, rec) = fx.send_full(P1, &sent, &off, 0);
    assert_eq!(r, Ok(()));
    assert!(rec.0.len() >= 3);
    assert!(
        rec.1.iter().all(|o| *o == NO_OFFLOAD),
        "fragments carry none"
    );
    let mut data = Vec::new();
    for (port, f) in &rec.0 {
        assert_eq!(*port, P5);
        let h = checked_ipv4(f);
        assert_eq!(usize::from(h.fragment_offset.value()) * 8, data.len());
        data.extend_from_slice(&f[34..]);
    }
    // The reassembled UDP datagram carries the full, correct checksum.
    assert_eq!(&data[..6], &good[34..40]);
    assert_eq!(&data[6..8], &good_csum, "completed checksum");
    assert_eq!(&data[8..], &payload[..]);
}

#[test]
fn partial_checksum_out_of_the_frame_is_malformed_when_fragmenting() {
    let mut fx = Fx::new();
    let sent = routed_udp(P1, ip(P5), 64, false, &[1; 1500]);
    for (start, offset) in [(60000u16, 6u16), (34, 1507), (1550, 0)] {
        let off = Offload {
            flags: NEEDS_CSUM,
            csum_start: start,
            csum_offset: offset,
            ..NO_OFFLOAD
        };
        let (r, rec) = fx.send_full(P1, &sent, &off, 0);
        assert_eq!(r, Err(DropReason::Malformed), "{start}+{offset}");
        assert!(rec.0.is_empty());
    }
}

#[test]
fn arp_for_a_known_endpoint_is_answered_by_the_switch() {
    let mut fx = Fx::new();
    let before = fx
        .counters
        .arp_suppressed
        .load(std::sync::atomic::Ordering::Relaxed);
    let (r, rec) = fx.send(P1, &arp_request(P1, ip(P2)));
    assert_eq!(r, Ok(()));
    assert_eq!(rec.ports(), vec![P1], "answered to the asker, not flooded");
    let reply = &rec.0[0].1;
    let a = &reply[14..];
    assert_eq!(u16::from_be_bytes([a[6], a[7]]), 2, "an ARP reply");
    assert_eq!(&a[8..14], &mac(P2).0, "with the owner's MAC");
    assert_eq!(&a[14..18], &ip(P2).octets(), "for the owner's address");
    assert_eq!(
        fx.counters
            .arp_suppressed
            .load(std::sync::atomic::Ordering::Relaxed),
        before + 1
    );
}

// ---------------------------------------------------------------------------
// DNS to the gateway: punted to the sink
// ---------------------------------------------------------------------------

/// A UDP DNS query from `port` to its gateway.
fn dns_query(port: PortId, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let net = network_of(port);
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac(port).0, gw_mac(net).0)
        .ip(IpHeaders::Ipv4(
            ipv4_header(ip(port), gw_ip(net), 64, false),
            Default::default(),
        ))
        .udp(40001, dst_port)
        .write(&mut out, payload)
        .unwrap();
    out
}

#[test]
fn dns_to_the_gateway_is_punted_with_its_message() {
    let mut fx = Fx::new();
    fx.sw.set_dns(true);
    let rec = fx.ok_at(P4, &dns_query(P4, 53, b"query"), 0);
    assert!(rec.0.is_empty(), "nothing is sent: {:?}", rec.0);
    assert_eq!(
        rec.2,
        vec![Punted {
            port: P4,
            network: NET_B,
            client_mac: mac(P4),
            client: SocketAddrV4::new(ip(P4), 40001),
            gateway_mac: gw_mac(NET_B),
            gateway: gw_ip(NET_B),
            message: b"query".to_vec(),
            tcp: false,
        }]
    );
}

#[test]
fn dns_refused_by_the_sink_is_dropped_with_its_reason() {
    let mut fx = Fx::new();
    fx.sw.set_dns(true);
    let mut rec = Rec {
        3: Some(DropReason::TxQueueFull),
        ..Rec::default()
    };
    let mut buf = dns_query(P1, 53, b"query");
    let r = fx.sw.handle(P1, &mut buf, &NO_OFFLOAD, fx.t0, &mut rec);
    assert_eq!(r, Err(DropReason::TxQueueFull));
    assert_eq!(rec.2.len(), 1);
    assert!(rec.0.is_empty());
}

#[test]
fn with_dns_on_other_udp_ports_of_the_gateway_are_dropped_silently() {
    let mut fx = Fx::new();
    fx.sw.set_dns(true);
    let (r, rec) = fx.send(P1, &dns_query(P1, 54, b"x"));
    assert_eq!(r, Err(DropReason::NotRoutable));
    assert!(rec.0.is_empty() && rec.2.is_empty());
}

#[test]
fn without_dns_a_query_gets_port_unreachable() {
    let mut fx = Fx::new();
    let query = dns_query(P1, 53, b"query");
    let (r, rec) = fx.send(P1, &query);
    assert_eq!(r, Err(DropReason::NotRoutable));
    assert!(rec.2.is_empty());
    expect_icmp_error(&rec, P1, &query, 3, 3);
}

// ---------------------------------------------------------------------------
// The uplink: a port of its own kind, in no network
// ---------------------------------------------------------------------------

const UPLINK: PortId = PortId(100);

fn uplink_cfg(port: PortId) -> UplinkConfig {
    UplinkConfig {
        port,
        ip: Ipv4Addr::new(192, 0, 2, 10),
        prefix_len: 24,
        mac: MacAddr([0x02, 0, 0, 0x64, 0, 1]),
        gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
        mtu: 1500,
    }
}

#[test]
fn the_uplink_answers_arp_for_its_address() {
    let mut fx = Fx::new();
    fx.sw.set_uplink(uplink_cfg(UPLINK)).unwrap();
    let asker = MacAddr([0x02, 0, 0, 0x65, 0, 1]);
    let request = arp_frame(
        asker,
        MacAddr::BROADCAST,
        ArpOperation::REQUEST,
        asker,
        Ipv4Addr::new(192, 0, 2, 1),
        MacAddr::ZERO,
        Ipv4Addr::new(192, 0, 2, 10),
    );
    let rec = fx.ok_at(UPLINK, &request, 0);
    assert_eq!(rec.ports(), vec![UPLINK]);
    assert_eq!(eth_src(&rec.0[0].1), uplink_cfg(UPLINK).mac);
}

#[test]
fn the_uplink_is_not_an_endpoint_port() {
    let mut fx = Fx::new();
    assert_eq!(
        fx.sw.set_uplink(uplink_cfg(P1)),
        Err(ConfigError::DuplicatePort(P1))
    );
    fx.sw.set_uplink(uplink_cfg(UPLINK)).unwrap();
    assert_eq!(
        fx.sw.remove_port(UPLINK),
        Err(ConfigError::UnknownPort(UPLINK))
    );
    let mut cfg = port_cfg(P1);
    cfg.id = UPLINK;
    assert_eq!(fx.sw.add_port(cfg), Err(ConfigError::DuplicatePort(UPLINK)));
    // Replaced on another port: the old one is gone.
    fx.sw.set_uplink(uplink_cfg(PortId(101))).unwrap();
    assert_eq!(fx.sw.uplink_port(), Some(PortId(101)));
    let (r, _) = fx.send(
        UPLINK,
        &routed_udp(P1, Ipv4Addr::new(8, 8, 8, 8), 64, false, b"x"),
    );
    assert_eq!(r, Err(DropReason::NotRoutable));
    assert_eq!(fx.sw.remove_uplink().map(|u| u.port), Some(PortId(101)));
    let (r, _) = fx.send(
        PortId(101),
        &routed_udp(P1, Ipv4Addr::new(8, 8, 8, 8), 64, false, b"x"),
    );
    assert_eq!(r, Err(DropReason::NotRoutable));
}

/// The first packet to the outside while the uplink's next hop is not
/// resolved waits for the ARP reply and then leaves, translated, to the
/// MAC the reply gave; a neighbour that never answers costs the kept
/// frames after a while, counted.
#[test]
fn the_first_packet_out_waits_for_the_next_hops_mac() {
    let mut fx = Fx::new();
    let up = uplink_cfg(UPLINK);
    fx.sw.set_uplink(up).unwrap();
    let gw = up.gateway.unwrap();
    let (r, rec) = fx.send(
        P1,
        &routed_udp(P1, Ipv4Addr::new(8, 8, 8, 8), 64, false, b"first"),
    );
    assert_eq!(r, Ok(()), "kept, not dropped");
    assert_eq!(rec.ports(), vec![UPLINK], "only the ARP request left");
    assert_eq!(
        weft_packet::read_u16(&rec.0[0].1, weft_packet::ethernet::ETHERTYPE),
        weft_packet::ETHERTYPE_ARP
    );
    assert_eq!(fx.counters.neighbor_queued.load(Ordering::Relaxed), 1);
    let gw_mac = MacAddr([0x02, 0, 0, 0x65, 0, 9]);
    let reply = arp_frame(
        gw_mac,
        up.mac,
        ArpOperation::REPLY,
        gw_mac,
        gw,
        up.mac,
        up.ip,
    );
    let rec = fx.ok_at(UPLINK, &reply, 1);
    assert_eq!(rec.ports(), vec![UPLINK], "the kept datagram left");
    let f = &rec.0[0].1;
    assert_eq!(eth_dst(f), gw_mac);
    assert_eq!(eth_src(f), up.mac);
    assert_eq!(
        weft_packet::read_ipv4(f, weft_packet::ETH_HEADER_LEN + 12),
        up.ip,
        "masqueraded"
    );
    assert!(f.ends_with(b"first"));
    // An on-link neighbour that never answers: its frame is dropped later.
    let (r, _) = fx.send_at(
        P1,
        &routed_udp(P1, Ipv4Addr::new(192, 0, 2, 77), 64, false, b"lost"),
        2,
    );
    assert_eq!(r, Ok(()));
    fx.sw.expire(fx.at(3));
    assert_eq!(
        fx.counters.neighbor_queue_timeout.load(Ordering::Relaxed),
        0
    );
    fx.sw.expire(fx.at(6));
    assert_eq!(
        fx.counters.neighbor_queue_timeout.load(Ordering::Relaxed),
        1
    );
}
