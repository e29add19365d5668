//! Switch ports: where frames enter and leave the datapath.
//!
//! A [`Port`] receives frames in batches into buffers the caller owns (the
//! worker's preallocated pool), so the fast path allocates nothing. The TAP
//! implementation lives in [`TapPort`]; other kinds (VXLAN tunnels, test
//! queues) implement the same trait.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::sys::tap::Tap;

/// Room for the largest frame a port may deliver: a 64 KiB GSO super-frame
/// plus its Ethernet and virtio-net headers.
pub const PACKET_BUF_LEN: usize = 65536 + 14 + 12;

/// One reusable packet buffer.
pub struct PacketBuf {
    data: Box<[u8]>,
    len: usize,
}

impl PacketBuf {
    pub fn new() -> Self {
        PacketBuf {
            data: vec![0u8; PACKET_BUF_LEN].into_boxed_slice(),
            len: 0,
        }
    }

    /// The whole buffer, for a port to fill.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.data
    }

    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.data.len(), "frame longer than its buffer");
        self.len = len;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn frame(&self) -> &[u8] {
        &self.data[..self.len]
    }

    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
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

    /// Sends one frame. `WouldBlock` means the device's queue is full.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;

    /// The descriptor to poll for readability, if the port has one.
    fn poll_fd(&self) -> Option<RawFd>;

    fn capabilities(&self) -> PortCapabilities;
}

/// A TAP device in some network namespace, read and written without blocking.
pub struct TapPort {
    tap: Tap,
}

impl TapPort {
    /// Wraps `tap`, switching it to non-blocking mode.
    pub fn new(tap: Tap) -> io::Result<Self> {
        tap.set_nonblocking(true)?;
        Ok(TapPort { tap })
    }

    pub fn tap(&self) -> &Tap {
        &self.tap
    }
}

impl Port for TapPort {
    fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < bufs.len() {
            let buf = &mut bufs[filled];
            match self.tap.read(buf.space()) {
                Ok(n) => {
                    buf.set_len(n);
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

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        loop {
            match self.tap.write(frame) {
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
