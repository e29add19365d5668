//! Hardening (issue 13): no client of the control socket, slow, idle,
//! unprivileged or malformed, can stall the daemon, act on another user's
//! namespace, or change state with a request the daemon did not fully
//! understand; and no endpoint can take service away from the others (a
//! jumbo frame, a namespace deleted without detach, a client holding DNS
//! connections open).
//!
//! Subnet indices 100..=107 (see `common` for the parallelism note).

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use serde_json::Value;

/// uid and gid of `nobody` on Debian.
const NOBODY: u32 = 65534;

/// Sends one raw request line and returns the daemon's parsed reply.
fn raw_request(socket: &Path, line: &[u8]) -> Value {
    let mut stream = UnixStream::connect(socket).expect("connect to the daemon");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The daemon may refuse (and close) before reading everything.
    let _ = stream.write_all(line);
    let _ = stream.write_all(b"\n");
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read the reply");
    serde_json::from_slice(&reply)
        .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", text(&reply)))
}

/// Opens `n` connections to `socket` without blocking (a connection the
/// listen queue has no room for is retried) and sends nothing on them.
fn idle_connections(path: &Path, n: usize, within: Duration) -> Vec<OwnedFd> {
    let addr = UnixAddr::new(path).unwrap();
    let deadline = Instant::now() + within;
    let mut held = Vec::with_capacity(n);
    while held.len() < n && Instant::now() < deadline {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => held.push(fd),
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("connect: {e}"),
        }
    }
    held
}

/// `weft network ls` against `d`, timed.
fn timed_ls(d: &Daemon) -> (Output, Duration) {
    let start = Instant::now();
    let mut cmd = Command::new(WEFT);
    cmd.arg("--socket")
        .arg(&d.socket)
        .args(["network", "ls", "--json"]);
    let out = run_timeout(&mut cmd, Duration::from_secs(10));
    (out, start.elapsed())
}

#[test]
fn idle_connections_do_not_stall_the_control_socket() {
    require_root!();
    // This process holds the 2,000 client ends.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < 8192 {
        let want = hard.max(8192);
        setrlimit(Resource::RLIMIT_NOFILE, want, want).expect("raise this test's RLIMIT_NOFILE");
    }
    let d = Daemon::start();
    // The limit systemd gives services.
    let pid = d.pid().to_string();
    let out = run_timeout(
        Command::new("prlimit").args(["--pid", &pid, "--nofile=1024:1024"]),
        CMD_TIMEOUT,
    );
    assert!(out.status.success(), "prlimit: {}", describe(&out));
    create_network(&d, "calm", &subnet(100, 1), &[]);

    let held = idle_connections(&d.socket, 2000, Duration::from_secs(20));
    assert_eq!(held.len(), 2000, "could not open 2,000 connections");
    for round in 0..5 {
        let (out, took) = timed_ls(&d);
        assert!(
            out.status.success(),
            "round {round}: `weft network ls` failed with 2,000 idle connections open:\n{}",
            describe(&out)
        );
        assert!(
            text(&out.stdout).contains("calm"),
            "round {round}: {}",
            describe(&out)
        );
        assert!(
            took < Duration::from_secs(1),
            "round {round}: `weft network ls` took {took:?} with 2,000 idle connections open"
        );
    }
    // The daemon still has descriptors for real work: a TAP in a namespace.
    let ns = Netns::new("a");
    let ep = attach(&d, "calm", &ns, &[]);
    assert_eq!(ep.ip, addr(100, 1, 2));
    drop(held);
    // Still alive and well once the flood is gone.
    weft_ok(&d, &["status"]);
}

#[test]
fn a_client_that_dribbles_its_request_is_cut_off() {
    require_root!();
    let d = Daemon::start();
    let mut stream = UnixStream::connect(&d.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let start = Instant::now();
    // One byte every 300 ms: each read is quick, the whole never comes.
    let mut cut = false;
    for b in br#"{"op":"network_list"          "#.iter().cycle().take(100) {
        if stream.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let took = start.elapsed();
    assert!(
        cut || !reply.is_empty(),
        "the daemon kept a dribbling client for {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "the daemon kept a dribbling client for {took:?}"
    );
    let reply: Value = serde_json::from_slice(&reply)
        .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", text(&reply)));
    assert_eq!(reply["ok"], false);
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no complete request within"), "{message}");
    weft_ok(&d, &["status"]);
}

#[test]
fn a_misspelt_field_is_refused_and_named() {
    require_root!();
    let d = Daemon::start();
    let subnet = subnet(101, 1);
    let line =
        format!(r#"{{"op":"network_create","name":"typo","subnet":"{subnet}","internl":true}}"#);
    let reply = raw_request(&d.socket, line.as_bytes());
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"]["kind"], "invalid_argument", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("`internl`"), "{message}");
    assert_eq!(
        json(&d, &["network", "ls"]),
        serde_json::json!([]),
        "a refused request created a network"
    );

    // A huge bad request: the reply quotes a short excerpt at most.
    let huge = format!(
        r#"{{"op":"network_create","name":"typo","subnet":"{}"}}"#,
        "9".repeat(1 << 20)
    );
    let reply = raw_request(&d.socket, huge.as_bytes());
    assert_eq!(reply["ok"], false);
    let reply_len = reply.to_string().len();
    assert!(
        reply_len < 2048,
        "a bad request was echoed: {reply_len} bytes"
    );
    let field = "x".repeat(30_000);
    let long =
        format!(r#"{{"op":"network_create","name":"typo","subnet":"{subnet}","{field}":1}}"#);
    let reply = raw_request(&d.socket, long.as_bytes());
    assert_eq!(reply["ok"], false);
    let reply_len = reply.to_string().len();
    assert!(
        reply_len < 2048,
        "a bad field was echoed: {reply_len} bytes"
    );
    assert_eq!(json(&d, &["network", "ls"]), serde_json::json!([]));
}

/// `weft --socket S ARGS` run as `nobody`.
fn weft_as_nobody(d: &Daemon, args: &[&str]) -> Output {
    let mut cmd = Command::new(WEFT);
    cmd.arg("--socket")
        .arg(&d.socket)
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir("/");
    run_timeout(&mut cmd, CMD_TIMEOUT)
}

/// Lets everyone reach the daemon's socket (its dir and the socket
/// itself), as a deployment that grants a group access would.
fn open_socket_to_everyone(d: &Daemon) {
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
}

#[test]
fn an_unprivileged_caller_is_refused_on_another_users_namespace() {
    require_root!();
    let d = Daemon::start();
    open_socket_to_everyone(&d);
    let root_ns = Netns::new("r");
    create_network(&d, "shared", &subnet(102, 1), &[]);
    let before = json(&d, &["endpoints"]);

    // Listing is allowed.
    let out = weft_as_nobody(&d, &["network", "ls"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(text(&out.stdout).contains("shared"), "{}", describe(&out));

    // Root's namespace, by name, by pid and by path: refused.
    let sleeper = root_ns.spawn(&["sleep", "60"], Stdio::null(), Stdio::null());
    let pid = sleeper.pid().to_string();
    let proc_path = format!("/proc/{pid}/ns/net");
    for args in [
        vec!["attach", "shared", "--netns", root_ns.name.as_str()],
        vec!["attach", "shared", "--pid", pid.as_str()],
        vec!["attach", "shared", "--netns", proc_path.as_str()],
    ] {
        let out = weft_as_nobody(&d, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        let err = text(&out.stderr);
        assert!(
            err.contains("belongs to uid 0") && err.contains("uid 65534"),
            "{args:?}: {err}"
        );
    }
    // Configuration is refused too, naming what was asked.
    let out = weft_as_nobody(
        &d,
        &["network", "create", "mine", "--subnet", &subnet(102, 2)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("`network_create` needs root"),
        "{}",
        describe(&out)
    );
    let out = weft_as_nobody(&d, &["network", "rm", "shared"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        json(&d, &["endpoints"]),
        before,
        "a refused attach changed state"
    );
    assert_eq!(json(&d, &["network", "ls"]).as_array().unwrap().len(), 1);
    let links = root_ns.ip_ok(&["-o", "link", "show"]);
    assert_eq!(
        links.lines().count(),
        1,
        "a refused attach made a link:\n{links}"
    );

    // Root may do all of it.
    let ep = attach(&d, "shared", &root_ns, &[]);
    assert_eq!(ep.ip, addr(102, 1, 2));

    // nobody's own namespace (a user namespace it made): allowed, if this
    // kernel lets ordinary users make user namespaces.
    let mut cmd = Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--net", "sleep", "60"])
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir("/")
        .stdout(Stdio::null());
    let own = Bg::spawn(cmd, "unshare as nobody");
    let own_pid = own.pid();
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let entered = wait_for(Duration::from_secs(5), || {
        let ns = std::fs::read_link(format!("/proc/{own_pid}/ns/net")).ok()?;
        (ns != host).then_some(())
    });
    if entered.is_none() {
        eprintln!(
            "note: ordinary users cannot make user namespaces here; own-namespace case skipped"
        );
        return;
    }
    let own_pid = own_pid.to_string();
    let out = weft_as_nobody(
        &d,
        &[
            "attach", "shared", "--pid", &own_pid, "--name", "mine", "--json",
        ],
    );
    assert!(
        out.status.success(),
        "nobody attaching its own namespace: {}",
        describe(&out)
    );
    // The daemon checked and attached through one descriptor it held
    // (/proc/DAEMON/fd/N); what it records is the path nobody named, and
    // the TAP is in that namespace.
    let mine: Value = serde_json::from_slice(&out.stdout).expect("attach --json");
    assert_eq!(mine["netns"], format!("/proc/{own_pid}/ns/net"), "{mine}");
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/proc/{own_pid}/ns/net")).args([
        "ip",
        "-o",
        "link",
        "show",
        mine["ifname"].as_str().unwrap(),
    ]);
    let out = run_timeout(&mut cmd, CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "no TAP in nobody's namespace: {}",
        describe(&out)
    );
    // ... but may not detach root's endpoint, only its own.
    let out = weft_as_nobody(&d, &["detach", "shared", &ep.name]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("belongs to uid 0"),
        "{}",
        describe(&out)
    );
    let out = weft_as_nobody(&d, &["detach", "shared", "mine"]);
    assert!(out.status.success(), "{}", describe(&out));
}

/// A port's drop count for `reason` in `weft stats`.
fn port_drops(d: &Daemon, endpoint: &str, reason: &str) -> u64 {
    let stats = json(d, &["stats"]);
    stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["endpoint"] == endpoint)
        .and_then(|p| p["drops"][reason].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_jumbo_frame_is_not_bridged_to_a_smaller_mtu() {
    require_root!();
    let d = Daemon::start();
    create_network(&d, "lan", &subnet(103, 1), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let ep_a = attach(&d, "lan", &a, &["--name", "a"]);
    let ep_b = attach(&d, "lan", &b, &["--name", "b"]);
    assert_eq!(ep_a.ip, addr(103, 1, 2));

    // TSO super-frames (whose segments fit) still cross the switch.
    let mut server = b.spawn(&["iperf3", "-s", "-1"], Stdio::null(), Stdio::null());
    assert!(b.wait_listening("tcp", 5201, Duration::from_secs(5)));
    let out = a.exec_timeout(
        &["iperf3", "-c", &ep_b.ip, "-t", "1", "-J"],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "iperf3 client:\n{}", describe(&out));
    assert!(server.wait_timeout(Duration::from_secs(10)).is_some());
    assert_eq!(port_drops(&d, "a", "exceeds_mtu"), 0);

    // An endpoint raises its own MTU past the network's and sends a jumbo
    // frame: it never reaches b, and it is counted on a's port.
    a.ip_ok(&["link", "set", &ep_a.ifname, "mtu", "9000"]);
    let out = a.exec(&[
        "ping", "-c", "2", "-W", "1", "-M", "do", "-s", "8000", &ep_b.ip,
    ]);
    assert!(
        !out.status.success(),
        "a 8028-byte packet crossed to an MTU-1500 endpoint:\n{}",
        describe(&out)
    );
    assert!(
        port_drops(&d, "a", "exceeds_mtu") >= 2,
        "stats: {}",
        json(&d, &["stats"])
    );
    // Packets that fit still go through.
    let out = a.exec(&[
        "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1472", &ep_b.ip,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
}

/// Descriptors the process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_namespace_deleted_without_detach_is_reaped_and_its_address_reused() {
    require_root!();
    let d = Daemon::start();
    create_network(&d, "pods", &subnet(104, 1), &[]);
    let keep = Netns::new("keep");
    attach(&d, "pods", &keep, &["--name", "keep"]);
    let fds_before = open_fds(d.pid());

    let doomed = Netns::new("doomed");
    let ep = attach(&d, "pods", &doomed, &["--name", "doomed"]);
    assert_eq!(ep.ip, addr(104, 1, 3));
    let resolv = Path::new("/etc/netns")
        .join(&doomed.name)
        .join("resolv.conf");
    assert!(resolv.exists(), "attach wrote {}", resolv.display());
    assert!(open_fds(d.pid()) > fds_before, "the TAP holds a descriptor");

    // The namespace goes away without `weft detach`.
    let out = host_exec(&["ip", "netns", "del", &doomed.name]);
    assert!(out.status.success(), "{}", describe(&out));
    let reaped = wait_for(Duration::from_secs(5), || {
        let eps = json(&d, &["endpoints"]);
        let names: Vec<&str> = eps
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        (!names.contains(&"doomed")).then_some(())
    });
    assert!(
        reaped.is_some(),
        "the endpoint of a deleted namespace stayed: {}",
        json(&d, &["endpoints"])
    );
    assert!(!resolv.exists(), "{} stayed", resolv.display());
    assert!(
        wait_for(Duration::from_secs(2), || (open_fds(d.pid()) <= fds_before)
            .then_some(()))
        .is_some(),
        "the daemon still holds {} descriptors, {} before the attach",
        open_fds(d.pid()),
        fds_before
    );
    // The live endpoint is untouched, and the address is handed out again.
    let eps = json(&d, &["endpoints"]);
    assert_eq!(eps.as_array().unwrap().len(), 1, "{eps}");
    assert_eq!(eps[0]["name"], "keep");
    let next = Netns::new("next");
    let again = attach(&d, "pods", &next, &["--name", "next"]);
    assert_eq!(
        again.ip,
        addr(104, 1, 3),
        "the reaped address is free again"
    );
}

#[test]
fn one_client_holding_dns_tcp_connections_does_not_starve_the_others() {
    require_root!();
    let d = Daemon::start();
    create_network(&d, "names", &subnet(105, 1), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let attacker = attach(&d, "names", &a, &["--name", "attacker"]);
    attach(&d, "names", &b, &["--name", "client"]);
    let gateway: std::net::Ipv4Addr = addr(105, 1, 1).parse().unwrap();

    // The attacker opens 80 connections to the gateway's port 53 and
    // holds them, sending nothing.
    let held = spawn_in_netns(a.path(), move || {
        let server = nix::sys::socket::SockaddrIn::from(std::net::SocketAddrV4::new(gateway, 53));
        let mut fds = Vec::new();
        for _ in 0..80 {
            let fd = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &server) {
                Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => fds.push(fd),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(fds)
    })
    .join()
    .expect("attacker thread")
    .expect("attacker sockets");
    assert_eq!(held.len(), 80);
    std::thread::sleep(Duration::from_millis(1500));

    // Every query of the other client still answers over TCP.
    let gw = gateway.to_string();
    for round in 0..5 {
        let out = b.exec_timeout(
            &[
                "dig",
                "+tcp",
                "+time=2",
                "+tries=1",
                "+short",
                &format!("@{gw}"),
                "attacker",
            ],
            Duration::from_secs(10),
        );
        assert!(
            out.status.success() && text(&out.stdout).trim() == attacker.ip,
            "round {round}: a TCP query failed while one client holds 80 connections:\n{}",
            describe(&out)
        );
    }
    drop(held);
}

/// `dig +tcp` from `ns` at `server` for `name`, one try of `secs` seconds.
fn dig_tcp(ns: &Netns, server: &str, name: &str, secs: u32) -> Output {
    ns.exec_timeout(
        &[
            "dig",
            "+tcp",
            &format!("+time={secs}"),
            "+tries=1",
            "+short",
            &format!("@{server}"),
            name,
        ],
        Duration::from_secs(u64::from(secs) + 8),
    )
}

/// `n` TCP connections from `ns` to `server` port 53, each established.
fn hold_dns_tcp(ns: &Netns, server: std::net::Ipv4Addr, n: usize) -> Vec<std::net::TcpStream> {
    let to = std::net::SocketAddr::from((server, 53));
    spawn_in_netns(ns.path(), move || {
        (0..n)
            .map(|_| std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .join()
    .expect("connecting thread")
    .expect("a held connection was not accepted")
}

/// Subnets 10.107.1.0/24 and 10.107.2.0/24. Eight clients of one network,
/// each at the per-client limit of 8, hold the 64 TCP connections that
/// network may have at its gateway: a further client of that network is
/// refused (its SYN dropped), while the other network's clients still ask
/// over TCP. The gateway closes the idle connections after its idle
/// timeout (3 s here, `--dns-tcp-idle-timeout`), and the refused client is
/// served again.
#[test]
fn one_network_holding_its_dns_tcp_limit_does_not_starve_another() {
    require_root!();
    let d = Daemon::start_with(&["--dns-tcp-idle-timeout", "3"]);
    create_network(&d, "crowd", &subnet(107, 1), &[]);
    create_network(&d, "calm", &subnet(107, 2), &[]);
    let hogs: Vec<Netns> = (0..8).map(|i| Netns::new(&format!("h{i}"))).collect();
    for (i, ns) in hogs.iter().enumerate() {
        attach(&d, "crowd", ns, &["--name", &format!("hog{i}")]);
    }
    let late_ns = Netns::new("late");
    let late = attach(&d, "crowd", &late_ns, &["--name", "late"]);
    let calm_ns = Netns::new("calm");
    let calm = attach(&d, "calm", &calm_ns, &["--name", "quiet"]);
    let (crowd_gw, calm_gw) = (addr(107, 1, 1), addr(107, 2, 1));

    // Each query works before the crowd arrives.
    let out = dig_tcp(&late_ns, &crowd_gw, "late", 2);
    assert_eq!(text(&out.stdout).trim(), late.ip, "{}", describe(&out));

    let gw: std::net::Ipv4Addr = crowd_gw.parse().unwrap();
    let started = Instant::now();
    let mut held: Vec<std::net::TcpStream> = Vec::new();
    for ns in &hogs {
        held.extend(hold_dns_tcp(ns, gw, 8));
    }
    assert_eq!(held.len(), 64);

    // The other network's client is served, over and over ...
    for round in 0..3 {
        let out = dig_tcp(&calm_ns, &calm_gw, "quiet", 2);
        assert!(
            out.status.success() && text(&out.stdout).trim() == calm.ip,
            "round {round}: a TCP query in another network failed while one network holds \
             its 64 connections:\n{}",
            describe(&out)
        );
    }
    // ... while the full network takes no one else (checked well inside
    // the idle timeout: the crowd's connections are still open).
    let out = dig_tcp(&late_ns, &crowd_gw, "late", 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "too slow to see the limit"
    );
    assert!(
        text(&out.stdout).trim() != late.ip,
        "a 65th connection to one network's gateway was accepted:\n{}",
        describe(&out)
    );

    // The gateway closes every idle connection (the client reads EOF)
    // after the idle timeout, not before the check above.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (i, conn) in held.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        conn.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        let mut buf = [0u8; 16];
        match conn.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("connection {i}: {n} unasked bytes"),
            Err(e) => panic!(
                "connection {i} still open {:?} after it was made: {e}",
                started.elapsed()
            ),
        }
    }
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "closed before the idle timeout"
    );
    drop(held);
    // The crowd is gone: the late client is served again.
    let served = wait_for(Duration::from_secs(10), || {
        let out = dig_tcp(&late_ns, &crowd_gw, "late", 1);
        (text(&out.stdout).trim() == late.ip).then_some(())
    });
    assert!(
        served.is_some(),
        "the full network's slots were not freed after its connections closed"
    );
}

/// A port's `tx_packets` (frames delivered to the endpoint) in `weft stats`.
fn port_tx(d: &Daemon, endpoint: &str) -> u64 {
    let stats = json(d, &["stats"]);
    stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["endpoint"] == endpoint)
        .and_then(|p| p["tx_packets"].as_u64())
        .unwrap_or(0)
}

/// A broadcast ARP request from `mac`/`ip` for `target`.
fn arp_broadcast(mac: [u8; 6], ip: std::net::Ipv4Addr, target: std::net::Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

#[test]
fn an_arp_storm_is_cut_to_the_port_limit_and_counted() {
    require_root!();
    let d = Daemon::start();
    create_network(&d, "storm", &subnet(106, 1), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let ep_a = attach(&d, "storm", &a, &["--name", "a"]);
    let ep_b = attach(&d, "storm", &b, &["--name", "b"]);
    let mac: Vec<u8> = ep_a
        .mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let mac: [u8; 6] = mac.try_into().unwrap();
    let ip: std::net::Ipv4Addr = ep_a.ip.parse().unwrap();
    // Who has .200? Nobody: every request is flooded to b.
    let frame = arp_broadcast(mac, ip, addr(106, 1, 200).parse().unwrap());
    let delivered_before = port_tx(&d, "b");

    const STORM: usize = 20_000;
    let ifname = ep_a.ifname.clone();
    let started = Instant::now();
    let sent = spawn_in_netns(a.path(), move || {
        let sock = weft_os::packet::PacketSocket::open(&ifname).map_err(std::io::Error::other)?;
        Ok((0..STORM).filter(|_| sock.send(&frame).is_ok()).count())
    })
    .join()
    .expect("storm thread")
    .expect("packet socket in a");
    let took = started.elapsed();
    assert!(sent > STORM / 2, "only {sent} frames sent");
    std::thread::sleep(Duration::from_millis(500));

    let dropped = port_drops(&d, "a", "storm_broadcast");
    let delivered = port_tx(&d, "b") - delivered_before;
    // The default limit: 1,000 a second with a burst of 1,000.
    let allowed = 1_000 + (took.as_secs_f64() * 1_000.0) as u64 + 600;
    eprintln!(
        "storm: {sent} sent in {took:?}, {dropped} dropped by storm control, {delivered} delivered to b"
    );
    assert!(
        delivered <= allowed,
        "{delivered} of {sent} broadcasts reached b (limit about {allowed})"
    );
    assert!(dropped > 0, "no storm_broadcast drops counted");
    // Ordinary ARP and traffic still work once the storm is over.
    let out = a.exec(&["ping", "-c", "1", "-W", "2", &ep_b.ip]);
    assert!(out.status.success(), "{}", describe(&out));
}

/// A number from a port's entry in `weft stats` (0 when absent).
fn port_stat(d: &Daemon, endpoint: &str, key: &str) -> u64 {
    let stats = json(d, &["stats"]);
    stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["endpoint"] == endpoint)
        .and_then(|p| p[key].as_u64())
        .unwrap_or(0)
}

/// The TX drops the kernel counted on `dev` in `ns`: for a TAP, frames
/// the endpoint sent that did not fit in the queue weft reads.
fn kernel_tx_dropped(ns: &Netns, dev: &str) -> u64 {
    let out = ns.ip_ok(&["-s", "-j", "link", "show", "dev", dev]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"]["tx"]["dropped"].as_u64().unwrap()
}

/// A port that storms is not read while its storm budget is spent (its
/// frames wait in, or are dropped from, its TAP's kernel queue, and both
/// are counted), and its unicast flows again once the storm stops.
#[test]
fn a_ports_unicast_flows_again_after_a_storm_on_it_stops() {
    require_root!();
    let d = Daemon::start();
    create_network(&d, "paused", &subnet(107, 1), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let ep_a = attach(&d, "paused", &a, &["--name", "a"]);
    let ep_b = attach(&d, "paused", &b, &["--name", "b"]);
    // Unicast works before the storm (and a and b know each other).
    let out = a.exec(&["ping", "-c", "1", "-W", "2", &ep_b.ip]);
    assert!(out.status.success(), "{}", describe(&out));

    let mac = parse_mac(&ep_a.mac);
    let ip: std::net::Ipv4Addr = ep_a.ip.parse().unwrap();
    let frame = arp_broadcast(mac, ip, addr(107, 1, 200).parse().unwrap());
    let rx_before = port_stat(&d, "a", "rx_packets");
    let kernel_before = kernel_tx_dropped(&a, &ep_a.ifname);

    // A storm of 300 ms, as fast as one thread sends.
    const STORM: Duration = Duration::from_millis(300);
    let ifname = ep_a.ifname.clone();
    let started = Instant::now();
    let sent = spawn_in_netns(a.path(), move || {
        let sock = weft_os::packet::PacketSocket::open(&ifname).map_err(std::io::Error::other)?;
        let mut sent = 0u64;
        let started = Instant::now();
        while started.elapsed() < STORM {
            for _ in 0..256 {
                sent += u64::from(sock.send(&frame).is_ok());
            }
        }
        Ok(sent)
    })
    .join()
    .expect("storm thread")
    .expect("packet socket in a");
    let took = started.elapsed();
    // Stale storm frames still queued are read (and dropped) a batch per
    // pause of at most 10 ms: give them time.
    std::thread::sleep(Duration::from_millis(500));

    let pauses = port_stat(&d, "a", "storm_pauses");
    let read = port_stat(&d, "a", "rx_packets") - rx_before;
    let cut = port_drops(&d, "a", "storm_broadcast");
    let kernel = kernel_tx_dropped(&a, &ep_a.ifname) - kernel_before;
    eprintln!(
        "storm: {sent} sent in {took:?}; weft read {read}, cut {cut} to the limit, paused {pauses} \
         times; the kernel dropped {kernel} from the TAP's queue"
    );
    assert!(pauses > 0, "the storming port was never paused");
    // Every storm frame is accounted for: read by weft or dropped by the
    // kernel while weft was not reading.
    assert!(
        read + kernel >= sent,
        "{sent} sent, {read} read, {kernel} dropped by the kernel"
    );
    // Weft read what the limit lets through (a burst of 1,000 and 1,000 a
    // second) plus at most two batches per pause, not the storm.
    let budget = 1_000 + (took.as_secs_f64() * 1_000.0) as u64 + 128 * (pauses + 1) + 100;
    assert!(
        read <= budget,
        "weft read {read} of {sent} storm frames (budget {budget})"
    );

    // The storm is over: the port is read again and its unicast flows.
    let out = a.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &ep_b.ip]);
    assert!(out.status.success(), "{}", describe(&out));
    let received = TempDir::new("paused");
    let output = received.path().join("got");
    let _server = b.spawn(
        &["nc", "-l", "5107"],
        Stdio::null(),
        Stdio::from(std::fs::File::create(&output).unwrap()),
    );
    assert!(b.wait_listening("tcp", 5107, Duration::from_secs(5)));
    let payload: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    let input = received.path().join("sent");
    std::fs::write(&input, &payload).unwrap();
    let mut client = a.command(&["nc", "-N", &ep_b.ip, "5107"]);
    client
        .stdin(Stdio::from(std::fs::File::open(&input).unwrap()))
        .stdout(Stdio::null());
    let mut client = Bg::spawn(client, "nc a -> b");
    let status = client.wait_timeout(Duration::from_secs(20));
    assert!(
        matches!(status, Some(s) if s.success()),
        "nc a -> b did not finish: {status:?}"
    );
    let intact = wait_for(Duration::from_secs(5), || {
        (std::fs::read(&output).ok()? == payload).then_some(())
    });
    assert!(intact.is_some(), "b did not receive a's 256 KiB intact");
    // And the port is no longer paused: unicast spends no storm budget.
    assert_eq!(port_stat(&d, "a", "storm_pauses"), pauses);
}
