//! rtnetlink reply datagrams as the daemon's netlink socket reads them
//! (RFC 3549; `NLMSG_ERROR` with extended acks, `NLMSG_DONE`, route
//! messages decoded by netlink-packet-route).
//!
//! Input: a 4-byte sequence number, then the datagram.
//!
//! Checks: nothing panics, however the lengths, flags and attributes lie.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_os::netlink::decode_reply_datagram;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let seq = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
    let _ = decode_reply_datagram(&data[4..], seq);
    // The same datagram as an answer to the sequence number it carries.
    if data.len() >= 16 {
        let own = u32::from_ne_bytes([data[12], data[13], data[14], data[15]]);
        let _ = decode_reply_datagram(&data[4..], own);
    }
});
