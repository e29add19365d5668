//! The socket uplink as a [`Port`]: [`weft_hostnet::SocketUplink`] carries
//! the frames the switch routes out on the daemon's own host sockets (no
//! privilege needed) and builds the frames coming back into the worker's
//! buffers. Its poll descriptor is the uplink's inner epoll, readable
//! whenever a socket, a listener, a timer or a queued control frame wants
//! attention.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::port::{PacketBuf, Port, PortCapabilities, HEADROOM};
use weft_hostnet::uplink::HostListener;
use weft_hostnet::{FrameBuf, SocketUplink};
use weft_switch::frame::Offload;

/// Frames one receive call may return.
pub const SOCKET_UPLINK_MAX_BATCH: usize = 64;

impl FrameBuf for PacketBuf {
    fn frame_space(&mut self) -> &mut [u8] {
        &mut self.space()[HEADROOM..]
    }

    fn set_frame(&mut self, len: usize, offload: Offload) {
        PacketBuf::set_frame(self, len, offload);
    }
}

/// A [`Port`] over a [`SocketUplink`]; see the [module docs](self).
#[derive(Debug)]
pub struct SocketUplinkPort {
    uplink: SocketUplink,
}

impl SocketUplinkPort {
    pub fn new(uplink: SocketUplink) -> Self {
        SocketUplinkPort { uplink }
    }

    pub fn uplink(&self) -> &SocketUplink {
        &self.uplink
    }
}

impl Port for SocketUplinkPort {
    fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> io::Result<usize> {
        Ok(self.uplink.recv_batch(bufs, Instant::now()))
    }

    fn send(&mut self, frame: &[u8], _offload: &Offload) -> io::Result<()> {
        // Checksums and segmentation do not matter here: the payload goes
        // into a host socket. What cannot be carried is counted there.
        self.uplink.send_frame(frame, Instant::now());
        Ok(())
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.uplink.poll_fd())
    }

    fn capabilities(&self) -> PortCapabilities {
        PortCapabilities {
            max_batch: SOCKET_UPLINK_MAX_BATCH,
        }
    }

    fn listen(&mut self, listener: HostListener) -> io::Result<()> {
        self.uplink.listen(listener).map_err(io::Error::other)
    }

    fn unlisten(&mut self, tcp: bool, host_port: u16) -> Option<HostListener> {
        self.uplink.unlisten(tcp, host_port)
    }
}
