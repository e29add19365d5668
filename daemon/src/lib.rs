//! `weft daemon`: the process that serves the control API and ties the
//! control plane ([`weft_control::Control`]) to the real datapath worker
//! and the real operating system ([`provisioner::OsProvisioner`]).
//!
//! The daemon serves the API (see `docs/api.md`) on a Unix socket, one
//! request per connection ([`server`]: bounded, with short timeouts), each
//! checked against the caller's credentials ([`access`]) and applied one at
//! a time under the control-plane lock (never taken by the datapath).
//! SIGINT and SIGTERM stop it cleanly: the datapath closes every TAP it made,
//! the socket is removed, and the process exits 0.

pub mod access;
pub mod logging;
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
    State(#[from] PersistError),
    #[error("starting the datapath: {0}")]
    Datapath(#[from] DatapathError),
    /// The saved state could not be applied.
    #[error("{0}")]
    Restore(String),
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
    /// Source ports SNAT hands out.
    pub snat_ports: (u16, u16),
    /// DNS servers names outside weft's networks are forwarded to (empty:
    /// the nameservers of the daemon's /etc/resolv.conf).
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// Storm-control limits of every port.
    pub storm: weft_switch::storm::StormLimits,
    /// Log filter (`--log-level`); `None`: `RUST_LOG`, else `info`.
    pub log_level: Option<String>,
    /// How log lines are written.
    pub log_format: LogFormat,
}

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
    let ports = weft_nat::PortRange::new(opts.snat_ports.0, opts.snat_ports.1)
        .map_err(|e| DaemonError::InvalidOption(format!("--snat-ports: {e}")))?;
    if opts.conntrack_max == 0 {
        return Err(DaemonError::InvalidOption(
            "--conntrack-max must be at least 1".into(),
        ));
    }
    // Block the stop signals before any thread starts, so that every thread
    // inherits the mask and only the signal thread receives them.
    let signals =
        signals::block_stop_signals().map_err(|e| io_error("blocking SIGINT/SIGTERM")(e.into()))?;
    let state = StateFile::in_dir(&opts.state_dir)?;
    let listener = bind(&opts.socket)?;
    let conntrack = weft_nat::Conntrack::new(weft_nat::ConntrackConfig {
        capacity: opts.conntrack_max,
        port_range: ports,
        ..weft_nat::ConntrackConfig::default()
    });
    let datapath = Datapath::start_with(opts.mac_aging, conntrack)?;
    let upstreams = if opts.dns_upstreams.is_empty() {
        weft_dns::parse_resolv_conf(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        )
    } else {
        opts.dns_upstreams.clone()
    };
    let names: NameTables = Default::default();
    let queries = weft_control::dns::start(names.clone(), upstreams, datapath.injector())
        .map_err(io_error("starting the DNS thread"))?;
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
    let control = Arc::new(Mutex::new(Some(control)));

    {
        let control = Arc::clone(&control);
        let socket = opts.socket.clone();
        std::thread::Builder::new()
            .name("weft-signals".into())
            .spawn(move || {
                let signal = signals.wait();
                tracing::info!(%signal, "shutting down");
                let mut guard = control.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(control) = guard.take() {
                    control.shutdown();
                }
                let _ = std::fs::remove_file(&socket);
                std::process::exit(0);
            })
            .map_err(io_error("starting the signal thread"))?;
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

/// Binds the API socket with mode 0660, replacing a stale socket file but
/// never a live daemon's.
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
    fn handle(&self, caller: PeerCred, line: &str) -> Reply {
        let request = match weft_api::decode_request(line) {
            Ok(r) => r,
            Err(e) => return Reply::failure(e),
        };
        let access = access::Access::of(caller, self.daemon_uid);
        let mut guard = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let Some(control) = guard.as_mut() else {
            return Reply::failure(ApiError::new(
                ErrorKind::Internal,
                "the daemon is shutting down",
            ));
        };
        let allowed = access::check(access, &request, |network, endpoint| {
            control
                .endpoint_list(Some(network))
                .ok()?
                .into_iter()
                .find(|e| e.name == endpoint)
                .map(|e| e.netns)
        });
        if let Err(e) = allowed {
            tracing::info!(uid = caller.uid, pid = caller.pid, error = %e.message, "request refused");
            return Reply::failure(e);
        }
        match control.handle(request) {
            Ok(response) => Reply::success(&response),
            Err(error) => Reply::failure(error),
        }
    }
}
