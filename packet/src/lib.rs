//! Every wire format weft reads or writes, once: field offsets, byte
//! accessors, checked views over packet buffers, and the Internet checksum.
//!
//! - [`ethernet`]: Ethernet II frames and MAC addresses (IEEE 802.3).
//! - [`arp`]: ARP for IPv4 over Ethernet (RFC 826).
//! - [`ipv4`]: IPv4 headers (RFC 791 §3.1).
//! - [`ipv6`]: IPv6 fixed headers (RFC 8200 §3).
//! - [`icmp`]: ICMP for IPv4 (RFC 792).
//! - [`udp`]: UDP (RFC 768).
//! - [`tcp`]: TCP headers (RFC 793 §3.1).
//! - [`meta`]: what ingress learns about a frame, parsed once.
//! - [`bytes`]: big-endian accessors at byte offsets.
//! - [`checksum`]: the Internet checksum (RFC 1071) and its incremental
//!   update (RFC 1624).
//!
//! Each header has field offsets as constants, for code that works at fixed
//! positions in a frame, and a view (`Ipv4Packet`, `EthernetFrame`, ...)
//! over any `T: AsRef<[u8]>` in the manner of smoltcp's `wire` module:
//! `new_checked` validates lengths once, after which getters index without
//! further checks, and setters are available when `T: AsMut<[u8]>`.
//! Nothing here allocates or uses `unsafe`.

#![forbid(unsafe_code)]

pub mod arp;
pub mod bytes;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod meta;
pub mod tcp;
pub mod udp;

pub use bytes::{get_u16, read_ipv4, read_u16, read_u32, write_ipv4, write_u16, write_u32};
pub use ethernet::{splitmix64, stable_hash, MacAddr, MacParseError};

/// Length of an Ethernet II header: destination, source, ethertype.
pub const ETH_HEADER_LEN: usize = 14;
/// Length of an IEEE 802.1Q / 802.1ad tag.
pub const VLAN_TAG_LEN: usize = 4;
/// Minimum IPv4 header length (IHL = 5).
pub const IPV4_MIN_HEADER_LEN: usize = ipv4::MIN_HEADER_LEN;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = arp::LEN;
/// Length of the fixed ICMP header (type, code, checksum, 4 bytes of rest).
pub const ICMP_HEADER_LEN: usize = icmp::HEADER_LEN;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

pub const IP_PROTO_ICMP: u8 = 1;
pub const IP_PROTO_TCP: u8 = 6;
pub const IP_PROTO_UDP: u8 = 17;
