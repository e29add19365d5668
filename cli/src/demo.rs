//! `weft demo`: a guided tour on a real machine.
//!
//! Starts a private daemon, builds two networks out of four network
//! namespaces and shows switching, isolation and routing with `ping`.
//! Everything it creates is removed again on every exit path: success,
//! error, panic and Ctrl-C (the SIGINT handler only sets a flag, which is
//! checked between steps; the [`Cleanup`] guard does the work in its `Drop`).

use std::ffi::OsStr;
use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::api::{EndpointInfo, FdbEntry, NetworkDetail, NetworkInfo, Request, Stats};
use crate::client::{self, ClientError};
use crate::output;

/// How long the private daemon gets to start listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon gets to exit after SIGTERM before it is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

const FRONT: &str = "demo-front";
const FRONT_SUBNET: &str = "10.201.0.0/24";
const BACK: &str = "demo-back";
const BACK_SUBNET: &str = "10.202.0.0/24";
const TOTAL_STEPS: u32 = 9;

/// Set by SIGINT/SIGTERM; checked between steps.
static INTERRUPTED: std::sync::LazyLock<Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// The demo stopped because of Ctrl-C (or SIGTERM).
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Runs the demo. `exe` is the weft binary to start the daemon from.
pub fn run(exe: &Path) -> anyhow::Result<()> {
    if !client::is_privileged() {
        bail!(
            "`weft demo` needs root (CAP_NET_ADMIN) to create network namespaces and TAP \
             devices; run it as `sudo {} demo`",
            exe.display()
        );
    }
    for (tool, package) in [("ip", "iproute2")] {
        if find_in_path(tool).is_none() {
            bail!("`weft demo` needs `{tool}`: install it (Debian: apt-get install {package})");
        }
    }
    install_signal_handlers()?;

    let mut cleanup = Cleanup::default();
    let result = steps(exe, &mut cleanup);
    if let Err(err) = &result {
        let interrupted = err.chain().any(|c| c.is::<Interrupted>());
        if interrupted {
            println!("\nInterrupted: cleaning up, please wait.");
        } else if let Some(log) = &cleanup.log {
            print_log_tail(log);
        }
    }
    drop(cleanup);
    if result.is_ok() {
        println!("\nDone. Try it yourself: run `weft daemon` and the commands shown above.");
    }
    result
}

/// The demo proper; every resource it creates is recorded in `cleanup`
/// before the next step.
fn steps(exe: &Path, cleanup: &mut Cleanup) -> anyhow::Result<()> {
    let pid = std::process::id();
    let prefix = format!("weft-demo-{pid}");
    let dir = PathBuf::from(format!("/tmp/{prefix}"));
    let socket = dir.join("weft.sock");
    let state_dir = dir.join("state");
    let log = dir.join("daemon.log");

    println!("weft demo: four network namespaces, two networks, one userspace switch.");
    println!("Everything is removed again at the end (or on Ctrl-C).");

    // 1. A private daemon.
    step(1, "Starting a private weft daemon");
    if dir.exists() {
        // Left over by an earlier run that had our pid and was killed hard.
        fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove stale {}", dir.display()))?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    cleanup.dir = Some(dir.clone());
    let log_file =
        fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let log_file2 = log_file
        .try_clone()
        .context("cannot duplicate the log file")?;
    cleanup.log = Some(log.clone());
    shell(&format!(
        "weft daemon --socket {} --state-dir {}   (log: {})",
        socket.display(),
        state_dir.display(),
        log.display()
    ));
    let child = Command::new(exe)
        .arg("daemon")
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(&state_dir)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_file2)
        // Its own process group: Ctrl-C reaches only us, and we stop the
        // daemon in order, after the steps.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {} daemon", exe.display()))?;
    let daemon_pid = child.id();
    cleanup.daemon = Some(child);
    cleanup.socket = Some(socket.clone());
    wait_for_daemon(&socket, cleanup)?;
    println!(
        "    daemon pid {daemon_pid} is listening on {}",
        socket.display()
    );
    let api = Api { socket: &socket };

    // 2. Namespaces.
    step(2, "Creating network namespaces");
    let ns = |suffix: &str| format!("{prefix}-{suffix}");
    for suffix in ["a", "b", "c", "d"] {
        check_interrupted()?;
        let name = ns(suffix);
        shell(&format!("ip netns add {name}"));
        run_tool("ip", ["netns", "add", name.as_str()])?;
        cleanup.namespaces.push(name);
    }

    // 3. Networks.
    step(
        3,
        "Creating two networks (isolated from each other by default)",
    );
    let front = api.create_network(FRONT, FRONT_SUBNET)?;
    let back = api.create_network(BACK, BACK_SUBNET)?;
    for n in [&front, &back] {
        println!(
            "    {}: subnet {}, gateway {} ({})",
            n.name, n.subnet, n.gateway, n.gateway_mac
        );
    }

    // 4. Endpoints.
    step(
        4,
        "Attaching the namespaces: a, b, c to demo-front; d to demo-back",
    );
    let mut ips = Vec::new();
    for (suffix, network) in [("a", FRONT), ("b", FRONT), ("c", FRONT), ("d", BACK)] {
        check_interrupted()?;
        let ep = api.attach(network, &ns(suffix), suffix)?;
        println!(
            "    {}: {} in {}, ip {}, mac {}",
            ep.name, ep.ifname, ep.netns, ep.ip, ep.mac
        );
        ips.push(ep.ip.addr().to_string());
    }
    let (ip_a, ip_b, ip_c) = (&ips[0], &ips[1], &ips[2]);

    // 5. The endpoint table.
    step(5, "Listing endpoints");
    shell("weft endpoints");
    let endpoints: Vec<EndpointInfo> =
        api.get(Request::Endpoints { network: None }, "endpoints")?;
    print_indented(&output::endpoints(&endpoints));

    // 6. Switching and the gateway.
    step(
        6,
        "Pinging within demo-front (switched by weft) and its gateway",
    );
    expect_reachable(&ns("a"), "a", "b", ip_b)?;
    expect_reachable(&ns("a"), "a", "c", ip_c)?;
    let gateway = front.gateway.to_string();
    println!("    b -> gateway {gateway}");
    let reply = ping(&ns("b"), &gateway)?;
    print_ping(&reply);
    if !reply.ok {
        bail!("b cannot reach its gateway {gateway}: {}", reply.summary());
    }

    // 7. Isolation.
    step(
        7,
        "Checking isolation: d (demo-back) must not reach a (demo-front)",
    );
    println!("    d -> a {ip_a}  (expected to fail)");
    let reply = ping(&ns("d"), ip_a)?;
    print_ping(&reply);
    if reply.ok {
        bail!("d reached a although demo-back and demo-front are not routed: isolation is broken");
    }
    if reply
        .stdout
        .lines()
        .any(|l| l.trim_start().starts_with("From "))
    {
        println!("    weft's gateway answered with an ICMP error instead of forwarding:");
    }
    println!("    networks are isolated unless you allow a route between them");

    // 8. Routing.
    step(8, "Allowing routing between demo-front and demo-back");
    shell(&format!("weft route allow {FRONT} {BACK}"));
    api.call(
        Request::RouteAllow {
            a: FRONT.into(),
            b: BACK.into(),
        },
        "route allow",
    )?;
    println!("    d -> a {ip_a}");
    let reply = ping(&ns("d"), ip_a)?;
    print_ping(&reply);
    if !reply.ok {
        bail!("d cannot reach a after `route allow`: {}", reply.summary());
    }
    match reply.ttl() {
        Some(63) => println!(
            "    ttl=63: one less than the 64 Linux starts with, so the reply was routed \
             through weft's gateway"
        ),
        Some(ttl) => println!("    ttl={ttl} (63 would mean routed through weft's gateway)"),
        None => println!("    (no ttl= in ping's output)"),
    }

    // 9. What the switch learned and counted.
    step(9, "What the switch learned (fdb) and counted (stats)");
    shell("weft fdb");
    let fdb: Vec<FdbEntry> = api.get(Request::Fdb { network: None }, "fdb")?;
    print_indented(&output::fdb(&fdb));
    println!();
    shell("weft stats");
    let stats: Stats = api.get(Request::Stats, "stats")?;
    print_indented(&output::stats(&stats));
    check_interrupted()
}

/// Waits until the daemon answers `status`, it exits, or time runs out.
fn wait_for_daemon(socket: &Path, cleanup: &mut Cleanup) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        check_interrupted()?;
        if let Some(child) = cleanup.daemon.as_mut() {
            if let Some(status) = child.try_wait().context("cannot check on the daemon")? {
                cleanup.daemon = None;
                bail!("the daemon exited during startup ({status})");
            }
        }
        match client::call(socket, &Request::Status) {
            Ok(_) => return Ok(()),
            Err(ClientError::NotRunning { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(ClientError::NotRunning { .. }) => bail!(
                "the daemon did not start listening on {} within {} s",
                socket.display(),
                STARTUP_TIMEOUT.as_secs()
            ),
            Err(e) => return Err(e).context("the daemon does not answer `status`"),
        }
    }
}

/// The private daemon's control API.
struct Api<'a> {
    socket: &'a Path,
}

impl Api<'_> {
    fn call(&self, req: Request, what: &str) -> anyhow::Result<serde_json::Value> {
        check_interrupted()?;
        client::call(self.socket, &req).with_context(|| format!("`weft {what}` failed"))
    }

    fn get<T: serde::de::DeserializeOwned>(&self, req: Request, what: &str) -> anyhow::Result<T> {
        output::decode(self.call(req, what)?, what)
    }

    fn create_network(&self, name: &str, subnet: &str) -> anyhow::Result<NetworkInfo> {
        shell(&format!("weft network create {name} --subnet {subnet}"));
        let created = self.call(
            Request::NetworkCreate {
                name: name.into(),
                subnet: subnet.into(),
                gateway: None,
                mtu: None,
                internal: false,
                vni: None,
                ip_range: None,
                nat_filtering: None,
                nat_max_flows: None,
                nat_max_ports: None,
            },
            "network create",
        )?;
        if let Ok(info) = serde_json::from_value::<NetworkInfo>(created) {
            return Ok(info);
        }
        let detail: NetworkDetail = self.get(
            Request::NetworkInspect { name: name.into() },
            "network inspect",
        )?;
        Ok(detail.network)
    }

    fn attach(&self, network: &str, netns: &str, name: &str) -> anyhow::Result<EndpointInfo> {
        shell(&format!(
            "weft attach {network} --netns {netns} --name {name}"
        ));
        self.get(
            Request::Attach {
                network: network.into(),
                netns: Some(netns.into()),
                pid: None,
                name: Some(name.into()),
                ip: None,
                mac: None,
                ifname: None,
                publish: Vec::new(),
                aliases: Vec::new(),
                no_resolv_conf: true,
                owner: None,
            },
            "attach",
        )
    }
}

/// Everything the demo created, removed in reverse order on drop: what the
/// daemon made (`weft reset`: its TAPs and resolv.conf files, which outlive
/// a stopped daemon), the daemon, then the namespaces, then the temporary
/// directory with the socket, state and log.
#[derive(Default)]
struct Cleanup {
    daemon: Option<Child>,
    socket: Option<PathBuf>,
    namespaces: Vec<String>,
    dir: Option<PathBuf>,
    log: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.daemon.is_none() && self.namespaces.is_empty() && self.dir.is_none() {
            return;
        }
        step(TOTAL_STEPS + 1, "Cleaning up");
        if let Some(child) = self.daemon.take() {
            if let Some(socket) = self.socket.take() {
                shell(&format!("weft --socket {} reset", socket.display()));
                if let Err(e) = crate::client::call(&socket, &crate::api::Request::Reset) {
                    eprintln!("warning: reset failed: {e}");
                }
            }
            stop_daemon(child);
        }
        for name in self.namespaces.drain(..).rev() {
            shell(&format!("ip netns del {name}"));
            if let Err(e) = run_tool("ip", ["netns", "del", name.as_str()]) {
                eprintln!("warning: {e:#}");
            }
        }
        if let Some(dir) = self.dir.take() {
            println!("    removing {}", dir.display());
            if let Err(e) = fs::remove_dir_all(&dir) {
                eprintln!("warning: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

/// SIGTERM, wait up to [`SHUTDOWN_TIMEOUT`], then SIGKILL.
fn stop_daemon(mut child: Child) {
    let pid = child.id();
    println!("    stopping the daemon (pid {pid})");
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let Ok(raw_pid) = i32::try_from(pid) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    // `raw_pid` is our own child, not yet reaped, so it cannot be reused.
    let _ = kill(Pid::from_raw(raw_pid), Signal::SIGTERM);
    let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    eprintln!(
        "warning: the daemon did not exit within {} s of SIGTERM; killing it",
        SHUTDOWN_TIMEOUT.as_secs()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Prints the end of the daemon's log, which usually says why it failed.
fn print_log_tail(log: &Path) {
    const TAIL: u64 = 4096;
    let Ok(mut file) = fs::File::open(log) else {
        return;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return;
    }
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return;
    }
    let text = String::from_utf8_lossy(&bytes);
    eprintln!("\nThe daemon's log ({}) ends with:", log.display());
    for line in text.lines() {
        eprintln!("    {line}");
    }
}

fn step(n: u32, text: &str) {
    println!("\n[{n}/{}] {text}", TOTAL_STEPS + 1);
}

/// Shows the command a user would type for what the demo does next.
fn shell(command: &str) {
    println!("    $ {command}");
}

fn print_indented(text: &str) {
    for line in text.lines() {
        if line.is_empty() {
            println!();
        } else {
            println!("    {line}");
        }
    }
}

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// Sets [`INTERRUPTED`] on SIGINT and SIGTERM, so cleanup runs instead of
/// the process dying mid-step.
fn install_signal_handlers() -> anyhow::Result<()> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&INTERRUPTED))
            .context("cannot install a signal handler")?;
    }
    Ok(())
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Runs a tool to completion; a failure carries its stderr.
fn run_tool<I, S>(tool: &str, args: I) -> anyhow::Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let shown = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(tool)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{tool} {shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{tool} {shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// What `ping` said.
struct PingReply {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl PingReply {
    /// The TTL of the first echo reply.
    fn ttl(&self) -> Option<u8> {
        parse_ttl(&self.stdout)
    }

    fn summary(&self) -> String {
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no output")
            .to_string()
    }
}

/// Two ICMP echo requests from inside namespace `netns` to `ip`, reported
/// the way `ping -c 2 -W 1` would (weft sends them itself, so the demo
/// needs no ping binary).
fn ping(netns: &str, ip: &str) -> anyhow::Result<PingReply> {
    check_interrupted()?;
    let dst: std::net::Ipv4Addr = ip
        .parse()
        .with_context(|| format!("`{ip}` is not an address"))?;
    let path = std::path::PathBuf::from("/var/run/netns").join(netns);
    let answers = crate::probe::ping(&path, dst, 2, Duration::from_secs(1))
        .with_context(|| format!("cannot send ICMP echo from namespace {netns}"))?;
    check_interrupted()?;
    let mut stdout = String::new();
    for (i, answer) in answers.iter().enumerate() {
        stdout.push_str(&answer.describe(i as u16 + 1, dst));
        stdout.push('\n');
    }
    let received = answers
        .iter()
        .filter(|a| matches!(a, crate::probe::Echo::Reply { .. }))
        .count();
    let loss = 100 * (answers.len() - received) / answers.len().max(1);
    stdout.push_str(&format!(
        "{} packets transmitted, {received} received, {loss}% packet loss\n",
        answers.len()
    ));
    Ok(PingReply {
        ok: received > 0,
        stdout,
        stderr: String::new(),
    })
}

fn expect_reachable(from_ns: &str, from: &str, to: &str, to_ip: &str) -> anyhow::Result<()> {
    println!("    {from} -> {to} {to_ip}");
    let reply = ping(from_ns, to_ip)?;
    print_ping(&reply);
    if !reply.ok {
        bail!("{from} cannot reach {to} ({to_ip}): {}", reply.summary());
    }
    Ok(())
}

/// Shows ping's reply lines and its summary, not the banner.
fn print_ping(reply: &PingReply) {
    let interesting = |line: &&str| {
        line.contains("bytes from") || line.starts_with("From ") || line.contains("packet loss")
    };
    let lines = reply.stdout.lines().map(str::trim).filter(interesting);
    // stderr holds ping's own errors ("connect: Network is unreachable").
    for line in lines.chain(reply.stderr.lines().map(str::trim)) {
        if !line.is_empty() {
            println!("        {line}");
        }
    }
}

/// The number after the first `ttl=` in ping's output.
fn parse_ttl(text: &str) -> Option<u8> {
    let start = text.find("ttl=")? + "ttl=".len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_parsed_from_ping_output() {
        let out = "PING 10.201.0.2 (10.201.0.2) 56(84) bytes of data.\n\
                   64 bytes from 10.201.0.2: icmp_seq=1 ttl=63 time=0.120 ms\n\
                   64 bytes from 10.201.0.2: icmp_seq=2 ttl=63 time=0.090 ms\n";
        assert_eq!(parse_ttl(out), Some(63));
        assert_eq!(parse_ttl("no replies"), None);
        assert_eq!(parse_ttl("ttl=x"), None);
    }

    #[test]
    fn summary_is_the_last_line() {
        let r = PingReply {
            ok: false,
            stdout: "a\n2 packets transmitted, 0 received, 100% packet loss\n\n".into(),
            stderr: String::new(),
        };
        assert_eq!(
            r.summary(),
            "2 packets transmitted, 0 received, 100% packet loss"
        );
    }
}
