//! Process, namespace and interruption plumbing for `weft bench`.
//!
//! Every child runs in a process group of its own, so Ctrl-C reaches only
//! weft; SIGINT and SIGTERM set [`INTERRUPTED`] (signal-hook's flag),
//! every wait polls it, and the guards ([`Proc`], [`Guard`]) kill, delete
//! and remove what was created when they are dropped. No `unsafe`: signals
//! go through signal-hook's and nix's safe calls.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::error::{Context as _, Error, Result};
use super::Reporter;

/// Set by SIGINT/SIGTERM; checked between steps and while waiting.
static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// How long a stopped process gets between SIGTERM and SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound for short helper commands (ip, ovs-vsctl, ethtool).
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// [`Error::Interrupted`] once Ctrl-C or SIGTERM arrived.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Sets [`INTERRUPTED`] on SIGINT and SIGTERM, so cleanup runs instead of
/// the process dying mid-step. (A handler, not a blocked mask and a thread
/// in sigwait: children would inherit the mask and ignore the SIGTERM
/// [`Proc`] sends them.)
pub fn catch_interrupts() -> Result<()> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&INTERRUPTED))
            .context("cannot install a signal handler")?;
    }
    Ok(())
}

pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// `ip netns exec NS ARGS...`.
pub fn in_ns<S: AsRef<str>>(ns: &str, args: &[S]) -> Vec<String> {
    let mut v: Vec<String> = ["ip", "netns", "exec", ns]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(args.iter().map(|s| s.as_ref().to_string()));
    v
}

fn shown<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn command<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &Path)]) -> Result<Command> {
    let Some((tool, rest)) = args.split_first() else {
        return Err(Error::Tool("empty command".into()));
    };
    let mut cmd = Command::new(tool);
    cmd.args(rest).stdin(Stdio::null()).process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// What a finished command printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let mut bytes = Vec::new();
            let _ = p.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Runs `args` to completion, collecting its output, and kills it when
/// `timeout` passes or the run is interrupted.
pub fn run_bounded<S: AsRef<OsStr>>(
    args: &[S],
    env: &[(&str, &Path)],
    timeout: Duration,
) -> Result<Finished> {
    exec(args, env, timeout, true)
}

/// [`run_bounded`]; `interruptible` false is for cleanup, which must run
/// to the end after Ctrl-C.
fn exec<S: AsRef<OsStr>>(
    args: &[S],
    env: &[(&str, &Path)],
    timeout: Duration,
    interruptible: bool,
) -> Result<Finished> {
    if interruptible {
        check_interrupted()?;
    }
    let mut cmd = command(args, env)?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{}`", shown(args)))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let mut proc = Proc {
        child: Some(child),
        name: shown(args),
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        let child = proc.child.as_mut().expect("child is present until drop");
        if let Some(status) = child.try_wait().context("cannot wait for a child")? {
            proc.child = None;
            break status;
        }
        if interruptible {
            check_interrupted()?;
        }
        if Instant::now() > deadline {
            return Err(Error::CommandTimedOut {
                command: proc.name.clone(),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Runs a short helper command; a failure carries its stderr.
pub fn run_env<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &Path)]) -> Result<String> {
    checked(args, exec(args, env, TOOL_TIMEOUT, true)?)
}

/// [`run`] for cleanup: not cut short by Ctrl-C.
fn run_cleanup<S: AsRef<OsStr>>(args: &[S]) -> Result<String> {
    checked(args, exec(args, &[], TOOL_TIMEOUT, false)?)
}

fn checked<S: AsRef<OsStr>>(args: &[S], out: Finished) -> Result<String> {
    if !out.status.success() {
        return Err(Error::CommandFailed {
            command: shown(args),
            status: out.status,
            stderr: out.stderr.trim().to_string(),
        });
    }
    Ok(out.stdout)
}

pub fn run<S: AsRef<OsStr>>(args: &[S]) -> Result<String> {
    run_env(args, &[])
}

/// A background child in a process group of its own; SIGTERM, then
/// SIGKILL, to the whole group on drop.
pub struct Proc {
    child: Option<Child>,
    pub name: String,
}

impl Proc {
    /// Starts `args` with stdout and stderr appended to `log`. With
    /// `hold_stdin` its stdin is a pipe kept open until the drop (for
    /// programs that exit on EOF, like vde_switch).
    pub fn spawn<S: AsRef<OsStr>>(
        args: &[S],
        log: &Path,
        env: &[(&str, &Path)],
        hold_stdin: bool,
    ) -> Result<Proc> {
        check_interrupted()?;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let file2 = file.try_clone().context("cannot duplicate a log file")?;
        let mut cmd = command(args, env)?;
        if hold_stdin {
            cmd.stdin(Stdio::piped());
        }
        let child = cmd
            .stdout(file)
            .stderr(file2)
            .spawn()
            .with_context(|| format!("cannot start `{}`", shown(args)))?;
        Ok(Proc {
            child: Some(child),
            name: shown(args),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails when the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait().context("cannot wait for a child")? {
                self.child = None;
                return Err(Error::Exited {
                    command: self.name.clone(),
                    status,
                });
            }
        }
        Ok(())
    }
}

/// `sig` to the process group `pid` leads (ours: `process_group(0)`, not
/// yet reaped), or to the process alone if the group is gone.
fn signal_group(pid: u32, sig: Signal) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    if killpg(Pid::from_raw(pid), sig).is_err() {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        signal_group(child.id(), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    // Anything else left in its group goes too.
                    signal_group(child.id(), Signal::SIGKILL);
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => break,
            }
        }
        signal_group(child.id(), Signal::SIGKILL);
        let _ = child.wait();
    }
}

/// Everything one topology created: processes (stopped in reverse order),
/// then namespaces (any process still inside is killed first), then
/// directories. What cannot be removed is reported as a warning.
pub struct Guard<'r> {
    pub procs: Vec<Proc>,
    pub namespaces: Vec<String>,
    pub dirs: Vec<PathBuf>,
    report: &'r dyn Reporter,
}

impl<'r> Guard<'r> {
    pub fn new(report: &'r dyn Reporter) -> Guard<'r> {
        Guard {
            procs: Vec::new(),
            namespaces: Vec::new(),
            dirs: Vec::new(),
            report,
        }
    }

    /// `ip netns add NAME` with loopback up; recorded for deletion.
    pub fn add_netns(&mut self, name: &str) -> Result<()> {
        if Path::new("/var/run/netns").join(name).exists() {
            // Left over by an earlier run that had our pid and died hard.
            delete_netns(name, self.report);
        }
        run(&["ip", "netns", "add", name])?;
        self.namespaces.push(name.to_string());
        run(&["ip", "-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    pub fn add_dir(&mut self, dir: &Path) -> Result<()> {
        if dir.exists() {
            let _ = fs::remove_dir_all(dir);
        }
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        self.dirs.push(dir.to_path_buf());
        Ok(())
    }
}

fn delete_netns(name: &str, report: &dyn Reporter) {
    // Processes inside one of our namespaces were started by this run.
    if let Ok(pids) = run_cleanup(&["ip", "netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    for _ in 0..20 {
        if run_cleanup(&["ip", "netns", "del", name]).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    report.warning(&format!("cannot delete network namespace {name}"));
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
        for ns in self.namespaces.drain(..).rev() {
            delete_netns(&ns, self.report);
        }
        for dir in self.dirs.drain(..).rev() {
            if let Err(e) = fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.report
                        .warning(&format!("cannot remove {}: {e}", dir.display()));
                }
            }
        }
    }
}

/// Waits until `ready()` or `timeout`; `what` names the wait in errors.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        check_interrupted()?;
        if ready()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::WaitTimedOut {
                what: what.to_string(),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `lines` lines of a log file, indented, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|l| format!("\n    {l}"))
        .collect::<String>()
}
