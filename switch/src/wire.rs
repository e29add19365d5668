//! Field offsets and accessors for the headers the switch reads and writes:
//! Ethernet II (IEEE 802.3), ARP (RFC 826), IPv4 (RFC 791) and ICMP (RFC 792).
//!
//! Headers are read and written at fixed offsets into the frame buffer rather
//! than by casting the buffer to packed structs: frames have no alignment
//! guarantee, and offsets keep bounds checks explicit. Callers check lengths
//! once (`*_LEN` constants) before using the accessors, which index directly.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length of an Ethernet II header: destination, source, ethertype.
pub const ETH_HEADER_LEN: usize = 14;
/// Minimum IPv4 header length (IHL = 5).
pub const IPV4_MIN_HEADER_LEN: usize = 20;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;
/// Length of the fixed ICMP header (type, code, checksum, 4 bytes of rest).
pub const ICMP_HEADER_LEN: usize = 8;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

pub const IP_PROTO_ICMP: u8 = 1;
pub const IP_PROTO_TCP: u8 = 6;
pub const IP_PROTO_UDP: u8 = 17;

/// Offsets within an Ethernet II header.
pub mod eth {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

/// Offsets within an Ethernet/IPv4 ARP packet (RFC 826).
pub mod arp {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
    pub const HTYPE_ETHERNET: u16 = 1;
    pub const OP_REQUEST: u16 = 1;
    pub const OP_REPLY: u16 = 2;
}

/// Offsets within an IPv4 header (RFC 791 §3.1).
pub mod ipv4 {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    /// Don't Fragment, in the flags/fragment-offset word.
    pub const FLAG_DF: u16 = 0x4000;
    /// More Fragments, in the flags/fragment-offset word.
    pub const FLAG_MF: u16 = 0x2000;
    /// Fragment offset mask (in units of 8 bytes).
    pub const FRAG_OFFSET_MASK: u16 = 0x1fff;
}

/// ICMP types and codes used by the gateway (RFC 792, RFC 1812 §5.2.7.1).
pub mod icmp {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    /// Second half of the "rest of header" word: next-hop MTU (RFC 1191).
    pub const NEXT_HOP_MTU: usize = 6;
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
    pub const CODE_NET_UNREACHABLE: u8 = 0;
    pub const CODE_HOST_UNREACHABLE: u8 = 1;
    pub const CODE_PROTOCOL_UNREACHABLE: u8 = 2;
    pub const CODE_PORT_UNREACHABLE: u8 = 3;
    pub const CODE_FRAG_NEEDED: u8 = 4;
    pub const CODE_ADMIN_PROHIBITED: u8 = 13;
    pub const CODE_TTL_EXCEEDED: u8 = 0;

    /// Whether an ICMP type is an error message, about which no ICMP error
    /// may be sent (RFC 1812 §4.3.2.7).
    pub fn is_error(ty: u8) -> bool {
        matches!(
            ty,
            DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM
        )
    }
}

#[inline]
pub fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[inline]
pub fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub fn read_ipv4(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3])
}

#[inline]
pub fn write_ipv4(buf: &mut [u8], at: usize, addr: Ipv4Addr) {
    buf[at..at + 4].copy_from_slice(&addr.octets());
}

/// An IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads the address stored at `at` in `buf`.
    #[inline]
    pub fn read(buf: &[u8], at: usize) -> MacAddr {
        let mut octets = [0; 6];
        octets.copy_from_slice(&buf[at..at + 6]);
        MacAddr(octets)
    }

    #[inline]
    pub fn write(self, buf: &mut [u8], at: usize) {
        buf[at..at + 6].copy_from_slice(&self.0);
    }

    /// Group addresses (broadcast included) have the I/G bit set.
    #[inline]
    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    #[inline]
    pub fn is_unicast(self) -> bool {
        !self.is_multicast()
    }

    /// A locally administered unicast address derived from `seed`, stable
    /// for a given seed (weft's default for endpoints and gateways).
    pub fn local_from_seed(seed: u64) -> MacAddr {
        let h = splitmix64(seed).to_be_bytes();
        // 0x02: locally administered (U/L bit), unicast (I/G bit clear).
        MacAddr([0x02, h[1], h[2], h[3], h[4], h[5]])
    }

    /// The address as a `u64`, for hashing and compact tables.
    #[inline]
    pub fn to_u64(self) -> u64 {
        let o = self.0;
        u64::from_be_bytes([0, 0, o[0], o[1], o[2], o[3], o[4], o[5]])
    }
}

/// A fast, well-mixed 64-bit hash step (Steele et al., SplitMix64).
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over a string: a stable seed for [`MacAddr::local_from_seed`].
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a MAC address string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address: expected six hex octets like 02:42:0a:00:00:02")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut octets = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(|| MacParseError(s.into()))?;
            if part.len() != 2 {
                return Err(MacParseError(s.into()));
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.into()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.into()));
        }
        Ok(MacAddr(octets))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints() {
        let mac: MacAddr = "02:42:0A:00:00:02".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x42, 0x0a, 0, 0, 2]);
        assert_eq!(mac.to_string(), "02:42:0a:00:00:02");
        assert!("02:42:0a:00:00".parse::<MacAddr>().is_err());
        assert!("02:42:0a:00:00:02:03".parse::<MacAddr>().is_err());
        assert!("zz:42:0a:00:00:02".parse::<MacAddr>().is_err());
        assert!("2:42:0a:00:00:02".parse::<MacAddr>().is_err());
    }

    #[test]
    fn group_bit() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 1]).is_unicast());
    }

    #[test]
    fn derived_macs_are_local_unicast_and_stable() {
        let a = MacAddr::local_from_seed(stable_hash(&["net", "ep1"]));
        let b = MacAddr::local_from_seed(stable_hash(&["net", "ep1"]));
        let c = MacAddr::local_from_seed(stable_hash(&["net", "ep2"]));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.is_unicast());
        assert_eq!(a.0[0] & 0x02, 0x02);
    }

    #[test]
    fn stable_hash_separates_parts() {
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
    }
}
