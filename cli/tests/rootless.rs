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
use std::sync::{Mutex, MutexGuard};
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

/// `weft daemon` as the test user, with EXTRA arguments; waits until it
/// answers.
fn start_daemon(w: &Rootless, extra: &[&str]) -> Proc {
    start_daemon_at(w, &w.socket, &w.log, &w.dir.join("state"), extra)
}

/// [`start_daemon`] with its own socket, log and state directory.
fn start_daemon_at(
    w: &Rootless,
    socket: &Path,
    log_path: &Path,
    state: &Path,
    extra: &[&str],
) -> Proc {
    let log = File::create(log_path).expect("create daemon log");
    chown(log_path, Some(w.user.uid), Some(w.user.gid)).expect("chown log");
    let mut args = vec![
        WEFT,
        "daemon",
        "--socket",
        socket.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut cmd = w.user.command(&w.dir, &args);
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    let mut daemon = Proc::spawn(cmd, "weft daemon");
    let ready = wait_for(Duration::from_secs(10), || {
        let status = [WEFT, "--socket", socket.to_str().unwrap(), "status"];
        let up = run_timeout(&mut w.user.command(&w.dir, &status), CMD_TIMEOUT)
            .status
            .success();
        (daemon.exited() || up).then_some(())
    });
    assert!(
        ready.is_some() && !daemon.exited(),
        "the unprivileged daemon did not start; log:\n{}",
        fs::read_to_string(log_path).unwrap_or_default()
    );
    daemon
}

fn attach_pid(w: &Rootless, network: &str, pid: u32) -> Endpoint {
    let out = w.weft_ok(&["attach", network, "--pid", &pid.to_string(), "--json"]);
    Endpoint::from_json(&serde_json::from_str(&out).expect("attach JSON"))
}

/// The tests here change host-wide settings (`/dev/net/tun`'s mode, the
/// ping group range): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn user_namespaces_disabled() -> bool {
    if fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|v| v.trim() == "0") {
        eprintln!(
            "skipping test rootless: user namespaces are disabled (user.max_user_namespaces = 0)"
        );
        return true;
    }
    false
}

#[test]
fn unprivileged_daemon_attaches_user_owned_namespaces() {
    if skip_without_root("rootless") {
        return;
    }
    let _serial = serial();
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
    let daemon = start_daemon(&w, &[]);

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

    // The TAPs' kernel counters, read through the rootless helper: each
    // endpoint sent frames weft read, and took frames weft wrote.
    let stats = w.weft_ok(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    for ep in [&ep_a, &ep_b] {
        let port = stats["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["endpoint"] == ep.name.as_str())
            .unwrap_or_else(|| panic!("{} in stats: {stats}", ep.name));
        let k = &port["kernel"]["counters"];
        for field in ["from_endpoint_packets", "to_endpoint_packets"] {
            assert!(
                k[field].as_u64().is_some_and(|n| n > 0),
                "{}: {field} in {port}",
                ep.name
            );
        }
    }

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

/// `net.ipv4.ping_group_range` set for the test, restored on drop.
struct PingRange(String);

const PING_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

impl PingRange {
    fn set(range: &str) -> PingRange {
        let old = fs::read_to_string(PING_RANGE).expect("read ping_group_range");
        let guard = PingRange(old.split_whitespace().collect::<Vec<_>>().join(" "));
        fs::write(PING_RANGE, range).expect("write ping_group_range");
        guard
    }
}

impl Drop for PingRange {
    fn drop(&mut self) {
        let _ = fs::write(PING_RANGE, &self.0);
    }
}

/// A veth pair on the host with an address on one end, so a client on
/// this machine can connect from an address that is not loopback (the
/// traffic stays on this machine); deleted on drop.
struct HostAddr {
    ifname: String,
}

impl HostAddr {
    fn new(ip: &str) -> HostAddr {
        let ifname = format!("{}v", name_prefix());
        let _ = host_exec(&["ip", "link", "del", &ifname]);
        let peer = format!("{ifname}p");
        let out = host_exec(&[
            "ip", "link", "add", &ifname, "type", "veth", "peer", "name", &peer,
        ]);
        assert!(out.status.success(), "ip link add: {}", describe(&out));
        let guard = HostAddr { ifname };
        for args in [
            vec![
                "ip",
                "addr",
                "add",
                &format!("{ip}/32"),
                "dev",
                &guard.ifname,
            ],
            vec!["ip", "link", "set", &guard.ifname, "up"],
            vec!["ip", "link", "set", &peer, "up"],
        ] {
            let out = host_exec(&args);
            assert!(out.status.success(), "{args:?}: {}", describe(&out));
        }
        guard
    }
}

impl Drop for HostAddr {
    fn drop(&mut self) {
        let _ = host_exec(&["ip", "link", "del", &self.ifname]);
    }
}

/// A UDP DNS upstream on the host's loopback answering every A question
/// with `answer` (RFC 1035 §4.1), for as long as the test runs.
fn fake_upstream(answer: [u8; 4]) -> u16 {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind fake upstream");
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            // The question ends after its name's zero label and 4 bytes
            // (whatever follows, such as an EDNS record, is left out).
            let Some(zero) = buf[12..n].iter().position(|&b| b == 0) else {
                continue;
            };
            let end = 12 + zero + 1 + 4;
            if end > n {
                continue;
            }
            // Header: same ID, QR + RD + RA, one question, one answer.
            let mut reply = buf[..end].to_vec();
            reply[2] = 0x81;
            reply[3] = 0x80;
            reply[6..8].copy_from_slice(&1u16.to_be_bytes());
            reply[8..12].fill(0);
            // Answer: a pointer to the question's name, A, IN, TTL 60.
            reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            reply.extend_from_slice(&answer);
            let _ = sock.send_to(&reply, from);
        }
    });
    port
}

/// A TCP server on the host's loopback: for each connection, reads until
/// end of stream and answers `got N`, or (when the client's first byte is
/// `d`) sends `download` bytes.
fn tcp_server(download: usize) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind TCP server");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut first = [0u8; 1];
                if conn.read_exact(&mut first).is_err() {
                    return;
                }
                if first[0] == b'd' {
                    let chunk = vec![7u8; 65536];
                    let mut left = download;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if conn.write_all(&chunk[..n]).is_err() {
                            return;
                        }
                        left -= n;
                    }
                    return;
                }
                let mut total = 1usize;
                let mut buf = vec![0u8; 65536];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
                let _ = write!(conn, "got {total}");
            });
        }
    });
    port
}

/// A UDP server on the host's loopback answering `pong` to anything.
fn udp_server() -> u16 {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP server");
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(b"pong", from);
        }
    });
    port
}

/// A free TCP and UDP port on the host, 1024 or above.
fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = l.local_addr().unwrap().port();
        if port >= 1024 && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn socket_uplink_serves_an_unprivileged_user() {
    if skip_without_root("rootless socket uplink") || user_namespaces_disabled() {
        return;
    }
    let _serial = serial();
    let user = TestUser::new();
    let _tun = TunMode::set(0o666);
    // No group may open ping sockets at first (the kernel's default).
    let ping_range = PingRange::set("1 0");
    let dir = TempDirAt::new(&unique_name("rootless-sockets"), user.uid, user.gid);
    let w = Rootless {
        socket: dir.0.join("weft.sock"),
        log: dir.0.join("daemon.log"),
        dir: dir.0.clone(),
        user,
    };
    let dns_port = fake_upstream([192, 0, 2, 99]);
    let upstream = format!("127.0.0.1:{dns_port}");
    let daemon = start_daemon(&w, &["--dns-upstream", &upstream]);
    let tcp_port = tcp_server(8_000_000).to_string();
    let udp_port = udp_server().to_string();

    let a = w.namespace();
    let net = subnet(INDEX, 2);
    w.weft_ok(&["network", "create", "n", "--subnet", &net]);
    let ep = attach_pid(&w, "n", a.pid());
    let gateway = addr(INDEX, 2, 1);

    // Publishing with no uplink reaches nothing: refused, saying what to do.
    let out = w.weft(&["publish", "n", &ep.name, "18080:8080"]);
    assert!(!out.status.success(), "publish with no uplink succeeded");
    let err = text(&out.stderr);
    assert!(err.contains("uplink set --sockets"), "{err}");

    let shown = w.weft_ok(&["uplink", "set", "--sockets"]);
    assert!(shown.contains("host sockets"), "{shown}");

    // TCP out: 5 MB up to a server on the host's loopback (10.0.2.2), 8 MB
    // down from it.
    let up = w.ns_exec(
        a.pid(),
        &[
            "sh",
            "-c",
            &format!("(printf u; head -c 4999999 /dev/zero) | nc -N 10.0.2.2 {tcp_port}"),
        ],
    );
    assert_eq!(
        text(&up.stdout).trim(),
        "got 5000000",
        "upload: {}",
        describe(&up)
    );
    let down = w.ns_exec(
        a.pid(),
        &[
            "sh",
            "-c",
            &format!("printf d | nc -N 10.0.2.2 {tcp_port} | wc -c"),
        ],
    );
    assert_eq!(
        text(&down.stdout).trim(),
        "8000000",
        "download: {}",
        describe(&down)
    );

    // UDP out.
    let out = w.ns_exec(
        a.pid(),
        &[
            "sh",
            "-c",
            &format!("echo ping | nc -u -w 2 10.0.2.2 {udp_port}"),
        ],
    );
    assert_eq!(text(&out.stdout).trim(), "pong", "UDP: {}", describe(&out));

    // Ping: refused while the ping group range leaves the user out...
    let out = w.ns_exec(a.pid(), &["ping", "-c", "1", "-W", "1", "10.0.2.2"]);
    assert!(
        !out.status.success(),
        "ping with no ping sockets allowed succeeded"
    );
    // ... and answered through a ping socket once it lets everyone in.
    drop(ping_range);
    let _ping_range = PingRange::set("0 2147483647");
    w.ping(a.pid(), "10.0.2.2");

    // DNS: a name only the upstream knows, forwarded from the daemon's
    // own host socket.
    let out = w.ns_exec(
        a.pid(),
        &[
            "dig",
            "+short",
            "+time=2",
            "+tries=1",
            &format!("@{gateway}"),
            "name.example",
        ],
    );
    assert_eq!(
        text(&out.stdout).trim(),
        "192.0.2.99",
        "dig: {}",
        describe(&out)
    );

    // A privileged host port is refused with what to do.
    let out = w.weft(&["publish", "n", &ep.name, "80:8080"]);
    assert!(
        !out.status.success(),
        "publishing port 80 unprivileged succeeded"
    );
    let err = text(&out.stderr);
    assert!(err.contains("privileged") && err.contains("1024"), "{err}");

    // A published port: the endpoint sees each client's real address, and
    // a client on the host's loopback as 10.0.2.2.
    let host_port = free_port();
    w.weft_ok(&["publish", "n", &ep.name, &format!("{host_port}:8080")]);
    let peers = w.dir.join("peers");
    let peers_file = File::create(&peers).expect("create peers file");
    let mut cmd = w.user.command(
        &w.dir,
        &[
            "nsenter",
            "--preserve-credentials",
            "-U",
            "-n",
            "-t",
            &a.pid().to_string(),
            "nc",
            "-lkv",
            "8080",
        ],
    );
    cmd.stdout(Stdio::null()).stderr(peers_file);
    let _listener = Proc::spawn(cmd, "nc -l in the namespace");
    let listening = wait_for(Duration::from_secs(5), || {
        let out = w.ns_exec(a.pid(), &["ss", "-Htln", "sport = :8080"]);
        (!text(&out.stdout).trim().is_empty()).then_some(())
    });
    assert!(listening.is_some(), "nc did not listen in the namespace");
    let client_ip = format!("198.18.{INDEX}.1");
    let _host_addr = HostAddr::new(&client_ip);
    for (from, seen) in [
        (client_ip.as_str(), client_ip.as_str()),
        ("127.0.0.1", "10.0.2.2"),
    ] {
        use std::io::Write;
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let bind: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
        sock.bind(&bind.into()).expect("bind the client");
        let to: std::net::SocketAddr = format!("{from}:{host_port}").parse().unwrap();
        sock.connect_timeout(&to.into(), Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
        let mut stream: std::net::TcpStream = sock.into();
        stream.write_all(b"hello\n").unwrap();
        let found = wait_for(Duration::from_secs(5), || {
            let log = fs::read_to_string(&peers).unwrap_or_default();
            log.contains(&format!("Connection received on {seen} "))
                .then_some(())
        });
        assert!(
            found.is_some(),
            "the endpoint did not see {seen} as the client: {}",
            fs::read_to_string(&peers).unwrap_or_default()
        );
    }

    drop(daemon);
    drop(a);
}

#[test]
fn two_unprivileged_daemons_join_by_the_overlay() {
    if skip_without_root("rootless overlay") || user_namespaces_disabled() {
        return;
    }
    let _serial = serial();
    let user = TestUser::new();
    let _tun = TunMode::set(0o666);
    let dir = TempDirAt::new(&unique_name("rootless-overlay"), user.uid, user.gid);
    let w = Rootless {
        socket: dir.0.join("h1.sock"),
        log: dir.0.join("h1.log"),
        dir: dir.0.clone(),
        user,
    };
    // Two "hosts" on two loopback addresses, VXLAN on a port no privilege
    // is needed for.
    let port = free_port();
    let (ip1, ip2) = (format!("127.0.{INDEX}.1"), format!("127.0.{INDEX}.2"));
    let h2_sock = w.dir.join("h2.sock");
    let listen1 = format!("{ip1}:{port}");
    let listen2 = format!("{ip2}:{port}");
    let d1 = start_daemon(&w, &["--vxlan-listen", &listen1]);
    let d2 = start_daemon_at(
        &w,
        &h2_sock,
        &w.dir.join("h2.log"),
        &w.dir.join("state2"),
        &["--vxlan-listen", &listen2],
    );
    let h2 = |args: &[&str]| {
        let mut all = vec![WEFT, "--socket", h2_sock.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = run_timeout(&mut w.user.command(&w.dir, &all), CMD_TIMEOUT);
        assert!(
            out.status.success(),
            "h2: weft {args:?} failed: {}\nlog:\n{}",
            describe(&out),
            fs::read_to_string(w.dir.join("h2.log")).unwrap_or_default()
        );
        text(&out.stdout)
    };
    let net = subnet(INDEX, 3);
    // Each host hands out its own part of the subnet.
    let base = net.trim_end_matches(".0/24");
    let (r1, r2) = (format!("{base}.64/26"), format!("{base}.128/26"));
    w.weft_ok(&[
        "network",
        "create",
        "ov",
        "--subnet",
        &net,
        "--vni",
        "4242",
        "--ip-range",
        &r1,
    ]);
    h2(&[
        "network",
        "create",
        "ov",
        "--subnet",
        &net,
        "--vni",
        "4242",
        "--ip-range",
        &r2,
    ]);
    w.weft_ok(&["peer", "add", &listen2]);
    h2(&["peer", "add", &listen1]);
    let a = w.namespace();
    let b = w.namespace();
    let ep_a = attach_pid(&w, "ov", a.pid());
    let out = h2(&["attach", "ov", "--pid", &b.pid().to_string(), "--json"]);
    let ep_b = Endpoint::from_json(&serde_json::from_str(&out).expect("attach JSON"));
    assert_ne!(
        ep_a.ip, ep_b.ip,
        "the two hosts handed out the same address"
    );
    w.ping(a.pid(), &ep_b.ip);
    w.ping(b.pid(), &ep_a.ip);
    drop((d1, d2));
    drop((a, b));
}

/// A one-request-at-a-time HTTP server on the host's loopback answering
/// every request with `body`.
fn http_server(body: &'static str) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind HTTP server");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// The user's rootless podman, as the test user with its own storage and
/// configuration under the test directory; `podman rm -f` of what it
/// started and its pause process killed on drop.
struct Podman<'w> {
    w: &'w Rootless,
    containers: Vec<String>,
}

impl Podman<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["podman"];
        all.extend_from_slice(args);
        run_timeout(
            &mut self.w.user.command(&self.w.dir, &all),
            Duration::from_secs(120),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman {args:?}: {}", describe(&out));
        text(&out.stdout)
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.run(&["rm", "-f", "-t", "0", c]);
        }
        // Rootless podman keeps a pause process holding its user namespace.
        let pause = self.w.dir.join("libpod/tmp/pause.pid");
        if let Some(pid) = fs::read_to_string(pause)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[test]
fn rootless_podman_container_attached_by_pid() {
    if skip_without_root("rootless podman") || user_namespaces_disabled() {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("skipping test rootless podman: podman is not installed");
        return;
    }
    let _serial = serial();
    let user = TestUser::new();
    // Rootless podman maps the container's users onto subordinate ids.
    let base = 400_000 + (std::process::id() % 1000) * 65_536;
    let range = format!("{base}-{}", base + 65_535);
    let out = run_timeout(
        Command::new("usermod")
            .args(["--add-subuids", &range, "--add-subgids", &range])
            .arg(&user.name),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "usermod: {}", describe(&out));
    let _tun = TunMode::set(0o666);
    let dir = TempDirAt::new(&unique_name("rootless-podman"), user.uid, user.gid);
    let w = Rootless {
        socket: dir.0.join("weft.sock"),
        log: dir.0.join("daemon.log"),
        dir: dir.0.clone(),
        user,
    };
    // HOME and XDG_RUNTIME_DIR are the test directory: podman's
    // configuration, storage (vfs) and runtime files live there.
    let conf = w.dir.join(".config/containers");
    fs::create_dir_all(&conf).unwrap();
    fs::write(
        conf.join("containers.conf"),
        "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();
    fs::write(conf.join("storage.conf"), "[storage]\ndriver = \"vfs\"\n").unwrap();
    // An image made here: a static busybox.
    let root = w.dir.join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy /bin/busybox");
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tar = w.dir.join("rootfs.tar");
    let out = run_timeout(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "tar: {}", describe(&out));
    let chown_all = run_timeout(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", w.user.uid, w.user.gid))
            .arg(&w.dir),
        CMD_TIMEOUT,
    );
    assert!(
        chown_all.status.success(),
        "chown: {}",
        describe(&chown_all)
    );
    let daemon = start_daemon(&w, &[]);
    let mut podman = Podman {
        w: &w,
        containers: Vec::new(),
    };
    podman.ok(&["import", tar.to_str().unwrap(), "weft-t-busybox"]);
    let name = format!("{}c", name_prefix());
    podman.containers.push(name.clone());
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--runtime",
        "/usr/sbin/runc",
        "--ulimit",
        "host",
        "weft-t-busybox",
        "/bin/sleep",
        "300",
    ]);
    let pid: u32 = podman
        .ok(&["inspect", "-f", "{{.State.Pid}}", &name])
        .trim()
        .parse()
        .expect("the container's PID");

    let net = subnet(INDEX, 4);
    w.weft_ok(&["network", "create", "pod", "--subnet", &net]);
    let ep = attach_pid(&w, "pod", pid);
    assert_eq!(ep.ip, addr(INDEX, 4, 2));
    w.weft_ok(&["uplink", "set", "--sockets"]);
    let port = http_server("from the host");
    let out = podman.run(&[
        "exec",
        &name,
        "/bin/busybox",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://10.0.2.2:{port}/"),
    ]);
    assert_eq!(
        text(&out.stdout),
        "from the host",
        "wget in the container: {}",
        describe(&out)
    );
    drop(podman);
    drop(daemon);
}

/// A TCP server on the host's loopback that writes everything one
/// connection sends into `into`, then closes; the thread ends with it.
fn sink_server(into: PathBuf) -> (u16, std::thread::JoinHandle<u64>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind TCP sink");
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut conn, _) = l.accept().expect("accept the upload");
        let mut file = File::create(&into).expect("create the sink file");
        std::io::copy(&mut conn, &mut file).expect("receive the upload")
    });
    (port, t)
}

fn sha256(path: &Path) -> String {
    let out = run_timeout(Command::new("sha256sum").arg(path), CMD_TIMEOUT);
    assert!(out.status.success(), "sha256sum: {}", describe(&out));
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn socket_uplink_carries_a_large_upload_intact_at_mtu_65520() {
    if skip_without_root("rootless socket uplink integrity") || user_namespaces_disabled() {
        return;
    }
    let _serial = serial();
    let user = TestUser::new();
    let _tun = TunMode::set(0o666);
    let dir = TempDirAt::new(&unique_name("rootless-sha"), user.uid, user.gid);
    let w = Rootless {
        socket: dir.0.join("weft.sock"),
        log: dir.0.join("daemon.log"),
        dir: dir.0.clone(),
        user,
    };
    // 48 MiB of random bytes the user may read: 64 KiB super-frames from
    // the namespace, each one's payload written to a host socket.
    let sent = w.dir.join("upload");
    {
        use std::io::{Read, Write};
        let mut rnd = File::open("/dev/urandom").expect("open /dev/urandom");
        let mut f = File::create(&sent).expect("create the upload");
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..48 {
            rnd.read_exact(&mut buf).expect("read /dev/urandom");
            f.write_all(&buf).expect("write the upload");
        }
    }
    fs::set_permissions(&sent, fs::Permissions::from_mode(0o644)).unwrap();
    let received = w.dir.join("received");
    let (port, sink) = sink_server(received.clone());
    let daemon = start_daemon(&w, &[]);
    let a = w.namespace();
    w.weft_ok(&[
        "network",
        "create",
        "n",
        "--subnet",
        &subnet(INDEX, 5),
        "--mtu",
        "65520",
    ]);
    attach_pid(&w, "n", a.pid());
    w.weft_ok(&["uplink", "set", "--sockets"]);
    // (Not /sys/class/net: that shows the host's namespace here.)
    let link = w.ns_exec(a.pid(), &["ip", "-o", "link", "show", "eth0"]);
    assert!(
        text(&link.stdout).contains(" mtu 65520 "),
        "{}",
        describe(&link)
    );

    let up = w.ns_exec(
        a.pid(),
        &[
            "sh",
            "-c",
            &format!("nc -N 10.0.2.2 {port} < {}", sent.display()),
        ],
    );
    assert!(up.status.success(), "upload: {}", describe(&up));
    let got = sink.join().expect("the sink thread");
    assert_eq!(got, 48 << 20, "bytes the host received");
    assert_eq!(
        sha256(&received),
        sha256(&sent),
        "the host received other bytes than the namespace sent"
    );

    // The socket uplink's own counters show in `weft stats`.
    let stats = w.weft_ok(&["stats"]);
    assert!(stats.contains("sockets_tcp_opened=1"), "{stats}");

    drop(daemon);
    drop(a);
}
