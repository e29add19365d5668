//! Micro-benchmarks of the per-packet path: MAC table lookups, IPv4 header
//! validation, and whole frames through the forwarding core (bridged,
//! flooded and routed), each measured against a baseline in the same run.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft_packet::MacAddr;
use weft_switch::counters::{DropReason, SwitchCounters};
use weft_switch::frame::{Offload, NO_OFFLOAD};
use weft_switch::gateway::parse_ipv4;
use weft_switch::mac_table::MacTable;
use weft_switch::switch::{NetworkConfig, PortConfig, Punt, Switch, Transmit};
use weft_switch::{NetworkId, PortId};

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

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
}

fn ip(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, net, 0, host)
}

/// Two networks of `ports_per_net` ports each, routed to each other.
fn topology(ports_per_net: u32) -> Switch {
    let mut sw = Switch::new(Arc::new(SwitchCounters::default()));
    for n in 1..=2u8 {
        sw.add_network(NetworkConfig {
            id: NetworkId(u32::from(n)),
            subnet: format!("10.{n}.0.0/24").parse().unwrap(),
            gateway_ip: ip(n, 1),
            gateway_mac: mac(1000 + u32::from(n)),
            mtu: 1500,
        })
        .unwrap();
        for p in 0..ports_per_net {
            let id = u32::from(n) * 100 + p;
            sw.add_port(PortConfig {
                id: PortId(id),
                network: NetworkId(u32::from(n)),
                mac: mac(id),
                ip: ip(n, 2 + p as u8),
            })
            .unwrap();
        }
    }
    sw.set_route(NetworkId(1), NetworkId(2), true).unwrap();
    sw
}

/// An Ethernet/IPv4/UDP frame of `len` bytes.
fn udp_frame(src: MacAddr, dst: MacAddr, sip: Ipv4Addr, dip: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    dst.write(&mut f, 0);
    src.write(&mut f, 6);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&sip.octets());
    f[30..34].copy_from_slice(&dip.octets());
    let sum = weft_packet::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f
}

/// Checks that a benchmarked frame takes the path it is meant to measure
/// rather than being dropped early.
fn sanity(sw: &mut Switch, frame: &mut [u8], tx: &mut CountingTx) {
    let before = tx.0;
    sw.handle(PortId(100), frame, &NO_OFFLOAD, Instant::now(), tx)
        .expect("benchmark frame was dropped");
    assert!(tx.0 > before, "benchmark frame was not forwarded");
}

fn bench_mac_table(c: &mut Criterion) {
    let mut g = c.benchmark_group("mac_table");
    g.throughput(Throughput::Elements(1));
    let now = Instant::now();
    for size in [16u32, 1024, 16 * 1024] {
        let mut t = MacTable::with_capacity(size as usize);
        for i in 0..size {
            t.learn(mac(i), PortId(i), now);
        }
        let mut i = 0u32;
        g.bench_function(format!("lookup_hit/{size}"), |b| {
            b.iter(|| {
                i = (i + 7) % size;
                black_box(t.lookup(black_box(mac(i))))
            })
        });
        g.bench_function(format!("learn_refresh/{size}"), |b| {
            b.iter(|| {
                i = (i + 7) % size;
                black_box(t.learn(black_box(mac(i)), PortId(i), now))
            })
        });
    }
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    let f = udp_frame(mac(1), mac(2), ip(1, 2), ip(1, 3), 1514);
    g.bench_function("ipv4_header", |b| {
        b.iter(|| black_box(parse_ipv4(black_box(&f))))
    });
    g.finish();
}

fn bench_switch_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("switch_path");
    let now = Instant::now();
    for len in [64usize, 1514] {
        g.throughput(Throughput::Bytes(len as u64));

        // Baseline: copying the frame, the least any forwarder does.
        let src = udp_frame(mac(100), mac(101), ip(1, 2), ip(1, 3), len);
        let mut dst = vec![0u8; len];
        g.bench_function(format!("baseline_copy/{len}"), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
            })
        });

        // Known unicast within a network.
        let mut sw = topology(8);
        let mut tx = CountingTx(0);
        let mut warm = udp_frame(mac(101), mac(100), ip(1, 3), ip(1, 2), len);
        sw.handle(PortId(101), &mut warm, &NO_OFFLOAD, now, &mut tx)
            .unwrap();
        let mut frame = src.clone();
        sanity(&mut sw, &mut frame.clone(), &mut tx);
        g.bench_function(format!("bridge_unicast/{len}"), |b| {
            b.iter(|| {
                sw.handle(
                    PortId(100),
                    black_box(&mut frame),
                    &NO_OFFLOAD,
                    now,
                    &mut tx,
                )
            })
        });

        // Broadcast flooded to 7 other ports.
        let mut frame = udp_frame(mac(100), MacAddr::BROADCAST, ip(1, 2), ip(1, 255), len);
        sanity(&mut sw, &mut frame.clone(), &mut tx);
        g.bench_function(format!("flood_8_ports/{len}"), |b| {
            b.iter(|| {
                sw.handle(
                    PortId(100),
                    black_box(&mut frame),
                    &NO_OFFLOAD,
                    now,
                    &mut tx,
                )
            })
        });

        // Routed between networks through the gateway (TTL, checksum, MACs).
        // Routing rewrites the frame, so each iteration starts from a fresh
        // copy: compare with baseline_copy.
        let routed = udp_frame(mac(100), mac(1001), ip(1, 2), ip(2, 2), len);
        let mut frame = routed.clone();
        sanity(&mut sw, &mut frame.clone(), &mut tx);
        g.bench_function(format!("route_between_networks/{len}"), |b| {
            b.iter(|| {
                frame.copy_from_slice(&routed);
                sw.handle(
                    PortId(100),
                    black_box(&mut frame),
                    &NO_OFFLOAD,
                    now,
                    &mut tx,
                )
            })
        });
        black_box(tx.0);
    }
    g.finish();
}

/// RFC 1071's textbook loop, one 16-bit word per addition: the baseline
/// for weft's 64-bit-word checksum.
fn checksum_by_16bit_words(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u32::from(*last) << 8;
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn bench_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [64usize, 1500, 65536] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        assert_eq!(
            checksum_by_16bit_words(&data),
            weft_packet::checksum::checksum(&data)
        );
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("16bit_words/{len}"), |b| {
            b.iter(|| checksum_by_16bit_words(black_box(&data)))
        });
        g.bench_function(format!("weft_64bit_words/{len}"), |b| {
            b.iter(|| weft_packet::checksum::checksum(black_box(&data)))
        });
        let mut dst = vec![0u8; len];
        g.bench_function(format!("copy_then_sum/{len}"), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&data));
                weft_packet::checksum::sum(0, &dst)
            })
        });
        g.bench_function(format!("copy_and_sum_fused/{len}"), |b| {
            b.iter(|| weft_packet::checksum::copy_and_sum(0, &mut dst, black_box(&data)))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_mac_table,
    bench_parse,
    bench_switch_path,
    bench_checksum
);
criterion_main!(benches);
