//! Big-endian ("network byte order", RFC 1700) field accessors at byte
//! offsets.
//!
//! Headers are read and written at fixed offsets into the frame buffer
//! rather than by casting the buffer to packed structs: frames have no
//! alignment guarantee, and offsets keep bounds checks explicit. These
//! helpers index directly and panic when the field lies outside `buf`;
//! callers check lengths first (or go through the checked views of this
//! crate, which do).

use std::net::Ipv4Addr;

#[inline]
pub fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[inline]
pub fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[inline]
pub fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub fn read_ipv4(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3])
}

#[inline]
pub fn write_ipv4(buf: &mut [u8], at: usize, addr: Ipv4Addr) {
    buf[at..at + 4].copy_from_slice(&addr.octets());
}

/// The big-endian `u16` at `at`, or `None` when it lies past the end.
#[inline]
pub fn get_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = [0xa5u8; 8];
        write_u16(&mut b, 1, 0x1234);
        write_u32(&mut b, 3, 0xdead_beef);
        assert_eq!(b, [0xa5, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0xa5]);
        assert_eq!(read_u16(&b, 1), 0x1234);
        assert_eq!(read_u32(&b, 3), 0xdead_beef);
        assert_eq!(read_ipv4(&b, 3), Ipv4Addr::new(0xde, 0xad, 0xbe, 0xef));
        assert_eq!(get_u16(&b, 6), Some(0xefa5));
        assert_eq!(get_u16(&b, 7), None);
        assert_eq!(get_u16(&b, usize::MAX), None);
    }
}
