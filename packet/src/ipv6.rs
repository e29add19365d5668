//! IPv6 fixed headers (RFC 8200 §3).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! |                         Source Address (128 bits)             |
//! |                      Destination Address (128 bits)           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Extension headers are not parsed; [`Ipv6Packet::next_header`] is the
//! type of whatever follows the fixed header. Not wired into forwarding
//! yet.

use std::net::Ipv6Addr;

use crate::bytes::{read_u16, read_u32, write_u16, write_u32};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// Version, traffic class and flow label.
pub const VER_TC_FLOW: usize = 0;
pub const PAYLOAD_LEN: usize = 4;
pub const NEXT_HEADER: usize = 6;
pub const HOP_LIMIT: usize = 7;
pub const SRC: usize = 8;
pub const DST: usize = 24;

/// Why a buffer does not hold an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ipv6Error {
    /// Shorter than the 40-byte fixed header.
    #[error("IPv6 packet truncated: {len} bytes, header needs 40")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The version field is not 6.
    #[error("not an IPv6 packet: version field is {0}")]
    Version(u8),
    /// The payload length runs past the buffer.
    #[error("invalid IPv6 payload length {payload_len}: buffer holds {len}")]
    PayloadLength {
        /// The payload length field.
        payload_len: u16,
        /// Bytes available.
        len: usize,
    },
}

/// A view of an IPv6 packet in a buffer that starts at its fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` if it holds the fixed header, the version is 6 and
    /// the payload length fits the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Ipv6Error> {
        let p = Ipv6Packet { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Ipv6Error::Truncated { len });
        }
        if p.version() != 6 {
            return Err(Ipv6Error::Version(p.version()));
        }
        let payload_len = p.payload_len();
        if HEADER_LEN + usize::from(payload_len) > len {
            return Err(Ipv6Error::PayloadLength { payload_len, len });
        }
        Ok(p)
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[VER_TC_FLOW] >> 4
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        ((read_u32(self.buffer.as_ref(), VER_TC_FLOW) >> 20) & 0xff) as u8
    }

    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), VER_TC_FLOW) & 0x000f_ffff
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), PAYLOAD_LEN)
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[NEXT_HEADER]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut o = [0u8; 16];
        o.copy_from_slice(&self.buffer.as_ref()[SRC..SRC + 16]);
        Ipv6Addr::from(o)
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut o = [0u8; 16];
        o.copy_from_slice(&self.buffer.as_ref()[DST..DST + 16]);
        Ipv6Addr::from(o)
    }

    /// The payload, up to the payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6 with the given traffic class and flow label.
    #[inline]
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        write_u32(self.buffer.as_mut(), VER_TC_FLOW, word);
    }

    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), PAYLOAD_LEN, len);
    }

    #[inline]
    pub fn set_next_header(&mut self, next: u8) {
        self.buffer.as_mut()[NEXT_HEADER] = next;
    }

    #[inline]
    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buffer.as_mut()[HOP_LIMIT] = hops;
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[SRC..SRC + 16].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[DST..DST + 16].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fe80::1 -> ff02::1, UDP, 4 bytes of payload, hop limit 255,
    /// traffic class 0xb8, flow label 0x12345.
    const FIXTURE: [u8; 44] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x04, 0x11, 0xff, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0x01, 0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 1, 2, 3, 4,
    ];

    #[test]
    fn deconstruct() {
        let p = Ipv6Packet::new_checked(&FIXTURE[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 4);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 255);
        assert_eq!(p.src_addr(), "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "ff02::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 44];
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        p.set_version_tc_flow(0xb8, 0x12345);
        p.set_payload_len(4);
        p.set_next_header(17);
        p.set_hop_limit(255);
        p.set_src_addr("fe80::1".parse().unwrap());
        p.set_dst_addr("ff02::1".parse().unwrap());
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(buf, FIXTURE);
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Ipv6Packet::new_checked(&FIXTURE[..39]),
            Err(Ipv6Error::Truncated { len: 39 })
        );
        assert_eq!(
            Ipv6Packet::new_checked(&FIXTURE[..43]),
            Err(Ipv6Error::PayloadLength {
                payload_len: 4,
                len: 43
            })
        );
        let mut bad = FIXTURE;
        bad[0] = 0x4b;
        assert_eq!(
            Ipv6Packet::new_checked(&bad[..]),
            Err(Ipv6Error::Version(4))
        );
    }
}
