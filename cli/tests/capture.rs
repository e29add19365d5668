//! `weft capture`: an endpoint's frames, both directions, as pcap that
//! tcpdump reads, to a file and through a pipe; bad requests refused.
//!
//! Subnet indices 75..=76; see `common` for the parallelism note.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// `tcpdump -n -r FILE` (or `-` with `stdin`): its lines.
fn tcpdump_read(file: &str, stdin: Option<Vec<u8>>) -> Vec<String> {
    let mut cmd = Command::new("tcpdump");
    cmd.args(["-n", "-r", file]);
    let out = match stdin {
        None => run_timeout(&mut cmd, CMD_TIMEOUT),
        Some(bytes) => {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run tcpdump");
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), &bytes).unwrap();
            child.wait_with_output().unwrap()
        }
    };
    assert!(
        out.status.success(),
        "tcpdump -r {file}:\n{}",
        describe(&out)
    );
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn a_capture_to_a_file_reads_back_with_tcpdump() {
    require_root!();
    let d = Daemon::start();
    let a = Netns::new("a");
    let b = Netns::new("b");
    create_network(&d, "n", &subnet(75, 1), &[]);
    let ep_a = attach(&d, "n", &a, &[]);
    let ep_b = attach(&d, "n", &b, &[]);
    // Warm up ARP, so the capture sees only the pings.
    assert!(a.ping(&ep_b.ip).status.success());
    let dir = TempDir::new("capture");
    let file = dir.path().join("b.pcap");
    let mut cmd = Command::new(WEFT);
    cmd.arg("--socket")
        .arg(&d.socket)
        .args(["capture", &ep_b.name, "--network", "n", "-c", "6", "-w"])
        .arg(&file)
        .stdout(Stdio::null());
    let mut capture = Bg::spawn(cmd, "weft capture");
    // The global header is written once the mirror is in place.
    wait_for(Duration::from_secs(5), || {
        (fs::metadata(&file).map(|m| m.len()).unwrap_or(0) >= 24).then_some(())
    })
    .expect("the capture did not start");
    let out = a.exec(&["ping", "-n", "-c", "3", "-i", "0.1", "-W", "2", &ep_b.ip]);
    assert!(out.status.success(), "{}", describe(&out));
    let status = capture
        .wait_timeout(Duration::from_secs(10))
        .expect("weft capture did not stop after -c 6");
    assert!(status.success(), "weft capture exited with {status}");
    let lines = tcpdump_read(file.to_str().unwrap(), None);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let requests = lines
        .iter()
        .filter(|l| l.contains(&format!("{} > {}: ICMP echo request", ep_a.ip, ep_b.ip)))
        .count();
    let replies = lines
        .iter()
        .filter(|l| l.contains(&format!("{} > {}: ICMP echo reply", ep_b.ip, ep_a.ip)))
        .count();
    assert_eq!((requests, replies), (3, 3), "both directions: {lines:#?}");
}

#[test]
fn a_capture_to_stdout_pipes_into_tcpdump_and_stops_when_the_reader_goes() {
    require_root!();
    let d = Daemon::start();
    let a = Netns::new("a");
    let b = Netns::new("b");
    create_network(&d, "n", &subnet(76, 1), &[]);
    let _ep_a = attach(&d, "n", &a, &[]);
    let ep_b = attach(&d, "n", &b, &[]);
    let dir = TempDir::new("capture-pipe");
    let log = dir.path().join("tcpdump.txt");
    // weft capture | tcpdump -c 4 -r -: tcpdump leaves after 4 frames, and
    // the capture ends with the pipe.
    let pipeline = format!(
        "{} --socket {} capture {} | tcpdump -n -c 4 -r - > {} 2>/dev/null",
        WEFT,
        d.socket.display(),
        ep_b.name,
        log.display()
    );
    let mut sh = Command::new("sh");
    sh.args(["-c", &pipeline]);
    let mut shell = Bg::spawn(sh, "weft capture | tcpdump");
    std::thread::sleep(Duration::from_millis(500));
    let _ping = a.spawn(
        &["ping", "-n", "-i", "0.1", "-W", "1", &ep_b.ip],
        Stdio::null(),
        Stdio::null(),
    );
    let status = shell
        .wait_timeout(Duration::from_secs(10))
        .expect("the pipeline did not end after tcpdump -c 4");
    assert!(status.success(), "{status}");
    let lines = fs::read_to_string(&log).unwrap();
    assert_eq!(lines.lines().count(), 4, "{lines}");
    assert!(lines.contains("ICMP echo"), "{lines}");
    // The daemon noticed and took the mirror away.
    wait_for(Duration::from_secs(5), || {
        d.log_tail(20).contains("capture ended").then_some(())
    })
    .unwrap_or_else(|| panic!("the capture did not end:\n{}", d.log_tail(20)));
}

#[test]
fn capturing_an_unknown_endpoint_is_refused() {
    require_root!();
    let d = Daemon::start();
    let out = d.cli(&["capture", "nobody", "-c", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(err.contains("no endpoint named `nobody`"), "{err}");
    assert!(out.stdout.is_empty(), "pcap bytes for a refused capture");
    let out = d.cli(&["capture", "nobody", "--network", "nonet"]);
    assert!(
        text(&out.stderr).contains("no network named `nonet`"),
        "{}",
        describe(&out)
    );
}
