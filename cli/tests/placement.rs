//! Where the datapath worker runs (`--worker-cpu follow`, the default),
//! against real endpoints in namespaces of the test's own: it moves next
//! to request/response traffic pinned to one CPU, follows it to another,
//! goes back to all its CPUs under a bulk TCP transfer, follows again
//! once the transfer is over, and leaves its CPUs alone once they are set
//! from outside. A flood of small frames from a pinned sender brings it
//! beside the sender, on one CPU and then on another.
//!
//! Observed from outside, as an operator would: the worker thread's
//! `Cpus_allowed_list` in `/proc`.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use common::*;

const ECHO_PORT: &str = "7007";
/// Longer than `weft_datapath::placement::SETTLE`: a move sooner than this
/// after the last one would count as chasing unpinned endpoints.
const SETTLE: Duration = Duration::from_millis(2_500);
const MOVE_TIMEOUT: Duration = Duration::from_secs(8);

/// One test at a time: a flood or a transfer of one test would take the
/// CPUs another test's endpoints and worker need.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn usable_cpus() -> Vec<usize> {
    parse_cpu_list(
        fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap(),
    )
}

/// `0-2,5` → `[0, 1, 2, 5]`.
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// The datapath worker's thread id in the daemon.
fn worker_tid(pid: u32) -> u32 {
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        if fs::read_to_string(task.join("comm"))
            .unwrap_or_default()
            .trim()
            == "weft-datapath"
        {
            return task.file_name().unwrap().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("no weft-datapath thread in daemon {pid}");
}

fn worker_cpus(pid: u32, tid: u32) -> Vec<usize> {
    let status = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    parse_cpu_list(
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap(),
    )
}

fn wait_for_cpus(daemon: &Daemon, tid: u32, want: &[usize], what: &str) {
    let pid = daemon.pid();
    let got = wait_for(MOVE_TIMEOUT, || {
        (worker_cpus(pid, tid) == want).then_some(())
    });
    assert!(
        got.is_some(),
        "{what}: the worker's CPUs stayed {:?}, expected {want:?}\n{}",
        worker_cpus(pid, tid),
        daemon.log_tail(20)
    );
}

/// A daemon with a client and a server attached to a network of their
/// own, on a machine with two CPUs `a` and `b` for the test to pin
/// endpoints to.
struct TwoCpuSetup {
    server: Endpoint,
    client_ns: Netns,
    server_ns: Netns,
    /// Every CPU this process may use; `a` and `b` are the first two.
    cpus: Vec<usize>,
    a: usize,
    b: usize,
    /// The datapath worker's thread.
    tid: u32,
    daemon: Daemon,
}

/// [`TwoCpuSetup`] with names from `tag` and the subnet `10.<octet>.…`,
/// or `None` (the test is skipped) where this process may use fewer than
/// two CPUs.
fn two_cpu_setup(tag: &str, octet: u8) -> Option<TwoCpuSetup> {
    let cpus = usable_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: needs two CPUs, this process may use {cpus:?}");
        return None;
    }
    let (a, b) = (cpus[0], cpus[1]);
    let daemon = Daemon::start();
    let tid = worker_tid(daemon.pid());
    let net = unique_name(tag);
    create_network(&daemon, &net, &subnet(0, octet), &[]);
    let client_ns = Netns::new(&format!("{tag}c"));
    let server_ns = Netns::new(&format!("{tag}s"));
    attach(&daemon, &net, &client_ns, &[]);
    let server = attach(&daemon, &net, &server_ns, &[]);
    Some(TwoCpuSetup {
        server,
        client_ns,
        server_ns,
        cpus,
        a,
        b,
        tid,
        daemon,
    })
}

/// A UDP echo server and a client ping-ponging with it as fast as it can,
/// both pinned to `cpu`: request/response traffic.
struct PingPong {
    _server: Bg,
    _client: Bg,
}

fn ping_pong(server_ns: &Netns, client_ns: &Netns, server_ip: &str, cpu: usize) -> PingPong {
    let cpu = cpu.to_string();
    let server_code = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0', {ECHO_PORT}))\n\
         while True:\n    d, a = s.recvfrom(2048)\n    s.sendto(d, a)\n"
    );
    let client_code = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(0.2)\n\
         s.connect(('{server_ip}', {ECHO_PORT}))\n\
         while True:\n    s.send(b'x' * 32)\n    try:\n        s.recv(2048)\n    except socket.timeout:\n        pass\n"
    );
    let spawn = |ns: &Netns, code: &str, desc: &str| {
        let mut cmd = std::process::Command::new("taskset");
        cmd.args([
            "-c", &cpu, "ip", "netns", "exec", &ns.name, "python3", "-c", code,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        Bg::spawn(cmd, desc)
    };
    let server = spawn(server_ns, &server_code, "UDP echo server");
    assert!(
        server_ns.wait_listening("udp", ECHO_PORT.parse().unwrap(), Duration::from_secs(5)),
        "the echo server never bound"
    );
    let client = spawn(client_ns, &client_code, "UDP echo client");
    PingPong {
        _server: server,
        _client: client,
    }
}

#[test]
fn the_worker_follows_pinned_request_response_and_goes_home_under_bulk() {
    require_root!();
    let _alone = one_at_a_time();
    let Some(setup) = two_cpu_setup("pl", 61) else {
        return;
    };
    let TwoCpuSetup {
        server,
        client_ns,
        server_ns,
        cpus,
        a,
        b,
        tid,
        daemon,
    } = setup;
    assert_eq!(
        worker_cpus(daemon.pid(), tid),
        cpus,
        "the worker starts on every CPU"
    );

    // Request/response pinned to CPU a: the worker joins it.
    let rr = ping_pong(&server_ns, &client_ns, &server.ip, a);
    wait_for_cpus(&daemon, tid, &[a], "ping-pong on CPU a");
    let status = weft_ok(&daemon, &["status"]);
    assert!(
        status.contains(&format!("next to its endpoints on CPU {a}")),
        "{status}"
    );
    std::thread::sleep(SETTLE);
    drop(rr);

    // The same traffic pinned to CPU b: the worker follows.
    let rr = ping_pong(&server_ns, &client_ns, &server.ip, b);
    wait_for_cpus(&daemon, tid, &[b], "ping-pong moved to CPU b");
    drop(rr);

    // A bulk transfer from CPU b: the worker gives the sender its CPU back.
    let _iperf = server_ns.spawn(&["iperf3", "-s", "-1"], Stdio::null(), Stdio::null());
    assert!(server_ns.wait_listening("tcp", 5201, Duration::from_secs(5)));
    let b_text = b.to_string();
    let mut client = std::process::Command::new("taskset");
    client
        .args([
            "-c",
            &b_text,
            "ip",
            "netns",
            "exec",
            &client_ns.name,
            "iperf3",
            "-c",
        ])
        .args([server.ip.as_str(), "-t", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut bulk = Bg::spawn(client, "iperf3 client");
    wait_for_cpus(&daemon, tid, &cpus, "bulk TCP from CPU b");
    // Four seconds of bulk took the counting program off the TAPs; light
    // traffic puts it back, and the worker follows again.
    assert!(
        bulk.wait_timeout(Duration::from_secs(10)).is_some(),
        "iperf3 did not finish"
    );
    let rr = ping_pong(&server_ns, &client_ns, &server.ip, a);
    wait_for_cpus(
        &daemon,
        tid,
        &[a],
        "ping-pong on CPU a after the bulk transfer",
    );
    drop(rr);

    // CPUs set from outside stay set: pinned to b by an operator, the
    // worker does not follow ping-pong on a.
    let out = host_exec(&["taskset", "-p", "-c", &b_text, &tid.to_string()]);
    assert!(out.status.success(), "taskset: {}", describe(&out));
    std::thread::sleep(Duration::from_secs(5));
    let _rr = ping_pong(&server_ns, &client_ns, &server.ip, a);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        worker_cpus(daemon.pid(), tid),
        vec![b],
        "{}",
        daemon.log_tail(20)
    );
    assert!(
        daemon.log_tail(50).contains("set from outside"),
        "{}",
        daemon.log_tail(50)
    );
}

/// A 64-byte UDP flood at full speed from `client_ns`, pinned to `cpu`,
/// to the iperf3 server on `port`.
fn flood(client_ns: &Netns, server_ip: &str, port: u16, cpu: usize, secs: u32) -> Bg {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &client_ns.name, "iperf3", "-c", server_ip])
        .args(["-p", &port.to_string()])
        .args(["-u", "-b", "0", "-l", "64", "-t", &secs.to_string()])
        .args(["-A", &cpu.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Bg::spawn(cmd, "iperf3 UDP flood")
}

#[test]
fn the_worker_forwards_a_flood_beside_its_pinned_sender() {
    require_root!();
    let _alone = one_at_a_time();
    let Some(setup) = two_cpu_setup("fl", 62) else {
        return;
    };
    let TwoCpuSetup {
        server,
        client_ns,
        server_ns,
        a,
        b,
        tid,
        daemon,
        ..
    } = setup;
    // A server for each flood: the first one's client is killed.
    let _servers: Vec<_> = [5211u16, 5212]
        .iter()
        .map(|port| {
            let port_text = port.to_string();
            let bg = server_ns.spawn(
                &["iperf3", "-s", "-p", &port_text],
                Stdio::null(),
                Stdio::null(),
            );
            assert!(server_ns.wait_listening("tcp", *port, Duration::from_secs(5)));
            bg
        })
        .collect();

    // A flood from CPU a: heavy traffic, yet the worker joins its sender.
    let sender = flood(&client_ns, &server.ip, 5211, a, 20);
    wait_for_cpus(&daemon, tid, &[a], "a flood sent from CPU a");
    let status = weft_ok(&daemon, &["status"]);
    assert!(
        status.contains(&format!("next to its endpoints on CPU {a}")),
        "{status}"
    );
    std::thread::sleep(SETTLE);
    // Beside its sender, the flood is received in the worker: the reader
    // keeps the other CPU to itself (weft_datapath::receive_thread).
    let status = json(&daemon, &["status"]);
    assert_eq!(status["worker_following_cpu"], a, "{status}");
    assert!(
        status.get("receive_threaded_ports").is_none(),
        "a receive thread beside the sender: {status}"
    );
    drop(sender);

    // The sender moves to CPU b, and the worker with it.
    let _sender = flood(&client_ns, &server.ip, 5212, b, 20);
    wait_for_cpus(&daemon, tid, &[b], "the flood's sender moved to CPU b");
}
