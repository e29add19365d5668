//! Tests of userspace TCP segmentation and coalescing ([`weft_switch::offload`])
//! through its public API. Frames are built and checked with etherparse, an
//! independent implementation of the header formats and checksums.

use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, NetSlice, PacketBuilder,
    SlicedPacket, TcpOptionElement, TcpSlice, TransportSlice,
};
use proptest::prelude::*;
use weft_os::tap::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP,
};
use weft_switch::frame::{Offload, NO_OFFLOAD};
use weft_switch::offload::{
    complete_csum, segment, segment_partial, Coalescer, OffloadError, PartialCsum, Push, Segmented,
};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const V4_SRC: [u8; 4] = [10, 1, 0, 11];
const V4_DST: [u8; 4] = [10, 1, 0, 12];
const V6_SRC: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11];
const V6_DST: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];
const SPORT: u16 = 40123;
const DPORT: u16 = 5201;
const SEQ0: u32 = 0xffff_f000; // wraps within a 10 kB super-frame
const ACK: u32 = 0x1234_5678;
const IP_ID0: u16 = 0xfffe; // wraps too
const PREFIX: usize = 50; // outer Ethernet + IPv4 + UDP + VXLAN
const SENTINEL: u8 = 0xa5;

/// What goes into a test frame.
#[derive(Debug, Clone, Copy)]
struct Spec {
    v6: bool,
    seq: u32,
    psh: bool,
    fin: bool,
    cwr: bool,
    ece: bool,
    syn: bool,
    rst: bool,
    urg: bool,
    /// TCP timestamps option (12 bytes with padding).
    tsopt: bool,
    /// IPv4 options (a 4-byte NOP/NOP/NOP/EOL block).
    ipopt: bool,
    ip_id: u16,
    sport: u16,
}

impl Spec {
    fn v4() -> Spec {
        Spec {
            v6: false,
            seq: SEQ0,
            psh: false,
            fin: false,
            cwr: false,
            ece: false,
            syn: false,
            rst: false,
            urg: false,
            tsopt: true,
            ipopt: false,
            ip_id: IP_ID0,
            sport: SPORT,
        }
    }
    fn v6() -> Spec {
        Spec {
            v6: true,
            ..Spec::v4()
        }
    }
}

/// An Ethernet/IP/TCP frame with `payload`, with correct checksums.
fn build(spec: Spec, payload: &[u8]) -> Vec<u8> {
    let ip = if spec.v6 {
        let h = Ipv6Header {
            traffic_class: 0x20,
            flow_label: Ipv6FlowLabel::try_new(0x5_4321).unwrap(),
            payload_length: 0,
            next_header: IpNumber::TCP,
            hop_limit: 63,
            source: V6_SRC,
            destination: V6_DST,
        };
        IpHeaders::Ipv6(h, Default::default())
    } else {
        let mut h = Ipv4Header::new(0, 64, IpNumber::TCP, V4_SRC, V4_DST).unwrap();
        h.identification = spec.ip_id;
        h.dont_fragment = true;
        if spec.ipopt {
            h.options = [1u8, 1, 1, 0][..].try_into().unwrap();
        }
        IpHeaders::Ipv4(h, Default::default())
    };
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ip(ip)
        .tcp(spec.sport, DPORT, spec.seq, 501);
    if !spec.syn {
        b = b.ack(ACK);
    }
    if spec.psh {
        b = b.psh();
    }
    if spec.fin {
        b = b.fin();
    }
    if spec.cwr {
        b = b.cwr();
    }
    if spec.ece {
        b = b.ece();
    }
    if spec.syn {
        b = b.syn();
    }
    if spec.rst {
        b = b.rst();
    }
    if spec.urg {
        b = b.urg(1);
    }
    if spec.tsopt {
        b = b
            .options(&[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(0x0102_0304, 0x0506_0708),
            ])
            .unwrap();
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// Offsets of the IP and TCP headers and of the payload of a frame.
fn offsets(frame: &[u8]) -> (usize, usize, usize) {
    let l3 = 14;
    let l4 = if frame[12..14] == [0x86, 0xdd] {
        l3 + 40
    } else {
        l3 + usize::from(frame[l3] & 0xf) * 4
    };
    let payload = l4 + usize::from(frame[l4 + 12] >> 4) * 4;
    (l3, l4, payload)
}

/// Ones' complement sum (test-local, independent of weft_nat).
fn ones_sum(data: &[u8]) -> u32 {
    let mut s: u64 = 0;
    for c in data.chunks(2) {
        s += u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u32
}

/// The folded, uncomplemented TCP pseudo-header sum of `frame`.
fn pseudo_sum(frame: &[u8]) -> u16 {
    let (l3, l4, _) = offsets(frame);
    let tcp_len = (frame.len() - l4) as u32;
    let mut s = if frame[12..14] == [0x86, 0xdd] {
        ones_sum(&frame[l3 + 8..l3 + 40])
    } else {
        ones_sum(&frame[l3 + 12..l3 + 20])
    };
    s += 6 + (tcp_len >> 16) + (tcp_len & 0xffff);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Turns a complete frame into the GSO frame a TAP would deliver: partial
/// TCP checksum, virtio-net header.
fn gso(mut frame: Vec<u8>, gso_size: u16) -> (Vec<u8>, Offload) {
    let (_, l4, payload) = offsets(&frame);
    let partial = pseudo_sum(&frame);
    frame[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
    let v6 = frame[12..14] == [0x86, 0xdd];
    let offload = Offload {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: if v6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        },
        hdr_len: payload as u16,
        gso_size,
        csum_start: l4 as u16,
        csum_offset: 16,
        num_buffers: 0,
    };
    (frame, offload)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Segments into a sentinel-filled buffer.
fn do_segment(frame: &[u8], offload: &Offload) -> (Vec<u8>, Segmented) {
    // An empty buffer is too small, and the error says how much is needed.
    let needed = match segment(frame, offload, PREFIX, &mut []) {
        Err(OffloadError::OutTooSmall { needed, .. }) => needed,
        other => panic!("segment into nothing: {other:?}"),
    };
    let mut out = vec![SENTINEL; needed + 100];
    let s = segment(frame, offload, PREFIX, &mut out).expect("segment");
    (out, s)
}

/// The segment frames (prefixes stripped).
fn frames<'a>(out: &'a [u8], s: &Segmented) -> Vec<&'a [u8]> {
    s.records().map(|r| &out[r.start + PREFIX..r.end]).collect()
}

/// Parses a TCP frame with etherparse and checks its IP header and its
/// TCP checksum against etherparse's own computation. TCP checksums 0x0000
/// and 0xFFFF are the same number (a sum can come out as either); accept
/// both for the one value etherparse would write as 0x0000.
fn check_frame(frame: &[u8]) -> TcpSlice<'_> {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse parses the frame");
    let tcp = match p.transport {
        Some(TransportSlice::Tcp(t)) => t,
        other => panic!("not TCP: {other:?}"),
    };
    let expect = match p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert_eq!(usize::from(h.total_len()), frame.len() - 14);
            let hdr = h.to_header();
            assert_eq!(hdr.calc_header_checksum(), hdr.header_checksum);
            tcp.calc_checksum_ipv4(h.source(), h.destination()).unwrap()
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            assert_eq!(usize::from(h.payload_length()), frame.len() - 14 - 40);
            tcp.calc_checksum_ipv6(h.source(), h.destination()).unwrap()
        }
        other => panic!("not IP: {other:?}"),
    };
    let got = tcp.checksum();
    assert!(
        got == expect || (expect == 0 && got == 0xffff),
        "TCP checksum {got:#06x}, expected {expect:#06x}"
    );
    tcp
}

/// Compares two frames, accepting 0x0000/0xFFFF in the TCP checksum field.
fn assert_same_frame(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "frame lengths");
    let (_, l4, _) = offsets(want);
    let csum = l4 + 16..l4 + 18;
    assert_eq!(
        got[..csum.start],
        want[..csum.start],
        "bytes before the TCP checksum"
    );
    assert_eq!(
        got[csum.end..],
        want[csum.end..],
        "bytes after the TCP checksum"
    );
    let g = u16::from_be_bytes([got[csum.start], got[csum.start + 1]]);
    let w = u16::from_be_bytes([want[csum.start], want[csum.start + 1]]);
    assert!(
        g == w || (w == 0 && g == 0xffff),
        "TCP checksum {g:#06x} vs {w:#06x}"
    );
}

/// Checks everything about the segments of a super-frame built from
/// `spec` and `payload`.
fn check_segments(spec: Spec, payload: &[u8], mss: usize, out: &[u8], s: &Segmented) {
    let count = payload.len().div_ceil(mss).max(1);
    assert_eq!(s.count, count);
    let ranges: Vec<_> = s.records().collect();
    assert_eq!(ranges.len(), count);
    assert_eq!(ranges[0].start, 0);
    for w in ranges.windows(2) {
        assert_eq!(w[0].end, w[1].start, "records are back to back");
        assert_eq!(
            w[0].len(),
            s.stride,
            "all but the last record are one stride"
        );
    }
    assert!(ranges[count - 1].len() <= s.stride);
    assert_eq!(ranges[count - 1].end, s.total_len);
    for r in &ranges {
        assert!(
            out[r.start..r.start + PREFIX]
                .iter()
                .all(|&b| b == SENTINEL),
            "prefix untouched"
        );
    }
    assert!(
        out[s.total_len..].iter().all(|&b| b == SENTINEL),
        "nothing written past total_len"
    );

    let orig = build(spec, payload);
    let (_, _, hdr_len) = offsets(&orig);
    let mut joined = Vec::new();
    for (i, f) in frames(out, s).into_iter().enumerate() {
        let last = i + 1 == count;
        let tcp = check_frame(f);
        assert_eq!(f[..12], orig[..12], "Ethernet addresses");
        assert_eq!(f.len(), hdr_len + tcp.payload().len());
        assert_eq!(
            tcp.sequence_number(),
            spec.seq.wrapping_add(joined.len() as u32),
            "contiguous sequence numbers"
        );
        assert_eq!(tcp.acknowledgment_number(), ACK);
        assert!(tcp.ack());
        assert_eq!(tcp.fin(), spec.fin && last, "FIN on the last segment only");
        assert_eq!(tcp.psh(), spec.psh && last, "PSH on the last segment only");
        assert_eq!(
            tcp.cwr(),
            spec.cwr && i == 0,
            "CWR on the first segment only"
        );
        assert_eq!(tcp.ece(), spec.ece);
        assert_eq!(tcp.window_size(), 501);
        let (_, ol4, opay) = offsets(&orig);
        assert_eq!(tcp.options(), &orig[ol4 + 20..opay], "TCP options copied");
        if !last {
            assert_eq!(tcp.payload().len(), mss);
        }
        if !spec.v6 {
            let h = Ipv4Header::from_slice(&f[14..]).unwrap().0;
            assert_eq!(
                h.identification,
                spec.ip_id.wrapping_add(i as u16),
                "IPv4 ID"
            );
            assert!(h.dont_fragment);
            assert_eq!(
                &h.options[..],
                &Ipv4Header::from_slice(&orig[14..]).unwrap().0.options[..]
            );
        }
        joined.extend_from_slice(tcp.payload());
    }
    assert_eq!(joined, payload, "concatenated payload");
}

/// Pushes every segment of `out` into a coalescer, then flushes; returns
/// the push results and the emitted frames with their headers.
fn coalesce(c: &mut Coalescer, segs: &[&[u8]]) -> (Vec<Push>, Vec<(Vec<u8>, Offload)>) {
    let mut emitted = Vec::new();
    let mut results = Vec::new();
    for seg in segs {
        results.push(c.push(seg, |f: &mut [u8], o: &Offload| {
            emitted.push((f.to_vec(), *o))
        }));
    }
    c.flush(|f: &mut [u8], o: &Offload| emitted.push((f.to_vec(), *o)));
    assert_eq!(c.pending(), 0);
    (results, emitted)
}

/// Checks a coalesced super-frame's header and partial checksum, completes
/// the checksum and returns the frame.
fn finish(frame: &[u8], o: &Offload, segs: usize, mss: usize) -> Vec<u8> {
    let (_, l4, payload) = offsets(frame);
    let v6 = frame[12..14] == [0x86, 0xdd];
    assert_eq!(o.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
    if segs > 1 {
        let want = if v6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        };
        assert_eq!(o.gso_type, want);
        assert_eq!(usize::from(o.gso_size), mss);
    } else {
        assert_eq!(o.gso_type, VIRTIO_NET_HDR_GSO_NONE);
    }
    assert_eq!(usize::from(o.hdr_len), payload);
    assert_eq!(usize::from(o.csum_start), l4);
    assert_eq!(o.csum_offset, 16);
    assert_eq!(
        u16::from_be_bytes([frame[l4 + 16], frame[l4 + 17]]),
        pseudo_sum(frame),
        "checksum field holds the pseudo-header sum"
    );
    let mut f = frame.to_vec();
    complete_csum(&mut f, o).unwrap();
    check_frame(&f);
    f
}

fn roundtrip(spec: Spec, payload: &[u8], mss: u16) {
    let (frame, offload) = gso(build(spec, payload), mss);
    let (out, s) = do_segment(&frame, &offload);
    check_segments(spec, payload, usize::from(mss), &out, &s);

    let mut c = Coalescer::new(4);
    let segs = frames(&out, &s);
    let (results, emitted) = coalesce(&mut c, &segs);
    assert_eq!(results[0], Push::Pending);
    assert!(
        results[1..].iter().all(|r| *r == Push::Merged),
        "{results:?}"
    );
    assert_eq!(emitted.len(), 1);
    let (f, o) = &emitted[0];
    let f = finish(f, o, s.count, usize::from(mss));
    assert_same_frame(&f, &build(spec, payload));
}

#[test]
fn segments_ipv4_gso_frame() {
    let payload = pattern(10_000);
    let spec = Spec {
        psh: true,
        fin: true,
        cwr: true,
        ece: true,
        ipopt: true,
        ..Spec::v4()
    };
    let (frame, offload) = gso(build(spec, &payload), 1448);
    let (out, s) = do_segment(&frame, &offload);
    assert_eq!(s.count, 7);
    let hdr = 14 + 24 + 32;
    assert_eq!(s.stride, PREFIX + hdr + 1448);
    assert_eq!(s.total_len, 6 * s.stride + PREFIX + hdr + 10_000 - 6 * 1448);
    check_segments(spec, &payload, 1448, &out, &s);
}

#[test]
fn segments_ipv6_gso_frame() {
    let payload = pattern(10_000);
    let spec = Spec {
        psh: true,
        fin: true,
        cwr: true,
        ..Spec::v6()
    };
    let (frame, mut offload) = gso(build(spec, &payload), 1448);
    offload.gso_type |= VIRTIO_NET_HDR_GSO_ECN;
    let (out, s) = do_segment(&frame, &offload);
    assert_eq!(s.count, 7);
    check_segments(spec, &payload, 1448, &out, &s);
    // Traffic class and flow label are copied.
    for f in frames(&out, &s) {
        assert_eq!(f[14..18], frame[14..18]);
    }
}

#[test]
fn exact_multiple_and_single_segment() {
    for (len, mss) in [
        (2896, 1448),
        (1448, 1448),
        (1, 1448),
        (0, 1448),
        (1449, 1448),
    ] {
        for v6 in [false, true] {
            let spec = Spec {
                v6,
                psh: true,
                ..Spec::v4()
            };
            let payload = pattern(len);
            let (frame, offload) = gso(build(spec, &payload), mss);
            let (out, s) = do_segment(&frame, &offload);
            check_segments(spec, &payload, usize::from(mss), &out, &s);
            if s.count == 1 {
                assert_eq!(s.stride, s.total_len);
            }
        }
    }
}

#[test]
fn segment_output_buffer_exactly_large_enough() {
    let payload = pattern(5000);
    let (frame, offload) = gso(build(Spec::v4(), &payload), 1000);
    let mut big = vec![0; 100_000];
    let s = segment(&frame, &offload, PREFIX, &mut big).unwrap();
    let mut exact = vec![0; s.total_len];
    assert_eq!(segment(&frame, &offload, PREFIX, &mut exact), Ok(s));
    assert_eq!(exact[..], big[..s.total_len]);
    let mut short = vec![0; s.total_len - 1];
    assert_eq!(
        segment(&frame, &offload, PREFIX, &mut short),
        Err(OffloadError::OutTooSmall {
            needed: s.total_len,
            available: s.total_len - 1
        })
    );
}

#[test]
fn non_gso_frame_gets_its_checksum_completed() {
    let payload = pattern(333);
    let want = build(Spec::v4(), &payload);
    let (frame, mut offload) = gso(want.clone(), 0);
    offload.gso_type = VIRTIO_NET_HDR_GSO_NONE;
    let (out, s) = do_segment(&frame, &offload);
    assert_eq!(s.count, 1);
    assert_eq!(s.total_len, PREFIX + frame.len());
    assert_eq!(s.stride, s.total_len);
    assert!(out[..PREFIX].iter().all(|&b| b == SENTINEL));
    assert_same_frame(&out[PREFIX..s.total_len], &want);

    // Without NEEDS_CSUM the frame is copied untouched, whatever it is.
    let junk = [0x55u8; 17];
    let mut out = [0u8; 40];
    let s = segment(&junk, &NO_OFFLOAD, 3, &mut out).unwrap();
    assert_eq!((s.count, s.stride, s.total_len), (1, 20, 20));
    assert_eq!(out[3..20], junk);
}

#[test]
fn complete_csum_udp_and_bounds() {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(V4_SRC, V4_DST, 64)
        .udp(1000, 2000)
        .write(&mut frame, b"hello, partial checksum")
        .unwrap();
    let want = frame.clone();
    // Replace the UDP checksum with the pseudo-header sum.
    let udp_len = (frame.len() - 34) as u32;
    let mut s = ones_sum(&frame[26..34]) + 17 + udp_len;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    frame[40..42].copy_from_slice(&(s as u16).to_be_bytes());
    let o = Offload {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..NO_OFFLOAD
    };
    complete_csum(&mut frame, &o).unwrap();
    assert_eq!(frame, want);

    let len = frame.len();
    for (start, off) in [(len as u16 - 1, 0), (34, 200), (u16::MAX, u16::MAX)] {
        let o = Offload {
            csum_start: start,
            csum_offset: off,
            ..o
        };
        assert_eq!(
            complete_csum(&mut frame, &o),
            Err(OffloadError::BadCsumOffsets {
                csum_start: start,
                csum_offset: off,
                frame_len: len
            })
        );
    }
    // Nothing to do without the flag.
    complete_csum(&mut [], &NO_OFFLOAD).unwrap();
}

#[test]
fn segment_errors() {
    let payload = pattern(3000);
    let (frame, offload) = gso(build(Spec::v4(), &payload), 1448);
    let mut out = vec![0u8; 10_000];

    let udp = Offload {
        gso_type: VIRTIO_NET_HDR_GSO_UDP,
        ..offload
    };
    assert_eq!(
        segment(&frame, &udp, 0, &mut out),
        Err(OffloadError::UnsupportedGsoType {
            gso_type: VIRTIO_NET_HDR_GSO_UDP
        })
    );
    let zero = Offload {
        gso_size: 0,
        ..offload
    };
    assert_eq!(
        segment(&frame, &zero, 0, &mut out),
        Err(OffloadError::ZeroGsoSize)
    );
    let v6 = Offload {
        gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
        ..offload
    };
    assert!(matches!(
        segment(&frame, &v6, 0, &mut out),
        Err(OffloadError::Malformed(_))
    ));
    for cut in [0, 5, 13, 14, 30, 53, 60, frame.len() - 1] {
        assert_eq!(
            segment(&frame[..cut], &offload, 0, &mut out),
            Err(OffloadError::Truncated),
            "cut at {cut}"
        );
    }

    // A UDP datagram with a TCP GSO header.
    let mut udp_frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(V4_SRC, V4_DST, 64)
        .udp(1000, 2000)
        .write(&mut udp_frame, &payload)
        .unwrap();
    assert_eq!(
        segment(&udp_frame, &offload, 0, &mut out),
        Err(OffloadError::NotTcp { protocol: 17 })
    );
    // ARP.
    let mut arp = frame.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(
        segment(&arp, &offload, 0, &mut out),
        Err(OffloadError::NotIp { ethertype: 0x0806 })
    );
    // A fragment.
    let mut frag = frame.clone();
    frag[20] |= 0x20;
    assert!(matches!(
        segment(&frag, &offload, 0, &mut out),
        Err(OffloadError::Malformed(_))
    ));
}

#[test]
fn coalesces_ipv4_and_ipv6() {
    for v6 in [false, true] {
        let spec = Spec {
            v6,
            psh: true,
            ..Spec::v4()
        };
        roundtrip(spec, &pattern(10_000), 1448);
        roundtrip(Spec { psh: false, ..spec }, &pattern(10_000), 1448);
        roundtrip(
            Spec {
                tsopt: false,
                ..spec
            },
            &pattern(4344),
            1448,
        );
        roundtrip(spec, &pattern(100), 1448);
    }
}

/// Splits a super-frame into its segment frames.
fn segments_of(spec: Spec, payload: &[u8], mss: u16) -> (Vec<u8>, Segmented) {
    let (frame, offload) = gso(build(spec, payload), mss);
    do_segment(&frame, &offload)
}

/// The payload each emitted frame carries must be the original's bytes at
/// its sequence number.
fn check_emitted_payloads(emitted: &[(Vec<u8>, Offload)], payload: &[u8], seq0: u32) {
    for (f, o) in emitted {
        let (_, l4, p) = offsets(f);
        let seq = u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap());
        let off = seq.wrapping_sub(seq0) as usize;
        assert_eq!(&f[p..], &payload[off..off + f.len() - p]);
        let mut f = f.clone();
        complete_csum(&mut f, o).unwrap();
        check_frame(&f);
    }
}

#[test]
fn out_of_order_and_gaps_are_not_merged() {
    let payload = pattern(10_000);
    let spec = Spec::v4();
    let (out, s) = segments_of(spec, &payload, 1448);
    let segs = frames(&out, &s);

    // Gap: segment 2 lost. 0+1 merge, 3..6 merge.
    let mut c = Coalescer::new(4);
    let gap: Vec<&[u8]> = [0, 1, 3, 4, 5, 6].iter().map(|&i| segs[i]).collect();
    let (results, emitted) = coalesce(&mut c, &gap);
    use Push::*;
    assert_eq!(results, [Pending, Merged, Pending, Merged, Merged, Merged]);
    assert_eq!(emitted.len(), 2);
    assert_eq!(emitted[0].1.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
    assert_eq!(emitted[0].0.len(), offsets(segs[0]).2 + 2 * 1448);
    assert_eq!(
        emitted[1].0.len(),
        offsets(segs[0]).2 + 4 * 1448 - 1448 + (10_000 - 6 * 1448)
    );
    check_emitted_payloads(&emitted, &payload, SEQ0);

    // Reordered: 0 1 3 2 4 5 6.
    let mut c = Coalescer::new(4);
    let reordered: Vec<&[u8]> = [0, 1, 3, 2, 4, 5, 6].iter().map(|&i| segs[i]).collect();
    let (results, emitted) = coalesce(&mut c, &reordered);
    assert_eq!(
        results,
        [Pending, Merged, Pending, Pending, Pending, Merged, Merged]
    );
    assert_eq!(emitted.len(), 4);
    check_emitted_payloads(&emitted, &payload, SEQ0);
    // Duplicate (retransmission) of the same segment.
    let mut c = Coalescer::new(4);
    let (results, emitted) = coalesce(&mut c, &[segs[0], segs[0]]);
    assert_eq!(results, [Pending, Pending]);
    assert_eq!(emitted.len(), 2);
}

#[test]
fn flows_are_kept_apart_and_evicted_oldest_first() {
    let payload = pattern(2896);
    let (out_a, sa) = segments_of(Spec::v4(), &payload, 1448);
    let (out_b, sb) = segments_of(
        Spec {
            sport: SPORT + 1,
            ..Spec::v4()
        },
        &payload,
        1448,
    );
    let (a, b) = (frames(&out_a, &sa), frames(&out_b, &sb));
    use Push::*;

    let mut c = Coalescer::new(2);
    assert_eq!(c.capacity(), 2);
    let (results, emitted) = coalesce(&mut c, &[a[0], b[0], a[1], b[1]]);
    assert_eq!(results, [Pending, Pending, Merged, Merged]);
    assert_eq!(emitted.len(), 2);
    for (f, o) in &emitted {
        assert_eq!(o.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        let f = finish(f, o, 2, 1448);
        assert_eq!(&f[offsets(&f).2..], &payload[..]);
    }

    // One slot: the second flow evicts the first.
    let mut c = Coalescer::new(1);
    let mut emitted = Vec::new();
    assert_eq!(
        c.push(a[0], |f: &mut [u8], _: &Offload| emitted.push(f.to_vec())),
        Pending
    );
    assert!(emitted.is_empty());
    assert_eq!(
        c.push(b[0], |f: &mut [u8], _: &Offload| emitted.push(f.to_vec())),
        Pending
    );
    assert_eq!(emitted.len(), 1);
    assert_eq!(&emitted[0][54..], &a[0][54..]);
    assert_eq!(c.pending(), 1);

    // No slots: nothing is coalescable.
    let mut c = Coalescer::new(0);
    let (results, emitted) = coalesce(&mut c, &[a[0], a[1]]);
    assert_eq!(results, [NotCoalescable, NotCoalescable]);
    assert!(emitted.is_empty());
}

#[test]
fn not_coalescable_frames() {
    let payload = pattern(1000);
    let base = Spec::v4();
    let cases = [
        Spec { fin: true, ..base },
        Spec { syn: true, ..base },
        Spec { rst: true, ..base },
        Spec { urg: true, ..base },
        Spec { cwr: true, ..base },
        Spec { ece: true, ..base },
        Spec {
            ipopt: true,
            ..base
        },
    ];
    for spec in cases {
        let mut c = Coalescer::new(2);
        let (results, emitted) = coalesce(&mut c, &[&build(spec, &payload)]);
        assert_eq!(results, [Push::NotCoalescable], "{spec:?}");
        assert!(emitted.is_empty());
    }
    let mut c = Coalescer::new(2);
    // Pure ACK (no payload).
    let (r, _) = coalesce(&mut c, &[&build(base, &[])]);
    assert_eq!(r, [Push::NotCoalescable]);
    // UDP, ARP-ish garbage, truncated.
    let mut udp = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(V4_SRC, V4_DST, 64)
        .udp(1, 2)
        .write(&mut udp, &payload)
        .unwrap();
    let good = build(base, &payload);
    let (r, _) = coalesce(&mut c, &[&udp, &[0u8; 10], &good[..good.len() - 1]]);
    assert_eq!(r, [Push::NotCoalescable; 3]);
    // Fragment.
    let mut frag = good.clone();
    frag[20] |= 0x20;
    let (r, _) = coalesce(&mut c, &[&frag]);
    assert_eq!(r, [Push::NotCoalescable]);
    // Bad TCP checksum, bad IPv4 header checksum.
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    let mut bad_ip = good.clone();
    bad_ip[14 + 8] -= 1; // TTL
    let (r, _) = coalesce(&mut c, &[&bad, &bad_ip]);
    assert_eq!(r, [Push::NotCoalescable; 2]);
    // Reserved / AE (formerly NS) bits in the data offset byte.
    for bit in [0x01, 0x02, 0x08] {
        let mut reserved = good.clone();
        reserved[34 + 12] |= bit;
        refresh_checksums(&mut reserved);
        let (r, _) = coalesce(&mut c, &[&reserved]);
        assert_eq!(r, [Push::NotCoalescable], "bit {bit:#x}");
    }
}

#[test]
fn non_coalescable_segment_flushes_its_flow_first() {
    let payload = pattern(4000);
    let spec = Spec {
        fin: true,
        ..Spec::v4()
    };
    let (out, s) = segments_of(spec, &payload, 1448);
    let segs = frames(&out, &s);
    let mut c = Coalescer::new(2);
    let mut emitted = Vec::new();
    let mut log = Vec::new();
    for seg in &segs {
        let r = c.push(seg, |f: &mut [u8], o: &Offload| {
            emitted.push((f.to_vec(), *o))
        });
        log.push((r, emitted.len()));
    }
    // The FIN segment is last: the two before it are emitted as one
    // super-frame before push returns NotCoalescable for it.
    assert_eq!(
        log,
        [
            (Push::Pending, 0),
            (Push::Merged, 0),
            (Push::NotCoalescable, 1)
        ]
    );
    assert_eq!(c.pending(), 0);
    check_emitted_payloads(&emitted, &payload, SEQ0);
}

/// Recomputes the IPv4 header checksum and the TCP checksum of an
/// IPv4/TCP frame after a change.
fn refresh_checksums(f: &mut [u8]) {
    let (_, l4, _) = offsets(f);
    f[24..26].fill(0);
    let c = !(ones_sum(&f[14..l4]) as u16);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let partial = pseudo_sum(f);
    f[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
    let o = Offload {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        csum_start: l4 as u16,
        csum_offset: 16,
        ..NO_OFFLOAD
    };
    complete_csum(f, &o).unwrap();
    check_frame(f);
}

/// A change to a segment frame, given the TCP header offset.
type Change = fn(&mut Vec<u8>, usize);

#[test]
fn header_differences_split_super_frames() {
    let payload = pattern(2896);
    let (out, s) = segments_of(Spec::v4(), &payload, 1448);
    let segs = frames(&out, &s);
    let (_, l4, _) = offsets(segs[0]);
    // Each change (re-checksummed) must prevent merging.
    let changes: [(&str, Change); 7] = [
        ("ack", |f, l4| f[l4 + 11] ^= 1),
        ("window", |f, l4| f[l4 + 15] ^= 1),
        ("timestamp", |f, l4| f[l4 + 31] ^= 1),
        ("ttl", |f, _| f[22] -= 1),
        ("dscp", |f, _| f[15] ^= 4),
        ("destination MAC", |f, _| f[5] ^= 1),
        ("IPv4 DF", |f, _| f[20] ^= 0x40),
    ];
    for (what, change) in changes {
        let mut second = segs[1].to_vec();
        change(&mut second, l4);
        refresh_checksums(&mut second);
        let mut c = Coalescer::new(2);
        let (r, emitted) = coalesce(&mut c, &[segs[0], &second]);
        assert_eq!(r, [Push::Pending, Push::Pending], "{what}");
        assert_eq!(emitted.len(), 2);
    }
}

#[test]
fn super_frame_ip_length_stays_within_64k() {
    // 60 segments of 1448 bytes do not fit in one IPv4 datagram.
    let payload = pattern(60 * 1448);
    let spec = Spec::v4();
    let mut all = Vec::new();
    for part in payload.chunks(30 * 1448) {
        let seq = SEQ0.wrapping_add(all.len() as u32 * 1448);
        let (out, s) = segments_of(Spec { seq, ..spec }, part, 1448);
        all.extend(frames(&out, &s).into_iter().map(<[u8]>::to_vec));
    }
    assert_eq!(all.len(), 60);
    let mut c = Coalescer::new(2);
    let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
    let (_, emitted) = coalesce(&mut c, &refs);
    assert_eq!(emitted.len(), 2);
    for (f, _) in &emitted {
        assert!(f.len() - 14 <= 65535);
    }
    // (65535 - 20 - 32) / 1448 = 45 segments in the first.
    assert_eq!(emitted[0].0.len(), 14 + 20 + 32 + 45 * 1448);
    check_emitted_payloads(&emitted, &payload, SEQ0);
}

fn arb_offload() -> impl Strategy<Value = Offload> {
    (
        any::<u8>(),
        prop_oneof![
            Just(0u8),
            Just(1),
            Just(3),
            Just(4),
            Just(0x81),
            Just(0x84),
            any::<u8>()
        ],
        any::<u16>(),
        prop_oneof![Just(0u16), 1..2000u16, any::<u16>()],
        prop_oneof![0..100u16, any::<u16>()],
        prop_oneof![Just(16u16), Just(6), any::<u16>()],
    )
        .prop_map(
            |(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)| Offload {
                flags,
                gso_type,
                hdr_len,
                gso_size,
                csum_start,
                csum_offset,
                num_buffers: 0,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn segment_then_coalesce_roundtrips(
        len in 1usize..60_000,
        mss in 500u16..9000,
        v6 in any::<bool>(),
        psh in any::<bool>(),
        tsopt in any::<bool>(),
        seq in any::<u32>(),
        ip_id in any::<u16>(),
    ) {
        let spec = Spec { v6, psh, tsopt, seq, ip_id, ..Spec::v4() };
        roundtrip(spec, &pattern(len), mss);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn garbage_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        offload in arb_offload(),
        prefix in 0usize..64,
        out_len in 0usize..4000,
    ) {
        let mut out = vec![0u8; out_len];
        let _ = segment(&bytes, &offload, prefix, &mut out);
        let mut copy = bytes.clone();
        let _ = complete_csum(&mut copy, &offload);
        let mut c = Coalescer::new(1);
        let _ = c.push(&bytes, |_: &mut [u8], _: &Offload| {});
        c.flush(|_: &mut [u8], _: &Offload| {});
    }

    /// A valid GSO frame with a few bytes changed, cut short, or both.
    #[test]
    fn mutated_frames_never_panic(
        v6 in any::<bool>(),
        len in 0usize..3000,
        mss in 1u16..2000,
        flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        offload_flip in any::<bool>(),
        prefix in 0usize..64,
    ) {
        let (mut frame, mut offload) = gso(build(Spec { v6, ..Spec::v4() }, &pattern(len)), mss);
        for (at, v) in flips {
            if at < frame.len() {
                frame[at] = v;
            }
        }
        let cut = cut.index(frame.len() + 1);
        if offload_flip {
            offload.csum_start = offload.csum_start.wrapping_mul(7);
        }
        let frame = &frame[..cut];
        let mut out = vec![0u8; 40_000];
        match segment(frame, &offload, prefix, &mut out) {
            Ok(s) => {
                prop_assert!(s.total_len <= out.len());
                prop_assert!(s.count >= 1);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let mut c = Coalescer::new(1);
        let _ = c.push(frame, |_: &mut [u8], _: &Offload| {});
        c.flush(|f: &mut [u8], o: &Offload| {
            let mut f = f.to_vec();
            complete_csum(&mut f, o).unwrap();
        });
    }

    /// Truncating a GSO frame inside its headers is an error, not a panic.
    #[test]
    fn truncated_headers_are_errors(v6 in any::<bool>(), cut in 0usize..86) {
        let (frame, offload) = gso(build(Spec { v6, ..Spec::v4() }, &pattern(3000)), 1000);
        let cut = cut.min(offsets(&frame).2 - 1);
        let mut out = vec![0u8; 10_000];
        prop_assert_eq!(segment(&frame[..cut], &offload, 0, &mut out), Err(OffloadError::Truncated));
    }
}

#[test]
fn segment_after_a_short_one_or_a_longer_one_is_not_merged() {
    use Push::*;
    let payload = pattern(5000);
    let at = |off: usize, len: usize| {
        build(
            Spec {
                seq: SEQ0.wrapping_add(off as u32),
                ..Spec::v4()
            },
            &payload[off..off + len],
        )
    };
    // 1448, then a short 1000 (merged, closes), then 1448 in sequence.
    let f = [at(0, 1448), at(1448, 1000), at(2448, 1448)];
    let mut c = Coalescer::new(2);
    let (r, emitted) = coalesce(&mut c, &[&f[0], &f[1], &f[2]]);
    assert_eq!(r, [Pending, Merged, Pending]);
    assert_eq!(emitted.len(), 2);
    assert_eq!(emitted[0].1.gso_size, 1448);
    check_emitted_payloads(&emitted, &payload, SEQ0);
    // 1000, then 1448 in sequence: longer than the flow's gso_size.
    let f = [at(0, 1000), at(1000, 1448)];
    let (r, emitted) = coalesce(&mut c, &[&f[0], &f[1]]);
    assert_eq!(r, [Pending, Pending]);
    assert_eq!(emitted.len(), 2);
    assert!(emitted
        .iter()
        .all(|(_, o)| o.gso_type == VIRTIO_NET_HDR_GSO_NONE));
    check_emitted_payloads(&emitted, &payload, SEQ0);
}

/// With tiny segments the IPv4 total length limit (not the buffer size)
/// is what ends a super-frame.
#[test]
fn ipv4_total_length_limit_with_small_segments() {
    let payload = pattern(3300 * 20);
    let mut all = Vec::new();
    for part in payload.chunks(1650 * 20) {
        let seq = SEQ0.wrapping_add(all.len() as u32 * 20);
        let (out, s) = segments_of(Spec { seq, ..Spec::v4() }, part, 20);
        all.extend(frames(&out, &s).into_iter().map(<[u8]>::to_vec));
    }
    let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
    let mut c = Coalescer::new(1);
    let (_, emitted) = coalesce(&mut c, &refs);
    assert_eq!(emitted.len(), 2);
    // (65535 - 20 - 32) / 20 = 3274 segments fit.
    assert_eq!(emitted[0].0.len() - 14, 20 + 32 + 3274 * 20);
    check_emitted_payloads(&emitted, &payload, SEQ0);
}

/// A checksum that comes out as 0 is written as 0xFFFF (RFC 768 for UDP;
/// the same number in ones' complement for TCP).
#[test]
fn complete_csum_writes_negative_zero() {
    let build_udp = |word: u16| {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(V4_SRC, V4_DST, 64)
            .udp(1000, 2000)
            .write(&mut f, &word.to_be_bytes())
            .unwrap();
        f
    };
    // Choose the payload word so that the whole sum is 0xFFFF.
    let mut f = build_udp(0);
    f[40..42].fill(0);
    let udp_len = (f.len() - 34) as u32;
    let mut s = ones_sum(&f[26..34]) + 17 + udp_len + ones_sum(&f[34..]);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    let want = build_udp(0xffff - s as u16);
    assert_eq!(want[40..42], [0xff, 0xff], "etherparse writes 0xFFFF too");
    let mut f = want.clone();
    let mut p = ones_sum(&f[26..34]) + 17 + udp_len;
    while p > 0xffff {
        p = (p & 0xffff) + (p >> 16);
    }
    f[40..42].copy_from_slice(&(p as u16).to_be_bytes());
    let o = Offload {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..NO_OFFLOAD
    };
    complete_csum(&mut f, &o).unwrap();
    assert_eq!(f, want);
}

#[test]
fn ipv6_flow_label_difference_splits_super_frames() {
    let payload = pattern(2896);
    let (out, s) = segments_of(Spec::v6(), &payload, 1448);
    let segs = frames(&out, &s);
    let mut second = segs[1].to_vec();
    second[17] ^= 1; // flow label, not covered by any checksum
    check_frame(&second);
    let mut c = Coalescer::new(2);
    let (r, emitted) = coalesce(&mut c, &[segs[0], &second]);
    assert_eq!(r, [Push::Pending, Push::Pending]);
    assert_eq!(emitted.len(), 2);
}

#[test]
fn vlan_tagged_frames() {
    let payload = pattern(5000);
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .single_vlan(etherparse::VlanId::try_new(42).unwrap())
        .ipv4(V4_SRC, V4_DST, 64)
        .tcp(SPORT, DPORT, SEQ0, 1000)
        .ack(ACK)
        .write(&mut frame, &payload)
        .unwrap();
    let offload = Offload {
        flags: 0,
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        gso_size: 1448,
        ..NO_OFFLOAD
    };
    let mut out = vec![0u8; 20_000];
    let s = segment(&frame, &offload, 0, &mut out).unwrap();
    assert_eq!(s.count, 4);
    let mut joined = Vec::new();
    let mut c = Coalescer::new(1);
    for r in s.records() {
        let f = &out[r];
        assert_eq!(f[..18], frame[..18], "Ethernet + VLAN tag copied");
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            panic!("not TCP")
        };
        let h = ip.header();
        assert_eq!(usize::from(h.total_len()), f.len() - 18);
        assert_eq!(
            tcp.calc_checksum_ipv4(h.source(), h.destination()).unwrap(),
            tcp.checksum()
        );
        joined.extend_from_slice(tcp.payload());
        c.push(f, |_: &mut [u8], _: &Offload| panic!("nothing to emit yet"));
    }
    assert_eq!(joined, payload);
    let mut emitted = Vec::new();
    c.flush(|f: &mut [u8], o: &Offload| emitted.push((f.to_vec(), *o)));
    assert_eq!(emitted.len(), 1);
    let (mut f, o) = emitted.pop().unwrap();
    assert_eq!((o.csum_start, o.hdr_len, o.gso_size), (38, 58, 1448));
    complete_csum(&mut f, &o).unwrap();
    assert_same_frame_at(&f, &frame, 38);
}

/// [`assert_same_frame`] for a frame whose TCP header starts at `l4`.
fn assert_same_frame_at(got: &[u8], want: &[u8], l4: usize) {
    assert_eq!(got.len(), want.len());
    assert_eq!(got[..l4 + 16], want[..l4 + 16]);
    assert_eq!(got[l4 + 18..], want[l4 + 18..]);
    let g = u16::from_be_bytes([got[l4 + 16], got[l4 + 17]]);
    let w = u16::from_be_bytes([want[l4 + 16], want[l4 + 17]]);
    assert!(g == w || (w == 0 && g == 0xffff));
}

// Remote checksum offload (draft-herbert-vxlan-rco): segments that leave
// their TCP checksum partial, and merging such segments without summing.

/// The folded pseudo-header sum of every segment, read from the field.
fn csum_field(frame: &[u8]) -> u16 {
    let (_, l4, _) = offsets(frame);
    u16::from_be_bytes([frame[l4 + 16], frame[l4 + 17]])
}

/// `segment_partial` writes what `segment` writes, byte for byte, but for
/// each TCP checksum field, which holds the segment's pseudo-header sum;
/// completing it gives `segment`'s checksum.
#[test]
fn partial_segments_differ_only_in_the_tcp_checksum() {
    for v6 in [false, true] {
        for (len, mss) in [(10_000, 1448), (45 * 1448, 1448), (100, 1448), (2896, 1448)] {
            let spec = Spec {
                v6,
                psh: true,
                ..Spec::v4()
            };
            let (frame, offload) = gso(build(spec, &pattern(len)), mss);
            let (full, s) = do_segment(&frame, &offload);
            let mut out = vec![SENTINEL; full.len()];
            let (p, csum) = segment_partial(&frame, &offload, PREFIX, &mut out).unwrap();
            assert_eq!(p, s, "the same records");
            let (_, l4, _) = offsets(&frame);
            assert_eq!(
                csum,
                PartialCsum {
                    csum_start: l4 as u16,
                    csum_offset: 16
                }
            );
            for (got, want) in frames(&out, &p).into_iter().zip(frames(&full, &s)) {
                assert_eq!(got[..l4 + 16], want[..l4 + 16]);
                assert_eq!(got[l4 + 18..], want[l4 + 18..]);
                assert_eq!(csum_field(got), pseudo_sum(got), "the pseudo-header sum");
                let mut done = got.to_vec();
                let o = Offload {
                    flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                    csum_start: csum.csum_start,
                    csum_offset: csum.csum_offset,
                    ..NO_OFFLOAD
                };
                complete_csum(&mut done, &o).unwrap();
                assert_same_frame_at(&done, want, l4);
            }
            // The prefixes are left alone, as segment leaves them.
            for r in p.records() {
                assert!(out[r.start..r.start + PREFIX]
                    .iter()
                    .all(|&b| b == SENTINEL));
            }
        }
    }
}

#[test]
fn partial_frame_without_gso_is_copied_as_it_is() {
    let (frame, gso_offload) = gso(build(Spec::v4(), &pattern(300)), 1448);
    let offload = Offload {
        gso_type: VIRTIO_NET_HDR_GSO_NONE,
        gso_size: 0,
        ..gso_offload
    };
    let mut out = vec![SENTINEL; PREFIX + frame.len()];
    let (s, csum) = segment_partial(&frame, &offload, PREFIX, &mut out).unwrap();
    assert_eq!(s.count, 1);
    assert_eq!(&out[PREFIX..], &frame[..]);
    assert_eq!((csum.csum_start, csum.csum_offset), (34, 16));
    // Nothing partial to leave, or a field outside the frame: refused.
    assert!(segment_partial(&frame, &NO_OFFLOAD, PREFIX, &mut out).is_err());
    let far = Offload {
        csum_start: frame.len() as u16,
        ..offload
    };
    assert!(matches!(
        segment_partial(&frame, &far, PREFIX, &mut out),
        Err(OffloadError::BadCsumOffsets { .. })
    ));
}

/// Partial segments merge into the super-frame full ones merge into, and
/// their payload is not summed (the outer UDP checksum covered it).
#[test]
fn partial_segments_coalesce_without_sums() {
    for v6 in [false, true] {
        let spec = Spec {
            v6,
            psh: true,
            ..Spec::v4()
        };
        let payload = pattern(10_000);
        let (frame, offload) = gso(build(spec, &payload), 1448);
        let (full, s) = do_segment(&frame, &offload);
        let mut out = vec![SENTINEL; full.len()];
        let (_, csum) = segment_partial(&frame, &offload, PREFIX, &mut out).unwrap();

        let want = coalesce(&mut Coalescer::new(4), &frames(&full, &s)).1;
        let mut c = Coalescer::new(4);
        let mut got = Vec::new();
        for seg in frames(&out, &s) {
            let r = c.push_partial(seg, csum, |f: &mut [u8], o: &Offload| {
                got.push((f.to_vec(), *o))
            });
            assert_ne!(r, Push::NotCoalescable);
        }
        c.flush(|f: &mut [u8], o: &Offload| got.push((f.to_vec(), *o)));
        assert_eq!(got, want, "the same super-frame and header");

        // A flipped payload byte in a partial segment is not caught here
        // (nothing is summed); in a full one it is.
        let mut bad = frames(&full, &s)[1].to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let first = frames(&full, &s)[0];
        let mut c = Coalescer::new(4);
        c.push(first, |_: &mut [u8], _: &Offload| {});
        assert_eq!(
            c.push(&bad, |_: &mut [u8], _: &Offload| {}),
            Push::NotCoalescable
        );
        let mut c = Coalescer::new(4);
        c.push_partial(frames(&out, &s)[0], csum, |_: &mut [u8], _: &Offload| {});
        let mut bad = frames(&out, &s)[1].to_vec();
        bad[last] ^= 1;
        assert_eq!(
            c.push_partial(&bad, csum, |_: &mut [u8], _: &Offload| {}),
            Push::Merged
        );
    }
}

/// The segments of `payload` cut at `mss`, built one by one (consecutive
/// sequence numbers and IP IDs, PSH on the last if `spec.psh`).
fn run_segments(spec: Spec, payload: &[u8], mss: usize) -> Vec<Vec<u8>> {
    let n = payload.chunks(mss).count();
    payload
        .chunks(mss)
        .enumerate()
        .map(|(k, chunk)| {
            let s = Spec {
                seq: spec.seq.wrapping_add((k * mss) as u32),
                ip_id: spec.ip_id.wrapping_add(k as u16),
                psh: spec.psh && k == n - 1,
                ..spec
            };
            build(s, chunk)
        })
        .collect()
}

/// A partial checksum anywhere but the TCP checksum field is not merged,
/// and flushes what its flow had pending first.
#[test]
fn partial_checksum_elsewhere_is_not_coalesced() {
    let segs = run_segments(Spec::v4(), &pattern(4000), 1448);
    let (_, l4, _) = offsets(&segs[0]);
    for wrong in [
        PartialCsum {
            csum_start: l4 as u16 + 2,
            csum_offset: 16,
        },
        PartialCsum {
            csum_start: l4 as u16,
            csum_offset: 6,
        },
    ] {
        let mut c = Coalescer::new(4);
        let mut emitted = 0;
        let ok = PartialCsum {
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        c.push_partial(&segs[0], ok, |_: &mut [u8], _: &Offload| emitted += 1);
        let r = c.push_partial(&segs[1], wrong, |_: &mut [u8], _: &Offload| emitted += 1);
        assert_eq!(r, Push::NotCoalescable);
        assert_eq!(emitted, 1, "the pending super-frame left first");
        assert_eq!(c.pending(), 0);
    }
}
