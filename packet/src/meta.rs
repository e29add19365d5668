//! What ingress learns about a frame, parsed once and passed along instead
//! of re-parsed by every stage: the ethertype (through up to two VLAN tags,
//! IEEE 802.1ad outer and 802.1Q inner), the L3 offset, and the validated
//! fields of an IPv4 header (RFC 791 §3.1) with the L4 offset.

use std::net::Ipv4Addr;

use crate::bytes::get_u16;
use crate::ipv4::{Ipv4Error, Ipv4Packet, FLAG_DF, FLAG_MF, FRAG_OFFSET_MASK};
use crate::{ETHERTYPE_QINQ, ETHERTYPE_VLAN, ETH_HEADER_LEN, VLAN_TAG_LEN};

/// The ethertype and L3 offset of an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// The ethertype after any VLAN tags.
    pub ethertype: u16,
    /// Offset of the L3 header in the frame.
    pub l3: usize,
}

impl FrameInfo {
    /// Reads the ethertype of `frame` without looking through VLAN tags
    /// (a tagged frame reports the TPID). `None` if shorter than 14 bytes.
    #[inline]
    pub fn untagged(frame: &[u8]) -> Option<FrameInfo> {
        if frame.len() < ETH_HEADER_LEN {
            return None;
        }
        Some(FrameInfo {
            ethertype: crate::read_u16(frame, crate::ethernet::ETHERTYPE),
            l3: ETH_HEADER_LEN,
        })
    }

    /// Reads the ethertype of `frame` through up to two VLAN tags (802.1ad
    /// or 802.1Q). `None` if the header or a tag is cut short.
    #[inline]
    pub fn parse(frame: &[u8]) -> Option<FrameInfo> {
        let mut l3 = ETH_HEADER_LEN;
        let mut ethertype = get_u16(frame, crate::ethernet::ETHERTYPE)?;
        for _ in 0..2 {
            if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
                ethertype = get_u16(frame, l3 + 2)?;
                l3 += VLAN_TAG_LEN;
            }
        }
        Some(FrameInfo { ethertype, l3 })
    }
}

/// The validated fields of an IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Meta {
    /// Header length in bytes; the L4 header starts this far into the
    /// packet.
    pub header_len: usize,
    /// The total length field, checked against the buffer.
    pub total_len: usize,
    pub ttl: u8,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Flags and fragment offset word.
    pub frag: u16,
}

impl Ipv4Meta {
    /// Validates the IPv4 packet at the start of `ip` (see
    /// [`Ipv4Packet::check_len`]) and takes its fields.
    #[inline]
    pub fn parse(ip: &[u8]) -> Result<Ipv4Meta, Ipv4Error> {
        Ipv4Packet::new_checked(ip).map(|p| Ipv4Meta::of(&p))
    }

    /// The fields of a checked packet.
    #[inline]
    pub fn of<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Ipv4Meta {
        Ipv4Meta {
            header_len: p.header_len(),
            total_len: usize::from(p.total_len()),
            ttl: p.ttl(),
            proto: p.protocol(),
            src: p.src_addr(),
            dst: p.dst_addr(),
            frag: p.flags_frag(),
        }
    }

    pub fn dont_fragment(&self) -> bool {
        self.frag & FLAG_DF != 0
    }

    /// Any fragment other than the first.
    pub fn is_later_fragment(&self) -> bool {
        self.frag & FRAG_OFFSET_MASK != 0
    }

    pub fn is_fragment(&self) -> bool {
        self.frag & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.frag & FRAG_OFFSET_MASK) * 8
    }

    /// Source and destination port of a TCP or UDP header at the start of
    /// the payload of `ip` (the packet this meta was parsed from), if the
    /// payload holds them.
    #[inline]
    pub fn ports(&self, ip: &[u8]) -> Option<(u16, u16)> {
        if self.total_len < self.header_len + 4 {
            return None;
        }
        let l4 = self.header_len;
        Some((get_u16(ip, l4)?, get_u16(ip, l4 + 2)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tags: &[u16], ethertype: u16) -> Vec<u8> {
        let mut f = vec![0xa5u8; 12];
        for &tpid in tags {
            f.extend(tpid.to_be_bytes());
            f.extend([0x00, 0x64]);
        }
        f.extend(ethertype.to_be_bytes());
        f
    }

    #[test]
    fn frame_info_walks_vlan_tags() {
        let f = frame(&[], crate::ETHERTYPE_IPV4);
        assert_eq!(
            FrameInfo::parse(&f),
            Some(FrameInfo {
                ethertype: crate::ETHERTYPE_IPV4,
                l3: 14
            })
        );
        let f = frame(&[ETHERTYPE_QINQ, ETHERTYPE_VLAN], crate::ETHERTYPE_IPV6);
        assert_eq!(
            FrameInfo::parse(&f),
            Some(FrameInfo {
                ethertype: crate::ETHERTYPE_IPV6,
                l3: 22
            })
        );
        assert_eq!(FrameInfo::untagged(&f).unwrap().ethertype, ETHERTYPE_QINQ);
        assert_eq!(FrameInfo::parse(&f[..20]), None);
        assert_eq!(FrameInfo::parse(&f[..13]), None);
        assert_eq!(FrameInfo::untagged(&f[..13]), None);
    }

    #[test]
    fn ipv4_meta_and_ports() {
        let mut p = vec![
            0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x20, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1,
            10, 0, 0, 2, 0x9c, 0x40, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00,
        ];
        let m = Ipv4Meta::parse(&p).unwrap();
        assert_eq!(m.header_len, 20);
        assert_eq!(m.total_len, 28);
        assert_eq!((m.ttl, m.proto), (64, 17));
        assert_eq!(m.src, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(m.dst, Ipv4Addr::new(10, 0, 0, 2));
        assert!(m.is_fragment() && !m.is_later_fragment() && !m.dont_fragment());
        assert_eq!(m.ports(&p), Some((40000, 53)));
        p[0] = 0x48;
        assert!(Ipv4Meta::parse(&p).is_err());
    }
}
