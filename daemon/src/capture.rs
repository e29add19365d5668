//! `weft capture`: an endpoint port's frames, both directions, streamed to
//! the client as pcap (the libpcap file format: a 24-byte global header,
//! then a 16-byte record header before each frame; microsecond timestamps,
//! link type 1, Ethernet), like `ovs-tcpdump`.
//!
//! The datapath mirrors the port into a bounded queue
//! ([`weft_datapath::Datapath::capture`]); this thread writes what arrives
//! to the client's connection, without the control-plane lock, and takes
//! the mirror away again when `count` frames were written, the client
//! closed the connection, or the port is gone.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use crossbeam_channel::{bounded, RecvTimeoutError};
use weft_datapath::Captured;
use weft_switch::PortId;

use crate::DaemonControl;

/// Frames queued between the datapath and the writer; more are not
/// mirrored until the writer catches up.
const QUEUE: usize = 4096;
/// Largest frame recorded whole (tcpdump's default snap length; a 64 KiB
/// offloaded super-frame fits).
const SNAPLEN: u32 = 262_144;
/// How often a quiet capture checks whether the client is still there.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// The pcap global header: magic (microseconds), version 2.4, GMT, no
/// accuracy, snap length, link type Ethernet.
pub fn global_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h
}

/// One frame as a pcap record (header and, up to the snap length, data).
pub fn record(c: &Captured, out: &mut Vec<u8>) {
    let since = c.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let len = c.frame.len() as u32;
    let kept = len.min(SNAPLEN);
    out.extend_from_slice(&(since.as_secs() as u32).to_le_bytes());
    out.extend_from_slice(&since.subsec_micros().to_le_bytes());
    out.extend_from_slice(&kept.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&c.frame[..kept as usize]);
}

/// Streams port `port`'s frames to `stream` after the reply line was
/// written. Ends quietly when the client goes.
pub(crate) fn stream(
    mut stream: UnixStream,
    control: &Mutex<Option<DaemonControl>>,
    port: PortId,
    count: Option<u64>,
) {
    let (tx, rx) = bounded(QUEUE);
    let started = with_datapath(control, |dp| dp.capture(port, Some(tx)));
    if !matches!(started, Some(Ok(true))) {
        return;
    }
    tracing::info!(port = port.0, ?count, "capture started");
    let written = pump(&mut stream, &rx, count);
    with_datapath(control, |dp| dp.capture(port, None));
    tracing::info!(port = port.0, frames = written, "capture ended");
}

/// Writes the header and records until done; returns the frames written.
fn pump(
    stream: &mut UnixStream,
    frames: &crossbeam_channel::Receiver<Captured>,
    count: Option<u64>,
) -> u64 {
    let mut written = 0u64;
    if stream.write_all(&global_header()).is_err() {
        return 0;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1)));
    let mut out = Vec::with_capacity(64 * 1024);
    while count.is_none_or(|c| written < c) {
        match frames.recv_timeout(IDLE_CHECK) {
            Ok(frame) => {
                out.clear();
                record(&frame, &mut out);
                written += 1;
                // Whatever else is queued goes in the same write.
                while count.is_none_or(|c| written < c) {
                    let Ok(more) = frames.try_recv() else { break };
                    record(&more, &mut out);
                    written += 1;
                }
                if stream.write_all(&out).is_err() {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if client_gone(stream) {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    written
}

/// Whether the client closed its end (it sends nothing after the request,
/// so a read that returns end of file means it went).
fn client_gone(stream: &mut UnixStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    }
}

fn with_datapath<T>(
    control: &Mutex<Option<DaemonControl>>,
    f: impl FnOnce(&weft_datapath::Datapath) -> T,
) -> Option<T> {
    let guard = control.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_ref().map(|c| f(c.datapath()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_time_and_lengths() {
        let c = Captured {
            time: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000),
            frame: vec![0xab; 60],
        };
        let mut out = Vec::new();
        record(&c, &mut out);
        assert_eq!(out.len(), 16 + 60);
        assert_eq!(&out[0..4], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&out[4..8], &123_456u32.to_le_bytes());
        assert_eq!(&out[8..12], &60u32.to_le_bytes());
        assert_eq!(&out[12..16], &60u32.to_le_bytes());
        assert_eq!(global_header()[..4], [0xd4, 0xc3, 0xb2, 0xa1]);
    }
}
