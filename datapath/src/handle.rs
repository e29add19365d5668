//! [`Datapath`], the handle the control plane holds on the worker thread:
//! it starts the worker, hands it [`Command`]s through a lock-free queue
//! and waits for each acknowledgement, and closes the devices the worker
//! took out of service on the caller's thread.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use mio::{Poll, Waker};
use weft_nat::conntrack::FlowInfo;
use weft_nat::Conntrack;
use weft_switch::counters::SwitchCounters;
use weft_switch::mac_table::Learned;
use weft_switch::neighbor::Neighbor;
use weft_switch::switch::Switch;
use weft_switch::{NetworkId, PortId};

use crate::command::{Ack, Captured, Change, Command, DatapathError};
use crate::placement::WorkerCpu;
use crate::port::Port;
use crate::worker::{Worker, WAKER_TOKEN};

/// How long the control plane waits for the worker to take a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Handle to the running datapath thread.
pub struct Datapath {
    commands: Sender<(Command, Ack)>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<SwitchCounters>,
    inject: Sender<(PortId, Vec<u8>)>,
    /// Devices the worker took out of service, closed here (see
    /// [`Worker::retire`]).
    retired: Receiver<Box<dyn Port>>,
}

/// Sends frames made outside the datapath (DNS answers) out of a port.
#[derive(Clone)]
pub struct Injector {
    frames: Sender<(PortId, Vec<u8>)>,
    waker: Arc<Waker>,
}

impl Injector {
    /// Queues `frame` to leave through `port`; false if the datapath has
    /// stopped or its queue is full.
    pub fn send(&self, port: PortId, frame: Vec<u8>) -> bool {
        self.frames.try_send((port, frame)).is_ok() && self.waker.wake().is_ok()
    }
}

/// Frames waiting to be injected.
const INJECT_QUEUE: usize = 1024;

/// How the worker thread runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// The longest the worker polls without sleeping after it runs out of
    /// work (see [`crate::busy_poll`]); zero sleeps at once.
    pub busy_poll: Duration,
    /// Where the worker thread runs: next to endpoints that wait on each
    /// other (the default), where the scheduler puts it, or on one CPU.
    pub cpu: WorkerCpu,
}

impl Datapath {
    /// Starts the worker thread with a default connection-tracking table.
    pub fn start(aging: Duration) -> Result<Self, DatapathError> {
        Self::start_with(aging, Conntrack::default())
    }

    /// Starts the worker thread; NAT uses `conntrack`, which moves to the
    /// worker (see [`conntrack`](Self::conntrack)).
    pub fn start_with(aging: Duration, conntrack: Conntrack) -> Result<Self, DatapathError> {
        Self::start_tuned(aging, conntrack, Tuning::default())
    }

    /// Starts the worker thread with NAT on `conntrack` and the worker
    /// tuned by `tuning`.
    pub fn start_tuned(
        aging: Duration,
        conntrack: Conntrack,
        tuning: Tuning,
    ) -> Result<Self, DatapathError> {
        let poll = Poll::new().map_err(DatapathError::Start)?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER_TOKEN).map_err(DatapathError::Start)?);
        let (tx, rx) = unbounded();
        let counters = Arc::new(SwitchCounters::default());
        let mut switch = Switch::with_conntrack(Arc::clone(&counters), conntrack);
        let (inject_tx, inject_rx) = bounded(INJECT_QUEUE);
        let (retired_tx, retired_rx) = unbounded();
        switch.set_aging(aging);
        let mut worker = Worker::new(
            poll,
            switch,
            rx,
            Arc::clone(&counters),
            inject_rx,
            retired_tx,
            tuning.busy_poll,
        );
        let (pin_tx, pin_rx) = bounded(1);
        let thread = std::thread::Builder::new()
            .name("weft-datapath".into())
            .spawn(move || {
                match tuning.cpu {
                    WorkerCpu::Pin(cpu) => {
                        let pinned = weft_os::affinity::pin_current_thread(cpu);
                        let ok = pinned.is_ok();
                        let _ = pin_tx.send(pinned);
                        if !ok {
                            return;
                        }
                    }
                    WorkerCpu::Follow => worker.start_following(),
                    WorkerCpu::Scheduler => {}
                }
                worker.run()
            })
            .map_err(DatapathError::Start)?;
        if matches!(tuning.cpu, WorkerCpu::Pin(_)) {
            match pin_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(DatapathError::Start(e)),
                Err(_) => {
                    return Err(DatapathError::Start(io::Error::other(
                        "the worker thread ended before pinning itself",
                    )))
                }
            }
        }
        Ok(Datapath {
            commands: tx,
            waker,
            thread: Some(thread),
            counters,
            inject: inject_tx,
            retired: retired_rx,
        })
    }

    pub fn counters(&self) -> &Arc<SwitchCounters> {
        &self.counters
    }

    /// Every live tracked connection, sorted by original tuple. The worker
    /// owns the table and copies it out between batches.
    pub fn conntrack(&self) -> Result<Vec<FlowInfo>, DatapathError> {
        self.query(|reply| Command::DumpConntrack { reply })
    }

    /// Removes every tracked connection; returns how many there were.
    pub fn conntrack_flush(&self) -> Result<usize, DatapathError> {
        self.query(|reply| Command::FlushConntrack { reply })
    }

    /// A handle that sends frames out of ports from another thread.
    pub fn injector(&self) -> Injector {
        Injector {
            frames: self.inject.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Hands `command` to the worker and waits until it has been applied.
    pub fn execute(&self, command: Command) -> Result<(), DatapathError> {
        let (ack_tx, ack_rx) = bounded(1);
        self.commands
            .send((command, ack_tx))
            .map_err(|_| DatapathError::Stopped)?;
        self.waker.wake().map_err(|_| DatapathError::Stopped)?;
        let result = match ack_rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(DatapathError::Timeout(COMMAND_TIMEOUT)),
            Err(RecvTimeoutError::Disconnected) => Err(DatapathError::Stopped),
        };
        // The devices the command took out of service are closed before
        // it returns, so a TAP detached is gone when the caller hears so.
        self.retired.try_iter().for_each(drop);
        result
    }

    /// Hands the worker the command `make` builds around a reply channel
    /// and waits for the reply.
    fn query<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T, DatapathError> {
        let (tx, rx) = bounded(1);
        self.execute(make(tx))?;
        rx.recv_timeout(COMMAND_TIMEOUT)
            .map_err(|_| DatapathError::Stopped)
    }

    /// Applies `changes` in order, all or nothing (see [`Change`] for the
    /// rule on removals); waits until the worker has done so.
    pub fn apply(&self, changes: Vec<Change>) -> Result<(), DatapathError> {
        self.execute(Command::Apply(changes))
    }

    /// Applies one change: a batch of one, whose error is the change's own.
    pub fn apply_one(&self, change: Change) -> Result<(), DatapathError> {
        match self.apply(vec![change]) {
            Err(DatapathError::Batch { source, .. }) => Err(*source),
            other => other,
        }
    }

    /// The remote IPv4 → MAC bindings of one network, or of all.
    pub fn neighbors(
        &self,
        network: Option<NetworkId>,
    ) -> Result<Vec<(NetworkId, Neighbor)>, DatapathError> {
        self.query(|reply| Command::DumpNeighbors { network, reply })
    }

    /// Mirrors the frames of device port `port`, both directions, into
    /// `sink` until called again with `None` (or the port goes); `false`
    /// when there is no such port. The mirror copies each frame; without
    /// one the port pays a single branch per frame.
    pub fn capture(
        &self,
        port: PortId,
        sink: Option<Sender<Captured>>,
    ) -> Result<bool, DatapathError> {
        self.query(|reply| Command::Capture { port, sink, reply })
    }

    /// The learned addresses of one network, or of all.
    pub fn fdb(
        &self,
        network: Option<NetworkId>,
    ) -> Result<Vec<(NetworkId, Learned)>, DatapathError> {
        self.query(|reply| Command::DumpFdb { network, reply })
    }

    /// Stops the worker, closing every port (TAP devices disappear).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // Dropping the command sender tells the worker to stop.
            let (dead_tx, _) = unbounded();
            self.commands = dead_tx;
            let _ = self.waker.wake();
            let _ = thread.join();
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.stop();
    }
}
