//! The datapath's VXLAN side (RFC 7348): encapsulating frames for tunnel
//! ports and decapsulating received datagrams into frames for the switch.
//!
//! Sending prepends the 8-byte VXLAN header with a second iovec, so a plain
//! frame is never copied. A TCP super-frame from a TAP (or a frame with a
//! partial checksum) cannot cross the wire as it is: it is cut into segments
//! with complete checksums ([`weft_switch::offload::segment`]), each record
//! prefixed with its VXLAN header, and the whole run leaves in one UDP GSO
//! `sendmsg` where the kernel supports it.
//!
//! Toward a peer with remote checksum offload (draft-herbert-vxlan-rco,
//! Linux's `remcsumrx`; see [`weft_vtep::rco`]) the inner checksums are
//! left partial instead: a super-frame's segments are copied without
//! summing their payload ([`offload::segment_partial`]) and a frame that
//! came from the TAP with `NEEDS_CSUM` leaves as it is, behind a VXLAN
//! header whose RCO field says where its checksum lies. The outer UDP
//! checksum, which the kernel computes (or offloads) on every datagram
//! weft sends, carries the integrity. Toward every other peer the bytes
//! on the wire are what RFC 7348 §5 alone makes them.

use std::io::{self, IoSlice};
use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use weft_os::udp::VxlanSocket;
use weft_switch::counters::SwitchCounters;
use weft_vtep::header::{VxlanHeader, HEADER_LEN};
use weft_vtep::rco::Rco;
use weft_vtep::{inner_flow_hash, Vni};

use weft_switch::frame::{is_gso, needs_csum, Offload};
use weft_switch::offload;

/// Room for the records of one segmented super-frame: 64 KiB of payload cut
/// into the smallest segments a TCP peer may ask for, each with its own
/// headers and VXLAN prefix.
const SEGMENT_SCRATCH_LEN: usize = 512 * 1024;

/// One VTEP's sockets plus the scratch space for segmentation.
pub struct VxlanIo {
    socket: VxlanSocket,
    scratch: Box<[u8]>,
    counters: Arc<SwitchCounters>,
}

impl VxlanIo {
    pub fn new(socket: VxlanSocket, counters: Arc<SwitchCounters>) -> Self {
        VxlanIo {
            socket,
            scratch: vec![0u8; SEGMENT_SCRATCH_LEN].into_boxed_slice(),
            counters,
        }
    }

    pub fn socket(&self) -> &VxlanSocket {
        &self.socket
    }

    /// Encapsulates `frame` for `vni` and sends it to `peer`, with its
    /// inner checksum left partial if `remote_csum` (the peer takes remote
    /// checksum offload) and the frame has one.
    pub fn send(
        &mut self,
        vni: Vni,
        peer: SocketAddrV4,
        frame: &[u8],
        offload: &Offload,
        remote_csum: bool,
    ) -> io::Result<()> {
        let hash = inner_flow_hash(frame);
        let mut header = [0u8; HEADER_LEN];
        VxlanHeader::emit(&mut header[..], vni).map_err(invalid)?;
        if !is_gso(offload) {
            let partial = needs_csum(offload)
                .then(|| Rco::new(offload.csum_start, offload.csum_offset))
                .flatten()
                .filter(|r| r.check(frame.len()).is_ok());
            match partial {
                Some(rco) if remote_csum => {
                    // The TAP left the pseudo-header sum in the field, as
                    // RCO carries it: the frame leaves untouched.
                    rco.emit(&mut header);
                    self.socket
                        .send(peer, hash, &[IoSlice::new(&header), IoSlice::new(frame)])?;
                    self.counters.vxlan_rco_tx.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                _ if !needs_csum(offload) => {
                    return self.socket.send(
                        peer,
                        hash,
                        &[IoSlice::new(&header), IoSlice::new(frame)],
                    );
                }
                _ => {}
            }
        } else if remote_csum {
            if let Ok((seg, csum)) =
                offload::segment_partial(frame, offload, HEADER_LEN, &mut self.scratch)
            {
                if let Some(rco) = Rco::new(csum.csum_start, csum.csum_offset) {
                    rco.emit(&mut header);
                    for record in seg.records() {
                        self.scratch[record.start..record.start + HEADER_LEN]
                            .copy_from_slice(&header);
                    }
                    self.send_records(peer, hash, seg)?;
                    self.counters
                        .vxlan_rco_tx
                        .fetch_add(seg.count as u64, Ordering::Relaxed);
                    return Ok(());
                }
            }
            // Anything segment_partial refuses, segment refuses too (or
            // completes); a start RCO cannot say gets full checksums.
        }
        let seg =
            offload::segment(frame, offload, HEADER_LEN, &mut self.scratch).map_err(invalid)?;
        for record in seg.records() {
            self.scratch[record.start..record.start + HEADER_LEN].copy_from_slice(&header);
        }
        self.send_records(peer, hash, seg)
    }

    /// Sends the records `seg` laid out in the scratch buffer: one
    /// datagram, or one UDP GSO send of them all.
    fn send_records(
        &mut self,
        peer: SocketAddrV4,
        hash: u32,
        seg: offload::Segmented,
    ) -> io::Result<()> {
        let out = &self.scratch[..seg.total_len];
        if seg.count == 1 {
            self.socket.send(peer, hash, &[IoSlice::new(out)])
        } else {
            let stride = u16::try_from(seg.stride).map_err(invalid)?;
            self.socket.send_gso(peer, hash, out, stride)
        }
    }
}

fn invalid<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::time::Duration;

    use etherparse::PacketBuilder;
    use weft_os::tap::{
        VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    };
    use weft_switch::offload::{segment, segment_partial};

    use super::*;

    /// A TCP frame of `payload` bytes as a TAP hands it over: its checksum
    /// field holds the pseudo-header sum.
    fn tap_frame(payload: usize, gso_size: u16) -> (Vec<u8>, Offload) {
        let data: Vec<u8> = (0..payload).map(|i| (i * 13 + i / 7) as u8).collect();
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 5201, 7, 512)
            .ack(1)
            .write(&mut frame, &data)
            .unwrap();
        let tcp_len = (frame.len() - 34) as u32;
        let mut s = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + tcp_len;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        frame[50..52].copy_from_slice(&(s as u16).to_be_bytes());
        let offload = Offload {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: if gso_size > 0 {
                VIRTIO_NET_HDR_GSO_TCPV4
            } else {
                VIRTIO_NET_HDR_GSO_NONE
            },
            hdr_len: 54,
            gso_size,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        };
        (frame, offload)
    }

    /// Sends `frame` through a `VxlanIo` over loopback and returns the
    /// datagrams a plain socket (no GRO) received.
    fn sent(frame: &[u8], offload: &Offload, remote_csum: bool) -> (Vec<Vec<u8>>, u64) {
        let lo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let rx = UdpSocket::bind(lo).unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let SocketAddr::V4(to) = rx.local_addr().unwrap() else {
            unreachable!()
        };
        let counters = Arc::new(SwitchCounters::default());
        let mut io = VxlanIo::new(VxlanSocket::bind(lo, 0).unwrap(), Arc::clone(&counters));
        io.send(Vni::new(42).unwrap(), to, frame, offload, remote_csum)
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = rx.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        (got, counters.vxlan_rco_tx.load(Ordering::Relaxed))
    }

    const PLAIN: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 42, 0];
    /// RCO for TCP at 34: the `C` flag, start 34 / 2 = 17.
    const RCO_TCP34: [u8; 8] = [0x08, 0x20, 0, 0, 0, 0, 42, 0x11];

    #[test]
    fn a_partial_frame_leaves_untouched_with_rco_and_completed_without() {
        let (frame, offload) = tap_frame(300, 0);
        let (rco, n) = sent(&frame, &offload, true);
        assert_eq!(rco.len(), 1);
        assert_eq!(rco[0][..8], RCO_TCP34);
        assert_eq!(rco[0][8..], frame[..], "the frame as the TAP gave it");
        assert_eq!(n, 1);

        let (plain, n) = sent(&frame, &offload, false);
        let mut done = vec![0u8; 8 + frame.len()];
        segment(&frame, &offload, 8, &mut done).unwrap();
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0][..8], PLAIN);
        assert_eq!(plain[0][8..], done[8..], "today's bytes: checksum complete");
        assert_eq!(n, 0);
    }

    #[test]
    fn a_super_frame_leaves_partial_with_rco_and_as_today_without() {
        let (frame, offload) = tap_frame(10_000, 1448);
        let mut full = vec![0u8; 64 * 1024];
        let s = segment(&frame, &offload, 8, &mut full).unwrap();
        let mut partial = vec![0u8; 64 * 1024];
        let (p, _) = segment_partial(&frame, &offload, 8, &mut partial).unwrap();

        let (rco, n) = sent(&frame, &offload, true);
        assert_eq!(rco.len(), p.count);
        assert_eq!(n, p.count as u64);
        for (got, r) in rco.iter().zip(p.records()) {
            assert_eq!(got[..8], RCO_TCP34);
            assert_eq!(got[8..], partial[r.start + 8..r.end]);
        }

        let (plain, n) = sent(&frame, &offload, false);
        assert_eq!(plain.len(), s.count);
        assert_eq!(n, 0);
        for (got, r) in plain.iter().zip(s.records()) {
            assert_eq!(got[..8], PLAIN);
            assert_eq!(got[8..], full[r.start + 8..r.end]);
        }
    }
}
