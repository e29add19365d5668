//! End-to-end tests of weft-dns: wire fixtures, name table, resolver,
//! forwarder against fake upstreams on 127.0.0.1, and the TCP codec.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use weft_dns::tcp::{decode_frame, encode_frame, write_frame, FrameDecoder};
use weft_dns::wire::{self, class, rtype, MAX_POINTER_HOPS};
use weft_dns::{
    parse_query, Entry, Forwarder, Lookup, Name, NameTable, Outcome, Rcode, Resolver,
    ResolverConfig, Transport, WireError,
};

// ---------------------------------------------------------------------
// A tiny query encoder.

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A query with flags word `flags`, one question and optionally an OPT
/// record advertising `edns` bytes (version 0, DO clear).
fn query_with(id: u16, flags: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    out.extend_from_slice(&encode_name(name));
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&class::IN.to_be_bytes());
    if let Some(size) = edns {
        out.push(0);
        out.extend_from_slice(&rtype::OPT.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    out
}

/// A standard query with RD set.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    query_with(id, 0x0100, name, qtype, None)
}

/// `example.com A`, ID 0x1234, RD set, written out by hand.
const EXAMPLE_COM_A: [u8; 29] = [
    0x12, 0x34, // ID
    0x01, 0x00, // flags: RD
    0x00, 0x01, // QDCOUNT
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // AN, NS, AR
    7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, // QNAME
    0x00, 0x01, // QTYPE A
    0x00, 0x01, // QCLASS IN
];

fn header_msg(qd: u16, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![0xab, 0xcd, 0x01, 0x00];
    m.extend_from_slice(&qd.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(rest);
    m
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn table() -> NameTable {
    let mut t = NameTable::with_domain("mynet").unwrap();
    t.insert(1, Entry::new(&["web1", "frontend"], &[ip(10, 0, 0, 2)]))
        .unwrap();
    t.insert(2, Entry::new(&["db"], &[ip(10, 0, 0, 3)]))
        .unwrap();
    t.set_subnet(Some((ip(10, 0, 0, 0), 24)));
    t
}

fn reply(outcome: Outcome) -> Vec<u8> {
    match outcome {
        Outcome::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn rcode_of(msg: &[u8]) -> u8 {
    msg[3] & 0x0f
}

fn ancount(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[6], msg[7]])
}

// ---------------------------------------------------------------------
// Parsing.

#[test]
fn parses_fixed_example_com_fixture() {
    let q = parse_query(&EXAMPLE_COM_A).unwrap();
    assert_eq!(q.header.id, 0x1234);
    assert!(q.header.rd());
    assert!(!q.header.qr());
    assert_eq!(q.header.opcode(), 0);
    assert_eq!(q.question.name.to_string(), "example.com.");
    assert_eq!(q.question.name, Name::from_dotted("EXAMPLE.com").unwrap());
    assert_eq!(q.question.qtype, rtype::A);
    assert_eq!(q.question.qclass, class::IN);
    assert_eq!(q.edns, None);
    // The encoder agrees with the hand-written bytes.
    assert_eq!(query(0x1234, "example.com", rtype::A), EXAMPLE_COM_A);
}

#[test]
fn parses_encoded_queries_with_edns() {
    let msg = query_with(7, 0x0110, "a.b.c.", rtype::AAAA, Some(4096));
    let q = parse_query(&msg).unwrap();
    assert_eq!(q.question.name.label_count(), 3);
    assert_eq!(q.question.qtype, rtype::AAAA);
    assert!(q.header.cd());
    let e = q.edns.unwrap();
    assert_eq!(
        (e.udp_payload_size, e.version, e.dnssec_ok),
        (4096, 0, false)
    );
    assert_eq!(q.max_response_len(Transport::Udp), 1232);
    assert_eq!(q.max_response_len(Transport::Tcp), 65535);
    let small = parse_query(&query_with(7, 0, "x", 1, Some(100))).unwrap();
    assert_eq!(small.max_response_len(Transport::Udp), 512);
}

#[test]
fn rejects_pointer_loops() {
    // Pointer to itself.
    let m = header_msg(1, &[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(parse_query(&m), Err(WireError::PointerLoop { offset: 12 }));
    // Two pointers pointing at each other.
    let m = header_msg(1, &[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(parse_query(&m), Err(WireError::PointerLoop { offset: 14 }));
    // A label followed by a pointer back to the start of the name.
    let m = header_msg(1, &[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(parse_query(&m), Err(WireError::PointerLoop { offset: 14 }));
    // A long chain of distinct pointers is cut off too.
    let mut rest = Vec::new();
    for i in 0..(MAX_POINTER_HOPS + 2) {
        let target = 12 + 2 * (i + 1);
        rest.extend_from_slice(&[0xc0 | (target >> 8) as u8, target as u8]);
    }
    rest.extend_from_slice(&[0, 0, 1, 0, 1]);
    let m = header_msg(1, &rest);
    assert!(matches!(
        parse_query(&m),
        Err(WireError::PointerLoop { .. })
    ));
}

#[test]
fn rejects_out_of_bounds_and_malformed_names() {
    let m = header_msg(1, &[0xc0, 0xff, 0, 1, 0, 1]);
    assert_eq!(
        parse_query(&m),
        Err(WireError::PointerOutOfBounds {
            offset: 12,
            target: 255
        })
    );
    let m = header_msg(1, &[0xff, 0xff]);
    assert!(matches!(
        parse_query(&m),
        Err(WireError::PointerOutOfBounds { .. })
    ));
    // Pointer cut in half.
    let m = header_msg(1, &[0xc0]);
    assert_eq!(parse_query(&m), Err(WireError::Truncated { offset: 13 }));
    // Label longer than the message.
    let m = header_msg(1, &[5, b'a', b'b']);
    assert_eq!(parse_query(&m), Err(WireError::Truncated { offset: 13 }));
    // No terminating root label.
    let m = header_msg(1, &[1, b'a']);
    assert_eq!(parse_query(&m), Err(WireError::Truncated { offset: 14 }));
    // Reserved label types.
    let m = header_msg(1, &[0x41, 0, 0, 1, 0, 1]);
    assert_eq!(
        parse_query(&m),
        Err(WireError::BadLabelType {
            offset: 12,
            bits: 0x40
        })
    );
    let m = header_msg(1, &[0x80, 0, 0, 1, 0, 1]);
    assert!(matches!(
        parse_query(&m),
        Err(WireError::BadLabelType { bits: 0x80, .. })
    ));
    // 128 one-byte labels: 257 bytes uncompressed.
    let mut rest = Vec::new();
    for _ in 0..128 {
        rest.extend_from_slice(&[1, b'x']);
    }
    rest.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(
        parse_query(&header_msg(1, &rest)),
        Err(WireError::NameTooLong)
    );
    // 127 labels fit exactly (255 bytes).
    let mut rest = Vec::new();
    for _ in 0..127 {
        rest.extend_from_slice(&[1, b'x']);
    }
    rest.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(
        parse_query(&header_msg(1, &rest))
            .unwrap()
            .question
            .name
            .as_wire()
            .len(),
        255
    );
}

#[test]
fn follows_valid_backward_pointer_in_additional_section() {
    // An answer-section record whose owner is compressed against the
    // question must parse (pointers are followed, not just rejected).
    let mut m = query(9, "web1", rtype::A);
    m[7] = 1; // ANCOUNT
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 1, 2, 3, 4]);
    assert!(parse_query(&m).is_ok());
}

#[test]
fn rejects_other_malformed_messages() {
    assert_eq!(
        parse_query(&[0; 11]),
        Err(WireError::ShortHeader { len: 11 })
    );
    let mut resp = EXAMPLE_COM_A.to_vec();
    resp[2] |= 0x80;
    assert_eq!(parse_query(&resp), Err(WireError::NotAQuery));
    assert_eq!(
        parse_query(&header_msg(0, &[])),
        Err(WireError::QuestionCount(0))
    );
    assert_eq!(
        parse_query(&header_msg(2, &[0, 0, 1, 0, 1, 0, 0, 1, 0, 1])),
        Err(WireError::QuestionCount(2))
    );
    let mut trailing = EXAMPLE_COM_A.to_vec();
    trailing.push(0);
    assert_eq!(parse_query(&trailing), Err(WireError::TrailingBytes(1)));
    let mut short = EXAMPLE_COM_A.to_vec();
    short.pop();
    assert!(matches!(
        parse_query(&short),
        Err(WireError::Truncated { .. })
    ));
    // Two OPT records.
    let mut two = query_with(1, 0, "a", 1, Some(1232));
    two[11] = 2;
    two.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(parse_query(&two), Err(WireError::DuplicateOpt));
    // OPT with a non-root owner.
    let mut bad = query(1, "a", 1);
    bad[11] = 1;
    bad.extend_from_slice(&[1, b'a', 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(parse_query(&bad), Err(WireError::BadOpt));
    // OPT whose option overruns its RDATA.
    let mut bad = query(1, "a", 1);
    bad[11] = 1;
    bad.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 4, 0, 10, 0, 9]);
    assert_eq!(parse_query(&bad), Err(WireError::BadOpt));
}

// ---------------------------------------------------------------------
// Names.

#[test]
fn names_are_case_insensitive_and_domain_qualified() {
    let t = table();
    let web = Lookup::Found(vec![ip(10, 0, 0, 2)]);
    for n in [
        "web1",
        "WEB1",
        "Web1.",
        "web1.mynet",
        "WEB1.MyNet.",
        "FrontEnd",
    ] {
        assert_eq!(t.lookup(n), web, "{n}");
    }
    assert_eq!(t.lookup("web9.mynet"), Lookup::NxDomain);
    assert_eq!(t.lookup("mynet"), Lookup::NxDomain);
    assert_eq!(t.lookup("web9"), Lookup::NotLocal);
    assert_eq!(t.lookup("web1.othernet"), Lookup::NotLocal);
    assert_eq!(t.lookup("example.com"), Lookup::NotLocal);
    assert_eq!(t.lookup("."), Lookup::NotLocal);
    let wire_name = Name::from_dotted("wEb1.MYNET").unwrap();
    assert_eq!(t.lookup_name(&wire_name), web);
    assert_eq!(t.lookup_ptr(ip(10, 0, 0, 2)).as_deref(), Some("web1.mynet"));
    assert_eq!(t.lookup_ptr(ip(10, 0, 0, 9)), None);
}

#[test]
fn table_updates_by_owner() {
    let mut t = table();
    // Replacing an owner's entry drops its old names and addresses.
    t.insert(1, Entry::new(&["web1-new"], &[ip(10, 0, 0, 4)]))
        .unwrap();
    assert_eq!(t.lookup("web1"), Lookup::NotLocal);
    assert_eq!(t.lookup("web1-new"), Lookup::Found(vec![ip(10, 0, 0, 4)]));
    assert_eq!(t.lookup_ptr(ip(10, 0, 0, 2)), None);
    // Shared alias: union in registration order; PTR only where asked.
    t.insert(
        3,
        Entry::new(&["svc"], &[ip(10, 0, 0, 5), ip(10, 0, 0, 5)]).without_ptr(),
    )
    .unwrap();
    t.insert(4, Entry::new(&["SVC", "svc-b"], &[ip(10, 0, 0, 6)]))
        .unwrap();
    assert_eq!(
        t.lookup("svc"),
        Lookup::Found(vec![ip(10, 0, 0, 5), ip(10, 0, 0, 6)])
    );
    assert_eq!(t.lookup_ptr(ip(10, 0, 0, 5)), None);
    assert_eq!(t.lookup_ptr(ip(10, 0, 0, 6)).as_deref(), Some("svc.mynet"));
    assert_eq!(t.len(), 4);
    assert!(t.remove(3));
    assert!(!t.remove(3));
    assert_eq!(t.lookup("svc"), Lookup::Found(vec![ip(10, 0, 0, 6)]));
    assert!(t.remove(4));
    assert_eq!(t.lookup("svc.mynet"), Lookup::NxDomain);
    // Invalid names leave the table unchanged.
    assert!(t.insert(5, Entry::new(&["ok", "not ok"], &[])).is_err());
    assert!(t.insert(5, Entry::new(&[], &[])).is_err());
    assert_eq!(t.lookup("ok"), Lookup::NotLocal);
    assert_eq!(t.len(), 2);
    // Without a domain there is no NXDOMAIN zone.
    let mut plain = NameTable::new();
    plain
        .insert(1, Entry::new(&["db.internal"], &[ip(10, 1, 0, 2)]))
        .unwrap();
    assert_eq!(
        plain.lookup("DB.Internal."),
        Lookup::Found(vec![ip(10, 1, 0, 2)])
    );
    assert_eq!(plain.lookup("x.internal"), Lookup::NotLocal);
    assert_eq!(
        plain.lookup_ptr(ip(10, 1, 0, 2)).as_deref(),
        Some("db.internal")
    );
}

// ---------------------------------------------------------------------
// Responses, byte-exact.

#[test]
fn a_answer_is_byte_exact() {
    let mut t = NameTable::new();
    t.insert(
        7,
        Entry::new(&["web1"], &[ip(10, 0, 0, 2), ip(10, 0, 0, 3)]),
    )
    .unwrap();
    let msg = query(0xbeef, "web1", rtype::A);
    let got = reply(Resolver::default().resolve(&t, &msg, Transport::Udp));
    #[rustfmt::skip]
    let want: &[u8] = &[
        0xbe, 0xef,             // ID echoed
        0x85, 0x80,             // QR, opcode 0, AA, RD, RA, NOERROR
        0x00, 0x01, 0x00, 0x02, // QD 1, AN 2
        0x00, 0x00, 0x00, 0x00, // NS 0, AR 0
        4, b'w', b'e', b'b', b'1', 0, 0x00, 0x01, 0x00, 0x01, // question
        0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x58, 0x00, 0x04, 10, 0, 0, 2,
        0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x58, 0x00, 0x04, 10, 0, 0, 3,
    ];
    assert_eq!(got, want);
}

#[test]
fn ptr_answer_is_byte_exact() {
    let msg = query_with(0x0001, 0x0000, "2.0.0.10.in-addr.arpa", rtype::PTR, None);
    let resolver = Resolver::new(ResolverConfig {
        ttl: 30,
        forward: true,
    });
    let got = reply(resolver.resolve(&table(), &msg, Transport::Udp));
    let mut want = vec![
        0x00, 0x01, // ID
        0x84, 0x80, // QR, AA, RA (RD was clear), NOERROR
        0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    ];
    want.extend_from_slice(b"\x012\x010\x010\x0210\x07in-addr\x04arpa\x00\x00\x0c\x00\x01");
    want.extend_from_slice(&[
        0xc0, 0x0c, 0x00, 0x0c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x1e, 0x00, 0x0c,
    ]);
    want.extend_from_slice(b"\x04web1\x05mynet\x00");
    assert_eq!(got, want);
}

#[test]
fn edns_is_echoed_minimally_and_badvers() {
    let msg = query_with(5, 0x0100, "db", rtype::A, Some(4096));
    let got = reply(Resolver::default().resolve(&table(), &msg, Transport::Udp));
    assert_eq!(&got[10..12], &[0, 1]); // ARCOUNT
    assert_eq!(
        &got[got.len() - 11..],
        &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(&got[got.len() - 15..got.len() - 11], &[10, 0, 0, 3]);

    // DO bit copied, version 1 answered with BADVERS (ext rcode 1).
    let mut v1 = msg.clone();
    let n = v1.len();
    v1[n - 5] = 1; // version
    v1[n - 4] = 0x80; // DO
    let got = reply(Resolver::default().resolve(&table(), &v1, Transport::Udp));
    assert_eq!(rcode_of(&got), 0);
    assert_eq!(ancount(&got), 0);
    assert_eq!(
        &got[got.len() - 11..],
        &[0, 0, 41, 0x04, 0xd0, 1, 0, 0x80, 0, 0, 0]
    );
}

#[test]
fn large_answers_truncate_over_udp() {
    let mut t = NameTable::new();
    let addrs: Vec<Ipv4Addr> = (0..100).map(|i| ip(10, 0, 1, i)).collect();
    t.insert(1, Entry::new(&["many"], &addrs)).unwrap();
    let r = Resolver::default();

    let plain = reply(r.resolve(&t, &query(1, "many", rtype::A), Transport::Udp));
    assert!(plain.len() <= 512);
    assert_ne!(plain[2] & 0x02, 0, "TC set");
    // 12 header + 10 question, 16 per record.
    assert_eq!(ancount(&plain) as usize, (512 - 22) / 16);
    assert_eq!(plain.len(), 22 + 16 * ((512 - 22) / 16));

    let edns = query_with(1, 0x0100, "many", rtype::A, Some(1232));
    let big = reply(r.resolve(&t, &edns, Transport::Udp));
    assert!(big.len() <= 1232);
    assert_eq!(ancount(&big) as usize, (1232 - 22 - 11) / 16);
    assert_ne!(big[2] & 0x02, 0);

    let tcp = reply(r.resolve(&t, &query(1, "many", rtype::A), Transport::Tcp));
    assert_eq!(ancount(&tcp), 100);
    assert_eq!(tcp[2] & 0x02, 0);
}

#[test]
fn resolver_rcodes() {
    let t = table();
    let r = Resolver::default();
    let resolve = |m: &[u8]| r.resolve(&t, m, Transport::Udp);

    // Inside the domain but unknown: authoritative NXDOMAIN, question copied.
    let m = query(3, "nope.mynet", rtype::A);
    let got = reply(resolve(&m));
    assert_eq!(rcode_of(&got), 3);
    assert_eq!(got[2], 0x85); // QR AA RD
    assert_eq!(&got[12..], &m[12..]);

    // AAAA for a local name: NODATA.
    let got = reply(resolve(&query(3, "web1", rtype::AAAA)));
    assert_eq!((rcode_of(&got), ancount(&got)), (0, 0));
    assert_ne!(got[2] & 0x04, 0);

    // Unregistered reverse name inside the subnet: NXDOMAIN.
    let got = reply(resolve(&query(3, "99.0.0.10.in-addr.arpa", rtype::PTR)));
    assert_eq!(rcode_of(&got), 3);

    // Reverse name of a local address asked for A: NODATA.
    let got = reply(resolve(&query(3, "2.0.0.10.in-addr.arpa", rtype::A)));
    assert_eq!((rcode_of(&got), ancount(&got)), (0, 0));

    // CHAOS class: REFUSED.
    let mut ch = query(3, "version.bind", rtype::TXT);
    let n = ch.len();
    ch[n - 1] = 3;
    assert_eq!(rcode_of(&reply(resolve(&ch))), 5);

    // Opcode STATUS (2): NOTIMP with the question; garbage with opcode
    // UPDATE (5): header-only NOTIMP.
    let status = query_with(3, 0x1000, "web1", rtype::A, None);
    let got = reply(resolve(&status));
    assert_eq!((rcode_of(&got), got[2]), (4, 0x90));
    assert_eq!(&got[12..], &status[12..]);
    let got = reply(resolve(&header_msg(7, &[0xc0])));
    assert_eq!(rcode_of(&got), 1); // FORMERR for opcode QUERY
    let mut update = header_msg(1, &[0xc0]);
    update[2] = 0x28;
    let got = reply(resolve(&update));
    assert_eq!(got, vec![0xab, 0xcd, 0xa8, 0x84, 0, 0, 0, 0, 0, 0, 0, 0]);

    // Responses and runts are never answered.
    let mut resp = EXAMPLE_COM_A.to_vec();
    resp[2] |= 0x80;
    assert_eq!(resolve(&resp), Outcome::Drop);
    assert_eq!(resolve(&[1, 2, 3]), Outcome::Drop);

    // Not local: forward, carrying the parsed query.
    match resolve(&EXAMPLE_COM_A) {
        Outcome::Forward(q) => assert_eq!(q, parse_query(&EXAMPLE_COM_A).unwrap()),
        other => panic!("{other:?}"),
    }
    // Reverse names outside the subnet are forwarded too.
    assert!(matches!(
        resolve(&query(1, "1.2.0.192.in-addr.arpa", rtype::PTR)),
        Outcome::Forward(_)
    ));
}

#[test]
fn unknown_name_without_upstream_is_servfail() {
    let r = Resolver::new(ResolverConfig {
        forward: false,
        ..ResolverConfig::default()
    });
    let got = reply(r.resolve(&table(), &EXAMPLE_COM_A, Transport::Udp));
    assert_eq!(&got[..4], &[0x12, 0x34, 0x81, 0x82]); // QR RD RA SERVFAIL, no AA
    assert_eq!(&got[12..], &EXAMPLE_COM_A[12..]);

    // The same through a forwarder with no upstreams: immediate SERVFAIL.
    let q = parse_query(&EXAMPLE_COM_A).unwrap();
    let start = Instant::now();
    let fwd = Forwarder::new(Vec::new()).forward(&q, &EXAMPLE_COM_A);
    assert!(start.elapsed() < Duration::from_millis(100));
    assert_eq!(fwd, got);
}

// ---------------------------------------------------------------------
// Forwarder against fake upstreams.

/// A reply to `query` with `id`: QR RA set and one A record 192.0.2.7.
fn upstream_reply(query: &[u8], id: u16, rcode: u8) -> Vec<u8> {
    let mut r = query.to_vec();
    r[..2].copy_from_slice(&id.to_be_bytes());
    r[2] |= 0x80;
    r[3] = 0x80 | rcode;
    r[7] = 1;
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
    r
}

/// Spawns a fake upstream on 127.0.0.1 that, for each of `rounds`
/// queries, sends the datagrams `respond` makes from the query bytes.
fn fake_upstream<F>(rounds: usize, respond: F) -> (SocketAddr, thread::JoinHandle<Vec<Vec<u8>>>)
where
    F: Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
{
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let addr = sock.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..rounds {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                break;
            };
            for d in respond(&buf[..n]) {
                sock.send_to(&d, from).unwrap();
            }
            seen.push(buf[..n].to_vec());
        }
        seen
    });
    (addr, handle)
}

#[test]
fn forwarder_relays_upstream_answer() {
    let (addr, h) = fake_upstream(1, |q| {
        let id = u16::from_be_bytes([q[0], q[1]]);
        vec![upstream_reply(q, id, 0)]
    });
    let raw = query_with(0x4242, 0x0100, "Example.COM", rtype::A, Some(1232));
    let q = parse_query(&raw).unwrap();
    let got = Forwarder::new(vec![addr]).forward(&q, &raw);
    let seen = h.join().unwrap();
    assert_eq!(seen.len(), 1);
    // The upstream saw the query verbatim apart from the ID.
    assert_eq!(&seen[0][2..], &raw[2..]);
    let sent_id = u16::from_be_bytes([seen[0][0], seen[0][1]]);
    // The client gets the upstream's bytes with its own ID back.
    let mut want = upstream_reply(&seen[0], sent_id, 0);
    want[..2].copy_from_slice(&0x4242u16.to_be_bytes());
    assert_eq!(got, want);
}

#[test]
fn forwarder_ignores_wrong_id_and_wrong_question() {
    let (addr, h) = fake_upstream(1, |q| {
        let id = u16::from_be_bytes([q[0], q[1]]);
        let mut other_q = upstream_reply(q, id, 0);
        other_q[13] = b'X'; // question name changed
        let mut not_response = upstream_reply(q, id, 0);
        not_response[2] &= 0x7f;
        vec![
            upstream_reply(q, id.wrapping_add(1), 0),
            other_q,
            not_response,
            b"junk".to_vec(),
            upstream_reply(q, id, 0),
        ]
    });
    let raw = query(0x0a0b, "example.com", rtype::A);
    let q = parse_query(&raw).unwrap();
    let got = Forwarder::new(vec![addr]).try_forward(&q, &raw).unwrap();
    let seen = h.join().unwrap();
    let sent_id = u16::from_be_bytes([seen[0][0], seen[0][1]]);
    let mut want = upstream_reply(&seen[0], sent_id, 0);
    want[..2].copy_from_slice(&[0x0a, 0x0b]);
    assert_eq!(got, want);
}

#[test]
fn forwarder_dead_upstream_servfails_on_deadline() {
    // Bound but never read: a silent upstream.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let q = parse_query(&EXAMPLE_COM_A).unwrap();
    let start = Instant::now();
    let got = Forwarder::new(vec![addr]).forward(&q, &EXAMPLE_COM_A);
    let elapsed = start.elapsed();
    assert!(
        elapsed > Duration::from_millis(1500),
        "deadline cut short: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2200),
        "too slow: {elapsed:?}"
    );
    assert_eq!(&got[..4], &[0x12, 0x34, 0x81, 0x82]);
    assert_eq!(&got[12..], &EXAMPLE_COM_A[12..]);
    drop(silent);
}

#[test]
fn forwarder_moves_on_from_failing_upstreams() {
    // First upstream answers SERVFAIL, second answers properly.
    let (bad, hb) = fake_upstream(1, |q| {
        let id = u16::from_be_bytes([q[0], q[1]]);
        vec![upstream_reply(q, id, 2)]
    });
    let (good, hg) = fake_upstream(1, |q| {
        let id = u16::from_be_bytes([q[0], q[1]]);
        vec![upstream_reply(q, id, 0)]
    });
    let q = parse_query(&EXAMPLE_COM_A).unwrap();
    let fwd = Forwarder::new(vec![bad, good]).with_timeout(Duration::from_secs(2));
    let got = fwd.forward(&q, &EXAMPLE_COM_A);
    hb.join().unwrap();
    hg.join().unwrap();
    assert_eq!(rcode_of(&got), 0);
    assert_eq!(&got[..2], &[0x12, 0x34]);
    assert_eq!(&got[got.len() - 4..], &[192, 0, 2, 7]);

    // Only a SERVFAIL upstream: its SERVFAIL is relayed.
    let (bad, hb) = fake_upstream(1, |q| {
        let id = u16::from_be_bytes([q[0], q[1]]);
        vec![upstream_reply(q, id, 2)]
    });
    let got = Forwarder::new(vec![bad]).forward(&q, &EXAMPLE_COM_A);
    hb.join().unwrap();
    assert_eq!(rcode_of(&got), 2);
    assert_eq!(ancount(&got), 1);

    // A closed port fails fast (ICMP port unreachable), then the next one.
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let (good, hg) = fake_upstream(1, |q| {
        let id = u16::from_be_bytes([q[0], q[1]]);
        vec![upstream_reply(q, id, 0)]
    });
    let start = Instant::now();
    let got = Forwarder::new(vec![closed, good]).forward(&q, &EXAMPLE_COM_A);
    hg.join().unwrap();
    assert_eq!(rcode_of(&got), 0);
    assert!(start.elapsed() < Duration::from_millis(1500));
}

// ---------------------------------------------------------------------
// TCP codec.

#[test]
fn tcp_codec_round_trip() {
    let framed = encode_frame(&EXAMPLE_COM_A).unwrap();
    assert_eq!(&framed[..2], &[0, 29]);
    let (msg, used) = decode_frame(&framed).unwrap();
    assert_eq!((msg, used), (&EXAMPLE_COM_A[..], 31));
    assert_eq!(decode_frame(&framed[..30]), None);
    assert_eq!(decode_frame(&framed[..1]), None);
    assert!(encode_frame(&vec![0; 65536]).is_err());
    assert_eq!(encode_frame(&vec![0; 65535]).unwrap().len(), 65537);

    // Two messages fed a byte at a time.
    let mut stream = Vec::new();
    write_frame(&EXAMPLE_COM_A, &mut stream).unwrap();
    write_frame(b"second", &mut stream).unwrap();
    let mut dec = FrameDecoder::new();
    let mut out = Vec::new();
    for b in &stream {
        dec.push(std::slice::from_ref(b));
        while let Some(m) = dec.next_message() {
            out.push(m);
        }
    }
    assert_eq!(out, vec![EXAMPLE_COM_A.to_vec(), b"second".to_vec()]);
    assert_eq!(dec.buffered(), 0);
}

// ---------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_query(&bytes);
        let t = table();
        let _ = Resolver::default().resolve(&t, &bytes, Transport::Udp);
        let _ = wire::header_only_response(&bytes, Rcode::FormErr);
    }

    #[test]
    fn mutated_queries_never_panic(
        pos in 0usize..64,
        val in any::<u8>(),
        cut in 0usize..64,
        edns in any::<bool>(),
    ) {
        let mut m = query_with(1, 0x0100, "web1.mynet", rtype::A, edns.then_some(1232));
        let pos = pos % m.len();
        m[pos] = val;
        m.truncate(m.len() - cut.min(m.len()));
        let t = table();
        if let Outcome::Reply(r) = Resolver::default().resolve(&t, &m, Transport::Udp) {
            prop_assert!(r.len() <= 1232);
            prop_assert!(r.len() >= 12);
        }
    }

    #[test]
    fn tcp_frames_round_trip(msgs in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..300), 0..8), chunk in 1usize..50) {
        let mut stream = Vec::new();
        for m in &msgs {
            write_frame(m, &mut stream).unwrap();
        }
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        for c in stream.chunks(chunk) {
            dec.push(c);
            while let Some(m) = dec.next_message() {
                out.push(m);
            }
        }
        prop_assert_eq!(out, msgs);
    }

    #[test]
    fn dotted_names_round_trip(labels in proptest::collection::vec("[a-zA-Z0-9_-]{1,20}", 1..6)) {
        let text = labels.join(".");
        let name = Name::from_dotted(&text).unwrap();
        prop_assert_eq!(name.to_string(), format!("{text}."));
        let mut t = NameTable::new();
        t.insert(1, Entry::new(&[&text], &[Ipv4Addr::LOCALHOST])).unwrap();
        prop_assert_eq!(
            t.lookup_name(&Name::from_dotted(&text.to_ascii_uppercase()).unwrap()),
            Lookup::Found(vec![Ipv4Addr::LOCALHOST])
        );
    }
}

/// A query that came over TCP goes upstream over TCP (RFC 7766 §5): the
/// fake upstream listens on TCP only, reads one length-prefixed query and
/// answers it in two writes.
#[test]
fn forwarder_over_tcp_relays_the_answer() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut q).unwrap();
        let id = u16::from_be_bytes([q[0], q[1]]);
        // A reply to another ID first: ignored.
        for reply in [
            upstream_reply(&q, id.wrapping_add(1), 0),
            upstream_reply(&q, id, 0),
        ] {
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            let (a, b) = framed.split_at(3);
            s.write_all(a).unwrap();
            s.flush().unwrap();
            thread::sleep(Duration::from_millis(20));
            s.write_all(b).unwrap();
        }
        q
    });
    let raw = query(0x5151, "example.com", rtype::A);
    let q = parse_query(&raw).unwrap();
    let got = Forwarder::new(vec![addr])
        .try_forward_over(weft_dns::Upstream::Tcp, &q, &raw)
        .unwrap();
    let seen = h.join().unwrap();
    assert_eq!(&seen[2..], &raw[2..]);
    let sent_id = u16::from_be_bytes([seen[0], seen[1]]);
    let mut want = upstream_reply(&seen, sent_id, 0);
    want[..2].copy_from_slice(&0x5151u16.to_be_bytes());
    assert_eq!(got, want);
    // Nobody listening: SERVFAIL, not a hang.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let got = Forwarder::new(vec![dead])
        .with_timeout(Duration::from_millis(500))
        .forward_over(weft_dns::Upstream::Tcp, &q, &raw);
    assert_eq!(got[3] & 0x0f, 2, "SERVFAIL");
}
