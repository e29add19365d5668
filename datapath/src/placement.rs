//! Where the worker thread runs: next to endpoints that wait on each other.
//!
//! Kernel forwarding (a bridge, a veth pair) runs in the sender's context,
//! on the sender's CPU: a request's delivery wakes a server sleeping on
//! that CPU without an inter-processor interrupt. A userspace switch
//! whose worker the scheduler keeps on another CPU pays two IPIs per round
//! trip instead, which doubled the median of a pinned UDP round trip
//! (README, "Datapath targets"). With [`WorkerCpu::Follow`] the worker
//! moves itself next to the endpoints when
//!
//! * nearly all frames come from one other CPU: a per-CPU tally the kernel
//!   keeps of the frames handed to the TAPs ([`weft_os::sender_cpus`]) says
//!   which CPU sent them (when nearly all come from the worker's own CPU,
//!   where the scheduler happened to put it, the worker pins itself there);
//! * that CPU sends more than the worker's own CPU does (frames a
//!   namespace sends in the worker's own `writev`, such as a kernel's echo
//!   reply, count on the worker's CPU: endpoints split across two CPUs are
//!   left as they are, since either place is as good);
//! * and the traffic is light ([`Load::light`]): frames arrive one at a
//!   time and little data moves, as in request/response traffic, where a
//!   shared CPU costs nothing because the endpoint waits while the worker
//!   forwards.
//!
//! A move needs two intervals in a row that call for it. The worker goes
//! back to the CPUs it started with once the traffic is heavy
//! ([`Load::heavy`]): a bulk transfer, whose sender would otherwise share
//! its CPU with the worker.
//!
//! A flood of small frames from one CPU ([`Load::flood`]) is the
//! exception: the worker moves next to its sender, as it does for light
//! traffic. A bridge forwards in the sender's own system call, so a sender
//! that outruns its receiver slows to the pace of the forwarding, and the
//! receiver keeps the other CPU to read on. A worker elsewhere leaves the
//! sender a CPU of its own to flood with, and on two CPUs the receiver
//! then shares one with the worker and falls behind: its socket drops
//! what the worker delivered. Beside the sender, the worker takes half
//! its CPU, the frames it cannot take in time are dropped at the sender's
//! TAP before any work is spent on them (counted there, see `weft stats`),
//! and the receiver reads nearly all that is delivered (README, "Following
//! a flood's sender"). Bulk transfers of large frames are not followed:
//! the copies dominate there, and a worker that shares a pinned sender's
//! CPU cut one TCP stream by a quarter.
//!
//! Load is judged once per interval by the worker's
//! [`LoadMeter`](crate::load::LoadMeter).
//!
//! Endpoints the scheduler is free to move do not stay put: woken by a
//! worker that now holds their CPU, they wake on an idle one, and a
//! follower would chase them from CPU to CPU without ever catching up. So
//! when the endpoints leave within [`SETTLE`] of a move, the worker goes
//! back to its CPUs and stops following for a while ([`BACKOFF`], doubling
//! up to [`MAX_BACKOFF`] each time it happens again). Pinned endpoints
//! never leave, and those are the ones that gain from a worker beside them.
//!
//! Counting costs the sender a few tens of nanoseconds per frame. It is
//! needed only while traffic is light or a flood the worker follows, so
//! after [`HEAVY_STREAK`] heavy intervals in a row without following the
//! program comes off the TAPs. It goes back on as soon as the traffic is
//! no longer bulk; after a flood, once the rest that the flood started
//! (or the chase before it) is over, so that a flood from a sender the
//! scheduler moves is tried again after [`BACKOFF`], doubling up to
//! [`MAX_BACKOFF`].
//!
//! The CPUs set from outside win: when the worker's CPU mask is not the
//! one it last set itself (`taskset -p` on the thread, a benchmark pinning
//! it), it stops following for good.

use std::io;
use std::time::{Duration, Instant};

use weft_os::sender_cpus::SenderCpus;

pub use crate::load::Load;
/// Fewer frames than this in an interval say nothing about placement.
const MIN_FRAMES: u64 = 200;
/// Endpoints that leave sooner than this after a move are not pinned.
pub const SETTLE: Duration = Duration::from_secs(2);
/// How long the worker first stops following after chasing endpoints.
pub const BACKOFF: Duration = Duration::from_secs(5);
/// The longest it stops following.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Heavy intervals in a row, the worker following nothing, after which
/// the TAPs stop counting.
pub const HEAVY_STREAK: u32 = 5;

/// Where the datapath worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerCpu {
    /// Next to the endpoints when they wait on each other, elsewhere where
    /// the scheduler puts it (see the module docs). Without the privilege
    /// to load the kernel-side tally this is the same as `Scheduler`.
    #[default]
    Follow,
    /// Wherever the scheduler puts it.
    Scheduler,
    /// Always on this CPU.
    Pin(usize),
}

/// What one interval's figures call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Stay,
    MoveTo(usize),
    /// Back to the CPUs the worker started with.
    Release,
}

/// The decision, free of I/O: `sent` is the frames each CPU handed to the
/// TAPs during the interval, `own` the worker's CPU, `load` the
/// interval's traffic, `following` the CPU it is pinned to next to
/// endpoints now, if it is, and `allowed` the CPUs it may use.
pub fn decide(
    sent: &[u64],
    own: usize,
    load: Load,
    following: Option<usize>,
    allowed: &[usize],
) -> Verdict {
    let total: u64 = sent.iter().sum();
    if load.flood() {
        return decide_flood(sent, total, following, allowed);
    }
    let following = following.is_some();
    if following && load.heavy() {
        return Verdict::Release;
    }
    if total < MIN_FRAMES || !load.light() {
        return Verdict::Stay;
    }
    let own_sent = sent.get(own).copied().unwrap_or(0);
    let others = total - own_sent;
    let best = allowed
        .iter()
        .copied()
        .filter(|&c| c != own)
        .map(|c| (c, sent.get(c).copied().unwrap_or(0)))
        .max_by_key(|&(_, n)| n);
    match best {
        Some((cpu, n)) if n * 10 >= others * 9 && n > own_sent + total / 10 => Verdict::MoveTo(cpu),
        // Already beside them, by the scheduler's choice: stay there, as
        // the load balancer would otherwise move the worker away again.
        _ if !following && own_sent * 10 >= total * 9 && allowed.contains(&own) => {
            Verdict::MoveTo(own)
        }
        _ => Verdict::Stay,
    }
}

/// A flood: next to the CPU that sends at least nine frames in ten, the
/// worker's own included; back home when no one CPU does.
fn decide_flood(sent: &[u64], total: u64, following: Option<usize>, allowed: &[usize]) -> Verdict {
    if total < MIN_FRAMES {
        return Verdict::Stay;
    }
    let sender = allowed
        .iter()
        .copied()
        .map(|c| (c, sent.get(c).copied().unwrap_or(0)))
        .max_by_key(|&(_, n)| n)
        .filter(|&(_, n)| n * 10 >= total * 9);
    match (sender, following) {
        (Some((cpu, _)), Some(at)) if cpu == at => Verdict::Stay,
        (Some((cpu, _)), _) => Verdict::MoveTo(cpu),
        (None, Some(_)) => Verdict::Release,
        (None, None) => Verdict::Stay,
    }
}

/// Keeps the worker from chasing endpoints the scheduler moves: a move
/// that the endpoints answer by leaving within [`SETTLE`] starts a rest,
/// [`BACKOFF`] long and doubling up to [`MAX_BACKOFF`]; staying put well
/// past that resets it.
#[derive(Debug, Clone)]
pub struct Restraint {
    moved_at: Option<Instant>,
    resting_until: Option<Instant>,
    backoff: Duration,
}

impl Default for Restraint {
    fn default() -> Self {
        Restraint {
            moved_at: None,
            resting_until: None,
            backoff: BACKOFF,
        }
    }
}

impl Restraint {
    /// Whether following waits at `now`.
    pub fn resting(&self, now: Instant) -> bool {
        self.resting_until.is_some_and(|until| now < until)
    }

    /// The worker moved next to endpoints at `now`.
    pub fn moved(&mut self, now: Instant) {
        self.moved_at = Some(now);
    }

    /// The endpoints the worker follows are on another CPU at `now`:
    /// whether that is a chase (they left soon after the move), in which
    /// case a rest starts.
    pub fn chased(&mut self, now: Instant) -> bool {
        let soon = self
            .moved_at
            .is_some_and(|at| now.saturating_duration_since(at) < SETTLE);
        if soon {
            self.rest(now);
        }
        soon
    }

    /// Starts a rest at `now`, twice as long as the last one, up to
    /// [`MAX_BACKOFF`].
    pub fn rest(&mut self, now: Instant) {
        self.resting_until = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The worker still stays next to the endpoints at `now`: once well
    /// settled, a later chase starts from the shortest rest again.
    pub fn stayed(&mut self, now: Instant) {
        if self
            .moved_at
            .is_some_and(|at| now.saturating_duration_since(at) > 5 * SETTLE)
        {
            self.backoff = BACKOFF;
        }
    }
}

/// Whether the TAPs count their senders' CPUs: counting is needed only
/// while traffic is light or a flood the worker follows. It stops after
/// [`HEAVY_STREAK`] heavy intervals in a row that followed nothing (a
/// flood among them starts a rest, as a chase does), and starts again
/// once the traffic is not bulk and no rest runs.
#[derive(Debug, Clone)]
struct Counting {
    on: bool,
    /// Heavy intervals in a row while following nothing.
    heavy_streak: u32,
}

impl Default for Counting {
    fn default() -> Self {
        Counting {
            on: true,
            heavy_streak: 0,
        }
    }
}

/// What one interval does to [`Counting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CountingStep {
    /// Counting: the tally may be judged.
    Judge,
    /// Not counting, and it stays so.
    Off,
    /// Start counting.
    TurnOn,
    /// Stop counting; `rest`: a flood the worker could not follow starts
    /// a rest.
    TurnOff { rest: bool },
}

impl Counting {
    fn step(&mut self, load: &Load, following: bool, resting: bool) -> CountingStep {
        self.heavy_streak = if load.heavy() && !following {
            self.heavy_streak + 1
        } else {
            0
        };
        if !self.on {
            if load.bulk() || resting {
                return CountingStep::Off;
            }
            self.on = true;
            // A whole streak again for the tally to find a sender to
            // follow: the heavy intervals while it was off saw nothing.
            self.heavy_streak = 0;
            return CountingStep::TurnOn;
        }
        if self.heavy_streak >= HEAVY_STREAK {
            self.on = false;
            return CountingStep::TurnOff {
                rest: load.flood() && !resting,
            };
        }
        CountingStep::Judge
    }
}

/// The worker's side: the tally, the interval's load, and the moves.
pub struct Follower {
    tally: SenderCpus,
    /// The CPUs the worker started with, and goes back to.
    home: Vec<usize>,
    last: Vec<u64>,
    /// The CPU the worker is pinned to next to endpoints, if it is.
    following: Option<usize>,
    /// A move the last interval called for, made if this one agrees.
    pending: Option<usize>,
    /// Rests after chasing endpoints the scheduler moves.
    restraint: Restraint,
    /// The CPU mask the worker last set itself.
    mask: Vec<usize>,
    /// Whether the TAPs count their senders' CPUs now.
    counting: Counting,
}

/// What [`Follower::tick`] did, or asks the worker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Next to endpoints on this CPU.
    To(usize),
    /// Back to the CPUs it started with.
    Home,
    /// Its CPUs were set from outside: following is over.
    Overridden,
    /// Attach the tally to every TAP (`true`) or take it off (`false`).
    Count(bool),
}

impl Follower {
    /// Loads the kernel-side tally; fails without the privilege to.
    pub fn new() -> io::Result<Self> {
        let mut tally = SenderCpus::new()?;
        let last = tally.totals()?.to_vec();
        let home = weft_os::affinity::current_thread_cpus()?;
        Ok(Follower {
            tally,
            mask: home.clone(),
            home,
            last,
            following: None,
            pending: None,
            restraint: Restraint::default(),
            counting: Counting::default(),
        })
    }

    /// The CPU the worker is pinned to next to endpoints, if it is.
    pub fn following(&self) -> Option<usize> {
        self.following
    }

    pub fn tally(&self) -> &SenderCpus {
        &self.tally
    }

    /// The tally for a port added now: `None` while the TAPs do not count.
    pub fn tally_for_new_port(&self) -> Option<&SenderCpus> {
        self.counting.on.then_some(&self.tally)
    }

    /// Reconsiders the placement, given the interval's load, and says
    /// what the worker did, if anything.
    pub fn tick(&mut self, now: Instant, load: Load) -> Option<Outcome> {
        match weft_os::affinity::current_thread_cpus() {
            Ok(mask) if mask != self.mask => return Some(Outcome::Overridden),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "reading the worker's CPUs");
                return None;
            }
        }
        match self
            .counting
            .step(&load, self.following.is_some(), self.restraint.resting(now))
        {
            CountingStep::Judge => {}
            CountingStep::Off => return None,
            CountingStep::TurnOn => {
                self.pending = None;
                // Deltas start from here: the last frames counted before
                // the program came off are not this interval's.
                if let Ok(totals) = self.tally.totals() {
                    self.last.copy_from_slice(totals);
                }
                return Some(Outcome::Count(true));
            }
            CountingStep::TurnOff { rest } => {
                if rest {
                    self.restraint.rest(now);
                }
                return Some(Outcome::Count(false));
            }
        }
        let totals = match self.tally.totals() {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "reading the sender-CPU tally");
                return None;
            }
        };
        let sent: Vec<u64> = totals
            .iter()
            .zip(&self.last)
            .map(|(now, before)| now.wrapping_sub(*before))
            .collect();
        self.last.copy_from_slice(totals);
        if self.restraint.resting(now) {
            return None;
        }
        let own = weft_os::affinity::current_cpu().ok()?;
        let verdict = decide(&sent, own, load, self.following, &self.home);
        tracing::trace!(?sent, own, ?load, ?verdict, "placement interval");
        if !matches!(verdict, Verdict::MoveTo(_)) {
            self.pending = None;
        }
        match verdict {
            Verdict::Stay => {
                if self.following.is_some() {
                    self.restraint.stayed(now);
                }
                None
            }
            Verdict::Release => self.go_home().then_some(Outcome::Home),
            // The endpoints left the CPU the worker just joined: the
            // scheduler moves them, and chasing them helps nobody.
            Verdict::MoveTo(_) if self.following.is_some() && self.restraint.chased(now) => {
                self.pending = None;
                self.go_home().then_some(Outcome::Home)
            }
            Verdict::MoveTo(cpu) if self.pending == Some(cpu) => {
                self.pending = None;
                self.set_mask(&[cpu]).then(|| {
                    self.following = Some(cpu);
                    self.restraint.moved(now);
                    Outcome::To(cpu)
                })
            }
            Verdict::MoveTo(cpu) => {
                self.pending = Some(cpu);
                None
            }
        }
    }

    fn go_home(&mut self) -> bool {
        let home = self.home.clone();
        let done = self.set_mask(&home);
        if done {
            self.following = None;
        }
        done
    }

    fn set_mask(&mut self, cpus: &[usize]) -> bool {
        match weft_os::affinity::set_current_thread_cpus(cpus) {
            Ok(()) => {
                self.mask = cpus.to_vec();
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, ?cpus, "moving the worker");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::examples::*;

    const BOTH: &[usize] = &[0, 1];

    #[test]
    fn request_response_from_another_cpu_is_followed() {
        assert_eq!(decide(&[9_000, 0], 1, RR, None, BOTH), Verdict::MoveTo(0));
        // A little housekeeping on the worker's CPU changes nothing.
        assert_eq!(decide(&[9_000, 300], 1, RR, None, BOTH), Verdict::MoveTo(0));
    }

    #[test]
    fn bulk_is_not_followed() {
        assert_eq!(decide(&[9_000, 0], 1, BULK, None, BOTH), Verdict::Stay);
        assert_eq!(decide(&[9_000, 0], 1, BIG_FLOOD, None, BOTH), Verdict::Stay);
        assert_eq!(decide(&[9_000, 0], 1, MIDDLE, None, BOTH), Verdict::Stay);
    }

    #[test]
    fn a_flood_from_one_cpu_is_followed_to_its_sender() {
        assert_eq!(
            decide(&[9_000, 0], 1, FLOOD, None, BOTH),
            Verdict::MoveTo(0)
        );
        // Where the scheduler put it, beside the sender: it pins itself.
        assert_eq!(
            decide(&[9_000, 0], 0, FLOOD, None, BOTH),
            Verdict::MoveTo(0)
        );
        // Beside it already.
        assert_eq!(decide(&[9_000, 0], 0, FLOOD, Some(0), BOTH), Verdict::Stay);
        // The sender moved.
        assert_eq!(
            decide(&[0, 9_000], 0, FLOOD, Some(0), BOTH),
            Verdict::MoveTo(1)
        );
    }

    #[test]
    fn a_flood_from_several_cpus_is_not_followed() {
        // Two senders, or a kernel's inline replies on the worker's CPU.
        assert_eq!(decide(&[6_000, 3_000], 1, FLOOD, None, BOTH), Verdict::Stay);
        assert_eq!(
            decide(&[6_000, 3_000], 0, FLOOD, Some(0), BOTH),
            Verdict::Release
        );
        assert_eq!(decide(&[150, 0], 1, FLOOD, None, BOTH), Verdict::Stay);
        assert_eq!(
            decide(&[9_000, 0, 0], 2, FLOOD, None, &[1, 2]),
            Verdict::Stay
        );
    }

    #[test]
    fn a_following_worker_goes_home_when_traffic_gets_heavy() {
        assert_eq!(
            decide(&[9_000, 0], 0, BULK, Some(0), BOTH),
            Verdict::Release
        );
        assert_eq!(
            decide(&[9_000, 0], 0, BIG_FLOOD, Some(0), BOTH),
            Verdict::Release
        );
        // Between light and heavy it neither follows nor leaves.
        assert_eq!(decide(&[0, 9_000], 0, MIDDLE, Some(0), BOTH), Verdict::Stay);
    }

    #[test]
    fn endpoints_split_across_cpus_leave_the_worker_in_place() {
        // The client on CPU 0, the server on CPU 1: half each.
        assert_eq!(decide(&[4_500, 4_500], 1, RR, None, BOTH), Verdict::Stay);
        assert_eq!(decide(&[4_500, 4_500], 0, RR, None, BOTH), Verdict::Stay);
        // Three CPUs, none dominant.
        assert_eq!(
            decide(&[3_000, 3_000, 3_000], 2, RR, None, &[0, 1, 2]),
            Verdict::Stay
        );
    }

    #[test]
    fn once_next_to_the_endpoints_it_stays() {
        assert_eq!(decide(&[9_000, 0], 0, RR, Some(0), BOTH), Verdict::Stay);
    }

    #[test]
    fn a_worker_the_scheduler_put_beside_them_pins_itself_there() {
        assert_eq!(decide(&[9_000, 0], 0, RR, None, BOTH), Verdict::MoveTo(0));
        // Not when its own CPU's frames are only half (a kernel's inline
        // replies to a sender elsewhere).
        assert_eq!(decide(&[4_500, 4_500], 0, RR, None, BOTH), Verdict::Stay);
        // Nor under heavy traffic.
        assert_eq!(decide(&[9_000, 0], 0, BULK, None, BOTH), Verdict::Stay);
    }

    #[test]
    fn too_few_frames_say_nothing() {
        assert_eq!(decide(&[150, 0], 1, RR, None, BOTH), Verdict::Stay);
    }

    #[test]
    fn endpoints_that_leave_soon_after_a_move_start_a_doubling_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Restraint::default();
        assert!(!r.resting(t0));
        r.moved(t0);
        // They left within SETTLE: a chase, and a rest of BACKOFF.
        assert!(r.chased(t0 + s(1)));
        assert!(r.resting(t0 + s(5)));
        assert!(!r.resting(t0 + s(6)));
        // The next chase rests twice as long.
        r.moved(t0 + s(6));
        assert!(r.chased(t0 + s(7)));
        assert!(r.resting(t0 + s(16)));
        assert!(!r.resting(t0 + s(17)));
        // Doubling stops at MAX_BACKOFF.
        let mut at = t0 + s(17);
        for _ in 0..6 {
            r.moved(at);
            assert!(r.chased(at + s(1)));
            at += s(1) + MAX_BACKOFF;
        }
        assert_eq!(r.backoff, MAX_BACKOFF);
    }

    #[test]
    fn endpoints_that_stay_put_are_no_chase_and_reset_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Restraint::default();
        r.moved(t0);
        assert!(r.chased(t0 + s(1)));
        r.moved(t0 + s(10));
        // Pinned endpoints that later move (an operator's taskset) after
        // SETTLE are followed, not rested from.
        assert!(!r.chased(t0 + s(13)));
        assert!(!r.resting(t0 + s(13)));
        // Long settled: the next rest is the shortest again.
        r.stayed(t0 + s(30));
        r.moved(t0 + s(30));
        assert!(r.chased(t0 + s(31)));
        assert!(!r.resting(t0 + s(31) + BACKOFF));
    }

    #[test]
    fn a_rest_starts_whenever_asked() {
        let t0 = Instant::now();
        let mut r = Restraint::default();
        r.rest(t0);
        assert!(r.resting(t0 + BACKOFF / 2));
        assert!(!r.resting(t0 + BACKOFF));
        r.rest(t0 + BACKOFF);
        assert!(r.resting(t0 + BACKOFF + BACKOFF * 3 / 2));
        assert!(!r.resting(t0 + BACKOFF * 3));
    }

    #[test]
    fn counting_stops_after_a_streak_and_gets_a_whole_streak_when_it_starts_again() {
        let mut c = Counting::default();
        // Bulk: off after the streak, no rest, and off while bulk lasts.
        for _ in 1..HEAVY_STREAK {
            assert_eq!(c.step(&BULK, false, false), CountingStep::Judge);
        }
        assert_eq!(
            c.step(&BULK, false, false),
            CountingStep::TurnOff { rest: false }
        );
        assert_eq!(c.step(&BULK, false, false), CountingStep::Off);
        assert_eq!(c.step(&RR, false, false), CountingStep::TurnOn);

        // A flood nobody follows: off with a rest, off while resting.
        for _ in 1..HEAVY_STREAK {
            assert_eq!(c.step(&FLOOD, false, false), CountingStep::Judge);
        }
        assert_eq!(
            c.step(&FLOOD, false, false),
            CountingStep::TurnOff { rest: true }
        );
        for _ in 0..20 {
            assert_eq!(c.step(&FLOOD, false, true), CountingStep::Off);
        }
        // After the rest, a flood (now from a pinned sender) is counted
        // for a whole streak again, not stopped at once.
        assert_eq!(c.step(&FLOOD, false, false), CountingStep::TurnOn);
        for _ in 1..HEAVY_STREAK {
            assert_eq!(c.step(&FLOOD, false, false), CountingStep::Judge);
        }
        // Followed, it stays counted.
        for _ in 0..20 {
            assert_eq!(c.step(&FLOOD, true, false), CountingStep::Judge);
        }
    }

    #[test]
    fn only_allowed_cpus_are_chosen() {
        assert_eq!(decide(&[9_000, 0, 0], 2, RR, None, &[1, 2]), Verdict::Stay);
    }
}
