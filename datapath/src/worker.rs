//! The datapath worker: a thread that owns the ports and the forwarding core,
//! polls the ports with mio, and runs each received batch to completion.
//!
//! The control plane never touches forwarding state directly. It sends
//! [`Command`]s over a lock-free queue and wakes the worker with a
//! [`mio::Waker`]; the worker carries them out between packet batches and
//! acknowledges each, so a control request returns only once the datapath
//! has it. Changes travel as batches ([`Command::Apply`] of [`Change`]s)
//! applied all or nothing, so packets never see half a request.
//!
//! The per-packet path takes no lock: buffers come from the worker's
//! preallocated batch, counters are relaxed atomics, and the NAT's
//! connection tracking table belongs to the worker's [`Switch`] (plain
//! `&mut` access; the control plane lists and flushes it with
//! [`Command::DumpConntrack`] and [`Command::FlushConntrack`], which the
//! worker carries out between batches, copying the table for a listing).
//! Nor does it allocate, with these exceptions:
//!
//! - the first flow translated to a new (protocol, external address)
//!   allocates that address's SNAT port bitmap (once per address);
//! - after many deletions the conntrack index rehashes in place, an
//!   occasional O(capacity) step that allocates nothing (the index is
//!   sized for twice `capacity` at start);
//! - a DNS query to a gateway, which the core hands to the worker's sink
//!   ([`Transmit::punt`]) without copying, is copied here into a
//!   [`DnsQuery`] and sent to the resolver thread over a channel, whose
//!   send may take the channel's internal lock to wake the resolver; DNS
//!   answers come back as `Vec`s (see [`Injector`](crate::Injector)) that the worker frees
//!   after sending;
//! - while `weft capture` mirrors a port ([`Command::Capture`]), each of
//!   its frames is copied into a [`Captured`] for the capture thread; a
//!   port without a capture pays one branch per frame and copies nothing.
//!
//! Claiming and releasing an SNAT port when a flow is created or removed is
//! an atomic read-modify-write on the port bitmap (uncontended: only the
//! worker allocates), not a lock.
//!
//! Overlay networks add one more source: the VTEP's UDP socket. Its
//! datagrams are read in batches (`recvmmsg`), decapsulated in place (the
//! VXLAN header lands in the buffer's headroom, the inner frame where the
//! switch expects it), matched to the tunnel port of their (peer, VNI) and
//! switched like any other frame.
//!
//! When a pass leaves no port ready, the worker may keep polling with a
//! zero timeout for a short adaptive window before sleeping
//! ([`crate::busy_poll`], [`Tuning::busy_poll`](crate::Tuning::busy_poll)): on request/response
//! traffic that saves the cross-CPU wake-up each hop would otherwise cost.
//! It spins only after work, so an idle switch uses no CPU, and not while
//! the traffic is bulk, or a flood it does not forward beside its sender
//! ([`crate::load`]).
//! [`Tuning::cpu`](crate::Tuning::cpu) pins the worker thread to one CPU: next to endpoints
//! pinned there, each hop's wake-up stays on that CPU.
//!
//! ## Storm control: not reading what would be dropped
//!
//! The switch drops a port's broadcasts, multicasts and unknown unicasts
//! beyond its storm-control budget ([`weft_switch::storm`]), but a
//! userspace switch pays for a frame when it reads it, not when it drops
//! it: under a 700k frames/s ARP storm the worker spent its time reading
//! frames only to drop them, and the other ports lost throughput. A
//! hardware switch (or the Linux bridge's netfilter limits) drops at line
//! rate for free; the userspace equivalent is to stop reading. So when a
//! batch from a port meets a spent budget, the worker *pauses* the port:
//! it takes the port's descriptor out of the poll set (one `epoll_ctl`)
//! and leaves it until the bucket holds a batch's worth of frames again
//! ([`Switch::storm_wait`]), at most [`MAX_STORM_PAUSE`]. The paused ports
//! are resumed by the loop itself (one comparison of the loop's clock
//! reading against the earliest resume time, and the poll timeout shortened
//! to it), so there is no timer, no system call per frame, and no delay
//! for any other port. On resume the descriptor is polled again and the
//! port read at once.
//!
//! While a port is paused its frames wait in the TAP's kernel queue (500
//! frames); once that is full the kernel drops what the endpoint sends and
//! counts it as the TAP's TX drops (`ip -s link` in the endpoint's
//! namespace), not in weft's `storm_*` counters, which count only the
//! frames weft read and dropped. `storm_pauses` in `weft stats` counts the
//! pauses.
//!
//! The trade-off is the port's *other* traffic. Weft cannot tell a storm
//! frame from a unicast one without reading it, so while a port is paused
//! its unicast waits (or, with the queue full, is dropped by the kernel)
//! too. A storm therefore costs its own port's unicast, never another
//! port's: a port keeps its unicast as long as its floods stay within the
//! limit, loses part of it while it storms, and gets it back at most one
//! pause (plus one pause per batch of stale storm frames still queued)
//! after the storm stops. [`MAX_STORM_PAUSE`] bounds each stall so that a
//! mixed port's TCP sees a short gap rather than a retransmission timeout
//! (at least 200 ms in Linux).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rustc_hash::FxHashMap;
use weft_os::tap::VIRTIO_NET_HDR_F_NEEDS_CSUM;
use weft_os::udp::RecvMeta;
use weft_vtep::header::HEADER_LEN as VXLAN_HEADER_LEN;
use weft_vtep::rco::Rco;
use weft_vtep::Vni;

use crate::busy_poll::BusyPoll;
use crate::command::{Ack, Captured, Change, Command, DatapathError, DnsQuery};
use crate::load::{DeviceTotals, Load, LoadMeter};
use crate::placement::{Follower, Outcome};
use crate::port::{HostListener, PacketBuf, Port, HEADROOM};
use crate::receive_thread::ReceiveThread;
use crate::vxlan::VxlanIo;
use weft_nat::Protocol;
use weft_packet::MacAddr;
use weft_switch::counters::{DropReason, PortCounters, SwitchCounters};
use weft_switch::frame::{Offload, NO_OFFLOAD};
use weft_switch::mac_table::SavedMac;
use weft_switch::neighbor::SavedNeighbor;
use weft_switch::offload::{Coalescer, PartialCsum, Push};
use weft_switch::storm::FloodClass;
use weft_switch::switch::{
    conntrack_time, ConfigError, NetworkNat, PortConfig, Punt, ServiceConfig, Switch, Transmit,
    UplinkConfig,
};
use weft_switch::{NetworkId, PortId};

/// Frames read from one port before the worker turns to the next.
pub(crate) const BATCH: usize = 64;
/// How often learned addresses are checked for age.
const EXPIRE_INTERVAL: Duration = Duration::from_millis(500);
/// The poll token of the waker the control plane wakes the worker with.
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);
const VTEP_TOKEN: Token = Token(usize::MAX - 1);
/// TCP flows merged at once on the VXLAN receive path.
const COALESCE_FLOWS: usize = 8;
/// The longest the worker stops reading a port whose storm budget is
/// spent: short enough for a mixed port's unicast to see only a short
/// stall, long enough that a storm costs a handful of reads per pause.
pub(crate) const MAX_STORM_PAUSE: Duration = Duration::from_millis(10);

/// Copies `frame` into `sink` (an allocation, made only while a capture
/// runs); when the queue is full (a slow reader) the frame is not mirrored,
/// and the check comes before the copy.
#[inline(never)]
fn mirror(sink: &Sender<Captured>, frame: &[u8]) {
    if !sink.is_full() {
        let _ = sink.try_send(Captured {
            time: std::time::SystemTime::now(),
            frame: frame.to_vec(),
        });
    }
}

/// How to take back one applied change: computed from the state just
/// before it.
enum Undo {
    RemoveNetwork(NetworkId),
    SetRoute {
        a: NetworkId,
        b: NetworkId,
        allowed: bool,
    },
    /// Removes an added endpoint port and closes its device.
    RemovePort(PortId),
    /// Removes an added tunnel port.
    RemoveTunnel(PortId),
    UnbindVtep,
    /// Puts back a peer's previous counters (`None`: forgets the peer).
    RestorePeer(Ipv4Addr, Option<Arc<PortCounters>>),
    RestoreMac(NetworkId, MacAddr, Option<SavedMac>),
    RestoreNeighbor(NetworkId, Ipv4Addr, Option<SavedNeighbor>),
    /// Removes the new uplink (closing its device) and puts back the one it
    /// replaced, whose device was kept open.
    RestoreUplink {
        new: PortId,
        old: Option<(UplinkConfig, PortSlot)>,
    },
    RestorePublish(Protocol, u16, Option<SocketAddrV4>),
    /// The change changed nothing.
    Nothing,
    /// Stops serving a host port the batch started serving.
    Unlisten(bool, u16),
    /// Serves again a host port the batch stopped serving.
    Relisten(HostListener),
    RestoreService(Ipv4Addr, Protocol, u16, Option<ServiceConfig>),
    SetInternal(NetworkId, bool),
    SetNetworkNat(NetworkId, NetworkNat),
    SetDns(Option<Sender<DnsQuery>>),
    SetAging(Duration),
    SetStormLimits(weft_switch::storm::StormLimits),
}

/// How a port's frames leave.
enum PortIo {
    /// A device of its own (a TAP), polled for frames.
    Device(Box<dyn Port>),
    /// A tunnel: encapsulated for `vni` and sent to `peer` by the VTEP.
    Tunnel {
        vni: Vni,
        peer: SocketAddrV4,
        /// The peer takes remote checksum offload.
        remote_csum: bool,
    },
}

struct PortSlot {
    io: PortIo,
    counters: Arc<PortCounters>,
    /// Whether the port is in the worker's ready list.
    ready: bool,
    /// Storm control: the port is not polled until then (its descriptor
    /// is out of the poll set and the port is in the worker's `paused`).
    paused_until: Option<Instant>,
    /// Where its frames are mirrored while `weft capture` runs; `None`
    /// costs one predictable branch per frame.
    capture: Option<Sender<Captured>>,
    /// Whether a TAP's receive runs in a thread of its own.
    receive: ReceiveThread,
}

pub(crate) struct Worker {
    /// Where devices taken out of service go to be closed, off this
    /// thread ([`Worker::retire`]).
    retired: Sender<Box<dyn Port>>,
    poll: Poll,
    switch: Switch,
    ports: Vec<Option<PortSlot>>,
    /// Ports that may have frames waiting (edge-triggered readiness).
    ready: Vec<PortId>,
    /// Ports not read until their storm-control budget refills.
    paused: Vec<PortId>,
    /// The earliest `paused_until` of `paused`.
    next_resume: Option<Instant>,
    bufs: Vec<PacketBuf>,
    commands: Receiver<(Command, Ack)>,
    vtep: Option<VxlanIo>,
    /// Whether the VTEP socket may have datagrams waiting.
    vtep_ready: bool,
    /// Peers VXLAN is accepted from, with the counters of their tunnels.
    peers: FxHashMap<Ipv4Addr, Arc<PortCounters>>,
    /// (peer address, VNI) → tunnel port.
    tunnels: FxHashMap<(Ipv4Addr, u32), PortId>,
    /// Merges TCP segments arriving over tunnels into super-frames.
    coalescer: Coalescer,
    counters: Arc<SwitchCounters>,
    injected: Receiver<(PortId, Vec<u8>)>,
    /// Where DNS queries to the gateways go ([`Change::SetDns`]).
    dns: Option<Sender<DnsQuery>>,
    /// Whether to poll without sleeping after running out of work.
    busy_poll: BusyPoll,
    /// Judges the traffic every interval, for `busy_poll` and `follower`.
    load: LoadMeter,
    /// Moves the worker next to endpoints that wait on each other
    /// ([`WorkerCpu::Follow`](crate::WorkerCpu::Follow) with the privilege to load its tally).
    follower: Option<Follower>,
}

/// The [`Transmit`] sink over the worker's ports.
struct PortTx<'a> {
    ports: &'a mut [Option<PortSlot>],
    vtep: Option<&'a mut VxlanIo>,
    dns: Option<&'a Sender<DnsQuery>>,
}

impl Transmit for PortTx<'_> {
    #[inline]
    fn transmit(&mut self, port: PortId, frame: &[u8], offload: &Offload) {
        let Some(Some(slot)) = self.ports.get_mut(port.0 as usize) else {
            return;
        };
        let result = match &mut slot.io {
            PortIo::Device(io) => io.send(frame, offload),
            PortIo::Tunnel {
                vni,
                peer,
                remote_csum,
            } => match self.vtep.as_deref_mut() {
                Some(vtep) => vtep.send(*vni, *peer, frame, offload, *remote_csum),
                None => Err(io::ErrorKind::NotConnected.into()),
            },
        };
        match result {
            Ok(()) => {
                slot.counters.count_tx(frame.len());
                if let Some(sink) = &slot.capture {
                    mirror(sink, frame);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                slot.counters.count_drop(DropReason::TxQueueFull)
            }
            Err(_) => slot.counters.count_drop(DropReason::TxError),
        }
    }

    /// Copies a DNS query for the resolver thread; a full (or closed)
    /// queue drops it.
    fn punt(&mut self, punt: Punt<'_>) -> Result<(), DropReason> {
        let Some(queries) = self.dns else {
            return Err(DropReason::NotRoutable);
        };
        // Check before copying, so a flood into a full queue costs no
        // allocation per dropped query.
        if queries.is_full() {
            return Err(DropReason::TxQueueFull);
        }
        queries
            .try_send(DnsQuery::from_punt(&punt))
            .map_err(|_| DropReason::TxQueueFull)
    }
}

/// How soon a port whose descriptor could not be polled again after a
/// storm pause is tried again.
const RESUME_RETRY: Duration = Duration::from_millis(1);

/// How long to stop reading port `id` after a batch that found the storm
/// budgets of the classes in `spent` (indexed by [`FloodClass`]) empty:
/// until the emptiest holds a batch's worth again, at most
/// [`MAX_STORM_PAUSE`]. Zero: keep reading.
#[inline]
fn storm_pause(switch: &Switch, id: PortId, spent: [bool; 3], now: Instant) -> Duration {
    let mut pause = Duration::ZERO;
    for class in [
        FloodClass::Broadcast,
        FloodClass::Multicast,
        FloodClass::UnknownUnicast,
    ] {
        if spent[class as usize] {
            pause = pause.max(switch.storm_wait(id, class, BATCH as u32, now));
        }
    }
    pause.min(MAX_STORM_PAUSE)
}

/// Hands one frame that arrived over a tunnel to the switch.
#[inline]
fn deliver(
    switch: &mut Switch,
    tx: &mut PortTx<'_>,
    port: PortId,
    counters: &PortCounters,
    frame: &mut [u8],
    offload: &Offload,
    now: Instant,
) {
    if let Err(reason) = switch.handle(port, frame, offload, now, tx) {
        counters.count_drop(reason);
    }
}

impl Worker {
    /// A worker that polls with `poll`, forwards with `switch`, takes
    /// commands from `commands` and frames to inject from `injected`, and
    /// hands the devices it takes out of service to `retired`.
    pub(crate) fn new(
        poll: Poll,
        switch: Switch,
        commands: Receiver<(Command, Ack)>,
        counters: Arc<SwitchCounters>,
        injected: Receiver<(PortId, Vec<u8>)>,
        retired: Sender<Box<dyn Port>>,
        busy_poll: Duration,
    ) -> Worker {
        Worker {
            poll,
            switch,
            ports: Vec::new(),
            ready: Vec::new(),
            paused: Vec::new(),
            next_resume: None,
            bufs: (0..BATCH).map(|_| PacketBuf::new()).collect(),
            commands,
            vtep: None,
            vtep_ready: false,
            peers: FxHashMap::default(),
            tunnels: FxHashMap::default(),
            coalescer: Coalescer::new(COALESCE_FLOWS),
            counters,
            injected,
            dns: None,
            busy_poll: BusyPoll::new(busy_poll),
            load: LoadMeter::new(Instant::now()),
            follower: None,
            retired,
        }
    }

    /// Loads the tally [`WorkerCpu::Follow`](crate::WorkerCpu::Follow) needs; without the privilege
    /// to, the worker stays where the scheduler puts it.
    pub(crate) fn start_following(&mut self) {
        match Follower::new() {
            Ok(follower) => self.follower = Some(follower),
            Err(e) => tracing::info!(
                error = %e,
                "the datapath worker will not follow its endpoints' CPU: loading the kernel-side \
                 counter needs CAP_BPF (or unprivileged BPF); it runs where the scheduler puts it"
            ),
        }
    }

    /// Judges the interval's traffic on the devices: it decides whether
    /// the worker spins between batches, and the follower places it.
    fn judge_load(&mut self, now: Instant) {
        let mut totals = DeviceTotals::default();
        for slot in self.ports.iter().flatten() {
            if matches!(slot.io, PortIo::Device(_)) {
                let c = &slot.counters;
                totals.frames += c.rx_packets.load(Ordering::Relaxed);
                totals.bytes_moved +=
                    c.rx_bytes.load(Ordering::Relaxed) + c.tx_bytes.load(Ordering::Relaxed);
            }
        }
        let secs = now
            .saturating_duration_since(self.load.started())
            .as_secs_f64();
        let load = self.load.tick(now, totals);
        if let Some(outcome) = self.follower.as_mut().and_then(|f| f.tick(now, load)) {
            self.placed(outcome);
        }
        let beside_sender = self
            .follower
            .as_ref()
            .is_some_and(|f| f.following().is_some());
        self.thread_receive(&load, secs, beside_sender);
        if self.busy_poll.judge(&load, beside_sender) {
            let held = self.busy_poll.held();
            self.counters
                .busy_poll_held
                .store(u64::from(held), Ordering::Relaxed);
            if held {
                tracing::debug!(
                    "bulk traffic, or a flood not forwarded beside its sender: the datapath \
                     worker sleeps as soon as it runs out of work"
                );
            } else {
                tracing::debug!("the datapath worker busy-polls again");
            }
        }
    }

    /// Runs the receive processing of the TAPs a flood is written to in
    /// kernel threads, and of the others in the worker
    /// ([`crate::receive_thread`]).
    fn thread_receive(&mut self, load: &Load, secs: f64, beside_sender: bool) {
        let mut threaded = 0;
        for (port, slot) in self.ports.iter_mut().enumerate() {
            let Some(slot) = slot else {
                continue;
            };
            let PortIo::Device(io) = &mut slot.io else {
                continue;
            };
            if !matches!(io.can_thread_receive(), Some(Ok(()))) {
                continue;
            }
            let c = &slot.counters;
            let frames = c.tx_packets.load(Ordering::Relaxed);
            let bytes = c.tx_bytes.load(Ordering::Relaxed);
            if let Some(on) = slot.receive.judge(load, frames, bytes, secs, beside_sender) {
                io.thread_receive(on);
                if on {
                    tracing::debug!(
                        port,
                        "a flood is written to this TAP: a kernel thread of its own receives it"
                    );
                } else {
                    tracing::debug!(
                        port,
                        "the flood is over: writes to this TAP are received in the worker again"
                    );
                }
            }
            threaded += u64::from(slot.receive.on());
        }
        self.counters
            .receive_threaded
            .store(threaded, Ordering::Relaxed);
    }

    /// Attaches the follower's tally to every device (`on`, with a
    /// follower) or takes it off.
    fn count_senders_everywhere(&self, on: bool) {
        let tally = self.follower.as_ref().filter(|_| on).map(Follower::tally);
        for slot in self.ports.iter().flatten() {
            if let PortIo::Device(io) = &slot.io {
                if let Err(e) = io.count_senders(tally) {
                    tracing::debug!(error = %e, "counting a port's sender CPUs");
                }
            }
        }
    }

    /// Carries out what the follower decided, and counts it.
    fn placed(&mut self, outcome: Outcome) {
        let following = match outcome {
            Outcome::To(cpu) => {
                tracing::debug!(cpu, "the datapath worker moved next to its endpoints");
                cpu as u64 + 1
            }
            Outcome::Home => {
                tracing::debug!("the datapath worker went back to its CPUs");
                0
            }
            Outcome::Count(on) => {
                self.count_senders_everywhere(on);
                return;
            }
            Outcome::Overridden => {
                tracing::info!(
                    "the datapath worker's CPUs were set from outside; it no longer follows its endpoints"
                );
                self.follower = None;
                self.count_senders_everywhere(false);
                0
            }
        };
        if outcome != Outcome::Overridden {
            self.counters.worker_moves.fetch_add(1, Ordering::Relaxed);
        }
        self.counters
            .worker_following
            .store(following, Ordering::Relaxed);
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_expire = Instant::now() + EXPIRE_INTERVAL;
        loop {
            let timeout = if !self.ready.is_empty() || self.vtep_ready {
                Duration::ZERO
            } else {
                let now = Instant::now();
                if self.busy_poll.spinning(now, &self.counters) {
                    // Spin politely: a thread this CPU woke (an endpoint
                    // reading the frame just written to its TAP) runs
                    // first; with nothing else runnable this returns at
                    // once.
                    std::thread::yield_now();
                    Duration::ZERO
                } else {
                    // Sleep until the next aging pass or the next storm
                    // pause's end, whichever is first.
                    let wake_at = match self.next_resume {
                        Some(at) => at.min(next_expire),
                        None => next_expire,
                    };
                    wake_at.saturating_duration_since(now)
                }
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    // Nothing sensible is left to do without a poller: say
                    // so, and every later command reports the datapath as
                    // stopped.
                    tracing::error!(error = %e, "the datapath's poller failed; forwarding has stopped");
                    return;
                }
            }
            let mut wake = false;
            let mut traffic = false;
            for event in events.iter() {
                if event.token() == WAKER_TOKEN {
                    wake = true;
                } else if event.token() == VTEP_TOKEN {
                    self.vtep_ready = true;
                    traffic = true;
                } else {
                    self.mark_ready(PortId(event.token().0 as u32));
                    traffic = true;
                }
            }
            if wake {
                if !self.apply_commands() {
                    return;
                }
                self.send_injected();
            }
            let now = Instant::now();
            if self.next_resume.is_some_and(|at| at <= now) {
                self.resume(now);
            }
            if traffic {
                self.busy_poll.woke(now, &self.counters);
            }
            let working = !self.ready.is_empty() || self.vtep_ready;
            self.service_ready(now);
            if self.vtep_ready {
                self.service_vtep(now);
            }
            if working {
                self.load.add_pass();
            }
            let done = Instant::now();
            if self.ready.is_empty() && !self.vtep_ready {
                self.busy_poll.idle(done, &self.counters);
            }
            if self.load.due(done) {
                self.judge_load(done);
            }
            if now >= next_expire {
                self.switch.expire(now);
                self.counters
                    .conntrack_entries
                    .store(self.switch.conntrack().len() as u64, Ordering::Relaxed);
                next_expire = now + EXPIRE_INTERVAL;
            }
        }
    }

    fn mark_ready(&mut self, id: PortId) {
        if let Some(Some(slot)) = self.ports.get_mut(id.0 as usize) {
            if !slot.ready && slot.paused_until.is_none() {
                slot.ready = true;
                self.ready.push(id);
            }
        }
    }

    /// Gives each ready port one batch, round robin, and drops from the
    /// ready list those that ran dry.
    fn service_ready(&mut self, now: Instant) {
        let Worker {
            poll,
            switch,
            ports,
            ready,
            paused,
            next_resume,
            bufs,
            vtep,
            dns,
            ..
        } = self;
        let mut i = 0;
        while i < ready.len() {
            let id = ready[i];
            let Some(Some(slot)) = ports.get_mut(id.0 as usize) else {
                ready.swap_remove(i);
                continue;
            };
            let PortIo::Device(io) = &mut slot.io else {
                slot.ready = false;
                ready.swap_remove(i);
                continue;
            };
            let counters = Arc::clone(&slot.counters);
            let received = match io.recv_batch(bufs) {
                Ok(n) => n,
                Err(_) => {
                    // The device is gone (its namespace was deleted) or
                    // broken; stop polling it until it is detached.
                    counters.count_drop(DropReason::RxError);
                    slot.ready = false;
                    ready.swap_remove(i);
                    continue;
                }
            };
            let drained = received < bufs.len();
            if drained {
                slot.ready = false;
            }
            if let Some(sink) = &slot.capture {
                for buf in &bufs[..received] {
                    mirror(sink, buf.frame());
                }
            }
            let mut tx = PortTx {
                ports,
                vtep: vtep.as_mut(),
                dns: dns.as_ref(),
            };
            // Storm classes whose budget this batch found spent.
            let mut spent = [false; 3];
            for buf in &mut bufs[..received] {
                counters.count_rx(buf.len());
                let offload = buf.offload();
                if let Err(reason) = switch.handle(id, buf.frame_mut(), &offload, now, &mut tx) {
                    counters.count_drop(reason);
                    if let Some(class) = reason.storm_class() {
                        spent[class as usize] = true;
                    }
                }
            }
            let pause = storm_pause(switch, id, spent, now);
            if !pause.is_zero() {
                // Stop reading the port until its budget has refilled.
                if let Some(Some(slot)) = ports.get_mut(id.0 as usize) {
                    if let PortIo::Device(io) = &slot.io {
                        if let Some(fd) = io.poll_fd() {
                            let _ = poll.registry().deregister(&mut SourceFd(&fd));
                        }
                    }
                    let until = now + pause;
                    slot.ready = false;
                    slot.paused_until = Some(until);
                    counters.storm_pauses.fetch_add(1, Ordering::Relaxed);
                    paused.push(id);
                    *next_resume = Some(next_resume.map_or(until, |at| at.min(until)));
                }
                ready.swap_remove(i);
            } else if drained {
                ready.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Polls again the paused ports whose time is up, and reads them at
    /// once (frames have been waiting in their queues).
    fn resume(&mut self, now: Instant) {
        let mut next: Option<Instant> = None;
        let mut i = 0;
        while i < self.paused.len() {
            let id = self.paused[i];
            let index = id.0 as usize;
            let Some(Some(slot)) = self.ports.get_mut(index) else {
                // Removed while paused.
                self.paused.swap_remove(i);
                continue;
            };
            match slot.paused_until {
                Some(until) if until > now => {
                    next = Some(next.map_or(until, |at| at.min(until)));
                    i += 1;
                    continue;
                }
                _ => {}
            }
            if slot.paused_until.take().is_some() {
                if let PortIo::Device(io) = &slot.io {
                    if let Some(fd) = io.poll_fd() {
                        if let Err(e) = self.poll.registry().register(
                            &mut SourceFd(&fd),
                            Token(index),
                            Interest::READABLE,
                        ) {
                            // Unpolled, the port would never be read
                            // again: stay paused and try again shortly.
                            tracing::warn!(port = id.0, error = %e, "could not poll a port again after its storm pause; retrying");
                            let retry = now + RESUME_RETRY;
                            slot.paused_until = Some(retry);
                            next = Some(next.map_or(retry, |at| at.min(retry)));
                            i += 1;
                            continue;
                        }
                    }
                }
            }
            self.paused.swap_remove(i);
            self.mark_ready(id);
        }
        self.next_resume = next;
    }

    /// Reads one batch of VXLAN datagrams, decapsulates them and switches
    /// the inner frames (RFC 7348 §4.1: a datagram from an unknown peer,
    /// for an unknown VNI, or without the I flag is dropped and counted).
    fn service_vtep(&mut self, now: Instant) {
        let Worker {
            switch,
            ports,
            bufs,
            vtep,
            vtep_ready,
            peers,
            tunnels,
            counters,
            coalescer,
            dns,
            ..
        } = self;
        let Some(io) = vtep.as_mut() else {
            *vtep_ready = false;
            return;
        };
        let mut meta = [RecvMeta::default(); BATCH];
        let received = {
            // Each datagram lands so that its inner frame starts at the
            // buffer's headroom mark, with the VXLAN header just before it.
            let mut it = bufs.iter_mut();
            let mut slices: [&mut [u8]; BATCH] = std::array::from_fn(|_| {
                let buf = it.next().expect("BATCH buffers");
                &mut buf.space()[HEADROOM - VXLAN_HEADER_LEN..]
            });
            match io.socket().recv_batch(&mut slices, &mut meta) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        *vtep_ready = false;
                    }
                    0
                }
            }
        };
        if received < BATCH {
            *vtep_ready = false;
        }
        // Consecutive TCP segments of one flow through one tunnel are merged
        // back into super-frames (GRO), so the TAP takes one write per burst.
        let mut current: Option<(PortId, Arc<PortCounters>)> = None;
        for (buf, meta) in bufs.iter_mut().zip(&meta).take(received) {
            let src = *meta.src.ip();
            let Some(peer_counters) = peers.get(&src) else {
                counters.vxlan_unknown_peer.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if meta.truncated {
                peer_counters.count_drop(DropReason::Malformed);
                counters.vxlan_malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let base = HEADROOM - VXLAN_HEADER_LEN;
            let data = &mut buf.space()[base..base + meta.len];
            let stride = meta.stride.max(1);
            let mut offset = 0;
            while offset < data.len() {
                let end = (offset + stride).min(data.len());
                let datagram = &mut data[offset..end];
                offset = end;
                // A datagram with remote checksum offload
                // (draft-herbert-vxlan-rco) carries an inner frame whose
                // checksum is partial where its RCO field says: one that
                // points outside the frame is malformed, any other is
                // merged without summing or delivered alone with
                // `NEEDS_CSUM` at that place.
                let rco = Rco::parse(datagram);
                let vni = match weft_vtep::decapsulate(datagram) {
                    Ok((vni, inner)) if rco.is_none_or(|r| r.check(inner.len()).is_ok()) => vni,
                    _ => {
                        peer_counters.count_drop(DropReason::Malformed);
                        counters.vxlan_malformed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let Some(&port) = tunnels.get(&(src, vni.get())) else {
                    peer_counters.count_drop(DropReason::NotRoutable);
                    counters.vxlan_unknown_vni.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let mut tx = PortTx {
                    ports,
                    vtep: Some(&mut *io),
                    dns: dns.as_ref(),
                };
                if current.as_ref().map(|c| c.0) != Some(port) {
                    if let Some((p, c)) = current.take() {
                        coalescer.flush(|f, o| deliver(switch, &mut tx, p, &c, f, o, now));
                    }
                    current = Some((port, Arc::clone(peer_counters)));
                }
                let (port, port_counters) = current.as_ref().expect("set above");
                let inner = &mut datagram[VXLAN_HEADER_LEN..];
                port_counters.count_rx(inner.len());
                let mut emit = |f: &mut [u8], o: &Offload| {
                    deliver(switch, &mut tx, *port, port_counters, f, o, now)
                };
                let (pushed, alone) = match rco {
                    None => (coalescer.push(inner, &mut emit), NO_OFFLOAD),
                    Some(rco) => {
                        counters.vxlan_rco_rx.fetch_add(1, Ordering::Relaxed);
                        let csum = PartialCsum {
                            csum_start: rco.start(),
                            csum_offset: rco.offset(),
                        };
                        let partial = Offload {
                            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                            csum_start: rco.start(),
                            csum_offset: rco.offset(),
                            ..NO_OFFLOAD
                        };
                        (coalescer.push_partial(inner, csum, &mut emit), partial)
                    }
                };
                if pushed == Push::NotCoalescable {
                    emit(inner, &alone);
                }
            }
        }
        if let Some((p, c)) = current {
            let mut tx = PortTx {
                ports,
                vtep: Some(&mut *io),
                dns: dns.as_ref(),
            };
            coalescer.flush(|f, o| deliver(switch, &mut tx, p, &c, f, o, now));
        }
    }

    /// Sends the frames queued by [`Injector`](crate::Injector)s.
    fn send_injected(&mut self) {
        let mut tx = PortTx {
            ports: &mut self.ports,
            vtep: self.vtep.as_mut(),
            dns: self.dns.as_ref(),
        };
        while let Ok((port, frame)) = self.injected.try_recv() {
            tx.transmit(port, &frame, &NO_OFFLOAD);
        }
    }

    /// Applies queued commands; false when the control plane has gone away.
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok((command, ack)) => {
                    let result = self.apply(command);
                    let _ = ack.send(result);
                }
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&mut self, command: Command) -> Result<(), DatapathError> {
        let now = Instant::now();
        match command {
            Command::Apply(changes) => self.apply_batch(changes, now)?,
            Command::DumpFdb { network, reply } => {
                let _ = reply.send(self.switch.fdb(network, now));
            }
            Command::DumpConntrack { reply } => {
                let flows = self.switch.conntrack().snapshot(conntrack_time(now));
                let _ = reply.send(flows);
            }
            Command::FlushConntrack { reply } => {
                let _ = reply.send(self.switch.conntrack_mut().flush());
            }
            Command::DumpNeighbors { network, reply } => {
                let _ = reply.send(self.switch.neighbors(network, now));
            }
            Command::Capture { port, sink, reply } => {
                let slot = self
                    .ports
                    .get_mut(port.0 as usize)
                    .and_then(Option::as_mut)
                    .filter(|s| matches!(s.io, PortIo::Device(_)));
                let found = slot.is_some();
                if let Some(slot) = slot {
                    slot.capture = sink;
                }
                let _ = reply.send(found);
            }
        }
        Ok(())
    }

    /// Applies a batch all or nothing. The changes before the first removal
    /// are applied in order, each recording its undo; then every removal is
    /// checked against the state they left, and only then applied (they
    /// cannot fail once checked). On a failure the applied changes are
    /// undone in reverse order.
    fn apply_batch(&mut self, changes: Vec<Change>, now: Instant) -> Result<(), DatapathError> {
        let fail = |index: usize, kind: &'static str, e: DatapathError| DatapathError::Batch {
            index,
            kind,
            source: Box::new(e),
        };
        let first_removal = changes
            .iter()
            .position(Change::is_removal)
            .unwrap_or(changes.len());
        if let Some(i) = changes[first_removal..]
            .iter()
            .position(|c| !c.is_removal())
        {
            let index = first_removal + i;
            return Err(fail(index, changes[index].kind(), DatapathError::Order));
        }
        let mut undo = Vec::with_capacity(first_removal);
        let mut changes = changes.into_iter().enumerate();
        for (index, change) in changes.by_ref().take(first_removal) {
            let kind = change.kind();
            match self.apply_change(change, now) {
                Ok(u) => undo.push(u),
                Err(e) => {
                    self.undo(undo, now);
                    return Err(fail(index, kind, e));
                }
            }
        }
        let removals: Vec<(usize, Change)> = changes.collect();
        if let Err((index, e)) = self.check_removals(&removals) {
            self.undo(undo, now);
            return Err(fail(index, removals[index - first_removal].1.kind(), e));
        }
        for (index, change) in removals {
            let kind = change.kind();
            // Checked above: a failure here is a bug in the check, and
            // the earlier changes stay applied.
            self.remove(change).map_err(|e| fail(index, kind, e))?;
        }
        // The devices the batch replaced close here, now that it holds.
        drop(undo);
        Ok(())
    }

    /// Checks that every removal of a batch will succeed, in order, on the
    /// current state; `Err` names the first that would not.
    fn check_removals(&self, removals: &[(usize, Change)]) -> Result<(), (usize, DatapathError)> {
        let mut ports: Vec<PortId> = Vec::new();
        let mut networks: Vec<NetworkId> = Vec::new();
        let mut peers: Vec<Ipv4Addr> = Vec::new();
        let mut uplink = false;
        for (index, change) in removals {
            let result = match change {
                Change::RemovePort(id) => {
                    if self.switch.port_network(*id).is_none() || ports.contains(id) {
                        Err(ConfigError::UnknownPort(*id).into())
                    } else {
                        ports.push(*id);
                        Ok(())
                    }
                }
                Change::RemoveNetwork(id) => match self.switch.network_ports(*id) {
                    Some(_) if networks.contains(id) => {
                        Err(ConfigError::UnknownNetwork(*id).into())
                    }
                    Some(left) if left.iter().all(|p| ports.contains(p)) => {
                        networks.push(*id);
                        Ok(())
                    }
                    Some(_) => Err(ConfigError::NetworkBusy(*id).into()),
                    None => Err(ConfigError::UnknownNetwork(*id).into()),
                },
                Change::RemoveUplink => {
                    if self.switch.uplink_port().is_none() || uplink {
                        Err(DatapathError::NoUplink)
                    } else {
                        uplink = true;
                        Ok(())
                    }
                }
                Change::RemovePeer(ip) => {
                    if !self.peers.contains_key(ip) || peers.contains(ip) {
                        Err(DatapathError::UnknownPeer(*ip))
                    } else {
                        peers.push(*ip);
                        Ok(())
                    }
                }
                _ => Err(DatapathError::Order),
            };
            result.map_err(|e| (*index, e))?;
        }
        Ok(())
    }

    /// Applies one removal (checked by [`Worker::check_removals`]).
    fn remove(&mut self, change: Change) -> Result<(), DatapathError> {
        match change {
            Change::RemoveNetwork(id) => self.switch.remove_network(id)?,
            Change::RemovePort(id) => {
                self.switch.remove_port(id)?;
                if let Some(slot) = self.take_slot(id) {
                    if let PortIo::Tunnel { vni, peer, .. } = slot.io {
                        self.tunnels.remove(&(*peer.ip(), vni.get()));
                    } else {
                        self.retire(slot);
                    }
                }
            }
            Change::RemoveUplink => {
                let old = self.switch.remove_uplink().ok_or(DatapathError::NoUplink)?;
                self.remove_device(old.port);
            }
            Change::RemovePeer(ip) => {
                self.peers
                    .remove(&ip)
                    .ok_or(DatapathError::UnknownPeer(ip))?;
            }
            _ => return Err(DatapathError::Order),
        }
        Ok(())
    }

    /// Applies one change that is not a removal and says how to undo it.
    fn apply_change(&mut self, change: Change, now: Instant) -> Result<Undo, DatapathError> {
        Ok(match change {
            Change::AddNetwork(cfg) => {
                let id = cfg.id;
                self.switch.add_network(cfg)?;
                Undo::RemoveNetwork(id)
            }
            Change::SetRoute { a, b, allowed } => {
                let before = self.switch.route_allowed(a, b);
                self.switch.set_route(a, b, allowed)?;
                Undo::SetRoute {
                    a,
                    b,
                    allowed: before,
                }
            }
            Change::SetAging(aging) => {
                let before = self.switch.aging();
                self.switch.set_aging(aging);
                Undo::SetAging(before)
            }
            Change::SetStormLimits(limits) => {
                let before = self.switch.storm_limits();
                self.switch.set_storm_limits(limits);
                Undo::SetStormLimits(before)
            }
            Change::AddPort { cfg, io, counters } => {
                let id = cfg.id;
                self.add_port(cfg, io, counters)?;
                Undo::RemovePort(id)
            }
            Change::BindVtep(socket) => {
                if self.vtep.is_some() {
                    return Err(DatapathError::VtepBound);
                }
                let fd = socket.recv_fd();
                self.poll
                    .registry()
                    .register(&mut SourceFd(&fd), VTEP_TOKEN, Interest::READABLE)
                    .map_err(DatapathError::Register)?;
                // Let the kernel hand over runs of datagrams of one flow.
                socket.enable_gro();
                self.vtep = Some(VxlanIo::new(socket, Arc::clone(&self.counters)));
                self.vtep_ready = true;
                Undo::UnbindVtep
            }
            Change::AddPeer { ip, counters } => {
                let before = self.peers.insert(ip, counters);
                Undo::RestorePeer(ip, before)
            }
            Change::AddTunnel {
                cfg,
                vni,
                peer,
                remote_csum,
            } => {
                if self.vtep.is_none() {
                    return Err(DatapathError::NoVtep);
                }
                let counters = self
                    .peers
                    .get(peer.ip())
                    .cloned()
                    .ok_or(DatapathError::UnknownPeer(*peer.ip()))?;
                let index = cfg.id.0 as usize;
                if matches!(self.ports.get(index), Some(Some(_))) {
                    return Err(ConfigError::DuplicatePort(cfg.id).into());
                }
                self.switch.add_tunnel(cfg)?;
                if self.ports.len() <= index {
                    self.ports.resize_with(index + 1, || None);
                }
                self.ports[index] = Some(PortSlot {
                    io: PortIo::Tunnel {
                        vni,
                        peer,
                        remote_csum,
                    },
                    counters,
                    ready: false,
                    paused_until: None,
                    capture: None,
                    receive: ReceiveThread::default(),
                });
                self.tunnels.insert((*peer.ip(), vni.get()), cfg.id);
                Undo::RemoveTunnel(cfg.id)
            }
            Change::SetUplink { cfg, io, counters } => {
                if matches!(self.ports.get(cfg.port.0 as usize), Some(Some(_)))
                    && self.switch.uplink_port() != Some(cfg.port)
                {
                    return Err(ConfigError::DuplicatePort(cfg.port).into());
                }
                // The old uplink's device stays open until the batch holds.
                let old = self.switch.remove_uplink().map(|old| {
                    let slot = self.take_slot(old.port).expect("the uplink has a device");
                    (old, slot)
                });
                let attached = match self.register_device(cfg.port, io, counters) {
                    Ok(()) => self.switch.set_uplink(cfg).map_err(|e| {
                        self.remove_device(cfg.port);
                        e.into()
                    }),
                    Err(e) => Err(e),
                };
                if let Err(e) = attached {
                    if let Some((old_cfg, slot)) = old {
                        self.restore_uplink(old_cfg, slot, now);
                    }
                    return Err(e);
                }
                self.resolve_uplink_gateway(now);
                Undo::RestoreUplink { new: cfg.port, old }
            }
            Change::Publish {
                proto,
                host_port,
                target,
            } => {
                let before = self.switch.published(proto, host_port);
                self.switch.publish(proto, host_port, target);
                Undo::RestorePublish(proto, host_port, before)
            }
            Change::Unpublish { proto, host_port } => {
                let before = self.switch.published(proto, host_port);
                self.switch.unpublish(proto, host_port);
                Undo::RestorePublish(proto, host_port, before)
            }
            Change::Listen(listener) => {
                let (tcp, port) = listener.port();
                let io = self.uplink_io().ok_or(DatapathError::NoUplink)?;
                io.listen(listener).map_err(DatapathError::Listen)?;
                Undo::Unlisten(tcp, port)
            }
            Change::Unlisten { tcp, host_port } => {
                match self.uplink_io().and_then(|io| io.unlisten(tcp, host_port)) {
                    Some(l) => Undo::Relisten(l),
                    None => Undo::Nothing,
                }
            }
            Change::SetService(cfg) => {
                let (vip, proto, port) = (cfg.vip, cfg.proto, cfg.port);
                let before = self.switch.service(vip, proto, port);
                self.switch.set_service(cfg);
                Undo::RestoreService(vip, proto, port, before)
            }
            Change::RemoveService { vip, proto, port } => {
                let before = self.switch.service(vip, proto, port);
                self.switch.remove_service(vip, proto, port);
                Undo::RestoreService(vip, proto, port, before)
            }
            Change::SetInternal { network, internal } => {
                let before = self.switch.is_internal(network);
                self.switch.set_internal(network, internal);
                Undo::SetInternal(network, before)
            }
            Change::SetNetworkNat { network, nat } => {
                let before = self.switch.network_nat(network);
                self.switch.set_network_nat(network, nat);
                Undo::SetNetworkNat(network, before)
            }
            Change::SetDns(queries) => {
                self.switch.set_dns(queries.is_some());
                Undo::SetDns(std::mem::replace(&mut self.dns, queries))
            }
            Change::SetStaticMac { network, mac, port } => {
                let before = self.switch.mac_entry(network, mac);
                self.switch.set_static_mac(network, mac, port, now)?;
                Undo::RestoreMac(network, mac, before)
            }
            Change::SetStaticNeighbor { network, ip, mac } => {
                let before = self.switch.neighbor_entry(network, ip);
                self.switch.set_static_neighbor(network, ip, mac, now)?;
                Undo::RestoreNeighbor(network, ip, before)
            }
            Change::ClearMac { network, mac } => {
                let before = self.switch.mac_entry(network, mac);
                self.switch.restore_mac_entry(network, mac, None);
                Undo::RestoreMac(network, mac, before)
            }
            Change::ClearNeighbor { network, ip } => {
                let before = self.switch.neighbor_entry(network, ip);
                self.switch.restore_neighbor_entry(network, ip, None);
                Undo::RestoreNeighbor(network, ip, before)
            }
            Change::RemoveNetwork(_)
            | Change::RemovePort(_)
            | Change::RemoveUplink
            | Change::RemovePeer(_) => return Err(DatapathError::Order),
        })
    }

    /// Takes back applied changes, last first.
    fn undo(&mut self, undo: Vec<Undo>, now: Instant) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::RemoveNetwork(id) => {
                    let _ = self.switch.remove_network(id);
                }
                Undo::SetRoute { a, b, allowed } => {
                    let _ = self.switch.set_route(a, b, allowed);
                }
                Undo::RemovePort(id) => {
                    let _ = self.switch.remove_port(id);
                    self.remove_device(id);
                }
                Undo::RemoveTunnel(id) => {
                    let _ = self.switch.remove_port(id);
                    if let Some(slot) = self.take_slot(id) {
                        if let PortIo::Tunnel { vni, peer, .. } = slot.io {
                            self.tunnels.remove(&(*peer.ip(), vni.get()));
                        }
                    }
                }
                Undo::UnbindVtep => {
                    if let Some(vtep) = self.vtep.take() {
                        let fd = vtep.socket().recv_fd();
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    }
                    self.vtep_ready = false;
                }
                Undo::RestorePeer(ip, before) => match before {
                    Some(counters) => {
                        self.peers.insert(ip, counters);
                    }
                    None => {
                        self.peers.remove(&ip);
                    }
                },
                Undo::RestoreMac(network, mac, before) => {
                    self.switch.restore_mac_entry(network, mac, before)
                }
                Undo::RestoreNeighbor(network, ip, before) => {
                    self.switch.restore_neighbor_entry(network, ip, before)
                }
                Undo::RestoreUplink { new, old } => {
                    self.switch.remove_uplink();
                    self.remove_device(new);
                    if let Some((cfg, slot)) = old {
                        self.restore_uplink(cfg, slot, now);
                    }
                }
                Undo::RestorePublish(proto, host_port, before) => match before {
                    Some(target) => self.switch.publish(proto, host_port, target),
                    None => {
                        self.switch.unpublish(proto, host_port);
                    }
                },
                Undo::Nothing => {}
                Undo::Unlisten(tcp, port) => {
                    if let Some(io) = self.uplink_io() {
                        drop(io.unlisten(tcp, port));
                    }
                }
                Undo::Relisten(l) => {
                    if let Some(io) = self.uplink_io() {
                        let _ = io.listen(l);
                    }
                }
                Undo::RestoreService(vip, proto, port, before) => match before {
                    Some(cfg) => self.switch.set_service(cfg),
                    None => {
                        self.switch.remove_service(vip, proto, port);
                    }
                },
                Undo::SetInternal(network, internal) => self.switch.set_internal(network, internal),
                Undo::SetNetworkNat(network, nat) => self.switch.set_network_nat(network, nat),
                Undo::SetDns(queries) => {
                    self.switch.set_dns(queries.is_some());
                    self.dns = queries;
                }
                Undo::SetAging(aging) => self.switch.set_aging(aging),
                Undo::SetStormLimits(limits) => self.switch.set_storm_limits(limits),
            }
        }
    }

    /// Puts back an uplink taken out by [`Change::SetUplink`].
    fn restore_uplink(&mut self, cfg: UplinkConfig, slot: PortSlot, now: Instant) {
        self.restore_slot(cfg.port, slot);
        if self.switch.set_uplink(cfg).is_ok() {
            self.resolve_uplink_gateway(now);
        }
    }

    fn resolve_uplink_gateway(&mut self, now: Instant) {
        let mut tx = PortTx {
            ports: &mut self.ports,
            vtep: self.vtep.as_mut(),
            dns: self.dns.as_ref(),
        };
        self.switch.resolve_uplink_gateway(now, &mut tx);
    }

    /// Stops polling port `id` and hands back its slot, device still open.
    /// The uplink's device, if one is attached.
    fn uplink_io(&mut self) -> Option<&mut Box<dyn Port>> {
        let id = self.switch.uplink_port()?;
        match self.ports.get_mut(id.0 as usize) {
            Some(Some(PortSlot {
                io: PortIo::Device(io),
                ..
            })) => Some(io),
            _ => None,
        }
    }

    fn take_slot(&mut self, id: PortId) -> Option<PortSlot> {
        let mut slot = self.ports.get_mut(id.0 as usize).and_then(Option::take)?;
        if let PortIo::Device(io) = &slot.io {
            if let Some(fd) = io.poll_fd() {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
        }
        self.ready.retain(|&p| p != id);
        if slot.paused_until.take().is_some() {
            self.paused.retain(|&p| p != id);
        }
        Some(slot)
    }

    /// Puts back a slot [`Worker::take_slot`] took, polling it again.
    fn restore_slot(&mut self, id: PortId, mut slot: PortSlot) {
        let index = id.0 as usize;
        if let PortIo::Device(io) = &slot.io {
            if let Some(fd) = io.poll_fd() {
                let _ = self.poll.registry().register(
                    &mut SourceFd(&fd),
                    Token(index),
                    Interest::READABLE,
                );
            }
        }
        if self.ports.len() <= index {
            self.ports.resize_with(index + 1, || None);
        }
        slot.ready = false;
        self.ports[index] = Some(slot);
        self.mark_ready(id);
    }

    fn add_port(
        &mut self,
        cfg: PortConfig,
        io: Box<dyn Port>,
        counters: Arc<PortCounters>,
    ) -> Result<(), DatapathError> {
        if matches!(self.ports.get(cfg.id.0 as usize), Some(Some(_))) {
            return Err(ConfigError::DuplicatePort(cfg.id).into());
        }
        self.switch.add_port(cfg)?;
        if let Err(e) = io.count_senders(
            self.follower
                .as_ref()
                .and_then(Follower::tally_for_new_port),
        ) {
            // Placement only; forwarding does not depend on it.
            tracing::debug!(port = cfg.id.0, error = %e, "counting the port's sender CPUs");
        }
        if let Err(e) = self.register_device(cfg.id, io, counters) {
            let _ = self.switch.remove_port(cfg.id);
            return Err(e);
        }
        Ok(())
    }

    /// Takes over a device as port `id` and starts polling it.
    fn register_device(
        &mut self,
        id: PortId,
        io: Box<dyn Port>,
        counters: Arc<PortCounters>,
    ) -> Result<(), DatapathError> {
        let index = id.0 as usize;
        if matches!(self.ports.get(index), Some(Some(_))) {
            return Err(ConfigError::DuplicatePort(id).into());
        }
        if let Some(fd) = io.poll_fd() {
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(index), Interest::READABLE)
                .map_err(DatapathError::Register)?;
        }
        if let Some(Err(why)) = io.can_thread_receive() {
            tracing::info!(
                port = id.0,
                "a flood written to this TAP will be received in the datapath worker, not in a \
                 kernel thread of its own: {why}"
            );
        }
        if self.ports.len() <= index {
            self.ports.resize_with(index + 1, || None);
        }
        self.ports[index] = Some(PortSlot {
            io: PortIo::Device(io),
            counters,
            ready: false,
            paused_until: None,
            capture: None,
            receive: ReceiveThread::default(),
        });
        // Frames may have queued before registration; look once.
        self.mark_ready(id);
        Ok(())
    }

    /// Stops polling port `id` and has its device closed.
    fn remove_device(&mut self, id: PortId) {
        if let Some(slot) = self.take_slot(id) {
            self.retire(slot);
        }
    }

    /// Hands a port's device to the thread that asked for its removal,
    /// which closes it ([`Datapath::execute`](crate::Datapath::execute)). Closing a TAP queue waits
    /// for an RCU grace period (tun's `synchronize_net`, once per queue):
    /// closed on this thread, every other port stopped that long, and a
    /// ping between two endpoints saw 32–43 ms round trips while others
    /// were detached (2–5 ms with the devices closed by the caller).
    fn retire(&self, slot: PortSlot) {
        if let PortIo::Device(device) = slot.io {
            // With the handle gone the send fails, and the device closes
            // here as it drops: nobody is left to wait for it.
            let _ = self.retired.send(device);
        }
    }
}
