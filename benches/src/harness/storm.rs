//! `weft bench --scenario storm`: whether storm control keeps one
//! endpoint's broadcast storm from taking throughput away from the others.
//!
//! One weft daemon, one network, three endpoints in namespaces of their own
//! (`weft-b<pid>-st<on|off>-cli|srv|flood`): pair B (client and server,
//! the same-host topology of [`super::topology`]) and endpoint A, the
//! flooder. It measures pair B's single-stream TCP throughput (iperf3)
//! quiet, then while A sends broadcast ARP requests (RFC 826) for an
//! address nobody has, as fast as one thread can, on an `AF_PACKET`
//! socket opened inside A's namespace ([`weft_os::packet`]). Every such
//! request is flooded to every other port of the network unless storm
//! control stops it. The storm runs twice: with the daemon's default limits
//! and with a daemon started with every limit at 0 (off). For reference it
//! also measures pair B while the same sender floods a veth pair inside
//! A's namespace, which weft never sees: what the sender's own CPU takes
//! from pair B on this machine, storm control or not. And to show what
//! the same storm costs a kernel switch here, it builds the same three
//! endpoints on a Linux bridge (the same-host scenario's kernel-bridge
//! topology of [`super::topology`], with a third port for A) and measures
//! pair B quiet and under the same sender flooding the same request from
//! A: the kernel bridge has no storm control, so it floods every request
//! to both of B's ports.
//!
//! It reports the quiet figure, the figure under each storm and its ratio
//! to quiet and to the sender-alone reference, the storm's offered rate
//! (frames the sender handed to the kernel per second), the frames weft
//! read from A per second, the drops weft counted against A's port for
//! storm control (`storm_*` reasons of `weft stats`), the times weft
//! stopped reading A's port for storm control (`storm_pauses`), and the
//! frames the kernel dropped from A's TAP queue while weft was not reading
//! it (the TAP's TX drops in A's namespace): every offered frame is either
//! read by weft or dropped there. The target (issue 13): with storm control on,
//! pair B keeps more than 80% of its quiet throughput.
//!
//! Everything (namespaces, the bridge, daemons, iperf3, the sender thread, files) is
//! removed on every exit path: the guards of [`super::sys`] and
//! [`Flood`]'s drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use weft_api::{client, Request};
use weft_os::packet::PacketSocket;

use super::error::{Context as _, Error, Result};
use super::measure::{self, Test};
use super::sys::{self, in_ns, Guard};
use super::topology::{self, Ctx, Topology};
use super::{report, Reporter};

/// The throughput pair B must keep under a storm with storm control on.
pub const TARGET_RATIO: f64 = 0.8;
/// Flags that turn storm control off.
const STORM_OFF: [&str; 6] = [
    "--storm-broadcast",
    "0",
    "--storm-multicast",
    "0",
    "--storm-unknown-unicast",
    "0",
];
/// The storm runs this long before the measurement starts, so that the
/// measurement sees the storm's steady state.
const RAMP: Duration = Duration::from_millis(500);
/// The interface the reference storm goes to: one end of a veth pair in
/// A's namespace (deleted with it), whose other end drops the requests.
const SINK: &str = "storm0";

/// The reference storm's veth pair in `ns`, up.
fn sink(ns: &str) -> Result<()> {
    sys::run(&in_ns(
        ns,
        &[
            "ip", "link", "add", SINK, "type", "veth", "peer", "name", "storm1",
        ],
    ))?;
    for dev in [SINK, "storm1"] {
        sys::run(&in_ns(ns, &["ip", "link", "set", dev, "up"]))?;
    }
    Ok(())
}

/// What the storm scenario measures and where it writes.
#[derive(Debug, Clone)]
pub struct StormOptions {
    /// The weft binary to start daemons from.
    pub exe: PathBuf,
    /// The version recorded in results.json.
    pub version: String,
    /// Seconds each throughput measurement runs.
    pub duration: u64,
    /// Where results.json goes.
    pub out: PathBuf,
}

/// Pair B's throughput under a storm, and the storm.
#[derive(Debug, Clone, Default)]
pub struct UnderStorm {
    pub gbps: f64,
    /// Frames the sender handed to the kernel, per second.
    pub offered_pps: f64,
    /// Frames weft read from the flooder's port, per second.
    pub received_pps: f64,
    /// Drops counted against the flooder's port for storm control, by
    /// reason (`storm_broadcast`, ...).
    pub drops: Vec<(String, u64)>,
    /// Times weft stopped reading the flooder's port (`storm_pauses`).
    pub pauses: u64,
    /// Frames the kernel dropped from the flooder's TAP queue, per second.
    pub kernel_dropped_pps: f64,
}

impl UnderStorm {
    pub fn storm_drops(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }
}

/// The scenario's figures.
#[derive(Debug, Clone)]
pub struct StormResults {
    pub quiet_gbps: f64,
    /// The sender flooding a veth pair in A's namespace: weft sees none
    /// of it.
    pub alone: std::result::Result<UnderStorm, String>,
    pub on: std::result::Result<UnderStorm, String>,
    /// Storm control on, with the storm paced to the rate the kernel
    /// bridge's sender reached (on the bridge the sender pays for the
    /// flooding, which slows it): the two switches under an equal storm.
    pub on_at_bridge_rate: std::result::Result<UnderStorm, String>,
    pub off: std::result::Result<UnderStorm, String>,
    /// The same on a Linux bridge.
    pub bridge: std::result::Result<BridgeResults, String>,
}

/// Pair B on a Linux bridge, quiet and under the storm. The storm's
/// `received_pps` is what the bridge read from A's port; it has no storm
/// drops or pauses.
#[derive(Debug, Clone)]
pub struct BridgeResults {
    pub quiet_gbps: f64,
    pub storm: std::result::Result<UnderStorm, String>,
}

impl BridgeResults {
    /// The storm's throughput over this bridge's own quiet figure.
    fn ratio(&self) -> Option<f64> {
        let s = self.storm.as_ref().ok()?;
        (self.quiet_gbps > 0.0).then(|| s.gbps / self.quiet_gbps)
    }
}

impl StormResults {
    fn ratio(&self, r: &std::result::Result<UnderStorm, String>) -> Option<f64> {
        let s = r.as_ref().ok()?;
        (self.quiet_gbps > 0.0).then(|| s.gbps / self.quiet_gbps)
    }

    /// `r`'s throughput over the sender-alone reference's: what weft's
    /// own handling of the storm costs, apart from the sender's CPU.
    fn ratio_to_alone(&self, r: &std::result::Result<UnderStorm, String>) -> Option<f64> {
        let alone = self.alone.as_ref().ok()?.gbps;
        let s = r.as_ref().ok()?;
        (alone > 0.0).then(|| s.gbps / alone)
    }
}

/// Runs the storm scenario; writes `results.json` to `opts.out`.
pub fn run(opts: &StormOptions, report: &dyn Reporter) -> Result<StormResults> {
    if !client::is_privileged() {
        return Err(Error::NotRoot {
            exe: opts.exe.clone(),
        });
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("ss", "iproute2"),
        ("iperf3", "iperf3"),
    ] {
        if sys::find_in_path(tool).is_none() {
            return Err(Error::MissingTool { tool, package });
        }
    }
    sys::catch_interrupts()?;
    fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let result = measure_all(opts, report);
    if result.is_err() {
        // Still empty after a failure or an interruption: no reason to
        // keep it (every guard has been dropped by now).
        let _ = fs::remove_dir(&opts.out);
    }
    result
}

/// [`run`] once the output directory exists.
fn measure_all(opts: &StormOptions, report: &dyn Reporter) -> Result<StormResults> {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let pid = std::process::id();
    let mut top = Guard::new(report);
    let tmp = std::env::temp_dir().join(format!("weft-b{pid}"));
    top.add_dir(&tmp)?;
    let ctx = Ctx {
        exe: &opts.exe,
        baseline_exe: None,
        prefix: format!("weft-b{pid}"),
        tmp,
        report,
    };
    let secs = opts.duration;

    // The bridge first: its storm's rate paces one of weft's storms.
    report.status(&format!(
        "weft bench storm: kernel bridge: pair B quiet, then under an ARP storm, {secs} s each"
    ));
    let bridge = keep_going(bridge_run(&ctx, secs))?;
    let bridge_rate = bridge
        .as_ref()
        .ok()
        .and_then(|b| b.storm.as_ref().ok())
        .map(|u| u.offered_pps);
    report.status(&format!(
        "weft bench storm: default storm limits: pair B quiet, {secs} s"
    ));
    let (quiet_gbps, alone, on, on_at_bridge_rate) = {
        let mut net = build(&ctx, "ston", &[])?;
        let quiet = tcp1(&net.topo, &mut net.servers, secs)?;
        report.status(&format!(
            "weft bench storm: pair B while the sender floods a veth in A's namespace, {secs} s"
        ));
        let alone = sink(&net.flood_ns).and_then(|_| under_storm(&mut net, secs, SINK, None));
        let alone = keep_going(alone)?;
        report.status(&format!(
            "weft bench storm: default storm limits: pair B under an ARP storm, {secs} s"
        ));
        let flood_if = net.flood_if.clone();
        let on = keep_going(under_storm(&mut net, secs, &flood_if, None))?;
        let paced = match bridge_rate {
            Some(rate) if rate >= 1.0 => {
                report.status(&format!(
                    "weft bench storm: default storm limits: pair B under the ARP storm paced to the bridge's {rate:.0} frames/s, {secs} s"
                ));
                under_storm(&mut net, secs, &flood_if, Some(rate))
            }
            _ => Err(Error::Tool("no kernel bridge storm rate to pace to".into())),
        };
        (quiet, alone, on, keep_going(paced)?)
    };
    report.status(&format!(
        "weft bench storm: storm control off: pair B under an ARP storm, {secs} s"
    ));
    let off = match build(&ctx, "stoff", &STORM_OFF) {
        Ok(mut net) => {
            let flood_if = net.flood_if.clone();
            under_storm(&mut net, secs, &flood_if, None)
        }
        Err(e) => Err(e),
    };
    let off = keep_going(off)?;
    sys::check_interrupted()?;
    drop(top);

    let results = StormResults {
        quiet_gbps,
        alone,
        on,
        on_at_bridge_rate,
        off,
        bridge,
    };
    report.table(&table(&results));
    let doc = json_doc(&results, opts, started);
    let file = opts.out.join("results.json");
    fs::write(
        &file,
        serde_json::to_string_pretty(&doc).context("encoding results")? + "\n",
    )
    .with_context(|| format!("cannot write {}", file.display()))?;
    report.status(&format!("weft bench storm: wrote {}", file.display()));
    Ok(results)
}

/// An interruption ends the run; any other failure of one configuration
/// is kept as its note.
fn keep_going<T>(r: Result<T>) -> Result<std::result::Result<T, String>> {
    match r {
        Err(e) if e.is_interrupted() => Err(e),
        r => Ok(r.map_err(|e| e.message())),
    }
}

/// The three endpoints on one daemon, and pair B's iperf3 server.
struct Net<'r> {
    // Dropped first: the server runs inside the topology's namespace.
    servers: measure::Servers,
    topo: Topology<'r>,
    socket: PathBuf,
    flood_ns: String,
    /// The flooder's interface, MAC and address.
    flood_if: String,
    flood_mac: [u8; 6],
    flood_ip: std::net::Ipv4Addr,
    /// An address of the subnet nobody has: what the storm asks for.
    nobody: std::net::Ipv4Addr,
}

/// A daemon started with `daemon_args`, its network and three endpoints,
/// tagged `tag` in names.
fn build<'r>(ctx: &Ctx<'r>, tag: &str, daemon_args: &[&str]) -> Result<Net<'r>> {
    let mut topo = Topology::empty(ctx, tag)?;
    let ns = |role: &str| topology::ns_name(ctx, tag, role);
    let socket = topology::start_weft(ctx.exe, &mut topo, "weft", None, daemon_args)?;
    let flood_ns = ns("flood");
    for n in [
        topo.client_ns.clone(),
        topo.server_ns.clone(),
        flood_ns.clone(),
    ] {
        topo.guard.add_netns(&n)?;
    }
    topology::weft_network(&socket, "10.236.0.0/24", None, None)?;
    topology::weft_attach(&socket, &topo.client_ns.clone(), "cli")?;
    let server = topology::weft_attach(&socket, &topo.server_ns.clone(), "srv")?;
    topo.server_ip = server.ip.addr().to_string();
    topo.server_if = server.ifname;
    let flood = topology::weft_attach(&socket, &flood_ns, "flood")?;
    topology::wait_reachable(&topo)?;
    let flood_mac = parse_mac(&flood.mac)
        .with_context(|| format!("attach returned the MAC {:?}", flood.mac))?;
    let servers = measure::start_servers(&topo, &[Test::Tcp1])?;
    Ok(Net {
        servers,
        topo,
        socket,
        flood_ns,
        flood_if: flood.ifname,
        flood_mac,
        flood_ip: flood.ip.addr(),
        nobody: std::net::Ipv4Addr::new(10, 236, 0, 250),
    })
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// One iperf3 TCP stream from B's client to its server, in Gbit/s.
fn tcp1(topo: &Topology, servers: &mut measure::Servers, secs: u64) -> Result<f64> {
    let r = measure::run_test(topo, servers, Test::Tcp1, secs, &mut |_| {})?;
    r.values
        .first()
        .map(|(_, g)| *g)
        .context("iperf3 gave no throughput")
}

/// Pair B's throughput while the sender floods `frame` out of `ifname`
/// in `flood_ns`, as fast as it can or paced to `rate` frames/s: Gbit/s,
/// frames the kernel took and how long the storm ran.
fn flood_during(
    topo: &Topology,
    servers: &mut measure::Servers,
    flood_ns: &str,
    ifname: &str,
    frame: [u8; 42],
    secs: u64,
    rate: Option<f64>,
) -> Result<(f64, u64, f64)> {
    let ns_path = Path::new("/var/run/netns").join(flood_ns);
    let ifname = ifname.to_string();
    let sock = weft_os::netns::run_in_netns(&ns_path, move || PacketSocket::open(&ifname))
        .map_err(|e| Error::Tool(format!("cannot enter {}: {e}", ns_path.display())))?
        .map_err(|e| Error::Tool(format!("cannot open a packet socket in the flooder: {e}")))?;
    let flood = Flood::start(sock, frame, rate)?;
    std::thread::sleep(RAMP);
    let gbps = tcp1(topo, servers, secs);
    let (sent, took) = flood.stop();
    Ok((gbps?, sent, took.as_secs_f64().max(1e-3)))
}

/// Pair B's throughput while A floods out of its interface `ifname` (as
/// fast as it can, or paced to `rate` frames/s), and the storm's figures.
fn under_storm(net: &mut Net, secs: u64, ifname: &str, rate: Option<f64>) -> Result<UnderStorm> {
    let before = flooder_counters(net)?;
    let kernel_before = tx_dropped(&net.flood_ns, &net.flood_if)?;
    let frame = arp_request(net.flood_mac, net.flood_ip, net.nobody);
    let (gbps, sent, took) = flood_during(
        &net.topo,
        &mut net.servers,
        &net.flood_ns,
        ifname,
        frame,
        secs,
        rate,
    )?;
    // What weft read late is still counted.
    std::thread::sleep(Duration::from_millis(200));
    let after = flooder_counters(net)?;
    let kernel = tx_dropped(&net.flood_ns, &net.flood_if)?.saturating_sub(kernel_before);
    let drops = after
        .drops
        .iter()
        .map(|(k, v)| {
            let was = before
                .drops
                .iter()
                .find(|(b, _)| b == k)
                .map_or(0, |(_, n)| *n);
            (k.clone(), v.saturating_sub(was))
        })
        .collect();
    Ok(UnderStorm {
        gbps,
        offered_pps: sent as f64 / took,
        received_pps: after.rx.saturating_sub(before.rx) as f64 / took,
        drops,
        pauses: after.pauses.saturating_sub(before.pauses),
        kernel_dropped_pps: kernel as f64 / took,
    })
}

/// The TX drops the kernel counted on `dev` in `ns`: on the flooder's
/// TAP, frames A sent that found the queue weft reads full; on its veth,
/// frames the bridge's side had no room for.
fn tx_dropped(ns: &str, dev: &str) -> Result<u64> {
    link_stat(ns, dev, "tx", "dropped")
}

/// One counter of `ip -s link` for `dev` in `ns`.
fn link_stat(ns: &str, dev: &str, dir: &str, name: &str) -> Result<u64> {
    let out = sys::run(&in_ns(ns, &["ip", "-s", "-j", "link", "show", "dev", dev]))?;
    let v: Value = serde_json::from_str(&out).context("`ip -s -j link` gave no JSON")?;
    v[0]["stats64"][dir][name]
        .as_u64()
        .with_context(|| format!("`ip -s -j link` shows no {dir} {name} for {dev}"))
}

/// The bridge's port for A, in the bridge's namespace.
const BRIDGE_FLOOD_PORT: &str = "p-flood";

/// Pair B on a Linux bridge with A on a third port: quiet, then under
/// the storm.
fn bridge_run(ctx: &Ctx, secs: u64) -> Result<BridgeResults> {
    let tag = "stbr";
    let mut topo = Topology::empty(ctx, tag)?;
    let ns = |role: &str| topology::ns_name(ctx, tag, role);
    let sw = ns("sw");
    topology::kernel_bridge(&mut topo, &sw)?;
    let flood_ns = ns("flood");
    topo.guard.add_netns(&flood_ns)?;
    topology::bridge_port(&sw, BRIDGE_FLOOD_PORT, &flood_ns, "10.232.0.4/24")?;
    topology::wait_reachable(&topo)?;
    let out = sys::run(&in_ns(
        &flood_ns,
        &["ip", "-j", "link", "show", "dev", "eth0"],
    ))?;
    let v: Value = serde_json::from_str(&out).context("`ip -j link` gave no JSON")?;
    let mac = v[0]["address"].as_str().unwrap_or_default();
    let mac = parse_mac(mac).with_context(|| format!("A's eth0 has the MAC {mac:?}"))?;
    // Dropped before the topology: it runs in the server's namespace.
    let mut servers = measure::start_servers(&topo, &[Test::Tcp1])?;
    let quiet_gbps = tcp1(&topo, &mut servers, secs)?;
    let storm = (|| {
        let read_before = link_stat(&sw, BRIDGE_FLOOD_PORT, "rx", "packets")?;
        let dropped_before = tx_dropped(&flood_ns, "eth0")?;
        let frame = arp_request(
            mac,
            std::net::Ipv4Addr::new(10, 232, 0, 4),
            std::net::Ipv4Addr::new(10, 232, 0, 250),
        );
        let (gbps, sent, took) =
            flood_during(&topo, &mut servers, &flood_ns, "eth0", frame, secs, None)?;
        let read = link_stat(&sw, BRIDGE_FLOOD_PORT, "rx", "packets")?.saturating_sub(read_before);
        let dropped = tx_dropped(&flood_ns, "eth0")?.saturating_sub(dropped_before);
        Ok(UnderStorm {
            gbps,
            offered_pps: sent as f64 / took,
            received_pps: read as f64 / took,
            drops: Vec::new(),
            pauses: 0,
            kernel_dropped_pps: dropped as f64 / took,
        })
    })();
    drop(servers);
    Ok(BridgeResults {
        quiet_gbps,
        storm: keep_going(storm)?,
    })
}

/// The flooder's port counters in `weft stats`.
struct Counters {
    rx: u64,
    pauses: u64,
    /// `storm_*` drops by reason.
    drops: Vec<(String, u64)>,
}

fn flooder_counters(net: &Net) -> Result<Counters> {
    let stats = client::call(&net.socket, &Request::Stats).context("`weft stats` failed")?;
    let port = stats["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["endpoint"] == "flood"))
        .context("`weft stats` shows no port for the flooder")?;
    let drops = port["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with("storm_"))
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Counters {
        rx: port["rx_packets"].as_u64().unwrap_or(0),
        pauses: port["storm_pauses"].as_u64().unwrap_or(0),
        drops,
    })
}

/// A broadcast ARP request (RFC 826) from `mac`/`ip` for `target`.
fn arp_request(mac: [u8; 6], ip: std::net::Ipv4Addr, target: std::net::Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    // EtherType ARP; Ethernet, IPv4, lengths 6 and 4, operation request.
    f[12..22].copy_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// The storm: one thread sending the same frame on a packet socket as
/// fast as it can until stopped. Dropping it stops the thread and closes
/// the socket.
/// Frames the paced flooder sends between its sleeps.
const PACE_BURST: u64 = 32;

struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, Duration)>>,
}

impl Flood {
    /// Floods `frame` as fast as the kernel takes it, or paced to `rate`
    /// frames/s (in bursts of [`PACE_BURST`], sleeping between them).
    fn start(sock: PacketSocket, frame: [u8; 42], rate: Option<f64>) -> Result<Flood> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("weft-bench-storm".into())
            .spawn(move || {
                let started = Instant::now();
                let mut sent = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    if let Some(rate) = rate {
                        // Ahead of the schedule: wait for it.
                        let due = started + Duration::from_secs_f64(sent as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    for _ in 0..PACE_BURST {
                        // A full queue (WouldBlock, ENOBUFS) is tried again:
                        // only frames the kernel took are offered.
                        if sock.send(&frame).is_ok() {
                            sent += 1;
                        }
                    }
                }
                (sent, started.elapsed())
            })
            .context("cannot start the storm thread")?;
        Ok(Flood {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the storm: frames sent and for how long.
    fn stop(mut self) -> (u64, Duration) {
        self.halt().unwrap_or_default()
    }

    fn halt(&mut self) -> Option<(u64, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()?.join().ok()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.0}%", x * 100.0))
}

/// The table: pair B's throughput quiet and under each storm; "of alone"
/// is the figure over the sender-alone reference's; "switch read" is what
/// weft, or the kernel bridge, read from A's port. The kernel bridge's
/// rows are over its own quiet figure.
pub fn table(r: &StormResults) -> String {
    let row = |cells: [&str; 9]| {
        format!(
            "{:<26} | {:>7} | {:>8} | {:>8} | {:>12} | {:>15} | {:>11} | {:>7} | {:>16}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8]
        )
    };
    // A quiet run is its own reference: only its rate is shown.
    let quiet_row = |name: &str, gbps: f64| {
        let gbps = format!("{gbps:.2}");
        row([name, &gbps, "100%", "-", "-", "-", "-", "-", "-"])
    };
    let mut s = "storm: pair B, one TCP stream, while endpoint A floods broadcast ARP requests\n"
        .to_string();
    s += &row([
        "",
        "Gbit/s",
        "of quiet",
        "of alone",
        "offered f/s",
        "switch read f/s",
        "storm drops",
        "pauses",
        "kernel drops f/s",
    ]);
    s += &quiet_row("quiet", r.quiet_gbps);
    for (name, run, reference) in [
        ("sender alone (veth in A)", &r.alone, true),
        ("storm, storm control on", &r.on, false),
        ("same, at the bridge's rate", &r.on_at_bridge_rate, false),
        ("storm, storm control off", &r.off, false),
    ] {
        match run {
            Ok(u) => {
                s += &row([
                    name,
                    &format!("{:.2}", u.gbps),
                    &pct(r.ratio(run)),
                    &if reference {
                        "-".into()
                    } else {
                        pct(r.ratio_to_alone(run))
                    },
                    &format!("{:.0}", u.offered_pps),
                    &format!("{:.0}", u.received_pps),
                    &u.storm_drops().to_string(),
                    &u.pauses.to_string(),
                    &format!("{:.0}", u.kernel_dropped_pps),
                ]);
            }
            Err(e) => s += &format!("{name:<26} | failed: {e}\n"),
        }
    }
    match &r.bridge {
        Ok(b) => {
            s += &quiet_row("kernel bridge quiet", b.quiet_gbps);
            match &b.storm {
                Ok(u) => {
                    s += &row([
                        "kernel bridge, storm",
                        &format!("{:.2}", u.gbps),
                        &pct(b.ratio()),
                        "-",
                        &format!("{:.0}", u.offered_pps),
                        &format!("{:.0}", u.received_pps),
                        "-",
                        "-",
                        &format!("{:.0}", u.kernel_dropped_pps),
                    ])
                }
                Err(e) => s += &format!("{:<26} | failed: {e}\n", "kernel bridge, storm"),
            }
        }
        Err(e) => s += &format!("{:<26} | failed: {e}\n", "kernel bridge"),
    }
    if let (Ok(b), Some(x)) = (&r.bridge, r.ratio(&r.on_at_bridge_rate)) {
        if let Some(y) = b.ratio() {
            s += &format!(
                "under an equal storm (the rate the bridge's sender reached): pair B keeps {} of quiet on weft, {} on the kernel bridge\n",
                pct(Some(x)),
                pct(Some(y))
            );
        }
    }
    if let Some(x) = r.ratio(&r.on) {
        s += &format!(
            "target: pair B keeps more than {:.0}% of its quiet throughput with storm control on: {}\n",
            TARGET_RATIO * 100.0,
            if x > TARGET_RATIO { "met" } else { "NOT met" }
        );
    }
    s
}

fn json_doc(r: &StormResults, opts: &StormOptions, started: u64) -> Value {
    let run = |x: &std::result::Result<UnderStorm, String>| match x {
        Ok(u) => json!({
            "gbit_s": u.gbps,
            "ratio_to_quiet": r.ratio(x),
            "ratio_to_sender_alone": r.ratio_to_alone(x),
            "offered_frames_s": u.offered_pps,
            "weft_received_frames_s": u.received_pps,
            "storm_drops": u.storm_drops(),
            "storm_pauses": u.pauses,
            "kernel_dropped_frames_s": u.kernel_dropped_pps,
            "storm_drops_by_reason": u
                .drops
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>(),
        }),
        Err(e) => json!({ "error": e }),
    };
    json!({
        "scenario": "storm",
        "weft_version": opts.version,
        "started_unix": started,
        "duration_s": opts.duration,
        "machine": report::machine(),
        "quiet_gbit_s": r.quiet_gbps,
        "sender_alone": run(&r.alone),
        "storm_control_on": run(&r.on),
        "storm_control_on_at_bridge_rate": run(&r.on_at_bridge_rate),
        "storm_control_off": run(&r.off),
        "kernel_bridge": match &r.bridge {
            Ok(b) => json!({
                "quiet_gbit_s": b.quiet_gbps,
                "storm": match &b.storm {
                    Ok(u) => json!({
                        "gbit_s": u.gbps,
                        "ratio_to_quiet": b.ratio(),
                        "offered_frames_s": u.offered_pps,
                        "bridge_received_frames_s": u.received_pps,
                        "kernel_dropped_frames_s": u.kernel_dropped_pps,
                    }),
                    Err(e) => json!({ "error": e }),
                },
            }),
            Err(e) => json!({ "error": e }),
        },
        "target_ratio": TARGET_RATIO,
        "target_met": r.ratio(&r.on).map(|x| x > TARGET_RATIO),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storm(gbps: f64, drops: u64) -> std::result::Result<UnderStorm, String> {
        Ok(UnderStorm {
            gbps,
            offered_pps: 500_000.0,
            received_pps: 100_000.0,
            drops: vec![("storm_broadcast".into(), drops)],
            pauses: 77,
            kernel_dropped_pps: 400_000.0,
        })
    }

    #[test]
    fn the_table_shows_ratios_the_target_and_failures() {
        let r = StormResults {
            quiet_gbps: 10.0,
            alone: storm(9.0, 0),
            on: storm(8.1, 1234),
            on_at_bridge_rate: storm(9.5, 10),
            off: Err("`weft daemon` exited".into()),
            bridge: Ok(BridgeResults {
                quiet_gbps: 20.0,
                storm: storm(5.0, 0),
            }),
        };
        let t = table(&r);
        assert!(
            t.contains("kernel bridge quiet        |   20.00 |     100% |"),
            "{t}"
        );
        assert!(
            t.contains("kernel bridge, storm       |    5.00 |      25% |        - |"),
            "{t}"
        );
        assert!(t.contains("|    8.10 |      81% |      90% |"), "{t}");
        assert!(t.contains("1234 |      77 |           400000"), "{t}");
        assert!(
            t.contains("storm, storm control off   | failed: `weft daemon` exited"),
            "{t}"
        );
        assert!(
            t.contains("same, at the bridge's rate |    9.50 |      95% |     106% |"),
            "{t}"
        );
        assert!(
            t.contains("equal storm (the rate the bridge's sender reached): pair B keeps 95% of quiet on weft, 25% on the kernel bridge"),
            "{t}"
        );
        assert!(t.ends_with("storm control on: met\n"), "{t}");
        let r = StormResults {
            on: storm(5.0, 1),
            bridge: Err("no bridge".into()),
            ..r
        };
        let t = table(&r);
        assert!(t.ends_with("NOT met\n"), "{t}");
        assert!(
            t.contains("kernel bridge              | failed: no bridge"),
            "{t}"
        );
    }

    #[test]
    fn the_storm_frame_is_a_broadcast_arp_request() {
        let f = arp_request(
            [2, 0, 0, 0, 0, 1],
            "10.236.0.4".parse().unwrap(),
            "10.236.0.250".parse().unwrap(),
        );
        assert_eq!(f[..6], [0xff; 6]);
        assert_eq!(f[12..14], [0x08, 0x06]);
        assert_eq!(f[20..22], [0, 1]);
        assert_eq!(f[22..28], [2, 0, 0, 0, 0, 1]);
        assert_eq!(f[28..32], [10, 236, 0, 4]);
        assert_eq!(f[38..42], [10, 236, 0, 250]);
        assert_eq!(parse_mac("02:00:00:00:00:01"), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(parse_mac("02:00"), None);
    }
}
