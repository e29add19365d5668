//! Adaptive busy polling: how long the worker keeps polling with a zero
//! timeout after it runs out of work, before it sleeps in the kernel.
//!
//! A worker asleep in `epoll_wait` is woken for every packet: on a
//! request/response exchange that is one wake-up (an inter-processor
//! interrupt, and in a virtual machine a halt exit) per hop through the
//! switch, several per round trip. When the next packet is due within a few
//! microseconds, polling without sleeping catches it without a wake-up.
//!
//! The window adapts to the gaps the worker actually sees between running
//! out of work and the next packet (measured whether it spun or slept):
//!
//! - a gap the window covered is a *hit* and leaves the window as it is;
//! - a gap longer than the window but within the cap grows the window to
//!   twice that gap (at most the cap), so the next one like it is caught;
//! - a gap longer than the cap, which no spin would have caught, halves the
//!   window; below [`MIN_WINDOW`] it is zero and the worker sleeps at once
//!   until a short gap is seen again.
//!
//! A spin yields the CPU before each poll (`sched_yield`): an endpoint the
//! worker just woke on its own CPU (the reader of the frame it wrote to a
//! TAP) runs at once instead of waiting out the window behind a spinning
//! thread, and with nothing else runnable the yield returns at once. On a
//! CPU shared with the endpoints, this is what makes spinning pay.
//!
//! The worker only spins after a batch that did work, for at most one
//! window, so a switch with no traffic never spins: its idle CPU stays
//! zero. Sparse traffic (gaps beyond the cap) decays the window to zero
//! within a few packets. The cost is bounded by the cap per burst of
//! traffic; a cap of zero turns busy polling off.
//!
//! Bulk traffic does not spin. Between the super-frames of a TCP transfer
//! the worker waits on the endpoints, which need the CPU it would spin on:
//! the sender to fill the next one, the receiver to read the last. Once
//! an interval's traffic is bulk ([`Load::bulk`], judged every 200 ms by
//! the worker's [`LoadMeter`](crate::load::LoadMeter)) the worker sleeps as
//! soon as it runs out of work, until an interval is not bulk again. Two
//! overlay hosts and their endpoints on one 2-CPU machine carried one TCP
//! stream about a tenth faster that way, at a tenth less CPU per gigabit
//! (README, "Adaptive busy polling"). Request/response traffic is light,
//! and keeps spinning.
//!
//! A flood of small frames is held the same way, unless the worker
//! forwards it beside its sender ([`crate::placement`]): there a spin
//! catches the sender's next frames, and yields the CPU to the sender in
//! between. Elsewhere the spin competes with the receiver for its CPU:
//! holding it let an unpinned flood's receiver read about 7% more.
//!
//! Its counters are `busy_poll_*` in [`SwitchCounters`]. This module
//! holds only the decision; the worker owns the clock and the
//! poller, which keeps the policy testable without devices.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weft_switch::counters::SwitchCounters;

use crate::load::Load;

/// Windows shorter than this are not worth a spin: about the cost of a
/// couple of zero-timeout polls.
pub const MIN_WINDOW: Duration = Duration::from_micros(2);

/// The busy-poll policy of one worker.
#[derive(Debug)]
pub struct BusyPoll {
    cap: Duration,
    window: Duration,
    /// When the worker last ran out of work; `None` while it has work.
    idle_since: Option<Instant>,
    /// Until when it polls without sleeping.
    spin_until: Option<Instant>,
    /// The last interval's traffic was bulk, or a flood elsewhere than
    /// beside its sender: no spinning.
    held: bool,
}

impl BusyPoll {
    /// A policy whose window never exceeds `cap` (zero: never spin).
    pub fn new(cap: Duration) -> Self {
        BusyPoll {
            cap,
            window: cap,
            idle_since: None,
            spin_until: None,
            held: false,
        }
    }

    /// The current window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Takes the last interval's load: spinning stops while it is bulk,
    /// or a flood the worker does not forward beside its sender
    /// (`beside_sender`, see [`crate::placement`]). Returns whether that
    /// changed.
    pub fn judge(&mut self, load: &Load, beside_sender: bool) -> bool {
        let held = load.bulk() || (load.flood() && !beside_sender);
        let changed = held != self.held;
        self.held = held;
        changed
    }

    /// Whether spinning is off for the traffic of the last interval.
    pub fn held(&self) -> bool {
        self.held
    }

    /// The worker has no work left at `now`: starts a spin window if the
    /// policy wants one. Called after every pass that found the ready list
    /// empty; only the first such call after work counts.
    pub fn idle(&mut self, now: Instant, counters: &SwitchCounters) {
        if self.idle_since.is_some() {
            return;
        }
        self.idle_since = Some(now);
        if self.window >= MIN_WINDOW && !self.held {
            self.spin_until = Some(now + self.window);
            counters.busy_poll_spins.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the next poll should have a zero timeout. Once the window
    /// has passed, counts a miss and returns false until the next idle.
    pub fn spinning(&mut self, now: Instant, counters: &SwitchCounters) -> bool {
        match self.spin_until {
            Some(until) if now < until => true,
            Some(_) => {
                self.spin_until = None;
                counters.busy_poll_misses.fetch_add(1, Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    /// A port or the VTEP became readable at `now`: work again. Adapts the
    /// window to the gap since the worker ran out of work.
    pub fn woke(&mut self, now: Instant, counters: &SwitchCounters) {
        let Some(since) = self.idle_since.take() else {
            return;
        };
        if self.spin_until.take().is_some() {
            counters.busy_poll_hits.fetch_add(1, Ordering::Relaxed);
        }
        let gap = now.saturating_duration_since(since);
        if gap <= self.window {
            return;
        }
        self.window = if gap <= self.cap {
            (gap * 2).min(self.cap)
        } else {
            let half = self.window / 2;
            if half < MIN_WINDOW {
                Duration::ZERO
            } else {
                half
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::examples::{BULK, FLOOD, IDLE};

    const CAP: Duration = Duration::from_micros(50);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Runs one idle gap of `gap`, polling every microsecond while the
    /// policy spins; returns whether it spun until the packet came.
    fn gap(p: &mut BusyPoll, c: &SwitchCounters, t: &mut Instant, gap: Duration) -> bool {
        p.idle(*t, c);
        let end = *t + gap;
        let mut spun_to_end = false;
        while *t < end {
            if !p.spinning(*t, c) {
                spun_to_end = false;
                break;
            }
            spun_to_end = true;
            *t += us(1);
        }
        *t = end;
        p.woke(*t, c);
        spun_to_end
    }

    #[test]
    fn off_never_spins() {
        let c = SwitchCounters::default();
        let mut p = BusyPoll::new(Duration::ZERO);
        let mut t = Instant::now();
        for _ in 0..10 {
            assert!(!gap(&mut p, &c, &mut t, us(5)));
        }
        assert_eq!(c.busy_poll_spins.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn short_gaps_are_caught_and_counted() {
        let c = SwitchCounters::default();
        let mut p = BusyPoll::new(CAP);
        let mut t = Instant::now();
        for _ in 0..10 {
            assert!(gap(&mut p, &c, &mut t, us(8)));
        }
        assert_eq!(c.busy_poll_spins.load(Ordering::Relaxed), 10);
        assert_eq!(c.busy_poll_hits.load(Ordering::Relaxed), 10);
        assert_eq!(c.busy_poll_misses.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn long_gaps_decay_the_window_to_zero_then_short_gaps_regrow_it() {
        let c = SwitchCounters::default();
        let mut p = BusyPoll::new(CAP);
        let mut t = Instant::now();
        for _ in 0..8 {
            gap(&mut p, &c, &mut t, Duration::from_millis(1));
        }
        assert_eq!(p.window(), Duration::ZERO);
        let spins = c.busy_poll_spins.load(Ordering::Relaxed);
        // Idle: no spin at all now.
        assert!(!gap(&mut p, &c, &mut t, Duration::from_millis(1)));
        assert_eq!(c.busy_poll_spins.load(Ordering::Relaxed), spins);
        // A short gap, seen while sleeping, brings the window back...
        gap(&mut p, &c, &mut t, us(10));
        assert_eq!(p.window(), us(20));
        // ...and the next such gap is caught spinning.
        assert!(gap(&mut p, &c, &mut t, us(10)));
    }

    #[test]
    fn the_window_never_exceeds_the_cap() {
        let c = SwitchCounters::default();
        let mut p = BusyPoll::new(CAP);
        let mut t = Instant::now();
        gap(&mut p, &c, &mut t, Duration::from_millis(1));
        gap(&mut p, &c, &mut t, us(45));
        assert_eq!(p.window(), CAP);
        let spins = c.busy_poll_spins.load(Ordering::Relaxed);
        let misses = c.busy_poll_misses.load(Ordering::Relaxed);
        assert!(!gap(&mut p, &c, &mut t, us(200)));
        assert_eq!(c.busy_poll_spins.load(Ordering::Relaxed), spins + 1);
        assert_eq!(c.busy_poll_misses.load(Ordering::Relaxed), misses + 1);
        assert_eq!(p.window(), CAP / 2);
    }

    #[test]
    fn bulk_traffic_does_not_spin_until_it_ends() {
        let c = SwitchCounters::default();
        let mut p = BusyPoll::new(CAP);
        let mut t = Instant::now();
        assert!(gap(&mut p, &c, &mut t, us(8)));
        assert!(p.judge(&BULK, false));
        assert!(!p.judge(&BULK, false), "no change the second time");
        assert!(p.held());
        let spins = c.busy_poll_spins.load(Ordering::Relaxed);
        for _ in 0..10 {
            assert!(!gap(&mut p, &c, &mut t, us(8)));
        }
        assert_eq!(c.busy_poll_spins.load(Ordering::Relaxed), spins);
        // Bulk is held wherever the worker runs.
        assert!(!p.judge(&BULK, true));
        // Silence ends the hold, and request/response traffic spins.
        assert!(p.judge(&IDLE, false));
        assert!(gap(&mut p, &c, &mut t, us(8)));
    }

    #[test]
    fn a_flood_spins_only_beside_its_sender() {
        let c = SwitchCounters::default();
        let mut p = BusyPoll::new(CAP);
        let mut t = Instant::now();
        // Elsewhere it competes with the reader for its CPU: held.
        assert!(p.judge(&FLOOD, false));
        assert!(!gap(&mut p, &c, &mut t, us(8)));
        // Beside the sender a spin catches the sender's next frames.
        assert!(p.judge(&FLOOD, true));
        assert!(gap(&mut p, &c, &mut t, us(8)));
    }

    #[test]
    fn repeated_idle_calls_start_one_window() {
        let c = SwitchCounters::default();
        let mut p = BusyPoll::new(CAP);
        let t = Instant::now();
        p.idle(t, &c);
        p.idle(t + us(1), &c);
        assert_eq!(c.busy_poll_spins.load(Ordering::Relaxed), 1);
        assert!(p.spinning(t + us(49), &c));
        assert!(!p.spinning(t + us(50), &c));
    }
}
