//! Rootless mode: an ordinary user's daemon attaches that user's own
//! namespaces (`unshare --user --map-root-user --net`), through the
//! rootless helper, and their endpoints ping each other and the gateway.
//!
//! Needs root to set the stage (a throwaway user, `/dev/net/tun` opened to
//! everyone for the test); everything weft does runs as that user. Every
//! resource is a guard: the user, the tun mode, the daemon, the namespaces'
//! processes and the temp dir go away on every exit path, panics included.
//!
//! Subnet index 96 (see `common` for the parallelism note).

mod common;

use std::fs::{self, File};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const INDEX: u8 = 96;
const TUN: &str = "/dev/net/tun";

/// A throwaway system user `weft-t<pid>-u`, deleted on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn new() -> TestUser {
        let name = format!("{}u", name_prefix());
        let _ = Command::new("userdel").arg(&name).output();
        let out = run_timeout(
            Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name),
            CMD_TIMEOUT,
        );
        assert!(out.status.success(), "useradd: {}", describe(&out));
        // The guard exists from here on.
        let mut user = TestUser {
            name,
            uid: 0,
            gid: 0,
        };
        let id = |flag: &str| -> u32 {
            let out = run_timeout(Command::new("id").arg(flag).arg(&user.name), CMD_TIMEOUT);
            assert!(out.status.success(), "id: {}", describe(&out));
            text(&out.stdout).trim().parse().expect("numeric id")
        };
        user.uid = id("-u");
        user.gid = id("-g");
        user
    }

    /// `setpriv` running ARGS as this user, with no capabilities left
    /// (changing every uid away from 0 clears them) and `XDG_RUNTIME_DIR`
    /// set to `runtime`.
    fn command(&self, runtime: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .args(args)
            .env("XDG_RUNTIME_DIR", runtime)
            .env("HOME", runtime)
            .env_remove("XDG_STATE_HOME")
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// `/dev/net/tun` at the test's mode (0666 as most distributions ship
/// it, or 0600 to see the refusal), its original mode restored on drop.
struct TunMode {
    original: u32,
}

impl TunMode {
    fn set(mode: u32) -> TunMode {
        let original = fs::metadata(TUN)
            .expect("stat /dev/net/tun")
            .permissions()
            .mode()
            & 0o7777;
        let guard = TunMode { original };
        guard.chmod(mode);
        guard
    }

    fn chmod(&self, mode: u32) {
        fs::set_permissions(TUN, fs::Permissions::from_mode(mode)).expect("chmod /dev/net/tun");
    }
}

impl Drop for TunMode {
    fn drop(&mut self) {
        let _ = fs::set_permissions(TUN, fs::Permissions::from_mode(self.original));
    }
}

/// A child in its own process group, killed with its group on drop
/// (SIGTERM first, then SIGKILL after 5 s).
struct Proc {
    child: Child,
    done: bool,
}

impl Proc {
    fn spawn(mut cmd: Command, desc: &str) -> Proc {
        let child = cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
        Proc { child, done: false }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        kill_group(self.pid(), Signal::SIGTERM);
        let child = &mut self.child;
        if wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten()).is_none() {
            kill_group(self.pid(), Signal::SIGKILL);
        }
        let _ = self.child.wait();
        self.done = true;
    }
}

/// The test's world: dropped in reverse order of declaration, so the
/// processes go before the directory and the user.
struct Rootless {
    user: TestUser,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Rootless {
    fn weft(&self, args: &[&str]) -> Output {
        let mut all = vec![WEFT, "--socket", self.socket.to_str().unwrap()];
        all.extend_from_slice(args);
        run_timeout(&mut self.user.command(&self.dir, &all), CMD_TIMEOUT)
    }

    fn weft_ok(&self, args: &[&str]) -> String {
        let out = self.weft(args);
        assert!(
            out.status.success(),
            "weft {args:?} failed: {}\ndaemon log:\n{}",
            describe(&out),
            fs::read_to_string(&self.log).unwrap_or_default()
        );
        text(&out.stdout)
    }

    /// `sleep 300` in a new user and network namespace of the user's own.
    fn namespace(&self) -> Proc {
        let mut cmd = self.user.command(
            &self.dir,
            &[
                "unshare",
                "--user",
                "--map-root-user",
                "--net",
                "sleep",
                "300",
            ],
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut p = Proc::spawn(cmd, "unshare");
        let pid = p.pid();
        let host = fs::read_link("/proc/self/ns/net").unwrap();
        let entered = wait_for(Duration::from_secs(5), || {
            let ns = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
            (ns != host).then_some(())
        });
        assert!(
            entered.is_some() && !p.exited(),
            "`unshare --user --map-root-user --net` did not start as {}",
            self.user.name
        );
        p
    }

    /// ARGS run as the user inside the user and network namespaces of
    /// `pid`.
    fn ns_exec(&self, pid: u32, args: &[&str]) -> Output {
        let pid = pid.to_string();
        let mut all = vec![
            "nsenter",
            "--preserve-credentials",
            "-U",
            "-n",
            "-t",
            pid.as_str(),
        ];
        all.extend_from_slice(args);
        run_timeout(&mut self.user.command(&self.dir, &all), CMD_TIMEOUT)
    }

    fn ping(&self, pid: u32, ip: &str) {
        let out = self.ns_exec(pid, &["ping", "-c", "1", "-W", "2", ip]);
        assert!(
            out.status.success(),
            "ping {ip} from the namespace of {pid}: {}",
            describe(&out)
        );
    }
}

fn attach_pid(w: &Rootless, network: &str, pid: u32) -> Endpoint {
    let out = w.weft_ok(&["attach", network, "--pid", &pid.to_string(), "--json"]);
    Endpoint::from_json(&serde_json::from_str(&out).expect("attach JSON"))
}

#[test]
fn unprivileged_daemon_attaches_user_owned_namespaces() {
    if skip_without_root("rootless") {
        return;
    }
    if fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|v| v.trim() == "0") {
        eprintln!(
            "skipping test rootless: user namespaces are disabled (user.max_user_namespaces = 0)"
        );
        return;
    }
    let user = TestUser::new();
    // Closed to the user first (as this host may ship it), to see the
    // refusal; opened to all once the daemon and namespaces are up.
    let tun = TunMode::set(0o600);
    // /tmp/weft-t…: the CI leftover check looks for daemons there.
    let dir = TempDirAt::new(&unique_name("rootless"), user.uid, user.gid);
    let w = Rootless {
        socket: dir.0.join("weft.sock"),
        log: dir.0.join("daemon.log"),
        dir: dir.0.clone(),
        user,
    };
    let state = w.dir.join("state");
    let log = File::create(&w.log).expect("create daemon log");
    chown(&w.log, Some(w.user.uid), Some(w.user.gid)).expect("chown log");
    let mut cmd = w.user.command(
        &w.dir,
        &[
            WEFT,
            "daemon",
            "--socket",
            w.socket.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    let mut daemon = Proc::spawn(cmd, "weft daemon");
    let ready = wait_for(Duration::from_secs(10), || {
        (daemon.exited() || w.weft(&["status"]).status.success()).then_some(())
    });
    assert!(
        ready.is_some() && !daemon.exited(),
        "the unprivileged daemon did not start; log:\n{}",
        fs::read_to_string(&w.log).unwrap_or_default()
    );

    let a = w.namespace();
    let b = w.namespace();
    let net = subnet(INDEX, 1);
    w.weft_ok(&["network", "create", "n", "--subnet", &net]);
    let out = w.weft(&["attach", "n", "--pid", &a.pid().to_string()]);
    assert!(
        !out.status.success(),
        "attach with /dev/net/tun at 0600 succeeded"
    );
    let err = text(&out.stderr);
    assert!(err.contains("chmod 0666 /dev/net/tun"), "{err}");
    tun.chmod(0o666);

    let ep_a = attach_pid(&w, "n", a.pid());
    let ep_b = attach_pid(&w, "n", b.pid());
    let gateway = addr(INDEX, 1, 1);

    w.ping(a.pid(), &ep_b.ip);
    w.ping(b.pid(), &ep_a.ip);
    w.ping(a.pid(), &gateway);
    w.ping(b.pid(), &gateway);

    // A namespace of another user (pid 1's, the host's) is refused with
    // what to do.
    let out = w.weft(&["attach", "n", "--pid", "1"]);
    assert!(!out.status.success(), "attaching pid 1 succeeded");
    let err = text(&out.stderr);
    assert!(err.contains("namespace this user created"), "{err}");

    for (p, ep) in [(&a, &ep_a), (&b, &ep_b)] {
        w.weft_ok(&["detach", "n", &ep.name]);
        let gone = wait_for(Duration::from_secs(3), || {
            let out = w.ns_exec(p.pid(), &["ip", "link", "show", "dev", &ep.ifname]);
            (!out.status.success()).then_some(())
        });
        assert!(
            gone.is_some(),
            "{} still in the namespace after detach",
            ep.ifname
        );
    }
    let list = w.weft_ok(&["endpoints", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).expect("endpoints JSON");
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");

    drop(daemon);
    drop((a, b));
}

/// A directory `/tmp/NAME` owned by `uid:gid`, removed on drop.
struct TempDirAt(PathBuf);

impl TempDirAt {
    fn new(name: &str, uid: u32, gid: u32) -> TempDirAt {
        let path = Path::new("/tmp").join(name);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        let dir = TempDirAt(path);
        chown(&dir.0, Some(uid), Some(gid)).expect("chown temp dir");
        dir
    }
}

impl Drop for TempDirAt {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
