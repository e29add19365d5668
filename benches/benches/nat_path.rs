//! Micro-benchmarks of the NAT per-packet path: conntrack lookup, rewrite
//! and incremental checksum update of an established flow (both
//! directions), flow creation (lookup miss, port allocation, insert), and
//! the same through the whole switch core (endpoint → uplink and back).
//!
//! Translation rewrites packets in place, so every iteration starts from a
//! fresh copy of the packet: each group has a `baseline_copy` of the same
//! size, measured in the same run, to compare with.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft_nat::conntrack::{Conntrack, NatSpec, Timestamp};
use weft_nat::translate::{inspect, translate, TranslateOptions};
use weft_packet::checksum::{checksum, checksum_with, pseudo_header_sum_v4};
use weft_packet::MacAddr;
use weft_switch::counters::{DropReason, SwitchCounters};
use weft_switch::frame::{Offload, NO_OFFLOAD};
use weft_switch::switch::{NetworkConfig, PortConfig, Punt, Switch, Transmit, UplinkConfig};
use weft_switch::{NetworkId, PortId};

const ENDPOINT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const UPLINK_GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// In the default SNAT range, so port preservation keeps it.
const SPORT: u16 = 40000;
const ETH: usize = 14;
/// Flows created per timed round of the new-flow benchmark.
const NEW_FLOWS_PER_ROUND: u64 = 4096;

const ENDPOINT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x64]);
const GATEWAY_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x03, 0xe9]);
const UPLINK_MAC: MacAddr = MacAddr([0x02, 0x77, 0, 0, 0, 0x07]);
const UPLINK_GW_MAC: MacAddr = MacAddr([0x02, 0x77, 0, 0, 0, 0x01]);
const UPLINK_PORT: PortId = PortId(900);

#[derive(Clone, Copy)]
enum L4 {
    Udp,
    /// TCP with the ACK flag.
    Tcp,
}

/// An IPv4 packet of `len` bytes with valid IPv4 and UDP/TCP checksums.
fn ipv4_packet(l4: L4, src: SocketAddrV4, dst: SocketAddrV4, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let t = 20;
    p[t..t + 2].copy_from_slice(&src.port().to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&dst.port().to_be_bytes());
    for (i, b) in p[t + 20..].iter_mut().enumerate() {
        *b = (i * 31 + 7) as u8;
    }
    let (proto, csum_at) = match l4 {
        L4::Udp => {
            p[t + 4..t + 6].copy_from_slice(&((len - 20) as u16).to_be_bytes());
            (17u8, t + 6)
        }
        L4::Tcp => {
            p[t + 4..t + 8].copy_from_slice(&1u32.to_be_bytes());
            p[t + 8..t + 12].copy_from_slice(&1u32.to_be_bytes());
            p[t + 12] = 5 << 4;
            p[t + 13] = 0x10; // ACK
            p[t + 14..t + 16].copy_from_slice(&65535u16.to_be_bytes());
            (6u8, t + 16)
        }
    };
    p[9] = proto;
    let ip_sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let pseudo = pseudo_header_sum_v4(*src.ip(), *dst.ip(), proto, (len - 20) as u16);
    let l4_sum = checksum_with(pseudo, &p[t..]);
    p[csum_at..csum_at + 2].copy_from_slice(&l4_sum.to_be_bytes());
    p
}

/// `packet` behind an Ethernet header.
fn ether(src: MacAddr, dst: MacAddr, packet: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ETH];
    dst.write(&mut f, 0);
    src.write(&mut f, 6);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(packet);
    f
}

fn masquerade() -> NatSpec {
    NatSpec {
        snat: Some(UPLINK_IP),
        dnat: None,
        ..NatSpec::default()
    }
}

/// One packet through the NAT the way the switch does it: inspect, track
/// (creating the flow with `create` if none matches), translate.
#[inline]
fn nat_one(ct: &mut Conntrack, packet: &mut [u8], create: Option<NatSpec>, now: Timestamp) -> bool {
    let Ok(info) = inspect(packet) else {
        return false;
    };
    let hit = match ct.track(&info.key, info.len, info.tcp_flags, now) {
        Some(hit) => hit,
        None => match create {
            Some(spec) => {
                match ct.track_or_create(&info.key, spec, info.len, info.tcp_flags, now) {
                    Ok(hit) => hit,
                    Err(_) => return false,
                }
            }
            None => return false,
        },
    };
    translate(packet, &hit.rewrite, TranslateOptions::default()).is_ok()
}

fn bench_nat(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat");
    let now = Timestamp::from_secs(1);
    let inside = SocketAddrV4::new(ENDPOINT, SPORT);
    for (l4, frame_len, name) in [(L4::Udp, 64usize, "udp64"), (L4::Tcp, 1514, "tcp1514")] {
        let len = frame_len - ETH;
        g.throughput(Throughput::Elements(1));
        let server = SocketAddrV4::new(SERVER, if matches!(l4, L4::Udp) { 53 } else { 443 });
        let egress = ipv4_packet(l4, inside, server, len);
        let reply = ipv4_packet(l4, server, SocketAddrV4::new(UPLINK_IP, SPORT), len);
        let mut buf = vec![0u8; len];

        g.bench_function(format!("baseline_copy/{name}"), |b| {
            b.iter(|| {
                buf.copy_from_slice(black_box(&egress));
                black_box(&buf);
            })
        });

        let mut ct = Conntrack::default();
        buf.copy_from_slice(&egress);
        assert!(nat_one(&mut ct, &mut buf, Some(masquerade()), now));
        assert_eq!(&buf[12..16], &UPLINK_IP.octets(), "masqueraded");
        buf.copy_from_slice(&reply);
        assert!(nat_one(&mut ct, &mut buf, None, now));
        assert_eq!(&buf[16..20], &ENDPOINT.octets(), "translated back");
        assert_eq!(ct.len(), 1);

        g.bench_function(format!("established_egress/{name}"), |b| {
            b.iter(|| {
                buf.copy_from_slice(black_box(&egress));
                black_box(nat_one(&mut ct, &mut buf, Some(masquerade()), now))
            })
        });
        g.bench_function(format!("established_reply/{name}"), |b| {
            b.iter(|| {
                buf.copy_from_slice(black_box(&reply));
                black_box(nat_one(&mut ct, &mut buf, None, now))
            })
        });
        assert_eq!(ct.len(), 1, "no flow created by the loop");
    }

    // A new flow per packet: lookup miss, SNAT port allocation (the
    // preserved port is taken, so a probe), insert under both tuples. The
    // table is flushed between rounds, outside the timing.
    let len = 64 - ETH;
    let fresh: Vec<Vec<u8>> = (0..NEW_FLOWS_PER_ROUND)
        .map(|i| {
            let src = SocketAddrV4::new(
                Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8),
                SPORT + (i % 7) as u16,
            );
            ipv4_packet(L4::Udp, src, SocketAddrV4::new(SERVER, 53), len)
        })
        .collect();
    let mut buf = vec![0u8; len];
    let mut ct = Conntrack::default();
    g.bench_function("new_flow/udp64", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(NEW_FLOWS_PER_ROUND);
                let start = Instant::now();
                for p in &fresh[..n as usize] {
                    buf.copy_from_slice(p);
                    assert!(nat_one(
                        &mut ct,
                        black_box(&mut buf),
                        Some(masquerade()),
                        now
                    ));
                }
                total += start.elapsed();
                left -= n;
                ct.flush();
            }
            total
        })
    });
    g.bench_function("new_flow_baseline_copy/udp64", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                buf.copy_from_slice(&fresh[(i % NEW_FLOWS_PER_ROUND) as usize]);
                black_box(&buf);
            }
            start.elapsed()
        })
    });
    g.finish();
}

/// Counts frames instead of sending them.
struct CountingTx(u64);

impl Transmit for CountingTx {
    fn transmit(&mut self, _port: PortId, frame: &[u8], _offload: &Offload) {
        self.0 += frame.len() as u64;
    }

    fn punt(&mut self, punt: Punt<'_>) -> Result<(), DropReason> {
        self.0 += punt.message.len() as u64;
        Ok(())
    }
}

/// One network with one endpoint, and an uplink whose gateway's MAC is
/// known.
fn switch_with_uplink() -> Switch {
    let mut sw = Switch::new(Arc::new(SwitchCounters::default()));
    sw.add_network(NetworkConfig {
        id: NetworkId(1),
        subnet: "10.1.0.0/24".parse().unwrap(),
        gateway_ip: Ipv4Addr::new(10, 1, 0, 1),
        gateway_mac: GATEWAY_MAC,
        mtu: 1500,
    })
    .unwrap();
    sw.add_port(PortConfig {
        id: PortId(100),
        network: NetworkId(1),
        mac: ENDPOINT_MAC,
        ip: ENDPOINT,
    })
    .unwrap();
    sw.set_uplink(UplinkConfig {
        port: UPLINK_PORT,
        ip: UPLINK_IP,
        prefix_len: 24,
        mac: UPLINK_MAC,
        gateway: Some(UPLINK_GW),
        mtu: 1500,
    })
    .unwrap();
    // The uplink gateway announces itself (ARP reply to weft).
    let mut arp = vec![0u8; 60];
    UPLINK_MAC.write(&mut arp, 0);
    UPLINK_GW_MAC.write(&mut arp, 6);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let a = &mut arp[ETH..];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&2u16.to_be_bytes());
    UPLINK_GW_MAC.write(a, 8);
    a[14..18].copy_from_slice(&UPLINK_GW.octets());
    UPLINK_MAC.write(a, 18);
    a[24..28].copy_from_slice(&UPLINK_IP.octets());
    let mut tx = CountingTx(0);
    sw.handle(UPLINK_PORT, &mut arp, &NO_OFFLOAD, Instant::now(), &mut tx)
        .unwrap();
    sw
}

fn bench_switch_nat(c: &mut Criterion) {
    let mut g = c.benchmark_group("switch_nat");
    let now = Instant::now();
    let inside = SocketAddrV4::new(ENDPOINT, SPORT);
    for (l4, len, name) in [(L4::Udp, 64usize, "udp64"), (L4::Tcp, 1514, "tcp1514")] {
        g.throughput(Throughput::Elements(1));
        let server = SocketAddrV4::new(SERVER, if matches!(l4, L4::Udp) { 53 } else { 443 });
        let egress = ether(
            ENDPOINT_MAC,
            GATEWAY_MAC,
            &ipv4_packet(l4, inside, server, len - ETH),
        );
        let reply = ether(
            UPLINK_GW_MAC,
            UPLINK_MAC,
            &ipv4_packet(l4, server, SocketAddrV4::new(UPLINK_IP, SPORT), len - ETH),
        );
        let mut frame = vec![0u8; len];

        g.bench_function(format!("baseline_copy/{name}"), |b| {
            b.iter(|| {
                frame.copy_from_slice(black_box(&egress));
                black_box(&frame);
            })
        });

        let mut sw = switch_with_uplink();
        let mut tx = CountingTx(0);
        frame.copy_from_slice(&egress);
        sw.handle(PortId(100), &mut frame, &NO_OFFLOAD, now, &mut tx)
            .expect("egress forwarded");
        assert_eq!(tx.0, len as u64, "egress transmitted");
        frame.copy_from_slice(&reply);
        sw.handle(UPLINK_PORT, &mut frame, &NO_OFFLOAD, now, &mut tx)
            .expect("reply forwarded");
        assert_eq!(tx.0, 2 * len as u64, "reply transmitted");

        g.bench_function(format!("established_egress/{name}"), |b| {
            b.iter(|| {
                frame.copy_from_slice(black_box(&egress));
                sw.handle(PortId(100), &mut frame, &NO_OFFLOAD, now, &mut tx)
            })
        });
        g.bench_function(format!("established_reply/{name}"), |b| {
            b.iter(|| {
                frame.copy_from_slice(black_box(&reply));
                sw.handle(UPLINK_PORT, &mut frame, &NO_OFFLOAD, now, &mut tx)
            })
        });
        black_box(tx.0);
    }
    g.finish();
}

criterion_group!(benches, bench_nat, bench_switch_nat);
criterion_main!(benches);
