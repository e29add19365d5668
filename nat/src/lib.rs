//! IPv4 network address translation building blocks for weft.
//!
//! - [`checksum`]: the Internet checksum (RFC 1071), incremental checksum
//!   update (RFC 1624) and the IPv4 pseudo-header sum, so that rewriting
//!   an address or port patches the IPv4, TCP and UDP checksums in O(1).
//! - [`flow`]: [`FlowKey`], the protocol + source + destination tuple that
//!   identifies a session, parsed from raw IPv4 packets. ICMP echo
//!   sessions are keyed on their query identifier as RFC 5508 describes.
//! - [`conntrack`]: the connection tracking table (both directions of a
//!   flow, per-state timeouts, capacity limit, incremental expiry,
//!   counters). It has a single owner (`&mut self`): no lock, no atomic on
//!   a lookup, and its storage (a slab of inline entries and an index) is
//!   allocated for its whole capacity up front, so tracking a packet or
//!   creating a flow does not allocate, except for a port bitmap the first
//!   time an external address is used.
//! - [`portalloc`]: lock-free SNAT port allocation with port preservation
//!   (atomic bitmaps; through `&mut` the owner also skips the read lock on
//!   the map of bitmaps).
//! - [`translate`]: in-place SNAT/DNAT of raw IPv4 packets, including ICMP
//!   echo, ICMP errors quoting a translated packet, and
//!   `CHECKSUM_PARTIAL` packets.
//!
//! The crate does no I/O, reads no clock and takes no lock: the data path
//! passes packets and timestamps in. The port allocator's map of
//! bitmaps has a `RwLock` for callers that share it by `&`; the conntrack
//! table reaches it through `&mut` and never locks it.
//!
//! A data path uses them per packet like this:
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use weft_nat::conntrack::{Conntrack, NatSpec, Timestamp};
//! use weft_nat::translate::{inspect, translate, TranslateOptions};
//!
//! let mut ct = Conntrack::default();
//! let uplink = Ipv4Addr::new(203, 0, 113, 7);
//! # let mut packet = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 172, 17, 0, 2,
//! #     198, 51, 100, 20, 0x9c, 0x40, 0, 53, 0, 8, 0, 0];
//! # let c = weft_packet::checksum::checksum(&packet[..20]);
//! # packet[10..12].copy_from_slice(&c.to_be_bytes());
//! let now = Timestamp::from_secs(1);
//! let info = inspect(&packet).unwrap();
//! let hit = if info.icmp_error {
//!     ct.lookup(&info.key, now)
//! } else {
//!     // Outbound from the bridge: masquerade behind the uplink.
//!     let nat = NatSpec { snat: Some(uplink), ..NatSpec::default() };
//!     ct.track_or_create(&info.key, nat, info.len, info.tcp_flags, now).ok()
//! };
//! let hit = hit.expect("tracked");
//! translate(&mut packet, &hit.rewrite, TranslateOptions::default()).unwrap();
//! assert_eq!(&packet[12..16], &uplink.octets());
//! ```

#![forbid(unsafe_code)]

pub mod conntrack;
pub mod flow;
pub mod portalloc;
pub mod translate;

pub use conntrack::{Conntrack, ConntrackConfig, ConntrackError, NatSpec, Timestamp};
pub use flow::{FlowError, FlowKey, Protocol};
pub use portalloc::{PortAllocError, PortAllocator, PortRange};
pub use translate::{NatError, Rewrite, TranslateOptions};
