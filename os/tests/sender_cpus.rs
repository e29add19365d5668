//! The sender-CPU tally on a real TAP in a namespace of the test's own:
//! pings sent from a process pinned to one CPU are counted on that CPU,
//! reach the TAP whole, and stop being counted once the filter is off.
#![cfg(target_os = "linux")]

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use weft_os::sender_cpus::{self, SenderCpus};
use weft_os::tap::{Tap, TapOptions};
use weft_testkit::{require_root, Netns};

const TAP: &str = "weft-tcpu0";
const PEER: &str = "10.211.0.2";
/// ICMP payload of each ping: the frame is 14 + 20 + 8 + 100 bytes.
const PING_PAYLOAD: &str = "100";
const PING_FRAME: usize = 142;

fn usable_cpus() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// Pings `PEER` 20 times from a process pinned to `cpu` (no one answers;
/// the requests are what the TAP is handed).
fn ping_from(ns: &Netns, cpu: usize) {
    let cpu = cpu.to_string();
    let out = weft_testkit::host_exec(&[
        "taskset",
        "-c",
        &cpu,
        "ip",
        "netns",
        "exec",
        &ns.name,
        "ping",
        "-n",
        "-q",
        "-c",
        "20",
        "-i",
        "0.005",
        "-w",
        "1",
        "-s",
        PING_PAYLOAD,
        PEER,
    ]);
    // ping exits 1 when nothing answers, which is expected here.
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "ping: {}",
        weft_testkit::describe(&out)
    );
}

fn deltas(before: &[u64], after: &[u64]) -> Vec<u64> {
    before.iter().zip(after).map(|(b, a)| a - b).collect()
}

/// Reads frames until one of `len` bytes arrives (IPv6 housekeeping may
/// come first), for at most a second.
fn read_frame_of(tap: &Tap, len: usize) -> Vec<u8> {
    tap.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match tap.read(&mut buf) {
            Ok(n) if n == len => return buf[..n].to_vec(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no {len}-byte frame on the TAP");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("reading the TAP: {e}"),
        }
    }
}

#[test]
fn frames_are_counted_on_the_cpu_that_sent_them_and_kept_whole() {
    require_root!();
    let ns = Netns::new("scpu");
    let tap = ns
        .run(|| Tap::create(TAP, TapOptions::default()).map_err(io::Error::other))
        .unwrap();
    ns.ip_ok(&["addr", "add", "10.211.0.1/24", "dev", TAP]);
    ns.ip_ok(&["link", "set", TAP, "up"]);
    ns.ip_ok(&[
        "neigh",
        "add",
        PEER,
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        TAP,
    ]);

    let mut tally = SenderCpus::new().expect("root may load the counter");
    tally.attach(tap.as_fd()).unwrap();
    for cpu in usable_cpus().into_iter().take(2) {
        let before = tally.totals().unwrap().to_vec();
        ping_from(&ns, cpu);
        let d = deltas(&before, tally.totals().unwrap());
        let all: u64 = d.iter().sum();
        assert!(d[cpu] >= 20, "CPU {cpu}: counted {d:?}");
        // Anything else is the namespace's own housekeeping (IPv6 router
        // solicitations), sent from timers wherever they fire.
        assert!(d[cpu] * 10 >= all * 9, "CPU {cpu}: counted {d:?}");
    }
    // The filter keeps every byte.
    let frame = read_frame_of(&tap, PING_FRAME);
    assert_eq!(&frame[12..14], &[0x08, 0x00], "an IPv4 frame");

    sender_cpus::detach(tap.as_fd()).unwrap();
    let before = tally.totals().unwrap().to_vec();
    ping_from(&ns, usable_cpus()[0]);
    let d = deltas(&before, tally.totals().unwrap());
    assert_eq!(d.iter().sum::<u64>(), 0, "counted after detaching: {d:?}");
}
