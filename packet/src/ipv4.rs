//! IPv4 (RFC 791 §3.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |Type of Service|          Total Length         |
//! |         Identification        |Flags|      Fragment Offset    |
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! |                    Options                    |    Padding    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

/// Minimum IPv4 header length (IHL = 5).
pub const MIN_HEADER_LEN: usize = 20;

pub const VER_IHL: usize = 0;
pub const TOS: usize = 1;
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

use std::net::Ipv4Addr;

use crate::bytes::{read_ipv4, read_u16, write_ipv4, write_u16};
use crate::checksum;

/// Why a buffer does not hold a well-formed IPv4 header.
///
/// The checks run in this order, so each variant implies the ones above it
/// passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4Error {
    /// Shorter than the 20-byte fixed header.
    #[error("IPv4 packet truncated: {len} bytes, header needs 20")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The version field is not 4.
    #[error("not an IPv4 packet: version field is {0}")]
    Version(u8),
    /// The IHL field is below 5.
    #[error("invalid IPv4 header length: IHL {0} (minimum is 5)")]
    HeaderLength(u8),
    /// The header (with options) runs past the buffer.
    #[error("IPv4 header truncated: {len} bytes, header needs {header_len}")]
    HeaderTruncated {
        /// Header length from the IHL.
        header_len: usize,
        /// Bytes available.
        len: usize,
    },
    /// The total length is shorter than the header or longer than the
    /// buffer.
    #[error("invalid IPv4 total length {total}: header is {header_len} bytes, buffer holds {len}")]
    TotalLength {
        /// The total length field.
        total: u16,
        /// Header length from the IHL.
        header_len: usize,
        /// Bytes available.
        len: usize,
    },
}

/// A view of an IPv4 packet in a buffer that starts at its header.
///
/// [`Ipv4Packet::new_checked`] validates the version, the IHL and the total
/// length against the buffer (RFC 1812 §5.2.2 minus the checksum), after
/// which every getter is in bounds. Bytes past the total length (Ethernet
/// padding) are ignored by [`Ipv4Packet::payload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checks; getters panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` after [`Ipv4Packet::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Ipv4Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the fixed header, the version and the IHL, but not the total
    /// length: for quoted headers inside ICMP errors, which are cut short.
    #[inline]
    pub fn check_header(&self) -> Result<(), Ipv4Error> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Ipv4Error::Truncated { len: b.len() });
        }
        let version = b[VER_IHL] >> 4;
        if version != 4 {
            return Err(Ipv4Error::Version(version));
        }
        let ihl = b[VER_IHL] & 0x0f;
        let header_len = usize::from(ihl) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(Ipv4Error::HeaderLength(ihl));
        }
        if header_len > b.len() {
            return Err(Ipv4Error::HeaderTruncated {
                header_len,
                len: b.len(),
            });
        }
        Ok(())
    }

    /// [`Ipv4Packet::check_header`], then IHL ≤ total length ≤ buffer.
    #[inline]
    pub fn check_len(&self) -> Result<(), Ipv4Error> {
        self.check_header()?;
        let len = self.buffer.as_ref().len();
        let total = self.total_len();
        let header_len = self.header_len();
        if usize::from(total) < header_len || usize::from(total) > len {
            return Err(Ipv4Error::TotalLength {
                total,
                header_len,
                len,
            });
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer, padding included.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[TOS]
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), TOTAL_LEN)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), IDENT)
    }

    /// The flags and fragment offset word.
    #[inline]
    pub fn flags_frag(&self) -> u16 {
        read_u16(self.buffer.as_ref(), FLAGS_FRAG)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & FRAG_OFFSET_MASK) * 8
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[PROTO]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), SRC)
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), DST)
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Whether the header checksum verifies (RFC 1071).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }

    /// The bytes after the header, up to the total length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the IHL for a header of `header_len` bytes.
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    #[inline]
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[TOS] = tos;
    }

    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), TOTAL_LEN, len);
    }

    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), IDENT, ident);
    }

    #[inline]
    pub fn set_flags_frag(&mut self, word: u16) {
        write_u16(self.buffer.as_mut(), FLAGS_FRAG, word);
    }

    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[TTL] = ttl;
    }

    #[inline]
    pub fn set_protocol(&mut self, proto: u8) {
        self.buffer.as_mut()[PROTO] = proto;
    }

    #[inline]
    pub fn set_checksum(&mut self, sum: u16) {
        write_u16(self.buffer.as_mut(), CHECKSUM, sum);
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        write_ipv4(self.buffer.as_mut(), SRC, addr);
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        write_ipv4(self.buffer.as_mut(), DST, addr);
    }

    /// Recomputes the header checksum from scratch.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::checksum(self.header());
        self.set_checksum(sum);
    }

    /// Decrements the TTL and patches the header checksum incrementally
    /// (RFC 1624 eqn. 3, the method RFC 1812 §5.3.1 names).
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_mut();
        let old_word = read_u16(b, TTL);
        // Callers drop TTL ≤ 1 first (RFC 1812 §5.3.1); wrap rather than
        // panic if one does not.
        b[TTL] = b[TTL].wrapping_sub(1);
        let new_word = read_u16(b, TTL);
        let sum = checksum::update16(read_u16(b, CHECKSUM), old_word, new_word);
        write_u16(b, CHECKSUM, sum);
    }

    /// The header, options included, writable.
    #[inline]
    pub fn header_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[..hl]
    }

    /// The bytes after the header, up to the total length, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP/IPv4 header (from Wikipedia's "IPv4 header checksum"), total
    /// length 0x73, DF set, followed by 0x73 - 20 payload bytes and 3 bytes
    /// of padding.
    fn fixture() -> Vec<u8> {
        let mut p = vec![
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        p.extend((0..0x73 - 20).map(|i| i as u8));
        p.extend([0, 0, 0]);
        p
    }

    #[test]
    fn deconstruct() {
        let bytes = fixture();
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.tos(), 0);
        assert_eq!(p.total_len(), 0x73);
        assert_eq!(p.ident(), 0);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.checksum(), 0xb861);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert_eq!(p.payload(), &bytes[20..0x73]);
    }

    #[test]
    fn construct() {
        let bytes = fixture();
        let mut buf = [0xa5u8; 0x73];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(20);
        p.set_tos(0);
        p.set_total_len(0x73);
        p.set_ident(0);
        p.set_flags_frag(FLAG_DF);
        p.set_ttl(64);
        p.set_protocol(17);
        p.set_src_addr(Ipv4Addr::new(192, 168, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(192, 168, 0, 199));
        p.payload_mut().copy_from_slice(&bytes[20..0x73]);
        p.fill_checksum();
        assert_eq!(&buf[..], &bytes[..0x73]);
    }

    #[test]
    fn decrement_ttl_keeps_checksum() {
        let mut bytes = fixture();
        let mut p = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        p.decrement_ttl();
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
    }

    #[test]
    fn malformed_buffers_fail() {
        let good = fixture();
        assert_eq!(
            Ipv4Packet::new_checked(&good[..19]).unwrap_err(),
            Ipv4Error::Truncated { len: 19 }
        );
        let mut bad = good.clone();
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Ipv4Error::Version(6)
        );
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Ipv4Error::HeaderLength(4)
        );
        bad[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..40]).unwrap_err(),
            Ipv4Error::HeaderTruncated {
                header_len: 60,
                len: 40
            }
        );
        // Total length past the buffer, and below the header length.
        assert_eq!(
            Ipv4Packet::new_checked(&good[..0x72]).unwrap_err(),
            Ipv4Error::TotalLength {
                total: 0x73,
                header_len: 20,
                len: 0x72
            }
        );
        let mut bad = good.clone();
        write_u16(&mut bad, TOTAL_LEN, 19);
        assert!(matches!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(Ipv4Error::TotalLength { total: 19, .. })
        ));
        // A quoted header need not hold its total length.
        assert!(Ipv4Packet::new_unchecked(&good[..28])
            .check_header()
            .is_ok());
    }
}
