//! IPv4 network address translation building blocks for weft.
//!
//! The crate starts with the two pieces every NAT data path needs:
//!
//! - [`checksum`]: the Internet checksum (RFC 1071), incremental checksum
//!   update (RFC 1624) and the IPv4 pseudo-header sum, so that rewriting
//!   an address or port patches the IPv4, TCP and UDP checksums in O(1).
//! - [`flow`]: [`FlowKey`], the protocol + source + destination tuple that
//!   identifies a session, parsed from raw IPv4 packets. ICMP echo
//!   sessions are keyed on their query identifier as RFC 5508 describes.
//!
//! Nothing here allocates on the packet path.

pub mod checksum;
pub mod flow;

pub use flow::{FlowError, FlowKey, Protocol};
