//! UDP (RFC 768).
//!
//! Source port, destination port, length (header and data) and checksum,
//! 8 bytes; the checksum covers an IPv4 pseudo-header (see
//! [`crate::checksum::pseudo_header_sum_v4`]) and a checksum of 0 means
//! none was computed.

use crate::bytes::{read_u16, write_u16};

/// UDP header length.
pub const HEADER_LEN: usize = 8;

pub const SRC_PORT: usize = 0;
pub const DST_PORT: usize = 2;
pub const LENGTH: usize = 4;
pub const CHECKSUM: usize = 6;

/// Why a buffer does not hold a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("UDP header truncated: {len} bytes, need 8")]
pub struct Truncated {
    /// Bytes available.
    pub len: usize,
}

/// A view of a UDP datagram (header and whatever follows in the buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps `buffer` if it holds the 8-byte header. The length field is
    /// not checked against the buffer (the IP length is authoritative).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Truncated { len });
        }
        Ok(UdpPacket { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), DST_PORT)
    }

    #[inline]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), LENGTH)
    }

    /// Whether the length field is zero (never valid: it counts the
    /// header).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), CHECKSUM)
    }

    /// The bytes after the header, to the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), SRC_PORT, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), DST_PORT, port);
    }

    #[inline]
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), LENGTH, len);
    }

    #[inline]
    pub fn set_checksum(&mut self, sum: u16) {
        write_u16(self.buffer.as_mut(), CHECKSUM, sum);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: [u8; 12] = [
        0x9c, 0x40, 0x00, 0x35, 0x00, 0x0c, 0x12, 0x34, b'w', b'e', b'f', b't',
    ];

    #[test]
    fn deconstruct() {
        let u = UdpPacket::new_checked(&FIXTURE[..]).unwrap();
        assert_eq!(u.src_port(), 40000);
        assert_eq!(u.dst_port(), 53);
        assert_eq!(u.len(), 12);
        assert_eq!(u.checksum(), 0x1234);
        assert_eq!(u.payload(), b"weft");
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 12];
        let mut u = UdpPacket::new_unchecked(&mut buf[..]);
        u.set_src_port(40000);
        u.set_dst_port(53);
        u.set_len(12);
        u.set_checksum(0x1234);
        u.payload_mut().copy_from_slice(b"weft");
        assert_eq!(buf, FIXTURE);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            UdpPacket::new_checked(&FIXTURE[..7]),
            Err(Truncated { len: 7 })
        );
    }
}
