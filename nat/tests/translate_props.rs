//! Property tests for packet translation, checked against etherparse (an
//! independent implementation of every header and checksum involved).

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{
    Icmpv4Slice, IpHeaders, IpNumber, Ipv4Header, PacketBuilder, TcpHeader, UdpHeader,
};
use proptest::prelude::*;
use weft_nat::translate::{inspect, translate, Rewrite, TranslateOptions};
use weft_nat::{FlowKey, Protocol};

const FULL: TranslateOptions = TranslateOptions {
    partial_csum: false,
};
const PARTIAL: TranslateOptions = TranslateOptions { partial_csum: true };

/// What rides on top of IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp {
        flags: u8,
        seq: u32,
    },
    /// `zero_csum`: the sender sent no checksum.
    Udp {
        zero_csum: bool,
    },
    EchoRequest {
        seq: u16,
    },
    EchoReply {
        seq: u16,
    },
}

impl Kind {
    fn proto(self) -> Protocol {
        match self {
            Kind::Tcp { .. } => Protocol::Tcp,
            Kind::Udp { .. } => Protocol::Udp,
            _ => Protocol::Icmp,
        }
    }
}

fn ip_header(src: Ipv4Addr, dst: Ipv4Addr, proto: IpNumber, options: bool, id: u16) -> IpHeaders {
    let mut h = Ipv4Header::new(0, 64, proto, src.octets(), dst.octets()).unwrap();
    h.identification = id;
    if options {
        h.options = [1u8, 1, 1, 0].into(); // NOP NOP NOP EOL
    }
    IpHeaders::Ipv4(h, Default::default())
}

/// Builds a packet of `kind` keyed `key` (for ICMP the source port is the
/// identifier), with all checksums computed by etherparse.
fn build(kind: Kind, key: &FlowKey, payload: &[u8], options: bool) -> Vec<u8> {
    let (src, dst) = (*key.src.ip(), *key.dst.ip());
    let proto = match kind {
        Kind::Tcp { .. } => IpNumber::TCP,
        Kind::Udp { .. } => IpNumber::UDP,
        _ => IpNumber::ICMP,
    };
    let b = PacketBuilder::ip(ip_header(src, dst, proto, options, 0x1234));
    let mut out = Vec::new();
    match kind {
        Kind::Tcp { flags, seq } => {
            let mut b = b.tcp(key.src.port(), key.dst.port(), seq, 1000);
            if flags & 0x02 != 0 {
                b = b.syn();
            }
            if flags & 0x10 != 0 {
                b = b.ack(seq.wrapping_mul(7));
            }
            if flags & 0x01 != 0 {
                b = b.fin();
            }
            if flags & 0x08 != 0 {
                b = b.psh();
            }
            b.write(&mut out, payload).unwrap();
        }
        Kind::Udp { zero_csum } => {
            b.udp(key.src.port(), key.dst.port())
                .write(&mut out, payload)
                .unwrap();
            if zero_csum {
                let at = out.len() - payload.len() - 2;
                out[at..at + 2].fill(0);
            }
        }
        Kind::EchoRequest { seq } => b
            .icmpv4_echo_request(key.src.port(), seq)
            .write(&mut out, payload)
            .unwrap(),
        Kind::EchoReply { seq } => b
            .icmpv4_echo_reply(key.src.port(), seq)
            .write(&mut out, payload)
            .unwrap(),
    }
    out
}

/// An ICMP error from `src` to `dst` quoting `quote`.
fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, mtu: u16, quote: &[u8]) -> Vec<u8> {
    let mut b5 = [0u8; 4];
    if ty == 3 && code == 4 {
        b5[2..4].copy_from_slice(&mtu.to_be_bytes());
    }
    let mut out = Vec::new();
    PacketBuilder::ip(ip_header(src, dst, IpNumber::ICMP, false, 7))
        .icmpv4_raw(ty, code, b5)
        .write(&mut out, quote)
        .unwrap();
    out
}

/// Checks every checksum of a packet with etherparse. Quoted packets
/// inside ICMP errors get their IPv4 header checked, and their transport
/// checksum too when the quote is whole (`quote_whole`).
fn verify(p: &[u8], quote_whole: bool) {
    let (ip, rest) = Ipv4Header::from_slice(p).unwrap();
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "IPv4 header");
    let l4 = &rest[..usize::from(ip.payload_len().unwrap())];
    verify_l4(&ip, l4, quote_whole);
}

fn verify_l4(ip: &Ipv4Header, l4: &[u8], quote_whole: bool) {
    match ip.protocol {
        IpNumber::TCP => {
            let (h, payload) = TcpHeader::from_slice(l4).unwrap();
            let want = h
                .calc_checksum_ipv4_raw(ip.source, ip.destination, payload)
                .unwrap();
            assert_eq!(h.checksum, want, "TCP checksum");
        }
        IpNumber::UDP => {
            let (h, payload) = UdpHeader::from_slice(l4).unwrap();
            if h.checksum != 0 {
                let want = h
                    .calc_checksum_ipv4_raw(ip.source, ip.destination, payload)
                    .unwrap();
                assert_eq!(h.checksum, want, "UDP checksum");
            }
        }
        IpNumber::ICMP => {
            let s = Icmpv4Slice::from_slice(l4).unwrap();
            let h = s.header();
            assert_eq!(
                h.checksum,
                h.icmp_type.calc_checksum(s.payload()),
                "ICMP checksum"
            );
            if matches!(l4[0], 3 | 11) {
                let (qip, qrest) = Ipv4Header::from_slice(&l4[8..]).unwrap();
                assert_eq!(
                    qip.header_checksum,
                    qip.calc_header_checksum(),
                    "quoted IPv4"
                );
                if quote_whole {
                    let ql4 = &qrest[..usize::from(qip.payload_len().unwrap())];
                    verify_l4(&qip, ql4, false);
                }
            }
        }
        other => panic!("unexpected protocol {other:?}"),
    }
}

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

fn endpoint() -> impl Strategy<Value = SocketAddrV4> {
    (addr(), any::<u16>()).prop_map(|(a, p)| SocketAddrV4::new(a, p))
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (any::<u8>(), any::<u32>()).prop_map(|(f, seq)| Kind::Tcp { flags: f, seq }),
        any::<bool>().prop_map(|zero_csum| Kind::Udp { zero_csum }),
        any::<u16>().prop_map(|seq| Kind::EchoRequest { seq }),
        any::<u16>().prop_map(|seq| Kind::EchoReply { seq }),
    ]
}

/// Kinds that can be quoted in an ICMP error.
fn quoted_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (any::<u8>(), any::<u32>()).prop_map(|(f, seq)| Kind::Tcp { flags: f, seq }),
        any::<bool>().prop_map(|zero_csum| Kind::Udp { zero_csum }),
        any::<u16>().prop_map(|seq| Kind::EchoRequest { seq }),
    ]
}

fn key_for(kind: Kind, src: SocketAddrV4, dst: SocketAddrV4) -> FlowKey {
    let mut dst = dst;
    if kind.proto() == Protocol::Icmp {
        dst.set_port(src.port());
    }
    FlowKey::new(kind.proto(), src, dst)
}

fn rewrite() -> impl Strategy<Value = Rewrite> {
    (
        proptest::option::of(endpoint()),
        proptest::option::of(endpoint()),
    )
        .prop_map(|(src, dst)| Rewrite { src, dst })
}

/// The key a packet keyed `k` has after `rw` (ICMP: the identifier is the
/// port of the new source, else of the new destination).
fn expected_key(k: &FlowKey, rw: &Rewrite) -> FlowKey {
    let mut out = rw.apply_to(k);
    if k.proto == Protocol::Icmp {
        let id = rw.src.or(rw.dst).map_or(k.src.port(), |a| a.port());
        out.src.set_port(id);
        out.dst.set_port(id);
    }
    out
}

/// The rewrite that undoes `rw` on a packet that was keyed `k`.
fn inverse(k: &FlowKey, rw: &Rewrite) -> Rewrite {
    Rewrite {
        src: rw.src.map(|_| k.src),
        dst: rw.dst.map(|_| k.dst),
    }
}

/// Replaces the TCP/UDP checksum with the uncomplemented pseudo-header sum,
/// as a virtio NEEDS_CSUM packet carries it; returns the field offset.
fn make_partial(p: &mut [u8]) -> usize {
    let hl = usize::from(p[0] & 0xf) * 4;
    let l4_len = p.len() - hl;
    let at = hl + if p[9] == 6 { 16 } else { 6 };
    let mut s: u32 = 0;
    for w in p[12..20].chunks(2) {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    s += u32::from(p[9]) + l4_len as u32;
    let folded = fold(s);
    p[at..at + 2].copy_from_slice(&folded.to_be_bytes());
    at
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// What a NIC does with a NEEDS_CSUM packet: sum the segment (the field
/// holding the partial sum), complement, store.
fn complete(p: &mut [u8], at: usize) {
    let hl = usize::from(p[0] & 0xf) * 4;
    let mut s: u32 = 0;
    let l4 = &p[hl..];
    for w in l4.chunks(2) {
        let hi = u32::from(w[0]) << 8;
        s += hi | w.get(1).map_or(0, |&b| u32::from(b));
        s = (s & 0xffff) + (s >> 16);
    }
    let mut c = !fold(s);
    if c == 0 && p[9] == 17 {
        c = 0xffff;
    }
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Translating gives byte for byte the packet etherparse builds with
    /// the new addresses; all checksums verify; the reverse rewrite
    /// restores the original bytes.
    #[test]
    fn translate_rebuild_and_roundtrip(
        kind in kind(),
        src in endpoint(),
        dst in endpoint(),
        rw in rewrite(),
        payload in proptest::collection::vec(any::<u8>(), 0..80),
        options in any::<bool>(),
    ) {
        let k = key_for(kind, src, dst);
        let orig = build(kind, &k, &payload, options);
        let mut p = orig.clone();
        translate(&mut p, &rw, FULL).unwrap();
        verify(&p, true);
        let want = build(kind, &expected_key(&k, &rw), &payload, options);
        prop_assert_eq!(&p, &want);
        prop_assert_eq!(inspect(&p).unwrap().key, expected_key(&k, &rw));
        translate(&mut p, &inverse(&k, &rw), FULL).unwrap();
        prop_assert_eq!(&p, &orig);
    }

    /// Trailing bytes past the IPv4 total length (Ethernet padding) are
    /// never touched.
    #[test]
    fn padding_is_untouched(
        kind in kind(),
        src in endpoint(),
        dst in endpoint(),
        rw in rewrite(),
        pad in proptest::collection::vec(any::<u8>(), 1..20),
    ) {
        let k = key_for(kind, src, dst);
        let mut p = build(kind, &k, b"", false);
        let n = p.len();
        p.extend_from_slice(&pad);
        translate(&mut p, &rw, FULL).unwrap();
        prop_assert_eq!(&p[n..], &pad[..]);
        verify(&p[..n], true);
    }

    /// ICMP errors quoting a TCP/UDP/echo packet, whole or cut short:
    /// translation equals the error etherparse builds around the
    /// translated quote, every checksum etherparse can check verifies, and
    /// the reverse rewrite restores the bytes.
    #[test]
    fn icmp_error_rebuild_and_roundtrip(
        qkind in quoted_kind(),
        qsrc in endpoint(),
        qdst in endpoint(),
        payload in proptest::collection::vec(any::<u8>(), 0..60),
        cut in proptest::option::of(0usize..40),
        (ty, code) in prop_oneof![(Just(3u8), 0u8..16), (Just(11u8), 0u8..2)],
        mtu in any::<u16>(),
        from_destination in any::<bool>(),
        router in addr(),
        new_qsrc in proptest::option::of(endpoint()),
        new_qdst in proptest::option::of(endpoint()),
    ) {
        // The quoted packet went qsrc -> qdst; the error comes back.
        let qk = key_for(qkind, qsrc, qdst);
        let full = build(qkind, &qk, &payload, false);
        let qlen = match cut {
            // RFC 792 minimum: IP header + 8 bytes.
            Some(extra) => (20 + 8 + extra).min(full.len()),
            None => full.len(),
        };
        // A quote that cuts the TCP checksum in half cannot have it patched
        // (the missing low byte's carry is unknown): it is left alone, so
        // the bytes differ from a rebuilt quote there.
        let half_checksum = matches!(qkind, Kind::Tcp { .. }) && qlen == 20 + 17;
        let outer_src = if from_destination { *qdst.ip() } else { router };
        let orig = icmp_error(outer_src, *qsrc.ip(), ty, code, mtu, &full[..qlen]);

        let ins = inspect(&orig).unwrap();
        prop_assert!(ins.icmp_error);
        prop_assert_eq!(ins.key, qk.reversed());

        // The rewrite of the error's own direction (reply of the quoted
        // flow): the quoted packet gets the mirror image.
        let rw = Rewrite { src: new_qdst, dst: new_qsrc };
        let mut p = orig.clone();
        translate(&mut p, &rw, FULL).unwrap();
        verify(&p, cut.is_none());

        let new_qk = expected_key(&qk, &rw.mirrored());
        let new_full = build(qkind, &new_qk, &payload, false);
        let want = icmp_error(
            rw.src.map_or(outer_src, |a| *a.ip()),
            rw.dst.map_or(*qsrc.ip(), |a| *a.ip()),
            ty,
            code,
            mtu,
            &new_full[..qlen],
        );
        if !half_checksum {
            prop_assert_eq!(&p, &want);
        }

        if from_destination || rw.src.is_none() {
            translate(&mut p, &inverse(&qk.reversed(), &rw), FULL).unwrap();
            prop_assert_eq!(&p, &orig);
        }
    }

    /// CHECKSUM_PARTIAL: after translation, completing the checksum over
    /// the segment gives the checksum etherparse computes for the
    /// translated packet. Reverse translation restores the partial sum.
    #[test]
    fn partial_checksum_mode(
        tcp in any::<bool>(),
        src in endpoint(),
        dst in endpoint(),
        rw in rewrite(),
        payload in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let kind = if tcp { Kind::Tcp { flags: 0x18, seq: 1 } } else { Kind::Udp { zero_csum: false } };
        let k = key_for(kind, src, dst);
        let mut p = build(kind, &k, &payload, false);
        let at = make_partial(&mut p);
        let orig = p.clone();
        translate(&mut p, &rw, PARTIAL).unwrap();
        // The field now holds the partial sum of the new pseudo-header.
        let mut fresh = build(kind, &expected_key(&k, &rw), &payload, false);
        let fresh_at = make_partial(&mut fresh);
        prop_assert_eq!(at, fresh_at);
        prop_assert_eq!(&p, &fresh);
        complete(&mut p, at);
        verify(&p, true);
        prop_assert_eq!(&p, &build(kind, &expected_key(&k, &rw), &payload, false));

        let mut back = fresh.clone();
        translate(&mut back, &inverse(&k, &rw), PARTIAL).unwrap();
        prop_assert_eq!(&back, &orig);
    }

    /// Garbage never panics: it is translated or refused, and a refused
    /// packet is left as it was.
    #[test]
    fn arbitrary_bytes_never_panic(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..120),
        rw in rewrite(),
        partial in any::<bool>(),
    ) {
        let before = bytes.clone();
        let _ = inspect(&bytes);
        if translate(&mut bytes, &rw, TranslateOptions { partial_csum: partial }).is_err() {
            prop_assert_eq!(bytes, before);
        }
    }

    /// Mangled ICMP errors (random quote bytes behind a valid outer
    /// header) never panic either.
    #[test]
    fn mangled_icmp_errors_never_panic(
        quote in proptest::collection::vec(any::<u8>(), 0..60),
        ihl in 5u8..16,
        rw in rewrite(),
    ) {
        let mut q = quote;
        if let Some(b) = q.first_mut() {
            *b = 0x40 | ihl;
        }
        let mut p = icmp_error(Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8), 3, 3, 0, &q);
        let before = p.clone();
        let _ = inspect(&p);
        if translate(&mut p, &rw, FULL).is_err() {
            prop_assert_eq!(p, before);
        }
    }
}

/// A "fragmentation needed" error (PMTU discovery) for an SNATed TCP
/// connection, with a quote of the minimum 8 transport bytes, is mapped
/// back to the inside host; the MTU survives.
#[test]
fn frag_needed_for_snat_flow() {
    let inside = SocketAddrV4::new(Ipv4Addr::new(172, 17, 0, 2), 40000);
    let outside = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 33000);
    let server = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 20), 443);
    let router = Ipv4Addr::new(192, 0, 2, 1);
    let kind = Kind::Tcp {
        flags: 0x18,
        seq: 99,
    };
    let sent = build(
        kind,
        &FlowKey::new(Protocol::Tcp, outside, server),
        &[0xab; 1400],
        false,
    );
    let mut err = icmp_error(router, *outside.ip(), 3, 4, 1280, &sent[..28]);
    translate(
        &mut err,
        &Rewrite {
            src: None,
            dst: Some(inside),
        },
        FULL,
    )
    .unwrap();
    verify(&err, false);
    let orig = build(
        kind,
        &FlowKey::new(Protocol::Tcp, inside, server),
        &[0xab; 1400],
        false,
    );
    assert_eq!(
        err,
        icmp_error(router, *inside.ip(), 3, 4, 1280, &orig[..28])
    );
    assert_eq!(&err[26..28], &1280u16.to_be_bytes());
}
