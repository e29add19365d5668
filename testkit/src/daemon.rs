//! The [`Daemon`] guard: a `weft daemon` of a test's own.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{describe, run_timeout, text, CMD_TIMEOUT};
use crate::names::unique_name;
use crate::netns::Netns;
use crate::process::{kill_group, protect, unprotect};

/// A `weft daemon` of its own, started from the binary at `bin` (only the
/// weft-cli crate's integration tests know it: `env!("CARGO_BIN_EXE_weft")`),
/// with its temp dir `/tmp/weft-t<pid>-<n>-daemon/` holding the socket,
/// state dir and log. Dropping it stops the daemon ([`Daemon::stop`]:
/// `weft reset`, which removes every endpoint and network it made, then
/// SIGTERM, up to 5 s, then SIGKILL) and removes the dir; when the test is
/// panicking the tail of the daemon log is printed first. A daemon's TAPs
/// outlive it (a restart takes them back), hence the reset;
/// [`Daemon::kill_keeping`] and [`Daemon::respawn`] restart it without.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pid: u32,
    status: Option<ExitStatus>,
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    /// The namespace it runs in, and its extra arguments, for a respawn.
    netns: Option<String>,
    extra: Vec<String>,
}

impl Daemon {
    /// Starts `BIN daemon --socket S --state-dir D EXTRA...`, inside `ns`
    /// when given (through `ip netns exec`, which execs the binary, so the
    /// pid is the daemon's), and waits up to 10 s for `BIN --socket S
    /// status` to succeed. A daemon inside a namespace still creates its
    /// TAPs in whatever namespaces `attach` names. Drop the daemon before
    /// `ns`.
    pub fn spawn(bin: impl AsRef<Path>, ns: Option<&Netns>, extra: &[&str]) -> Daemon {
        let bin = bin.as_ref().to_path_buf();
        // Always /tmp (not $TMPDIR): the socket path must stay short, and CI
        // looks for leftover daemons under /tmp/weft-t.
        let dir = Path::new("/tmp").join(unique_name("daemon"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create daemon temp dir");
        // The guard exists from here on so every later failure cleans up.
        let mut daemon = Daemon {
            child: None,
            pid: 0,
            status: None,
            bin,
            socket: dir.join("weft.sock"),
            state_dir: dir.join("state"),
            log: dir.join("daemon.log"),
            dir,
            netns: ns.map(|ns| ns.name.clone()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        fs::create_dir_all(&daemon.state_dir).expect("create state dir");
        daemon.launch(&[]);
        daemon.wait_ready(Duration::from_secs(10));
        daemon
    }

    /// The daemon command line, with `env` added to its environment.
    fn command(&self, env: &[(&str, &str)]) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(&self.bin);
                cmd
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("daemon")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.extra)
            .env("RUST_BACKTRACE", "1")
            .envs(env.iter().copied());
        cmd
    }

    /// Starts the daemon process (appending to the log), not waiting.
    fn launch(&mut self, env: &[(&str, &str)]) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        let child = self
            .command(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {} daemon: {e}", self.bin.display()));
        self.pid = child.id();
        protect(self.pid as i32);
        self.child = Some(child);
        self.status = None;
    }

    /// Starts the daemon again on the same socket and state dir after
    /// [`Daemon::kill_keeping`], with `env` added, and waits up to 10 s for
    /// it to answer `status`.
    pub fn respawn(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "respawn of a running daemon");
        self.launch(env);
        self.wait_ready(Duration::from_secs(10));
    }

    /// Runs a second daemon with this one's socket and state dir (and
    /// `extra` arguments) to completion: what a mistaken second start does.
    pub fn run_second(&self, extra: &[&str]) -> Output {
        let mut cmd = self.command(&[]);
        cmd.args(extra);
        run_timeout(&mut cmd, CMD_TIMEOUT)
    }

    /// Sends `signal` to the daemon and waits up to 5 s for it to exit
    /// (then SIGKILL), without `weft reset`: what it made stays for
    /// [`Daemon::respawn`]. Returns its exit status.
    pub fn kill_keeping(&mut self, signal: Signal) -> Option<ExitStatus> {
        self.signal_and_wait(signal)
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
                    "daemon exited during startup with {status}; log:\n{}",
                    self.log_tail(40)
                );
            }
            let out = self.cli(&["status"]);
            if out.status.success() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "daemon not ready after {timeout:?}; last `status`:\n{}",
                    describe(&out)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `BIN --socket <this daemon's socket> ARGS...` with
    /// [`CMD_TIMEOUT`].
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--socket").arg(&self.socket).args(args);
        run_timeout(&mut cmd, CMD_TIMEOUT)
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

    /// Stops the daemon: `weft reset` (so no TAP, resolv.conf or saved
    /// object outlives the test), then SIGTERM, up to 5 s, then SIGKILL.
    /// Returns its exit status (also on later calls).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.child.is_some() {
            let out = self.cli(&["reset"]);
            if !out.status.success() {
                eprintln!("warning: `weft reset` failed:\n{}", describe(&out));
            }
        }
        self.signal_and_wait(Signal::SIGTERM)
    }

    fn signal_and_wait(&mut self, signal: Signal) -> Option<ExitStatus> {
        if let Some(mut child) = self.child.take() {
            // Our own child, not reaped yet, so its pid cannot have been
            // reused.
            let _ = kill(Pid::from_raw(child.id() as i32), signal);
            let deadline = Instant::now() + Duration::from_secs(5);
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("daemon {} ignored {signal} for 5 s, killing it", child.id());
                        kill_group(child.id(), Signal::SIGKILL);
                        break child.wait().ok();
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                    Err(_) => {
                        kill_group(child.id(), Signal::SIGKILL);
                        break child.wait().ok();
                    }
                }
            };
            unprotect(self.pid as i32);
            self.status = status;
        }
        self.status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "---- daemon log tail ({}) ----\n{}\n---- end of daemon log ----",
                self.log.display(),
                self.log_tail(60)
            );
        }
        let was_running = self.child.is_some();
        let status = self.stop();
        if was_running && !matches!(status, Some(s) if s.success()) {
            eprintln!(
                "warning: daemon did not exit cleanly on SIGTERM: {status:?}; log tail:\n{}",
                self.log_tail(20)
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
