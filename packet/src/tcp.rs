//! TCP headers (RFC 793 §3.1).
//!
//! Source and destination port, sequence and acknowledgment numbers, data
//! offset and flags, window, checksum (over an IPv4 pseudo-header, see
//! [`crate::checksum::pseudo_header_sum_v4`]) and urgent pointer: 20
//! bytes, then options up to the data offset.

use crate::bytes::{read_u16, read_u32, write_u16, write_u32};

/// Minimum TCP header length (data offset 5).
pub const MIN_HEADER_LEN: usize = 20;

pub const SRC_PORT: usize = 0;
pub const DST_PORT: usize = 2;
pub const SEQ: usize = 4;
pub const ACK: usize = 8;
/// Data offset (high nibble) and reserved bits.
pub const DATA_OFFSET: usize = 12;
pub const FLAGS: usize = 13;
pub const WINDOW: usize = 14;
pub const CHECKSUM: usize = 16;
pub const URGENT: usize = 18;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_SYN: u8 = 0x02;
pub const FLAG_RST: u8 = 0x04;
pub const FLAG_PSH: u8 = 0x08;
pub const FLAG_ACK: u8 = 0x10;
pub const FLAG_URG: u8 = 0x20;
pub const FLAG_ECE: u8 = 0x40;
pub const FLAG_CWR: u8 = 0x80;

/// Why a buffer does not hold a TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcpError {
    /// Shorter than the 20-byte fixed header.
    #[error("TCP header truncated: {len} bytes, need 20")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The data offset is below 5 or runs past the buffer.
    #[error("invalid TCP data offset: {header_len} bytes, buffer holds {len}")]
    DataOffset {
        /// Header length from the data offset.
        header_len: usize,
        /// Bytes available.
        len: usize,
    },
}

/// A view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` if it holds the fixed header and the data offset
    /// lies within `[20, buffer length]`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, TcpError> {
        let p = TcpPacket { buffer };
        let len = p.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(TcpError::Truncated { len });
        }
        let header_len = p.header_len();
        if header_len < MIN_HEADER_LEN || header_len > len {
            return Err(TcpError::DataOffset { header_len, len });
        }
        Ok(p)
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
    pub fn seq(&self) -> u32 {
        read_u32(self.buffer.as_ref(), SEQ)
    }

    #[inline]
    pub fn ack(&self) -> u32 {
        read_u32(self.buffer.as_ref(), ACK)
    }

    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[DATA_OFFSET] >> 4) * 4
    }

    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[FLAGS]
    }

    #[inline]
    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), WINDOW)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), CHECKSUM)
    }

    #[inline]
    pub fn urgent(&self) -> u16 {
        read_u16(self.buffer.as_ref(), URGENT)
    }

    /// The bytes after the header, to the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), SRC_PORT, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), DST_PORT, port);
    }

    #[inline]
    pub fn set_seq(&mut self, seq: u32) {
        write_u32(self.buffer.as_mut(), SEQ, seq);
    }

    #[inline]
    pub fn set_ack(&mut self, ack: u32) {
        write_u32(self.buffer.as_mut(), ACK, ack);
    }

    /// Sets the data offset for a header of `header_len` bytes (reserved
    /// bits cleared).
    #[inline]
    pub fn set_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[DATA_OFFSET] = ((header_len / 4) as u8) << 4;
    }

    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[FLAGS] = flags;
    }

    #[inline]
    pub fn set_window(&mut self, window: u16) {
        write_u16(self.buffer.as_mut(), WINDOW, window);
    }

    #[inline]
    pub fn set_checksum(&mut self, sum: u16) {
        write_u16(self.buffer.as_mut(), CHECKSUM, sum);
    }

    #[inline]
    pub fn set_urgent(&mut self, urgent: u16) {
        write_u16(self.buffer.as_mut(), URGENT, urgent);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: [u8; 26] = [
        0xbf, 0x00, 0x00, 0x50, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x60, 0x12, 0x01,
        0x23, 0x01, 0xb6, 0x02, 0x01, 0x02, 0x04, 0x05, 0xb4, b'h', b'i',
    ];

    #[test]
    fn deconstruct() {
        let t = TcpPacket::new_checked(&FIXTURE[..]).unwrap();
        assert_eq!(t.src_port(), 48896);
        assert_eq!(t.dst_port(), 80);
        assert_eq!(t.seq(), 0x0123_4567);
        assert_eq!(t.ack(), 0x89ab_cdef);
        assert_eq!(t.header_len(), 24);
        assert_eq!(t.flags(), FLAG_SYN | FLAG_ACK);
        assert_eq!(t.window(), 0x0123);
        assert_eq!(t.checksum(), 0x01b6);
        assert_eq!(t.urgent(), 0x0201);
        assert_eq!(t.payload(), b"hi");
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 26];
        let mut t = TcpPacket::new_unchecked(&mut buf[..]);
        t.set_src_port(48896);
        t.set_dst_port(80);
        t.set_seq(0x0123_4567);
        t.set_ack(0x89ab_cdef);
        t.set_header_len(24);
        t.set_flags(FLAG_SYN | FLAG_ACK);
        t.set_window(0x0123);
        t.set_checksum(0x01b6);
        t.set_urgent(0x0201);
        buf[20..24].copy_from_slice(&[0x02, 0x04, 0x05, 0xb4]);
        TcpPacket::new_unchecked(&mut buf[..])
            .payload_mut()
            .copy_from_slice(b"hi");
        assert_eq!(buf, FIXTURE);
    }

    #[test]
    fn malformed() {
        assert_eq!(
            TcpPacket::new_checked(&FIXTURE[..19]),
            Err(TcpError::Truncated { len: 19 })
        );
        assert_eq!(
            TcpPacket::new_checked(&FIXTURE[..22]),
            Err(TcpError::DataOffset {
                header_len: 24,
                len: 22
            })
        );
        let mut bad = FIXTURE;
        bad[DATA_OFFSET] = 0x40;
        assert!(TcpPacket::new_checked(&bad[..]).is_err());
    }
}
