//! `weft bench` end to end, briefly: weft against the kernel bridge, one
//! second per measurement. Checks the table, results.json, chart.svg and
//! that nothing is left behind. No figure is asserted: speed is for the
//! benchmark, not for tests.
//!
//! Also the rootless, convergence (on three hosts and a real etcd) and
//! storm scenarios.
//!
//! Needs root (and iperf3, etcd); without them it prints why and returns.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use weft_testkit::{netns_list, require_root, TempDir};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const TIMEOUT: Duration = Duration::from_secs(120);

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The daemons' per-namespace resolv.conf directories (`/etc/netns/NAME`)
/// must go with the namespaces: stopping a daemon no longer removes its
/// endpoints, so the harness must not leave them behind.
fn assert_no_resolv_conf_left(prefix: &str) {
    let left: Vec<String> = std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(left.is_empty(), "/etc/netns entries left behind: {left:?}");
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn bench_against_the_kernel_bridge() {
    require_root!();
    if !have("iperf3") {
        eprintln!("skipped: needs iperf3 (apt install iperf3)");
        return;
    }
    // Removed on every exit path.
    let out = TempDir::new("bench-smoke");

    let mut child = Command::new(WEFT)
        .args([
            "bench",
            "--scenario",
            "same-host",
            "--against",
            "kernel-bridge",
            "--duration",
            "1",
            "--tests",
            "tcp1,udp64",
            "--rounds",
            "2",
            "--out",
        ])
        .arg(out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weft bench");
    let pid = child.id();
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for weft bench") {
            break status;
        }
        if Instant::now() > deadline {
            // SIGINT: the bench cleans up after itself.
            // `pid` is our unreaped child.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
            let _ = child.wait();
            panic!("weft bench did not finish within {} s", TIMEOUT.as_secs());
        }
        thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let dump = format!("status: {status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(status.success(), "{dump}");

    // The table: a header line naming both switches.
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("kernel-bridge") && l.contains("weft")),
        "no table header naming weft and kernel-bridge:\n{dump}"
    );

    // Two rounds: medians, and each ratio's range over the rounds.
    assert!(
        stdout.contains("2 rounds, the switches' order reversed every other round"),
        "{dump}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("TCP 1 stream (Gbit/s)") && l.contains("×, ")),
        "no ratio range on the TCP row:\n{dump}"
    );

    let text = std::fs::read_to_string(out.path().join("results.json")).expect("read results.json");
    let doc: Value = serde_json::from_str(&text).expect("results.json is JSON");
    assert!(doc["machine"]["nproc"].as_u64().unwrap_or(0) > 0, "{text}");
    assert_eq!(doc["rounds"], 2, "{text}");
    let weft_tcp1 = doc["scenarios"][0]["switches"]
        .as_array()
        .expect("switches")
        .iter()
        .find(|s| s["switch"] == "weft")
        .and_then(|s| s["measurements"].as_array())
        .and_then(|m| m.iter().find(|m| m["id"] == "tcp1"))
        .cloned()
        .unwrap_or_else(|| panic!("no weft tcp1 in {text}"));
    assert_eq!(
        weft_tcp1["rounds"]["values"].as_array().map(Vec::len),
        Some(2),
        "{text}"
    );
    assert_eq!(
        weft_tcp1["rounds"]["ratios"].as_array().map(Vec::len),
        Some(2),
        "{text}"
    );
    let switches: Vec<String> = doc["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .flat_map(|s| s["switches"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["measurements"].as_array().is_some_and(|m| !m.is_empty()))
        .filter_map(|s| s["switch"].as_str().map(str::to_string))
        .collect();
    for name in ["weft", "kernel-bridge"] {
        assert!(
            switches.iter().any(|s| s == name),
            "results.json has no measurements for {name}: {text}"
        );
    }

    // With two CPUs, the flood is measured pinned apart as well.
    if doc["machine"]["nproc"].as_u64().unwrap_or(0) >= 2 {
        let has_apart = doc["scenarios"]
            .as_array()
            .expect("scenarios")
            .iter()
            .flat_map(|s| s["switches"].as_array().cloned().unwrap_or_default())
            .flat_map(|s| s["measurements"].as_array().cloned().unwrap_or_default())
            .any(|m| m["id"] == "udp64_apart_app" && m["value"].as_f64().is_some());
        assert!(has_apart, "no udp64_apart_app measurement: {text}");
    }

    let svg = std::fs::read_to_string(out.path().join("chart.svg")).expect("read chart.svg");
    assert!(
        svg.starts_with("<svg"),
        "chart.svg starts with {:?}",
        &svg[..svg.len().min(40)]
    );

    let prefix = format!("weft-b{pid}-");
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert_no_resolv_conf_left(&prefix);
    assert!(
        !std::env::temp_dir().join(format!("weft-b{pid}")).exists(),
        "temporary directory left behind"
    );
}

#[test]
fn rootless_scenario_measures_weft_and_the_veth() {
    require_root!();
    if !have("iperf3") {
        eprintln!("skipped: needs iperf3 (apt install iperf3)");
        return;
    }
    let out = TempDir::new("bench-smoke-rootless");
    let mut child = Command::new(WEFT)
        .args([
            "bench",
            "--scenario",
            "rootless",
            "--paths",
            "weft,veth",
            "--duration",
            "1",
            "--out",
        ])
        .arg(out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weft bench");
    let pid = child.id();
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for weft bench") {
            break status;
        }
        if Instant::now() > deadline {
            // `pid` is our unreaped child; SIGINT makes it clean up.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
            let _ = child.wait();
            panic!("weft bench did not finish within {} s", TIMEOUT.as_secs());
        }
        thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let dump = format!("status: {status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(status.success(), "{dump}");
    assert!(
        stdout.contains("weft-sockets") && stdout.contains("veth (root)"),
        "{dump}"
    );
    let text = std::fs::read_to_string(out.path().join("results-rootless.json"))
        .expect("read results-rootless.json");
    let doc: Value = serde_json::from_str(&text).expect("results-rootless.json is JSON");
    let rows = doc["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 4, "two paths at two MTUs: {text}");
    for row in rows {
        for dir in ["namespace_to_host", "host_to_namespace"] {
            assert!(
                row[dir]["gbit_s"].as_f64().is_some_and(|g| g > 0.0),
                "no rate for {} {dir}: {text}",
                row["path"]
            );
        }
    }
    // weft's published port handed the endpoint the client's address (a
    // loopback client appears as the host's side of the uplink, 10.0.2.2).
    let weft = &rows[0];
    assert_eq!(weft["path"], "weft-sockets");
    let want = match doc["client_address"].as_str() {
        Some("127.0.0.1") | None => "10.0.2.2",
        Some(ip) => ip,
    };
    assert_eq!(weft["host_to_namespace"]["client_seen"], want, "{text}");
    let prefix = format!("weft-b{pid}-");
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert_no_resolv_conf_left(&prefix);
    assert!(
        !std::env::temp_dir().join(format!("weft-b{pid}")).exists(),
        "temporary directory left behind"
    );
}

/// `--rounds` with a scenario it does not apply to is refused before
/// anything is made.
#[test]
fn rounds_are_refused_where_they_do_not_apply() {
    let out = Command::new(WEFT)
        .args(["bench", "--scenario", "storm", "--rounds", "3"])
        .stdin(Stdio::null())
        .output()
        .expect("run weft bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--rounds applies to --scenario same-host, overlay and all"),
        "{stderr}"
    );
    let out = Command::new(WEFT)
        .args(["bench", "--rounds", "0"])
        .stdin(Stdio::null())
        .output()
        .expect("run weft bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--rounds"), "{stderr}");
}

/// `--scenario convergence` on three hosts joined through a real etcd.
#[test]
fn bench_convergence_on_three_hosts() {
    require_root!();
    if !have("etcd") || !have("etcdctl") {
        eprintln!("skipped: needs etcd (apt install etcd-server etcd-client)");
        return;
    }
    let out = TempDir::new("bench-conv");
    let mut child = Command::new(WEFT)
        .args([
            "bench",
            "--scenario",
            "convergence",
            "--hosts",
            "3",
            "--endpoints",
            "3",
            "--out",
        ])
        .arg(out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weft bench");
    let pid = child.id();
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for weft bench") {
            break status;
        }
        if Instant::now() > deadline {
            // `pid` is our unreaped child; SIGINT makes it clean up.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
            let _ = child.wait();
            panic!("weft bench did not finish within {} s", TIMEOUT.as_secs());
        }
        thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let dump = format!("status: {status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(status.success(), "{dump}");
    assert!(
        stdout.contains("convergence, 3 hosts, 3 endpoints"),
        "{dump}"
    );

    let text = std::fs::read_to_string(out.path().join("results.json")).expect("read results.json");
    let doc: Value = serde_json::from_str(&text).expect("results.json is JSON");
    assert_eq!(doc["hosts"], 3, "{text}");
    assert_eq!(
        doc["convergence_ms"]["each"].as_array().map(Vec::len),
        Some(3),
        "{text}"
    );
    assert!(doc["convergence_ms"]["p99"].as_f64().is_some(), "{text}");
    assert!(
        doc["daemon_rss_mib"]["max"].as_f64().unwrap_or(0.0) > 0.0,
        "{text}"
    );
    // The machine-wide ARP table's limits and its overflows during the run
    // (3 hosts fit the default limits: nothing to raise).
    assert_eq!(
        doc["neighbour_table"]["gc_thresh"].as_array().map(Vec::len),
        Some(3),
        "{text}"
    );
    assert!(doc["neighbour_table"]["overflows"].is_u64(), "{text}");
    assert!(stdout.contains("neighbour table: limits"), "{dump}");
    let svg = std::fs::read_to_string(out.path().join("chart.svg")).expect("read chart.svg");
    assert!(svg.starts_with("<svg"));

    let prefix = format!("weft-b{pid}-");
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert_no_resolv_conf_left(&prefix);
    assert!(
        !std::env::temp_dir()
            .join(format!("weft-b{pid}-conv"))
            .exists(),
        "temporary directory left behind"
    );
}

/// `--scenario storm`: pair B quiet and under an ARP storm from a third
/// endpoint, with storm control on and off. Only the fields and the storm
/// drops are checked, no throughput.
#[test]
fn storm_scenario_reports_both_storms() {
    require_root!();
    if !have("iperf3") {
        eprintln!("skipped: needs iperf3 (apt install iperf3)");
        return;
    }
    let out = TempDir::new("bench-storm");
    let mut child = Command::new(WEFT)
        .args(["bench", "--scenario", "storm", "--duration", "1", "--out"])
        .arg(out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weft bench");
    let pid = child.id();
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for weft bench") {
            break status;
        }
        if Instant::now() > deadline {
            // `pid` is our unreaped child; SIGINT makes it clean up.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
            let _ = child.wait();
            panic!("weft bench did not finish within {} s", TIMEOUT.as_secs());
        }
        thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let dump = format!("status: {status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(status.success(), "{dump}");
    assert!(
        stdout.contains("storm control on") && stdout.contains("storm control off"),
        "{dump}"
    );
    assert!(
        stdout.contains("kernel bridge quiet") && stdout.contains("kernel bridge, storm"),
        "{dump}"
    );

    let text = std::fs::read_to_string(out.path().join("results.json")).expect("read results.json");
    let doc: Value = serde_json::from_str(&text).expect("results.json is JSON");
    assert_eq!(doc["scenario"], "storm", "{text}");
    assert!(doc["quiet_gbit_s"].as_f64().unwrap_or(0.0) > 0.0, "{text}");
    // The reference: the same sender into a veth pair in A's namespace.
    assert!(
        doc["sender_alone"]["offered_frames_s"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{text}"
    );
    assert!(doc["sender_alone"]["gbit_s"].as_f64().is_some(), "{text}");
    for run in ["storm_control_on", "storm_control_off"] {
        let r = &doc[run];
        assert!(r["gbit_s"].as_f64().is_some(), "{run}: {text}");
        assert!(r["ratio_to_quiet"].as_f64().is_some(), "{run}: {text}");
        assert!(
            r["ratio_to_sender_alone"].as_f64().is_some(),
            "{run}: {text}"
        );
        assert!(
            r["offered_frames_s"].as_f64().unwrap_or(0.0) > 0.0,
            "{run}: no storm offered: {text}"
        );
        assert!(
            r["weft_received_frames_s"].as_f64().unwrap_or(0.0) > 0.0,
            "{run}: weft read none of the storm: {text}"
        );
    }
    // The reference: the same storm on a Linux bridge, which reads it all
    // from A's port and has no storm control.
    let bridge = &doc["kernel_bridge"];
    assert!(
        bridge["quiet_gbit_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{text}"
    );
    let storm = &bridge["storm"];
    assert!(storm["gbit_s"].as_f64().is_some(), "{text}");
    assert!(storm["ratio_to_quiet"].as_f64().is_some(), "{text}");
    assert!(
        storm["offered_frames_s"].as_f64().unwrap_or(0.0) > 0.0,
        "kernel bridge: no storm offered: {text}"
    );
    assert!(
        storm["bridge_received_frames_s"].as_f64().unwrap_or(0.0) > 0.0,
        "kernel bridge: the bridge read none of the storm: {text}"
    );
    // weft under the storm paced to the rate the bridge's sender reached:
    // an offered rate near the bridge's (the pacing holds), and a ratio.
    let paced = &doc["storm_control_on_at_bridge_rate"];
    assert!(paced["ratio_to_quiet"].as_f64().is_some(), "{text}");
    let bridge_rate = storm["offered_frames_s"].as_f64().unwrap_or(0.0);
    let paced_rate = paced["offered_frames_s"].as_f64().unwrap_or(0.0);
    assert!(
        paced_rate > 0.0 && paced_rate <= bridge_rate * 1.1,
        "paced at {paced_rate} frames/s for the bridge's {bridge_rate}: {text}"
    );
    assert!(stdout.contains("same, at the bridge's rate"), "{dump}");
    // Storm control bites with its limits on, and never with them off.
    assert!(
        doc["storm_control_on"]["storm_drops_by_reason"]["storm_broadcast"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{text}"
    );
    assert_eq!(doc["storm_control_off"]["storm_drops"], 0, "{text}");
    // With its budget spent, the flooder's port is paused, and what weft
    // did not read the kernel dropped from its TAP queue; without limits,
    // never paused.
    let on = &doc["storm_control_on"];
    assert!(on["storm_pauses"].as_u64().unwrap_or(0) > 0, "{text}");
    assert!(
        on["kernel_dropped_frames_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert_eq!(doc["storm_control_off"]["storm_pauses"], 0, "{text}");
    assert!(doc["target_met"].is_boolean(), "{text}");

    let prefix = format!("weft-b{pid}-");
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert_no_resolv_conf_left(&prefix);
    assert!(
        !std::env::temp_dir().join(format!("weft-b{pid}")).exists(),
        "temporary directory left behind"
    );
}
