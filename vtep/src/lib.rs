//! VXLAN tunnel endpoint (VTEP) primitives for weft.
//!
//! Implements the wire format of [RFC 7348] ("Virtual eXtensible Local Area
//! Network (VXLAN)"): an Ethernet frame is carried as the payload of a UDP
//! datagram (destination port [`VXLAN_UDP_PORT`], 4789) behind an 8-byte
//! VXLAN header that holds a 24-bit VXLAN Network Identifier ([`Vni`]).
//!
//! - [`header`]: a zero-copy view of the VXLAN header ([`VxlanHeader`]).
//! - [`rco`]: the remote checksum offload field (draft-herbert-vxlan-rco).
//! - [`decapsulate`]: validates a received UDP payload and splits it into
//!   the VNI and the inner Ethernet frame.
//! - [`inner_flow_hash`] and [`udp_source_port`]: pick the outer UDP source
//!   port from a hash of the inner frame's headers, as RFC 7348 §5
//!   recommends, so that ECMP in the underlay spreads tunnelled flows while
//!   keeping every packet of one inner flow on one path.
//!
//! Nothing here allocates or does I/O: the UDP sockets that carry VXLAN
//! live in `weft_os::udp`.
//!
//! [RFC 7348]: https://www.rfc-editor.org/rfc/rfc7348

#![forbid(unsafe_code)]

pub mod header;
pub mod rco;

pub use header::{Truncated, VxlanHeader, FLAG_VNI, HEADER_LEN};

use core::fmt;

use weft_packet::ipv4::{self, Ipv4Packet};
use weft_packet::meta::FrameInfo;
use weft_packet::{ETHERTYPE_IPV4, IP_PROTO_TCP, IP_PROTO_UDP};

/// IANA-assigned UDP destination port for VXLAN (RFC 7348 §5).
pub const VXLAN_UDP_PORT: u16 = 4789;

/// Length of an untagged inner Ethernet header (dst MAC, src MAC,
/// EtherType): the shortest inner frame [`decapsulate`] accepts.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// Lowest port of the dynamic/private range (RFC 6335), which RFC 7348 §5
/// recommends for the outer UDP source port.
pub const SOURCE_PORT_MIN: u16 = 49152;

/// Highest port of the dynamic/private range.
pub const SOURCE_PORT_MAX: u16 = 65535;

/// A 24-bit VXLAN Network Identifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vni(u32);

/// A value that does not fit in the 24-bit VNI field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VNI {value:#x} does not fit in 24 bits (maximum is 0xffffff)")]
pub struct VniError {
    /// The rejected value.
    pub value: u32,
}

impl Vni {
    /// The largest VNI, `0xFF_FFFF`.
    pub const MAX: Vni = Vni(0xff_ffff);

    /// Creates a VNI, rejecting values above [`Vni::MAX`].
    pub const fn new(value: u32) -> Result<Vni, VniError> {
        if value > Self::MAX.0 {
            Err(VniError { value })
        } else {
            Ok(Vni(value))
        }
    }

    /// The VNI as an integer (always `<= 0xFF_FFFF`).
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Builds a VNI from the low 24 bits of `value`.
    pub(crate) const fn from_u24(value: u32) -> Vni {
        Vni(value & Self::MAX.0)
    }
}

impl TryFrom<u32> for Vni {
    type Error = VniError;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Vni::new(value)
    }
}

impl From<Vni> for u32 {
    fn from(vni: Vni) -> u32 {
        vni.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a UDP payload could not be decapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecapError {
    /// Shorter than a VXLAN header plus an inner Ethernet header.
    #[error(
        "VXLAN packet truncated: {len} bytes, need at least {} (VXLAN header + inner Ethernet header)",
        HEADER_LEN + ETHERNET_HEADER_LEN
    )]
    Truncated {
        /// Length of the UDP payload.
        len: usize,
    },
    /// The I flag is clear, so the VNI is not valid (RFC 7348 §5).
    #[error("VXLAN I flag (0x08) not set in flags {flags:#04x}")]
    MissingVniFlag {
        /// The flags octet that was received.
        flags: u8,
    },
}

/// Splits the payload of a received VXLAN UDP datagram into its VNI and
/// inner Ethernet frame.
///
/// Checks that the payload holds an 8-byte VXLAN header and at least a
/// 14-byte inner Ethernet header, and that the I flag is set. As RFC 7348
/// §5 requires of receivers, the reserved bits are ignored.
pub fn decapsulate(udp_payload: &[u8]) -> Result<(Vni, &[u8]), DecapError> {
    if udp_payload.len() < HEADER_LEN + ETHERNET_HEADER_LEN {
        return Err(DecapError::Truncated {
            len: udp_payload.len(),
        });
    }
    let header = VxlanHeader::new_unchecked(udp_payload);
    if !header.has_vni_flag() {
        return Err(DecapError::MissingVniFlag {
            flags: header.flags(),
        });
    }
    Ok((header.vni(), &udp_payload[HEADER_LEN..]))
}

/// Maps a flow hash to an outer UDP source port in the dynamic range
/// 49152..=65535 (RFC 7348 §5).
///
/// The range holds exactly 2^14 ports; the port is the top 14 bits of a
/// Fibonacci (multiplicative) hash of `flow_hash`, so every input bit
/// influences the result even when the caller's hash is weak in its low
/// bits.
pub fn udp_source_port(flow_hash: u32) -> u16 {
    const GOLDEN: u32 = 0x9e37_79b9;
    let spread = flow_hash.wrapping_mul(GOLDEN) >> (32 - 14);
    // `spread < 2^14`, so the cast is lossless and the OR stays in range.
    SOURCE_PORT_MIN | spread as u16
}

/// FNV-1a, 32 bit: small, fast, stable across platforms and releases.
struct Fnv1a(u32);

impl Fnv1a {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u32::from(b)).wrapping_mul(Self::PRIME);
        }
    }

    /// Applies the MurmurHash3 finaliser so that all output bits avalanche.
    fn finish(self) -> u32 {
        let mut h = self.0;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

/// Returns the IPv4 packet inside an Ethernet frame (skipping up to two
/// 802.1Q / 802.1ad tags), or `None` for anything else.
fn inner_ipv4(frame: &[u8]) -> Option<&[u8]> {
    let info = FrameInfo::parse(frame)?;
    if info.ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    frame.get(info.l3..)
}

/// Hashes the headers that identify the flow of an inner Ethernet frame.
///
/// Always covers the destination and source MAC addresses. For IPv4 it also
/// covers the protocol and both addresses, and for unfragmented TCP and UDP
/// both ports. Fragments (MF set or a non-zero offset) are hashed without
/// ports so that every fragment of a datagram takes the same path. Frames
/// that are not IPv4, or whose IPv4 header is malformed or truncated, fall
/// back to the L2 addresses alone. VLAN tags (at most two) are skipped.
///
/// The hash is deterministic (no per-process seed), does not allocate, and
/// never panics, whatever the input.
pub fn inner_flow_hash(frame: &[u8]) -> u32 {
    let mut h = Fnv1a(Fnv1a::OFFSET);
    h.write(&frame[..frame.len().min(12)]);
    if let Some(ip) = inner_ipv4(frame) {
        hash_ipv4(&mut h, ip);
    }
    h.finish()
}

fn hash_ipv4(h: &mut Fnv1a, ip: &[u8]) {
    // The header itself must be sound; the total length is not checked.
    let ip = Ipv4Packet::new_unchecked(ip);
    if ip.check_header().is_err() {
        return;
    }
    let proto = ip.protocol();
    h.write(&[proto]);
    h.write(&ip.as_bytes()[ipv4::SRC..ipv4::DST + 4]);
    // MF flag or fragment offset: ports are absent or not in every fragment.
    let fragmented = ip.more_frags() || ip.frag_offset() != 0;
    if matches!(proto, IP_PROTO_TCP | IP_PROTO_UDP) && !fragmented {
        let header_len = ip.header_len();
        if let Some(ports) = ip.as_bytes().get(header_len..header_len + 4) {
            h.write(ports);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use std::collections::HashSet;

    const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    fn udp_frame(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(src_port, dst_port)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    fn tcp_frame(src: [u8; 4], src_port: u16, ttl: u8) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ipv4(src, [192, 168, 1, 1], ttl)
            .tcp(src_port, 443, 1, 1024)
            .write(&mut out, b"hello")
            .unwrap();
        out
    }

    /// VXLAN header for VNI 42 followed by an ARP request to broadcast.
    const VXLAN_ARP: [u8; 22] = [
        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00, // VXLAN, VNI 42
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst MAC
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src MAC
        0x08, 0x06, // EtherType ARP
    ];

    #[test]
    fn decapsulates_fixture() {
        let (vni, inner) = decapsulate(&VXLAN_ARP).unwrap();
        assert_eq!(vni, Vni::new(42).unwrap());
        assert_eq!(inner, &VXLAN_ARP[8..]);
        assert_eq!(&inner[12..14], &[0x08, 0x06]);
    }

    #[test]
    fn decapsulate_rejects_truncated() {
        for len in 0..HEADER_LEN + ETHERNET_HEADER_LEN {
            assert_eq!(
                decapsulate(&VXLAN_ARP[..len]),
                Err(DecapError::Truncated { len })
            );
        }
        let msg = DecapError::Truncated { len: 9 }.to_string();
        assert!(msg.contains("9 bytes") && msg.contains("22"), "{msg}");
    }

    #[test]
    fn decapsulate_requires_i_flag() {
        let mut pkt = VXLAN_ARP;
        pkt[0] = 0x00;
        assert_eq!(
            decapsulate(&pkt),
            Err(DecapError::MissingVniFlag { flags: 0 })
        );
        pkt[0] = 0xf7; // every bit but I
        assert_eq!(
            decapsulate(&pkt),
            Err(DecapError::MissingVniFlag { flags: 0xf7 })
        );
        assert!(DecapError::MissingVniFlag { flags: 0xf7 }
            .to_string()
            .contains("0xf7"));
    }

    #[test]
    fn decapsulate_ignores_reserved_bits() {
        let mut pkt = VXLAN_ARP;
        pkt[0] = 0xff;
        pkt[1..4].copy_from_slice(&[0xaa, 0xbb, 0xcc]);
        pkt[7] = 0xdd;
        let (vni, inner) = decapsulate(&pkt).unwrap();
        assert_eq!(vni.get(), 42);
        assert_eq!(inner, &VXLAN_ARP[8..]);
        assert!(!VxlanHeader::new_checked(&pkt[..])
            .unwrap()
            .reserved_bits_zero());
    }

    #[test]
    fn decapsulate_emit_roundtrip_max_vni() {
        let inner = udp_frame(1234, 80, b"payload");
        let mut pkt = vec![0u8; HEADER_LEN + inner.len()];
        let mut h = VxlanHeader::emit(&mut pkt[..], Vni::MAX).unwrap();
        h.payload_mut().copy_from_slice(&inner);
        let (vni, got) = decapsulate(&pkt).unwrap();
        assert_eq!(vni, Vni::MAX);
        assert_eq!(got, &inner[..]);
    }

    #[test]
    fn vni_bounds() {
        assert_eq!(Vni::new(0).unwrap().get(), 0);
        assert_eq!(Vni::new(0xff_ffff), Ok(Vni::MAX));
        assert_eq!(Vni::new(0x100_0000), Err(VniError { value: 0x100_0000 }));
        assert_eq!(Vni::try_from(u32::MAX), Err(VniError { value: u32::MAX }));
        assert_eq!(u32::from(Vni::new(7).unwrap()), 7);
        assert_eq!(Vni::new(42).unwrap().to_string(), "42");
        assert!(VniError { value: 0x100_0000 }
            .to_string()
            .contains("0x1000000"));
    }

    #[test]
    fn source_port_in_dynamic_range() {
        for h in [0, 1, 2, 0x3fff, 0x4000, 0xffff, 0x8000_0000, u32::MAX] {
            let p = udp_source_port(h);
            assert!((SOURCE_PORT_MIN..=SOURCE_PORT_MAX).contains(&p), "{h}: {p}");
        }
        let mut x = 1u32;
        for _ in 0..10_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            assert!(udp_source_port(x) >= SOURCE_PORT_MIN);
        }
    }

    #[test]
    fn source_port_uses_low_and_high_bits() {
        let low: HashSet<u16> = (0..256u32).map(udp_source_port).collect();
        let high: HashSet<u16> = (0..256u32).map(|i| udp_source_port(i << 24)).collect();
        assert!(low.len() > 200, "{}", low.len());
        assert!(high.len() > 200, "{}", high.len());
    }

    /// Ethernet + IPv4 + UDP 10.0.0.1:5000 -> 10.0.0.2:53, no payload.
    const UDP_FRAME: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // dst MAC
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src MAC
        0x08, 0x00, // EtherType IPv4
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00,
        0x00, // IPv4, DF, UDP
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, // 10.0.0.1 -> 10.0.0.2
        0x13, 0x88, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00, // UDP 5000 -> 53
    ];

    #[test]
    fn hash_is_stable() {
        // Pinned values (computed independently from the FNV-1a + fmix32
        // definition): the hash must not change between releases, or a VTEP
        // upgrade would move every flow to a different underlay path.
        assert_eq!(inner_flow_hash(&UDP_FRAME), 0xf2ba_b5d6);
        assert_eq!(udp_source_port(0xf2ba_b5d6), 62_326);
        // Same flow built by another encoder hashes the same.
        let built = udp_frame(5000, 53, b"");
        assert_eq!(built.len(), UDP_FRAME.len());
        assert_eq!(inner_flow_hash(&built), inner_flow_hash(&UDP_FRAME));
    }

    #[test]
    fn hash_covers_only_flow_fields() {
        // Payload and TTL do not identify the flow.
        assert_eq!(
            inner_flow_hash(&udp_frame(5000, 53, b"a")),
            inner_flow_hash(&udp_frame(5000, 53, b"something else"))
        );
        assert_eq!(
            inner_flow_hash(&tcp_frame([10, 1, 1, 1], 40000, 64)),
            inner_flow_hash(&tcp_frame([10, 1, 1, 1], 40000, 3))
        );
        // Ports and addresses do.
        assert_ne!(
            inner_flow_hash(&udp_frame(5000, 53, b"a")),
            inner_flow_hash(&udp_frame(5001, 53, b"a"))
        );
        assert_ne!(
            inner_flow_hash(&udp_frame(5000, 53, b"a")),
            inner_flow_hash(&udp_frame(5000, 54, b"a"))
        );
        assert_ne!(
            inner_flow_hash(&tcp_frame([10, 1, 1, 1], 40000, 64)),
            inner_flow_hash(&tcp_frame([10, 1, 1, 2], 40000, 64))
        );
    }

    #[test]
    fn fragments_hash_without_ports() {
        let mut a = udp_frame(5000, 53, b"a");
        let mut b = udp_frame(6000, 53, b"a");
        assert_ne!(inner_flow_hash(&a), inner_flow_hash(&b));
        // Set MF on both: the ports no longer count.
        a[14 + 6] |= 0x20;
        b[14 + 6] |= 0x20;
        assert_eq!(inner_flow_hash(&a), inner_flow_hash(&b));
    }

    #[test]
    fn hash_skips_vlan_tags() {
        let plain_a = udp_frame(5000, 53, b"a");
        let plain_b = udp_frame(5001, 53, b"a");
        let tag = |f: &[u8]| {
            let mut v = f[..12].to_vec();
            v.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
            v.extend_from_slice(&f[12..]);
            v
        };
        assert_ne!(
            inner_flow_hash(&tag(&plain_a)),
            inner_flow_hash(&tag(&plain_b))
        );
    }

    #[test]
    fn non_ip_falls_back_to_l2() {
        let arp = &VXLAN_ARP[8..];
        let mut other = arp.to_vec();
        other.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(inner_flow_hash(arp), inner_flow_hash(&other));
        let mut other_mac = arp.to_vec();
        other_mac[11] = 9;
        assert_ne!(inner_flow_hash(arp), inner_flow_hash(&other_mac));
    }

    #[test]
    fn hash_never_panics_on_garbage() {
        let frame = udp_frame(5000, 53, b"abc");
        for len in 0..=frame.len() {
            let _ = inner_flow_hash(&frame[..len]);
        }
        let mut bad_ihl = frame.clone();
        bad_ihl[14] = 0x4f; // IHL 15 = 60 bytes, longer than the packet
        let _ = inner_flow_hash(&bad_ihl);
        bad_ihl[14] = 0x41; // IHL 1, invalid
        let _ = inner_flow_hash(&bad_ihl);
        let only_tags = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0, 0, 0, 0x81, 0];
        let _ = inner_flow_hash(&only_tags);
    }

    #[test]
    fn thousand_flows_spread_over_ports() {
        let ports: HashSet<u16> = (0..1000u16)
            .map(|i| udp_source_port(inner_flow_hash(&udp_frame(20_000 + i, 4242, b"x"))))
            .collect();
        assert!(ports.len() > 500, "only {} distinct ports", ports.len());

        let ports: HashSet<u16> = (0..1000u16)
            .map(|i| {
                let [hi, lo] = i.to_be_bytes();
                let src = [10, 2, hi, lo];
                udp_source_port(inner_flow_hash(&tcp_frame(src, 33_000, 64)))
            })
            .collect();
        assert!(ports.len() > 500, "only {} distinct ports", ports.len());
    }
}
