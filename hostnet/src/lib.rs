//! weft's socket uplink: endpoints reach the world through the daemon's
//! own host sockets, with no privilege (no packet socket, no host
//! interface), the way slirp4netns and pasta do, but without a full TCP
//! stack and with 64 KiB super-frames both ways.
//!
//! * [`tcp`]: one connection's sequence and window bookkeeping between an
//!   endpoint and a host socket, with no I/O (RFC 9293, RFC 5681 §3.2,
//!   RFC 7323).
//! * [`wire`]: the frames handed back to the switch (Ethernet, IPv4, ARP
//!   replies, checksums left partial for the TAP).
//! * [`uplink`]: [`SocketUplink`], the sockets, flows, published ports'
//!   listeners and timers, driven by the datapath as a port.
//!
//! The switch masquerades endpoints' traffic to the uplink address before
//! it reaches the uplink and undoes it on the way back, so to this crate
//! every flow is a flow of one host; published ports arrive through the
//! switch's DNAT the same way, keeping the client's real address.

#![forbid(unsafe_code)]

pub mod tcp;
pub mod uplink;
pub mod wire;

pub use uplink::{Config, Counters, FrameBuf, SocketUplink, UplinkError};
