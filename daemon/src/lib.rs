//! `weft daemon`: the process that serves the control API and ties the
//! control plane ([`weft_control::Control`]) to the real datapath worker
//! and the real operating system ([`provisioner::OsProvisioner`]).
//!
//! The daemon serves the API (see `docs/api.md`) on a Unix socket, one
//! request per connection ([`server`]: bounded, with short timeouts), each
//! checked against the caller's credentials ([`access`]) and applied one at
//! a time under the control-plane lock (never taken by the datapath).
//!
//! Restarts lose nothing: everything the API made is saved in the state
//! directory, and the endpoints' TAP devices are persistent, so they stay in
//! their namespaces, addressed and up, when the daemon exits or is killed;
//! the next daemon on the same state directory takes them back
//! ([`weft_control::Control::restore`]). SIGINT and SIGTERM therefore stop
//! the daemon without removing anything: between two requests, the socket
//! is removed and the process exits 0. `weft reset` removes everything.
//!
//! One daemon per state directory and socket ([`lock`]); systemd is told
//! when the daemon is ready and that it is alive ([`notify`]).

pub mod access;
pub mod capture;
pub mod lock;
pub mod logging;
mod metrics;
pub mod notify;
pub mod provisioner;
pub mod server;
mod signals;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_api::{ApiError, ErrorKind, Reply};
use weft_control::dns::NameTables;
use weft_control::{Control, PersistError, StateFile, VxlanSettings};
use weft_datapath::{Datapath, DatapathError};
use weft_os::peer::PeerCred;

pub use logging::LogFormat;
use provisioner::OsProvisioner;
pub use weft_datapath::WorkerCpu;
pub use weft_switch::storm::{Rate as StormRate, StormLimits};

/// The control plane as the daemon runs it.
type DaemonControl = Control<Datapath, OsProvisioner>;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// An option is out of range.
    #[error("{0}")]
    InvalidOption(String),
    /// A system call the daemon needs failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another weft daemon is already listening on {}: stop it first, or pass another --socket", .0.display())]
    AlreadyRunning(PathBuf),
    #[error(transparent)]
    Locked(#[from] lock::LockError),
    #[error(transparent)]
    State(#[from] PersistError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The saved state could not be applied.
    #[error("{0}")]
    Restore(String),
    #[error(transparent)]
    Cluster(#[from] weft_cluster::ClusterError),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// Options of `weft daemon`, already resolved by the command line.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where to serve the control API.
    pub socket: PathBuf,
    /// Where networks and routes are persisted across restarts.
    pub state_dir: PathBuf,
    /// How long a learned MAC address lives without being seen.
    pub mac_aging: Duration,
    /// Where to receive VXLAN (bound when the first overlay network or peer
    /// is created).
    pub vxlan_listen: std::net::SocketAddrV4,
    /// The address peers reach this host at (`None`: work it out).
    pub vtep_ip: Option<std::net::Ipv4Addr>,
    /// MTU of the underlay network.
    pub underlay_mtu: u32,
    /// Most connections tracked at once.
    pub conntrack_max: usize,
    /// The longest the datapath worker busy-polls after running out of
    /// work (zero: never; see `weft_datapath::busy_poll`).
    pub busy_poll: Duration,
    /// Where the datapath worker thread runs (see
    /// `weft_datapath::placement`).
    pub worker_cpu: weft_datapath::WorkerCpu,
    /// Source ports SNAT hands out (`None`: Linux's ephemeral range, and a
    /// free source port outside it is kept; `Some`: only these).
    pub snat_ports: Option<(u16, u16)>,
    /// NAT idle timeouts.
    pub nat_timeouts: NatTimeoutOptions,
    /// DNS servers names outside weft's networks are forwarded to (empty:
    /// the nameservers of the daemon's /etc/resolv.conf).
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// A DNS-over-TCP connection with nothing to do is closed after this
    /// long (RFC 7766 §6.2.3); `None`: 10 s.
    pub dns_tcp_idle_timeout: Option<Duration>,
    /// Storm-control limits of every port.
    pub storm: weft_switch::storm::StormLimits,
    /// Log filter (`--log-level`); `None`: `RUST_LOG`, else `info`.
    pub log_level: Option<String>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The cluster store (`--store`); `None`: this host alone.
    pub store: Option<weft_cluster::StoreConfig>,
    /// Use remote checksum offload with the other hosts of the cluster:
    /// advertise it in this host's record and send with it to hosts that
    /// advertise it (`--remote-csum`).
    pub remote_csum: bool,
    /// Where to serve Prometheus metrics (`None`: nowhere).
    pub metrics: Option<std::net::SocketAddr>,
}

/// NAT idle timeouts as given on the command line; `None` keeps the
/// default (Linux's values, or the RFC minimums with `strict`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NatTimeoutOptions {
    /// `--nat-strict`: raise the timeouts Linux keeps shorter than the
    /// RFCs ask to their minimums.
    pub strict: bool,
    pub udp: Option<Duration>,
    pub udp_unreplied: Option<Duration>,
    pub tcp_established: Option<Duration>,
    /// Every TCP state but ESTABLISHED (and CLOSE, after a reset).
    pub tcp_transitory: Option<Duration>,
    pub icmp: Option<Duration>,
}

impl NatTimeoutOptions {
    /// The conntrack timeouts these options make.
    pub fn timeouts(&self) -> weft_nat::conntrack::Timeouts {
        let mut t = if self.strict {
            weft_nat::conntrack::Timeouts::rfc_minimums()
        } else {
            weft_nat::conntrack::Timeouts::default()
        };
        if let Some(d) = self.udp {
            t.udp_assured = d;
        }
        if let Some(d) = self.udp_unreplied {
            t.udp_unreplied = d;
        }
        if let Some(d) = self.tcp_established {
            t.tcp_established = d;
        }
        if let Some(d) = self.tcp_transitory {
            t.tcp_syn_sent = d;
            t.tcp_syn_recv = d;
            t.tcp_fin_wait = d;
            t.tcp_close_wait = d;
            t.tcp_last_ack = d;
            t.tcp_time_wait = d;
        }
        if let Some(d) = self.icmp {
            t.icmp = d;
        }
        t
    }
}

/// The longest busy-poll window accepted: beyond this a spin costs more
/// CPU than the wake-up it might save.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

/// Runs the daemon in the foreground until SIGINT or SIGTERM.
pub fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    logging::init(opts.log_level.as_deref(), opts.log_format)
        .map_err(DaemonError::InvalidOption)?;
    if opts.mac_aging.is_zero() {
        return Err(DaemonError::InvalidOption(
            "--mac-aging must be greater than zero".into(),
        ));
    }
    if !(576..=65535).contains(&opts.underlay_mtu) {
        return Err(DaemonError::InvalidOption(format!(
            "--underlay-mtu {} is out of range: use 576 to 65535",
            opts.underlay_mtu
        )));
    }
    let ports = match opts.snat_ports {
        Some((first, last)) => weft_nat::PortRange::new(first, last)
            .map_err(|e| DaemonError::InvalidOption(format!("--snat-ports: {e}")))?,
        None => weft_nat::PortRange::default(),
    };
    if opts.busy_poll > MAX_BUSY_POLL {
        return Err(DaemonError::InvalidOption(format!(
            "--busy-poll {} µs is too long: use 0 (off) to {} µs",
            opts.busy_poll.as_micros(),
            MAX_BUSY_POLL.as_micros()
        )));
    }
    if opts.conntrack_max == 0 {
        return Err(DaemonError::InvalidOption(
            "--conntrack-max must be at least 1".into(),
        ));
    }
    // Block the stop signals before any thread starts, so that every thread
    // inherits the mask and only the signal thread receives them.
    let signals =
        signals::block_stop_signals().map_err(|e| io_error("blocking SIGINT/SIGTERM")(e.into()))?;
    let notifier = notify::Notifier::from_env()
        .map_err(io_error("NOTIFY_SOCKET is not a usable socket address"))?;
    let state = StateFile::in_dir(&opts.state_dir)?;
    // Refused here, before anything is touched, when another daemon has
    // the state directory or the socket.
    let _lock = lock::DaemonLock::acquire(&opts.state_dir, &opts.socket)?;
    // Read (and refused when corrupt or newer) before the socket is bound.
    state.load()?;
    let listener = bind(&opts.socket)?;
    let conntrack = weft_nat::Conntrack::new(weft_nat::ConntrackConfig {
        capacity: opts.conntrack_max,
        port_range: ports,
        range_only: opts.snat_ports.is_some(),
        timeouts: opts.nat_timeouts.timeouts(),
        ..weft_nat::ConntrackConfig::default()
    });
    let datapath = Datapath::start_tuned(
        opts.mac_aging,
        conntrack,
        weft_datapath::Tuning {
            busy_poll: opts.busy_poll,
            cpu: opts.worker_cpu,
        },
    )?;
    let upstreams = if opts.dns_upstreams.is_empty() {
        weft_dns::parse_resolv_conf(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        )
    } else {
        opts.dns_upstreams.clone()
    };
    let names: NameTables = Default::default();
    let dns_counters = Arc::new(weft_control::dns::DnsCounters::default());
    let queries = weft_control::dns::start(
        names.clone(),
        upstreams,
        datapath.injector(),
        Arc::clone(&dns_counters),
        opts.dns_tcp_idle_timeout
            .unwrap_or(weft_control::dns::TCP_IDLE_TIMEOUT),
    )
    .map_err(io_error("starting the DNS thread"))?;
    let switch_counters = Arc::clone(datapath.counters());
    let injector = datapath.injector();
    datapath.apply_one(weft_datapath::Change::SetDns(Some(queries)))?;
    datapath.apply_one(weft_datapath::Change::SetStormLimits(opts.storm))?;
    let vxlan = VxlanSettings {
        listen: opts.vxlan_listen,
        vtep_ip: weft_control::resolve_vtep_ip(opts.vxlan_listen, opts.vtep_ip),
        underlay_mtu: opts.underlay_mtu,
    };
    let control = match Control::restore(datapath, OsProvisioner, state, vxlan, names) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&opts.socket);
            return Err(DaemonError::Restore(e.message));
        }
    };
    announce_neighbors(&control, &injector);
    let control = Arc::new(Mutex::new(Some(control)));
    if let Some(config) = opts.store.clone() {
        if let Err(e) = join_cluster(config, &vxlan, opts.remote_csum, &control) {
            let _ = std::fs::remove_file(&opts.socket);
            return Err(e);
        }
    }
    if let Some(addr) = opts.metrics {
        let sources = metrics::Sources {
            control: Arc::clone(&control),
            switch: switch_counters,
            dns: dns_counters,
            conntrack_max: opts.conntrack_max,
        };
        match metrics::start(addr, sources) {
            Ok(bound) => tracing::info!(%bound, "serving Prometheus metrics at /metrics"),
            Err(e) => {
                let _ = std::fs::remove_file(&opts.socket);
                return Err(io_error(format!(
                    "serving metrics on {addr} (--metrics): is the port taken?"
                ))(e));
            }
        }
    }

    {
        let control = Arc::clone(&control);
        let socket = opts.socket.clone();
        std::thread::Builder::new()
            .name("weft-signals".into())
            .spawn(move || {
                let signal = signals.wait();
                let _ = notify::Notifier::from_env().map(|n| n.notify("STOPPING=1"));
                // Between two requests: the saved state matches what was
                // made. The TAPs stay (they are persistent) for the next
                // daemon to take back.
                let _guard = control.lock().unwrap_or_else(|e| e.into_inner());
                tracing::info!(%signal, "stopping; endpoints stay for the next daemon (`weft reset` removes them)");
                let _ = std::fs::remove_file(&socket);
                std::process::exit(0);
            })
            .map_err(io_error("starting the signal thread"))?;
    }
    if let Some(every) = notify::watchdog_interval() {
        let control = Arc::clone(&control);
        let notifier = notify::Notifier::from_env()
            .map_err(io_error("NOTIFY_SOCKET is not a usable socket address"))?;
        std::thread::Builder::new()
            .name("weft-watchdog".into())
            .spawn(move || watchdog(&control, &notifier, every))
            .map_err(io_error("starting the watchdog thread"))?;
    }

    {
        let control = Arc::clone(&control);
        std::thread::Builder::new()
            .name("weft-reaper".into())
            .spawn(move || reap_forever(&control))
            .map_err(io_error("starting the reaper thread"))?;
    }

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        socket = %opts.socket.display(),
        state_dir = %opts.state_dir.display(),
        "daemon listening"
    );
    if let Err(e) = notifier.notify(&format!(
        "READY=1\nSTATUS=serving {}\nMAINPID={}",
        opts.socket.display(),
        std::process::id()
    )) {
        tracing::warn!(error = %e, "could not tell systemd the daemon is ready");
    }
    let handler = Arc::new(ApiHandler {
        control,
        daemon_uid: nix::unistd::geteuid().as_raw(),
    });
    server::serve(listener, server::Limits::from_rlimit(), handler);
    Ok(())
}

/// How often the daemon looks for endpoints whose namespace is gone.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// Detaches endpoints whose namespace is gone, every [`REAP_INTERVAL`]
/// (see `weft_control`'s `reap` module), until the daemon shuts down.
fn reap_forever(control: &Mutex<Option<DaemonControl>>) {
    loop {
        std::thread::sleep(REAP_INTERVAL);
        let mut guard = control.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(control) => {
                control.reap_gone_endpoints();
            }
            None => return,
        }
    }
}

/// Registers this host in the cluster store, hands the control plane the
/// store's hooks, and starts the thread that applies what other hosts do
/// (under the control-plane lock, like any request).
fn join_cluster(
    config: weft_cluster::StoreConfig,
    vxlan: &VxlanSettings,
    remote_csum: bool,
    control: &Arc<Mutex<Option<DaemonControl>>>,
) -> Result<(), DaemonError> {
    let vtep_ip = vxlan.vtep_ip.ok_or(weft_cluster::ClusterError::NoVtep)?;
    let me = weft_control::cluster::HostRecord {
        vtep: std::net::SocketAddrV4::new(vtep_ip, vxlan.listen.port()),
        underlay_mtu: vxlan.underlay_mtu,
        version: env!("CARGO_PKG_VERSION").to_string(),
        // Every build with this field takes RCO on receive; with
        // `--remote-csum off` this host asks for (and sends) none.
        remote_csum,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let store = weft_cluster::start(config, me, tx)?;
    control
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .expect("not shut down yet")
        .set_cluster(Box::new(store));
    let control = Arc::clone(control);
    std::thread::Builder::new()
        .name("weft-cluster".into())
        .spawn(move || {
            for event in rx {
                let mut guard = control.lock().unwrap_or_else(|e| e.into_inner());
                match guard.as_mut() {
                    Some(control) => control.cluster_event(event),
                    None => return,
                }
            }
        })
        .map_err(io_error("starting the cluster thread"))?;
    Ok(())
}

/// After a restore: tells every endpoint its neighbors' MACs again
/// ([`Control::neighbor_announcements`]), so traffic that stalled while no
/// daemon ran resumes without waiting for ARP retransmission.
fn announce_neighbors(control: &DaemonControl, injector: &weft_datapath::Injector) {
    let frames = control.neighbor_announcements();
    let count = frames.len();
    for (port, frame) in frames {
        // The injection queue is bounded: wait for room, briefly.
        for _ in 0..100 {
            if injector.send(port, frame.clone()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if count > 0 {
        tracing::debug!(
            frames = count,
            "neighbors announced to the restored endpoints"
        );
    }
}

/// Sends `WATCHDOG=1` every `every` as long as the control plane takes
/// requests and the datapath worker answers a query.
fn watchdog(control: &Mutex<Option<DaemonControl>>, notifier: &notify::Notifier, every: Duration) {
    loop {
        std::thread::sleep(every);
        let alive = {
            let guard = control.lock().unwrap_or_else(|e| e.into_inner());
            guard.as_ref().is_some_and(|c| {
                c.datapath()
                    .neighbors(Some(weft_switch::NetworkId(u32::MAX)))
                    .is_ok()
            })
        };
        if alive {
            if let Err(e) = notifier.notify("WATCHDOG=1") {
                tracing::warn!(error = %e, "could not send the watchdog keep-alive");
            }
        } else {
            tracing::error!("the datapath does not answer: withholding the watchdog keep-alive");
        }
    }
}

/// Binds the API socket with mode 0660, replacing a stale socket file (a
/// killed daemon's) but never a live daemon's. Called with the socket's
/// lock held.
fn bind(socket: &Path) -> Result<UnixListener, DaemonError> {
    if let Some(dir) = socket.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(io_error(format!(
                "creating socket directory {}",
                dir.display()
            )))?;
        }
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(DaemonError::AlreadyRunning(socket.to_path_buf()));
        }
        std::fs::remove_file(socket).map_err(io_error(format!(
            "removing stale socket {}",
            socket.display()
        )))?;
    }
    let listener = UnixListener::bind(socket).map_err(io_error(format!(
        "binding the API socket {}",
        socket.display()
    )))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660)).map_err(io_error(
        format!("setting permissions of {}", socket.display()),
    ))?;
    Ok(listener)
}

/// Decodes, checks and applies requests for [`server::serve`].
struct ApiHandler {
    control: Arc<Mutex<Option<DaemonControl>>>,
    /// The user the daemon runs as (an administrator, see [`access`]).
    daemon_uid: u32,
}

impl server::Handler for ApiHandler {
    fn handle(&self, caller: PeerCred, line: &str) -> server::Answer {
        let request = match weft_api::decode_request(line) {
            Ok(r) => r,
            Err(e) => return Reply::failure(e).into(),
        };
        // A capture streams the port's frames after its reply.
        let capture_count = match &request {
            weft_api::Request::Capture { count, .. } => Some(*count),
            _ => None,
        };
        let access = access::Access::of(caller, self.daemon_uid);
        let mut guard = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let Some(control) = guard.as_mut() else {
            return Reply::failure(ApiError::new(
                ErrorKind::Internal,
                "the daemon is shutting down",
            ))
            .into();
        };
        let allowed = access::check(access, &request, |network, endpoint| {
            control
                .endpoint_list(Some(network))
                .ok()?
                .into_iter()
                .find(|e| e.name == endpoint)
                .map(|e| e.netns)
        });
        // Held until the request is done: an ordinary caller's attach is
        // made through this descriptor.
        let held = match allowed {
            Ok(held) => held,
            Err(e) => {
                tracing::info!(uid = caller.uid, pid = caller.pid, error = %e.message, "request refused");
                return Reply::failure(e).into();
            }
        };
        if matches!(request, weft_api::Request::Stats) {
            // The TAPs' kernel counters mean entering each endpoint's
            // namespace: read them after letting go of the control plane.
            let (mut stats, taps) = control.stats_without_kernel();
            drop(guard);
            for tap in &taps {
                let read = provisioner::tap_counters(&tap.tap.netns, &tap.tap.ifname);
                tap.fill(&mut stats, read);
            }
            return Reply::success(&weft_api::Response::Stats(stats)).into();
        }
        let pinned = held.as_ref().map(weft_os::peer::HeldNetns::fd_path);
        match control.handle_pinned(request, pinned) {
            Ok(response) => {
                let then = match (&response, capture_count) {
                    (weft_api::Response::Capture(info), Some(count)) => {
                        let port = weft_switch::PortId(info.port);
                        let control = Arc::clone(&self.control);
                        Some(Box::new(move |stream: UnixStream| {
                            capture::stream(stream, &control, port, count)
                        })
                            as Box<dyn FnOnce(UnixStream) + Send>)
                    }
                    _ => None,
                };
                server::Answer {
                    reply: Reply::success(&response),
                    then,
                }
            }
            Err(error) => Reply::failure(error).into(),
        }
    }
}
