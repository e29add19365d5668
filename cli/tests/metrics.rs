//! `weft daemon --metrics`: the exposition is parsed by the official
//! Prometheus client's parser (`prometheus_client.parser`, Debian's
//! python3-prometheus-client) and its counters move with real traffic.
//!
//! Subnet index 74 (subnets 1 to 3); see `common` for the parallelism
//! note.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// Reads the exposition text and prints every sample as JSON lines:
/// `{"family", "type", "name", "labels", "value"}`. Fails on text the
/// parser rejects.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"family": family.name, "type": family.type,
                          "name": s.name, "labels": s.labels, "value": s.value}))
"#;

/// A free loopback port for the daemon to bind.
fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap()
}

/// `GET path` → (status line, body).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: weft\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// Samples by (name, sorted labels).
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Scrapes and parses with the Prometheus client's parser.
fn scrape(addr: SocketAddr) -> (Samples, Vec<Value>) {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 (install python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the exposition:\n{}\n{body}",
        describe(&out)
    );
    let rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut samples = Samples::new();
    for row in &rows {
        let labels: Vec<(String, String)> = row["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        samples.insert(
            (row["name"].as_str().unwrap().to_string(), labels),
            row["value"].as_f64().unwrap(),
        );
    }
    (samples, rows)
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut key: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    key.sort();
    *samples
        .get(&(name.to_string(), key))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

/// A daemon serving metrics, started with `extra` arguments, and two
/// namespaces attached to network `n` (`subnet(74, index)`).
struct Metered {
    metrics: SocketAddr,
    d: Daemon,
    a: Netns,
    b: Netns,
    ep_a: Endpoint,
    ep_b: Endpoint,
}

impl Metered {
    fn start(index: u8, extra: &[&str]) -> Metered {
        let metrics = free_port();
        let addr_text = metrics.to_string();
        let mut args = vec!["--metrics", addr_text.as_str()];
        args.extend_from_slice(extra);
        let d = Daemon::start_with(&args);
        let a = Netns::new("a");
        let b = Netns::new("b");
        create_network(&d, "n", &subnet(74, index), &[]);
        let ep_a = attach(&d, "n", &a, &[]);
        let ep_b = attach(&d, "n", &b, &[]);
        Metered {
            metrics,
            d,
            a,
            b,
            ep_a,
            ep_b,
        }
    }
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    require_root!();
    let Metered {
        metrics,
        d: _daemon,
        a,
        b: _b,
        ep_a,
        ep_b,
    } = Metered::start(1, &[]);
    let port_a = ep_a.port.to_string();
    let port_b = ep_b.port.to_string();
    let la = [
        ("network", "n"),
        ("endpoint", ep_a.name.as_str()),
        ("port", port_a.as_str()),
    ];
    let lb = [
        ("network", "n"),
        ("endpoint", ep_b.name.as_str()),
        ("port", port_b.as_str()),
    ];
    let with = |base: &[(&'static str, &str)], reason: &'static str| {
        let mut l: Vec<(&str, String)> = base.iter().map(|(k, v)| (*k, v.to_string())).collect();
        l.push(("reason", reason.to_string()));
        l
    };
    let get_reason = |s: &Samples, base: &[(&'static str, &str)], reason: &'static str| {
        let l = with(base, reason);
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        value(s, "weft_port_drops_total", &l)
    };

    let (before, rows) = scrape(metrics);
    // Types and build info as declared.
    let family_type = |name: &str| {
        rows.iter()
            .find(|r| r["family"] == name)
            .map(|r| r["type"].as_str().unwrap().to_string())
    };
    assert_eq!(
        family_type("weft_port_rx_packets").as_deref(),
        Some("counter")
    );
    assert_eq!(
        family_type("weft_conntrack_entries").as_deref(),
        Some("gauge")
    );
    let build = rows
        .iter()
        .find(|r| r["name"] == "weft_build_info")
        .expect("build info");
    assert_eq!(build["labels"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(value(&before, "weft_endpoints", &[]), 2.0);
    assert_eq!(
        get_reason(&before, &la, "no_route"),
        0.0,
        "every reason, zeros included"
    );

    // Five pings a -> b, a lookup of b's name, a packet to nowhere.
    let out = a.exec(&["ping", "-n", "-c", "5", "-i", "0.05", "-W", "2", &ep_b.ip]);
    assert!(out.status.success(), "{}", describe(&out));
    let gateway = addr(74, 1, 1);
    let out = a.exec(&[
        "dig",
        "+short",
        "+time=2",
        "+tries=1",
        &ep_b.name,
        &format!("@{gateway}"),
    ]);
    assert_eq!(text(&out.stdout).trim(), ep_b.ip, "{}", describe(&out));
    let _ = a.exec(&["ping", "-n", "-c", "1", "-W", "1", "192.0.2.99"]);

    let (after, _) = scrape(metrics);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert!(delta("weft_port_rx_packets_total", &la) >= 5.0);
    assert!(delta("weft_port_rx_bytes_total", &la) >= 5.0 * 98.0);
    assert!(delta("weft_port_tx_packets_total", &lb) >= 5.0);
    assert!(
        delta("weft_port_rx_packets_total", &lb) >= 5.0,
        "b's replies"
    );
    assert_eq!(
        get_reason(&after, &la, "no_route") - get_reason(&before, &la, "no_route"),
        1.0,
        "the packet to nowhere"
    );
    assert!(delta("weft_icmp_errors_sent_total", &[]) >= 1.0);
    assert!(delta("weft_dns_queries_total", &[("transport", "udp")]) >= 1.0);
    assert!(delta("weft_dns_local_answers_total", &[]) >= 1.0);
    assert_eq!(
        value(&after, "weft_dns_failures_total", &[("reason", "servfail")]),
        0.0
    );

    // The kernel's counters of each endpoint's TAP, by direction: a's
    // echo requests left through its TAP, b's arrived through its own.
    let dir = |base: &[(&'static str, &str)], direction: &'static str| {
        let mut l: Vec<(&'static str, String)> =
            base.iter().map(|(k, v)| (*k, v.to_string())).collect();
        l.push(("direction", direction.to_string()));
        l
    };
    let kernel = |s: &Samples, name: &str, base: &[(&'static str, &str)], d: &'static str| {
        let l = dir(base, d);
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        value(s, name, &l)
    };
    assert_eq!(value(&after, "weft_port_kernel_counters_up", &la), 1.0);
    assert_eq!(
        family_type("weft_port_kernel_drops").as_deref(),
        Some("counter")
    );
    let kernel_delta = |name: &str, base: &[(&'static str, &str)], d: &'static str| {
        kernel(&after, name, base, d) - kernel(&before, name, base, d)
    };
    assert!(kernel_delta("weft_port_kernel_packets_total", &la, "from_endpoint") >= 5.0);
    assert!(kernel_delta("weft_port_kernel_packets_total", &lb, "to_endpoint") >= 5.0);
    for (base, d) in [(&la, "from_endpoint"), (&lb, "to_endpoint")] {
        assert_eq!(
            kernel(&after, "weft_port_kernel_drops_total", base, d),
            0.0,
            "nothing dropped by a few pings"
        );
    }

    let (status, _) = get(metrics, "/nothing");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[test]
fn a_taken_metrics_port_is_refused_with_what_to_do() {
    require_root!();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut d = Daemon::start();
    d.kill_keeping(nix::sys::signal::Signal::SIGTERM);
    let out = d.run_second(&["--metrics", &addr]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(err.contains("--metrics") && err.contains(&addr), "{err}");
    assert!(!d.socket.exists(), "the refused daemon left its socket");
    d.respawn(&[]);
}

#[test]
fn socket_uplink_events_are_exported() {
    require_root!();
    let metrics = free_port();
    let addr_text = metrics.to_string();
    let d = Daemon::start_with(&["--metrics", &addr_text]);
    let a = Netns::new("a");
    create_network(&d, "n", &subnet(74, 2), &[]);
    attach(&d, "n", &a, &[]);

    // No socket uplink, no family of its own.
    let (before, _) = scrape(metrics);
    assert!(
        !before
            .keys()
            .any(|(name, _)| name == "weft_socket_uplink_events_total"),
        "socket uplink series without a socket uplink"
    );

    weft_ok(&d, &["uplink", "set", "--sockets"]);
    let (idle, _) = scrape(metrics);
    let event = |s: &Samples, e: &str| value(s, "weft_socket_uplink_events_total", &[("event", e)]);
    assert_eq!(event(&idle, "tcp_opened"), 0.0, "zeros included");
    assert_eq!(event(&idle, "ping_refused"), 0.0);

    // One TCP connection from the endpoint to a server on the host's
    // loopback, which the socket uplink reaches as 10.0.2.2.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let accept = std::thread::spawn(move || {
        let (mut s, _) = server.accept().expect("accept the endpoint's connection");
        let mut got = String::new();
        s.read_to_string(&mut got).expect("read");
        got
    });
    let out = a.exec(&[
        "sh",
        "-c",
        &format!("echo hello | nc -N -w 5 10.0.2.2 {port}"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(accept.join().unwrap(), "hello\n");

    let (after, _) = scrape(metrics);
    assert_eq!(event(&after, "tcp_opened"), 1.0);
    assert_eq!(event(&after, "table_full"), 0.0);
}

/// Busy polling is held while the traffic is bulk (`weft_busy_poll_held`),
/// and no window is started then; a request/response exchange after the
/// transfer spins again.
#[test]
fn bulk_traffic_holds_the_busy_poll_until_it_ends() {
    require_root!();
    // The longest window, so that the exchange after the transfer spins
    // however slow this build's round trip is.
    let Metered {
        metrics,
        d: _daemon,
        a,
        b,
        ep_b,
        ..
    } = Metered::start(3, &["--busy-poll", "1000"]);
    let held = |s: &Samples| value(s, "weft_busy_poll_held", &[]);
    let spins = |s: &Samples| value(s, "weft_busy_poll_spins_total", &[]);
    assert_eq!(held(&scrape(metrics).0), 0.0, "no traffic, nothing held");

    let mut server = b.spawn(&["iperf3", "-s", "-1"], Stdio::null(), Stdio::null());
    assert!(b.wait_listening("tcp", 5201, Duration::from_secs(5)));
    let mut client = a.spawn(
        &["iperf3", "-c", &ep_b.ip, "-t", "6"],
        Stdio::null(),
        Stdio::null(),
    );
    // Some whole second of the transfer is held from end to end and
    // starts no window; without the hold the worker starts one every time
    // it runs out of work, thousands a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    let quiet = loop {
        let (first, _) = scrape(metrics);
        std::thread::sleep(Duration::from_secs(1));
        let (second, _) = scrape(metrics);
        let both_held = held(&first) == 1.0 && held(&second) == 1.0;
        let started = spins(&second) - spins(&first);
        seen.push((held(&first), held(&second), started));
        if both_held && started == 0.0 {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
    };
    assert!(
        quiet,
        "no second of the transfer was held without spinning: (held at start, at end, windows started) {seen:?}"
    );
    assert!(client.wait_timeout(Duration::from_secs(30)).is_some());
    assert!(server.wait_timeout(Duration::from_secs(10)).is_some());

    // Once the transfer is over, the hold ends within a few intervals...
    let deadline = Instant::now() + Duration::from_secs(3);
    while held(&scrape(metrics).0) != 0.0 {
        assert!(Instant::now() < deadline, "still held after the transfer");
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...and request/response traffic spins again.
    let (before, _) = scrape(metrics);
    let out = a.exec(&["ping", "-n", "-q", "-f", "-c", "2000", "-W", "2", &ep_b.ip]);
    assert!(out.status.success(), "{}", describe(&out));
    let (after, _) = scrape(metrics);
    assert_eq!(held(&after), 0.0, "a ping exchange is not bulk");
    assert!(
        spins(&after) > spins(&before),
        "no busy-poll window during a flood ping"
    );
}

/// The number of queues of the TAP behind `ep` (`ip -d link show`).
fn tap_queues(ns: &Netns, ep: &Endpoint) -> String {
    let out = ns.exec(&["ip", "-d", "link", "show", "dev", &ep.ifname]);
    assert!(out.status.success(), "{}", describe(&out));
    let shown = text(&out.stdout);
    let words: Vec<&str> = shown.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "numqueues")
        .unwrap_or_else(|| panic!("no numqueues in {shown}"));
    words[at + 1].to_owned()
}

/// A flood of small frames is written to its receiver's NAPI queue, where
/// a kernel thread receives it (`weft_receive_threaded_ports`), while it
/// lasts, and to the plain queue again after it; a request/response
/// exchange never is.
#[test]
fn a_flood_is_received_in_a_thread_of_its_own_until_it_ends() {
    require_root!();
    // The worker stays where the scheduler puts it: beside the flood's
    // sender, were it to follow it there, the receive stays in the worker
    // (cli/tests/placement.rs tests that).
    let Metered {
        metrics,
        d,
        a,
        b,
        ep_b,
        ..
    } = Metered::start(4, &["--worker-cpu", "any"]);
    // The plain queue and the NAPI queue.
    assert_eq!(tap_queues(&b, &ep_b), "2");
    let threaded_napi = b.exec(&["cat", &format!("/sys/class/net/{}/threaded", ep_b.ifname)]);
    assert_eq!(text(&threaded_napi.stdout).trim(), "1");
    let threaded = |s: &Samples| value(s, "weft_receive_threaded_ports", &[]);
    assert_eq!(threaded(&scrape(metrics).0), 0.0, "no traffic");

    // Request/response traffic is no flood.
    let out = a.exec(&["ping", "-n", "-q", "-f", "-c", "3000", "-W", "2", &ep_b.ip]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(threaded(&scrape(metrics).0), 0.0, "a ping exchange");

    let mut server = b.spawn(&["iperf3", "-s", "-1"], Stdio::null(), Stdio::null());
    assert!(b.wait_listening("tcp", 5201, Duration::from_secs(5)));
    let mut client = a.spawn(
        &[
            "iperf3", "-c", &ep_b.ip, "-u", "-b", "0", "-l", "64", "-t", "4",
        ],
        Stdio::null(),
        Stdio::null(),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if threaded(&scrape(metrics).0) == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flood's receiver was not threaded within 3 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = json(&d, &["status"]);
    assert_eq!(status["receive_threaded_ports"], 1, "{status}");
    assert!(client.wait_timeout(Duration::from_secs(30)).is_some());
    assert!(server.wait_timeout(Duration::from_secs(10)).is_some());
    // The flood went through: the receiver's stack took it, on whichever
    // queue it was written.
    let stats = json(&d, &["stats"]);
    let port = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["endpoint"] == ep_b.name.as_str())
        .unwrap_or_else(|| panic!("{} in stats: {stats}", ep_b.name))
        .clone();
    assert!(
        port["kernel"]["counters"]["to_endpoint_packets"]
            .as_u64()
            .is_some_and(|n| n > 10_000),
        "{port}"
    );

    // A second after the flood (judged when the idle worker wakes, every
    // half second), the receive is back in the worker.
    let deadline = Instant::now() + Duration::from_secs(4);
    while threaded(&scrape(metrics).0) != 0.0 {
        assert!(
            Instant::now() < deadline,
            "still threaded 4 s after the flood"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
