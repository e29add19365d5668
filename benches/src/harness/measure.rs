//! The measurements: iperf3 TCP and 64-byte UDP, sockperf ping-pong, and
//! the CPU time they cost (the switch's processes and the whole machine).

use std::fs;
use std::time::{Duration, Instant};

use super::error::{Context as _, Error, Result};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::{sysconf, Pid, SysconfVar};
use serde_json::Value;

use super::sys::{self, in_ns, Proc};
use super::topology::Topology;

const IPERF_PORT: &str = "5201";
const SOCKPERF_PORT: &str = "11111";
/// UDP payload for a 64-byte Ethernet frame: 64 - 4 (FCS) - 14 (Ethernet)
/// - 20 (IPv4) - 8 (UDP).
const UDP64_PAYLOAD: &str = "18";

/// A test selectable with `--tests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Test {
    /// iperf3 TCP, one stream
    Tcp1,
    /// iperf3 TCP, four streams
    Tcp4,
    /// iperf3 UDP with 64-byte frames, packets per second: nothing pinned,
    /// then the client and the server pinned to two CPUs apart
    Udp64,
    /// sockperf UDP ping-pong round trips: both ends pinned to CPU 0, then
    /// also the switch's threads with them, then nothing pinned
    Rr,
}

impl Test {
    pub fn name(self) -> &'static str {
        match self {
            Test::Tcp1 => "tcp1",
            Test::Tcp4 => "tcp4",
            Test::Udp64 => "udp64",
            Test::Rr => "rr",
        }
    }

    /// The tool it needs and its Debian package.
    pub fn tool(self) -> (&'static str, &'static str) {
        match self {
            Test::Tcp1 | Test::Tcp4 | Test::Udp64 => ("iperf3", "iperf3"),
            Test::Rr => ("sockperf", "sockperf"),
        }
    }

    /// How many timed runs of `--duration` it makes.
    pub fn runs(self) -> u32 {
        match self {
            Test::Rr => 3,
            Test::Udp64 => 2,
            _ => 1,
        }
    }

    /// The figures it produces, in table order.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Test::Tcp1 => &[
                Metric::Tcp1Gbps,
                Metric::Tcp1CpuPerGbit,
                Metric::Tcp1SwitchCpuPerGbit,
            ],
            Test::Tcp4 => &[
                Metric::Tcp4Gbps,
                Metric::Tcp4CpuPerGbit,
                Metric::Tcp4SwitchCpuPerGbit,
            ],
            Test::Udp64 => &[
                Metric::Udp64IfacePps,
                Metric::Udp64AppPps,
                Metric::Udp64SocketDropPps,
                Metric::Udp64ApartIfacePps,
                Metric::Udp64ApartAppPps,
                Metric::Udp64ApartSocketDropPps,
            ],
            Test::Rr => &[
                Metric::RrPinnedAvg,
                Metric::RrPinnedP50,
                Metric::RrPinnedP99,
                Metric::RrColocatedAvg,
                Metric::RrColocatedP50,
                Metric::RrColocatedP99,
                Metric::RrAvg,
                Metric::RrP50,
                Metric::RrP99,
            ],
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Tcp1Gbps,
    Tcp1CpuPerGbit,
    Tcp1SwitchCpuPerGbit,
    Tcp4Gbps,
    Tcp4CpuPerGbit,
    Tcp4SwitchCpuPerGbit,
    Udp64IfacePps,
    Udp64AppPps,
    /// Datagrams the server's socket dropped with its receive buffer full
    /// (`UdpRcvbufErrors`): delivered by the switch, never read.
    Udp64SocketDropPps,
    /// The same three with the client and the server pinned to two CPUs
    /// apart, as containers with CPU sets of their own are.
    Udp64ApartIfacePps,
    Udp64ApartAppPps,
    Udp64ApartSocketDropPps,
    RrPinnedAvg,
    RrPinnedP50,
    RrPinnedP99,
    RrColocatedAvg,
    RrColocatedP50,
    RrColocatedP99,
    RrAvg,
    RrP50,
    RrP99,
}

impl Metric {
    /// Stable identifier used in results.json.
    pub fn id(self) -> &'static str {
        match self {
            Metric::Tcp1Gbps => "tcp1",
            Metric::Tcp1CpuPerGbit => "tcp1_cpu_per_gbit",
            Metric::Tcp1SwitchCpuPerGbit => "tcp1_switch_cpu_per_gbit",
            Metric::Tcp4Gbps => "tcp4",
            Metric::Tcp4CpuPerGbit => "tcp4_cpu_per_gbit",
            Metric::Tcp4SwitchCpuPerGbit => "tcp4_switch_cpu_per_gbit",
            Metric::Udp64IfacePps => "udp64",
            Metric::Udp64AppPps => "udp64_app",
            Metric::Udp64SocketDropPps => "udp64_socket_drops",
            Metric::Udp64ApartIfacePps => "udp64_apart",
            Metric::Udp64ApartAppPps => "udp64_apart_app",
            Metric::Udp64ApartSocketDropPps => "udp64_apart_socket_drops",
            Metric::RrPinnedAvg => "rr_pinned_avg",
            Metric::RrPinnedP50 => "rr_pinned_p50",
            Metric::RrPinnedP99 => "rr_pinned_p99",
            Metric::RrColocatedAvg => "rr_colocated_avg",
            Metric::RrColocatedP50 => "rr_colocated_p50",
            Metric::RrColocatedP99 => "rr_colocated_p99",
            Metric::RrAvg => "rr_avg",
            Metric::RrP50 => "rr_p50",
            Metric::RrP99 => "rr_p99",
        }
    }

    /// Row label for people.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Tcp1Gbps => "TCP 1 stream",
            Metric::Tcp1CpuPerGbit => "TCP 1 stream, machine CPU",
            Metric::Tcp1SwitchCpuPerGbit => "TCP 1 stream, switch CPU",
            Metric::Tcp4Gbps => "TCP 4 streams",
            Metric::Tcp4CpuPerGbit => "TCP 4 streams, machine CPU",
            Metric::Tcp4SwitchCpuPerGbit => "TCP 4 streams, switch CPU",
            Metric::Udp64IfacePps => "UDP 64 B, into server iface",
            Metric::Udp64AppPps => "UDP 64 B, read by server app",
            Metric::Udp64SocketDropPps => "UDP 64 B, dropped at server socket",
            Metric::Udp64ApartIfacePps => "UDP 64 B pinned apart, into server iface",
            Metric::Udp64ApartAppPps => "UDP 64 B pinned apart, read by server app",
            Metric::Udp64ApartSocketDropPps => "UDP 64 B pinned apart, dropped at server socket",
            Metric::RrPinnedAvg => "UDP RTT pinned, avg",
            Metric::RrPinnedP50 => "UDP RTT pinned, p50",
            Metric::RrPinnedP99 => "UDP RTT pinned, p99",
            Metric::RrColocatedAvg => "UDP RTT pinned with switch, avg",
            Metric::RrColocatedP50 => "UDP RTT pinned with switch, p50",
            Metric::RrColocatedP99 => "UDP RTT pinned with switch, p99",
            Metric::RrAvg => "UDP RTT unpinned, avg",
            Metric::RrP50 => "UDP RTT unpinned, p50",
            Metric::RrP99 => "UDP RTT unpinned, p99",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::Tcp1Gbps | Metric::Tcp4Gbps => "Gbit/s",
            Metric::Tcp1CpuPerGbit
            | Metric::Tcp1SwitchCpuPerGbit
            | Metric::Tcp4CpuPerGbit
            | Metric::Tcp4SwitchCpuPerGbit => "CPU s/Gbit",
            Metric::Udp64IfacePps
            | Metric::Udp64AppPps
            | Metric::Udp64SocketDropPps
            | Metric::Udp64ApartIfacePps
            | Metric::Udp64ApartAppPps
            | Metric::Udp64ApartSocketDropPps => "kpps",
            _ => "µs",
        }
    }

    /// Whether a larger figure is better (throughput) or worse (latency,
    /// CPU cost).
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::Tcp1Gbps
                | Metric::Tcp4Gbps
                | Metric::Udp64IfacePps
                | Metric::Udp64AppPps
                | Metric::Udp64ApartIfacePps
                | Metric::Udp64ApartAppPps
        )
    }

    /// Only meaningful for userspace switches (kernel switches have no
    /// process to account).
    pub fn needs_switch_process(self) -> bool {
        matches!(
            self,
            Metric::Tcp1SwitchCpuPerGbit | Metric::Tcp4SwitchCpuPerGbit
        )
    }
}

/// CPU seconds spent during one measurement.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Cpu {
    /// utime + stime of the switch's processes; None for kernel switches.
    pub switch_s: Option<f64>,
    /// Busy (non-idle, non-iowait) CPU seconds of the whole machine.
    pub machine_s: f64,
    /// Wall-clock seconds of the measurement window.
    pub wall_s: f64,
}

/// The outcome of one test on one topology.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub values: Vec<(Metric, f64)>,
    pub cpu: Cpu,
}

impl TestResult {
    /// The figure measured for `metric`, if it is a number.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        self.values
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
    }
}

fn clock_ticks() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// utime + stime of `pid` (all threads), in ticks.
fn proc_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text)
}

pub fn parse_proc_stat(text: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. Fields 14 (utime) and 15 (stime) are at 11 and 12 there.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy ticks of the whole machine from the `cpu` line of /proc/stat.
fn machine_busy_ticks() -> Option<u64> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(&text)
}

pub fn parse_machine_busy(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already counted in user.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(total.saturating_sub(idle))
}

struct CpuSample {
    switch: Option<u64>,
    machine: u64,
    at: Instant,
}

fn sample(pids: &[u32]) -> CpuSample {
    let switch = if pids.is_empty() {
        None
    } else {
        Some(pids.iter().filter_map(|p| proc_ticks(*p)).sum())
    };
    CpuSample {
        switch,
        machine: machine_busy_ticks().unwrap_or(0),
        at: Instant::now(),
    }
}

fn cpu_between(a: &CpuSample, b: &CpuSample) -> Cpu {
    let hz = clock_ticks();
    Cpu {
        switch_s: match (a.switch, b.switch) {
            (Some(x), Some(y)) => Some(y.saturating_sub(x) as f64 / hz),
            _ => None,
        },
        machine_s: b.machine.saturating_sub(a.machine) as f64 / hz,
        wall_s: (b.at - a.at).as_secs_f64(),
    }
}

fn sum_cpu(a: Cpu, b: Cpu) -> Cpu {
    Cpu {
        switch_s: match (a.switch_s, b.switch_s) {
            (Some(x), Some(y)) => Some(x + y),
            _ => None,
        },
        machine_s: a.machine_s + b.machine_s,
        wall_s: a.wall_s + b.wall_s,
    }
}

/// Servers kept up for the topology's measurements.
pub struct Servers {
    iperf: Option<Proc>,
}

/// Starts the iperf3 server in the server namespace if a test needs it.
pub fn start_servers(topo: &Topology, tests: &[Test]) -> Result<Servers> {
    let mut servers = Servers { iperf: None };
    if tests.iter().any(|t| t.tool().0 == "iperf3") && sys::find_in_path("iperf3").is_some() {
        let args = in_ns(
            &topo.server_ns,
            &["iperf3", "-s", "-B", &topo.server_ip, "-p", IPERF_PORT],
        );
        let mut proc = Proc::spawn(&args, &topo.dir.join("iperf3-server.log"), &[], false)?;
        wait_listening(topo, &mut proc, "-ltn", IPERF_PORT)?;
        servers.iperf = Some(proc);
    }
    Ok(servers)
}

/// Waits until something in the server namespace listens on `port`.
fn wait_listening(topo: &Topology, proc: &mut Proc, ss_flags: &str, port: &str) -> Result<()> {
    let needle = format!(":{port}");
    sys::wait_until(
        &format!("{} to listen", proc.name),
        Duration::from_secs(10),
        || {
            proc.check_alive()?;
            let out = sys::run(&["ip", "netns", "exec", &topo.server_ns, "ss", "-H", ss_flags])?;
            Ok(out
                .lines()
                .any(|l| l.split_whitespace().any(|f| f.ends_with(&needle))))
        },
    )
}

/// Runs `test` on `topo` for `secs` seconds per run.
pub fn run_test(
    topo: &Topology,
    servers: &mut Servers,
    test: Test,
    secs: u64,
    on_run: &mut dyn FnMut(&str),
) -> Result<TestResult> {
    if let Some(p) = servers.iperf.as_mut() {
        p.check_alive()?;
    }
    match test {
        Test::Tcp1 | Test::Tcp4 => {
            on_run(test.name());
            let streams = if test == Test::Tcp1 { "1" } else { "4" };
            let before = sample(&topo.switch_pids);
            let json = iperf(topo, secs, &["-P", streams])?;
            let cpu = cpu_between(&before, &sample(&topo.switch_pids));
            let bps = json
                .pointer("/end/sum_received/bits_per_second")
                .and_then(Value::as_f64)
                .context("iperf3's JSON has no end.sum_received.bits_per_second")?;
            let seconds = json
                .pointer("/end/sum_received/seconds")
                .and_then(Value::as_f64)
                .unwrap_or(secs as f64);
            let gbps = bps / 1e9;
            let gbit = gbps * seconds;
            let per_gbit = |s: f64| if gbit > 0.0 { s / gbit } else { f64::NAN };
            let [m_gbps, m_cpu, m_sw] = match test.metrics() {
                [a, b, c] => [*a, *b, *c],
                _ => unreachable!("TCP tests have three metrics"),
            };
            let mut values = vec![(m_gbps, gbps), (m_cpu, per_gbit(cpu.machine_s))];
            if let Some(s) = cpu.switch_s {
                values.push((m_sw, per_gbit(s)));
            }
            Ok(TestResult { values, cpu })
        }
        Test::Udp64 => {
            on_run(test.name());
            let (free, mut cpu) = udp64(topo, secs, &[])?;
            let mut values = vec![
                (Metric::Udp64IfacePps, free.iface_kpps),
                (Metric::Udp64AppPps, free.app_kpps),
                (Metric::Udp64SocketDropPps, free.socket_drop_kpps),
            ];
            // iperf3 pins the client with `-A N` and, for this one test,
            // the server with `-A N,M`.
            if let Some([client, server]) = two_cpus() {
                on_run("udp64 pinned apart");
                let cpus = format!("{client},{server}");
                let (apart, c) = udp64(topo, secs, &["-A", &cpus])?;
                cpu = sum_cpu(cpu, c);
                values.extend([
                    (Metric::Udp64ApartIfacePps, apart.iface_kpps),
                    (Metric::Udp64ApartAppPps, apart.app_kpps),
                    (Metric::Udp64ApartSocketDropPps, apart.socket_drop_kpps),
                ]);
            }
            Ok(TestResult { values, cpu })
        }
        Test::Rr => {
            let mut values = Vec::new();
            let mut cpu = Cpu {
                switch_s: topo.switch_pids.first().map(|_| 0.0),
                ..Cpu::default()
            };
            for (placement, metrics) in [
                (
                    Placement::Pinned,
                    [
                        Metric::RrPinnedAvg,
                        Metric::RrPinnedP50,
                        Metric::RrPinnedP99,
                    ],
                ),
                (
                    Placement::Free,
                    [Metric::RrAvg, Metric::RrP50, Metric::RrP99],
                ),
                // Last: pinning the switch's threads from outside takes
                // their placement out of the switch's hands (weft's
                // worker stops following its endpoints), and the runs
                // after it would measure that rather than the switch.
                (
                    Placement::Colocated,
                    [
                        Metric::RrColocatedAvg,
                        Metric::RrColocatedP50,
                        Metric::RrColocatedP99,
                    ],
                ),
            ] {
                // A kernel switch forwards in the endpoints' own softirq
                // context: it has no threads to place.
                let _pinned_switch = match placement {
                    Placement::Colocated if topo.switch_pids.is_empty() => continue,
                    Placement::Colocated => Some(PinnedThreads::pin(&topo.switch_pids, PIN_CPU)?),
                    _ => None,
                };
                on_run(placement.run_name());
                let (rtt, c) = sockperf(topo, secs, placement != Placement::Free)?;
                cpu = sum_cpu(cpu, c);
                values.extend([
                    (metrics[0], rtt.avg),
                    (metrics[1], rtt.p50),
                    (metrics[2], rtt.p99),
                ]);
            }
            Ok(TestResult { values, cpu })
        }
    }
}

/// What one 64-byte UDP flood measured, in thousands of packets per second.
struct Udp64Rates {
    /// Into the server's interface, as its kernel counts.
    iface_kpps: f64,
    /// Read by iperf3's server.
    app_kpps: f64,
    /// Dropped at the server's socket, its receive buffer full.
    socket_drop_kpps: f64,
}

/// A 64-byte UDP flood at full speed, `extra` added to iperf3's client.
fn udp64(topo: &Topology, secs: u64, extra: &[&str]) -> Result<(Udp64Rates, Cpu)> {
    let rx_before = rx_packets(topo)?;
    let rcvbuf_before = udp_rcvbuf_errors(topo)?;
    let before = sample(&topo.switch_pids);
    let mut args = vec!["-u", "-b", "0", "-l", UDP64_PAYLOAD];
    args.extend_from_slice(extra);
    let json = iperf(topo, secs, &args)?;
    let cpu = cpu_between(&before, &sample(&topo.switch_pids));
    let rx_after = rx_packets(topo)?;
    let rcvbuf_after = udp_rcvbuf_errors(topo)?;
    let sum = json
        .pointer("/end/sum")
        .context("iperf3's JSON has no end.sum")?;
    let seconds = sum
        .get("seconds")
        .and_then(Value::as_f64)
        .filter(|s| *s > 0.0)
        .unwrap_or(secs as f64);
    let packets = sum.get("packets").and_then(Value::as_f64).unwrap_or(0.0);
    let lost = sum
        .get("lost_packets")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let rates = Udp64Rates {
        iface_kpps: rx_after.saturating_sub(rx_before) as f64 / seconds / 1e3,
        app_kpps: (packets - lost).max(0.0) / seconds / 1e3,
        socket_drop_kpps: rcvbuf_after.saturating_sub(rcvbuf_before) as f64 / seconds / 1e3,
    };
    Ok((rates, cpu))
}

/// The first two CPUs this process may run on, if it may run on two.
fn two_cpus() -> Option<[usize; 2]> {
    let mask = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let mut cpus = (0..CpuSet::count()).filter(|&c| mask.is_set(c).unwrap_or(false));
    Some([cpus.next()?, cpus.next()?])
}

/// `iperf3 -c SERVER -t SECS -J EXTRA...` from the client namespace.
fn iperf(topo: &Topology, secs: u64, extra: &[&str]) -> Result<Value> {
    let secs_s = secs.to_string();
    let mut args = vec![
        "iperf3",
        "-c",
        &topo.server_ip,
        "-p",
        IPERF_PORT,
        "-t",
        &secs_s,
        "-J",
    ];
    args.extend_from_slice(extra);
    let out = sys::run_bounded(
        &in_ns(&topo.client_ns, &args),
        &[],
        Duration::from_secs(secs + 30),
    )?;
    let json: Value = serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "iperf3 printed no JSON ({}): {}",
            out.status,
            out.stderr.trim()
        )
    })?;
    if let Some(err) = json.get("error").and_then(Value::as_str) {
        return Err(Error::Tool(format!("iperf3: {err}")));
    }
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "iperf3 failed ({}): {}",
            out.status,
            out.stderr.trim()
        )));
    }
    Ok(json)
}

/// rx_packets of the server's interface, as counted by the kernel.
fn rx_packets(topo: &Topology) -> Result<u64> {
    let out = sys::run(&[
        "ip",
        "-n",
        &topo.server_ns,
        "-s",
        "-j",
        "link",
        "show",
        "dev",
        &topo.server_if,
    ])?;
    let json: Value = serde_json::from_str(&out).context("reading `ip -s -j link`")?;
    json.pointer("/0/stats64/rx/packets")
        .and_then(Value::as_u64)
        .context("`ip -s -j link` shows no stats64.rx.packets")
}

/// `UdpRcvbufErrors` in the server's namespace: datagrams its UDP sockets
/// dropped because their receive buffer was full.
fn udp_rcvbuf_errors(topo: &Topology) -> Result<u64> {
    let out = sys::run(&in_ns(&topo.server_ns, &["cat", "/proc/net/snmp"]))?;
    parse_udp_rcvbuf_errors(&out)
        .context("/proc/net/snmp in the server's namespace has no Udp: RcvbufErrors")
}

/// `RcvbufErrors` of the `Udp:` lines of `/proc/net/snmp` (a line of names,
/// then a line of values).
fn parse_udp_rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp
        .lines()
        .filter_map(|l| l.strip_prefix("Udp:"))
        .map(str::split_whitespace);
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.into_iter().position(|n| n == "RcvbufErrors")?;
    values.into_iter().nth(i)?.parse().ok()
}

/// Round-trip times in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rtt {
    pub avg: f64,
    pub p50: f64,
    pub p99: f64,
}

/// The CPU the pinned round-trip runs put both endpoints (and, co-located,
/// the switch's threads) on.
const PIN_CPU: usize = 0;

/// Where a round-trip run places its parties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Both sockperf ends on [`PIN_CPU`]; the switch where the scheduler
    /// puts it.
    Pinned,
    /// Both ends and every thread of the switch's processes on
    /// [`PIN_CPU`], as the kernel's forwarding is (it runs in the
    /// endpoints' softirq context).
    Colocated,
    /// Nothing pinned.
    Free,
}

impl Placement {
    fn run_name(self) -> &'static str {
        match self {
            Placement::Pinned => "rr (pinned)",
            Placement::Colocated => "rr (pinned with the switch)",
            Placement::Free => "rr (unpinned)",
        }
    }
}

/// Every thread of some processes held on one CPU; their earlier CPU
/// masks come back on drop.
struct PinnedThreads {
    saved: Vec<(Pid, CpuSet)>,
}

impl PinnedThreads {
    fn pin(pids: &[u32], cpu: usize) -> Result<Self> {
        let mut only = CpuSet::new();
        only.set(cpu)
            .map_err(|e| Error::Tool(format!("cannot name CPU {cpu}: {e}")))?;
        let mut pinned = PinnedThreads { saved: Vec::new() };
        for pid in pids {
            let tasks = fs::read_dir(format!("/proc/{pid}/task"))
                .with_context(|| format!("cannot list the threads of switch process {pid}"))?;
            for task in tasks.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                let tid = Pid::from_raw(tid);
                // A thread that ended meanwhile is not an error.
                let Ok(mask) = sched_getaffinity(tid) else {
                    continue;
                };
                if sched_setaffinity(tid, &only).is_ok() {
                    pinned.saved.push((tid, mask));
                }
            }
        }
        Ok(pinned)
    }
}

impl Drop for PinnedThreads {
    fn drop(&mut self) {
        for (tid, mask) in &self.saved {
            let _ = sched_setaffinity(*tid, mask);
        }
    }
}

fn sockperf(topo: &Topology, secs: u64, pinned: bool) -> Result<(Rtt, Cpu)> {
    let cpu = PIN_CPU.to_string();
    let pin: &[&str] = if pinned {
        &["taskset", "-c", &cpu]
    } else {
        &[]
    };
    let mut server = pin.to_vec();
    server.extend(["sockperf", "sr", "-i", &topo.server_ip, "-p", SOCKPERF_PORT]);
    let log = topo.dir.join(format!(
        "sockperf-server-{}.log",
        if pinned { "pinned" } else { "free" }
    ));
    let mut proc = Proc::spawn(&in_ns(&topo.server_ns, &server), &log, &[], false)?;
    wait_listening(topo, &mut proc, "-lun", SOCKPERF_PORT)?;
    let secs_s = secs.to_string();
    let mut client = pin.to_vec();
    client.extend([
        "sockperf",
        "pp",
        "-i",
        &topo.server_ip,
        "-p",
        SOCKPERF_PORT,
        "--time",
        &secs_s,
        "-m",
        "64",
        "--full-rtt",
    ]);
    let before = sample(&topo.switch_pids);
    let out = sys::run_bounded(
        &in_ns(&topo.client_ns, &client),
        &[],
        Duration::from_secs(secs + 30),
    )?;
    let cpu = cpu_between(&before, &sample(&topo.switch_pids));
    drop(proc);
    let text = format!("{}\n{}", out.stdout, out.stderr);
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "sockperf pp failed ({}): {}",
            out.status,
            last_line(&strip_ansi(&text))
        )));
    }
    let rtt = parse_sockperf(&text).with_context(|| {
        format!(
            "cannot read sockperf's output: {}",
            last_line(&strip_ansi(&text))
        )
    })?;
    Ok((rtt, cpu))
}

fn last_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no output")
}

/// Removes terminal colour sequences (`ESC [ ... m`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// avg, median and p99 from `sockperf pp --full-rtt` (or its half-RTT
/// `avg-latency` form, doubled).
pub fn parse_sockperf(text: &str) -> Result<Rtt> {
    let text = strip_ansi(text);
    let number_after = |key: &str| -> Option<f64> {
        let start = text.find(key)? + key.len();
        let rest = text[start..].trim_start_matches([' ', '=']);
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let (avg, factor) = if let Some(v) = number_after("avg-rtt=") {
        (v, 1.0)
    } else if let Some(v) = number_after("avg-latency=") {
        (v, 2.0)
    } else {
        return Err(Error::Tool("no avg-rtt in the output".into()));
    };
    let p50 = number_after("percentile 50.000 =").context("no 50th percentile")?;
    let p99 = number_after("percentile 99.000 =").context("no 99th percentile")?;
    Ok(Rtt {
        avg: avg * factor,
        p50: p50 * factor,
        p99: p99 * factor,
    })
}

#[cfg(test)]
mod tests {
    /// Pinning holds every thread of the process on the CPU, and dropping
    /// the pin gives each its earlier mask back.
    #[test]
    fn pinned_threads_come_back_to_their_mask() {
        let me = Pid::from_raw(0);
        let before = sched_getaffinity(me).expect("read this thread's mask");
        let Some(cpu) = (0..CpuSet::count()).find(|c| before.is_set(*c).unwrap_or(false)) else {
            panic!("this thread may run on no CPU");
        };
        {
            let _pin = PinnedThreads::pin(&[std::process::id()], cpu).expect("pin");
            let during = sched_getaffinity(me).expect("read the mask");
            for c in 0..CpuSet::count() {
                assert_eq!(during.is_set(c).unwrap(), c == cpu, "CPU {c} while pinned");
            }
        }
        let after = sched_getaffinity(me).expect("read the mask");
        assert_eq!(after, before);
    }

    use super::*;

    const SOCKPERF: &str = "sockperf: [Valid Duration] RunTime=1.550 sec\n\
        sockperf: \u{1b}[2;35m====> avg-rtt=58.863 (std-dev=112.913)\u{1b}[0m\n\
        sockperf: ---> percentile 99.000 =  225.648\n\
        sockperf: ---> percentile 90.000 =  129.049\n\
        sockperf: ---> percentile 50.000 =    7.220\n";

    #[test]
    fn sockperf_output_is_parsed() {
        let rtt = parse_sockperf(SOCKPERF).unwrap();
        assert_eq!(
            rtt,
            Rtt {
                avg: 58.863,
                p50: 7.22,
                p99: 225.648
            }
        );
        let half = SOCKPERF.replace("avg-rtt", "avg-latency");
        assert_eq!(parse_sockperf(&half).unwrap().p50, 14.44);
        assert!(parse_sockperf("nothing").is_err());
    }

    #[test]
    fn udp_receive_buffer_errors_are_found_by_name() {
        let snmp = "Icmp: InMsgs InErrors\n\
            Icmp: 3 0\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
            Udp: 1029 2 986 1040 984 0 2 0 0\n\
            UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
            UdpLite: 0 0 0 0 7 0 0 0 0\n";
        assert_eq!(parse_udp_rcvbuf_errors(snmp), Some(984));
        assert_eq!(parse_udp_rcvbuf_errors("Udp: InDatagrams\nUdp: 5\n"), None);
        assert_eq!(parse_udp_rcvbuf_errors("Udp: RcvbufErrors\n"), None);
        assert_eq!(parse_udp_rcvbuf_errors("Udp: RcvbufErrors\nUdp: x\n"), None);
        assert_eq!(parse_udp_rcvbuf_errors(""), None);
    }

    #[test]
    fn proc_stat_fields_are_found_after_the_name() {
        let line = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0";
        assert_eq!(parse_proc_stat(line), Some(12));
    }

    #[test]
    fn machine_busy_excludes_idle_and_iowait() {
        let stat = "cpu  10 1 5 100 7 2 3 4 9 9\ncpu0 1 1 1 1 1 1 1 1\n";
        assert_eq!(parse_machine_busy(stat), Some(10 + 1 + 5 + 2 + 3 + 4));
    }
}
