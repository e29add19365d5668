//! Which TAPs have their receive processing run in a kernel thread of its
//! own (threaded NAPI, [`weft_os::napi`]), judged every load interval.
//!
//! A frame the worker writes to a TAP goes up the endpoint's stack (IP,
//! UDP, the socket's queue) before the write returns, on the worker's CPU.
//! Under a flood of small frames that input path is most of the worker's
//! work, and it shares the receiving application's CPU: on two CPUs the
//! sender, the worker and the reader want one each, the reader gets about
//! two thirds of one and its socket drops what it has no time to read.
//! With the TAP's NAPI threaded, a kernel thread runs that input path and
//! the scheduler places it on whichever CPU has time; the same-host
//! 64-byte flood's reader read 1.15× as much in interleaved runs, 1.67×
//! and 1.79× in two full bench runs (README, "Threaded receive under a
//! flood").
//!
//! It is not always on: a thread between the write and the endpoint is a
//! wake-up more on every hop of request/response traffic, and a TCP
//! receiver's input through one carried four streams at 1.04× but one
//! stream at 0.90× (three interleaved pairs each). Nor beside the sender:
//! when the worker forwards on a pinned sender's CPU
//! ([`crate::placement`]) the reader has the other CPU to itself, as with
//! a bridge, and a receive thread would share it. So a TAP's receive is
//! threaded while it is written a flood the worker does not forward
//! beside its sender, back in the worker as soon as the worker joins the
//! sender, and a second ([`LINGER_SECS`]) after the flood.

use crate::load::Load;

/// Written at least this many frames a second, a TAP may be a flood's
/// receiver. Request/response traffic between two endpoints stays under
/// it (one transaction per round trip of 20 µs or more).
pub const FLOOD_FRAMES_PER_SEC: f64 = 20_000.0;

/// Frames written to a flood's receiver average under this many bytes:
/// 64-byte UDP datagrams are 106-byte frames, TCP super-frames up to 64 KiB.
pub const SMALL_FRAME_BYTES: f64 = 512.0;

/// Seconds without a flood before a TAP's receive is back in the worker:
/// a flood with pauses does not turn it on and off.
pub const LINGER_SECS: f64 = 1.0;

/// What the worker wrote to one TAP in one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Written {
    pub frames_per_sec: f64,
    pub bytes_per_frame: f64,
}

impl Written {
    /// From the frames and bytes written over `secs` seconds.
    pub fn over(frames: u64, bytes: u64, secs: f64) -> Written {
        Written {
            frames_per_sec: frames as f64 / secs.max(1e-3),
            bytes_per_frame: bytes as f64 / frames.max(1) as f64,
        }
    }

    /// Whether this is what a flood's receiver is written.
    fn flood(&self) -> bool {
        self.frames_per_sec >= FLOOD_FRAMES_PER_SEC && self.bytes_per_frame < SMALL_FRAME_BYTES
    }
}

/// One TAP's threaded receive: whether it is on, and the counters it was
/// judged from.
#[derive(Debug, Clone, Default)]
pub struct ReceiveThread {
    on: bool,
    /// Seconds in a row without a flood while on.
    quiet: f64,
    /// The port's frames and bytes written at the interval's start.
    start: (u64, u64),
}

impl ReceiveThread {
    /// Whether the TAP's receive runs in its own thread.
    pub fn on(&self) -> bool {
        self.on
    }

    /// Closes the interval of `secs` seconds given the port's totals of
    /// frames and bytes written so far, the worker's whole `load` and
    /// whether the worker forwards `beside_sender` (placement); returns
    /// the new setting when it changes.
    pub fn judge(
        &mut self,
        load: &Load,
        frames_written: u64,
        bytes_written: u64,
        secs: f64,
        beside_sender: bool,
    ) -> Option<bool> {
        let written = Written::over(
            frames_written.saturating_sub(self.start.0),
            bytes_written.saturating_sub(self.start.1),
            secs,
        );
        self.start = (frames_written, bytes_written);
        if beside_sender {
            // The reader's CPU is its own already, as with a bridge; a
            // thread of the receive's would share it.
            self.quiet = 0.0;
            return self.on.then(|| {
                self.on = false;
                false
            });
        }
        self.step(load.flood() && written.flood(), secs)
    }

    /// One interval of `secs` seconds, `flooded` or not.
    fn step(&mut self, flooded: bool, secs: f64) -> Option<bool> {
        if flooded {
            self.quiet = 0.0;
            if !self.on {
                self.on = true;
                return Some(true);
            }
        } else if self.on {
            self.quiet += secs;
            if self.quiet >= LINGER_SECS {
                self.on = false;
                self.quiet = 0.0;
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::examples::{BULK, FLOOD, IDLE, RR};

    /// One 200 ms interval's frames and bytes at a rate of `fps` frames of
    /// `bytes` each, added to `totals`.
    fn after(totals: &mut (u64, u64), fps: u64, bytes: u64) -> (u64, u64) {
        totals.0 += fps / 5;
        totals.1 += fps / 5 * bytes;
        *totals
    }

    #[test]
    fn a_flood_receiver_is_threaded_at_once_and_back_a_second_after_the_flood() {
        let mut r = ReceiveThread::default();
        let mut t = (0, 0);
        let (f, b) = after(&mut t, 200_000, 106);
        assert_eq!(r.judge(&FLOOD, f, b, 0.2, false), Some(true));
        let (f, b) = after(&mut t, 200_000, 106);
        assert_eq!(r.judge(&FLOOD, f, b, 0.2, false), None);
        assert!(r.on());
        for _ in 1..5 {
            let (f, b) = after(&mut t, 0, 0);
            assert_eq!(r.judge(&IDLE, f, b, 0.2, false), None, "it lingers");
        }
        let (f, b) = after(&mut t, 0, 0);
        assert_eq!(r.judge(&IDLE, f, b, 0.2, false), Some(false));
        assert!(!r.on());
    }

    #[test]
    fn the_linger_is_counted_in_time_not_in_judgements() {
        // An idle worker judges when it wakes, every half second or so.
        let mut r = ReceiveThread::default();
        assert_eq!(r.judge(&FLOOD, 40_000, 4_240_000, 0.2, false), Some(true));
        assert_eq!(r.judge(&IDLE, 40_000, 4_240_000, 0.5, false), None);
        assert_eq!(r.judge(&IDLE, 40_000, 4_240_000, 0.5, false), Some(false));
    }

    #[test]
    fn a_pause_in_the_flood_shorter_than_a_second_keeps_it_threaded() {
        let mut r = ReceiveThread::default();
        let mut t = (0, 0);
        let (f, b) = after(&mut t, 200_000, 106);
        assert_eq!(r.judge(&FLOOD, f, b, 0.2, false), Some(true));
        for _ in 0..4 {
            let (f, b) = after(&mut t, 0, 0);
            assert_eq!(r.judge(&IDLE, f, b, 0.2, false), None);
        }
        let (f, b) = after(&mut t, 200_000, 106);
        assert_eq!(r.judge(&FLOOD, f, b, 0.2, false), None);
        for _ in 0..4 {
            let (f, b) = after(&mut t, 0, 0);
            assert_eq!(r.judge(&IDLE, f, b, 0.2, false), None);
        }
        assert!(r.on());
    }

    #[test]
    fn request_response_bulk_and_a_floods_sender_stay_in_the_worker() {
        let mut t = (0, 0);
        // Request/response at 20 k transactions a second: under the rate.
        let mut r = ReceiveThread::default();
        let (f, b) = after(&mut t, 19_000, 106);
        assert_eq!(r.judge(&RR, f, b, 0.2, false), None);
        // A TCP receiver: super-frames.
        let (f, b) = after(&mut t, 40_000, 30_000);
        assert_eq!(r.judge(&BULK, f, b, 0.2, false), None);
        // A TCP sender during bulk traffic: many small acknowledgements,
        // but the traffic is no flood.
        let (f, b) = after(&mut t, 40_000, 66);
        assert_eq!(r.judge(&BULK, f, b, 0.2, false), None);
        // A flood's sender is written nothing (UDP) or next to nothing.
        let (f, b) = after(&mut t, 100, 106);
        assert_eq!(r.judge(&FLOOD, f, b, 0.2, false), None);
        assert!(!r.on());
    }

    #[test]
    fn beside_its_sender_a_flood_is_received_in_the_worker() {
        let mut r = ReceiveThread::default();
        let mut t = (0, 0);
        let (f, b) = after(&mut t, 200_000, 106);
        assert_eq!(r.judge(&FLOOD, f, b, 0.2, false), Some(true));
        // The worker moved beside the sender: back at once.
        let (f, b) = after(&mut t, 200_000, 106);
        assert_eq!(r.judge(&FLOOD, f, b, 0.2, true), Some(false));
        let (f, b) = after(&mut t, 200_000, 106);
        assert_eq!(r.judge(&FLOOD, f, b, 0.2, true), None);
        assert!(!r.on());
        // The sender moved away; the worker went back.
        let (f, b) = after(&mut t, 200_000, 106);
        assert_eq!(r.judge(&FLOOD, f, b, 0.2, false), Some(true));
    }

    #[test]
    fn counters_that_restart_count_as_no_traffic() {
        let mut r = ReceiveThread::default();
        assert_eq!(
            r.judge(&FLOOD, 1_000_000, 106_000_000, 0.2, false),
            Some(true)
        );
        // A port re-added with fresh counters: no underflow, no flood.
        assert_eq!(r.judge(&FLOOD, 10, 1060, 0.2, false), None);
    }
}
