//! Remote checksum offload for VXLAN (draft-herbert-vxlan-rco, as Linux's
//! `vxlan ... remcsumtx remcsumrx` puts it on the wire).
//!
//! RFC 7348 §5 leaves one flag bit and the low byte of the VNI word
//! reserved. RCO uses them to say "the inner transport checksum was not
//! computed: its field holds only the pseudo-header sum, and the outer UDP
//! checksum covers the data":
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|R|R|C|              Reserved                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           VXLAN Network Identifier (VNI)      |O| Csum start  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! * `C` (bit 10, `0x20` in the second octet; Linux's `VXLAN_HF_RCO`):
//!   the RCO field is present.
//! * `Csum start` (7 bits, `VXLAN_RCO_MASK`): where the checksummed part
//!   starts, in units of 2 bytes, counted from the start of the inner
//!   Ethernet frame (the byte after the VXLAN header). Only even starts up
//!   to 254 can be said.
//! * `O` (`VXLAN_RCO_UDP`): the checksum field is UDP's (6 bytes past the
//!   start); clear, it is TCP's (16 bytes past it). No other protocol can
//!   be said.
//!
//! A receiver treats the inner frame as checksum-partial (Linux's
//! `CHECKSUM_PARTIAL`, virtio's `NEEDS_CSUM`) with that start and offset.
//! The trust comes from the outer UDP checksum, so a datagram with RCO
//! must have one: the draft enables it on transmit, and a zero checksum
//! would leave the inner data covered by nothing (RFC 6935/6936 allow zero
//! UDP checksums for tunnels only because the inner checksum remains).
//! A receiver that does RCO must also have it enabled explicitly: a
//! kernel VTEP without `remcsumrx` sees an unknown flag and drops the
//! datagram, so a sender uses RCO only toward peers configured for it.

/// Octet of the VXLAN header that holds the `C` flag.
const FLAG_OCTET: usize = 1;
/// The `C` flag in [`FLAG_OCTET`].
pub const FLAG_RCO: u8 = 0x20;
/// Octet of the VXLAN header that holds `O` and `Csum start` (the low,
/// reserved byte of the VNI word).
const FIELD_OCTET: usize = 7;
/// `O`: the checksum is UDP's.
const FIELD_UDP: u8 = 0x80;
/// `Csum start` mask.
const FIELD_START: u8 = 0x7f;

/// Offset of the checksum in a TCP header (RFC 9293 §3.1).
pub const TCP_CSUM_OFFSET: u16 = 16;
/// Offset of the checksum in a UDP header (RFC 768).
pub const UDP_CSUM_OFFSET: u16 = 6;
/// Largest checksum start the field can say.
pub const MAX_START: u16 = (FIELD_START as u16) << 1;

/// Where a checksum-partial inner frame's checksum lies: the sum runs from
/// `start` to the end of the frame and goes into the 16-bit field at
/// `start + offset` (virtio's `csum_start` / `csum_offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rco {
    start: u16,
    offset: u16,
}

/// An RCO field that does not describe a checksum inside the inner frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("RCO checksum at {start}+{offset} does not fit in a {frame_len}-byte inner frame")]
pub struct RcoOutOfBounds {
    /// Checksum start.
    pub start: u16,
    /// Checksum offset.
    pub offset: u16,
    /// Length of the inner frame.
    pub frame_len: usize,
}

impl Rco {
    /// The field for a checksum at `start`/`offset`, or `None` when RCO
    /// cannot say it (an odd start or one past [`MAX_START`], an offset
    /// other than TCP's or UDP's).
    pub fn new(start: u16, offset: u16) -> Option<Rco> {
        let ok = start.is_multiple_of(2)
            && start <= MAX_START
            && (offset == TCP_CSUM_OFFSET || offset == UDP_CSUM_OFFSET);
        ok.then_some(Rco { start, offset })
    }

    /// Checksum start, from the start of the inner Ethernet frame.
    pub fn start(self) -> u16 {
        self.start
    }

    /// Checksum offset from the start: 16 (TCP) or 6 (UDP).
    pub fn offset(self) -> u16 {
        self.offset
    }

    /// The RCO field of a VXLAN header (8 bytes at least), or `None` when
    /// its `C` flag is clear.
    pub fn parse(header: &[u8]) -> Option<Rco> {
        if header.get(FLAG_OCTET)? & FLAG_RCO == 0 {
            return None;
        }
        let field = *header.get(FIELD_OCTET)?;
        Some(Rco {
            start: u16::from(field & FIELD_START) << 1,
            offset: if field & FIELD_UDP != 0 {
                UDP_CSUM_OFFSET
            } else {
                TCP_CSUM_OFFSET
            },
        })
    }

    /// Sets the `C` flag and the field in a VXLAN header (8 bytes at
    /// least; shorter ones are left alone). The VNI is untouched.
    pub fn emit(self, header: &mut [u8]) {
        if header.len() <= FIELD_OCTET {
            return;
        }
        header[FLAG_OCTET] |= FLAG_RCO;
        let udp = if self.offset == UDP_CSUM_OFFSET {
            FIELD_UDP
        } else {
            0
        };
        header[FIELD_OCTET] = udp | (self.start >> 1) as u8;
    }

    /// Checks that the checksum field lies inside an inner frame of
    /// `frame_len` bytes (what Linux's `vxlan_remcsum` pulls).
    pub fn check(self, frame_len: usize) -> Result<(), RcoOutOfBounds> {
        if usize::from(self.start) + usize::from(self.offset) + 2 <= frame_len {
            Ok(())
        } else {
            Err(RcoOutOfBounds {
                start: self.start,
                offset: self.offset,
                frame_len,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Vni, VxlanHeader};

    /// VNI 42 with RCO for TCP at 34 (Ethernet + IPv4 without options),
    /// the header Linux `remcsumtx` sends for such a segment.
    const TCP34: [u8; 8] = [0x08, 0x20, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x11];
    /// VNI 0x123456 with RCO for UDP at 54 (Ethernet + IPv6).
    const UDP54: [u8; 8] = [0x08, 0x20, 0x00, 0x00, 0x12, 0x34, 0x56, 0x9b];

    #[test]
    fn decodes_fixtures() {
        let tcp = Rco::parse(&TCP34).unwrap();
        assert_eq!((tcp.start(), tcp.offset()), (34, 16));
        let udp = Rco::parse(&UDP54).unwrap();
        assert_eq!((udp.start(), udp.offset()), (54, 6));
        // The VNI still reads as the top 24 bits.
        assert_eq!(VxlanHeader::new_unchecked(&UDP54[..]).vni().get(), 0x123456);
    }

    #[test]
    fn no_flag_no_field() {
        let mut h = TCP34;
        h[1] = 0;
        assert_eq!(Rco::parse(&h), None);
        assert_eq!(Rco::parse(&TCP34[..7]), None);
    }

    #[test]
    fn emits_fixtures_over_a_plain_header() {
        let mut h = [0u8; 8];
        VxlanHeader::emit(&mut h[..], Vni::new(42).unwrap()).unwrap();
        Rco::new(34, 16).unwrap().emit(&mut h);
        assert_eq!(h, TCP34);
        let mut h = [0u8; 8];
        VxlanHeader::emit(&mut h[..], Vni::new(0x123456).unwrap()).unwrap();
        Rco::new(54, 6).unwrap().emit(&mut h);
        assert_eq!(h, UDP54);
    }

    #[test]
    fn every_sayable_field_round_trips() {
        for start in (0..=MAX_START).step_by(2) {
            for offset in [TCP_CSUM_OFFSET, UDP_CSUM_OFFSET] {
                let rco = Rco::new(start, offset).unwrap();
                let mut h = [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0];
                rco.emit(&mut h);
                assert_eq!(Rco::parse(&h), Some(rco));
                assert_eq!(h[4..7], [0xab, 0xcd, 0xef], "VNI kept");
            }
        }
    }

    #[test]
    fn refuses_what_the_field_cannot_say() {
        assert_eq!(Rco::new(35, 16), None, "odd start");
        assert_eq!(Rco::new(256, 16), None, "start past 254");
        assert_eq!(Rco::new(34, 10), None, "neither TCP nor UDP");
        assert!(Rco::new(254, 6).is_some());
    }

    #[test]
    fn bounds_are_checked_against_the_inner_frame() {
        let tcp = Rco::new(34, 16).unwrap();
        assert!(
            tcp.check(52).is_ok(),
            "the field's last byte is the frame's"
        );
        assert_eq!(
            tcp.check(51),
            Err(RcoOutOfBounds {
                start: 34,
                offset: 16,
                frame_len: 51
            })
        );
        let far = Rco::parse(&[0x08, 0x20, 0, 0, 0, 0, 1, 0x7f]).unwrap();
        assert_eq!(far.start(), 254);
        assert!(far.check(271).is_err());
        assert!(far.check(272).is_ok());
    }
}
