//! The datapath worker: a thread that owns the ports and the forwarding core,
//! polls the ports with mio, and runs each received batch to completion.
//!
//! The control plane never touches forwarding state directly. It sends
//! [`Command`]s over a lock-free queue and wakes the worker with a
//! [`mio::Waker`]; the worker applies them between batches and acknowledges
//! each, so a control request returns only once the datapath has it. Nothing
//! on the per-packet path takes a lock or allocates: buffers come from the
//! worker's preallocated batch, counters are relaxed atomics.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::counters::{DropReason, PortCounters, SwitchCounters};
use crate::mac_table::Learned;
use crate::port::{Offload, PacketBuf, Port};
use crate::switch::{ConfigError, NetworkConfig, PortConfig, Switch, Transmit};
use crate::{NetworkId, PortId};

/// Frames read from one port before the worker turns to the next.
pub const BATCH: usize = 64;
/// How often learned addresses are checked for age.
const EXPIRE_INTERVAL: Duration = Duration::from_millis(500);
/// How long the control plane waits for the worker to take a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const WAKER_TOKEN: Token = Token(usize::MAX);

/// A change to the forwarding state.
pub enum Command {
    AddNetwork(NetworkConfig),
    RemoveNetwork(NetworkId),
    SetRoute {
        a: NetworkId,
        b: NetworkId,
        allowed: bool,
    },
    /// Adds a port; its device starts being polled at once.
    AddPort {
        cfg: PortConfig,
        io: Box<dyn Port>,
        counters: Arc<PortCounters>,
    },
    /// Removes a port and closes its device (a TAP disappears with it).
    RemovePort(PortId),
    SetAging(Duration),
    /// Answers with the learned addresses of one network or all.
    DumpFdb {
        network: Option<NetworkId>,
        reply: Sender<Vec<(NetworkId, Learned)>>,
    },
}

/// Why the datapath did not carry out a command.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not poll the new port's device")]
    Register(#[source] io::Error),
    #[error("the datapath thread has stopped")]
    Stopped,
    #[error("the datapath did not answer within {0:?}")]
    Timeout(Duration),
    #[error("could not start the datapath")]
    Start(#[source] io::Error),
}

type Ack = Sender<Result<(), DatapathError>>;

/// Handle to the running datapath thread.
pub struct Datapath {
    commands: Sender<(Command, Ack)>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<SwitchCounters>,
}

impl Datapath {
    /// Starts the worker thread.
    pub fn start(aging: Duration) -> Result<Self, DatapathError> {
        let poll = Poll::new().map_err(DatapathError::Start)?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER_TOKEN).map_err(DatapathError::Start)?);
        let (tx, rx) = unbounded();
        let counters = Arc::new(SwitchCounters::default());
        let mut switch = Switch::new(Arc::clone(&counters));
        switch.set_aging(aging);
        let worker = Worker {
            poll,
            switch,
            ports: Vec::new(),
            ready: Vec::new(),
            bufs: (0..BATCH).map(|_| PacketBuf::new()).collect(),
            commands: rx,
        };
        let thread = std::thread::Builder::new()
            .name("weft-datapath".into())
            .spawn(move || worker.run())
            .map_err(DatapathError::Start)?;
        Ok(Datapath {
            commands: tx,
            waker,
            thread: Some(thread),
            counters,
        })
    }

    pub fn counters(&self) -> &Arc<SwitchCounters> {
        &self.counters
    }

    /// Hands `command` to the worker and waits until it has been applied.
    pub fn execute(&self, command: Command) -> Result<(), DatapathError> {
        let (ack_tx, ack_rx) = bounded(1);
        self.commands
            .send((command, ack_tx))
            .map_err(|_| DatapathError::Stopped)?;
        self.waker.wake().map_err(|_| DatapathError::Stopped)?;
        match ack_rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(DatapathError::Timeout(COMMAND_TIMEOUT)),
            Err(RecvTimeoutError::Disconnected) => Err(DatapathError::Stopped),
        }
    }

    /// The learned addresses of one network, or of all.
    pub fn fdb(
        &self,
        network: Option<NetworkId>,
    ) -> Result<Vec<(NetworkId, Learned)>, DatapathError> {
        let (tx, rx) = bounded(1);
        self.execute(Command::DumpFdb { network, reply: tx })?;
        rx.recv_timeout(COMMAND_TIMEOUT)
            .map_err(|_| DatapathError::Stopped)
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

struct PortSlot {
    io: Box<dyn Port>,
    counters: Arc<PortCounters>,
    /// Whether the port is in the worker's ready list.
    ready: bool,
}

struct Worker {
    poll: Poll,
    switch: Switch,
    ports: Vec<Option<PortSlot>>,
    /// Ports that may have frames waiting (edge-triggered readiness).
    ready: Vec<PortId>,
    bufs: Vec<PacketBuf>,
    commands: Receiver<(Command, Ack)>,
}

/// The [`Transmit`] sink over the worker's ports.
struct PortTx<'a> {
    ports: &'a mut [Option<PortSlot>],
}

impl Transmit for PortTx<'_> {
    #[inline]
    fn transmit(&mut self, port: PortId, frame: &[u8], offload: &Offload) {
        let Some(Some(slot)) = self.ports.get_mut(port.0 as usize) else {
            return;
        };
        match slot.io.send(frame, offload) {
            Ok(()) => slot.counters.count_tx(frame.len()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                slot.counters.count_drop(DropReason::TxQueueFull)
            }
            Err(_) => slot.counters.count_drop(DropReason::TxError),
        }
    }
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_expire = Instant::now() + EXPIRE_INTERVAL;
        loop {
            let timeout = if self.ready.is_empty() {
                next_expire.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    // Nothing sensible is left to do without a poller.
                    return;
                }
            }
            let mut wake = false;
            for event in events.iter() {
                if event.token() == WAKER_TOKEN {
                    wake = true;
                } else {
                    self.mark_ready(PortId(event.token().0 as u32));
                }
            }
            if wake && !self.apply_commands() {
                return;
            }
            let now = Instant::now();
            self.service_ready(now);
            if now >= next_expire {
                self.switch.expire(now);
                next_expire = now + EXPIRE_INTERVAL;
            }
        }
    }

    fn mark_ready(&mut self, id: PortId) {
        if let Some(Some(slot)) = self.ports.get_mut(id.0 as usize) {
            if !slot.ready {
                slot.ready = true;
                self.ready.push(id);
            }
        }
    }

    /// Gives each ready port one batch, round robin, and drops from the
    /// ready list those that ran dry.
    fn service_ready(&mut self, now: Instant) {
        let Worker {
            switch,
            ports,
            ready,
            bufs,
            ..
        } = self;
        let mut i = 0;
        while i < ready.len() {
            let id = ready[i];
            let Some(Some(slot)) = ports.get_mut(id.0 as usize) else {
                ready.swap_remove(i);
                continue;
            };
            let counters = Arc::clone(&slot.counters);
            let received = match slot.io.recv_batch(bufs) {
                Ok(n) => n,
                Err(_) => {
                    // The device is gone (its namespace was deleted) or
                    // broken; stop polling it until it is detached.
                    counters.count_drop(DropReason::TxError);
                    slot.ready = false;
                    ready.swap_remove(i);
                    continue;
                }
            };
            let drained = received < bufs.len();
            if drained {
                slot.ready = false;
            }
            let mut tx = PortTx { ports };
            for buf in &mut bufs[..received] {
                counters.count_rx(buf.len());
                let offload = buf.offload();
                if let Err(reason) = switch.handle(id, buf.frame_mut(), &offload, now, &mut tx) {
                    counters.count_drop(reason);
                }
            }
            if drained {
                ready.swap_remove(i);
            } else {
                i += 1;
            }
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
        match command {
            Command::AddNetwork(cfg) => self.switch.add_network(cfg)?,
            Command::RemoveNetwork(id) => self.switch.remove_network(id)?,
            Command::SetRoute { a, b, allowed } => self.switch.set_route(a, b, allowed)?,
            Command::SetAging(aging) => self.switch.set_aging(aging),
            Command::DumpFdb { network, reply } => {
                let _ = reply.send(self.switch.fdb(network, Instant::now()));
            }
            Command::AddPort { cfg, io, counters } => self.add_port(cfg, io, counters)?,
            Command::RemovePort(id) => {
                self.switch.remove_port(id)?;
                if let Some(slot) = self.ports.get_mut(id.0 as usize).and_then(Option::take) {
                    if let Some(fd) = slot.io.poll_fd() {
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    }
                }
                self.ready.retain(|&p| p != id);
            }
        }
        Ok(())
    }

    fn add_port(
        &mut self,
        cfg: PortConfig,
        io: Box<dyn Port>,
        counters: Arc<PortCounters>,
    ) -> Result<(), DatapathError> {
        let index = cfg.id.0 as usize;
        if matches!(self.ports.get(index), Some(Some(_))) {
            return Err(ConfigError::DuplicatePort(cfg.id).into());
        }
        self.switch.add_port(cfg)?;
        if let Some(fd) = io.poll_fd() {
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut SourceFd(&fd), Token(index), Interest::READABLE)
            {
                let _ = self.switch.remove_port(cfg.id);
                return Err(DatapathError::Register(e));
            }
        }
        if self.ports.len() <= index {
            self.ports.resize_with(index + 1, || None);
        }
        self.ports[index] = Some(PortSlot {
            io,
            counters,
            ready: false,
        });
        // Frames may have queued before registration; look once.
        self.mark_ready(cfg.id);
        Ok(())
    }
}
