//! ICMP for IPv4 (RFC 792): types, codes and field offsets.
//!
//! Every message starts with type, code and checksum, then four bytes
//! whose meaning depends on the type (identifier and sequence number for
//! echo, RFC 792 p. 14; unused plus next-hop MTU for "fragmentation
//! needed", RFC 1191 §4), then the data (for errors, the quoted header and
//! at least 8 bytes of the offending datagram).

/// Length of the fixed ICMP header (type, code, checksum, 4 bytes of rest).
pub const HEADER_LEN: usize = 8;

pub const TYPE: usize = 0;
pub const CODE: usize = 1;
pub const CHECKSUM: usize = 2;
/// Echo identifier (RFC 792), in the "rest of header" word.
pub const ECHO_IDENT: usize = 4;
/// Echo sequence number (RFC 792), in the "rest of header" word.
pub const ECHO_SEQ: usize = 6;
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

/// Whether an ICMP type is an echo request or reply (an RFC 5508 query).
pub fn is_echo(ty: u8) -> bool {
    matches!(ty, ECHO_REQUEST | ECHO_REPLY)
}

use crate::bytes::{read_u16, write_u16};

/// Why a buffer does not hold an ICMP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ICMP header truncated: {len} bytes, need 8")]
pub struct Truncated {
    /// Bytes available.
    pub len: usize,
}

/// A view of an ICMP message (header and data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wraps `buffer` if it holds the 8-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Truncated { len });
        }
        Ok(IcmpPacket { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[TYPE]
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), CHECKSUM)
    }

    /// The echo identifier (meaningful for echo messages only).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), ECHO_IDENT)
    }

    /// The echo sequence number (meaningful for echo messages only).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        read_u16(self.buffer.as_ref(), ECHO_SEQ)
    }

    /// The next-hop MTU of "fragmentation needed" (RFC 1191 §4).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), NEXT_HOP_MTU)
    }

    /// Whether the checksum over the whole buffer verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        crate::checksum::checksum(self.buffer.as_ref()) == 0
    }

    /// The data after the 8-byte header (for errors, the quoted datagram).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    #[inline]
    pub fn set_msg_type(&mut self, ty: u8) {
        self.buffer.as_mut()[TYPE] = ty;
    }

    #[inline]
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[CODE] = code;
    }

    #[inline]
    pub fn set_checksum(&mut self, sum: u16) {
        write_u16(self.buffer.as_mut(), CHECKSUM, sum);
    }

    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), ECHO_IDENT, ident);
    }

    #[inline]
    pub fn set_echo_seq(&mut self, seq: u16) {
        write_u16(self.buffer.as_mut(), ECHO_SEQ, seq);
    }

    /// Sets the whole "rest of header" word's second half (next-hop MTU
    /// for "fragmentation needed") and clears the first.
    #[inline]
    pub fn set_unused_and_mtu(&mut self, mtu: u16) {
        write_u16(self.buffer.as_mut(), 4, 0);
        write_u16(self.buffer.as_mut(), NEXT_HOP_MTU, mtu);
    }

    /// Recomputes the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = crate::checksum::checksum(self.buffer.as_ref());
        self.set_checksum(sum);
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo request, identifier 0x1234, sequence 7, payload "ping".
    const FIXTURE: [u8; 12] = [
        0x08, 0x00, 0x06, 0xf4, 0x12, 0x34, 0x00, 0x07, b'p', b'i', b'n', b'g',
    ];

    #[test]
    fn deconstruct() {
        let m = IcmpPacket::new_checked(&FIXTURE[..]).unwrap();
        assert_eq!(m.msg_type(), ECHO_REQUEST);
        assert_eq!(m.code(), 0);
        assert_eq!(m.echo_ident(), 0x1234);
        assert_eq!(m.echo_seq(), 7);
        assert_eq!(m.data(), b"ping");
        assert!(m.verify_checksum());
        assert!(is_echo(m.msg_type()) && !is_error(m.msg_type()));
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 12];
        let mut m = IcmpPacket::new_unchecked(&mut buf[..]);
        m.set_msg_type(ECHO_REQUEST);
        m.set_code(0);
        m.set_echo_ident(0x1234);
        m.set_echo_seq(7);
        m.data_mut().copy_from_slice(b"ping");
        m.fill_checksum();
        assert_eq!(buf, FIXTURE);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            IcmpPacket::new_checked(&FIXTURE[..7]),
            Err(Truncated { len: 7 })
        );
    }
}
