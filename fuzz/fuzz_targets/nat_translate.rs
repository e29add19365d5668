//! NAT translation in both directions (RFC 3022 NAPT, RFC 1624 incremental
//! checksums, RFC 5508 ICMP errors quoting a translated packet).
//!
//! Input: the new address and port (6 bytes), a flags byte (bit 0:
//! checksums are partial, as with virtio NEEDS_CSUM; bit 1: rewrite the
//! destination (DNAT) rather than the source (SNAT)), then an IPv4 packet.
//!
//! Checks: nothing panics; `inspect` and the translation agree on what
//! they accept; a translated TCP, UDP or echo packet carries the new
//! endpoint; translating back restores the original flow key.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use weft_nat::translate::{dnat, inspect, reverse_dnat, reverse_snat, snat};
use weft_nat::TranslateOptions;

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let to = SocketAddrV4::new(
        Ipv4Addr::new(data[0], data[1], data[2], data[3]),
        u16::from_be_bytes([data[4], data[5]]),
    );
    let opts = TranslateOptions {
        partial_csum: data[6] & 1 == 1,
    };
    let destination = data[6] & 2 == 2;
    let original = &data[7..];
    let before = inspect(original);
    let mut packet = original.to_vec();
    let done = if destination {
        dnat(&mut packet, to, opts)
    } else {
        snat(&mut packet, to, opts)
    };
    let (Ok(()), Ok(before)) = (done, before) else {
        return;
    };
    // Only the rewritten endpoint changed.
    let after = inspect(&packet).expect("a translated packet still parses");
    if before.icmp_error {
        return;
    }
    let (from, to_key) = (before.key, after.key);
    // For ICMP echo both "ports" are the identifier, so only the addresses
    // of the other endpoint stay as they were.
    if destination {
        assert_eq!(to_key.dst, to, "DNAT did not set the destination");
        assert_eq!(to_key.src.ip(), from.src.ip());
    } else {
        assert_eq!(to_key.src, to, "SNAT did not set the source");
        assert_eq!(to_key.dst.ip(), from.dst.ip());
    }
    // And back: the reply direction's undo applied to the translated
    // packet (as if it were mirrored) restores the original key.
    let mut back = packet.clone();
    if destination {
        reverse_snat(&mut back, from.dst, opts).expect("undoing DNAT");
    } else {
        reverse_dnat(&mut back, from.src, opts).expect("undoing SNAT");
    }
    assert_eq!(inspect(&back).expect("parses").key, from);
});
