//! What a network's gateway does to packets: answer ARP for its address
//! (RFC 826), answer ICMP echo (RFC 792), forward IPv4 as a router does
//! (RFC 1812 §5.3: validate, decrement TTL, update the checksum
//! incrementally per RFC 1624, fragment per RFC 791 §3.2), and send ICMP
//! errors under the rules of RFC 1812 §4.3.2.7.
//!
//! Replies are rewritten in place in the received buffer wherever possible;
//! only ICMP errors and fragments are built anew, into a caller-owned scratch
//! buffer. Nothing here allocates.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use weft_packet::checksum::{checksum, update16};
use weft_packet::icmp::IcmpPacket;
use weft_packet::ipv4::{Ipv4Error, Ipv4Packet};
use weft_packet::meta::Ipv4Meta;

use crate::frame::Offload;

use weft_packet::{
    arp, ethernet, icmp, ipv4, read_ipv4, read_u16, write_ipv4, write_u16, MacAddr, ETHERTYPE_IPV4,
    ETH_HEADER_LEN, ICMP_HEADER_LEN, IPV4_MIN_HEADER_LEN, IP_PROTO_ICMP,
};

/// TTL of packets the gateway originates (RFC 1700's recommended 64).
pub const ORIGINATED_TTL: u8 = 64;
/// An ICMP error carries as much of the offending packet as fits in a
/// 576-byte datagram (RFC 1812 §4.3.2.3).
const ICMP_ERROR_MAX_IP_LEN: usize = 576;

/// Why an IPv4 header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Invalid {
    Truncated,
    Version,
    HeaderLength,
    TotalLength,
}

/// Validates the lengths and version of the IPv4 header in `frame` (RFC 1812
/// §5.2.2). The header checksum is checked separately by
/// [`ipv4_checksum_ok`], only where the switch acts as a router.
#[inline]
pub fn parse_ipv4(frame: &[u8]) -> Result<Ipv4Meta, Ipv4Invalid> {
    let ip = frame.get(ETH_HEADER_LEN..).ok_or(Ipv4Invalid::Truncated)?;
    Ipv4Meta::parse(ip).map_err(|e| match e {
        Ipv4Error::Truncated { .. } => Ipv4Invalid::Truncated,
        Ipv4Error::Version(_) => Ipv4Invalid::Version,
        Ipv4Error::HeaderLength(_) | Ipv4Error::HeaderTruncated { .. } => Ipv4Invalid::HeaderLength,
        Ipv4Error::TotalLength { .. } => Ipv4Invalid::TotalLength,
    })
}

/// Whether the IPv4 header checksum verifies.
#[inline]
pub fn ipv4_checksum_ok(frame: &[u8], meta: &Ipv4Meta) -> bool {
    checksum(&frame[ETH_HEADER_LEN..ETH_HEADER_LEN + meta.header_len]) == 0
}

/// Whether a fragment stays inside the 65,535 bytes an IPv4 datagram can
/// hold (RFC 791 §3.1: total length is 16 bits). One that ends beyond
/// cannot be reassembled (the "ping of death"), and fragmenting it further
/// would carry its offset into the flag bits: the router drops it.
#[inline]
pub fn fragment_in_bounds(meta: &Ipv4Meta) -> bool {
    usize::from(meta.frag_offset()) + (meta.total_len - meta.header_len) <= usize::from(u16::MAX)
}

/// Recomputes the IPv4 header checksum from scratch.
fn fill_ipv4_checksum(ip_header: &mut [u8]) {
    Ipv4Packet::new_unchecked(ip_header).fill_checksum();
}

/// Decrements the TTL and updates the header checksum incrementally
/// (RFC 1624 eqn. 3; RFC 1812 §5.3.1 names this method).
#[inline]
pub fn decrement_ttl(frame: &mut [u8]) {
    Ipv4Packet::new_unchecked(&mut frame[ETH_HEADER_LEN..]).decrement_ttl();
}

/// Whether `frame` is an ARP request for `target` (RFC 826, Ethernet/IPv4).
/// Callers have checked the ARP packet's length and format.
#[inline]
pub fn is_arp_request_for(frame: &[u8], target: Ipv4Addr) -> bool {
    let a = &frame[ETH_HEADER_LEN..];
    read_u16(a, arp::OPER) == arp::OP_REQUEST && read_ipv4(a, arp::TPA) == target
}

/// Turns an ARP request into the reply from `mac`/`ip`, in place.
pub fn arp_reply_in_place(frame: &mut [u8], mac: MacAddr, ip: Ipv4Addr) {
    let requester_mac = MacAddr::read(frame, ethernet::SRC);
    requester_mac.write(frame, ethernet::DST);
    mac.write(frame, ethernet::SRC);
    let a = &mut frame[ETH_HEADER_LEN..];
    let sender_mac = MacAddr::read(a, arp::SHA);
    let sender_ip = read_ipv4(a, arp::SPA);
    write_u16(a, arp::OPER, arp::OP_REPLY);
    sender_mac.write(a, arp::THA);
    write_ipv4(a, arp::TPA, sender_ip);
    mac.write(a, arp::SHA);
    write_ipv4(a, arp::SPA, ip);
}

/// Whether `frame` holds a complete ICMP echo request whose checksum verifies.
pub fn is_valid_echo_request(frame: &[u8], meta: &Ipv4Meta) -> bool {
    if meta.proto != IP_PROTO_ICMP || meta.is_fragment() {
        return false;
    }
    let start = ETH_HEADER_LEN + meta.header_len;
    let end = ETH_HEADER_LEN + meta.total_len;
    if end - start < ICMP_HEADER_LEN {
        return false;
    }
    let msg = &frame[start..end];
    msg[icmp::TYPE] == icmp::ECHO_REQUEST && msg[icmp::CODE] == 0 && checksum(msg) == 0
}

/// Turns a validated echo request into the echo reply from `mac`/`ip`, in
/// place. Returns the length of the reply frame (any Ethernet padding of the
/// request is dropped).
pub fn echo_reply_in_place(frame: &mut [u8], meta: &Ipv4Meta, mac: MacAddr, ip: Ipv4Addr) -> usize {
    let requester_mac = MacAddr::read(frame, ethernet::SRC);
    requester_mac.write(frame, ethernet::DST);
    mac.write(frame, ethernet::SRC);
    let end = ETH_HEADER_LEN + meta.total_len;
    let packet = &mut frame[ETH_HEADER_LEN..end];
    write_ipv4(packet, ipv4::DST, meta.src);
    write_ipv4(packet, ipv4::SRC, ip);
    packet[ipv4::TTL] = ORIGINATED_TTL;
    fill_ipv4_checksum(&mut packet[..meta.header_len]);
    let msg = &mut packet[meta.header_len..];
    let old_word = read_u16(msg, icmp::TYPE);
    msg[icmp::TYPE] = icmp::ECHO_REPLY;
    let new_word = read_u16(msg, icmp::TYPE);
    let sum = update16(read_u16(msg, icmp::CHECKSUM), old_word, new_word);
    write_u16(msg, icmp::CHECKSUM, sum);
    if sum == 0 {
        // RFC 1624 eqn. 3 never yields 0xFFFF, yet a reply whose other
        // words are all zero (identifier 0, sequence 0, no data) needs
        // exactly that: its checksum over zeros is ~0. Recompute in that
        // one case; a zero checksum over anything else stays as it is.
        write_u16(msg, icmp::CHECKSUM, 0);
        let full = checksum(msg);
        write_u16(msg, icmp::CHECKSUM, full);
    }
    end
}

/// Whether RFC 1812 §4.3.2.7 allows an ICMP error about this packet: not
/// about an ICMP error, not about a later fragment, not to an address that
/// does not name a single host.
pub fn may_send_icmp_error(frame: &[u8], meta: &Ipv4Meta) -> bool {
    if meta.is_later_fragment() {
        return false;
    }
    let src = meta.src;
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || src.is_loopback() {
        return false;
    }
    if meta.dst.is_broadcast() || meta.dst.is_multicast() {
        return false;
    }
    if MacAddr::read(frame, ethernet::DST).is_multicast() {
        return false;
    }
    if meta.proto == IP_PROTO_ICMP {
        let start = ETH_HEADER_LEN + meta.header_len;
        // An ICMP message too short to name its type: treat it as an error
        // message and stay quiet.
        if meta.total_len <= meta.header_len || icmp::is_error(frame[start]) {
            return false;
        }
    }
    true
}

/// What an ICMP error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    pub ty: u8,
    pub code: u8,
    /// Next-hop MTU for "fragmentation needed" (RFC 1191 §4), else 0.
    pub next_hop_mtu: u16,
}

/// Builds into `out` the ICMP error from `mac`/`ip` about the packet in
/// `frame`, addressed back to its sender. Returns the frame length. The
/// caller has checked [`may_send_icmp_error`]. `out` must hold at least
/// 14 + 576 bytes.
pub fn build_icmp_error(
    out: &mut [u8],
    frame: &[u8],
    meta: &Ipv4Meta,
    mac: MacAddr,
    ip: Ipv4Addr,
    error: IcmpError,
    ident: u16,
) -> usize {
    let quoted_len = meta
        .total_len
        .min(ICMP_ERROR_MAX_IP_LEN - IPV4_MIN_HEADER_LEN - ICMP_HEADER_LEN);
    let ip_len = IPV4_MIN_HEADER_LEN + ICMP_HEADER_LEN + quoted_len;
    let frame_len = ETH_HEADER_LEN + ip_len;

    MacAddr::read(frame, ethernet::SRC).write(out, ethernet::DST);
    mac.write(out, ethernet::SRC);
    write_u16(out, ethernet::ETHERTYPE, ETHERTYPE_IPV4);

    let packet = &mut out[ETH_HEADER_LEN..frame_len];
    let (header, msg) = packet.split_at_mut(IPV4_MIN_HEADER_LEN);
    let mut header = Ipv4Packet::new_unchecked(header);
    header.set_version_and_header_len(IPV4_MIN_HEADER_LEN);
    // Precedence "internetwork control", as routers mark their ICMP errors.
    header.set_tos(0xc0);
    header.set_total_len(ip_len as u16);
    header.set_ident(ident);
    header.set_flags_frag(0);
    header.set_ttl(ORIGINATED_TTL);
    header.set_protocol(IP_PROTO_ICMP);
    header.set_src_addr(ip);
    header.set_dst_addr(meta.src);
    header.fill_checksum();

    let mut msg = IcmpPacket::new_unchecked(msg);
    msg.set_msg_type(error.ty);
    msg.set_code(error.code);
    msg.set_unused_and_mtu(error.next_hop_mtu);
    msg.data_mut()
        .copy_from_slice(&frame[ETH_HEADER_LEN..ETH_HEADER_LEN + quoted_len]);
    msg.fill_checksum();
    frame_len
}

/// Splits the IPv4 packet in `frame` into fragments that fit `mtu` (RFC 791
/// §3.2), building each in `out` and handing it to `emit`. The caller has
/// checked that DF is clear. Options are copied into every fragment.
/// Returns how many fragments were emitted.
pub fn fragment(
    frame: &[u8],
    meta: &Ipv4Meta,
    mtu: usize,
    out: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> usize {
    let hl = meta.header_len;
    let chunk = (mtu.saturating_sub(hl)) & !7;
    if chunk == 0 {
        return 0;
    }
    let payload = &frame[ETH_HEADER_LEN + hl..ETH_HEADER_LEN + meta.total_len];
    let base_offset = meta.frag & ipv4::FRAG_OFFSET_MASK;
    let more_after = meta.frag & ipv4::FLAG_MF != 0;
    let mut count = 0;
    for (i, piece) in payload.chunks(chunk).enumerate() {
        let last = (i + 1) * chunk >= payload.len();
        let len = ETH_HEADER_LEN + hl + piece.len();
        out[..ETH_HEADER_LEN + hl].copy_from_slice(&frame[..ETH_HEADER_LEN + hl]);
        out[ETH_HEADER_LEN + hl..len].copy_from_slice(piece);
        let header = &mut out[ETH_HEADER_LEN..ETH_HEADER_LEN + hl];
        write_u16(header, ipv4::TOTAL_LEN, (hl + piece.len()) as u16);
        let offset = base_offset + ((i * chunk) / 8) as u16;
        let mf = if !last || more_after {
            ipv4::FLAG_MF
        } else {
            0
        };
        write_u16(header, ipv4::FLAGS_FRAG, mf | offset);
        fill_ipv4_checksum(header);
        emit(&out[..len]);
        count += 1;
    }
    count
}

/// The IP length of each segment a GSO super-frame will be cut into: IP and
/// TCP headers plus `gso_size`. `None` when the TCP header is cut short.
pub fn gso_segment_ip_len(frame: &[u8], meta: &Ipv4Meta, offload: &Offload) -> Option<usize> {
    let tcp = ETH_HEADER_LEN + meta.header_len;
    let data_offset = usize::from(*frame.get(tcp + 12)? >> 4) * 4;
    if data_offset < 20 || tcp + data_offset > frame.len() {
        return None;
    }
    Some(meta.header_len + data_offset + usize::from(offload.gso_size))
}

/// Completes a partial transport checksum (virtio-net `NEEDS_CSUM`): the
/// checksum field holds the pseudo-header sum, and the ones' complement of
/// the sum from `csum_start` to the end goes into it (virtio 1.x §5.1.6.2).
/// `None` when the offsets point outside the frame.
pub fn complete_checksum(frame: &mut [u8], offload: &Offload) -> Option<()> {
    let start = usize::from(offload.csum_start);
    let field = start + usize::from(offload.csum_offset);
    if field + 2 > frame.len() {
        return None;
    }
    let sum = checksum(&frame[start..]);
    write_u16(frame, field, sum);
    Some(())
}

/// A token bucket limiting the rate of ICMP errors (RFC 1812 §4.3.2.8).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Option<Instant>,
}

impl RateLimiter {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        RateLimiter {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            last: None,
        }
    }

    /// Takes a token if one is available at `now`.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last);
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_sec).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available.
    pub fn wait(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Type, PacketBuilder, SlicedPacket, TransportSlice};

    const A_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const GW_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn echo_request(payload_len: usize) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2(A_MAC, GW_MAC.0)
            .ipv4([10, 0, 0, 2], GW_IP.octets(), 64)
            .icmpv4_echo_request(0x1234, 7);
        let payload = vec![0xab; payload_len];
        let mut out = Vec::new();
        builder.write(&mut out, &payload).unwrap();
        out
    }

    fn udp(ttl: u8, payload_len: usize, dont_fragment: bool) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2(A_MAC, GW_MAC.0)
            .ipv4([10, 0, 0, 2], [10, 9, 0, 2], ttl)
            .udp(4000, 5000);
        let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
        let mut out = Vec::new();
        builder.write(&mut out, &payload).unwrap();
        if !dont_fragment {
            let frag = read_u16(&out, ETH_HEADER_LEN + ipv4::FLAGS_FRAG) & !ipv4::FLAG_DF;
            write_u16(&mut out, ETH_HEADER_LEN + ipv4::FLAGS_FRAG, frag);
            fill_ipv4_checksum(&mut out[ETH_HEADER_LEN..ETH_HEADER_LEN + 20]);
        }
        out
    }

    #[test]
    fn parse_rejects_bad_headers() {
        let good = udp(64, 10, true);
        assert!(parse_ipv4(&good).is_ok());
        assert_eq!(parse_ipv4(&good[..30]), Err(Ipv4Invalid::Truncated));
        let mut bad = good.clone();
        bad[ETH_HEADER_LEN] = 0x65;
        assert_eq!(parse_ipv4(&bad), Err(Ipv4Invalid::Version));
        let mut bad = good.clone();
        bad[ETH_HEADER_LEN] = 0x44;
        assert_eq!(parse_ipv4(&bad), Err(Ipv4Invalid::HeaderLength));
        let mut bad = good.clone();
        write_u16(&mut bad, ETH_HEADER_LEN + 2, 2000);
        assert_eq!(parse_ipv4(&bad), Err(Ipv4Invalid::TotalLength));
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        for ttl in [2u8, 64, 255] {
            let mut f = udp(ttl, 10, true);
            decrement_ttl(&mut f);
            let meta = parse_ipv4(&f).unwrap();
            assert_eq!(meta.ttl, ttl - 1);
            assert!(ipv4_checksum_ok(&f, &meta));
        }
    }

    #[test]
    fn echo_reply_verifies_with_etherparse() {
        let mut f = echo_request(56);
        let meta = parse_ipv4(&f).unwrap();
        assert!(is_valid_echo_request(&f, &meta));
        let len = echo_reply_in_place(&mut f, &meta, GW_MAC, GW_IP);
        let p = SlicedPacket::from_ethernet(&f[..len]).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("not ipv4")
        };
        assert_eq!(ip.header().source_addr(), GW_IP);
        assert_eq!(ip.header().destination_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            ip.header().to_header().calc_header_checksum(),
            ip.header().header_checksum()
        );
        let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!("not icmp")
        };
        assert!(
            matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(e) if e.id == 0x1234 && e.seq == 7)
        );
        assert_eq!(
            icmp.icmp_type().calc_checksum(icmp.payload()),
            icmp.checksum()
        );
        assert_eq!(&f[0..6], &A_MAC);
    }

    /// Found by the `gateway` fuzz target: the reply to an echo request
    /// with identifier 0, sequence 0 and no data is all zeros but for its
    /// checksum, which must then be 0xFFFF; the incremental update gave
    /// 0x0000, which a receiver's check (the kernel's included) refuses.
    #[test]
    fn echo_reply_of_all_zeros_verifies() {
        let builder = PacketBuilder::ethernet2(A_MAC, GW_MAC.0)
            .ipv4([10, 0, 0, 2], GW_IP.octets(), 64)
            .icmpv4_echo_request(0, 0);
        let mut f = Vec::new();
        builder.write(&mut f, &[]).unwrap();
        let meta = parse_ipv4(&f).unwrap();
        assert!(is_valid_echo_request(&f, &meta));
        let len = echo_reply_in_place(&mut f, &meta, GW_MAC, GW_IP);
        let msg = &f[ETH_HEADER_LEN + meta.header_len..len];
        assert_eq!(msg[icmp::TYPE], icmp::ECHO_REPLY);
        assert_eq!(read_u16(msg, icmp::CHECKSUM), 0xffff);
        assert_eq!(checksum(msg), 0, "the reply's checksum verifies");
    }

    /// Found by the `gateway` fuzz target: a fragment at offset 65,528
    /// with 1,480 bytes was routed, and refragmenting it wrote offsets past
    /// 13 bits into the flags.
    #[test]
    fn fragments_ending_past_64k_are_out_of_bounds() {
        let mut f = udp(64, 1472, false);
        let meta = parse_ipv4(&f).unwrap();
        assert!(fragment_in_bounds(&meta), "an ordinary packet");
        let payload = meta.total_len - meta.header_len;
        for (offset_units, fits) in [
            (0x1fff, false),
            (((65535 - payload) / 8) as u16, true),
            (((65535 - payload) / 8 + 1) as u16, false),
        ] {
            write_u16(&mut f, ETH_HEADER_LEN + ipv4::FLAGS_FRAG, offset_units);
            let meta = parse_ipv4(&f).unwrap();
            assert_eq!(fragment_in_bounds(&meta), fits, "offset {offset_units}");
        }
    }

    #[test]
    fn echo_with_bad_checksum_is_refused() {
        let mut f = echo_request(8);
        let last = f.len() - 1;
        f[last] ^= 0xff;
        let meta = parse_ipv4(&f).unwrap();
        assert!(!is_valid_echo_request(&f, &meta));
    }

    #[test]
    fn icmp_error_quotes_the_packet_and_verifies() {
        let f = udp(1, 1000, true);
        let meta = parse_ipv4(&f).unwrap();
        assert!(may_send_icmp_error(&f, &meta));
        let mut out = vec![0u8; 2048];
        let err = IcmpError {
            ty: icmp::TIME_EXCEEDED,
            code: icmp::CODE_TTL_EXCEEDED,
            next_hop_mtu: 0,
        };
        let len = build_icmp_error(&mut out, &f, &meta, GW_MAC, GW_IP, err, 1);
        assert_eq!(len, ETH_HEADER_LEN + 576);
        let p = SlicedPacket::from_ethernet(&out[..len]).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!("not icmp")
        };
        assert!(matches!(icmp.icmp_type(), Icmpv4Type::TimeExceeded(_)));
        assert_eq!(
            icmp.icmp_type().calc_checksum(icmp.payload()),
            icmp.checksum()
        );
        assert_eq!(
            &icmp.payload()[..20],
            &f[ETH_HEADER_LEN..ETH_HEADER_LEN + 20]
        );
    }

    #[test]
    fn no_icmp_error_about_icmp_errors_or_later_fragments() {
        let f = udp(1, 10, true);
        let meta = parse_ipv4(&f).unwrap();
        let mut out = vec![0u8; 2048];
        let err = IcmpError {
            ty: icmp::DEST_UNREACHABLE,
            code: icmp::CODE_HOST_UNREACHABLE,
            next_hop_mtu: 0,
        };
        let len = build_icmp_error(&mut out, &f, &meta, GW_MAC, GW_IP, err, 1);
        let err_meta = parse_ipv4(&out[..len]).unwrap();
        assert!(!may_send_icmp_error(&out[..len], &err_meta));
        let later = Ipv4Meta { frag: 10, ..meta };
        assert!(!may_send_icmp_error(&f, &later));
    }

    #[test]
    fn fragments_reassemble_to_the_original() {
        let f = udp(64, 3000, false);
        let meta = parse_ipv4(&f).unwrap();
        assert!(!meta.dont_fragment());
        let mut out = vec![0u8; 4096];
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        let n = fragment(&f, &meta, 1500, &mut out, |p| pieces.push(p.to_vec()));
        assert_eq!(n, 3);
        let mut payload = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let m = parse_ipv4(p).unwrap();
            assert!(m.total_len <= 1500);
            assert!(ipv4_checksum_ok(p, &m));
            assert_eq!(
                usize::from(m.frag & ipv4::FRAG_OFFSET_MASK) * 8,
                payload.len()
            );
            assert_eq!(m.frag & ipv4::FLAG_MF != 0, i + 1 < pieces.len());
            payload.extend_from_slice(&p[ETH_HEADER_LEN + 20..]);
        }
        assert_eq!(payload, &f[ETH_HEADER_LEN + 20..]);
    }

    #[test]
    fn arp_reply_swaps_roles() {
        let mut f = vec![0u8; 42];
        MacAddr::BROADCAST.write(&mut f, ethernet::DST);
        MacAddr(A_MAC).write(&mut f, ethernet::SRC);
        write_u16(&mut f, ethernet::ETHERTYPE, weft_packet::ETHERTYPE_ARP);
        let a = &mut f[ETH_HEADER_LEN..];
        write_u16(a, arp::HTYPE, 1);
        write_u16(a, arp::PTYPE, 0x0800);
        a[arp::HLEN] = 6;
        a[arp::PLEN] = 4;
        write_u16(a, arp::OPER, arp::OP_REQUEST);
        MacAddr(A_MAC).write(a, arp::SHA);
        write_ipv4(a, arp::SPA, Ipv4Addr::new(10, 0, 0, 2));
        write_ipv4(a, arp::TPA, GW_IP);
        assert!(is_arp_request_for(&f, GW_IP));
        arp_reply_in_place(&mut f, GW_MAC, GW_IP);
        let a = &f[ETH_HEADER_LEN..];
        assert_eq!(read_u16(a, arp::OPER), arp::OP_REPLY);
        assert_eq!(MacAddr::read(a, arp::SHA), GW_MAC);
        assert_eq!(read_ipv4(a, arp::SPA), GW_IP);
        assert_eq!(MacAddr::read(a, arp::THA), MacAddr(A_MAC));
        assert_eq!(read_ipv4(a, arp::TPA), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(MacAddr::read(&f, ethernet::DST), MacAddr(A_MAC));
    }

    #[test]
    fn rate_limiter_refills() {
        let mut r = RateLimiter::new(10, 2);
        let t = Instant::now();
        assert!(r.allow(t));
        assert!(r.allow(t));
        assert!(!r.allow(t));
        assert!(r.allow(t + Duration::from_millis(150)));
    }
}
