//! `weft daemon`: the control API server and the datapath it drives.
//!
//! The daemon serves the API (see `docs/api.md`) on a Unix socket, one
//! request per connection, each handled on its own thread but applied one at
//! a time under the control-plane lock (never taken by the datapath).
//! SIGINT and SIGTERM stop it cleanly: the datapath closes every TAP it made,
//! the socket is removed, and the process exits 0.

mod control;
mod dns;
mod dns_tcp;
mod nat;
mod overlay;
mod persist;
mod signals;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use weft_switch::datapath::Datapath;

use crate::api::{ApiError, ErrorKind, Reply, Request};
use control::Control;
use persist::StateFile;

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
}

/// Longest request accepted, in bytes.
const MAX_REQUEST_LEN: u64 = 1 << 20;
/// How long a client may take to send its request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the daemon in the foreground until SIGINT or SIGTERM.
pub fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    if opts.mac_aging.is_zero() {
        bail!("--mac-aging must be greater than zero");
    }
    // Block the stop signals before any thread starts, so that every thread
    // inherits the mask and only the signal thread receives them.
    let signals = signals::block_stop_signals().context("blocking SIGINT/SIGTERM")?;
    let state = StateFile::in_dir(&opts.state_dir)?;
    let listener = bind(&opts.socket)?;
    let ports = weft_nat::PortRange::new(opts.snat_ports.0, opts.snat_ports.1)
        .map_err(|e| anyhow::anyhow!("--snat-ports: {e}"))?;
    if opts.conntrack_max == 0 {
        bail!("--conntrack-max must be at least 1");
    }
    let conntrack = weft_nat::Conntrack::new(weft_nat::ConntrackConfig {
        capacity: opts.conntrack_max,
        port_range: ports,
        ..weft_nat::ConntrackConfig::default()
    });
    let datapath =
        Datapath::start_with(opts.mac_aging, conntrack).context("starting the datapath")?;
    let upstreams = if opts.dns_upstreams.is_empty() {
        weft_dns::parse_resolv_conf(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        )
    } else {
        opts.dns_upstreams.clone()
    };
    let names: dns::NameTables = Default::default();
    let queries = dns::start(names.clone(), upstreams, datapath.injector())
        .context("starting the DNS thread")?;
    datapath
        .execute(weft_switch::datapath::Command::SetDns(Some(queries)))
        .context("connecting DNS to the datapath")?;
    if !(576..=65535).contains(&opts.underlay_mtu) {
        bail!(
            "--underlay-mtu {} is out of range: use 576 to 65535",
            opts.underlay_mtu
        );
    }
    let vxlan = overlay::VxlanSettings {
        listen: opts.vxlan_listen,
        vtep_ip: overlay::VxlanSettings::resolve_vtep_ip(opts.vxlan_listen, opts.vtep_ip),
        underlay_mtu: opts.underlay_mtu,
    };
    let control = match Control::new(datapath, state, vxlan, names) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&opts.socket);
            return Err(e);
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
                eprintln!("weft: received {signal}, shutting down");
                let mut guard = control.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(control) = guard.take() {
                    control.shutdown();
                }
                let _ = std::fs::remove_file(&socket);
                std::process::exit(0);
            })
            .context("starting the signal thread")?;
    }

    eprintln!(
        "weft: daemon {} listening on {} (state in {})",
        env!("CARGO_PKG_VERSION"),
        opts.socket.display(),
        opts.state_dir.display()
    );
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("weft: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let control = Arc::clone(&control);
        let spawned = std::thread::Builder::new()
            .name("weft-api".into())
            .spawn(move || serve(stream, &control));
        if let Err(e) = spawned {
            eprintln!("weft: could not start a thread for a client: {e}");
        }
    }
    Ok(())
}

/// Binds the API socket with mode 0660, replacing a stale socket file but
/// never a live daemon's.
fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating socket directory {}", dir.display()))?;
        }
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            bail!(
                "another weft daemon is already listening on {}: stop it first, or pass another --socket",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale socket {}", socket.display()))?;
    }
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("binding the API socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting permissions of {}", socket.display()))?;
    Ok(listener)
}

/// Reads one request from `stream`, applies it, writes the reply.
fn serve(stream: UnixStream, control: &Mutex<Option<Control>>) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut line = String::new();
    let reply = match BufReader::new((&stream).take(MAX_REQUEST_LEN)).read_line(&mut line) {
        Ok(0) => return,
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let mut guard = control.lock().unwrap_or_else(|e| e.into_inner());
                match guard.as_mut() {
                    Some(control) => match control.handle(request) {
                        Ok(value) => Reply {
                            ok: true,
                            result: Some(value),
                            error: None,
                        },
                        Err(error) => Reply::failure(error),
                    },
                    None => Reply::failure(ApiError::new(
                        ErrorKind::Internal,
                        "the daemon is shutting down",
                    )),
                }
            }
            Err(e) => Reply::failure(ApiError::new(
                ErrorKind::InvalidArgument,
                format!("the request is not a valid weft API request ({e}): see docs/api.md"),
            )),
        },
        Err(e) => Reply::failure(ApiError::new(
            ErrorKind::InvalidArgument,
            format!("could not read the request: {e}"),
        )),
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| {
        r#"{"ok":false,"error":{"kind":"internal","message":"reply did not serialize"}}"#.into()
    });
    text.push('\n');
    let _ = (&stream).write_all(text.as_bytes());
}
