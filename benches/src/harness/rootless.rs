//! `weft bench --scenario rootless`: how fast a namespace with no
//! privilege of its own reaches the host and is reached from it, through
//! weft's socket uplink, slirp4netns and pasta, with a root veth pair as
//! the reference.
//!
//! For each path and namespace MTU (1500 and 65520) it measures one TCP
//! stream (iperf3) namespace → host (to a server on the host, reached at
//! the address each tool maps to the host) and host → namespace (to a
//! server in the namespace, through the path's forwarded port), the whole
//! machine's busy CPU per gigabit moved, and the client address the
//! server in the namespace saw on the forwarded port. The client connects
//! from the host's first global address when it has one, so a kept
//! address is distinguishable from the tools' gateway addresses.
//!
//! Every namespace (`weft-b<pid>-r…`), process and directory it makes is
//! removed on every exit path ([`sys::Guard`]). Figures go to the table
//! and to `results-rootless.json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::error::{Context as _, Error, Result};
use super::measure::parse_machine_busy;
use super::sys::{self, in_ns, Guard, Proc};
use super::Reporter;

/// The namespace MTUs measured.
pub const MTUS: [u32; 2] = [1500, 65520];
/// The iperf3 port inside the namespace.
const NS_PORT: u16 = 5201;

/// A way out of the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Weft,
    Slirp4netns,
    Pasta,
    Veth,
}

impl Way {
    pub const ALL: [Way; 4] = [Way::Weft, Way::Slirp4netns, Way::Pasta, Way::Veth];

    pub fn name(self) -> &'static str {
        match self {
            Way::Weft => "weft-sockets",
            Way::Slirp4netns => "slirp4netns",
            Way::Pasta => "pasta",
            Way::Veth => "veth (root)",
        }
    }

    fn tool(self) -> Option<(&'static str, &'static str)> {
        match self {
            Way::Slirp4netns => Some(("slirp4netns", "slirp4netns")),
            Way::Pasta => Some(("pasta", "passt")),
            _ => None,
        }
    }
}

/// What the rootless scenario measures and where it writes.
#[derive(Debug, Clone)]
pub struct RootlessOptions {
    pub exe: PathBuf,
    pub duration: u64,
    pub out: PathBuf,
    pub ways: Vec<Way>,
    pub mtus: Vec<u32>,
}

/// One direction's figures.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    pub gbps: f64,
    /// Busy CPU seconds of the whole machine per gigabit moved.
    pub cpu_s_per_gbit: f64,
    /// The client address the namespace's server saw (host → namespace).
    pub client: Option<String>,
}

/// A path at one MTU.
#[derive(Debug, Clone)]
pub struct Row {
    pub path: Way,
    pub mtu: u32,
    pub out: std::result::Result<Flow, String>,
    pub inward: std::result::Result<Flow, String>,
}

fn busy_ticks() -> u64 {
    fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_machine_busy(&t))
        .unwrap_or(0)
}

fn clock_ticks() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Runs `iperf3 -c` as `client` (argv) for `secs` and returns the
/// receiver's rate in Gbit/s and the CPU it cost.
fn iperf(client: &[String], secs: u64) -> Result<Flow> {
    let before = busy_ticks();
    let mut args = client.to_vec();
    args.extend(["-t".into(), secs.to_string(), "-J".into()]);
    let out = sys::run_bounded(&args, &[], Duration::from_secs(secs + 20))?;
    let busy = busy_ticks().saturating_sub(before) as f64 / clock_ticks();
    let doc: Value = serde_json::from_str(&out.stdout).map_err(|e| Error::Json {
        context: format!("reading iperf3's JSON ({})", out.stderr.trim()),
        source: e,
    })?;
    if let Some(err) = doc["error"].as_str() {
        return Err(Error::Tool(format!("iperf3: {err}")));
    }
    let bps = doc["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| Error::Tool("iperf3 reported no received rate".into()))?;
    let gbit = bps * secs as f64 / 1e9;
    Ok(Flow {
        gbps: bps / 1e9,
        cpu_s_per_gbit: if gbit > 0.0 { busy / gbit } else { 0.0 },
        client: None,
    })
}

/// The host's first global IPv4 address, if any.
fn host_address() -> Option<String> {
    let out = sys::run(&["ip", "-4", "-o", "addr", "show", "scope", "global"]).ok()?;
    out.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        it.find(|w| *w == "inet")?;
        Some(it.next()?.split('/').next()?.to_string())
    })
}

/// A free TCP port on the host.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("0.0.0.0:0").context("cannot find a free port")?;
    Ok(l.local_addr().context("cannot find a free port")?.port())
}

/// The path's namespace, set up: where the namespace reaches the host's
/// server, and the host port forwarded to the namespace's port 5201.
struct Built<'r> {
    guard: Guard<'r>,
    ns: String,
    host_addr_from_ns: String,
    fwd: (String, u16),
}

fn build<'r>(
    opts: &RootlessOptions,
    path: Way,
    mtu: u32,
    client_ip: &str,
    tmp: &Path,
    report: &'r dyn Reporter,
) -> Result<Built<'r>> {
    let mut guard = Guard::new(report);
    let ns = format!("weft-b{}-r{}", std::process::id(), path as u8);
    guard.add_netns(&ns)?;
    let dir = tmp.join(format!("r{}-{mtu}", path as u8));
    guard.add_dir(&dir)?;
    let nspath = format!("/var/run/netns/{ns}");
    let fwd_port = free_port()?;
    let host_addr_from_ns = match path {
        Way::Weft => {
            let sock = dir.join("weft.sock");
            let sock_s = sock.to_string_lossy().to_string();
            let state = dir.join("state");
            let exe = opts.exe.to_string_lossy().to_string();
            let daemon = Proc::spawn(
                &[
                    exe.as_str(),
                    "daemon",
                    "--socket",
                    &sock_s,
                    "--state-dir",
                    &state.to_string_lossy(),
                ],
                &dir.join("daemon.log"),
                &[],
                false,
            )?;
            guard.procs.push(daemon);
            sys::wait_until("the weft daemon", Duration::from_secs(10), || {
                Ok(sys::run(&[exe.as_str(), "--socket", &sock_s, "status"]).is_ok())
            })?;
            let weft = |args: &[&str]| {
                let mut all = vec![exe.as_str(), "--socket", sock_s.as_str()];
                all.extend_from_slice(args);
                sys::run(&all)
            };
            weft(&[
                "network",
                "create",
                "rl",
                "--subnet",
                "10.203.0.0/24",
                "--mtu",
                &mtu.to_string(),
            ])?;
            let ep = weft(&["attach", "rl", "--netns", &ns, "--no-resolv-conf", "--json"])?;
            let ep: Value = serde_json::from_str(&ep).map_err(|e| Error::Json {
                context: "reading `weft attach --json`".into(),
                source: e,
            })?;
            let name = ep["name"].as_str().unwrap_or(&ns).to_string();
            weft(&["uplink", "set", "--sockets"])?;
            weft(&["publish", "rl", &name, &format!("{fwd_port}:{NS_PORT}")])?;
            "10.0.2.2".to_string()
        }
        Way::Slirp4netns => {
            let api = dir.join("slirp.sock");
            let p = Proc::spawn(
                &[
                    "slirp4netns",
                    "--configure",
                    &format!("--mtu={}", mtu.min(65520)),
                    "--api-socket",
                    &api.to_string_lossy(),
                    "--netns-type=path",
                    &nspath,
                    "tap0",
                ],
                &dir.join("slirp4netns.log"),
                &[],
                false,
            )?;
            guard.procs.push(p);
            sys::wait_until("slirp4netns's API socket", Duration::from_secs(10), || {
                Ok(api.exists())
            })?;
            let req = json!({"execute": "add_hostfwd", "arguments": {
                "proto": "tcp", "host_addr": "0.0.0.0",
                "host_port": fwd_port, "guest_port": NS_PORT}});
            let mut s = std::os::unix::net::UnixStream::connect(&api)
                .context("cannot reach slirp4netns's API socket")?;
            use std::io::{Read, Write};
            s.write_all(req.to_string().as_bytes())
                .context("cannot talk to slirp4netns")?;
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.contains("error") {
                return Err(Error::Tool(format!("slirp4netns add_hostfwd: {answer}")));
            }
            "10.0.2.2".to_string()
        }
        Way::Pasta => {
            let p = Proc::spawn(
                &[
                    "pasta",
                    "--config-net",
                    "--foreground",
                    "--quiet",
                    // Run as root by the bench: stay root and join the
                    // namespace alone (no user namespace to enter).
                    "--netns-only",
                    "--runas",
                    "0",
                    "-m",
                    &mtu.min(65520).to_string(),
                    "-t",
                    &format!("{fwd_port}:{NS_PORT}"),
                    "-u",
                    "none",
                    "-T",
                    "none",
                    "-U",
                    "none",
                    "--netns",
                    &nspath,
                ],
                &dir.join("pasta.log"),
                &[],
                false,
            )?;
            guard.procs.push(p);
            let mut gw = String::new();
            sys::wait_until("pasta's default route", Duration::from_secs(10), || {
                let out = sys::run(&in_ns(&ns, &["ip", "-4", "route", "show", "default"]))?;
                gw = out.split_whitespace().nth(2).unwrap_or("").to_string();
                Ok(!gw.is_empty())
            })?;
            gw
        }
        Way::Veth => {
            let host_if = format!("weft-b{}h", std::process::id());
            let ns_if = format!("weft-b{}n", std::process::id());
            sys::run(&[
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns,
            ])?;
            // Deleted with the namespace (its peer goes too).
            let m = mtu.to_string();
            sys::run(&["ip", "link", "set", &host_if, "mtu", &m, "up"])?;
            sys::run(&["ip", "addr", "add", "10.204.0.1/24", "dev", &host_if])?;
            sys::run(&in_ns(&ns, &["ip", "link", "set", &ns_if, "mtu", &m, "up"]))?;
            sys::run(&in_ns(
                &ns,
                &["ip", "addr", "add", "10.204.0.2/24", "dev", &ns_if],
            ))?;
            "10.204.0.1".to_string()
        }
    };
    let fwd = match path {
        // A veth is routed: the namespace's own address, no forwarding.
        Way::Veth => ("10.204.0.2".to_string(), NS_PORT),
        _ => (client_ip.to_string(), fwd_port),
    };
    Ok(Built {
        guard,
        ns,
        host_addr_from_ns,
        fwd,
    })
}

/// Measures one path at one MTU, both directions.
fn measure(
    opts: &RootlessOptions,
    path: Way,
    mtu: u32,
    client_ip: &str,
    host_port: u16,
    tmp: &Path,
    report: &dyn Reporter,
) -> Result<(Result<Flow>, Result<Flow>)> {
    let built = build(opts, path, mtu, client_ip, tmp, report)?;
    let ns = &built.ns;
    let secs = opts.duration;
    // Namespace → host: to the host's server.
    report.status(&format!(
        "weft bench rootless: {} mtu {mtu}: namespace -> host, {secs} s",
        path.name()
    ));
    let out = iperf(
        &in_ns(
            ns,
            &[
                "iperf3",
                "-c",
                &built.host_addr_from_ns,
                "-p",
                &host_port.to_string(),
            ],
        ),
        secs,
    );
    // Host → namespace: a one-shot server in the namespace, through the
    // forwarded port; its JSON names the client it saw.
    report.status(&format!(
        "weft bench rootless: {} mtu {mtu}: host -> namespace, {secs} s",
        path.name()
    ));
    let log = tmp.join(format!("srv-{}-{mtu}.json", path as u8));
    let server = Proc::spawn(
        &in_ns(
            ns,
            &["iperf3", "-s", "-1", "-J", "-p", &NS_PORT.to_string()],
        ),
        &log,
        &[],
        false,
    )?;
    sys::wait_until("iperf3 in the namespace", Duration::from_secs(10), || {
        let out = sys::run(&in_ns(ns, &["ss", "-Htln"]))?;
        Ok(out.contains(&format!(":{NS_PORT}")))
    })?;
    let (ip, port) = &built.fwd;
    let mut inward = iperf(
        &[
            "iperf3".to_string(),
            "-c".into(),
            ip.clone(),
            "-p".into(),
            port.to_string(),
        ],
        secs,
    );
    let mut server = server;
    let _ = sys::wait_until(
        "the namespace's iperf3 to finish",
        Duration::from_secs(5),
        || Ok(server.check_alive().is_err()),
    );
    drop(server);
    if let Ok(flow) = inward.as_mut() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let start = text.find('{').unwrap_or(0);
        flow.client = serde_json::from_str::<Value>(&text[start..])
            .ok()
            .and_then(|d| {
                d["start"]["connected"][0]["remote_host"]
                    .as_str()
                    .map(str::to_string)
            });
    }
    let _ = fs::remove_file(&log);
    drop(built.guard);
    Ok((out, inward))
}

/// Runs the rootless scenario: every path at every MTU, then the table
/// and `results-rootless.json`.
pub fn run(opts: &RootlessOptions, report: &dyn Reporter) -> Result<Vec<Row>> {
    for tool in ["ip", "iperf3", "ss"] {
        if sys::find_in_path(tool).is_none() {
            return Err(Error::MissingTool {
                tool: if tool == "iperf3" { "iperf3" } else { "ip" },
                package: if tool == "iperf3" {
                    "iperf3"
                } else {
                    "iproute2"
                },
            });
        }
    }
    sys::catch_interrupts()?;
    fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let mut top = Guard::new(report);
    let tmp = std::env::temp_dir().join(format!("weft-b{}", std::process::id()));
    top.add_dir(&tmp)?;
    let client_ip = host_address().unwrap_or_else(|| "127.0.0.1".into());
    // The host's server for namespace → host.
    let host_port = free_port()?;
    let server = Proc::spawn(
        &["iperf3", "-s", "-p", &host_port.to_string()],
        &tmp.join("host-iperf3.log"),
        &[],
        false,
    )?;
    top.procs.push(server);
    sys::wait_until("the host's iperf3", Duration::from_secs(10), || {
        Ok(sys::run(&["ss", "-Htln"])?.contains(&format!(":{host_port}")))
    })?;
    let mut rows = Vec::new();
    for &path in &opts.ways {
        for &mtu in &opts.mtus {
            sys::check_interrupted()?;
            if let Some((tool, package)) = path.tool() {
                if sys::find_in_path(tool).is_none() {
                    let why = format!("not installed (apt install {package})");
                    rows.push(Row {
                        path,
                        mtu,
                        out: Err(why.clone()),
                        inward: Err(why),
                    });
                    continue;
                }
            }
            let (out, inward) = match measure(opts, path, mtu, &client_ip, host_port, &tmp, report)
            {
                Ok(r) => r,
                Err(e) if e.is_interrupted() => return Err(e),
                Err(e) => (Err(Error::Tool(e.message())), Err(Error::Tool(e.message()))),
            };
            let msg = |r: Result<Flow>| r.map_err(|e| e.message());
            rows.push(Row {
                path,
                mtu,
                out: msg(out),
                inward: msg(inward),
            });
        }
    }
    drop(top);
    report.table(&table(&rows, &client_ip));
    let doc = json!({
        "scenario": "rootless",
        "duration_s": opts.duration,
        "client_address": client_ip,
        "rows": rows.iter().map(|r| {
            let f = |x: &std::result::Result<Flow, String>| match x {
                Ok(f) => json!({"gbit_s": f.gbps, "cpu_s_per_gbit": f.cpu_s_per_gbit, "client_seen": f.client}),
                Err(e) => json!({"error": e}),
            };
            json!({"path": r.path.name(), "mtu": r.mtu,
                   "namespace_to_host": f(&r.out), "host_to_namespace": f(&r.inward)})
        }).collect::<Vec<_>>(),
    });
    let file = opts.out.join("results-rootless.json");
    fs::write(
        &file,
        serde_json::to_string_pretty(&doc).context("encoding results")? + "\n",
    )
    .with_context(|| format!("cannot write {}", file.display()))?;
    report.status(&format!("weft bench rootless: wrote {}", file.display()));
    Ok(rows)
}

/// The results table: Gbit/s and CPU seconds per Gbit both ways, the
/// client address seen, and weft's ratio to slirp4netns and the veth.
pub fn table(rows: &[Row], client_ip: &str) -> String {
    let cell = |r: &std::result::Result<Flow, String>| match r {
        Ok(f) => format!("{:>7.2} {:>6.2}", f.gbps, f.cpu_s_per_gbit),
        Err(_) => format!("{:>7} {:>6}", "-", "-"),
    };
    let mut s = format!(
        "rootless: one TCP stream; Gbit/s and machine CPU s per Gbit; clients connect from {client_ip}\n\
         {:<13} {:>6} | {:>7} {:>6} | {:>7} {:>6} | client seen\n",
        "path", "mtu", "ns->host", "cpu", "host->ns", "cpu"
    );
    for r in rows {
        let seen = match &r.inward {
            Ok(f) => f.client.clone().unwrap_or_else(|| "?".into()),
            Err(e) => e.clone(),
        };
        s += &format!(
            "{:<13} {:>6} | {} | {} | {}\n",
            r.path.name(),
            r.mtu,
            cell(&r.out),
            cell(&r.inward),
            seen
        );
    }
    let rate = |p: Way, mtu: u32, out: bool| {
        rows.iter()
            .find(|r| r.path == p && r.mtu == mtu)
            .and_then(|r| {
                if out {
                    r.out.as_ref().ok()
                } else {
                    r.inward.as_ref().ok()
                }
            })
            .map(|f| f.gbps)
    };
    for mtu in MTUS {
        for (out, dir) in [(true, "ns->host"), (false, "host->ns")] {
            let Some(w) = rate(Way::Weft, mtu, out) else {
                continue;
            };
            let ratio = |p| rate(p, mtu, out).filter(|x| *x > 0.0).map(|x| w / x);
            s += &format!(
                "weft-sockets {dir} mtu {mtu}: {} slirp4netns, {} the veth\n",
                ratio(Way::Slirp4netns).map_or("-".into(), |r| format!("{r:.1}x")),
                ratio(Way::Veth).map_or("-".into(), |r| format!("{r:.2}x")),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_ratios_and_failures() {
        let flow = |g: f64| Flow {
            gbps: g,
            cpu_s_per_gbit: 0.5,
            client: Some("192.0.2.2".into()),
        };
        let rows = vec![
            Row {
                path: Way::Weft,
                mtu: 1500,
                out: Ok(flow(20.0)),
                inward: Ok(flow(10.0)),
            },
            Row {
                path: Way::Slirp4netns,
                mtu: 1500,
                out: Ok(flow(2.0)),
                inward: Ok(flow(5.0)),
            },
            Row {
                path: Way::Pasta,
                mtu: 1500,
                out: Err("not installed (apt install passt)".into()),
                inward: Err("not installed (apt install passt)".into()),
            },
        ];
        let t = table(&rows, "192.0.2.2");
        assert!(
            t.contains("weft-sockets ns->host mtu 1500: 10.0x slirp4netns"),
            "{t}"
        );
        assert!(
            t.contains("weft-sockets host->ns mtu 1500: 2.0x slirp4netns"),
            "{t}"
        );
        assert!(t.contains("not installed (apt install passt)"), "{t}");
    }
}
