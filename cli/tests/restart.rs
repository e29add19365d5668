//! Restarts lose nothing: everything the API made comes back after
//! `kill -9` and after SIGTERM, the endpoints' TAPs stay in their
//! namespaces with the same names, addresses and MACs, a ping keeps going
//! across both (longest gap at most 2 s), a TCP transfer through the switch
//! survives a restart byte for byte, a stale socket is replaced, a second
//! daemon is refused, a corrupt state file is refused and left untouched,
//! and systemd hears READY and WATCHDOG.
//!
//! Subnet indices 70..=79 (uplink 192.168.70.0/24); see `common` for the
//! parallelism note.

mod common;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use common::*;

/// The longest a ping may go unanswered across a restart.
const MAX_GAP: Duration = Duration::from_secs(2);

/// Everything the API can list, with what changes across a restart (port
/// numbers, counters, free addresses) left out.
fn snapshot(d: &Daemon) -> Value {
    let mut endpoints = json(d, &["endpoints"]);
    for ep in endpoints.as_array_mut().expect("endpoints array") {
        ep.as_object_mut().unwrap().remove("port");
    }
    let mut uplink = json(d, &["uplink", "show"]);
    uplink.as_object_mut().unwrap().remove("port");
    serde_json::json!({
        "networks": json(d, &["network", "ls"]),
        "routes": json(d, &["route", "ls"]),
        "peers": json(d, &["peer", "ls"]),
        "uplink": uplink,
        "endpoints": endpoints,
        "publish": json(d, &["publish", "ls"]),
        "services": json(d, &["service", "ls"]),
    })
}

/// What the kernel says about an endpoint's interface: MAC and IPv4.
fn link_state(ns: &Netns, ifname: &str) -> (String, String) {
    let link: Value = serde_json::from_str(&ns.ip_ok(&["-j", "link", "show", "dev", ifname]))
        .expect("ip -j link");
    let addr: Value = serde_json::from_str(&ns.ip_ok(&["-j", "-4", "addr", "show", "dev", ifname]))
        .expect("ip -j addr");
    (
        link[0]["address"].as_str().unwrap_or_default().to_string(),
        addr[0]["addr_info"][0]["local"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn everything_saved_comes_back_after_kill_and_sigterm_and_reset_removes_it() {
    require_root!();
    // The daemon runs in "router" namespace r, whose veth up0 is the uplink.
    let r = Netns::new("r");
    let o = Netns::new("o");
    r.add_veth("up0", &o, "o0");
    r.ip_ok(&["link", "set", "up0", "up"]);
    o.ip_ok(&["addr", "add", "192.168.70.1/24", "dev", "o0"]);
    o.ip_ok(&["link", "set", "o0", "up"]);
    let mut d = Daemon::start_in(&r, &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    create_network(&d, "n1", &subnet(70, 1), &[]);
    create_network(&d, "n2", &subnet(70, 2), &["--mtu", "1400"]);
    weft_ok(&d, &["route", "allow", "n1", "n2"]);
    weft_ok(&d, &["peer", "add", "192.0.2.7"]);
    weft_ok(&d, &["peer", "add", "192.0.2.8", "--remote-csum"]);
    weft_ok(
        &d,
        &[
            "uplink",
            "set",
            "--interface",
            "up0",
            "--ip",
            "192.168.70.2/24",
            "--gateway",
            "192.168.70.1",
        ],
    );
    let ep_a = attach(
        &d,
        "n1",
        &a,
        &[
            "--publish",
            "8080:80",
            "--alias",
            "www",
            "--mac",
            "02:00:00:70:00:0a",
        ],
    );
    let ep_b = attach(&d, "n2", &b, &[]);
    weft_ok(
        &d,
        &[
            "service",
            "create",
            "svc",
            "--network",
            "n1",
            "--vip",
            &addr(70, 1, 200),
            "--port",
            "80",
            "--backend",
            &ep_a.name,
        ],
    );
    let before = snapshot(&d);
    let rco: Vec<&Value> = before["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["remote_csum"])
        .collect();
    assert_eq!(rco, [false, true], "peers: {}", before["peers"]);
    let links_before = (link_state(&a, &ep_a.ifname), link_state(&b, &ep_b.ifname));
    assert_eq!(links_before.0 .0, "02:00:00:70:00:0a");

    for signal in [Signal::SIGKILL, Signal::SIGTERM] {
        d.kill_keeping(signal);
        // The TAPs stay, addressed, while no daemon runs.
        assert_eq!(
            (link_state(&a, &ep_a.ifname), link_state(&b, &ep_b.ifname)),
            links_before,
            "the endpoints changed while the daemon was down ({signal})"
        );
        if signal == Signal::SIGKILL {
            assert!(d.socket.exists(), "kill -9 should leave the socket behind");
        }
        d.respawn(&[]);
        assert_eq!(snapshot(&d), before, "state after {signal} and a restart");
        assert_eq!(
            (link_state(&a, &ep_a.ifname), link_state(&b, &ep_b.ifname)),
            links_before,
            "the endpoints changed across the restart ({signal})"
        );
        // Forwarding and routing work on the restored state.
        let out = a.ping(&ep_b.ip);
        assert!(
            out.status.success(),
            "ping n1 -> n2 after {signal}:\n{}",
            describe(&out)
        );
        // The DNS alias came back too.
        let out = a.exec(&[
            "dig",
            "+short",
            "+time=2",
            "+tries=2",
            "www",
            &format!("@{}", addr(70, 1, 1)),
        ]);
        assert_eq!(text(&out.stdout).trim(), ep_a.ip, "{}", describe(&out));
    }

    let reset = json(&d, &["reset"]);
    assert_eq!(
        reset,
        serde_json::json!({"services": 1, "endpoints": 2, "uplink": true, "networks": 2, "peers": 2})
    );
    for (ns, ep) in [(&a, &ep_a), (&b, &ep_b)] {
        assert!(
            !ns.ip(&["link", "show", &ep.ifname]).status.success(),
            "{} still in {} after reset",
            ep.ifname,
            ns.name
        );
    }
    // And nothing comes back after another restart.
    d.kill_keeping(Signal::SIGTERM);
    d.respawn(&[]);
    assert_eq!(json(&d, &["network", "ls"]), serde_json::json!([]));
    assert_eq!(json(&d, &["endpoints"]), serde_json::json!([]));
    drop(d);
}

/// Reply times (`ping -D`) in seconds from a ping's output.
fn reply_times(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect()
}

#[test]
fn a_ping_keeps_going_across_kill_and_sigterm_restarts() {
    require_root!();
    let mut d = Daemon::start();
    let a = Netns::new("a");
    let b = Netns::new("b");
    create_network(&d, "n", &subnet(71, 1), &[]);
    let _ep_a = attach(&d, "n", &a, &[]);
    let ep_b = attach(&d, "n", &b, &[]);
    let dir = TempDir::new("ping");
    let log = dir.path().join("ping.txt");
    let file = File::create(&log).unwrap();
    let mut ping = a.spawn(
        &["ping", "-n", "-D", "-i", "0.05", "-W", "1", &ep_b.ip],
        Stdio::null(),
        Stdio::from(file),
    );
    thread::sleep(Duration::from_secs(1));
    let mut restarts = Vec::new();
    for signal in [Signal::SIGKILL, Signal::SIGTERM] {
        let start = Instant::now();
        d.kill_keeping(signal);
        d.respawn(&[]);
        restarts.push((signal, start.elapsed()));
        thread::sleep(Duration::from_secs(1));
    }
    ping.signal(Signal::SIGINT);
    ping.wait_timeout(Duration::from_secs(5));
    let output = fs::read_to_string(&log).unwrap();
    let times = reply_times(&output);
    assert!(times.len() > 20, "too few replies:\n{output}");
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "restarts (stop + start until `status` answers): {restarts:?}; {} replies, longest gap {:.3} s",
        times.len(),
        longest
    );
    assert!(
        longest <= MAX_GAP.as_secs_f64(),
        "the ping went {longest:.3} s without a reply (at most {MAX_GAP:?}):\n{output}"
    );
    // Both restarts happened while the ping ran: replies after the last.
    let last = times.last().unwrap() - times.first().unwrap();
    assert!(last > 2.5, "the ping stopped early:\n{output}");
}

#[test]
fn a_tcp_transfer_survives_kill_and_sigterm_restarts_byte_for_byte() {
    require_root!();
    let mut d = Daemon::start();
    let a = Netns::new("a");
    let b = Netns::new("b");
    create_network(&d, "n", &subnet(72, 1), &[]);
    let _ep_a = attach(&d, "n", &a, &[]);
    let ep_b = attach(&d, "n", &b, &[]);
    let dir = TempDir::new("tcp");
    let sent = dir.path().join("sent.bin");
    let received = dir.path().join("received.bin");
    // 32 MiB of pseudo-random bytes.
    {
        let mut f = File::create(&sent).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..32 {
            for byte in chunk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            f.write_all(&chunk).unwrap();
        }
    }
    let listen: SocketAddr = format!("{}:5072", ep_b.ip).parse().unwrap();
    let listener = b
        .run(move || TcpListener::bind(listen))
        .expect("listen in b");
    let out_path = received.clone();
    let receiver = thread::spawn(move || -> io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut out = File::create(&out_path)?;
        io::copy(&mut stream, &mut out)
    });
    let in_path = sent.clone();
    let sender = spawn_in_netns(a.path(), move || -> io::Result<Duration> {
        let start = Instant::now();
        let mut stream = TcpStream::connect_timeout(&listen, Duration::from_secs(5))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut input = File::open(&in_path)?;
        let mut buf = vec![0u8; 64 * 1024];
        // Paced at about 6 MiB/s, so the transfer spans both restarts.
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n])?;
            thread::sleep(Duration::from_millis(10));
        }
        stream.shutdown(std::net::Shutdown::Write)?;
        Ok(start.elapsed())
    });
    for signal in [Signal::SIGKILL, Signal::SIGTERM] {
        thread::sleep(Duration::from_millis(1500));
        assert!(
            !sender.is_finished(),
            "the transfer ended before the {signal} restart"
        );
        d.kill_keeping(signal);
        d.respawn(&[]);
    }
    let took = sender.join().unwrap().expect("sending across the restarts");
    let bytes = receiver
        .join()
        .unwrap()
        .expect("receiving across the restarts");
    eprintln!("32 MiB across a kill -9 and a SIGTERM restart in {took:?}");
    assert_eq!(bytes, 32 << 20);
    assert_eq!(sha256(&sent), sha256(&received), "the bytes differ");
}

#[test]
fn a_second_daemon_is_refused_and_a_stale_socket_replaced() {
    require_root!();
    let mut d = Daemon::start();
    let out = d.run_second(&[]);
    assert!(
        !out.status.success(),
        "a second daemon started:\n{}",
        describe(&out)
    );
    let err = text(&out.stderr);
    assert!(err.contains("another weft daemon is running"), "{err}");
    assert!(err.contains("stop it first"), "{err}");
    // The first one is untouched.
    weft_ok(&d, &["status"]);
    // A killed daemon leaves its socket: the next one replaces it.
    d.kill_keeping(Signal::SIGKILL);
    assert!(d.socket.exists());
    d.respawn(&[]);
    weft_ok(&d, &["status"]);
}

#[test]
fn a_corrupt_or_newer_state_file_is_refused_and_left_untouched() {
    require_root!();
    let mut d = Daemon::start();
    create_network(&d, "n", &subnet(73, 1), &[]);
    d.kill_keeping(Signal::SIGTERM);
    let state = d.state_dir.join("state.json");
    for (content, want) in [
        (
            &b"{\"networks\": [ truncated"[..],
            "is not a weft state file",
        ),
        (
            &b"{\"version\": 999, \"networks\": []}"[..],
            "version 999 state file, newer than this weft understands",
        ),
    ] {
        fs::write(&state, content).unwrap();
        let out = d.run_second(&[]);
        assert!(
            !out.status.success(),
            "the daemon started:\n{}",
            describe(&out)
        );
        let err = text(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert!(err.contains("left untouched"), "{err}");
        assert_eq!(
            fs::read(&state).unwrap(),
            content,
            "the state file was changed"
        );
        assert!(!d.socket.exists(), "the refused daemon left its socket");
    }
    fs::remove_file(&state).unwrap();
    d.respawn(&[]);
}

#[test]
fn systemd_hears_ready_and_watchdog() {
    require_root!();
    let mut d = Daemon::start();
    d.kill_keeping(Signal::SIGTERM);
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&path).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let path_text = path.display().to_string();
    d.respawn(&[("NOTIFY_SOCKET", &path_text), ("WATCHDOG_USEC", "400000")]);
    let mut buf = [0u8; 512];
    let mut seen = Vec::new();
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        let n = listener
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e}); got {seen:?}"));
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let ready = seen.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains(&format!("MAINPID={}", d.pid())), "{ready}");
    assert!(
        seen.iter().position(|m| m.contains("READY=1"))
            < seen.iter().position(|m| m.contains("WATCHDOG=1")),
        "WATCHDOG before READY: {seen:?}"
    );
}

#[test]
fn the_systemd_unit_is_valid_and_asks_for_notify_and_watchdog() {
    let unit_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contrib/systemd/weft.service"
    );
    let unit = fs::read_to_string(unit_path).expect("read the unit file");
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ExecStart=/usr/local/bin/weft daemon ",
    ] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }
    // systemd's own check, with ExecStart pointing at the binary under test.
    let dir = TempDir::new("unit");
    let copy = dir.path().join("weft.service");
    fs::write(&copy, unit.replace("/usr/local/bin/weft", WEFT)).unwrap();
    let out = run_timeout(
        std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy),
        CMD_TIMEOUT,
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify:\n{}",
        describe(&out)
    );
}

/// Sends `line` on `stream` and reads the echo back.
fn echo(stream: &mut TcpStream, line: &str) -> io::Result<String> {
    stream.write_all(line.as_bytes())?;
    let mut buf = vec![0u8; line.len()];
    stream.read_exact(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// An echo server on `listener`, one connection at a time, on a thread.
fn echo_server(listener: TcpListener) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

#[test]
fn nat_connections_are_rebuilt_after_a_restart() {
    require_root!();
    let r = Netns::new("r");
    let o = Netns::new("o");
    r.add_veth("up0", &o, "o0");
    r.ip_ok(&["link", "set", "up0", "up"]);
    o.ip_ok(&["addr", "add", "192.168.77.1/24", "dev", "o0"]);
    o.ip_ok(&["link", "set", "o0", "up"]);
    let mut d = Daemon::start_in(&r, &[]);
    let a = Netns::new("a");
    create_network(&d, "n", &subnet(77, 1), &[]);
    weft_ok(
        &d,
        &[
            "uplink",
            "set",
            "--interface",
            "up0",
            "--ip",
            "192.168.77.2/24",
        ],
    );
    let ep_a = attach(&d, "n", &a, &["--publish", "8077:7077"]);
    // An echo server outside, one on the endpoint (published).
    let outside: SocketAddr = "192.168.77.1:5077".parse().unwrap();
    echo_server(
        o.run(move || TcpListener::bind(outside))
            .expect("listen outside"),
    );
    let inside: SocketAddr = format!("{}:7077", ep_a.ip).parse().unwrap();
    echo_server(
        a.run(move || TcpListener::bind(inside))
            .expect("listen inside"),
    );
    let connect = |ns: &Netns, to: SocketAddr| {
        ns.run(move || {
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            Ok(s)
        })
        .expect("connect")
    };
    // Egress (SNAT) from the endpoint; in through the published port.
    let mut egress = connect(&a, outside);
    let published: SocketAddr = "192.168.77.2:8077".parse().unwrap();
    let mut ingress = connect(&o, published);
    assert_eq!(echo(&mut egress, "before-egress").unwrap(), "before-egress");
    assert_eq!(
        echo(&mut ingress, "before-ingress").unwrap(),
        "before-ingress"
    );
    let flows_before = json(&d, &["conntrack"]);
    d.kill_keeping(Signal::SIGKILL);
    d.respawn(&[]);
    assert_eq!(
        json(&d, &["conntrack"]),
        serde_json::json!([]),
        "not persisted"
    );
    // The first packet of each after the restart goes the original way:
    // the flow is picked up again with the same translation.
    assert_eq!(
        echo(&mut egress, "after-egress").expect("egress after the restart"),
        "after-egress"
    );
    assert_eq!(
        echo(&mut ingress, "after-ingress").expect("ingress after the restart"),
        "after-ingress"
    );
    let flows_after = json(&d, &["conntrack"]);
    let translated = |flows: &Value| {
        let mut rows: Vec<(String, String)> = flows
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["proto"] == "tcp")
            .map(|f| (f["original"].to_string(), f["reply"].to_string()))
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(translated(&flows_before).len(), 2, "{flows_before}");
    assert_eq!(
        translated(&flows_after),
        translated(&flows_before),
        "the rebuilt flows translate as before"
    );
}
