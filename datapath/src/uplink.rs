//! The uplink: a [`Port`] on an existing host interface, through which
//! weft's router reaches the world with a MAC and IP of its own on that
//! link (like a VM on a macvlan).
//!
//! [`UplinkPort`] sends and receives plain Ethernet frames through a
//! promiscuous [`PacketSocket`]. Nothing on the wire carries offload
//! metadata, so:
//!
//! * received frames always come with [`NO_OFFLOAD`]; a frame whose
//!   checksum the kernel left partial (generated on this host with
//!   checksum offload, or a GRO super-frame, [`RecvMeta::csum_not_ready`])
//!   gets it completed in software first ([`complete_partial_csum`]);
//! * a GSO super-frame handed to [`Port::send`] is cut into wire-sized
//!   segments ([`segment`]) in a scratch buffer owned by the port, each
//!   sent on its own; a frame with a partial checksum is completed in the
//!   same buffer; anything else is sent as it is.
//!
//! The port counts nothing (the datapath does); errors are returned.
//!
//! [`RecvMeta::csum_not_ready`]: weft_os::packet::RecvMeta::csum_not_ready

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::port::{PacketBuf, Port, PortCapabilities, HEADROOM};
use weft_os::packet::{PacketError, PacketSocket};
use weft_os::tap::VIRTIO_NET_HDR_F_NEEDS_CSUM;
use weft_packet::ipv4::Ipv4Packet;
use weft_packet::ipv6::{Ipv6Packet, HEADER_LEN as IPV6_HEADER_LEN};
use weft_packet::meta::FrameInfo;
use weft_packet::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV4_MIN_HEADER_LEN, IP_PROTO_TCP, IP_PROTO_UDP,
};
use weft_switch::frame::{is_gso, needs_csum, Offload, MAX_FRAME_LEN, NO_OFFLOAD};
use weft_switch::offload::{complete_csum, segment, OffloadError, TCP_CSUM_OFFSET};

/// Frames one [`UplinkPort::recv_batch`](Port::recv_batch) call may return.
pub const UPLINK_MAX_BATCH: usize = 64;

/// Size of the scratch buffer [`UplinkPort`] segments GSO frames into:
/// room for a 64 KiB super-frame cut into segments of an MSS as small as
/// 536 bytes, each with up to 134 bytes of headers.
pub const SEGMENT_SCRATCH_LEN: usize = 2 * MAX_FRAME_LEN;

/// Offset of the checksum in the UDP (and UDP-Lite) header.
const UDP_CSUM_OFFSET: u16 = 6;
/// IP protocol number of UDP-Lite (RFC 3828), checksummed like UDP.
const IP_PROTO_UDPLITE: u8 = 136;

/// Completes the partial transport checksum of a frame the kernel handed
/// over with `TP_STATUS_CSUMNOTREADY` (its `CHECKSUM_PARTIAL`: the checksum
/// field holds the pseudo-header sum).
///
/// The packet socket does not say where the checksum is, so the frame is
/// parsed: Ethernet with up to two VLAN tags, then IPv4 (not a fragment) or
/// IPv6 (through hop-by-hop, routing and destination options headers), then
/// TCP, UDP or UDP-Lite. The checksum covers the transport header and data
/// up to the end of the IP packet (not any link-layer padding after it), as
/// in [`complete_csum`].
pub fn complete_partial_csum(frame: &mut [u8]) -> Result<(), OffloadError> {
    let FrameInfo { ethertype, l3 } = FrameInfo::parse(frame).ok_or(OffloadError::Truncated)?;
    let (l4, protocol, end) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = frame
                .get(l3..l3 + IPV4_MIN_HEADER_LEN)
                .map(Ipv4Packet::new_unchecked)
                .ok_or(OffloadError::Truncated)?;
            let ihl = ip.header_len();
            if ip.version() != 4 || ihl < IPV4_MIN_HEADER_LEN {
                return Err(OffloadError::Malformed("bad IPv4 version or header length"));
            }
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err(OffloadError::Malformed("IPv4 fragment"));
            }
            (l3 + ihl, ip.protocol(), l3 + usize::from(ip.total_len()))
        }
        ETHERTYPE_IPV6 => {
            let ip = frame
                .get(l3..l3 + IPV6_HEADER_LEN)
                .map(Ipv6Packet::new_unchecked)
                .ok_or(OffloadError::Truncated)?;
            if ip.version() != 6 {
                return Err(OffloadError::Malformed("IPv6 version field is not 6"));
            }
            let plen = usize::from(ip.payload_len());
            let mut next = ip.next_header();
            let mut l4 = l3 + IPV6_HEADER_LEN;
            // Hop-by-hop options, routing, destination options.
            while matches!(next, 0 | 43 | 60) {
                let ext = frame.get(l4..l4 + 2).ok_or(OffloadError::Truncated)?;
                next = ext[0];
                l4 += (usize::from(ext[1]) + 1) * 8;
            }
            (l4, next, l3 + IPV6_HEADER_LEN + plen)
        }
        _ => return Err(OffloadError::NotIp { ethertype }),
    };
    let csum_offset = match protocol {
        IP_PROTO_TCP => TCP_CSUM_OFFSET,
        IP_PROTO_UDP | IP_PROTO_UDPLITE => UDP_CSUM_OFFSET,
        _ => {
            return Err(OffloadError::Malformed(
                "partial checksum on a protocol other than TCP or UDP",
            ))
        }
    };
    if end > frame.len() || l4 > end {
        return Err(OffloadError::Truncated);
    }
    let csum_start = u16::try_from(l4).map_err(|_| OffloadError::Malformed("headers too long"))?;
    let offload = Offload {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        csum_start,
        csum_offset,
        ..NO_OFFLOAD
    };
    complete_csum(&mut frame[..end], &offload)
}

/// Describes a TCP frame whose IP packet exceeds `mtu` as a GSO
/// super-frame (virtio 1.x §5.1.6.2): segments of the MSS this link
/// carries, checksum left partial (the field becomes the pseudo-header sum
/// over the whole TCP length, as the kernel keeps it for GSO). `None` for
/// anything else.
fn tcp_super_frame(frame: &mut [u8], mtu: usize) -> Option<Offload> {
    use weft_os::tap::{VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6};
    use weft_packet::checksum::{fold, pseudo_header_sum_v4, sum};

    let FrameInfo { ethertype, l3 } = FrameInfo::untagged(frame)?;
    let (l4, end, gso_type) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_unchecked(frame.get(l3..l3 + IPV4_MIN_HEADER_LEN)?);
            let ihl = ip.header_len();
            let total = usize::from(ip.total_len());
            if ip.version() != 4 || ihl < 20 || ip.protocol() != IP_PROTO_TCP || total <= mtu {
                return None;
            }
            (l3 + ihl, l3 + total, VIRTIO_NET_HDR_GSO_TCPV4)
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_unchecked(frame.get(l3..l3 + IPV6_HEADER_LEN)?);
            let payload = usize::from(ip.payload_len());
            if ip.next_header() != IP_PROTO_TCP || IPV6_HEADER_LEN + payload <= mtu {
                return None;
            }
            (
                l3 + IPV6_HEADER_LEN,
                l3 + IPV6_HEADER_LEN + payload,
                VIRTIO_NET_HDR_GSO_TCPV6,
            )
        }
        _ => return None,
    };
    if end > frame.len() {
        return None;
    }
    let doff = usize::from(*frame.get(l4 + 12)? >> 4) * 4;
    if doff < 20 || l4 + doff > end {
        return None;
    }
    let mss = mtu.checked_sub(l4 - l3 + doff)?;
    if mss == 0 {
        return None;
    }
    let tcp_len = end - l4;
    let pseudo = if gso_type == VIRTIO_NET_HDR_GSO_TCPV4 {
        let ip = Ipv4Packet::new_unchecked(&frame[l3..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        pseudo_header_sum_v4(src, dst, IP_PROTO_TCP, u16::try_from(tcp_len).ok()?)
    } else {
        let addrs = sum(0, &frame[l3 + 8..l3 + 40]);
        addrs + (tcp_len as u32 >> 16) + (tcp_len as u32 & 0xffff) + u32::from(IP_PROTO_TCP)
    };
    let field = l4 + usize::from(TCP_CSUM_OFFSET);
    frame[field..field + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    Some(Offload {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len: u16::try_from(l4 + doff).ok()?,
        gso_size: u16::try_from(mss).ok()?,
        csum_start: u16::try_from(l4).ok()?,
        csum_offset: TCP_CSUM_OFFSET,
        num_buffers: 0,
    })
}

/// A [`Port`] on a host interface; see the [module docs](self).
pub struct UplinkPort {
    sock: PacketSocket,
    scratch: Box<[u8]>,
    /// The interface's MTU when the port was made.
    mtu: usize,
}

impl std::fmt::Debug for UplinkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkPort")
            .field("sock", &self.sock)
            .finish_non_exhaustive()
    }
}

impl UplinkPort {
    /// Wraps an open packet socket (which should be promiscuous, unless
    /// weft uses the interface's own MAC).
    pub fn new(sock: PacketSocket) -> Self {
        let mtu = sock.mtu().map_or(1500, |m| m as usize);
        UplinkPort {
            sock,
            scratch: vec![0u8; SEGMENT_SCRATCH_LEN].into_boxed_slice(),
            mtu,
        }
    }

    /// Opens a packet socket on the interface `ifname` of the calling
    /// thread's network namespace and makes it promiscuous, so frames to
    /// weft's own MAC arrive.
    pub fn open(ifname: &str) -> Result<Self, PacketError> {
        let sock = PacketSocket::open(ifname)?;
        sock.set_promiscuous(true)?;
        Ok(UplinkPort::new(sock))
    }

    /// The underlying socket (for its MAC, MTU, ...).
    pub fn socket(&self) -> &PacketSocket {
        &self.sock
    }

    /// Gives the socket back.
    pub fn into_socket(self) -> PacketSocket {
        self.sock
    }
}

fn invalid_frame(e: OffloadError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

impl Port for UplinkPort {
    fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < bufs.len() {
            let buf = &mut bufs[filled];
            match self.sock.recv_frame(&mut buf.space()[HEADROOM..]) {
                Ok(meta) if meta.truncated => {
                    // Longer than any frame a port may deliver: hand on an
                    // empty one for the switch to count as malformed.
                    buf.set_frame(0, NO_OFFLOAD);
                    filled += 1;
                }
                Ok(meta) => {
                    buf.set_frame(meta.len, NO_OFFLOAD);
                    // TCP longer than the link's MTU was merged by the
                    // kernel (GRO, or TSO from a local peer): pass it on as
                    // the super-frame it is, to be cut where it must.
                    if let Some(offload) = tcp_super_frame(buf.frame_mut(), self.mtu) {
                        buf.set_frame(meta.len, offload);
                        filled += 1;
                        continue;
                    }
                    if meta.csum_not_ready {
                        // A frame this cannot fix (not TCP/UDP) goes on as
                        // it is; its receiver will drop it.
                        let _ = complete_partial_csum(buf.frame_mut());
                    }
                    filled += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if filled > 0 => {
                    // Deliver what we have; the error will recur next call.
                    let _ = e;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }

    fn send(&mut self, frame: &[u8], offload: &Offload) -> io::Result<()> {
        if !is_gso(offload) && !needs_csum(offload) {
            return self.sock.send(frame);
        }
        let segs = segment(frame, offload, 0, &mut self.scratch).map_err(invalid_frame)?;
        for range in segs.records() {
            self.sock.send(&self.scratch[range])?;
        }
        Ok(())
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.sock.as_raw_fd())
    }

    fn capabilities(&self) -> PortCapabilities {
        PortCapabilities {
            max_batch: UPLINK_MAX_BATCH,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_packet::checksum::{fold, sum};

    /// An Ethernet + IPv4 + UDP frame with a partial checksum (the
    /// pseudo-header sum) and 4 bytes of link-layer padding.
    fn partial_udp_v4() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 5 + 4];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&33u16.to_be_bytes());
        f[23] = IP_PROTO_UDP;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&1000u16.to_be_bytes());
        f[36..38].copy_from_slice(&2000u16.to_be_bytes());
        f[38..40].copy_from_slice(&13u16.to_be_bytes());
        f[42..47].copy_from_slice(b"hello");
        f[47..].copy_from_slice(&[0xee; 4]);
        let pseudo = sum(0, &f[26..34]) + 13 + u32::from(IP_PROTO_UDP);
        f[40..42].copy_from_slice(&fold(pseudo).to_be_bytes());
        f
    }

    #[test]
    fn completes_udp_over_ipv4_ignoring_padding() {
        let mut f = partial_udp_v4();
        complete_partial_csum(&mut f).unwrap();
        // Verifies: pseudo-header + UDP header + data sums to 0xffff.
        let s = sum(0, &f[26..34]) + 13 + u32::from(IP_PROTO_UDP);
        assert_eq!(fold(sum(s, &f[34..47])), 0xffff);
        assert_eq!(&f[47..], &[0xee; 4], "padding untouched");
    }

    #[test]
    fn refuses_what_it_cannot_complete() {
        let mut f = partial_udp_v4();
        f[23] = 1; // ICMP
        assert!(complete_partial_csum(&mut f).is_err());
        let mut f = partial_udp_v4();
        f[12] = 0x08;
        f[13] = 0x06; // ARP
        assert!(matches!(
            complete_partial_csum(&mut f),
            Err(OffloadError::NotIp { ethertype: 0x0806 })
        ));
        let mut f = partial_udp_v4();
        f.truncate(40);
        assert_eq!(complete_partial_csum(&mut f), Err(OffloadError::Truncated));
    }
}
