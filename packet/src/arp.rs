//! ARP for IPv4 over Ethernet (RFC 826).
//!
//! The packet is hardware type, protocol type, hardware and protocol
//! address lengths, operation, then sender hardware/protocol address and
//! target hardware/protocol address: 28 bytes for Ethernet/IPv4.

/// Length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = 28;

pub const HTYPE: usize = 0;
pub const PTYPE: usize = 2;
pub const HLEN: usize = 4;
pub const PLEN: usize = 5;
pub const OPER: usize = 6;
pub const SHA: usize = 8;
pub const SPA: usize = 14;
pub const THA: usize = 18;
pub const TPA: usize = 24;
pub const HTYPE_ETHERNET: u16 = 1;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;
