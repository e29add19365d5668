//! DNS messages through the gateway's resolver (RFC 1035 §4, RFC 6891
//! EDNS), over both transports, and DNS-over-TCP framing (RFC 1035
//! §4.2.2).
//!
//! Input: a control byte (bit 0: TCP transport; bits 1-7: where to cut
//! the stream for the framing decoder), then a DNS message.
//!
//! Checks: nothing panics; a reply is a response (QR set) with the query's
//! ID, no longer than the transport allows (512 bytes over UDP without
//! EDNS, the advertised size with it, 65535 over TCP); a parsed query's
//! own bounds are sane; the TCP decoder gives back exactly the framed
//! message however the stream is cut.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use weft_dns::{
    encode_frame, parse_query, Entry, FrameDecoder, Header, NameTable, Outcome, Resolver,
    ResolverConfig, Transport,
};

fn table() -> NameTable {
    let mut t = NameTable::with_domain("front").unwrap();
    t.set_subnet(Some((Ipv4Addr::new(10, 1, 0, 0), 24)));
    t.insert(
        1,
        Entry::new(&["web1", "www"], &[Ipv4Addr::new(10, 1, 0, 2)]),
    )
    .unwrap();
    t.insert(2, Entry::new(&["db"], &[Ipv4Addr::new(10, 1, 0, 3)]))
        .unwrap();
    t.insert(
        3,
        Entry::new(
            &["svc"],
            &[Ipv4Addr::new(10, 1, 0, 100), Ipv4Addr::new(10, 1, 0, 101)],
        )
        .without_ptr(),
    )
    .unwrap();
    t
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, msg)) = data.split_first() else {
        return;
    };
    let transport = if control & 1 == 1 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let table = table();
    let resolver = Resolver::new(ResolverConfig::default());
    match resolver.resolve(&table, msg, transport) {
        Outcome::Reply(reply) => {
            let header = Header::parse(&reply).expect("a reply has a header");
            assert!(header.qr(), "a reply without QR");
            assert_eq!(&reply[..2], &msg[..2], "a reply with another ID");
            let limit = match parse_query(msg) {
                Ok(q) => q.max_response_len(transport),
                Err(_) => 65535,
            };
            assert!(
                reply.len() <= limit.max(12),
                "{}-byte reply over a {limit}-byte limit",
                reply.len()
            );
        }
        Outcome::Forward(query) => {
            assert!(query.max_response_len(Transport::Udp) >= 512);
            assert!(query.max_response_len(Transport::Tcp) <= 65535);
        }
        Outcome::Drop => {}
    }

    // Framing: the message, cut anywhere, comes back whole.
    if let Ok(framed) = encode_frame(msg) {
        let cut = usize::from(control >> 1).min(framed.len());
        let mut decoder = FrameDecoder::new();
        decoder.push(&framed[..cut]);
        let early = decoder.next_message();
        decoder.push(&framed[cut..]);
        let got = early.or_else(|| decoder.next_message());
        assert_eq!(got.as_deref(), Some(msg));
        assert_eq!(decoder.buffered(), 0);
    }
    // Arbitrary stream bytes: the decoder never over-reads.
    let mut decoder = FrameDecoder::new();
    decoder.push(msg);
    while let Some(m) = decoder.next_message() {
        assert!(m.len() <= msg.len());
    }
});
