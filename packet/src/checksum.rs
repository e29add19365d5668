//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A NAT rewrites addresses and ports, which appear in the IPv4 header
//! checksum and (through the pseudo-header) in the TCP and UDP checksums.
//! Recomputing over the whole segment costs O(n) per packet;
//! [`update16`] and [`update32`] patch a checksum in O(1) instead, using
//! RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, which — unlike the older
//! RFC 1141 formula — never yields the `0xFFFF` ("negative zero") that a
//! full recomputation of a checksum over non-zero data cannot produce.
//!
//! All sums are ones' complement sums of big-endian 16-bit words
//! (`u32` values here are partial sums, folded so they never overflow).

use std::net::Ipv4Addr;

/// Folds the carries of a 32-bit partial sum into its low 16 bits
/// (end-around carry).
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Adds `data` to the partial ones' complement sum `initial`.
///
/// `data` is read as big-endian 16-bit words; an odd trailing byte is
/// padded with a zero byte on the right (RFC 1071 §4.1). The result is
/// folded to 16 bits, so partial sums can be chained without overflow as
/// long as every piece but the last has even length.
pub fn sum(initial: u32, data: &[u8]) -> u32 {
    // RFC 1071 §2: the sum is independent of byte order and may be taken
    // over wider words, folding the carries back in. Adding 32-bit native
    // words into a 64-bit accumulator cannot overflow below 16 GiB, has no
    // carry chain, and so vectorises; the result is folded to 16 bits and
    // swapped to network order at the end.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        acc += u64::from(u32::from_ne_bytes(word.try_into().expect("4-byte word")));
    }
    finish(initial, acc, words.remainder())
}

/// Adds the last 0 to 3 bytes (zero-padded on the right, RFC 1071's rule
/// for an odd length), folds to 16 bits, converts to network order and
/// adds `initial`.
#[inline]
fn finish(initial: u32, mut acc: u64, rest: &[u8]) -> u32 {
    if !rest.is_empty() {
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        acc += u64::from(u32::from_ne_bytes(last));
    }
    let folded = (acc & 0xffff_ffff) + (acc >> 32);
    let folded = (folded & 0xffff_ffff) + (folded >> 32);
    let network = u16::from_be(fold(folded as u32));
    u32::from(fold(initial + u32::from(network)))
}

/// Copies `src` into `dst` and returns the partial sum of `src` added to
/// `initial`, as [`sum`] computes it — in one pass over the data instead of
/// two (RFC 1071 §2(C) suggests combining the sum with the copy).
///
/// # Panics
///
/// If `dst` and `src` differ in length.
pub fn copy_and_sum(initial: u32, dst: &mut [u8], src: &[u8]) -> u32 {
    assert_eq!(dst.len(), src.len(), "copy_and_sum needs equal lengths");
    let mut acc: u64 = 0;
    let mut from = src.chunks_exact(4);
    let mut to = dst.chunks_exact_mut(4);
    for (d, s) in (&mut to).zip(&mut from) {
        let word: [u8; 4] = s.try_into().expect("4-byte word");
        d.copy_from_slice(&word);
        acc += u64::from(u32::from_ne_bytes(word));
    }
    let rest = from.remainder();
    to.into_remainder().copy_from_slice(rest);
    finish(initial, acc, rest)
}

/// The Internet checksum of `data`: the ones' complement of the ones'
/// complement sum of its 16-bit words (RFC 1071).
///
/// Verifying a buffer that contains its own checksum yields `0`.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// The checksum of `data` with a partial sum (e.g. from
/// [`pseudo_header_sum_v4`]) added in.
pub fn checksum_with(initial: u32, data: &[u8]) -> u16 {
    !fold(sum(initial, data))
}

/// Patches `old_checksum` after a 16-bit field changed from `old` to `new`
/// (RFC 1624 eqn. 3).
pub fn update16(old_checksum: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!old_checksum) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// Patches `old_checksum` after a 32-bit field starting on an even offset
/// (such as an IPv4 address) changed from `old` to `new` (RFC 1624 eqn. 3
/// applied to both halves).
pub fn update32(old_checksum: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!old_checksum)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!old as u16)
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

/// Partial sum of the IPv4 pseudo-header used by TCP and UDP checksums
/// (RFC 793 §3.1, RFC 768): source and destination address, zero, the
/// protocol number and the TCP/UDP length.
pub fn pseudo_header_sum_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    let total =
        (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(proto) + u32::from(len);
    u32::from(fold(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_and_sum_matches_sum_for_every_length_and_offset() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
        for start in 0..9 {
            for len in 0..(data.len() - start) {
                let src = &data[start..start + len];
                let mut dst = vec![0u8; len];
                assert_eq!(copy_and_sum(0x1234, &mut dst, src), sum(0x1234, src));
                assert_eq!(dst, src);
            }
        }
    }
    use proptest::prelude::*;

    /// RFC 1071 §3 numerical example.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
        // Appending the checksum makes the whole verify to zero.
        let mut with = data.to_vec();
        with.extend_from_slice(&0x220du16.to_be_bytes());
        assert_eq!(checksum(&with), 0);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0xab]), !0xab00);
        assert_eq!(
            checksum(&[0x12, 0x34, 0x56]),
            checksum(&[0x12, 0x34, 0x56, 0x00])
        );
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn large_buffers_do_not_overflow() {
        let data = vec![0xffu8; 1 << 20];
        assert_eq!(checksum(&data), 0x0000);
        let data = vec![0x80u8; (1 << 20) + 1];
        assert_eq!(checksum(&data), {
            // n words of 0x8080 plus 0x8000; compute with u64 directly.
            let n = (1u64 << 20) / 2;
            let mut s = n * 0x8080 + 0x8000;
            while s >> 16 != 0 {
                s = (s & 0xffff) + (s >> 16);
            }
            !(s as u16)
        });
    }

    /// A real IPv4 header (from Wikipedia's "IPv4 header checksum").
    #[test]
    fn ipv4_header_fixture() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        hdr[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
        // SNAT 192.168.0.1 -> 203.0.113.7 incrementally.
        let old = u32::from(Ipv4Addr::new(192, 168, 0, 1));
        let new = u32::from(Ipv4Addr::new(203, 0, 113, 7));
        let patched = update32(0xb861, old, new);
        hdr[12..16].copy_from_slice(&new.to_be_bytes());
        hdr[10..12].fill(0);
        assert_eq!(patched, checksum(&hdr));
    }

    /// RFC 1624 §4: the field 0x5555 becomes 0x3285 where the rest of the
    /// header sums to 0xCD7A. The right answer is 0x0000; RFC 1141's
    /// formula gave 0xFFFF.
    #[test]
    fn rfc1624_corner_case() {
        let mut data = [0xcd, 0x7a, 0x55, 0x55];
        let hc = checksum(&data);
        assert_eq!(hc, 0xdd2f);
        data[2..4].copy_from_slice(&[0x32, 0x85]);
        assert_eq!(checksum(&data), 0x0000);
        assert_eq!(update16(hc, 0x5555, 0x3285), 0x0000);
        // RFC 1141 (HC' = HC + m + ~m') would have produced -0.
        let rfc1141 = fold(u32::from(hc) + 0x5555 + u32::from(!0x3285u16));
        assert_eq!(rfc1141, 0xffff);
    }

    /// The one case where eqn. 3 and recomputation differ in bits: data
    /// that becomes all zeros sums to +0 (checksum 0xFFFF), while eqn. 3
    /// yields 0x0000 (-0 complemented). Equal as ones' complement numbers.
    #[test]
    fn all_zero_data_is_the_only_mismatch() {
        let mut data = [0x00, 0x00, 0x12, 0x34];
        let hc = checksum(&data);
        data[2..4].fill(0);
        assert_eq!(checksum(&data), 0xffff);
        assert_eq!(update16(hc, 0x1234, 0x0000), 0x0000);
        assert_same(update16(hc, 0x1234, 0x0000), &data);
    }

    #[test]
    fn pseudo_header_matches_bytes() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(172, 16, 254, 9);
        let bytes = [10, 0, 0, 1, 172, 16, 254, 9, 0, 17, 0x01, 0x2c];
        assert_eq!(pseudo_header_sum_v4(src, dst, 17, 300), sum(0, &bytes));
    }

    #[test]
    fn udp_checksum_matches_etherparse() {
        use etherparse::PacketBuilder;
        let src = Ipv4Addr::new(192, 0, 2, 1);
        let dst = Ipv4Addr::new(198, 51, 100, 20);
        let mut pkt = Vec::new();
        PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
            .udp(40000, 53)
            .write(&mut pkt, b"odd-length payload!")
            .unwrap();
        let udp = &pkt[20..];
        let wire = u16::from_be_bytes([udp[6], udp[7]]);
        let mut zeroed = udp.to_vec();
        zeroed[6..8].fill(0);
        let len = u16::try_from(udp.len()).unwrap();
        let ours = checksum_with(pseudo_header_sum_v4(src, dst, 17, len), &zeroed);
        assert_eq!(ours, wire);
        assert_eq!(checksum(&pkt[..20]), 0, "IPv4 header verifies");
    }

    /// Replaces the 16-bit word at `word` in `data`, returning the old one.
    fn put16(data: &mut [u8], word: usize, v: u16) -> u16 {
        let old = u16::from_be_bytes([data[2 * word], data[2 * word + 1]]);
        data[2 * word..2 * word + 2].copy_from_slice(&v.to_be_bytes());
        old
    }

    /// Data whose checksum changes: at least one 16-bit word, possibly an
    /// odd trailing byte.
    fn data_and_word() -> impl Strategy<Value = (Vec<u8>, usize)> {
        proptest::collection::vec(any::<u8>(), 2..200).prop_flat_map(|d| {
            let words = d.len() / 2;
            (Just(d), 0..words)
        })
    }

    /// Full recomputation and RFC 1624 eqn. 3 agree, except when the
    /// updated data is all zeros: its sum is +0, so the recomputed checksum
    /// is 0xFFFF, while the incremental one is 0x0000. Both are the same
    /// ones' complement number; RFC 1624 §3 notes this cannot happen for an
    /// IPv4 header (the version field is never zero).
    fn assert_same(incremental: u16, data: &[u8]) {
        let full = checksum(data);
        if data.iter().all(|&b| b == 0) {
            assert_eq!((incremental, full), (0x0000, 0xffff));
        } else {
            assert_eq!(incremental, full);
        }
    }

    proptest! {
        #[test]
        fn update16_equals_recompute((mut data, word) in data_and_word(), new in any::<u16>()) {
            let hc = checksum(&data);
            let old = put16(&mut data, word, new);
            assert_same(update16(hc, old, new), &data);
        }

        /// Pick the new value so that the new sum is exactly 0xFFFF, i.e. the
        /// correct new checksum is 0x0000: the case RFC 1141 got wrong.
        #[test]
        fn update16_negative_zero_case((mut data, word) in data_and_word()) {
            let mut rest = data.clone();
            put16(&mut rest, word, 0);
            let new = !fold(sum(0, &rest));
            let hc = checksum(&data);
            let old = put16(&mut data, word, new);
            prop_assert_eq!(checksum(&data), 0x0000);
            assert_same(update16(hc, old, new), &data);
        }

        #[test]
        fn update32_equals_recompute(
            (mut data, word) in proptest::collection::vec(any::<u8>(), 4..200)
                .prop_flat_map(|d| { let words = d.len() / 2; (Just(d), 0..words - 1) }),
            new in any::<u32>(),
        ) {
            let hc = checksum(&data);
            let old_hi = put16(&mut data, word, (new >> 16) as u16);
            let old_lo = put16(&mut data, word + 1, new as u16);
            let old = (u32::from(old_hi) << 16) | u32::from(old_lo);
            assert_same(update32(hc, old, new), &data);
        }

        #[test]
        fn chained_sums_equal_one_sum(a in proptest::collection::vec(any::<u8>(), 0..100), b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut a = a;
            if a.len() % 2 == 1 { a.pop(); }
            let whole: Vec<u8> = a.iter().chain(&b).copied().collect();
            prop_assert_eq!(checksum_with(sum(0, &a), &b), checksum(&whole));
        }
    }
}
