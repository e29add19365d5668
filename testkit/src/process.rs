//! Processes: signals, existence checks and the [`Bg`] guard.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::wait::wait_for;

/// Pids of daemons started by this process; a [`Netns`](crate::Netns)
/// never kills them even if one of their threads sits in its namespace.
static PROTECTED_PIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

pub(crate) fn protect(pid: i32) {
    PROTECTED_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(pid);
}

pub(crate) fn unprotect(pid: i32) {
    PROTECTED_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
}

pub(crate) fn protected() -> Vec<i32> {
    PROTECTED_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).expect("pid fits in pid_t"))
}

/// Sends `sig` to the process group led by `pid` (the children testkit
/// starts run in their own group), falling back to the process alone.
pub fn kill_group(pid: u32, sig: Signal) {
    if killpg(pid_of(pid), sig).is_err() {
        let _ = kill(pid_of(pid), sig);
    }
}

/// Whether a process with this pid exists (kill(pid, 0) does not fail
/// with ESRCH). A zombie still exists.
pub fn process_exists(pid: i32) -> bool {
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Whether child `pid` has exited, without reaping it (WNOWAIT leaves it
/// waitable so `Child::wait` still reaps it).
pub(crate) fn exited_unreaped(pid: u32) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(pid_of(pid)), flags) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        // ECHILD: already reaped (or not ours), so it is gone either way.
        Err(e) => e == Errno::ECHILD,
    }
}

/// A background process (server) in its own process group, killed with
/// the group on drop.
#[derive(Debug)]
pub struct Bg {
    child: Child,
    status: Option<ExitStatus>,
    pub desc: String,
}

impl Bg {
    /// Spawns `cmd` with stderr discarded, in its own process group.
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

    /// Sends `sig` to the process alone (not its group), unless it has
    /// been reaped already.
    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = kill(pid_of(self.child.id()), sig);
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        // The group cannot be reused before the leader is reaped, which only
        // happens below or in `wait_timeout`.
        if self.status.is_none() {
            kill_group(self.child.id(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}
