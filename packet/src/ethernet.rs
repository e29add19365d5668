//! Ethernet II framing (IEEE 802.3 clause 3, with the ethertype of RFC 894)
//! and IEEE 802 MAC addresses.
//!
//! An Ethernet II header is the destination address, the source address and
//! the ethertype, 14 bytes in all; IEEE 802.1Q / 802.1ad tags, where present,
//! sit between the source address and the ethertype, 4 bytes each.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Field offsets within an Ethernet II header.
pub const DST: usize = 0;
pub const SRC: usize = 6;
pub const ETHERTYPE: usize = 12;

/// Why a buffer does not hold an Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Ethernet frame truncated: {len} bytes, header needs 14")]
pub struct Truncated {
    /// Bytes available.
    pub len: usize,
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checks; getters panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` if it holds at least the 14-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let len = buffer.as_ref().len();
        if len < crate::ETH_HEADER_LEN {
            return Err(Truncated { len });
        }
        Ok(EthernetFrame { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::read(self.buffer.as_ref(), DST)
    }

    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::read(self.buffer.as_ref(), SRC)
    }

    /// The ethertype of the outer header (a VLAN TPID if tagged).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        crate::bytes::read_u16(self.buffer.as_ref(), ETHERTYPE)
    }

    /// Everything after the 14-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[crate::ETH_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, mac: MacAddr) {
        mac.write(self.buffer.as_mut(), DST);
    }

    #[inline]
    pub fn set_src_addr(&mut self, mac: MacAddr) {
        mac.write(self.buffer.as_mut(), SRC);
    }

    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        crate::bytes::write_u16(self.buffer.as_mut(), ETHERTYPE, ethertype);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[crate::ETH_HEADER_LEN..]
    }
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
    fn frame_view() {
        let bytes = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x06, 0xde, 0xad,
        ];
        let f = EthernetFrame::new_checked(&bytes[..]).unwrap();
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(f.src_addr(), MacAddr([2, 0, 0, 0, 0, 0x0a]));
        assert_eq!(f.ethertype(), crate::ETHERTYPE_ARP);
        assert_eq!(f.payload(), &[0xde, 0xad]);

        let mut buf = [0xa5u8; 16];
        let mut g = EthernetFrame::new_unchecked(&mut buf[..]);
        g.set_dst_addr(MacAddr::BROADCAST);
        g.set_src_addr(MacAddr([2, 0, 0, 0, 0, 0x0a]));
        g.set_ethertype(crate::ETHERTYPE_ARP);
        g.payload_mut().copy_from_slice(&[0xde, 0xad]);
        assert_eq!(buf, bytes);

        assert_eq!(
            EthernetFrame::new_checked(&bytes[..13]),
            Err(Truncated { len: 13 })
        );
    }

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
