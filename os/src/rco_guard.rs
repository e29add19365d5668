//! A kernel-side guard for VXLAN remote checksum offload
//! (draft-herbert-vxlan-rco): a VXLAN datagram with the RCO flag whose
//! outer UDP checksum is zero never reaches weft.
//!
//! With RCO the inner transport checksum is left partial and the outer UDP
//! checksum alone covers the data; the draft enables that checksum on
//! transmit for this reason. RFC 7348 §5 and RFC 6935/6936 let tunnels
//! send UDP with a zero checksum (no checksum) only because the inner
//! packet keeps its own, which an RCO datagram does not. Over IPv4 the
//! kernel hands a zero-checksum datagram to the socket unchecked, and the
//! socket API does not say what the checksum was, so weft cannot tell
//! after the fact. (Linux's own VXLAN takes RCO only through a GRO path
//! that needs a validated checksum or a receive path that does not look;
//! weft is stricter.)
//!
//! So the receive socket gets a classic BPF filter (`SO_ATTACH_FILTER`),
//! which runs on each datagram before it is queued, with the UDP header at
//! offset 0 (`udp_queue_rcv_one_skb` filters with the header kept):
//!
//! ```text
//! 0: ld   len                 ; datagram length, UDP header included
//! 1: jge  #10, 2, 7           ; too short to hold the flag: leave to weft
//! 2: ldb  [9]                 ; second octet of the VXLAN header
//! 3: jset #0x20, 4, 7         ; RCO flag clear: accept
//! 4: ldh  [6]                 ; the UDP checksum
//! 5: jeq  #0, 6, 7            ; zero: drop
//! 6: ret  #0
//! 7: ret  #0xffffffff         ; accept whole
//! ```
//!
//! Every other datagram passes untouched, so plain VXLAN with a zero
//! checksum (what many VTEPs send) is served as before. A dropped datagram
//! is counted by the kernel (`UdpInErrors` in `/proc/net/snmp`, the
//! socket's drop count). The filter sees a GRO run's first header; the
//! kernel merges only datagrams with non-zero checksums into one.

use std::io;

use socket2::{SockFilter, Socket};

const BPF_LD: u16 = 0x00;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_H: u16 = 0x08;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_LEN: u16 = 0x80;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;

/// The program of the [module docs](self).
fn program() -> [SockFilter; 8] {
    [
        SockFilter::new(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0),
        SockFilter::new(BPF_JMP | BPF_JGE | BPF_K, 0, 5, 10),
        SockFilter::new(BPF_LD | BPF_B | BPF_ABS, 0, 0, 9),
        SockFilter::new(BPF_JMP | BPF_JSET | BPF_K, 0, 3, 0x20),
        SockFilter::new(BPF_LD | BPF_H | BPF_ABS, 0, 0, 6),
        SockFilter::new(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
        SockFilter::new(BPF_RET | BPF_K, 0, 0, 0),
        SockFilter::new(BPF_RET | BPF_K, 0, 0, u32::MAX),
    ]
}

/// Attaches the guard to a UDP socket that receives VXLAN (before it is
/// bound, so no datagram is queued unfiltered).
pub(crate) fn attach(socket: &Socket) -> io::Result<()> {
    socket.attach_filter(&program())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
    use std::time::Duration;

    use nix::sys::socket::setsockopt;
    use nix::{setsockopt_impl, sockopt_impl};
    use socket2::{Domain, Protocol, SockAddr, Type};

    use super::*;

    sockopt_impl!(NoCheck, SetOnly, libc::SOL_SOCKET, libc::SO_NO_CHECK, bool);

    /// Over loopback: of four datagrams, only the one with RCO and a zero
    /// UDP checksum is dropped.
    #[test]
    fn rco_without_an_outer_checksum_is_dropped() {
        let lo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let rx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        attach(&rx).unwrap();
        rx.bind(&SockAddr::from(lo)).unwrap();
        let rx: UdpSocket = rx.into();
        rx.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let to = rx.local_addr().unwrap();

        let summed = UdpSocket::bind(lo).unwrap();
        let unsummed = UdpSocket::bind(lo).unwrap();
        setsockopt(&unsummed, NoCheck, &true).unwrap();

        // VXLAN header (I flag, VNI 1), RCO for TCP at 34 or no RCO, and
        // a marker byte.
        let rco = [0x08, 0x20, 0, 0, 0, 0, 1, 0x11, 1];
        let plain = [0x08, 0, 0, 0, 0, 0, 1, 0, 2];
        unsummed.send_to(&rco, to).unwrap();
        summed
            .send_to(&[0x08, 0x20, 0, 0, 0, 0, 1, 0x11, 3], to)
            .unwrap();
        unsummed.send_to(&plain, to).unwrap();
        unsummed.send_to(&[4], to).unwrap();

        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = rx.recv(&mut buf) {
            got.push(buf[n - 1]);
        }
        assert_eq!(got, [3, 2, 4], "only RCO without a checksum is dropped");
    }
}
