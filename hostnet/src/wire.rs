//! Building the frames the socket uplink hands to the switch: Ethernet II,
//! IPv4 (RFC 791 §3.1, no options, DF set), ARP replies (RFC 826), and the
//! transport checksums (RFC 1071, left partial for the TAP to complete
//! where the frame carries data).

use std::net::Ipv4Addr;

use weft_os::tap::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};
use weft_packet::checksum::{checksum, fold, pseudo_header_sum_v4, sum};
use weft_packet::{MacAddr, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HEADER_LEN, IP_PROTO_TCP};
use weft_switch::frame::{Offload, NO_OFFLOAD};

/// Ethernet plus a 20-byte IPv4 header.
pub const L3_END: usize = ETH_HEADER_LEN + 20;
/// Headers before a TCP payload (no options).
pub const TCP_HEADERS: usize = L3_END + 20;
/// Headers before a UDP or ICMP echo payload.
pub const UDP_HEADERS: usize = L3_END + 8;
/// Offset of the checksum in a TCP header.
const TCP_CSUM: usize = 16;
/// Offset of the checksum in a UDP header.
const UDP_CSUM: usize = 6;
/// An ARP frame: Ethernet header plus the 28-byte IPv4-over-Ethernet body.
pub const ARP_FRAME_LEN: usize = ETH_HEADER_LEN + 28;

/// The two link-layer ends of the socket uplink: the switch's uplink (the
/// frames' destination) and the virtual host beyond it (their source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub uplink_mac: MacAddr,
    pub host_mac: MacAddr,
}

/// Writes the Ethernet and IPv4 headers of a packet from `src` to `dst`
/// carrying `l4_len` bytes of protocol `proto`; returns [`L3_END`].
pub fn write_ipv4(
    out: &mut [u8],
    link: &Link,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    l4_len: usize,
    ident: u16,
) -> usize {
    out[0..6].copy_from_slice(&link.uplink_mac.0);
    out[6..12].copy_from_slice(&link.host_mac.0);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip = &mut out[ETH_HEADER_LEN..L3_END];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ident.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip[8] = 64;
    ip[9] = proto;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    L3_END
}

/// Finishes a TCP frame of `total` bytes whose headers start at 0: fills
/// the TCP checksum. A segment with data gets its checksum left partial
/// (the pseudo-header sum, completed by the TAP's receiver) and, beyond
/// `mss`, is described as a TSO super-frame; an empty one gets it complete.
pub fn finish_tcp(frame: &mut [u8], tcp_hdr_len: usize, mss: u16) -> Offload {
    let l4 = L3_END;
    let tcp_len = frame.len() - l4;
    let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
    let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
    let pseudo = pseudo_header_sum_v4(src, dst, IP_PROTO_TCP, tcp_len as u16);
    let payload = tcp_len - tcp_hdr_len;
    if payload == 0 {
        frame[l4 + TCP_CSUM..l4 + TCP_CSUM + 2].fill(0);
        let c = !fold(sum(pseudo, &frame[l4..]));
        frame[l4 + TCP_CSUM..l4 + TCP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
        return NO_OFFLOAD;
    }
    frame[l4 + TCP_CSUM..l4 + TCP_CSUM + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    let gso = payload > usize::from(mss);
    Offload {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: if gso { VIRTIO_NET_HDR_GSO_TCPV4 } else { 0 },
        hdr_len: if gso { (l4 + tcp_hdr_len) as u16 } else { 0 },
        gso_size: if gso { mss } else { 0 },
        csum_start: l4 as u16,
        csum_offset: TCP_CSUM as u16,
        num_buffers: 0,
    }
}

/// Fills the UDP header and its complete checksum (RFC 768) of a frame
/// whose payload is already in place after [`UDP_HEADERS`].
pub fn finish_udp(frame: &mut [u8], src_port: u16, dst_port: u16) {
    let l4 = L3_END;
    let len = (frame.len() - l4) as u16;
    let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
    let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
    let udp = &mut frame[l4..];
    udp[0..2].copy_from_slice(&src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&len.to_be_bytes());
    udp[UDP_CSUM..UDP_CSUM + 2].fill(0);
    let pseudo = pseudo_header_sum_v4(src, dst, weft_packet::IP_PROTO_UDP, len);
    let mut c = !fold(sum(pseudo, udp));
    if c == 0 {
        c = 0xffff; // RFC 768: zero means "no checksum"
    }
    udp[UDP_CSUM..UDP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
}

/// Fills the ICMP checksum (RFC 792) of the message after [`L3_END`].
pub fn finish_icmp(frame: &mut [u8]) {
    let icmp = &mut frame[L3_END..];
    icmp[2..4].fill(0);
    let c = checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
}

/// An ARP request's sender MAC, sender IP and target IP, if `frame` is an
/// IPv4-over-Ethernet ARP request (RFC 826).
pub fn arp_request(frame: &[u8]) -> Option<(MacAddr, Ipv4Addr, Ipv4Addr)> {
    let a = frame.get(ETH_HEADER_LEN..ARP_FRAME_LEN)?;
    if a[0..2] != [0, 1] || a[2..4] != [8, 0] || a[4] != 6 || a[5] != 4 || a[6..8] != [0, 1] {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&a[8..14]);
    let sip = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    let tip = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    Some((MacAddr(mac), sip, tip))
}

/// Writes the ARP reply "`ip` is at `link.host_mac`" to `to_mac`/`to_ip`;
/// returns [`ARP_FRAME_LEN`].
pub fn write_arp_reply(
    out: &mut [u8],
    link: &Link,
    ip: Ipv4Addr,
    to_mac: MacAddr,
    to_ip: Ipv4Addr,
) -> usize {
    out[0..6].copy_from_slice(&to_mac.0);
    out[6..12].copy_from_slice(&link.host_mac.0);
    out[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let a = &mut out[ETH_HEADER_LEN..ARP_FRAME_LEN];
    a[0..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    a[8..14].copy_from_slice(&link.host_mac.0);
    a[14..18].copy_from_slice(&ip.octets());
    a[18..24].copy_from_slice(&to_mac.0);
    a[24..28].copy_from_slice(&to_ip.octets());
    ARP_FRAME_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const LINK: Link = Link {
        uplink_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        host_mac: MacAddr([2, 0, 0, 0, 0, 2]),
    };
    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    #[test]
    fn empty_tcp_segment_is_complete_and_valid() {
        let mut f = [0u8; TCP_HEADERS];
        write_ipv4(&mut f, &LINK, A, B, IP_PROTO_TCP, 20, 7);
        crate::tcp::write_header(&mut f[L3_END..], 80, 4000, 1, 2, crate::tcp::ACK, 100, None);
        assert_eq!(finish_tcp(&mut f, 20, 1460), NO_OFFLOAD);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().source_addr(), A);
        assert_eq!(ip.header().header_checksum(), {
            ip.header().to_header().calc_header_checksum()
        });
        let Some(TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("not TCP")
        };
        let want = tcp
            .to_header()
            .calc_checksum_ipv4_raw(A.octets(), B.octets(), &[])
            .unwrap();
        assert_eq!(tcp.checksum(), want);
    }

    #[test]
    fn large_tcp_segment_is_a_partial_super_frame() {
        let mut f = vec![0u8; TCP_HEADERS + 5000];
        write_ipv4(&mut f, &LINK, A, B, IP_PROTO_TCP, 20 + 5000, 7);
        crate::tcp::write_header(&mut f[L3_END..], 80, 4000, 1, 2, crate::tcp::ACK, 100, None);
        let o = finish_tcp(&mut f, 20, 1460);
        assert_eq!(o.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!((o.gso_size, o.hdr_len, o.csum_start), (1460, 54, 34));
        let pseudo = fold(pseudo_header_sum_v4(A, B, IP_PROTO_TCP, 5020));
        assert_eq!(u16::from_be_bytes([f[50], f[51]]), pseudo);
        // Small enough for one segment: partial, no GSO.
        let o = finish_tcp(&mut f[..TCP_HEADERS + 100], 20, 1460);
        assert_eq!((o.gso_type, o.flags), (0, VIRTIO_NET_HDR_F_NEEDS_CSUM));
    }

    #[test]
    fn udp_checksum_verifies() {
        let mut f = vec![0u8; UDP_HEADERS + 5];
        write_ipv4(&mut f, &LINK, A, B, weft_packet::IP_PROTO_UDP, 13, 1);
        f[UDP_HEADERS..].copy_from_slice(b"hello");
        finish_udp(&mut f, 53, 3333);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Udp(u)) = p.transport else {
            panic!("not UDP")
        };
        let want = u
            .to_header()
            .calc_checksum_ipv4_raw(A.octets(), B.octets(), b"hello")
            .unwrap();
        assert_eq!(u.checksum(), want);
        assert_eq!(u.payload(), b"hello");
    }

    #[test]
    fn answers_arp_requests() {
        let mut req = [0u8; ARP_FRAME_LEN];
        req[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        req[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        req[22..28].copy_from_slice(&LINK.uplink_mac.0);
        req[28..32].copy_from_slice(&B.octets());
        req[38..42].copy_from_slice(&A.octets());
        let (mac, sip, tip) = arp_request(&req).unwrap();
        assert_eq!((mac, sip, tip), (LINK.uplink_mac, B, A));
        let mut out = [0u8; ARP_FRAME_LEN];
        write_arp_reply(&mut out, &LINK, tip, mac, sip);
        assert_eq!(&out[20..22], &[0, 2], "a reply");
        assert_eq!(&out[22..28], &LINK.host_mac.0);
        req[21] = 2; // a reply is no request
        assert!(arp_request(&req).is_none());
        assert!(arp_request(&req[..30]).is_none());
    }
}
