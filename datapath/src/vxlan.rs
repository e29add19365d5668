//! The datapath's VXLAN side (RFC 7348): encapsulating frames for tunnel
//! ports and decapsulating received datagrams into frames for the switch.
//!
//! Sending prepends the 8-byte VXLAN header with a second iovec, so a plain
//! frame is never copied. A TCP super-frame from a TAP (or a frame with a
//! partial checksum) cannot cross the wire as it is: it is cut into segments
//! with complete checksums ([`weft_switch::offload::segment`]), each record
//! prefixed with its VXLAN header, and the whole run leaves in one UDP GSO
//! `sendmsg` where the kernel supports it.

use std::io::{self, IoSlice};
use std::net::SocketAddrV4;

use weft_os::udp::VxlanSocket;
use weft_vtep::header::{VxlanHeader, HEADER_LEN};
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
}

impl VxlanIo {
    pub fn new(socket: VxlanSocket) -> Self {
        VxlanIo {
            socket,
            scratch: vec![0u8; SEGMENT_SCRATCH_LEN].into_boxed_slice(),
        }
    }

    pub fn socket(&self) -> &VxlanSocket {
        &self.socket
    }

    /// Encapsulates `frame` for `vni` and sends it to `peer`.
    pub fn send(
        &mut self,
        vni: Vni,
        peer: SocketAddrV4,
        frame: &[u8],
        offload: &Offload,
    ) -> io::Result<()> {
        let hash = inner_flow_hash(frame);
        if !is_gso(offload) && !needs_csum(offload) {
            let mut header = [0u8; HEADER_LEN];
            VxlanHeader::emit(&mut header[..], vni).map_err(invalid)?;
            return self
                .socket
                .send(peer, hash, &[IoSlice::new(&header), IoSlice::new(frame)]);
        }
        let seg =
            offload::segment(frame, offload, HEADER_LEN, &mut self.scratch).map_err(invalid)?;
        for record in seg.records() {
            VxlanHeader::emit(&mut self.scratch[record], vni).map_err(invalid)?;
        }
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
