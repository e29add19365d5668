//! Zero-copy view of the 8-byte VXLAN header (RFC 7348 §5).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The view follows the shape of smoltcp's wire types: [`VxlanHeader`]
//! wraps any `T: AsRef<[u8]>` (and `AsMut<[u8]>` for the setters), never
//! copies, and validates length once in [`VxlanHeader::new_checked`] so the
//! getters can index without further checks.

use crate::Vni;

/// Length of the VXLAN header in bytes.
pub const HEADER_LEN: usize = 8;

/// The I flag: set when the VNI field is valid. RFC 7348 §5 requires it to
/// be 1 for a valid VXLAN packet.
pub const FLAG_VNI: u8 = 0x08;

/// Byte offsets of the header fields.
mod field {
    use core::ops::{Range, RangeFrom};

    /// Flags octet (`RRRRIRRR`).
    pub const FLAGS: usize = 0;
    /// First reserved field, 24 bits.
    pub const RESERVED1: Range<usize> = 1..4;
    /// VXLAN Network Identifier, 24 bits, network byte order.
    pub const VNI: Range<usize> = 4..7;
    /// Second reserved field, 8 bits.
    pub const RESERVED2: usize = 7;
    /// The encapsulated (inner) Ethernet frame.
    pub const PAYLOAD: RangeFrom<usize> = super::HEADER_LEN..;
}

/// The buffer is too short to hold a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("buffer of {len} bytes is too short for a VXLAN header ({HEADER_LEN} bytes)")]
pub struct Truncated {
    /// Length of the buffer that was offered.
    pub len: usize,
}

/// A read/write view of a VXLAN header and the frame that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    /// Wraps `buffer` without checking its length.
    ///
    /// The getters panic if the buffer is shorter than [`HEADER_LEN`]; call
    /// [`check_len`](Self::check_len) first or use
    /// [`new_checked`](Self::new_checked).
    pub const fn new_unchecked(buffer: T) -> Self {
        VxlanHeader { buffer }
    }

    /// Wraps `buffer` after checking that it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks that the buffer holds at least [`HEADER_LEN`] bytes, so that
    /// no getter or setter can panic.
    pub fn check_len(&self) -> Result<(), Truncated> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            Err(Truncated { len })
        } else {
            Ok(())
        }
    }

    /// Consumes the view and returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The raw flags octet.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the I flag is set, i.e. the VNI field is valid.
    pub fn has_vni_flag(&self) -> bool {
        self.flags() & FLAG_VNI != 0
    }

    /// The 24-bit VXLAN Network Identifier.
    pub fn vni(&self) -> Vni {
        let b = &self.buffer.as_ref()[field::VNI];
        Vni::from_u24(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    /// Whether every reserved bit (the seven R flag bits, the 24-bit and
    /// the 8-bit reserved fields) is zero.
    ///
    /// RFC 7348 §5: reserved fields "MUST be set to zero on transmission
    /// and ignored on receipt". A sender may use this to assert what it
    /// emits; a receiver **must not** drop a packet because this returns
    /// `false` ([`crate::decapsulate`] ignores these bits).
    #[doc(alias = "reserved_ok")]
    pub fn reserved_bits_zero(&self) -> bool {
        let b = self.buffer.as_ref();
        b[field::FLAGS] & !FLAG_VNI == 0
            && b[field::RESERVED1].iter().all(|&x| x == 0)
            && b[field::RESERVED2] == 0
    }

    /// The bytes after the header: the inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    /// Writes a fresh header into the first [`HEADER_LEN`] bytes of
    /// `buffer`: I flag set, VNI `vni`, every reserved bit zero. Bytes after
    /// the header are left untouched.
    pub fn emit(buffer: T, vni: Vni) -> Result<Self, Truncated> {
        let mut header = Self::new_checked(buffer)?;
        header.buffer.as_mut()[..HEADER_LEN].fill(0);
        header.set_flags(FLAG_VNI);
        header.set_vni(vni);
        Ok(header)
    }

    /// Sets the raw flags octet.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the VNI field; the I flag and the reserved bits are unchanged.
    pub fn set_vni(&mut self, vni: Vni) {
        let [_, a, b, c] = vni.get().to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&[a, b, c]);
    }

    /// The inner frame, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real VXLAN header for VNI 42 (as seen on the wire, e.g. from Linux
    /// `ip link add type vxlan id 42`).
    const VNI42: [u8; 8] = [0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00];

    #[test]
    fn parses_fixture() {
        let h = VxlanHeader::new_checked(&VNI42[..]).unwrap();
        assert_eq!(h.flags(), 0x08);
        assert!(h.has_vni_flag());
        assert_eq!(h.vni().get(), 42);
        assert!(h.reserved_bits_zero());
        assert!(h.payload().is_empty());
    }

    #[test]
    fn check_len_rejects_short_buffers() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                VxlanHeader::new_checked(&VNI42[..len]),
                Err(Truncated { len })
            );
        }
        assert!(VxlanHeader::new_checked(&VNI42[..]).is_ok());
        assert!(VxlanHeader::new_unchecked(&VNI42[..3]).check_len().is_err());
    }

    #[test]
    fn emit_matches_fixture_and_keeps_payload() {
        let mut buf = [0xffu8; 10];
        let h = VxlanHeader::emit(&mut buf[..], Vni::new(42).unwrap()).unwrap();
        assert_eq!(h.payload(), &[0xff, 0xff]);
        assert_eq!(&buf[..8], &VNI42);
        assert_eq!(&buf[8..], &[0xff, 0xff]);
        let mut short = [0u8; 7];
        assert_eq!(
            VxlanHeader::emit(&mut short[..], Vni::MAX).unwrap_err(),
            Truncated { len: 7 }
        );
    }

    #[test]
    fn max_vni_roundtrip() {
        let mut buf = [0u8; 8];
        VxlanHeader::emit(&mut buf[..], Vni::MAX).unwrap();
        assert_eq!(buf, [0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0x00]);
        let h = VxlanHeader::new_checked(&buf[..]).unwrap();
        assert_eq!(h.vni(), Vni::MAX);
        assert_eq!(h.vni().get(), 0xff_ffff);
    }

    #[test]
    fn set_vni_leaves_reserved_byte() {
        let mut buf = VNI42;
        buf[7] = 0x5a;
        let mut h = VxlanHeader::new_checked(&mut buf[..]).unwrap();
        h.set_vni(Vni::new(0x12_3456).unwrap());
        assert_eq!(h.vni().get(), 0x12_3456);
        assert_eq!(buf, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0x5a]);
    }

    #[test]
    fn flags_and_reserved_bits() {
        let mut buf = VNI42;
        let mut h = VxlanHeader::new_checked(&mut buf[..]).unwrap();
        h.set_flags(0x00);
        assert!(!h.has_vni_flag());
        assert!(h.reserved_bits_zero());
        h.set_flags(0x88);
        assert!(h.has_vni_flag());
        assert!(!h.reserved_bits_zero());
        h.set_flags(FLAG_VNI);
        assert!(h.reserved_bits_zero());
        for i in [1, 2, 3, 7] {
            let mut b = VNI42;
            b[i] = 1;
            let h = VxlanHeader::new_checked(&b[..]).unwrap();
            assert!(!h.reserved_bits_zero(), "byte {i}");
            // Reserved bits never leak into the VNI.
            assert_eq!(h.vni().get(), 42);
        }
    }
}
