//! How heavy the traffic through the worker is, judged every
//! [`INTERVAL`] from what it forwarded.
//!
//! Two policies ask: where the worker runs ([`crate::placement`]), and
//! whether it spins between batches ([`crate::busy_poll`]). Both want to
//! tell request/response traffic, which waits on every hop, from a bulk
//! transfer or a flood, which keeps the worker busy on its own.
//!
//! Load is judged from what the worker forwarded (bytes per second, frames
//! per pass of its loop), not from the time it spent: next to endpoints,
//! the endpoint a write wakes runs in the middle of the worker's pass, so
//! the pass's wall time says more about the endpoint than the worker.

use std::time::{Duration, Instant};

/// How often the load is judged.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// Under this many bytes moved per frame read, heavy traffic is a flood:
/// frames of under 512 bytes, read and written once. A 64-byte UDP payload
/// is a 106-byte frame, a TCP super-frame up to 64 KiB. A TCP receiver
/// behind the overlay sends small acknowledgements but is written
/// super-frames, so it is no flood.
pub const FLOOD_BYTES_PER_FRAME: f64 = 1024.0;

/// The figures of one interval that say how heavy the traffic is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Bytes the endpoints (and the uplink) sent and were sent, per second.
    pub bytes_per_sec: f64,
    /// Frames read from them per pass of the worker's loop that had work.
    pub frames_per_pass: f64,
    /// Bytes moved per frame read: twice the mean frame when every frame
    /// read is written once. Frames that arrive through the overlay are
    /// not counted as read, but their bytes written to the TAPs are.
    pub bytes_per_frame: f64,
}

impl Load {
    /// Light: under 32 MB/s (a quarter gigabit) in frames that arrive
    /// about one per pass, as request/response traffic does.
    pub fn light(&self) -> bool {
        self.bytes_per_sec < 32e6 && self.frames_per_pass < 2.0
    }

    /// Heavy: over 128 MB/s, or frames queueing up between passes.
    pub fn heavy(&self) -> bool {
        self.bytes_per_sec > 128e6 || self.frames_per_pass > 8.0
    }

    /// Heavy traffic of small frames: per-frame work, not copying,
    /// decides its pace.
    pub fn flood(&self) -> bool {
        self.heavy() && self.bytes_per_frame < FLOOD_BYTES_PER_FRAME
    }

    /// Heavy traffic of large frames: a bulk transfer, whose pace the
    /// copies decide.
    pub fn bulk(&self) -> bool {
        self.heavy() && !self.flood()
    }
}

/// What the devices (the TAPs and the uplink) have done so far: sums that
/// only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceTotals {
    /// Frames read from them.
    pub frames: u64,
    /// Bytes read from them and written to them.
    pub bytes_moved: u64,
}

/// Turns the devices' running totals and the worker's passes into one
/// [`Load`] per interval.
#[derive(Debug, Clone)]
pub struct LoadMeter {
    since: Instant,
    /// Passes of the worker's loop that had work, this interval.
    passes: u64,
    /// The devices' totals at the interval's start.
    start: DeviceTotals,
}

impl LoadMeter {
    pub fn new(now: Instant) -> Self {
        LoadMeter {
            since: now,
            passes: 0,
            start: DeviceTotals::default(),
        }
    }

    /// Counts a pass of the worker's loop that had work.
    #[inline]
    pub fn add_pass(&mut self) {
        self.passes += 1;
    }

    /// When the current interval started.
    pub fn started(&self) -> Instant {
        self.since
    }

    /// Whether an interval has passed since the last [`tick`](Self::tick).
    #[inline]
    pub fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= INTERVAL
    }

    /// Closes the interval at `now`, given the devices' totals so far, and
    /// says how heavy its traffic was.
    pub fn tick(&mut self, now: Instant, totals: DeviceTotals) -> Load {
        let elapsed = now.saturating_duration_since(self.since).as_secs_f64();
        let frames = totals.frames.saturating_sub(self.start.frames);
        let bytes = totals.bytes_moved.saturating_sub(self.start.bytes_moved);
        let load = Load {
            bytes_per_sec: bytes as f64 / elapsed.max(1e-3),
            frames_per_pass: frames as f64 / self.passes.max(1) as f64,
            bytes_per_frame: bytes as f64 / frames.max(1) as f64,
        };
        self.start = totals;
        self.passes = 0;
        self.since = now;
        load
    }
}

/// One load of each kind, for the tests of the policies that judge them.
#[cfg(test)]
pub(crate) mod examples {
    use super::Load;

    /// No traffic at all.
    pub const IDLE: Load = Load {
        bytes_per_sec: 0.0,
        frames_per_pass: 0.0,
        bytes_per_frame: 0.0,
    };
    /// Request/response: 15 MB/s, a frame per pass.
    pub const RR: Load = Load {
        bytes_per_sec: 15e6,
        frames_per_pass: 1.0,
        bytes_per_frame: 240.0,
    };
    /// A bulk transfer.
    pub const BULK: Load = Load {
        bytes_per_sec: 1.5e9,
        frames_per_pass: 1.5,
        bytes_per_frame: 120_000.0,
    };
    /// A flood of small frames the worker falls behind on.
    pub const FLOOD: Load = Load {
        bytes_per_sec: 21e6,
        frames_per_pass: 40.0,
        bytes_per_frame: 212.0,
    };
    /// A flood of full-size frames: bulk.
    pub const BIG_FLOOD: Load = Load {
        bytes_per_sec: 1.2e9,
        frames_per_pass: 20.0,
        bytes_per_frame: 3028.0,
    };
    /// Between light and heavy.
    pub const MIDDLE: Load = Load {
        bytes_per_sec: 60e6,
        frames_per_pass: 1.0,
        bytes_per_frame: 2000.0,
    };
    /// A TCP receiver behind the overlay: the TAP reads its 66-byte
    /// acknowledgements and is written a super-frame for every two.
    pub const OVERLAY_RECEIVER: Load = Load {
        bytes_per_sec: 1.1e9,
        frames_per_pass: 3.0,
        bytes_per_frame: 66.0 + 64_000.0 / 2.0,
    };
}

#[cfg(test)]
mod tests {
    use super::examples::*;
    use super::*;

    #[test]
    fn small_frames_are_a_flood_only_when_small_frames_are_all_that_moves() {
        assert!(FLOOD.flood() && !FLOOD.bulk());
        assert!(!BIG_FLOOD.flood() && BIG_FLOOD.bulk());
        assert!(!BULK.flood() && BULK.bulk());
        // Light traffic is neither, however small its frames.
        assert!(RR.light() && !RR.flood() && !RR.bulk());
        assert!(!MIDDLE.light() && !MIDDLE.heavy());
        // The overlay's receiver sends small frames but is written large
        // ones: bulk, not a flood.
        assert!(OVERLAY_RECEIVER.heavy() && !OVERLAY_RECEIVER.flood());
        assert!(OVERLAY_RECEIVER.bulk());
        assert!(!IDLE.heavy() && !IDLE.bulk());
    }

    #[test]
    fn the_meter_judges_each_interval_on_its_own() {
        let t0 = Instant::now();
        let mut meter = LoadMeter::new(t0);
        assert!(!meter.due(t0 + INTERVAL / 2));
        assert!(meter.due(t0 + INTERVAL));
        for _ in 0..100 {
            meter.add_pass();
        }
        // 200 super-frames of 60 kB read and written once in 200 ms.
        let first = DeviceTotals {
            frames: 200,
            bytes_moved: 200 * 120_000,
        };
        let load = meter.tick(t0 + INTERVAL, first);
        assert!((load.bytes_per_sec - 120e6).abs() < 1.0);
        assert_eq!(load.frames_per_pass, 2.0);
        assert_eq!(load.bytes_per_frame, 120_000.0);
        assert!(!meter.due(t0 + INTERVAL * 3 / 2));
        // Nothing moved in the next one: the totals stand still.
        let load = meter.tick(t0 + INTERVAL * 2, first);
        assert_eq!(load.bytes_per_sec, 0.0);
        assert_eq!(load.frames_per_pass, 0.0);
        assert!(!load.heavy());
    }
}
