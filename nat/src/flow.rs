//! Flow identification: the 5-tuple a NAT keys its translation table on.
//!
//! [`FlowKey::from_ipv4_packet`] parses just enough of an IPv4 packet to
//! build the key: the IPv4 header (RFC 791), then the TCP or UDP ports, or
//! — for ICMP echo request/reply — the query identifier, which RFC 5508
//! (§3.1) treats as the "port" of an ICMP query session. Both `src.port()`
//! and `dst.port()` carry that identifier for ICMP, so reversing the key
//! still matches the reply.

use std::fmt;
use std::net::SocketAddrV4;

use weft_packet::icmp::{self, ECHO_REPLY as ICMP_ECHO_REPLY, ECHO_REQUEST as ICMP_ECHO_REQUEST};
use weft_packet::ipv4::{Ipv4Error, Ipv4Packet, MIN_HEADER_LEN as IPV4_MIN_HEADER_LEN};
use weft_packet::read_u16;
use weft_packet::tcp::MIN_HEADER_LEN as TCP_MIN_HEADER_LEN;
use weft_packet::udp::HEADER_LEN as UDP_HEADER_LEN;

/// ICMP echo header length (type, code, checksum, identifier, sequence).
const ICMP_ECHO_HEADER_LEN: usize = icmp::HEADER_LEN;

/// The transport protocols the NAT translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// ICMP echo queries (IP protocol 1).
    Icmp,
}

impl Protocol {
    /// The IANA IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
        }
    }

    /// The protocol with IP protocol number `n`, if the NAT handles it.
    pub const fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            1 => Some(Protocol::Icmp),
            _ => None,
        }
    }

    /// The lower-case name users type and see: `tcp`, `udp`, `icmp`.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why no [`FlowKey`] could be taken from a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// Shorter than its IPv4 header.
    #[error("IPv4 packet truncated: {len} bytes, header needs {need}")]
    Truncated {
        /// Bytes available.
        len: usize,
        /// Bytes the header needs.
        need: usize,
    },
    /// The version field is not 4.
    #[error("not an IPv4 packet: version field is {0}")]
    BadVersion(u8),
    /// The IHL field is below the minimum of 5 (20 bytes).
    #[error("invalid IPv4 header length: IHL {0} (minimum is 5)")]
    BadHeaderLength(u8),
    /// The total length field is shorter than the header or longer than
    /// the buffer.
    #[error(
        "invalid IPv4 total length {total}: header is {header_len} bytes, buffer holds {available}"
    )]
    BadTotalLength {
        /// The total length field.
        total: u16,
        /// The header length from the IHL field.
        header_len: usize,
        /// Bytes in the buffer.
        available: usize,
    },
    /// A non-first fragment: it carries no transport header, so it has no
    /// ports to key on (it must be reassembled or matched by IP ID).
    #[error("non-first IPv4 fragment (offset {offset} bytes) has no transport header")]
    Fragment {
        /// Fragment offset in bytes.
        offset: u16,
    },
    /// An IP protocol other than TCP, UDP or ICMP.
    #[error("unsupported IP protocol {0}")]
    UnsupportedProtocol(u8),
    /// An ICMP message other than echo request/reply (RFC 5508 query).
    #[error(
        "unsupported ICMP type {icmp_type}: only echo request (8) and echo reply (0) are keyed"
    )]
    UnsupportedIcmp {
        /// The ICMP type.
        icmp_type: u8,
    },
    /// The transport header is cut short (e.g. a tiny first fragment).
    #[error("{proto} header truncated: {len} bytes, need {need}")]
    TruncatedTransport {
        /// The transport protocol.
        proto: Protocol,
        /// Bytes available after the IPv4 header.
        len: usize,
        /// Bytes the transport header needs.
        need: usize,
    },
}

impl From<Ipv4Error> for FlowError {
    fn from(e: Ipv4Error) -> FlowError {
        match e {
            Ipv4Error::Truncated { len } => FlowError::Truncated {
                len,
                need: IPV4_MIN_HEADER_LEN,
            },
            Ipv4Error::Version(v) => FlowError::BadVersion(v),
            Ipv4Error::HeaderLength(ihl) => FlowError::BadHeaderLength(ihl),
            Ipv4Error::HeaderTruncated { header_len, len } => FlowError::Truncated {
                len,
                need: header_len,
            },
            Ipv4Error::TotalLength {
                total,
                header_len,
                len,
            } => FlowError::BadTotalLength {
                total,
                header_len,
                available: len,
            },
        }
    }
}

/// The key of a NAT session: protocol and both endpoints.
///
/// For ICMP the "port" of both endpoints is the echo identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    /// Transport protocol.
    pub proto: Protocol,
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
}

impl FlowKey {
    /// Builds a key from its parts.
    pub const fn new(proto: Protocol, src: SocketAddrV4, dst: SocketAddrV4) -> FlowKey {
        FlowKey { proto, src, dst }
    }

    /// Parses the flow key of an IPv4 packet (starting at the IPv4
    /// header).
    ///
    /// Checks the version, the IHL and the total length (bytes past the
    /// total length, such as Ethernet padding, are ignored). Non-first
    /// fragments are refused with [`FlowError::Fragment`]; a first fragment
    /// (MF set, offset 0) is keyed normally. The header checksum is not
    /// verified.
    pub fn from_ipv4_packet(packet: &[u8]) -> Result<FlowKey, FlowError> {
        let ip = Ipv4Packet::new_checked(packet).map_err(FlowError::from)?;
        let offset = ip.frag_offset();
        if offset != 0 {
            return Err(FlowError::Fragment { offset });
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let l4 = ip.payload();

        let ip_proto = ip.protocol();
        let proto =
            Protocol::from_number(ip_proto).ok_or(FlowError::UnsupportedProtocol(ip_proto))?;
        let need = match proto {
            Protocol::Tcp => TCP_MIN_HEADER_LEN,
            Protocol::Udp => UDP_HEADER_LEN,
            Protocol::Icmp => ICMP_ECHO_HEADER_LEN,
        };
        // The ICMP type is checked before the length so that a short
        // non-echo message is reported as what it is.
        if proto == Protocol::Icmp {
            if let Some(&icmp_type) = l4.first() {
                if !matches!(icmp_type, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) {
                    return Err(FlowError::UnsupportedIcmp { icmp_type });
                }
            }
        }
        if l4.len() < need {
            return Err(FlowError::TruncatedTransport {
                proto,
                len: l4.len(),
                need,
            });
        }
        let (sport, dport) = match proto {
            Protocol::Tcp | Protocol::Udp => (read_u16(l4, 0), read_u16(l4, 2)),
            Protocol::Icmp => {
                let id = read_u16(l4, icmp::ECHO_IDENT);
                (id, id)
            }
        };
        Ok(FlowKey {
            proto,
            src: SocketAddrV4::new(src, sport),
            dst: SocketAddrV4::new(dst, dport),
        })
    }

    /// The key of the return direction: source and destination swapped.
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.proto, self.src, self.dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        IpHeaders, IpNumber, Ipv4Header, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
    };
    use proptest::prelude::*;

    const A: [u8; 4] = [192, 168, 1, 10];
    const B: [u8; 4] = [93, 184, 216, 34];

    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .tcp(sport, dport, 1000, 65535)
            .syn()
            .write(&mut out, payload)
            .unwrap();
        out
    }

    fn ping(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16, reply: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let b = PacketBuilder::ipv4(src, dst, 64);
        let b = if reply {
            b.icmpv4_echo_reply(id, seq)
        } else {
            b.icmpv4_echo_request(id, seq)
        };
        b.write(&mut out, b"abcdefgh").unwrap();
        out
    }

    /// The key etherparse sees in the same bytes.
    fn etherparse_key(packet: &[u8]) -> FlowKey {
        let sliced = SlicedPacket::from_ip(packet).unwrap();
        let Some(NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("not IPv4")
        };
        let (s, d) = (ip.header().source_addr(), ip.header().destination_addr());
        let (proto, sp, dp) = match sliced.transport.unwrap() {
            TransportSlice::Udp(u) => (Protocol::Udp, u.source_port(), u.destination_port()),
            TransportSlice::Tcp(t) => (Protocol::Tcp, t.source_port(), t.destination_port()),
            TransportSlice::Icmpv4(i) => match i.icmp_type() {
                etherparse::Icmpv4Type::EchoRequest(e) | etherparse::Icmpv4Type::EchoReply(e) => {
                    (Protocol::Icmp, e.id, e.id)
                }
                other => panic!("unexpected {other:?}"),
            },
            other => panic!("unexpected {other:?}"),
        };
        FlowKey::new(proto, SocketAddrV4::new(s, sp), SocketAddrV4::new(d, dp))
    }

    #[test]
    fn parses_udp() {
        let pkt = udp(A, 40000, B, 53, b"query");
        let key = FlowKey::from_ipv4_packet(&pkt).unwrap();
        assert_eq!(
            key,
            FlowKey::new(
                Protocol::Udp,
                SocketAddrV4::new(A.into(), 40000),
                SocketAddrV4::new(B.into(), 53)
            )
        );
        assert_eq!(key, etherparse_key(&pkt));
        assert_eq!(
            key.to_string(),
            "udp 192.168.1.10:40000 -> 93.184.216.34:53"
        );
    }

    #[test]
    fn parses_tcp_and_icmp_like_etherparse() {
        for pkt in [
            tcp(A, 51000, B, 443, b""),
            tcp(B, 443, A, 51000, b"data"),
            ping(A, B, 0x1234, 1, false),
            ping(B, A, 0x1234, 1, true),
        ] {
            assert_eq!(
                FlowKey::from_ipv4_packet(&pkt).unwrap(),
                etherparse_key(&pkt)
            );
        }
        let key = FlowKey::from_ipv4_packet(&ping(A, B, 0xbeef, 7, false)).unwrap();
        assert_eq!(key.proto, Protocol::Icmp);
        assert_eq!((key.src.port(), key.dst.port()), (0xbeef, 0xbeef));
    }

    #[test]
    fn echo_reply_matches_reversed_request() {
        let req = FlowKey::from_ipv4_packet(&ping(A, B, 77, 1, false)).unwrap();
        let rep = FlowKey::from_ipv4_packet(&ping(B, A, 77, 1, true)).unwrap();
        assert_eq!(req.reversed(), rep);
        let out = FlowKey::from_ipv4_packet(&tcp(A, 51000, B, 443, b"")).unwrap();
        let back = FlowKey::from_ipv4_packet(&tcp(B, 443, A, 51000, b"")).unwrap();
        assert_eq!(out.reversed(), back);
        assert_eq!(out.reversed().reversed(), out);
    }

    #[test]
    fn ignores_trailing_padding() {
        let mut pkt = ping(A, B, 5, 5, false);
        let key = FlowKey::from_ipv4_packet(&pkt).unwrap();
        pkt.extend_from_slice(&[0; 18]);
        assert_eq!(FlowKey::from_ipv4_packet(&pkt).unwrap(), key);
    }

    #[test]
    fn parses_header_with_options() {
        let mut header = Ipv4Header::new(8, 64, IpNumber::UDP, A, B).unwrap();
        header.options = [1u8, 1, 1, 0].into(); // NOP NOP NOP EOL
        let mut pkt = Vec::new();
        PacketBuilder::ip(IpHeaders::Ipv4(header, Default::default()))
            .udp(1111, 2222)
            .write(&mut pkt, &[])
            .unwrap();
        assert_eq!(pkt[0], 0x46, "IHL 6");
        let key = FlowKey::from_ipv4_packet(&pkt).unwrap();
        assert_eq!((key.src.port(), key.dst.port()), (1111, 2222));
        assert_eq!(key, etherparse_key(&pkt));
    }

    #[test]
    fn rejects_truncated_prefixes() {
        let pkt = udp(A, 1, B, 2, b"");
        for len in 0..IPV4_MIN_HEADER_LEN {
            assert_eq!(
                FlowKey::from_ipv4_packet(&pkt[..len]),
                Err(FlowError::Truncated { len, need: 20 })
            );
        }
        // Past the header, the total length field no longer fits.
        for len in IPV4_MIN_HEADER_LEN..pkt.len() {
            assert!(matches!(
                FlowKey::from_ipv4_packet(&pkt[..len]),
                Err(FlowError::BadTotalLength { total: 28, .. })
            ));
        }
    }

    #[test]
    fn rejects_bad_version_and_ihl() {
        let mut v6 = Vec::new();
        PacketBuilder::ipv6([0; 16], [1; 16], 64)
            .udp(1, 2)
            .write(&mut v6, &[])
            .unwrap();
        assert_eq!(
            FlowKey::from_ipv4_packet(&v6),
            Err(FlowError::BadVersion(6))
        );

        let mut pkt = udp(A, 1, B, 2, b"");
        pkt[0] = 0x44;
        assert_eq!(
            FlowKey::from_ipv4_packet(&pkt),
            Err(FlowError::BadHeaderLength(4))
        );
        pkt[0] = 0x4f; // 60-byte header in a 28-byte packet
        assert_eq!(
            FlowKey::from_ipv4_packet(&pkt),
            Err(FlowError::Truncated { len: 28, need: 60 })
        );
    }

    #[test]
    fn rejects_bad_total_length() {
        let mut pkt = udp(A, 1, B, 2, b"");
        pkt[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            FlowKey::from_ipv4_packet(&pkt),
            Err(FlowError::BadTotalLength {
                total: 19,
                header_len: 20,
                available: 28
            })
        );
        pkt[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert!(matches!(
            FlowKey::from_ipv4_packet(&pkt),
            Err(FlowError::BadTotalLength { total: 29, .. })
        ));
        // Total length cuts the UDP header short.
        pkt[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(
            FlowKey::from_ipv4_packet(&pkt),
            Err(FlowError::TruncatedTransport {
                proto: Protocol::Udp,
                len: 4,
                need: 8
            })
        );
    }

    #[test]
    fn fragments() {
        let mut pkt = udp(A, 1000, B, 2000, &[0u8; 64]);
        let whole = FlowKey::from_ipv4_packet(&pkt).unwrap();
        // First fragment (MF, offset 0): ports present, keyed normally.
        pkt[6] = 0x20;
        assert_eq!(FlowKey::from_ipv4_packet(&pkt), Ok(whole));
        // Non-first fragment, offset 185 * 8 = 1480 bytes.
        pkt[6..8].copy_from_slice(&(0x2000u16 | 185).to_be_bytes());
        assert_eq!(
            FlowKey::from_ipv4_packet(&pkt),
            Err(FlowError::Fragment { offset: 1480 })
        );
        // Last fragment (MF clear, offset non-zero), DF bit ignored.
        pkt[6..8].copy_from_slice(&(0x4000u16 | 1).to_be_bytes());
        assert_eq!(
            FlowKey::from_ipv4_packet(&pkt),
            Err(FlowError::Fragment { offset: 8 })
        );
    }

    #[test]
    fn rejects_other_protocols_and_icmp_types() {
        let mut dest_unreach = Vec::new();
        PacketBuilder::ipv4(A, B, 64)
            .icmpv4_raw(3, 1, [0; 4])
            .write(&mut dest_unreach, &[0; 28])
            .unwrap();
        assert_eq!(
            FlowKey::from_ipv4_packet(&dest_unreach),
            Err(FlowError::UnsupportedIcmp { icmp_type: 3 })
        );
        let mut gre = udp(A, 1, B, 2, b"");
        gre[9] = 47;
        assert_eq!(
            FlowKey::from_ipv4_packet(&gre),
            Err(FlowError::UnsupportedProtocol(47))
        );
        // ICMP echo with a truncated header.
        let mut short = ping(A, B, 1, 1, false)[..24].to_vec();
        short[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(
            FlowKey::from_ipv4_packet(&short),
            Err(FlowError::TruncatedTransport {
                proto: Protocol::Icmp,
                len: 4,
                need: 8
            })
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            FlowError::Fragment { offset: 1480 }.to_string(),
            "non-first IPv4 fragment (offset 1480 bytes) has no transport header"
        );
        assert_eq!(
            FlowError::UnsupportedIcmp { icmp_type: 3 }.to_string(),
            "unsupported ICMP type 3: only echo request (8) and echo reply (0) are keyed"
        );
        assert_eq!(
            FlowError::TruncatedTransport {
                proto: Protocol::Tcp,
                len: 4,
                need: 20
            }
            .to_string(),
            "tcp header truncated: 4 bytes, need 20"
        );
        assert_eq!(
            FlowError::BadVersion(6).to_string(),
            "not an IPv4 packet: version field is 6"
        );
    }

    #[test]
    fn protocol_numbers_roundtrip() {
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
            assert_eq!(Protocol::from_number(p.number()), Some(p));
        }
        assert_eq!(Protocol::from_number(47), None);
    }

    proptest! {
        #[test]
        fn matches_etherparse(
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            sport in any::<u16>(),
            dport in any::<u16>(),
            kind in 0u8..4,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let pkt = match kind {
                0 => udp(src, sport, dst, dport, &payload),
                1 => tcp(src, sport, dst, dport, &payload),
                2 => ping(src, dst, sport, dport, false),
                _ => ping(src, dst, sport, dport, true),
            };
            let ours = FlowKey::from_ipv4_packet(&pkt).unwrap();
            prop_assert_eq!(ours, etherparse_key(&pkt));
            prop_assert_eq!(ours.reversed().reversed(), ours);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = FlowKey::from_ipv4_packet(&bytes);
        }
    }
}
