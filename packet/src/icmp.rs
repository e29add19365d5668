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
