//! Shared harness for weft's integration tests.
//!
//! These tests drive the real `weft` binary against real network namespaces
//! and the real kernel stack, so they need root; without it every test
//! prints `skipped: needs root` and returns.
//!
//! # Running in parallel (CI note)
//!
//! `cargo test` runs test functions on parallel threads of one process and
//! `cargo nextest` runs each in its own process. Both are safe:
//!
//! * every test starts its own daemon with its own socket, state dir and log
//!   under `/tmp/weft-t<pid>-<n>/` ([`Daemon`]);
//! * every namespace is named `weft-t<pid>-<counter>-<tag>` ([`Netns`]), so
//!   names never collide between threads or processes;
//! * every test takes its subnets from `10.<index>.<k>.0/24` ([`subnet`]),
//!   where `<index>` is unique per test across all test files (switching:
//!   10..=19, bad_input: 20..=39, port_security: 40..=49, cleanup: 50..=59,
//!   overlay: 60..=69, whose underlays also use 192.168.60..=69.0/24;
//!   nat: 80..=89, whose uplinks also use 192.168.80..=89.0/24).
//!   Networks of different daemons never meet anyway, since each namespace
//!   belongs to exactly one test, but distinct ranges keep logs readable.
//!
//! Every resource is a guard that is released on every exit path, panics
//! included, and every wait is bounded.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// Default bound for one helper command (ip, weft, ping, ...).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Pids of daemons started by this process; a [`Netns`] never kills them
/// even if one of their threads sits in its namespace.
static DAEMON_PIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// A number unique within this test process.
pub fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// The prefix every name created by this test process starts with.
pub fn name_prefix() -> String {
    format!("weft-t{}-", std::process::id())
}

/// `weft-t<pid>-<counter>-<tag>`.
pub fn unique_name(tag: &str) -> String {
    format!("{}{}-{}", name_prefix(), next_id(), tag)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns from the calling test with a note when not running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// `10.<index>.<k>.0/24`.
pub fn subnet(index: u8, k: u8) -> String {
    format!("10.{index}.{k}.0/24")
}

/// `10.<index>.<k>.<host>`.
pub fn addr(index: u8, k: u8, host: u8) -> String {
    format!("10.{index}.{k}.{host}")
}

/// Lossy text of a byte buffer.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A readable dump of a finished command for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Sends `sig` to the process group led by `pid` (our children run in their
/// own group), falling back to the process alone.
fn kill_group(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; a negative pid names
    // the process group the child leads (set up with `process_group(0)`).
    let rc = unsafe { libc::kill(-(pid as i32), sig) };
    if rc != 0 {
        // SAFETY: as above, for the single process.
        unsafe { libc::kill(pid as i32, sig) };
    }
}

/// Whether a process with this pid exists (kill(pid, 0) does not fail
/// with ESRCH).
pub fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || errno() != libc::ESRCH
}

/// Whether child `pid` has exited, without reaping it.
fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: siginfo_t is a plain C struct for which all-zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t; WNOWAIT leaves the
    // child waitable so `Child::wait` still reaps it.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: after a successful waitid the si_pid field is initialised
    // (0 when the child has not changed state yet).
    rc == 0 && unsafe { info.si_pid() } != 0
}

/// Runs `cmd` to completion with stdin closed, collecting its output. After
/// `timeout` the command's whole process group is killed and the output so
/// far is returned with the (signal) status.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let pid = child.id();
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    loop {
        if exited_unreaped(pid) {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("timed out after {timeout:?}, killing: {cmd:?}");
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    // The leader is not reaped yet, so its group id cannot have been reused:
    // kill whatever is left in the group (on timeout the command itself,
    // otherwise grandchildren that would hold the pipes open).
    kill_group(pid, libc::SIGKILL);
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Runs a host command (`args[0]` is the program) with [`CMD_TIMEOUT`].
pub fn host_exec(args: &[&str]) -> Output {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    run_timeout(&mut cmd, CMD_TIMEOUT)
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Daemon
// ---------------------------------------------------------------------------

/// A `weft daemon` of its own, with its temp dir `/tmp/weft-t<pid>-<n>/`
/// holding the socket, state dir and log. Dropping it stops the daemon
/// (SIGTERM, up to 5 s, then SIGKILL) and removes the dir; when the test is
/// panicking the tail of the daemon log is printed first.
pub struct Daemon {
    child: Option<Child>,
    pid: u32,
    status: Option<ExitStatus>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts a daemon with extra `weft daemon` arguments (e.g.
    /// `["--mac-aging", "2"]`) and waits up to 10 s for `status`.
    pub fn start_with(extra: &[&str]) -> Daemon {
        Daemon::spawn(None, extra)
    }

    /// Starts a daemon whose process runs inside namespace `ns` (through
    /// `ip netns exec`, which execs weft, so the pid is the daemon's), e.g.
    /// a "host" namespace of an overlay test; it still creates its TAPs in
    /// whatever namespaces `attach` names. Drop the daemon before `ns`.
    pub fn start_in(ns: &Netns, extra: &[&str]) -> Daemon {
        Daemon::spawn(Some(ns), extra)
    }

    fn spawn(ns: Option<&Netns>, extra: &[&str]) -> Daemon {
        let dir = PathBuf::from(format!("/tmp/weft-t{}-{}", std::process::id(), next_id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create daemon temp dir");
        // The guard exists from here on so every later failure cleans up.
        let mut daemon = Daemon {
            child: None,
            pid: 0,
            status: None,
            socket: dir.join("weft.sock"),
            state_dir: dir.join("state"),
            log: dir.join("daemon.log"),
            dir,
        };
        fs::create_dir_all(&daemon.state_dir).expect("create state dir");
        let log = File::create(&daemon.log).expect("create daemon log");
        let mut cmd = match ns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns.name, WEFT]);
                cmd
            }
            None => Command::new(WEFT),
        };
        let child = cmd
            .arg("daemon")
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("--state-dir")
            .arg(&daemon.state_dir)
            .args(extra)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {WEFT} daemon: {e}"));
        daemon.pid = child.id();
        DAEMON_PIDS.lock().unwrap().push(daemon.pid as i32);
        daemon.child = Some(child);
        daemon.wait_ready(Duration::from_secs(10));
        daemon
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.status = Some(status);
                panic!(
                    "weft daemon exited during startup with {status}; log:\n{}",
                    self.log_tail(40)
                );
            }
            let out = weft_sock(&self.socket, &["status"]);
            if out.status.success() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "weft daemon not ready after {timeout:?}; last `status`:\n{}",
                    describe(&out)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `lines` lines of the daemon's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = text(&buf);
        }
        let all: Vec<&str> = s.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the daemon: SIGTERM, up to 5 s, then SIGKILL. Returns its exit
    /// status (also on later calls).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain signal to our own child, which is not reaped yet
            // so its pid cannot have been reused.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!(
                            "weft daemon {} ignored SIGTERM for 5 s, killing it",
                            child.id()
                        );
                        kill_group(child.id(), libc::SIGKILL);
                        break child.wait().ok();
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                    Err(_) => {
                        kill_group(child.id(), libc::SIGKILL);
                        break child.wait().ok();
                    }
                }
            };
            DAEMON_PIDS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|p| *p != self.pid as i32);
            self.status = status;
        }
        self.status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "---- weft daemon log tail ({}) ----\n{}\n---- end of daemon log ----",
                self.log.display(),
                self.log_tail(60)
            );
        }
        let was_running = self.child.is_some();
        let status = self.stop();
        if was_running && !matches!(status, Some(s) if s.success()) {
            eprintln!(
                "warning: weft daemon did not exit cleanly on SIGTERM: {status:?}; log tail:\n{}",
                self.log_tail(20)
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs `weft --socket SOCK ARGS...`.
pub fn weft_sock(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(WEFT);
    cmd.arg("--socket").arg(socket).args(args);
    run_timeout(&mut cmd, CMD_TIMEOUT)
}

/// Runs `weft --socket <daemon's socket> ARGS...`.
pub fn weft(daemon: &Daemon, args: &[&str]) -> Output {
    weft_sock(&daemon.socket, args)
}

/// Runs a weft command that must succeed; returns its stdout.
pub fn weft_ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = weft(daemon, args);
    assert!(
        out.status.success(),
        "`weft {}` failed:\n{}",
        args.join(" "),
        describe(&out)
    );
    text(&out.stdout)
}

/// Runs `weft ARGS... --json`, which must succeed, and parses its stdout.
pub fn json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let stdout = weft_ok(daemon, &all);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "`weft {}` printed invalid JSON ({e}):\n{stdout}",
            all.join(" ")
        )
    })
}

/// `weft network create NAME --subnet CIDR EXTRA...`, which must succeed.
pub fn create_network(daemon: &Daemon, name: &str, cidr: &str, extra: &[&str]) {
    let mut args = vec!["network", "create", name, "--subnet", cidr];
    args.extend_from_slice(extra);
    weft_ok(daemon, &args);
}

/// `weft attach NETWORK --netns NS EXTRA... --json` → EndpointInfo.
pub fn attach(daemon: &Daemon, network: &str, ns: &Netns, extra: &[&str]) -> Endpoint {
    let mut args = vec!["attach", network, "--netns", ns.name.as_str()];
    args.extend_from_slice(extra);
    Endpoint::from_json(&json(daemon, &args))
}

/// The fields of an EndpointInfo the tests use.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub network: String,
    pub ifname: String,
    /// Address without prefix length.
    pub ip: String,
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub port: u64,
    pub raw: Value,
}

impl Endpoint {
    pub fn from_json(v: &Value) -> Endpoint {
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("EndpointInfo without string `{k}`: {v}"))
                .to_string()
        };
        let ip_cidr = s("ip");
        Endpoint {
            name: s("name"),
            network: s("network"),
            ifname: s("ifname"),
            ip: ip_cidr.split('/').next().unwrap().to_string(),
            mac: s("mac").to_ascii_lowercase(),
            port: v["port"]
                .as_u64()
                .unwrap_or_else(|| panic!("EndpointInfo without numeric `port`: {v}")),
            raw: v.clone(),
        }
    }
}

/// The `drops[reason]` counter of a switch port in `weft stats --json`
/// (0 when the reason is absent).
pub fn port_drops(daemon: &Daemon, port: u64, reason: &str) -> u64 {
    let stats = json(daemon, &["stats"]);
    let ports = stats["ports"]
        .as_array()
        .unwrap_or_else(|| panic!("stats without `ports`: {stats}"));
    let p = ports
        .iter()
        .find(|p| p["port"].as_u64() == Some(port))
        .unwrap_or_else(|| panic!("no port {port} in stats: {stats}"));
    p["drops"][reason].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Namespaces and processes
// ---------------------------------------------------------------------------

/// A network namespace `weft-t<pid>-<counter>-<tag>` with `lo` up. Dropping
/// it kills every process inside it and deletes it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique_name(tag);
        let out = host_exec(&["ip", "netns", "add", &name]);
        assert!(
            out.status.success(),
            "ip netns add {name}:\n{}",
            describe(&out)
        );
        let ns = Netns { name };
        let out = ns.exec(&["ip", "link", "set", "lo", "up"]);
        assert!(
            out.status.success(),
            "lo up in {}:\n{}",
            ns.name,
            describe(&out)
        );
        ns
    }

    /// `/var/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// A command running inside the namespace (`ip netns exec`, which execs
    /// the program, so the child's pid is the program's).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs a command inside the namespace with [`CMD_TIMEOUT`].
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_timeout(args, CMD_TIMEOUT)
    }

    pub fn exec_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        run_timeout(&mut self.command(args), timeout)
    }

    /// Starts a background process inside the namespace, killed when the
    /// returned guard (or this namespace) is dropped.
    pub fn spawn(&self, args: &[&str], stdin: Stdio, stdout: Stdio) -> Bg {
        let mut cmd = self.command(args);
        cmd.stdin(stdin).stdout(stdout);
        Bg::spawn(cmd, &format!("[{}] {}", self.name, args.join(" ")))
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "-n", self.name.as_str()];
        all.extend_from_slice(args);
        host_exec(&all)
    }

    /// `ping -c 2 -W 2 TARGET` from inside the namespace.
    pub fn ping(&self, target: &str) -> Output {
        self.exec(&["ping", "-n", "-c", "2", "-W", "2", target])
    }

    /// Pids of the processes inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = host_exec(&["ip", "netns", "pids", &self.name]);
        text(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Waits up to `timeout` for something to listen on `port` (`proto` is
    /// "tcp" or "udp").
    pub fn wait_listening(&self, proto: &str, port: u16, timeout: Duration) -> bool {
        let flag = if proto == "udp" { "-Hlnu" } else { "-Hlnt" };
        let filter = format!("sport = :{port}");
        wait_for(timeout, || {
            let out = self.exec(&["ss", flag, &filter]);
            (out.status.success() && !text(&out.stdout).trim().is_empty()).then_some(())
        })
        .is_some()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let me = std::process::id() as i32;
        let daemons = DAEMON_PIDS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for _round in 0..3 {
            let pids: Vec<i32> = self
                .pids()
                .into_iter()
                .filter(|p| *p != me && !daemons.contains(p))
                .collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: plain signal to a process living in our own
                // uniquely named namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(50));
        }
        // `/etc/netns/NAME` (e.g. the resolv.conf weft writes on attach):
        // `ip netns del` leaves it, and the name is ours alone.
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
        for _attempt in 0..20 {
            let out = host_exec(&["ip", "netns", "del", &self.name]);
            if out.status.success() || !self.path().exists() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not delete namespace {}", self.name);
    }
}

/// `ip netns exec NS ARGS...` with [`CMD_TIMEOUT`].
pub fn ns_exec(ns: &Netns, args: &[&str]) -> Output {
    ns.exec(args)
}

/// A background process (server) killed with its process group on drop.
pub struct Bg {
    child: Child,
    status: Option<ExitStatus>,
    pub desc: String,
}

impl Bg {
    pub fn spawn(mut cmd: Command, desc: &str) -> Bg {
        cmd.stderr(Stdio::null()).process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
        Bg {
            child,
            status: None,
            desc: desc.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_for(timeout, || self.child.try_wait().ok().flatten());
        }
        self.status
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        // The group cannot be reused before the leader is reaped, which only
        // happens below or in `wait_timeout`.
        if self.status.is_none() {
            kill_group(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// The names in `ip netns list`.
pub fn netns_list() -> Vec<String> {
    let out = host_exec(&["ip", "netns", "list"]);
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `sha256sum FILE` → hex digest.
pub fn sha256(path: &Path) -> String {
    let out = run_timeout(
        Command::new("sha256sum").arg(path),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "sha256sum {}:\n{}",
        path.display(),
        describe(&out)
    );
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> [u8; 6] {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).unwrap_or_else(|_| panic!("bad MAC {s}")))
        .collect();
    parts.try_into().unwrap_or_else(|_| panic!("bad MAC {s}"))
}
