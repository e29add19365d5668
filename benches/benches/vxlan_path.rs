//! Micro-benchmarks of the overlay path: VXLAN decapsulation and header
//! emission (RFC 7348), cutting a TCP super-frame into tunnel-sized
//! segments (with every checksum, or with them left partial for a peer
//! with remote checksum offload), and merging the segments back, each
//! against a plain copy of the same bytes measured in the same run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft_os::tap::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};
use weft_switch::frame::Offload;
use weft_switch::offload::{segment, segment_partial, Coalescer, PartialCsum, Push};
use weft_vtep::header::{VxlanHeader, HEADER_LEN};
use weft_vtep::{decapsulate, Vni};

const MSS: usize = 1448;

/// An Ethernet/IPv4/TCP frame with `payload` bytes, checksums complete.
fn tcp_frame(payload: usize, seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + payload];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (40 + payload) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[20] = 0x40; // DF
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    let c = weft_packet::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[42..46].copy_from_slice(&1u32.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x10; // ACK
    f[48..50].copy_from_slice(&512u16.to_be_bytes());
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    let tcp_len = (20 + payload) as u16;
    let pseudo = weft_packet::checksum::pseudo_header_sum_v4(
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        6,
        tcp_len,
    );
    let c = weft_packet::checksum::checksum_with(pseudo, &f[34..]);
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

fn bench_vxlan(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan");
    let vni = Vni::new(42).unwrap();
    let frame = tcp_frame(MSS, 1);
    let mut datagram = vec![0u8; HEADER_LEN + frame.len()];
    VxlanHeader::emit(&mut datagram[..], vni).unwrap();
    datagram[HEADER_LEN..].copy_from_slice(&frame);
    g.throughput(Throughput::Elements(1));
    g.bench_function("decapsulate", |b| {
        b.iter(|| decapsulate(black_box(&datagram)).map(|(v, f)| (v, f.len())))
    });
    let mut header = [0u8; HEADER_LEN];
    g.bench_function("emit_header", |b| {
        b.iter(|| VxlanHeader::emit(black_box(&mut header[..]), vni).is_ok())
    });
    g.finish();
}

fn bench_offload(c: &mut Criterion) {
    let mut g = c.benchmark_group("offload");
    let payload = 44 * MSS; // a 64 KiB TSO burst
    let mut super_frame = tcp_frame(payload, 1);
    let gso = Offload {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 54,
        gso_size: MSS as u16,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    // The checksum field of a GSO frame holds the pseudo-header sum only.
    super_frame[50..52].copy_from_slice(&[0, 0]);
    g.throughput(Throughput::Bytes(payload as u64));

    let mut out = vec![0u8; 256 * 1024];
    g.bench_function("baseline_copy_64k", |b| {
        b.iter(|| out[..super_frame.len()].copy_from_slice(black_box(&super_frame)))
    });
    g.bench_function("segment_64k_for_vxlan", |b| {
        b.iter(|| segment(black_box(&super_frame), &gso, HEADER_LEN, &mut out).unwrap())
    });
    // For a peer with remote checksum offload (draft-herbert-vxlan-rco):
    // the same records, the payload copied without being summed.
    g.bench_function("segment_64k_for_rco_peer", |b| {
        b.iter(|| segment_partial(black_box(&super_frame), &gso, HEADER_LEN, &mut out).unwrap())
    });

    let segments: Vec<Vec<u8>> = (0..44)
        .map(|i| tcp_frame(MSS, 1 + (i * MSS) as u32))
        .collect();
    let mut coalescer = Coalescer::new(8);
    let mut merged = 0usize;
    g.bench_function("coalesce_44_segments", |b| {
        b.iter(|| {
            for s in &segments {
                let pushed = coalescer.push(black_box(s), |f, _| merged += f.len());
                debug_assert_ne!(pushed, Push::NotCoalescable);
            }
            coalescer.flush(|f, o: &Offload| {
                merged += f.len();
                black_box(o);
            });
        })
    });
    black_box(merged);
    // The same segments from a peer with remote checksum offload: merged
    // without summing.
    let csum = PartialCsum {
        csum_start: 34,
        csum_offset: 16,
    };
    g.bench_function("coalesce_44_rco_segments", |b| {
        b.iter(|| {
            for s in &segments {
                let pushed = coalescer.push_partial(black_box(s), csum, |f, _| merged += f.len());
                debug_assert_ne!(pushed, Push::NotCoalescable);
            }
            coalescer.flush(|f, o: &Offload| {
                merged += f.len();
                black_box(o);
            });
        })
    });
    black_box(merged);
    g.finish();
}

criterion_group!(benches, bench_vxlan, bench_offload);
criterion_main!(benches);
