//! Storm control: per-port rate limits on the frames a switch floods —
//! broadcast, multicast and unknown unicast — so that one endpoint cannot
//! spend the worker's time (and every other port's queue) on a storm.
//!
//! Each port has one token bucket per class. A bucket holds up to `burst`
//! frames' worth of tokens and refills at `per_sec` frames per second; a
//! flooded frame takes one token, and a frame that finds none is dropped
//! and counted against the port (`storm_broadcast`, `storm_multicast`,
//! `storm_unknown_unicast`). Tokens are kept in units of 1/10⁹ frame so a
//! refill is one multiplication of the elapsed nanoseconds: no division,
//! no floating point, no allocation, and no lock (each worker owns its
//! switch and the buckets in it).
//!
//! A userspace switch pays for every frame it reads, dropped or not, so
//! the datapath also stops *reading* a port whose budget is spent until
//! the bucket has refilled ([`PortStorm::wait`] says how long); see the
//! datapath worker for that half.
//!
//! The defaults are far above what ARP, DHCP or service discovery need (a
//! busy host sends a few broadcasts a second), and far below a storm
//! (hundreds of thousands of frames a second).

use std::time::{Duration, Instant};

/// A token's worth of units: one frame.
const UNIT: u64 = 1_000_000_000;

/// A rate limit: frames per second and the burst allowed. `per_sec == 0`
/// means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_sec: 0,
        burst: 0,
    };

    /// `per_sec` frames per second with a burst of one second's worth (at
    /// least 64 frames).
    pub const fn per_sec(per_sec: u32) -> Rate {
        let burst = if per_sec < 64 { 64 } else { per_sec };
        Rate { per_sec, burst }
    }
}

/// The storm limits of every port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormLimits {
    pub broadcast: Rate,
    pub multicast: Rate,
    pub unknown_unicast: Rate,
}

impl StormLimits {
    /// No limits at all.
    pub const OFF: StormLimits = StormLimits {
        broadcast: Rate::UNLIMITED,
        multicast: Rate::UNLIMITED,
        unknown_unicast: Rate::UNLIMITED,
    };
}

impl Default for StormLimits {
    /// 1,000 broadcasts, 5,000 multicasts and 10,000 unknown unicasts per
    /// second per port, each with a burst of one second's worth.
    fn default() -> Self {
        StormLimits {
            broadcast: Rate::per_sec(1_000),
            multicast: Rate::per_sec(5_000),
            unknown_unicast: Rate::per_sec(10_000),
        }
    }
}

/// The class of a flooded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodClass {
    Broadcast,
    Multicast,
    UnknownUnicast,
}

/// A token bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Tokens, in 1/[`UNIT`] frame.
    tokens: u64,
    /// When the bucket was last refilled (`None`: never used, so full).
    last: Option<Instant>,
}

impl Bucket {
    /// The tokens the bucket holds at `now` (`rate` is limited).
    #[inline]
    fn level(&self, rate: Rate, now: Instant) -> u64 {
        let cap = u64::from(rate.burst.max(1)) * UNIT;
        match self.last {
            None => cap,
            Some(last) => {
                // Capped first so the product cannot overflow: a bucket
                // idle for longer than it takes to fill is just full.
                let fill_nanos = cap / u64::from(rate.per_sec) + 1;
                let elapsed = now.saturating_duration_since(last).as_nanos() as u64;
                let refill = elapsed.min(fill_nanos) * u64::from(rate.per_sec);
                (self.tokens + refill).min(cap)
            }
        }
    }

    /// Takes one frame's token if `rate` allows it at `now`.
    #[inline]
    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        if rate.per_sec == 0 {
            return true;
        }
        let tokens = self.level(rate, now);
        self.last = Some(now);
        if tokens >= UNIT {
            self.tokens = tokens - UNIT;
            true
        } else {
            self.tokens = tokens;
            false
        }
    }

    /// How long after `now` the bucket holds `frames` tokens (or is full,
    /// if its burst is smaller).
    fn wait(&self, rate: Rate, frames: u32, now: Instant) -> Duration {
        if rate.per_sec == 0 {
            return Duration::ZERO;
        }
        let want = u64::from(frames.min(rate.burst.max(1))) * UNIT;
        let tokens = self.level(rate, now);
        // Refill is `per_sec` units a nanosecond.
        let nanos = want
            .saturating_sub(tokens)
            .div_ceil(u64::from(rate.per_sec));
        Duration::from_nanos(nanos)
    }
}

/// One port's buckets.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortStorm {
    buckets: [Bucket; 3],
}

impl PortStorm {
    /// Whether a frame of `class` may be flooded from this port at `now`.
    #[inline]
    pub fn allow(&mut self, limits: &StormLimits, class: FloodClass, now: Instant) -> bool {
        let (i, rate) = Self::bucket(limits, class);
        self.buckets[i].take(rate, now)
    }

    /// How long after `now` this port's `class` bucket holds `frames`
    /// tokens (or is full, if its burst is smaller): how long a reader
    /// that found it empty may leave the port alone and lose nothing the
    /// limit would have let through but the excess.
    pub fn wait(
        &self,
        limits: &StormLimits,
        class: FloodClass,
        frames: u32,
        now: Instant,
    ) -> Duration {
        let (i, rate) = Self::bucket(limits, class);
        self.buckets[i].wait(rate, frames, now)
    }

    #[inline]
    fn bucket(limits: &StormLimits, class: FloodClass) -> (usize, Rate) {
        match class {
            FloodClass::Broadcast => (0, limits.broadcast),
            FloodClass::Multicast => (1, limits.multicast),
            FloodClass::UnknownUnicast => (2, limits.unknown_unicast),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let limits = StormLimits {
            broadcast: Rate {
                per_sec: 100,
                burst: 10,
            },
            ..StormLimits::OFF
        };
        let mut p = PortStorm::default();
        let t0 = Instant::now();
        let passed = (0..50)
            .filter(|_| p.allow(&limits, FloodClass::Broadcast, t0))
            .count();
        assert_eq!(passed, 10, "the burst");
        // 100 per second: one more every 10 ms.
        assert!(!p.allow(
            &limits,
            FloodClass::Broadcast,
            t0 + Duration::from_millis(5)
        ));
        assert!(p.allow(
            &limits,
            FloodClass::Broadcast,
            t0 + Duration::from_millis(11)
        ));
        assert!(!p.allow(
            &limits,
            FloodClass::Broadcast,
            t0 + Duration::from_millis(12)
        ));
        // Over a second of steady offering, about 100 pass.
        let mut passed = 0;
        for ms in 0..1000u64 {
            let at = t0 + Duration::from_millis(100 + ms);
            for _ in 0..10 {
                passed += usize::from(p.allow(&limits, FloodClass::Broadcast, at));
            }
        }
        assert!((99..=111).contains(&passed), "{passed}");
        // Other classes are unlimited here.
        assert!((0..10_000).all(|_| p.allow(&limits, FloodClass::Multicast, t0)));
    }

    #[test]
    fn wait_is_the_time_to_refill() {
        let limits = StormLimits::default();
        let mut p = PortStorm::default();
        let t0 = Instant::now();
        // Never used: full, no wait.
        assert_eq!(
            p.wait(&limits, FloodClass::Broadcast, 64, t0),
            Duration::ZERO
        );
        while p.allow(&limits, FloodClass::Broadcast, t0) {}
        // 1,000 a second: 64 tokens take 64 ms, 10 ms later 54 ms remain.
        assert_eq!(
            p.wait(&limits, FloodClass::Broadcast, 64, t0),
            Duration::from_millis(64)
        );
        assert_eq!(
            p.wait(
                &limits,
                FloodClass::Broadcast,
                64,
                t0 + Duration::from_millis(10)
            ),
            Duration::from_millis(54)
        );
        // Once waited, that many frames pass.
        let later = t0 + Duration::from_millis(64);
        let passed = (0..100)
            .filter(|_| p.allow(&limits, FloodClass::Broadcast, later))
            .count();
        assert_eq!(passed, 64);
        // Other classes and unlimited classes never wait.
        assert_eq!(
            p.wait(&limits, FloodClass::Multicast, 64, t0),
            Duration::ZERO
        );
        assert_eq!(
            p.wait(&StormLimits::OFF, FloodClass::Broadcast, 64, t0),
            Duration::ZERO
        );
        // A burst smaller than asked for: waiting for a full bucket.
        let small = StormLimits {
            broadcast: Rate {
                per_sec: 100,
                burst: 10,
            },
            ..StormLimits::OFF
        };
        let mut p = PortStorm::default();
        while p.allow(&small, FloodClass::Broadcast, t0) {}
        assert_eq!(
            p.wait(&small, FloodClass::Broadcast, 64, t0),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_long_idle_bucket_is_full_not_overflowed() {
        let limits = StormLimits {
            unknown_unicast: Rate {
                per_sec: u32::MAX,
                burst: u32::MAX,
            },
            ..StormLimits::default()
        };
        let mut p = PortStorm::default();
        let t0 = Instant::now();
        assert!(p.allow(&limits, FloodClass::UnknownUnicast, t0));
        let later = t0 + Duration::from_secs(1_000_000);
        assert!(p.allow(&limits, FloodClass::UnknownUnicast, later));
        // A small bucket after a long idle holds just its burst.
        let limits = StormLimits::default();
        let mut p = PortStorm::default();
        for _ in 0..1000 {
            p.allow(&limits, FloodClass::Broadcast, t0);
        }
        assert!(!p.allow(&limits, FloodClass::Broadcast, t0));
        let passed = (0..5000)
            .filter(|_| p.allow(&limits, FloodClass::Broadcast, later))
            .count();
        assert_eq!(passed, 1000);
    }
}
