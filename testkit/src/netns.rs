//! Network namespaces: the [`Netns`] guard and joining a namespace from a
//! thread.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{describe, host_exec, run_timeout, text, CMD_TIMEOUT};
use crate::names::unique_name;
use crate::process::{protected, Bg};
use crate::wait::wait_for;

/// A network namespace `weft-t<pid>-<counter>-<tag>` with `lo` up. Dropping
/// it kills every process inside it (except daemons a [`Daemon`] guards;
/// drop those first), removes `/etc/netns/NAME` and deletes it.
///
/// [`Daemon`]: crate::Daemon
#[derive(Debug)]
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
        // The guard exists from here on so every later failure cleans up.
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

    /// `ip -n NAME ARGS...` with [`CMD_TIMEOUT`].
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "-n", self.name.as_str()];
        all.extend_from_slice(args);
        host_exec(&all)
    }

    /// `ip -n NAME ARGS...`, which must succeed; returns its stdout.
    pub fn ip_ok(&self, args: &[&str]) -> String {
        let out = self.ip(args);
        assert!(
            out.status.success(),
            "ip -n {} {}:\n{}",
            self.name,
            args.join(" "),
            describe(&out)
        );
        text(&out.stdout)
    }

    /// A veth pair: `ifname` in this namespace, `peer_ifname` in `peer`,
    /// both down and without addresses. The pair goes with the namespaces.
    pub fn add_veth(&self, ifname: &str, peer: &Netns, peer_ifname: &str) {
        self.ip_ok(&[
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            peer_ifname,
            "netns",
            &peer.name,
        ]);
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

    /// Runs `f` on a fresh thread that joins this namespace first, and
    /// returns its result (the namespace error included).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        spawn_in_netns(self.path(), f)
            .join()
            .expect("namespace thread panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let me = std::process::id() as i32;
        let daemons = protected();
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
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
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

/// Moves the calling thread into the network namespace at `path` (setns
/// changes only the calling thread). Only for threads that end right after
/// their work in the namespace.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Runs `f` on a fresh thread that joins the namespace at `path` first,
/// without waiting for it.
pub fn spawn_in_netns<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> JoinHandle<io::Result<T>> {
    thread::spawn(move || {
        enter_netns(&path)?;
        f()
    })
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
