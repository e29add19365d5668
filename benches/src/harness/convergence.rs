//! `weft bench --scenario convergence --hosts N`: how fast a new endpoint
//! becomes reachable from every other host of a cluster joined through etcd
//! (`weft daemon --store`).
//!
//! The topology: one underlay namespace with a kernel bridge and one etcd
//! (198.18.0.254, RFC 2544's benchmarking range), N host namespaces on the
//! bridge, each running a daemon with `--store`, and one probe endpoint per
//! host on an overlay network created once. Then it attaches endpoints one
//! at a time on hosts picked at random and measures, for each, the time
//! from the attach request's return until every other host can reach it:
//! the endpoint's MAC is in that host's forwarding database, and until an ICMP echo
//! from that host's probe is answered (sent from a thread inside the probe's
//! namespace, so that probing many hosts at once measures weft rather than
//! process start-up). It reports p50, p99 and the maximum, the
//! etcd requests per second during the attaches (from etcd's own gRPC
//! counters), and each daemon's resident memory, and writes results.json
//! and chart.svg (the distribution).
//!
//! All those namespaces share the kernel's one ARP table, which by default
//! holds 1024 entries for the whole machine; 50 hosts need a few thousand
//! (each host's underlay learns every other). The scenario raises the
//! table's limits for the run and reports how often it overflowed anyway
//! (see `neigh`): a full table discards the endpoint's replies, which is a
//! cost of simulating many machines on one kernel, not of weft.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use weft_api::client;

use super::error::Context as _;
use super::neigh;
use super::sys::{self, in_ns, run, Guard, Proc};
use super::{Error, Reporter, Result};

/// Options of the convergence scenario.
#[derive(Debug, Clone)]
pub struct ConvergenceOptions {
    pub exe: PathBuf,
    pub version: String,
    /// Hosts (daemons), 2 to 200.
    pub hosts: usize,
    /// Endpoints attached one after the other.
    pub endpoints: usize,
    pub out: PathBuf,
}

/// Bound of one endpoint's convergence.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

struct Host {
    socket: PathBuf,
    pid: u32,
    probe: String,
}

/// A small deterministic generator (xorshift), so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn call(socket: &Path, req: serde_json::Value, what: &str) -> Result<serde_json::Value> {
    sys::check_interrupted()?;
    let req = serde_json::from_value(req).with_context(|| format!("building `{what}`"))?;
    client::call(socket, &req).with_context(|| format!("`weft {what}` failed"))
}

/// gRPC messages etcd received so far (unary requests and the messages of
/// watch and keep-alive streams), from its metrics.
fn etcd_requests(ul: &str, ip: &str) -> Option<f64> {
    let out = run(&in_ns(
        ul,
        &[
            "curl",
            "-s",
            "--max-time",
            "5",
            &format!("http://{ip}:2379/metrics"),
        ],
    ))
    .ok()?;
    Some(
        out.lines()
            .filter(|l| l.starts_with("grpc_server_msg_received_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the scenario and writes results.json and chart.svg to `opts.out`.
pub fn run_convergence(opts: &ConvergenceOptions, report: &dyn Reporter) -> Result<()> {
    if sys::find_in_path("etcd").is_none() {
        return Err(Error::MissingTool {
            tool: "etcd",
            package: "etcd-server",
        });
    }
    // Every namespace's ARP entries count against one machine-wide table:
    // without room for all of them, the kernel discards the endpoints'
    // replies (see `neigh`). Raised before anything is created, restored
    // after everything is removed (dropped after `guard`).
    let neigh_limits = neigh::Raised::new(
        neigh::convergence_entries(opts.hosts, opts.endpoints),
        report,
    );
    let mut guard = Guard::new(report);
    let tag = format!("weft-b{}", std::process::id());
    let work = std::env::temp_dir().join(format!("{tag}-conv"));
    guard.add_dir(&work)?;
    fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;

    // The underlay and its etcd.
    let ul = format!("{tag}-ul");
    guard.add_netns(&ul)?;
    let etcd_ip = "198.18.0.254";
    run(&["ip", "-n", &ul, "link", "add", "br0", "type", "bridge"])?;
    run(&[
        "ip",
        "-n",
        &ul,
        "addr",
        "add",
        "198.18.0.254/16",
        "dev",
        "br0",
    ])?;
    run(&["ip", "-n", &ul, "link", "set", "br0", "up"])?;
    let client_url = format!("http://{etcd_ip}:2379");
    let peer_url = format!("http://{etcd_ip}:2380");
    let etcd_args = in_ns(
        &ul,
        &[
            "etcd",
            "--name",
            &tag,
            "--data-dir",
            &work.join("etcd").display().to_string(),
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("{tag}={peer_url}"),
        ],
    );
    guard
        .procs
        .push(Proc::spawn(&etcd_args, &work.join("etcd.log"), &[], false)?);
    sys::wait_until("etcd to answer", Duration::from_secs(20), || {
        Ok(sys::run_bounded(
            &in_ns(
                &ul,
                &["etcdctl", "--endpoints", &client_url, "endpoint", "health"],
            ),
            &[],
            Duration::from_secs(5),
        )?
        .status
        .success())
    })?;
    let store = format!("etcd://{etcd_ip}:2379");

    // The hosts, each with a daemon and a probe endpoint.
    report.status(&format!("convergence: starting {} hosts", opts.hosts));
    let mut hosts = Vec::new();
    for i in 0..opts.hosts {
        let ns = format!("{tag}-h{i}");
        guard.add_netns(&ns)?;
        let port = format!("p{i}");
        let ip = format!("198.18.{}.{}", (i + 1) / 250, (i + 1) % 250 + 1);
        run(&[
            "ip", "-n", &ul, "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns",
            &ns,
        ])?;
        run(&["ip", "-n", &ul, "link", "set", &port, "master", "br0", "up"])?;
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/16"),
            "dev",
            "ul0",
        ])?;
        run(&["ip", "-n", &ns, "link", "set", "ul0", "up"])?;
        let socket = work.join(format!("h{i}.sock"));
        let args = in_ns(
            &ns,
            &[
                opts.exe.display().to_string(),
                "daemon".into(),
                "--socket".into(),
                socket.display().to_string(),
                "--state-dir".into(),
                work.join(format!("h{i}-state")).display().to_string(),
                "--vtep-ip".into(),
                ip.clone(),
                "--store".into(),
                store.clone(),
                "--log-level".into(),
                "warn".into(),
            ],
        );
        let proc = Proc::spawn(&args, &work.join(format!("h{i}.log")), &[], false)?;
        let pid = proc.pid();
        guard.procs.push(proc);
        sys::wait_until(
            "a daemon to join the store",
            Duration::from_secs(20),
            || Ok(client::call(&socket, &weft_api::Request::Status).is_ok()),
        )
        .with_context(|| {
            format!(
                "daemon log:{}",
                sys::log_tail(&work.join(format!("h{i}.log")), 10)
            )
        })?;
        hosts.push(Host {
            socket,
            pid,
            probe: format!("{tag}-p{i}"),
        });
    }
    call(
        &hosts[0].socket,
        json!({"op": "network_create", "name": "conv", "subnet": "10.240.0.0/16", "vni": 240}),
        "network create",
    )?;
    for h in &hosts {
        sys::wait_until(
            "the network to reach every host",
            Duration::from_secs(10),
            || {
                let nets = call(&h.socket, json!({"op": "network_list"}), "network ls")?;
                Ok(nets.as_array().is_some_and(|a| !a.is_empty()))
            },
        )?;
        guard.add_netns(&h.probe)?;
        call(
            &h.socket,
            json!({"op": "attach", "network": "conv", "netns": h.probe, "no_resolv_conf": true}),
            "attach",
        )?;
    }

    // One endpoint at a time on a random host.
    let requests_before = etcd_requests(&ul, etcd_ip);
    let fulls_before = neigh::table_fulls();
    let started = Instant::now();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id()));
    let mut times = Vec::with_capacity(opts.endpoints);
    let mut fdb_times = Vec::with_capacity(opts.endpoints);
    for n in 0..opts.endpoints {
        let at = rng.below(hosts.len());
        let ns = format!("{tag}-e{n}");
        guard.add_netns(&ns)?;
        let ep = call(
            &hosts[at].socket,
            json!({"op": "attach", "network": "conv", "netns": ns, "no_resolv_conf": true}),
            "attach",
        )?;
        let attached = Instant::now();
        let mac = ep["mac"].as_str().unwrap_or_default().to_string();
        let ip = ep["ip"]
            .as_str()
            .and_then(|s| s.split('/').next())
            .unwrap_or_default()
            .to_string();
        let others: Vec<&Host> = hosts
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != at)
            .map(|(_, h)| h)
            .collect();
        let (fdb, reach) = converge(&others, &mac, &ip, attached)
            .with_context(|| format!("endpoint {n} on host {at}"))?;
        fdb_times.push(fdb.as_secs_f64() * 1000.0);
        times.push(reach.as_secs_f64() * 1000.0);
        report.status(&format!(
            "convergence: endpoint {}/{} on host {at}: in every other host's fdb after {:.0} ms, answering their pings after {:.0} ms",
            n + 1,
            opts.endpoints,
            fdb_times[n],
            times[n]
        ));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let table_fulls = match (fulls_before, neigh::table_fulls()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let requests_per_s = match (requests_before, etcd_requests(&ul, etcd_ip)) {
        (Some(a), Some(b)) => Some((b - a) / elapsed),
        _ => None,
    };
    let rss: Vec<u64> = hosts.iter().filter_map(|h| rss_kib(h.pid)).collect();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0),
        sorted.last().copied().unwrap_or(0.0),
    );
    let mut fdb_sorted = fdb_times.clone();
    fdb_sorted.sort_by(f64::total_cmp);
    let (fdb_p50, fdb_p99, fdb_max) = (
        percentile(&fdb_sorted, 50.0),
        percentile(&fdb_sorted, 99.0),
        fdb_sorted.last().copied().unwrap_or(0.0),
    );
    let rss_max = rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    let rss_mean = rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64 / 1024.0;
    let table = format!(
        "convergence, {} hosts, {} endpoints\n  reachable (fdb entry and a ping answered on every other host): p50 {p50:.0} ms   p99 {p99:.0} ms   max {max:.0} ms\n  fdb entry on every other host: p50 {fdb_p50:.0} ms   p99 {fdb_p99:.0} ms   max {fdb_max:.0} ms\n  etcd requests/s during the attaches: {}\n  daemon RSS: max {rss_max:.1} MiB, mean {rss_mean:.1} MiB\n  neighbour table: limits (gc_thresh1..3) {}, overflows during the attaches (machine-wide): {}\n",
        opts.hosts,
        opts.endpoints,
        requests_per_s.map_or("n/a (curl missing)".to_string(), |r| format!("{r:.0}")),
        neigh_limits
            .limits
            .map_or("unknown".to_string(), |l| format!("{l:?}")),
        table_fulls.map_or("unknown".to_string(), |n| n.to_string()),
    );
    report.table(&table);
    let results = json!({
        "version": opts.version,
        "scenario": "convergence",
        "hosts": opts.hosts,
        "endpoints": opts.endpoints,
        "convergence_ms": {"p50": p50, "p99": p99, "max": max, "each": times},
        "fdb_ms": {"p50": fdb_p50, "p99": fdb_p99, "max": fdb_max, "each": fdb_times},
        "etcd_requests_per_s": requests_per_s,
        "daemon_rss_mib": {"max": rss_max, "mean": rss_mean},
        "neighbour_table": {"gc_thresh": neigh_limits.limits, "overflows": table_fulls},
    });
    let path = opts.out.join("results.json");
    fs::write(&path, serde_json::to_string_pretty(&results).expect("json"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    let svg = chart(&sorted, opts.hosts);
    let path = opts.out.join("chart.svg");
    fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    report.status(&format!("convergence: results in {}", opts.out.display()));
    Ok(())
}

/// How long after `attached` the endpoint (`mac`, `ip`) was in every host's
/// forwarding database, and answered a ping from every host's probe. The
/// databases are polled by one thread, round robin (so the measurement does
/// not itself load the daemons); the pings all start at once as soon as
/// every database has the entry, each retried until answered.
fn converge(
    hosts: &[&Host],
    mac: &str,
    ip: &str,
    attached: Instant,
) -> Result<(Duration, Duration)> {
    let mut missing: Vec<&Host> = hosts.to_vec();
    let deadline = attached + CONVERGE_TIMEOUT;
    while !missing.is_empty() {
        sys::check_interrupted()?;
        let mut still = Vec::new();
        for h in missing {
            let fdb = call(&h.socket, json!({"op": "fdb", "network": "conv"}), "fdb")?;
            if !fdb
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["mac"] == mac))
            {
                still.push(h);
            }
        }
        missing = still;
        if Instant::now() > deadline {
            return Err(Error::WaitTimedOut {
                what: format!("{mac} in the fdb of {} host(s)", missing.len()),
                secs: CONVERGE_TIMEOUT.as_secs(),
            });
        }
    }
    let fdb = attached.elapsed();
    let target: std::net::Ipv4Addr = ip
        .parse()
        .map_err(|_| Error::Tool(format!("attach returned `{ip}`, not an address")))?;
    let reached: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(seq, h)| {
                s.spawn(move || {
                    let ns = Path::new("/var/run/netns").join(&h.probe);
                    sys::wait_until("a ping answered", CONVERGE_TIMEOUT, || {
                        echo(&ns, target, seq as u16)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or(Err(Error::Tool("a probe thread panicked".into())))
            })
            .collect()
    });
    for r in reached {
        r?;
    }
    Ok((fdb, attached.elapsed()))
}

/// One ICMP echo (RFC 792) from inside namespace `ns` to `target`, sent on
/// a raw socket by the calling thread after it joined the namespace (a
/// thread of its own: `setns` changes only the caller); whether the reply
/// came within a second. No process is started, so many hosts can be
/// probed at once without the probes' own start-up cost.
fn echo(ns: &Path, target: std::net::Ipv4Addr, seq: u16) -> Result<bool> {
    use nix::sys::socket::{
        recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag,
        SockProtocol, SockType, SockaddrIn,
    };
    let file = fs::File::open(ns).with_context(|| format!("cannot open {}", ns.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot enter {}", ns.display()))?;
    let sock = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )
    .map_err(std::io::Error::from)
    .context("cannot open a raw ICMP socket")?;
    setsockopt(
        &sock,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(1, 0),
    )
    .map_err(std::io::Error::from)
    .context("cannot set the ICMP socket's timeout")?;
    let id = (std::process::id() & 0xffff) as u16;
    // Type 8 (echo request), code 0, checksum, identifier, sequence, data.
    let mut req = [0u8; 16];
    req[0] = 8;
    req[4..6].copy_from_slice(&id.to_be_bytes());
    req[6..8].copy_from_slice(&seq.to_be_bytes());
    req[8..].copy_from_slice(b"weftconv");
    let sum = weft_packet::checksum::checksum(&req);
    req[2..4].copy_from_slice(&sum.to_be_bytes());
    let to = SockaddrIn::from(std::net::SocketAddrV4::new(target, 0));
    use std::os::fd::AsRawFd as _;
    sendto(sock.as_raw_fd(), &req, &to, MsgFlags::empty())
        .map_err(std::io::Error::from)
        .context("cannot send an ICMP echo")?;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let Ok((len, from)) = recvfrom::<SockaddrIn>(sock.as_raw_fd(), &mut buf) else {
            return Ok(false);
        };
        // A raw socket hands over the IPv4 header too.
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        let icmp = &buf[ihl.min(len)..len];
        let ours = from.is_some_and(|a| a.ip() == target)
            && icmp.len() >= 8
            && icmp[0] == 0
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes();
        if ours {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The distribution of convergence times as a cumulative plot.
fn chart(sorted: &[f64], hosts: usize) -> String {
    let (w, h, pad) = (640.0, 320.0, 48.0);
    let max = sorted.last().copied().unwrap_or(1.0).max(1.0);
    let n = sorted.len().max(1) as f64;
    let points: Vec<String> = sorted
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let x = pad + (t / max) * (w - 2.0 * pad);
            let y = h - pad - ((i + 1) as f64 / n) * (h - 2.0 * pad);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<text x="{pad}" y="20">weft convergence, {hosts} hosts: share of endpoints reachable from every host</text>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<text x="{pad}" y="{lb}">0 ms</text><text x="{r}" y="{lb}" text-anchor="end">{max:.0} ms</text>
<text x="{l}" y="{pad}" text-anchor="end">100%</text><text x="{l}" y="{b}" text-anchor="end">0%</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>
</svg>
"##,
        b = h - pad,
        r = w - pad,
        lb = h - pad + 16.0,
        l = pad - 4.0,
        pts = points.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
