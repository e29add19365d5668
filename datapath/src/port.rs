//! Ports: where frames enter and leave the datapath.
//!
//! A [`Port`] receives frames in batches into buffers the caller owns (the
//! worker's preallocated pool), so the fast path allocates nothing. The TAP
//! implementation lives in [`TapPort`]; other kinds (VXLAN tunnels, test
//! queues) implement the same trait.
//!
//! Frames travel with their offload metadata ([`Offload`], the virtio-net
//! header of the virtio 1.x spec §5.1.6): a TAP with `IFF_VNET_HDR` and
//! `TUNSETOFFLOAD` hands over TCP super-frames of up to 64 KiB with a
//! partial checksum, and accepts them back the same way, so one system call
//! moves a whole TSO burst and nobody computes a checksum in software.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

pub use weft_hostnet::uplink::HostListener;
use weft_switch::frame::{is_gso, needs_csum};
pub use weft_switch::frame::{Offload, MAX_FRAME_LEN, NO_OFFLOAD};

use weft_os::sender_cpus::SenderCpus;
use weft_os::tap::{
    Tap, VirtioNetHdr, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, VIRTIO_NET_HDR_LEN,
};

/// Space before the frame in a [`PacketBuf`], for a virtio-net header.
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN;
/// Size of each packet buffer.
pub const PACKET_BUF_LEN: usize = HEADROOM + MAX_FRAME_LEN;

/// One reusable packet buffer: headroom, then a frame, plus its offload
/// metadata.
pub struct PacketBuf {
    data: Box<[u8]>,
    len: usize,
    offload: Offload,
}

impl PacketBuf {
    pub fn new() -> Self {
        PacketBuf {
            data: vec![0u8; PACKET_BUF_LEN].into_boxed_slice(),
            len: 0,
            offload: NO_OFFLOAD,
        }
    }

    /// The whole buffer including the headroom, for a port to fill.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Sets the frame's length (it starts after the headroom) and metadata.
    pub fn set_frame(&mut self, len: usize, offload: Offload) {
        assert!(
            HEADROOM + len <= self.data.len(),
            "frame longer than its buffer"
        );
        self.len = len;
        self.offload = offload;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn offload(&self) -> Offload {
        self.offload
    }

    pub fn frame(&self) -> &[u8] {
        &self.data[HEADROOM..HEADROOM + self.len]
    }

    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.data[HEADROOM..HEADROOM + self.len]
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

/// What a port can do, for the datapath to adapt to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCapabilities {
    /// Frames one `recv_batch` call may return.
    pub max_batch: usize,
}

/// A source and sink of Ethernet frames.
pub trait Port: Send {
    /// Fills up to `bufs.len()` buffers with received frames and returns how
    /// many. Returns fewer than `bufs.len()` only when no more frames are
    /// waiting (so a poller may wait for readiness again).
    fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> io::Result<usize>;

    /// Sends one frame with its offload metadata. `WouldBlock` means the
    /// device's queue is full.
    fn send(&mut self, frame: &[u8], offload: &Offload) -> io::Result<()>;

    /// The descriptor to poll for readability, if the port has one.
    fn poll_fd(&self) -> Option<RawFd>;

    fn capabilities(&self) -> PortCapabilities;

    /// Serves a published port on a bound host socket: only the socket
    /// uplink does.
    fn listen(&mut self, listener: HostListener) -> io::Result<()> {
        let _ = listener;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "only the socket uplink listens on host ports",
        ))
    }

    /// Has the kernel tally, per CPU, the frames its side hands to this
    /// port (`Some`), or stop (`None`); see [`crate::placement`]. Only a
    /// TAP port has such a side.
    fn count_senders(&self, tally: Option<&SenderCpus>) -> io::Result<()> {
        let _ = tally;
        Ok(())
    }

    /// Whether frames can be written where a kernel thread of their own
    /// receives them ([`weft_os::napi`]), or why not; `None` for a port
    /// that is no TAP.
    fn can_thread_receive(&self) -> Option<Result<(), &str>> {
        None
    }

    /// Writes frames where a kernel thread of their own receives them
    /// (`true`), or where the write itself does (`false`); see
    /// [`crate::receive_thread`]. Does nothing where that cannot be.
    fn thread_receive(&mut self, on: bool) {
        let _ = on;
    }

    /// Stops serving a published port and gives its socket back.
    fn unlisten(&mut self, tcp: bool, host_port: u16) -> Option<HostListener> {
        let _ = (tcp, host_port);
        None
    }
}

/// Offloads a TAP port takes from its namespace's kernel: checksum and TCP
/// segmentation for IPv4 and IPv6.
pub const TAP_OFFLOADS: u32 = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;

/// A TAP device in some network namespace, read and written without blocking.
pub struct TapPort {
    tap: Tap,
    /// Whether frames are written to the TAP's NAPI queue.
    threaded: bool,
}

impl TapPort {
    /// Wraps `tap`, switching it to non-blocking mode and, when it carries
    /// virtio-net headers, enabling [`TAP_OFFLOADS`].
    pub fn new(tap: Tap) -> io::Result<Self> {
        tap.set_nonblocking(true)?;
        if tap.vnet_hdr() {
            tap.set_offload(TAP_OFFLOADS)?;
        }
        Ok(TapPort {
            tap,
            threaded: false,
        })
    }

    pub fn tap(&self) -> &Tap {
        &self.tap
    }
}

impl Port for TapPort {
    fn can_thread_receive(&self) -> Option<Result<(), &str>> {
        Some(self.tap.napi().map(drop))
    }

    fn thread_receive(&mut self, on: bool) {
        self.threaded = on && self.tap.napi().is_ok();
    }

    fn count_senders(&self, tally: Option<&SenderCpus>) -> io::Result<()> {
        // The endpoint's frames all arrive on the plain queue (see
        // weft_os::napi), and the filter is the device's.
        match tally {
            Some(tally) => tally.attach(self.tap.as_fd()),
            // A filter a previous daemon attached stays with the device.
            None => weft_os::sender_cpus::detach(self.tap.as_fd()),
        }
    }

    fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> io::Result<usize> {
        // The endpoint's frames all arrive on the plain queue (see
        // weft_os::napi).
        let vnet = self.tap.vnet_hdr();
        let mut filled = 0;
        while filled < bufs.len() {
            let buf = &mut bufs[filled];
            let space = if vnet {
                buf.space()
            } else {
                &mut buf.space()[HEADROOM..]
            };
            match self.tap.read(space) {
                Ok(n) if vnet => {
                    // A read shorter than the header is no frame: hand on an
                    // empty one for the switch to count as malformed.
                    match VirtioNetHdr::parse(&space[..n]) {
                        Some(hdr) => buf.set_frame(n - VIRTIO_NET_HDR_LEN, hdr),
                        None => buf.set_frame(0, NO_OFFLOAD),
                    }
                    filled += 1;
                }
                Ok(n) => {
                    buf.set_frame(n, NO_OFFLOAD);
                    filled += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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
        let header = offload.to_bytes();
        let vnet = self.tap.vnet_hdr();
        if !vnet && (is_gso(offload) || needs_csum(offload)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "frame needs offloads this TAP was not opened with",
            ));
        }
        // The frame alone, or behind its virtio-net header.
        let slices = [io::IoSlice::new(&header), io::IoSlice::new(frame)];
        let slices = if vnet { &slices[..] } else { &slices[1..] };
        let napi = self.tap.napi().ok().filter(|_| self.threaded);
        loop {
            let result = match napi {
                Some(napi) => napi.write_vectored(slices),
                None => self.tap.write_vectored(slices),
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.tap.as_raw_fd())
    }

    fn capabilities(&self) -> PortCapabilities {
        PortCapabilities { max_batch: 64 }
    }
}
