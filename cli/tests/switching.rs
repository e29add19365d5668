//! The single-host switch on real namespaces: L2 switching, the gateway,
//! routing between networks, bulk TCP, MAC learning and aging.
//!
//! Subnet indices 10..=19 (see `common` for the parallelism note).

mod common;

use std::fs::File;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;

use common::*;

fn assert_ping_ok(from: &Netns, target: &str) -> String {
    let out = from.ping(target);
    assert!(
        out.status.success(),
        "ping {target} from {} failed:\n{}",
        from.name,
        describe(&out)
    );
    text(&out.stdout)
}

fn assert_ping_fails(from: &Netns, target: &str) {
    let out = from.ping(target);
    assert!(
        !out.status.success(),
        "ping {target} from {} should fail but succeeded:\n{}",
        from.name,
        describe(&out)
    );
}

/// Every reply line of a ping output carries `ttl=<ttl>`.
fn assert_reply_ttl(ping_stdout: &str, ttl: u32) {
    let replies: Vec<&str> = ping_stdout
        .lines()
        .filter(|l| l.contains("bytes from"))
        .collect();
    assert!(!replies.is_empty(), "no replies in:\n{ping_stdout}");
    let want = format!("ttl={ttl} ");
    for line in replies {
        assert!(
            line.contains(&want),
            "expected {want:?} in reply {line:?} (full output:\n{ping_stdout})"
        );
    }
}

#[test]
fn three_namespaces_on_one_network_ping_each_other_and_the_gateway() {
    require_root!();
    const I: u8 = 10;
    let d = Daemon::start();
    create_network(&d, "lan", &subnet(I, 1), &[]);
    let nss: Vec<Netns> = ["a", "b", "c"].iter().map(|t| Netns::new(t)).collect();
    let eps: Vec<Endpoint> = nss.iter().map(|ns| attach(&d, "lan", ns, &[])).collect();

    // Addresses are handed out in order after the gateway.
    for (i, ep) in eps.iter().enumerate() {
        assert_eq!(ep.ip, addr(I, 1, 2 + i as u8), "endpoint {i}: {:?}", ep.raw);
        assert_eq!(ep.network, "lan");
    }
    let net = json(&d, &["network", "inspect", "lan"]);
    assert_eq!(net["gateway"], addr(I, 1, 1), "{net}");
    assert_eq!(net["endpoints"], 3, "{net}");

    let gateway = addr(I, 1, 1);
    for (i, from) in nss.iter().enumerate() {
        let out = assert_ping_ok(from, &gateway);
        assert_reply_ttl(&out, 64);
        for (j, to) in eps.iter().enumerate() {
            if i != j {
                let out = assert_ping_ok(from, &to.ip);
                // Same network: switched, not routed.
                assert_reply_ttl(&out, 64);
            }
        }
    }

    // The default route via the gateway is installed.
    let out = nss[0].ip(&["route", "show", "default"]);
    assert!(
        text(&out.stdout).contains(&format!("via {gateway}")),
        "default route in {}:\n{}",
        nss[0].name,
        describe(&out)
    );
}

#[test]
fn routing_between_networks_is_opt_in_and_decrements_ttl() {
    require_root!();
    const I: u8 = 11;
    let d = Daemon::start();
    create_network(&d, "red", &subnet(I, 1), &[]);
    create_network(&d, "blue", &subnet(I, 2), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let c = Netns::new("c");
    let x = Netns::new("x");
    let ep_a = attach(&d, "red", &a, &[]);
    let ep_b = attach(&d, "red", &b, &[]);
    let _ep_c = attach(&d, "red", &c, &[]);
    let ep_x = attach(&d, "blue", &x, &[]);
    assert_eq!(ep_x.ip, addr(I, 2, 2));

    // Sanity: both sides work on their own network.
    assert_ping_ok(&a, &ep_b.ip);
    assert_ping_ok(&x, &addr(I, 2, 1));

    // Not routed by default.
    assert_ping_fails(&x, &ep_a.ip);
    assert_ping_fails(&a, &ep_x.ip);
    let routes = json(&d, &["route", "ls"]);
    assert_eq!(routes, serde_json::json!([]), "routes before allow");

    weft_ok(&d, &["route", "allow", "red", "blue"]);
    let routes = json(&d, &["route", "ls"]);
    let listed = routes.as_array().expect("route ls is a list");
    assert_eq!(listed.len(), 1, "{routes}");
    let mut pair = [
        listed[0]["a"].as_str().unwrap_or_default(),
        listed[0]["b"].as_str().unwrap_or_default(),
    ];
    pair.sort();
    assert_eq!(pair, ["blue", "red"], "{routes}");

    // Routed through the gateway: one hop, so the reply (sent with TTL 64
    // by Linux) arrives with TTL 63. Both directions.
    let out = assert_ping_ok(&x, &ep_a.ip);
    assert_reply_ttl(&out, 63);
    let out = assert_ping_ok(&a, &ep_x.ip);
    assert_reply_ttl(&out, 63);
    let out = assert_ping_ok(&b, &ep_x.ip);
    assert_reply_ttl(&out, 63);

    weft_ok(&d, &["route", "deny", "red", "blue"]);
    assert_eq!(json(&d, &["route", "ls"]), serde_json::json!([]));
    assert_ping_fails(&x, &ep_a.ip);
    assert_ping_fails(&a, &ep_x.ip);
    // Their own networks still work.
    assert_ping_ok(&a, &ep_b.ip);
    assert_ping_ok(&x, &addr(I, 2, 1));
}

#[test]
fn nc_transfers_100_mib_intact() {
    require_root!();
    const I: u8 = 12;
    const PORT: u16 = 5012;
    let d = Daemon::start();
    create_network(&d, "bulk", &subnet(I, 1), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let ep_a = attach(&d, "bulk", &a, &[]);
    let ep_b = attach(&d, "bulk", &b, &[]);
    assert_ping_ok(&a, &ep_b.ip);

    let input = d.dir.join("in.bin");
    let output = d.dir.join("out.bin");
    let out = run_timeout(
        std::process::Command::new("sh").arg("-c").arg(format!(
            "head -c 104857600 /dev/urandom > {}",
            input.display()
        )),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "making the input:\n{}",
        describe(&out)
    );
    assert_eq!(std::fs::metadata(&input).unwrap().len(), 104_857_600);

    let port = PORT.to_string();
    let mut server = b.spawn(
        &["nc", "-l", &port],
        Stdio::null(),
        Stdio::from(File::create(&output).unwrap()),
    );
    assert!(
        b.wait_listening("tcp", PORT, Duration::from_secs(5)),
        "nc -l {PORT} not listening in {}",
        b.name
    );
    let mut client = a.command(&["nc", "-N", &ep_b.ip, &port]);
    client
        .stdin(Stdio::from(File::open(&input).unwrap()))
        .stdout(Stdio::null());
    let mut client = Bg::spawn(client, "nc client");
    let out = client.wait_timeout(Duration::from_secs(120));
    assert!(
        matches!(out, Some(s) if s.success()),
        "nc client did not finish successfully within 120 s: {out:?}"
    );
    let server_status = server.wait_timeout(Duration::from_secs(30));
    assert!(
        server_status.is_some(),
        "nc server did not exit after the client closed (client: {out:?})"
    );
    let received = std::fs::metadata(&output).unwrap().len();
    assert_eq!(received, 104_857_600, "bytes received");
    assert_eq!(
        sha256(&input),
        sha256(&output),
        "sha256 of sent vs received"
    );

    // The TAPs carry TSO super-frames (IFF_VNET_HDR + TUNSETOFFLOAD), and
    // weft forwards them whole: the sender's port took frames far larger
    // than the 1514-byte MTU frame, and the receiver's port got the same.
    let stats = json(&d, &["stats"]);
    let port_of = |n: u64| {
        stats["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"].as_u64() == Some(n))
            .cloned()
            .unwrap_or_else(|| panic!("port {n} in stats: {stats}"))
    };
    let (pa, pb) = (port_of(ep_a.port), port_of(ep_b.port));
    let average = |bytes: &serde_json::Value, packets: &serde_json::Value| {
        bytes.as_u64().unwrap() as f64 / packets.as_u64().unwrap().max(1) as f64
    };
    let sent = average(&pa["rx_bytes"], &pa["rx_packets"]);
    let delivered = average(&pb["tx_bytes"], &pb["tx_packets"]);
    assert!(
        sent > 3000.0 && delivered > 3000.0,
        "GSO super-frames should cross the switch whole: average frame {sent:.0} bytes in, {delivered:.0} out"
    );
}

#[test]
fn iperf3_tcp_runs_for_5_seconds() {
    require_root!();
    const I: u8 = 13;
    let d = Daemon::start();
    create_network(&d, "perf", &subnet(I, 1), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let _ep_a = attach(&d, "perf", &a, &[]);
    let ep_b = attach(&d, "perf", &b, &[]);
    assert_ping_ok(&a, &ep_b.ip);

    let mut server = b.spawn(&["iperf3", "-s", "-1"], Stdio::null(), Stdio::null());
    assert!(
        b.wait_listening("tcp", 5201, Duration::from_secs(5)),
        "iperf3 -s not listening in {}",
        b.name
    );
    let out = a.exec_timeout(
        &["iperf3", "-c", &ep_b.ip, "-t", "5", "-J"],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "iperf3 client:\n{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 -J output is not JSON ({e}):\n{}", describe(&out)));
    assert!(
        report.get("error").is_none(),
        "iperf3 reported an error: {}",
        report["error"]
    );
    for key in ["sum_sent", "sum_received"] {
        let bps = report["end"][key]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        assert!(bps > 0.0, "end.{key}.bits_per_second = {bps}");
        eprintln!("iperf3 {key}: {:.1} Mbit/s", bps / 1e6);
    }
    assert!(
        server.wait_timeout(Duration::from_secs(10)).is_some(),
        "iperf3 -s -1 did not exit after one test"
    );
}

/// The `fdb --json` entries (optionally of one network).
fn fdb(d: &Daemon, network: Option<&str>) -> Vec<serde_json::Value> {
    let mut args = vec!["fdb"];
    args.extend(network);
    json(d, &args)
        .as_array()
        .unwrap_or_else(|| panic!("fdb --json is not a list"))
        .clone()
}

fn fdb_entry(entries: &[serde_json::Value], mac: &str) -> Option<serde_json::Value> {
    entries
        .iter()
        .find(|e| e["mac"].as_str().map(str::to_ascii_lowercase).as_deref() == Some(mac))
        .cloned()
}

#[test]
fn neighbours_and_fdb_learn_macs() {
    require_root!();
    const I: u8 = 14;
    let d = Daemon::start();
    create_network(&d, "learn", &subnet(I, 1), &[]);
    create_network(&d, "other", &subnet(I, 2), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let ep_a = attach(&d, "learn", &a, &[]);
    let ep_b = attach(&d, "learn", &b, &[]);
    assert_ping_ok(&a, &ep_b.ip);

    // The kernel's neighbour table in A resolved B's MAC through the switch.
    let out = a.ip(&["neigh", "show", &ep_b.ip]);
    let neigh = text(&out.stdout).to_ascii_lowercase();
    assert!(
        neigh.contains(&ep_b.mac),
        "ip -n {} neigh lacks {} ({}):\n{}",
        a.name,
        ep_b.mac,
        ep_b.ip,
        describe(&out)
    );
    let out = b.ip(&["neigh", "show", &ep_a.ip]);
    assert!(
        text(&out.stdout).to_ascii_lowercase().contains(&ep_a.mac),
        "ip -n {} neigh lacks {}:\n{}",
        b.name,
        ep_a.mac,
        describe(&out)
    );

    // The switch learned both source MACs on the right ports.
    let all = fdb(&d, None);
    for ep in [&ep_a, &ep_b] {
        let e = fdb_entry(&all, &ep.mac)
            .unwrap_or_else(|| panic!("fdb lacks {} ({}): {all:?}", ep.mac, ep.name));
        assert_eq!(e["port"].as_u64(), Some(ep.port), "port of {}: {e}", ep.mac);
        assert_eq!(e["network"], "learn", "{e}");
        assert_eq!(e["endpoint"].as_str(), Some(ep.name.as_str()), "{e}");
        let age = e["age_secs"]
            .as_f64()
            .unwrap_or_else(|| panic!("age_secs not a number: {e}"));
        assert!((0.0..60.0).contains(&age), "age_secs {age} of {e}");
    }
    // Filtering by network.
    let learn = fdb(&d, Some("learn"));
    assert!(fdb_entry(&learn, &ep_a.mac).is_some(), "{learn:?}");
    assert!(learn.iter().all(|e| e["network"] == "learn"), "{learn:?}");
    let other = fdb(&d, Some("other"));
    assert!(fdb_entry(&other, &ep_a.mac).is_none(), "{other:?}");
}

#[test]
fn fdb_entries_age_out() {
    require_root!();
    const I: u8 = 15;
    let d = Daemon::start_with(&["--mac-aging", "2"]);
    create_network(&d, "age", &subnet(I, 1), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let ep_a = attach(&d, "age", &a, &[]);
    let ep_b = attach(&d, "age", &b, &[]);
    assert_ping_ok(&a, &ep_b.ip);
    assert!(
        fdb_entry(&fdb(&d, None), &ep_a.mac).is_some(),
        "{} not learned",
        ep_a.mac
    );

    // Silence A for good: with its interface down it sends nothing at all
    // (no ARP probes, no IPv6 ND), so its entry must age out.
    let out = a.ip(&["link", "set", &ep_a.ifname, "down"]);
    assert!(out.status.success(), "link down:\n{}", describe(&out));
    let silent_since = std::time::Instant::now();
    let gone = wait_for(Duration::from_secs(8), || {
        fdb_entry(&fdb(&d, None), &ep_a.mac).is_none().then_some(())
    });
    assert!(
        gone.is_some(),
        "{} still in the fdb 8 s after going silent with --mac-aging 2: {:?}",
        ep_a.mac,
        fdb(&d, None)
    );
    eprintln!(
        "{} aged out {:.1} s after going silent",
        ep_a.mac,
        silent_since.elapsed().as_secs_f64()
    );

    // Coming back is learned again.
    let out = a.ip(&["link", "set", &ep_a.ifname, "up"]);
    assert!(out.status.success(), "link up:\n{}", describe(&out));
    // Addresses and routes may need re-adding by the kernel; only the link
    // itself matters here. Any frame from A teaches the switch its MAC.
    let relearned = wait_for(Duration::from_secs(10), || {
        let _ = a.exec(&["ping", "-n", "-c", "1", "-W", "1", &ep_b.ip]);
        fdb_entry(&fdb(&d, None), &ep_a.mac).map(|_| ())
    });
    assert!(relearned.is_some(), "{} not relearned", ep_a.mac);
}

#[test]
fn attach_by_pid_joins_the_process_namespace() {
    require_root!();
    const I: u8 = 16;
    let d = Daemon::start();
    create_network(&d, "bypid", &subnet(I, 1), &[]);
    let a = Netns::new("a");
    let p = Netns::new("p");
    let _ep_a = attach(&d, "bypid", &a, &[]);
    // A process living in namespace `p`, the way a container's init does.
    let sleeper = p.spawn(&["sleep", "60"], Stdio::null(), Stdio::null());
    let pid = sleeper.pid().to_string();
    // `ip netns exec` joins the namespace and then execs, under the same
    // PID: wait until the process is really in `p` before attaching.
    let ns_id = |path: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok()
    };
    let target = ns_id(&format!("/var/run/netns/{}", p.name));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ns_id(&format!("/proc/{pid}/ns/net")) != target {
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} never entered namespace {}",
            p.name
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = weft(
        &d,
        &[
            "attach", "bypid", "--pid", &pid, "--name", "viapid", "--json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "attach --pid:\n{}",
        describe(&out)
    );
    let ep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ep["netns"], format!("/proc/{pid}/ns/net"));
    let ip = ep["ip"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // The TAP is in the process's namespace, which is `p`.
    let links = p.ip(&["-br", "link", "show", "eth0"]);
    assert!(
        links.status.success(),
        "no eth0 in {}: {}",
        p.name,
        describe(&links)
    );
    assert_ping_ok(&a, &ip);
}

/// The kernel's counters of one port's TAP and weft's own counters of the
/// port, from `weft stats --json`.
#[derive(Debug, Clone, Copy)]
struct PortView {
    /// weft read from / wrote to the port.
    weft_rx: u64,
    weft_tx: u64,
    from_endpoint: u64,
    from_endpoint_dropped: u64,
    to_endpoint: u64,
    to_endpoint_dropped: u64,
}

fn port_view(d: &Daemon, port: u64) -> PortView {
    let stats = json(d, &["stats"]);
    let p = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"].as_u64() == Some(port))
        .unwrap_or_else(|| panic!("port {port} in stats: {stats}"))
        .clone();
    let k = &p["kernel"]["counters"];
    let n = |v: &serde_json::Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("port {port} has no kernel counters: {p}"))
    };
    PortView {
        weft_rx: n(&p["rx_packets"]),
        weft_tx: n(&p["tx_packets"]),
        from_endpoint: n(&k["from_endpoint_packets"]),
        from_endpoint_dropped: n(&k["from_endpoint_dropped"]),
        to_endpoint: n(&k["to_endpoint_packets"]),
        to_endpoint_dropped: n(&k["to_endpoint_dropped"]),
    }
}

/// `UdpRcvbufErrors` of `/proc/net/snmp` in namespace `ns`: datagrams its
/// UDP sockets dropped because their receive buffer was full.
fn udp_rcvbuf_errors(ns: &Netns) -> u64 {
    let out = ns.exec(&["cat", "/proc/net/snmp"]);
    assert!(out.status.success(), "{}", describe(&out));
    let snmp = text(&out.stdout);
    let udp: Vec<Vec<&str>> = snmp
        .lines()
        .filter(|l| l.starts_with("Udp:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let [names, values] = &udp[..] else {
        panic!("no Udp: lines in /proc/net/snmp:\n{snmp}")
    };
    let i = names.iter().position(|n| *n == "RcvbufErrors").unwrap();
    values[i].parse().unwrap()
}

/// Resumes a process stopped with SIGSTOP, also when the test panics.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        kill_group(pid, Signal::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        kill_group(self.0, Signal::SIGCONT);
    }
}

#[test]
fn stats_show_where_a_64_byte_udp_flood_is_lost_in_the_kernel() {
    require_root!();
    const I: u8 = 17;
    const SENT: u64 = 20_000;
    let d = Daemon::start();
    create_network(&d, "flood", &subnet(I, 1), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let ep_a = attach(&d, "flood", &a, &[]);
    let ep_b = attach(&d, "flood", &b, &[]);
    // Both neighbours resolved, so the flood goes straight out.
    assert_ping_ok(&a, &ep_b.ip);

    // In b, a socket that is bound and never read, with a small buffer.
    let sink = b
        .run(|| {
            let s = std::net::UdpSocket::bind("0.0.0.0:9999")?;
            socket2::SockRef::from(&s).set_recv_buffer_size(4096)?;
            Ok(s)
        })
        .unwrap();
    let dst = format!("{}:9999", ep_b.ip);
    let src = a
        .run(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
            s.connect(dst)?;
            Ok(s)
        })
        .unwrap();
    let (a0, b0) = (port_view(&d, ep_a.port), port_view(&d, ep_b.port));
    let rcvbuf0 = udp_rcvbuf_errors(&b);

    // weft stops reading: the endpoint's 64-byte frames (18-byte payload)
    // fill tun's queue and the kernel drops the rest.
    let stopped = Stopped::stop(d.pid());
    for i in 0..SENT {
        src.send(&[0x5a; 18])
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
    }
    drop(stopped);
    // weft drains the queue and forwards what was in it.
    let settled = wait_for(Duration::from_secs(10), || {
        let v = port_view(&d, ep_a.port);
        (v.weft_rx == v.from_endpoint && v.from_endpoint > a0.from_endpoint).then_some(v)
    });
    let a1 = settled.unwrap_or_else(|| {
        panic!(
            "weft did not read what the kernel queued: {:?}",
            port_view(&d, ep_a.port)
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    let b1 = port_view(&d, ep_b.port);

    // From a: every frame sent was either read by weft or dropped unread,
    // and most were dropped (tun queues a few hundred frames).
    let read = a1.from_endpoint - a0.from_endpoint;
    let unread = a1.from_endpoint_dropped - a0.from_endpoint_dropped;
    assert!(
        (SENT..SENT + 20).contains(&(read + unread)),
        "{SENT} sent, {read} read by weft, {unread} dropped unread: {a0:?} -> {a1:?}"
    );
    assert!(unread > SENT / 2, "{unread} dropped unread of {SENT}");
    assert_eq!(
        a1.weft_rx - a0.weft_rx,
        read,
        "weft's count of what it read"
    );
    // To b: the kernel took every frame weft wrote; the socket that never
    // reads dropped them once its buffer was full.
    let wrote = b1.weft_tx - b0.weft_tx;
    assert!(
        wrote > 0 && wrote <= read,
        "weft wrote {wrote} to b of {read}"
    );
    assert_eq!(b1.to_endpoint - b0.to_endpoint, wrote, "{b0:?} -> {b1:?}");
    assert_eq!(b1.to_endpoint_dropped, b0.to_endpoint_dropped);
    let rcvbuf = udp_rcvbuf_errors(&b) - rcvbuf0;
    eprintln!(
        "{SENT} sent: {unread} dropped unread at a's TAP, {read} read by weft, {wrote} written to b, {rcvbuf} dropped at b's socket"
    );
    assert!(
        rcvbuf > 0 && rcvbuf <= wrote,
        "{rcvbuf} dropped at the socket of {wrote} delivered"
    );
    drop(sink);

    // The table shows the same.
    let table = weft_ok(&d, &["stats"]);
    assert!(
        table.contains("TAP counters in the endpoints' namespaces (kernel):")
            && table.contains(&a1.from_endpoint_dropped.to_string()),
        "{table}"
    );

    // b's namespace goes: `stats` still answers, and b's port (until the
    // daemon reaps it) says its counters are unavailable.
    let out = host_exec(&["ip", "netns", "del", &b.name]);
    assert!(out.status.success(), "{}", describe(&out));
    let stats = json(&d, &["stats"]);
    let ports = stats["ports"].as_array().unwrap();
    assert!(ports.iter().any(|p| p["port"].as_u64() == Some(ep_a.port)));
    if let Some(p) = ports.iter().find(|p| p["port"].as_u64() == Some(ep_b.port)) {
        let why = p["kernel"]["unavailable"].as_str().unwrap_or_default();
        assert!(why.ends_with("is gone"), "{p}");
    }
}
