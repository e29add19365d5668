//! Property tests of the forwarding core against hostile input: arbitrary
//! bytes, and valid frames with random bytes flipped, cut or extended, fed to
//! `Switch::handle` from a configured port.
//!
//! For every input: no panic; every transmitted frame is at least an Ethernet
//! header long; it goes to a port of the ingress network, or, if routed, of a
//! network `set_route` opened to the ingress one; bridged frames are never
//! sent back out of the ingress port and are passed on unchanged; what the
//! gateways send or route is well-formed IPv4 (or an ARP reply).
//!
//! Networks: A = 10.1.0.0/24 (ports 1–3), B = 10.2.0.0/24 (ports 4–6, MTU
//! 1000), C = 10.3.0.0/24 (ports 7–8). Routing is open between A and B only.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etherparse::{ArpHardwareId, PacketBuilder};
use etherparse::{ArpOperation, ArpPacket, EtherType, IpHeaders, IpNumber, Ipv4Header};
use ipnet::Ipv4Net;
use proptest::collection::vec;
use proptest::prelude::*;
use weft_packet::MacAddr;
use weft_switch::counters::{DropReason, SwitchCounters};
use weft_switch::frame::{Offload, NO_OFFLOAD};
use weft_switch::switch::{NetworkConfig, PortConfig, Punt, Switch, Transmit};
use weft_switch::{NetworkId, PortId};

const NETS: [NetworkId; 3] = [NetworkId(1), NetworkId(2), NetworkId(3)];
const PORTS: [u32; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

#[derive(Default)]
struct Rec(Vec<(PortId, Vec<u8>)>);

impl Transmit for Rec {
    fn transmit(&mut self, port: PortId, frame: &[u8], _offload: &Offload) {
        self.0.push((port, frame.to_vec()));
    }

    fn punt(&mut self, _punt: Punt<'_>) -> Result<(), DropReason> {
        Ok(())
    }
}

fn network_of(port: PortId) -> NetworkId {
    match port.0 {
        1..=3 => NETS[0],
        4..=6 => NETS[1],
        _ => NETS[2],
    }
}

fn gw_mac(net: NetworkId) -> MacAddr {
    MacAddr([0x02, 0xaa, 0, 0, 0, net.0 as u8])
}

fn gw_ip(net: NetworkId) -> Ipv4Addr {
    Ipv4Addr::new(10, net.0 as u8, 0, 1)
}

fn mac(port: PortId) -> MacAddr {
    MacAddr([0x02, 0, 0, network_of(port).0 as u8, 0, port.0 as u8])
}

fn ip(port: PortId) -> Ipv4Addr {
    Ipv4Addr::new(10, network_of(port).0 as u8, 0, 10 + port.0 as u8)
}

fn routes_between(a: NetworkId, b: NetworkId) -> bool {
    a == b || (a != NETS[2] && b != NETS[2])
}

fn switch() -> Switch {
    let mut sw = Switch::new(Arc::new(SwitchCounters::default()));
    for net in NETS {
        sw.add_network(NetworkConfig {
            id: net,
            subnet: Ipv4Net::new(Ipv4Addr::new(10, net.0 as u8, 0, 0), 24).unwrap(),
            gateway_ip: gw_ip(net),
            gateway_mac: gw_mac(net),
            mtu: if net == NETS[1] { 1000 } else { 1500 },
        })
        .unwrap();
    }
    for p in PORTS.map(PortId) {
        sw.add_port(PortConfig {
            id: p,
            network: network_of(p),
            mac: mac(p),
            ip: ip(p),
        })
        .unwrap();
    }
    sw.set_route(NETS[0], NETS[1], true).unwrap();
    sw
}

fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for w in data.chunks(2) {
        acc += u32::from(w[0]) << 8 | w.get(1).copied().map(u32::from).unwrap_or(0);
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The gateway MAC, if `m` is one of them.
fn gateway_net(m: MacAddr) -> Option<NetworkId> {
    NETS.into_iter().find(|&n| gw_mac(n) == m)
}

/// Checks everything that came out of one `handle` call.
fn check_output(ingress: PortId, input: &[u8], result: Result<(), DropReason>, rec: &Rec) {
    let in_net = network_of(ingress);
    let src_of = |f: &[u8]| MacAddr(f[6..12].try_into().unwrap());
    let dst_of = |f: &[u8]| MacAddr(f[0..6].try_into().unwrap());
    if result.is_err() {
        // A drop produces at most one ICMP error, back to the sender.
        assert!(rec.0.len() <= 1, "{result:?} with {} frames", rec.0.len());
        if let Some((p, f)) = rec.0.first() {
            assert_eq!(*p, ingress);
            assert!(f.len() >= 14 + 20 + 8, "short ICMP error");
            assert_eq!(f[14 + 9], 1, "a drop's only output is ICMP");
        }
    }
    for (out, f) in &rec.0 {
        assert!(f.len() >= 14, "{}-byte frame sent", f.len());
        let out_net = network_of(*out);
        assert!(PORTS.contains(&out.0), "unknown port {out:?}");
        assert!(
            routes_between(in_net, out_net),
            "frame from {ingress:?} ({in_net:?}) leaked to {out:?} ({out_net:?})"
        );
        let src = src_of(f);
        if src == mac(ingress) {
            // Bridged: never back out of the ingress port, never altered,
            // never out of the network.
            assert_ne!(*out, ingress, "bridged back to the ingress port");
            assert_eq!(out_net, in_net, "bridged across networks");
            assert_eq!(&f[..], input, "bridged frame altered");
            continue;
        }
        // ARP suppression: the switch answers for a known endpoint of the
        // same network, back to the asker only.
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        if ethertype == 0x0806 && PORTS.iter().any(|&p| mac(PortId(p)) == src) {
            let owner = PORTS
                .iter()
                .copied()
                .find(|&p| mac(PortId(p)) == src)
                .unwrap();
            assert_eq!(
                network_of(PortId(owner)),
                in_net,
                "answered for another network"
            );
            assert_eq!(*out, ingress, "suppressed ARP replies go back only");
            assert_eq!(f.len(), 42);
            assert_eq!(&f[20..22], &[0, 2], "ARP reply");
            continue;
        }
        // Anything else comes from the gateway of the egress port's network.
        let Some(gw_net) = gateway_net(src) else {
            panic!("frame to {out:?} from unexpected MAC {src}")
        };
        assert_eq!(gw_net, out_net, "gateway MAC of another network");
        assert_eq!(dst_of(f), mac(*out), "gateway frame not to the port's MAC");
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        match ethertype {
            0x0806 => {
                assert_eq!(*out, ingress, "ARP replies go back only");
                assert_eq!(f.len(), 42);
                assert_eq!(&f[20..22], &[0, 2], "ARP reply");
            }
            0x0800 => {
                assert!(f.len() >= 34);
                let hl = usize::from(f[14] & 0x0f) * 4;
                assert!(hl >= 20 && 14 + hl <= f.len());
                assert_eq!(ones_complement_sum(&f[14..14 + hl]), 0, "IPv4 checksum");
                let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
                assert_eq!(total, f.len() - 14, "IPv4 total length");
                let from_gateway = NETS.iter().any(|&n| f[26..30] == gw_ip(n).octets());
                if from_gateway {
                    assert_eq!(*out, ingress, "gateway-made IPv4 goes back only");
                    assert_eq!(f[23], 1, "gateway makes only ICMP");
                    assert_eq!(ones_complement_sum(&f[14 + hl..]), 0, "ICMP checksum");
                }
            }
            other => panic!("gateway sent ethertype {other:#06x}"),
        }
    }
}

fn run(sw: &mut Switch, ingress: PortId, frame: &[u8], offload: &Offload, now: Instant) {
    let mut buf = frame.to_vec();
    let mut rec = Rec::default();
    let result = sw.handle(ingress, &mut buf, offload, now, &mut rec);
    check_output(ingress, frame, result, &rec);
}

// ---------------------------------------------------------------------------
// Valid frames to mutate
// ---------------------------------------------------------------------------

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, df: bool) -> IpHeaders {
    let mut h = Ipv4Header::new(0, ttl, IpNumber::UDP, src.octets(), dst.octets()).unwrap();
    h.dont_fragment = df;
    IpHeaders::Ipv4(h, Default::default())
}

fn arp(p: PortId, eth_dst: MacAddr, op: ArpOperation, tpa: Ipv4Addr) -> Vec<u8> {
    let a = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &mac(p).0,
        &ip(p).octets(),
        &[0; 6],
        &tpa.octets(),
    )
    .unwrap();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac(p).0, eth_dst.0)
        .arp(a)
        .write(&mut out)
        .unwrap();
    out
}

fn udp(p: PortId, eth_dst: MacAddr, dst: Ipv4Addr, ttl: u8, df: bool, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac(p).0, eth_dst.0)
        .ip(ipv4(ip(p), dst, ttl, df))
        .udp(1000, 2000)
        .write(&mut out, &payload)
        .unwrap();
    out
}

fn icmp(p: PortId, dst: Ipv4Addr, ty: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let b =
        PacketBuilder::ethernet2(mac(p).0, gw_mac(network_of(p)).0).ip(ipv4(ip(p), dst, 64, false));
    if ty == 8 {
        b.icmpv4_echo_request(1, 2)
            .write(&mut out, &vec![0x61; len])
            .unwrap();
    } else {
        b.icmpv4_raw(ty, 0, [0; 4])
            .write(&mut out, &vec![0x45; len])
            .unwrap();
    }
    out
}

fn tcp(p: PortId, dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac(p).0, gw_mac(network_of(p)).0)
        .ip(ipv4(ip(p), dst, 64, true))
        .tcp(5, 6, 7, 8)
        .write(&mut out, &vec![0x74; len])
        .unwrap();
    out
}

/// The `kind`-th valid frame a port can send.
fn base_frame(kind: usize, p: PortId) -> Vec<u8> {
    let net = network_of(p);
    let gw = gw_mac(net);
    let peer = PortId(if p.0 % 3 == 1 { p.0 + 1 } else { p.0 - 1 });
    let peer = if network_of(peer) == net { peer } else { p };
    match kind % 16 {
        0 => arp(p, MacAddr::BROADCAST, ArpOperation::REQUEST, gw_ip(net)),
        1 => arp(p, MacAddr::BROADCAST, ArpOperation::REQUEST, ip(peer)),
        2 => arp(p, mac(peer), ArpOperation::REPLY, ip(peer)),
        3 => udp(p, gw, ip(PortId(5)), 64, true, 100),
        4 => udp(p, gw, ip(PortId(2)), 1, true, 100),
        5 => udp(p, gw, ip(PortId(8)), 64, true, 50),
        6 => udp(p, gw, Ipv4Addr::new(10, 2, 0, 200), 64, true, 20),
        7 => udp(p, gw, Ipv4Addr::new(192, 168, 0, 1), 64, false, 20),
        8 => udp(p, gw, ip(PortId(5)), 64, false, 1800),
        9 => udp(p, gw, ip(PortId(4)), 255, true, 1400),
        10 => udp(p, mac(peer), ip(peer), 64, true, 30),
        11 => udp(p, MacAddr::BROADCAST, Ipv4Addr::BROADCAST, 1, true, 10),
        12 => icmp(p, gw_ip(net), 8, 56),
        13 => icmp(p, Ipv4Addr::new(172, 16, 0, 1), 3, 28),
        14 => icmp(p, gw_ip(NETS[1]), 8, 8),
        _ => tcp(p, gw_ip(net), 20),
    }
}

/// Recomputes the IPv4 header checksum if the frame still looks like IPv4.
fn refresh_ipv4_checksum(f: &mut [u8]) {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return;
    }
    let hl = usize::from(f[14] & 0x0f) * 4;
    if hl < 20 || 14 + hl > f.len() {
        return;
    }
    f[24] = 0;
    f[25] = 0;
    let sum = ones_complement_sum(&f[14..14 + hl]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
}

#[derive(Debug, Clone)]
struct Mutation {
    kind: usize,
    port: usize,
    flips: Vec<(usize, u8)>,
    /// Cut to this many bytes (if shorter than the frame).
    cut: Option<usize>,
    /// Extra bytes appended (Ethernet padding, trailing garbage).
    extend: Vec<u8>,
    /// Recompute the IPv4 header checksum after flipping, so the mutation
    /// gets past the gateway's checksum check.
    fix_checksum: bool,
    /// Keep the source MAC the port's, to get past port security.
    keep_src: bool,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        0..16usize,
        0..PORTS.len(),
        vec((any::<usize>(), 1..=255u8), 0..8),
        prop::option::weighted(0.2, 0..2000usize),
        vec(any::<u8>(), 0..4),
        any::<bool>(),
        prop::bool::weighted(0.9),
    )
        .prop_map(
            |(kind, port, flips, cut, extend, fix_checksum, keep_src)| Mutation {
                kind,
                port,
                flips,
                cut,
                extend,
                fix_checksum,
                keep_src,
            },
        )
}

fn apply(m: &Mutation) -> (PortId, Vec<u8>) {
    let p = PortId(PORTS[m.port]);
    let mut f = base_frame(m.kind, p);
    for &(at, x) in &m.flips {
        let i = at % f.len();
        f[i] ^= x;
    }
    if let Some(cut) = m.cut {
        f.truncate(cut);
    }
    f.extend_from_slice(&m.extend);
    if m.keep_src && f.len() >= 12 {
        f[6..12].copy_from_slice(&mac(p).0);
    }
    if m.fix_checksum {
        refresh_ipv4_checksum(&mut f);
    }
    (p, f)
}

fn offload() -> impl Strategy<Value = Offload> {
    prop_oneof![
        4 => Just(NO_OFFLOAD),
        1 => (any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>(), any::<u16>(), any::<u16>())
            .prop_map(|(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)| Offload {
                flags,
                gso_type,
                hdr_len,
                gso_size,
                csum_start,
                csum_offset,
                num_buffers: 0,
            }),
        1 => (0..2000u16, prop::sample::select(vec![6u16, 16]), 0..3000u16, any::<bool>())
            .prop_map(|(csum_start, csum_offset, gso_size, gso)| Offload {
                flags: 1,
                gso_type: if gso { 1 } else { 0 },
                hdr_len: 54,
                gso_size,
                csum_start,
                csum_offset,
                num_buffers: 0,
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Arbitrary bytes from any port, with the port's own source MAC most
    /// of the time (else nearly everything stops at the first check) and an
    /// ethertype drawn among the interesting ones half of the time.
    #[test]
    fn arbitrary_bytes_never_panic(
        port in 0..PORTS.len(),
        mut bytes in vec(any::<u8>(), 0..2000),
        keep_src in prop::bool::weighted(0.8),
        ethertype in prop::option::of(prop::sample::select(
            vec![0x0800u16, 0x0806, 0x8100, 0x88a8, 0x86dd],
        )),
        to_gateway in any::<bool>(),
        off in offload(),
    ) {
        let p = PortId(PORTS[port]);
        if keep_src && bytes.len() >= 12 {
            bytes[6..12].copy_from_slice(&mac(p).0);
        }
        if to_gateway && bytes.len() >= 6 {
            bytes[0..6].copy_from_slice(&gw_mac(network_of(p)).0);
        }
        if let (Some(et), true) = (ethertype, bytes.len() >= 14) {
            bytes[12..14].copy_from_slice(&et.to_be_bytes());
        }
        let mut sw = switch();
        run(&mut sw, p, &bytes, &off, Instant::now());
    }

    /// Valid ARP, UDP, TCP and ICMP frames with bytes flipped, cut or
    /// extended.
    #[test]
    fn mutated_frames_never_panic(m in mutation(), off in offload()) {
        let (p, f) = apply(&m);
        let mut sw = switch();
        run(&mut sw, p, &f, &off, Instant::now());
    }

    /// A sequence of mutated frames into one switch, so that learning,
    /// ageing and the ICMP rate limit carry state from frame to frame.
    #[test]
    fn mutated_sequences_never_panic(
        steps in vec((mutation(), 0..3u64), 1..40),
        aging in 1..5u64,
    ) {
        let mut sw = switch();
        sw.set_aging(Duration::from_secs(aging));
        let mut now = Instant::now();
        for (m, dt) in &steps {
            now += Duration::from_millis(dt * 700);
            sw.expire(now);
            let (p, f) = apply(m);
            run(&mut sw, p, &f, &NO_OFFLOAD, now);
            for (_, l) in sw.fdb(None, now) {
                prop_assert!(PORTS.contains(&l.port.0));
                prop_assert_eq!(l.mac, mac(l.port), "only ports' own MACs are learned");
            }
        }
    }
}

/// The unmutated base frames all get through the checks this file makes.
#[test]
fn base_frames_pass_the_checks() {
    for kind in 0..16 {
        for p in PORTS.map(PortId) {
            let mut sw = switch();
            let f = base_frame(kind, p);
            run(&mut sw, p, &f, &NO_OFFLOAD, Instant::now());
        }
    }
}

/// The mutation strategy reaches deep into the core, not just the first
/// checks: over a fixed sample, every interesting outcome occurs.
#[test]
fn mutations_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::HashMap;

    let mut runner = TestRunner::deterministic();
    let strategy = mutation();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..20_000 {
        let m = strategy.new_tree(&mut runner).unwrap().current();
        let (p, f) = apply(&m);
        let mut sw = switch();
        let mut buf = f.clone();
        let mut rec = Rec::default();
        let r = sw.handle(p, &mut buf, &NO_OFFLOAD, Instant::now(), &mut rec);
        check_output(p, &f, r, &rec);
        let routed = rec
            .0
            .iter()
            .any(|(out, g)| network_of(*out) != network_of(p) && g.len() >= 14);
        let key = match r {
            Ok(()) if routed => "routed".to_string(),
            Ok(()) => "ok".to_string(),
            Err(e) => format!("{e:?}"),
        };
        *seen.entry(key).or_default() += 1;
    }
    for want in [
        "routed",
        "ok",
        "Malformed",
        "SpoofedSourceMac",
        "SpoofedSourceIp",
        "UnsupportedEthertype",
        "NotRoutable",
        "NoRoute",
        "RouteDenied",
        "HostUnreachable",
        "TtlExpired",
        "FragmentationNeeded",
    ] {
        assert!(seen.contains_key(want), "never reached {want}: {seen:?}");
    }
}
