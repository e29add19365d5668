//! VXLAN overlay networks across hosts (RFC 7348), on real namespaces.
//!
//! Every test builds its own little data centre: an "underlay" namespace
//! holding a kernel bridge, and "host" namespaces wired to it by veth pairs
//! (`ul0`, 192.168.<index>.<n>/24). Each weft host runs its own daemon
//! inside its host namespace (own socket, `--vtep-ip`), which puts the TAPs
//! of its "containers" (further namespaces) on the overlay network. All
//! traffic stays inside the test's namespaces; nothing touches the root
//! namespace.
//!
//! Subnet indices 60..=69 for the overlay subnets (10.<index>.x.0/24) and
//! the underlays (192.168.<index>.0/24); see `common` for the parallelism
//! note.

mod common;

use std::fs::File;
use std::io;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// 100 MiB.
const BULK: u64 = 100 * 1024 * 1024;
/// Bound of one 100 MiB transfer.
const BULK_TIMEOUT: Duration = Duration::from_secs(180);

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}:\n{}", describe(out));
}

// ---------------------------------------------------------------------------
// The test data centre
// ---------------------------------------------------------------------------

/// The underlay: a namespace with a kernel bridge `br0` (192.168.<k>.254)
/// that every host's `ul0` is plugged into.
struct Underlay {
    ns: Netns,
    k: u8,
}

impl Underlay {
    fn new(k: u8) -> Underlay {
        let ul = Underlay {
            ns: Netns::new("ul"),
            k,
        };
        let me = ul.ns.name.clone();
        assert_ok(
            &ul.ns.ip(&["link", "add", "br0", "type", "bridge"]),
            &format!("bridge in {me}"),
        );
        assert_ok(
            &ul.ns
                .ip(&["addr", "add", &format!("{}/24", ul.addr(254)), "dev", "br0"]),
            "underlay address",
        );
        assert_ok(&ul.ns.ip(&["link", "set", "br0", "up"]), "br0 up");
        ul
    }

    /// `192.168.<k>.<n>`.
    fn addr(&self, n: u8) -> String {
        format!("192.168.{}.{n}", self.k)
    }

    /// A new namespace plugged into the bridge as `ul0` = 192.168.<k>.<n>.
    fn host_ns(&self, tag: &str, n: u8) -> Netns {
        let host = Netns::new(tag);
        let port = format!("p{n}");
        assert_ok(
            &self.ns.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns", &host.name,
            ]),
            &format!("veth {port} <-> {}:ul0", host.name),
        );
        assert_ok(
            &self.ns.ip(&["link", "set", &port, "master", "br0", "up"]),
            "bridge port up",
        );
        assert_ok(
            &host.ip(&["addr", "add", &format!("{}/24", self.addr(n)), "dev", "ul0"]),
            "host underlay address",
        );
        assert_ok(&host.ip(&["link", "set", "ul0", "up"]), "ul0 up");
        host
    }

    /// A weft host: a host namespace running its own daemon.
    fn weft_host(&self, tag: &str, n: u8, extra: &[&str]) -> Host {
        let ns = self.host_ns(tag, n);
        let ip = self.addr(n);
        let mut args = vec!["--vtep-ip", ip.as_str()];
        args.extend_from_slice(extra);
        let daemon = Daemon::start_in(&ns, &args);
        Host { daemon, ns, ip }
    }
}

/// A host namespace with its weft daemon. The daemon is declared first so
/// it is dropped (stopped) before its namespace is deleted.
struct Host {
    daemon: Daemon,
    ns: Netns,
    /// The host's underlay (VTEP) address.
    ip: String,
}

impl Host {
    fn weft(&self, args: &[&str]) -> String {
        weft_ok(&self.daemon, args)
    }

    fn json(&self, args: &[&str]) -> Value {
        json(&self.daemon, args)
    }

    fn stats(&self) -> Value {
        self.json(&["stats"])
    }

    /// A container namespace attached to `network` on this host.
    fn container(&self, tag: &str, network: &str, extra: &[&str]) -> Container {
        let ns = Netns::new(tag);
        let ep = attach(&self.daemon, network, &ns, extra);
        Container { ns, ep }
    }
}

/// `stats.switch_drops[reason]` (0 when absent).
fn switch_drop(stats: &Value, reason: &str) -> u64 {
    stats["switch_drops"][reason].as_u64().unwrap_or(0)
}

/// `stats.counters[name]` (0 when absent).
fn counter(stats: &Value, name: &str) -> u64 {
    stats["counters"][name].as_u64().unwrap_or(0)
}

/// Makes every host a peer of every other.
fn mesh(hosts: &[&Host]) {
    for h in hosts {
        for other in hosts {
            if h.ip != other.ip {
                h.weft(&["peer", "add", &other.ip]);
            }
        }
    }
}

/// A "container": a namespace with one weft endpoint.
struct Container {
    ns: Netns,
    ep: Endpoint,
}

/// One `ping -c 1 -W 2`, retried once (the first may be spent on ARP).
fn ping_retry(from: &Netns, target: &str, extra: &[&str]) -> Output {
    let mut args = vec!["ping", "-n", "-c", "1", "-W", "2"];
    args.extend_from_slice(extra);
    args.push(target);
    let out = from.exec(&args);
    if out.status.success() {
        return out;
    }
    from.exec(&args)
}

fn assert_reaches(from: &Netns, target: &str) {
    let out = ping_retry(from, target, &[]);
    assert!(
        out.status.success(),
        "ping {target} from {} failed:\n{}",
        from.name,
        describe(&out)
    );
}

fn assert_unreachable(from: &Netns, target: &str) {
    let out = from.exec(&["ping", "-n", "-c", "2", "-W", "1", target]);
    assert!(
        !out.status.success(),
        "ping {target} from {} should fail but succeeded:\n{}",
        from.name,
        describe(&out)
    );
}

/// Runs `f` on a fresh thread that joins namespace `ns` first (setns only
/// affects the calling thread, and that thread ends right after).
fn in_netns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> T {
    ns.run(f)
        .unwrap_or_else(|e| panic!("in namespace {}: {e}", ns.name))
}

/// `ethtool -K IF tx off` inside `ns`.
fn tx_checksum_off(ns: &Netns, ifname: &str) {
    let ifname = ifname.to_string();
    in_netns(ns, move || {
        weft_os::ethtool::set_tx_checksum(&ifname, false)
    });
}

/// The MAC `ip neigh` in `ns` holds for `ip`, lower case, if any.
fn neigh_mac(ns: &Netns, ip: &str) -> Option<String> {
    let out = ns.ip(&["neigh", "show", ip]);
    let line = text(&out.stdout).to_ascii_lowercase();
    let mut words = line.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_string)
}

// ---------------------------------------------------------------------------
// Bulk transfers
// ---------------------------------------------------------------------------

/// Writes 100 MiB of random data to `dir/NAME`.
fn random_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = run_timeout(
        Command::new("sh").arg("-c").arg(format!(
            "head -c {BULK} /dev/urandom > '{}'",
            path.display()
        )),
        Duration::from_secs(60),
    );
    assert_ok(&out, "making the input");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), BULK);
    path
}

/// Sends `input` with nc from `from` to `nc -l PORT` in `to` (at `to_ip`),
/// storing what arrives in `output`; asserts it arrived whole and intact.
fn transfer(from: &Netns, to: &Netns, to_ip: &str, port: u16, input: &Path, output: &Path) {
    let port_s = port.to_string();
    let mut server = to.spawn(
        &["nc", "-l", &port_s],
        Stdio::null(),
        Stdio::from(File::create(output).unwrap()),
    );
    assert!(
        to.wait_listening("tcp", port, Duration::from_secs(5)),
        "nc -l {port} not listening in {}",
        to.name
    );
    let started = Instant::now();
    let mut client = from.command(&["nc", "-N", to_ip, &port_s]);
    client
        .stdin(Stdio::from(File::open(input).unwrap()))
        .stdout(Stdio::null());
    let mut client = Bg::spawn(client, "nc client");
    let status = client.wait_timeout(BULK_TIMEOUT);
    assert!(
        matches!(status, Some(s) if s.success()),
        "nc {} -> {to_ip}:{port} did not finish successfully within {BULK_TIMEOUT:?}: {status:?} \
         ({} of {BULK} bytes arrived)",
        from.name,
        std::fs::metadata(output).map(|m| m.len()).unwrap_or(0)
    );
    let server_status = server.wait_timeout(Duration::from_secs(30));
    assert!(
        server_status.is_some(),
        "nc server in {} did not exit after the client closed",
        to.name
    );
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} -> {to_ip}: {BULK} bytes in {secs:.1} s ({:.1} Mbit/s)",
        from.name,
        BULK as f64 * 8.0 / secs / 1e6
    );
    assert_eq!(
        std::fs::metadata(output).unwrap().len(),
        BULK,
        "bytes received"
    );
    assert_eq!(sha256(input), sha256(output), "sha256 of sent vs received");
}

// ---------------------------------------------------------------------------
// 1. Three weft hosts
// ---------------------------------------------------------------------------

#[test]
fn three_hosts_share_an_overlay_network() {
    require_root!();
    const I: u8 = 60;
    const VNI: &str = "6000";
    let t0 = Instant::now();
    let ul = Underlay::new(I);
    let hosts: Vec<Host> = (1..=3)
        .map(|n| ul.weft_host(&format!("h{n}"), n, &[]))
        .collect();
    let subnet = subnet(I, 0);
    for (i, h) in hosts.iter().enumerate() {
        let range = format!("10.{I}.0.{}/28", 16 * (i + 1));
        h.weft(&[
            "network",
            "create",
            "ov",
            "--subnet",
            &subnet,
            "--vni",
            VNI,
            "--ip-range",
            &range,
        ]);
        let net = h.json(&["network", "inspect", "ov"]);
        assert_eq!(net["mtu"], 1450, "default overlay MTU: {net}");
        assert_eq!(net["vni"], 6000, "{net}");
    }
    mesh(&hosts.iter().collect::<Vec<_>>());
    for h in &hosts {
        let peers = h.json(&["peer", "ls"]);
        assert_eq!(
            peers.as_array().map(Vec::len),
            Some(2),
            "peers of {}: {peers}",
            h.ip
        );
    }

    // Two containers per host; containers[2h + j] is container j of host h.
    let mut containers = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        for j in 0..2 {
            let c = h.container(&format!("h{}c{j}", i + 1), "ov", &[]);
            let lo = 16 * (i as u8 + 1);
            let host_part: u8 = c.ep.ip.rsplit('.').next().unwrap().parse().unwrap();
            assert!(
                (lo..lo + 16).contains(&host_part),
                "{} got {} outside its host's range 10.{I}.0.{lo}/28",
                c.ns.name,
                c.ep.ip
            );
            let out = c.ns.ip(&["link", "show", &c.ep.ifname]);
            assert!(
                text(&out.stdout).contains("mtu 1450"),
                "MTU of {} in {}:\n{}",
                c.ep.ifname,
                c.ns.name,
                describe(&out)
            );
            containers.push(c);
        }
    }

    // Every pair, both directions.
    let t_ping = Instant::now();
    for from in &containers {
        for to in &containers {
            if from.ns.name != to.ns.name {
                assert_reaches(&from.ns, &to.ep.ip);
            }
        }
    }
    eprintln!(
        "30 pings between 6 containers on 3 hosts: {:.1} s",
        t_ping.elapsed().as_secs_f64()
    );

    // h1 learned h2's containers behind h2's VTEP, and h3's behind h3's.
    let fdb = hosts[0].json(&["fdb", "ov"]);
    for (h, c) in [(1usize, 2usize), (1, 3), (2, 4), (2, 5)] {
        let mac = &containers[c].ep.mac;
        let entry = fdb
            .as_array()
            .and_then(|a| {
                a.iter().find(|e| {
                    e["mac"].as_str().map(str::to_ascii_lowercase).as_deref() == Some(mac)
                })
            })
            .unwrap_or_else(|| panic!("h1's fdb lacks {mac} of {}: {fdb}", containers[c].ns.name));
        assert_eq!(
            entry["vtep"].as_str(),
            Some(hosts[h].ip.as_str()),
            "vtep of {mac}: {entry}"
        );
    }
    // Local containers have no vtep.
    let local = fdb
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["mac"].as_str().map(str::to_ascii_lowercase).as_deref() == Some(&containers[0].ep.mac)
        })
        .unwrap_or_else(|| panic!("h1's fdb lacks its own container: {fdb}"));
    assert!(local["vtep"].is_null(), "local entry with a vtep: {local}");

    // Both peers carried traffic both ways.
    for h in &hosts {
        let peers = h.json(&["peer", "ls"]);
        for p in peers.as_array().unwrap() {
            for key in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"] {
                assert!(
                    p[key].as_u64().unwrap_or(0) > 0,
                    "peer {} of {}: {key} is 0: {p}",
                    p["addr"],
                    h.ip
                );
            }
        }
        let stats = h.stats();
        assert_eq!(
            stats["peers"].as_array().map(Vec::len),
            Some(2),
            "stats.peers of {}: {stats}",
            h.ip
        );
    }

    // ARP suppression: once h1 knows where h3's container is, a fresh ARP
    // request for it is answered by h1 itself.
    let target = &containers[4];
    let neighbors = hosts[0].json(&["neighbor", "ls", "ov"]);
    assert!(
        neighbors
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["ip"] == target.ep.ip.as_str()
                && n["mac"].as_str().map(str::to_ascii_lowercase).as_deref()
                    == Some(&target.ep.mac)),
        "h1 did not learn {} -> {}: {neighbors}",
        target.ep.ip,
        target.ep.mac
    );
    let before = counter(&hosts[0].stats(), "arp_suppressed");
    let asker = &containers[0];
    assert_ok(&asker.ns.ip(&["neigh", "flush", "all"]), "neigh flush");
    assert_eq!(neigh_mac(&asker.ns, &target.ep.ip), None, "flushed");
    assert_reaches(&asker.ns, &target.ep.ip);
    assert_eq!(
        neigh_mac(&asker.ns, &target.ep.ip).as_deref(),
        Some(target.ep.mac.as_str()),
        "resolved MAC of {}",
        target.ep.ip
    );
    let after = wait_for(Duration::from_secs(5), || {
        let n = counter(&hosts[0].stats(), "arp_suppressed");
        (n > before).then_some(n)
    });
    assert!(
        after.is_some(),
        "arp_suppressed on h1 stayed at {before}: {}",
        hosts[0].stats()
    );

    // iperf3 TCP from h2 to h3 for 3 s.
    let (client, server) = (&containers[2], &containers[5]);
    let mut iperf_server = server
        .ns
        .spawn(&["iperf3", "-s", "-1"], Stdio::null(), Stdio::null());
    assert!(
        server
            .ns
            .wait_listening("tcp", 5201, Duration::from_secs(5)),
        "iperf3 -s not listening in {}",
        server.ns.name
    );
    let out = client.ns.exec_timeout(
        &["iperf3", "-c", &server.ep.ip, "-t", "3", "-J"],
        Duration::from_secs(60),
    );
    assert_ok(&out, "iperf3 client");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 -J output is not JSON ({e}):\n{}", describe(&out)));
    assert!(report.get("error").is_none(), "iperf3: {}", report["error"]);
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(bps > 0.0, "iperf3 received nothing: {}", report["end"]);
    eprintln!("iperf3 h2 -> h3 over VXLAN: {:.1} Mbit/s", bps / 1e6);
    assert!(
        iperf_server.wait_timeout(Duration::from_secs(10)).is_some(),
        "iperf3 -s -1 did not exit after one test"
    );

    // 100 MiB from h1 to h2, intact.
    let dir = &hosts[0].daemon.dir;
    let input = random_file(dir, "in.bin");
    transfer(
        &containers[0].ns,
        &containers[3].ns,
        &containers[3].ep.ip,
        5060,
        &input,
        &dir.join("out.bin"),
    );
    // The sender's TAP hands over TSO super-frames, which h1 cuts into
    // segments for the tunnel (UDP GSO); h2 merges the segments back and
    // writes super-frames into the receiver's TAP.
    let average = |host: &Host, port: u64, dir: &str| {
        let stats = host.stats();
        let p = stats["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"].as_u64() == Some(port))
            .cloned()
            .unwrap_or_else(|| panic!("port {port} in stats: {stats}"));
        let bytes = p[format!("{dir}_bytes")].as_u64().unwrap() as f64;
        bytes / p[format!("{dir}_packets")].as_u64().unwrap().max(1) as f64
    };
    let sent = average(&hosts[0], containers[0].ep.port, "rx");
    let delivered = average(&hosts[1], containers[3].ep.port, "tx");
    assert!(
        sent > 3000.0 && delivered > 3000.0,
        "TCP should cross the overlay as super-frames at both TAPs: average {sent:.0} bytes in on h1, {delivered:.0} out on h2"
    );
    eprintln!("three hosts test: {:.1} s", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// 2. Interop with the kernel's VXLAN
// ---------------------------------------------------------------------------

/// A host namespace running the Linux kernel's VXLAN instead of weft:
/// `vx0` (VNI `vni`, learning, head-end replication to `remotes`) and a veth
/// to a container namespace in bridge `br0`, all at MTU 1450.
fn kernel_host(ul: &Underlay, n: u8, vni: &str, remotes: &[&str]) -> Netns {
    kernel_host_with(ul, n, vni, remotes, &[])
}

/// [`kernel_host`] with more `ip link add ... type vxlan` options.
fn kernel_host_with(ul: &Underlay, n: u8, vni: &str, remotes: &[&str], options: &[&str]) -> Netns {
    let h = ul.host_ns("kvx", n);
    let local = ul.addr(n);
    let mut add = vec![
        "link", "add", "vx0", "type", "vxlan", "id", vni, "dstport", "4789", "local", &local,
    ];
    add.extend_from_slice(options);
    for args in [
        add,
        vec!["link", "set", "vx0", "mtu", "1450"],
        vec!["link", "add", "br0", "type", "bridge"],
        vec!["link", "set", "vx0", "master", "br0"],
        vec!["link", "set", "vx0", "up"],
        vec!["link", "set", "br0", "up"],
    ] {
        assert_ok(&h.ip(&args), &format!("ip {}", args.join(" ")));
    }
    // A veth leaves checksums to "hardware" that never computes them: the
    // kernel would put VXLAN datagrams on the underlay whose inner TCP/UDP
    // checksums are still partial (`tcpdump -vv` says "incorrect"). A receiving kernel VTEP trusts them (the
    // skb says so); weft reads plain bytes and the container's stack drops
    // them. Real NICs fill them in, and so does the kernel with TX
    // checksum offload off.
    tx_checksum_off(&h, "ul0");
    for remote in remotes {
        let out = host_exec(&[
            "bridge",
            "-n",
            &h.name,
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            "vx0",
            "dst",
            remote,
        ]);
        assert_ok(&out, "bridge fdb append");
    }
    h
}

/// Plugs a new container namespace into `host`'s `br0` with `ip`/24 on its
/// `eth0`, MTU 1450.
fn kernel_container(host: &Netns, ip: &str) -> Netns {
    let c = Netns::new("kc");
    for args in [
        vec![
            "link", "add", "vc0", "mtu", "1450", "type", "veth", "peer", "name", "eth0", "mtu",
            "1450", "netns", &c.name,
        ],
        vec!["link", "set", "vc0", "master", "br0"],
        vec!["link", "set", "vc0", "up"],
    ] {
        assert_ok(&host.ip(&args), &format!("ip {}", args.join(" ")));
    }
    let cidr = format!("{ip}/24");
    assert_ok(
        &c.ip(&["addr", "add", &cidr, "dev", "eth0"]),
        "container address",
    );
    assert_ok(&c.ip(&["link", "set", "eth0", "up"]), "eth0 up");
    c
}

#[test]
fn weft_interoperates_with_the_kernel_vxlan() {
    require_root!();
    const I: u8 = 61;
    const VNI: &str = "6100";
    let t0 = Instant::now();
    let ul = Underlay::new(I);
    let h1 = ul.weft_host("h1", 1, &[]);
    let h2 = ul.weft_host("h2", 2, &[]);
    let kernel = kernel_host(&ul, 3, VNI, &[&h1.ip, &h2.ip]);
    let kc = kernel_container(&kernel, &addr(I, 0, 100));
    let kc_ip = addr(I, 0, 100);
    let subnet = subnet(I, 0);
    for (h, range) in [(&h1, "16"), (&h2, "32")] {
        h.weft(&[
            "network",
            "create",
            "ov",
            "--subnet",
            &subnet,
            "--vni",
            VNI,
            "--ip-range",
            &format!("10.{I}.0.{range}/28"),
        ]);
    }
    mesh(&[&h1, &h2]);
    let kernel_ip = ul.addr(3);
    h1.weft(&["peer", "add", &kernel_ip]);
    h2.weft(&["peer", "add", &kernel_ip]);
    let c1 = h1.container("c1", "ov", &[]);
    let c2 = h2.container("c2", "ov", &[]);

    // Capture on h1's underlay while its container and the kernel's ping
    // each other: both directions are VXLAN with our VNI (tcpdump decodes
    // UDP port 4789 as VXLAN by itself).
    let capture = std::thread::scope(|s| {
        let dump = s.spawn(|| {
            h1.ns.exec_timeout(
                &[
                    "tcpdump", "-i", "ul0", "-nn", "-l", "-v", "-c", "12", "udp", "port", "4789",
                    "and", "host", &kernel_ip,
                ],
                Duration::from_secs(20),
            )
        });
        // tcpdump needs a moment to open its socket; keep the traffic
        // coming until it has seen enough.
        std::thread::sleep(Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(15);
        while !dump.is_finished() && Instant::now() < deadline {
            let _ = c1.ns.exec(&["ping", "-n", "-c", "1", "-W", "1", &kc_ip]);
            let _ = kc.exec(&["ping", "-n", "-c", "1", "-W", "1", &c1.ep.ip]);
        }
        dump.join().expect("tcpdump thread")
    });
    let decoded = text(&capture.stdout);
    eprintln!("tcpdump on h1's underlay:\n{decoded}");
    assert!(
        capture.status.success(),
        "tcpdump did not capture 12 VXLAN datagrams:\n{}",
        describe(&capture)
    );
    let want = format!("VXLAN, flags [I] (0x08), vni {VNI}");
    assert!(
        decoded.contains(&want),
        "no {want:?} in the capture:\n{decoded}"
    );
    assert!(
        !decoded
            .lines()
            .any(|l| l.contains("VXLAN") && !l.contains(&want)),
        "VXLAN with other flags or VNIs:\n{decoded}"
    );
    // "    SRC.SPORT > DST.4789: [udp sum ok] VXLAN, flags [I] (0x08), vni N"
    let seen = |src: &str, dst: &str| {
        let to = format!(" > {dst}.4789: ");
        decoded.lines().any(|l| {
            l.trim_start().starts_with(&format!("{src}.")) && l.contains(&to) && l.contains(&want)
        })
    };
    assert!(
        seen(&h1.ip, &kernel_ip),
        "no weft -> kernel VXLAN datagram in:\n{decoded}"
    );
    assert!(
        seen(&kernel_ip, &h1.ip),
        "no kernel -> weft VXLAN datagram in:\n{decoded}"
    );

    // Pings both ways with both weft hosts.
    for c in [&c1, &c2] {
        assert_reaches(&c.ns, &kc_ip);
        assert_reaches(&kc, &c.ep.ip);
    }
    assert_reaches(&c1.ns, &c2.ep.ip);
    // The kernel learned the weft containers behind the weft VTEPs.
    let out = host_exec(&["bridge", "-n", &kernel.name, "fdb", "show", "dev", "vx0"]);
    let kfdb = text(&out.stdout).to_ascii_lowercase();
    for (c, h) in [(&c1, &h1), (&c2, &h2)] {
        assert!(
            kfdb.lines()
                .any(|l| l.starts_with(&c.ep.mac) && l.contains(&format!("dst {}", h.ip))),
            "kernel fdb lacks {} via {}:\n{kfdb}",
            c.ep.mac,
            h.ip
        );
    }
    // And weft learned the kernel's container behind the kernel's VTEP.
    let kc_mac = neigh_mac(&c1.ns, &kc_ip).expect("c1 resolved the kernel container");
    let fdb = h1.json(&["fdb", "ov"]);
    assert!(
        fdb.as_array().unwrap().iter().any(|e| {
            e["mac"].as_str().map(str::to_ascii_lowercase).as_deref() == Some(&kc_mac)
                && e["vtep"] == kernel_ip.as_str()
        }),
        "h1's fdb lacks {kc_mac} via {kernel_ip}: {fdb}"
    );

    // 100 MiB each way: kernel -> weft on h1, weft on h2 -> kernel.
    let dir = &h1.daemon.dir;
    let input = random_file(dir, "in.bin");
    transfer(&kc, &c1.ns, &c1.ep.ip, 6101, &input, &dir.join("k2w.bin"));
    std::fs::remove_file(dir.join("k2w.bin")).unwrap();
    transfer(&c2.ns, &kc, &kc_ip, 6102, &input, &dir.join("w2k.bin"));
    eprintln!("kernel interop test: {:.1} s", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// 2b. Remote checksum offload (draft-herbert-vxlan-rco)
// ---------------------------------------------------------------------------

/// The tcpdump filter for VXLAN datagrams from `src` with the RCO flag
/// (0x20 in the second octet of the VXLAN header, the UDP payload's).
fn rco_filter(src: &str) -> Vec<String> {
    [
        "udp",
        "port",
        "4789",
        "and",
        "src",
        "host",
        src,
        "and",
        "udp[9] & 0x20 != 0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs `transfer` while tcpdump on `ns`'s `ul0` waits for `count`
/// datagrams matching `filter`; returns whether it saw them and what it
/// printed.
fn transfer_capturing(
    ns: &Netns,
    filter: &[String],
    count: usize,
    transfer: impl FnOnce(),
) -> (bool, String) {
    std::thread::scope(|s| {
        let dump = s.spawn(|| {
            let count = count.to_string();
            let mut args = vec!["tcpdump", "-i", "ul0", "-nn", "-l", "-c", count.as_str()];
            args.extend(filter.iter().map(String::as_str));
            ns.exec_timeout(&args, Duration::from_secs(120))
        });
        // tcpdump needs a moment to open its socket.
        std::thread::sleep(Duration::from_millis(700));
        transfer();
        let out = dump.join().expect("tcpdump thread");
        (out.status.success(), describe(&out))
    })
}

/// Sends three 1000-byte UDP datagrams from `from` to `to_ip:port` in
/// `to` and returns how many arrived intact.
fn udp_roundtrip(from: &Netns, to: &Netns, to_ip: &str, port: u16) -> usize {
    let payload: Vec<u8> = (0..1000).map(|i| (i * 31 + 7) as u8).collect();
    let want = payload.clone();
    let bind = format!("{to_ip}:{port}");
    let target = format!("{to_ip}:{port}");
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            in_netns(to, move || {
                let sock = UdpSocket::bind(&bind)?;
                sock.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut buf = [0u8; 2000];
                let mut intact = 0;
                while intact < 3 {
                    let n = match sock.recv(&mut buf) {
                        Ok(n) => n,
                        Err(_) => break,
                    };
                    if buf[..n] == want[..] {
                        intact += 1;
                    }
                }
                Ok(intact)
            })
        });
        // Let the receiver bind first.
        std::thread::sleep(Duration::from_millis(300));
        in_netns(from, move || {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            for _ in 0..3 {
                sock.send_to(&payload, &target)?;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        });
        server.join().expect("udp server thread")
    })
}

#[test]
fn weft_to_weft_with_remote_checksum_offload() {
    require_root!();
    const I: u8 = 66;
    let ul = Underlay::new(I);
    let hosts: Vec<Host> = (1..=2)
        .map(|n| ul.weft_host(&format!("h{n}"), n, &[]))
        .collect();
    for (i, h) in hosts.iter().enumerate() {
        let range = format!("10.{I}.0.{}/28", 16 * (i + 1));
        h.weft(&[
            "network",
            "create",
            "ov",
            "--subnet",
            &subnet(I, 0),
            "--vni",
            "6600",
            "--ip-range",
            &range,
        ]);
    }
    let (h1, h2) = (&hosts[0], &hosts[1]);
    h1.weft(&["peer", "add", &h2.ip, "--remote-csum"]);
    h2.weft(&["peer", "add", &h1.ip, "--remote-csum"]);
    let peers = h1.json(&["peer", "ls"]);
    assert_eq!(peers[0]["remote_csum"], true, "{peers}");
    let listing = h1.weft(&["peer", "ls"]);
    assert!(
        listing.contains("RCO") && listing.contains("yes"),
        "{listing}"
    );
    let a = h1.container("h1c0", "ov", &[]);
    let b = h2.container("h2c0", "ov", &[]);
    assert_reaches(&a.ns, &b.ep.ip);

    let dir = &h1.daemon.dir;
    let input = random_file(dir, "in.bin");
    let out = dir.join("out.bin");
    let (seen, dump) = transfer_capturing(&h1.ns, &rco_filter(&h1.ip), 20, || {
        transfer(&a.ns, &b.ns, &b.ep.ip, 5066, &input, &out)
    });
    assert!(seen, "no RCO datagrams from h1 on the wire:\n{dump}");
    std::fs::remove_file(&out).unwrap();
    transfer(&b.ns, &a.ns, &a.ep.ip, 5067, &input, &out);

    // UDP leaves the TAP checksum-partial too: RCO with the UDP offset.
    let before = counter(&h2.stats(), "vxlan_rco_rx");
    assert_eq!(udp_roundtrip(&a.ns, &b.ns, &b.ep.ip, 5068), 3);
    assert!(counter(&h2.stats(), "vxlan_rco_rx") >= before + 3);

    for (h, other) in [(h1, h2), (h2, h1)] {
        let stats = h.stats();
        let (tx, rx) = (
            counter(&stats, "vxlan_rco_tx"),
            counter(&stats, "vxlan_rco_rx"),
        );
        eprintln!("{}: {tx} RCO datagrams sent, {rx} received", h.ip);
        // 100 MiB is more than 70 000 segments each way.
        assert!(
            tx > 50_000,
            "{} sent few RCO datagrams to {}: {stats}",
            h.ip,
            other.ip
        );
        assert!(rx > 50_000, "{} received few RCO datagrams: {stats}", h.ip);
        for reason in ["vxlan_malformed", "vxlan_unknown_vni", "vxlan_unknown_peer"] {
            assert_eq!(switch_drop(&stats, reason), 0, "{reason}: {stats}");
        }
    }
}

#[test]
fn weft_and_the_kernel_vxlan_with_remote_checksum_offload() {
    require_root!();
    const I: u8 = 67;
    const VNI: &str = "6700";
    let ul = Underlay::new(I);
    let h1 = ul.weft_host("h1", 1, &[]);
    // The kernel sends RCO (and so needs the outer UDP checksum) and takes it.
    let kernel = kernel_host_with(
        &ul,
        3,
        VNI,
        &[&h1.ip],
        &["udpcsum", "remcsumtx", "remcsumrx"],
    );
    let kc_ip = addr(I, 0, 100);
    let kc = kernel_container(&kernel, &kc_ip);
    h1.weft(&[
        "network",
        "create",
        "ov",
        "--subnet",
        &subnet(I, 0),
        "--vni",
        VNI,
        "--ip-range",
        &format!("10.{I}.0.16/28"),
    ]);
    let kernel_ip = ul.addr(3);
    h1.weft(&["peer", "add", &kernel_ip, "--remote-csum"]);
    let c1 = h1.container("c1", "ov", &[]);
    assert_reaches(&c1.ns, &kc_ip);
    assert_reaches(&kc, &c1.ep.ip);
    // The kernel VTEP may have sent a datagram or two (its endpoint's first
    // broadcasts) before weft knew it as a peer: only the transfers count.
    const DROPS: [&str; 3] = ["vxlan_malformed", "vxlan_unknown_vni", "vxlan_unknown_peer"];
    let stats = h1.stats();
    let drops_before = DROPS.map(|reason| switch_drop(&stats, reason));

    let dir = &h1.daemon.dir;
    let input = random_file(dir, "in.bin");
    let out = dir.join("out.bin");
    // weft -> kernel: weft's datagrams carry RCO and the kernel takes them.
    let (seen, dump) = transfer_capturing(&h1.ns, &rco_filter(&h1.ip), 20, || {
        transfer(&c1.ns, &kc, &kc_ip, 6701, &input, &out)
    });
    assert!(seen, "no RCO datagrams from weft on the wire:\n{dump}");
    std::fs::remove_file(&out).unwrap();
    // kernel -> weft: the kernel's carry RCO and weft takes them.
    let (seen, dump) = transfer_capturing(&h1.ns, &rco_filter(&kernel_ip), 20, || {
        transfer(&kc, &c1.ns, &c1.ep.ip, 6702, &input, &out)
    });
    assert!(
        seen,
        "no RCO datagrams from the kernel on the wire:\n{dump}"
    );

    let stats = h1.stats();
    assert!(counter(&stats, "vxlan_rco_tx") > 50_000, "{stats}");
    assert!(counter(&stats, "vxlan_rco_rx") > 50_000, "{stats}");
    for (reason, before) in DROPS.iter().zip(drops_before) {
        assert_eq!(switch_drop(&stats, reason), before, "{reason}: {stats}");
    }
    // The kernel VTEP dropped nothing as malformed.
    let link = kernel.ip(&["-s", "-j", "link", "show", "vx0"]);
    let link: Value = serde_json::from_slice(&link.stdout).expect("ip -j link");
    let rx_errors = &link[0]["stats64"]["rx"]["errors"];
    assert_eq!(rx_errors, 0, "kernel vx0 rx errors: {link}");
}

// ---------------------------------------------------------------------------
// 3. VNIs isolate networks that share a subnet
// ---------------------------------------------------------------------------

#[test]
fn vnis_isolate_overlays_with_the_same_subnet() {
    require_root!();
    const I: u8 = 62;
    let ul = Underlay::new(I);
    // Hosts 1 and 2 carry network `a` (VNI 6201), hosts 3 and 4 network `b`
    // (VNI 6202), all with the same subnet; all four are peers, so every
    // flood of either network reaches every host.
    let hosts: Vec<Host> = (1..=4)
        .map(|n| ul.weft_host(&format!("h{n}"), n, &[]))
        .collect();
    let subnet = subnet(I, 0);
    for (i, h) in hosts.iter().enumerate() {
        let (name, vni) = if i < 2 { ("a", "6201") } else { ("b", "6202") };
        h.weft(&["network", "create", name, "--subnet", &subnet, "--vni", vni]);
    }
    mesh(&hosts.iter().collect::<Vec<_>>());
    // The same addresses on both overlays: .2 on hosts 1 and 3, .3 on hosts
    // 2 and 4; and .4 only on `b`.
    let (x2, x3, x4) = (addr(I, 0, 2), addr(I, 0, 3), addr(I, 0, 4));
    let a2 = hosts[0].container("a2", "a", &["--ip", &x2]);
    let a3 = hosts[1].container("a3", "a", &["--ip", &x3]);
    let b2 = hosts[2].container("b2", "b", &["--ip", &x2]);
    let b3 = hosts[3].container("b3", "b", &["--ip", &x3]);
    let b4 = hosts[3].container("b4", "b", &["--ip", &x4]);

    // Same VNI: reachable across hosts, and the answer comes from the
    // container of the asker's own overlay.
    assert_reaches(&a2.ns, &x3);
    assert_reaches(&a3.ns, &x2);
    assert_reaches(&b2.ns, &x3);
    assert_reaches(&b3.ns, &x2);
    assert_reaches(&b2.ns, &x4);
    assert_eq!(neigh_mac(&a2.ns, &x3).as_deref(), Some(a3.ep.mac.as_str()));
    assert_eq!(neigh_mac(&a3.ns, &x2).as_deref(), Some(a2.ep.mac.as_str()));
    assert_eq!(neigh_mac(&b2.ns, &x3).as_deref(), Some(b3.ep.mac.as_str()));
    assert_eq!(neigh_mac(&b3.ns, &x2).as_deref(), Some(b2.ep.mac.as_str()));

    // Other VNI: .4 exists only on `b`, so `a` cannot reach it, though its
    // ARP requests are flooded to hosts 3 and 4 as well; they drop them as
    // unknown VNI.
    let unknown_before: Vec<u64> = hosts
        .iter()
        .map(|h| switch_drop(&h.stats(), "vxlan_unknown_vni"))
        .collect();
    assert_unreachable(&a2.ns, &x4);
    assert_unreachable(&a3.ns, &x4);
    assert_eq!(neigh_mac(&a2.ns, &x4), None, "a2 resolved {x4}");
    for (i, h) in hosts.iter().enumerate().skip(2) {
        let grew = wait_for(Duration::from_secs(5), || {
            (switch_drop(&h.stats(), "vxlan_unknown_vni") > unknown_before[i]).then_some(())
        });
        assert!(
            grew.is_some(),
            "h{} did not count VNI 6201 floods as vxlan_unknown_vni: {}",
            i + 1,
            h.stats()
        );
        // Per peer too: h1 and h2 sent them.
        let peers = h.json(&["peer", "ls"]);
        let dropped_from = |ip: &str| {
            peers.as_array().unwrap().iter().any(|p| {
                p["addr"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("{ip}:")))
                    && p["drops"].as_object().is_some_and(|d| !d.is_empty())
            })
        };
        assert!(
            dropped_from(&hosts[0].ip) && dropped_from(&hosts[1].ip),
            "h{}: peers h1/h2 without drops: {peers}",
            i + 1
        );
    }
    // Nothing of `a` was learned on `b`'s hosts, nor the reverse.
    for (i, h) in hosts.iter().enumerate() {
        let fdb = h.json(&["fdb"]);
        let foreign: Vec<&String> = if i < 2 {
            vec![&b2.ep.mac, &b3.ep.mac, &b4.ep.mac]
        } else {
            vec![&a2.ep.mac, &a3.ep.mac]
        };
        for mac in foreign {
            assert!(
                !fdb.as_array().unwrap().iter().any(|e| e["mac"]
                    .as_str()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                    == Some(mac.as_str())),
                "h{} learned {mac} of the other overlay: {fdb}",
                i + 1
            );
        }
    }
    // A fresh resolution from `b` of .2 is answered by `b`'s .2, not `a`'s.
    assert_ok(&b4.ns.ip(&["neigh", "flush", "all"]), "neigh flush");
    assert_eq!(neigh_mac(&b4.ns, &x2), None, "flushed");
    assert_reaches(&b4.ns, &x2);
    assert_eq!(neigh_mac(&b4.ns, &x2).as_deref(), Some(b2.ep.mac.as_str()));
}

// ---------------------------------------------------------------------------
// 4. Malformed and stray VXLAN
// ---------------------------------------------------------------------------

/// A VXLAN datagram: flags, VNI, and the inner frame.
fn vxlan(flags: u8, vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut d = vec![flags, 0, 0, 0];
    d.extend_from_slice(&(vni << 8).to_be_bytes());
    d.extend_from_slice(frame);
    d
}

/// A broadcast ARP request from `mac`/`ip` for `target`, padded to 60 bytes.
fn arp_request(mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

/// Sends each datagram from `from`:0 to `to` inside namespace `ns`.
fn send_udp(ns: &Netns, from: &str, to: &str, datagrams: Vec<Vec<u8>>) {
    let (from, to) = (format!("{from}:0"), to.to_string());
    in_netns(ns, move || {
        let sock = UdpSocket::bind(&from)?;
        for d in &datagrams {
            let n = sock.send_to(d, &to)?;
            assert_eq!(n, d.len(), "short send");
        }
        Ok(())
    });
}

#[test]
fn malformed_and_stray_vxlan_is_counted_and_dropped() {
    require_root!();
    const I: u8 = 63;
    const VNI: u32 = 6300;
    let ul = Underlay::new(I);
    let h1 = ul.weft_host("h1", 1, &[]);
    let h2 = ul.weft_host("h2", 2, &[]);
    let subnet = subnet(I, 0);
    for (h, range) in [(&h1, "16"), (&h2, "32")] {
        h.weft(&[
            "network",
            "create",
            "ov",
            "--subnet",
            &subnet,
            "--vni",
            &VNI.to_string(),
            "--ip-range",
            &format!("10.{I}.0.{range}/28"),
        ]);
    }
    mesh(&[&h1, &h2]);
    let c1 = h1.container("c1", "ov", &[]);
    let c2 = h2.container("c2", "ov", &[]);
    assert_reaches(&c1.ns, &c2.ep.ip);

    let target = format!("{}:4789", h1.ip);
    let stray_mac = [0x02, 0, 0, 0, 0x63, 0x99];
    let stray_ip = [10, I, 0, 99];
    let c1_ip: std::net::Ipv4Addr = c1.ep.ip.parse().unwrap();
    let frame = arp_request(stray_mac, stray_ip, c1_ip.octets());
    let reasons = ["vxlan_malformed", "vxlan_unknown_vni", "vxlan_unknown_peer"];
    let snapshot = || -> Vec<u64> {
        let stats = h1.stats();
        reasons.iter().map(|r| switch_drop(&stats, r)).collect()
    };
    let before = snapshot();

    // From the peer h2 (its underlay address is a peer; h2's own weft holds
    // port 4789 there, so these leave from an ephemeral port):
    // (a) 3 datagrams too short for a header, (b) 2 without the I flag,
    // (c) 4 valid ones for a VNI h1 does not have.
    let mut from_peer = vec![vec![0x08, 0, 0, 0]; 3];
    from_peer.extend(std::iter::repeat_n(vxlan(0x00, VNI, &frame), 2));
    from_peer.extend(std::iter::repeat_n(vxlan(0x08, VNI + 1, &frame), 4));
    send_udp(&h2.ns, &h2.ip, &target, from_peer);
    // (d) 5 valid datagrams for the right VNI from the underlay's own
    // address, which is no peer.
    send_udp(
        &ul.ns,
        &ul.addr(254),
        &target,
        vec![vxlan(0x08, VNI, &frame); 5],
    );

    let want = [before[0] + 5, before[1] + 4, before[2] + 5];
    let reached = wait_for(Duration::from_secs(5), || {
        let now = snapshot();
        (now.iter().zip(&want).all(|(n, w)| n >= w)).then_some(now)
    });
    let now = reached.unwrap_or_else(|| {
        panic!(
            "switch_drops {reasons:?} went {before:?} -> {:?}, want {want:?}: {}",
            snapshot(),
            h1.stats()
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        snapshot(),
        want,
        "exact drops for {reasons:?} (from {now:?})"
    );

    // Charged to the peer that sent them.
    let peers = h1.json(&["peer", "ls"]);
    let p2 = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["addr"] == format!("{}:4789", h2.ip).as_str())
        .unwrap_or_else(|| panic!("no peer {} on h1: {peers}", h2.ip));
    let peer_drops: u64 = p2["drops"]
        .as_object()
        .map(|d| d.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert_eq!(peer_drops, 9, "drops charged to peer {}: {p2}", h2.ip);

    // None of it was switched: the stray MAC was never learned, and c1 got
    // no ARP request from it.
    let fdb = h1.json(&["fdb"]);
    assert!(
        !fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == "02:00:00:00:63:99"),
        "the stray source MAC was learned: {fdb}"
    );
    assert_eq!(
        neigh_mac(&c1.ns, &addr(I, 0, 99)),
        None,
        "c1 saw the stray ARP request"
    );

    // The daemon keeps working.
    assert_ok(&weft(&h1.daemon, &["status"]), "weft status after the junk");
    assert_ok(&c1.ns.ip(&["neigh", "flush", "all"]), "neigh flush");
    assert_reaches(&c1.ns, &c2.ep.ip);
    assert_reaches(&c2.ns, &c1.ep.ip);
}

// `SO_NO_CHECK`: send UDP over IPv4 with a zero checksum. (The macro
// expands to other nix macros by their bare names.)
use nix::libc;
use nix::{setsockopt_impl, sockopt_impl};
sockopt_impl!(NoCheck, SetOnly, libc::SOL_SOCKET, libc::SO_NO_CHECK, bool);

/// Sends each datagram from `from`:0 to `to` inside `ns` with a zero UDP
/// checksum.
fn send_udp_unsummed(ns: &Netns, from: &str, to: &str, datagrams: Vec<Vec<u8>>) {
    let (from, to) = (format!("{from}:0"), to.to_string());
    in_netns(ns, move || {
        let sock = UdpSocket::bind(&from)?;
        nix::sys::socket::setsockopt(&sock, NoCheck, &true)?;
        for d in &datagrams {
            sock.send_to(d, &to)?;
        }
        Ok(())
    });
}

/// `vxlan(0x08, vni, frame)` with the RCO flag and field `field`.
fn vxlan_rco(vni: u32, field: u8, frame: &[u8]) -> Vec<u8> {
    let mut d = vxlan(0x08, vni, frame);
    d[1] |= 0x20;
    d[7] = field;
    d
}

#[test]
fn hostile_remote_checksum_offload_is_dropped() {
    require_root!();
    const I: u8 = 68;
    const VNI: u32 = 6800;
    let ul = Underlay::new(I);
    let h1 = ul.weft_host("h1", 1, &[]);
    let h2 = ul.weft_host("h2", 2, &[]);
    for (h, range) in [(&h1, "16"), (&h2, "32")] {
        h.weft(&[
            "network",
            "create",
            "ov",
            "--subnet",
            &subnet(I, 0),
            "--vni",
            &VNI.to_string(),
            "--ip-range",
            &format!("10.{I}.0.{range}/28"),
        ]);
    }
    mesh(&[&h1, &h2]);
    let c1 = h1.container("c1", "ov", &[]);
    let target = format!("{}:4789", h1.ip);
    let c1_ip: std::net::Ipv4Addr = c1.ep.ip.parse().unwrap();
    let frame = arp_request([0x02, 0, 0, 0, 0x68, 0x99], [10, I, 0, 99], c1_ip.octets());

    // (a) RCO whose checksum field lies past the 60-byte frame (start 254):
    // malformed. (b) RCO in bounds but no outer UDP checksum: dropped by the
    // kernel before weft reads it, so counted nowhere in weft.
    send_udp(
        &h2.ns,
        &h2.ip,
        &target,
        vec![vxlan_rco(VNI, 0x7f, &frame); 3],
    );
    send_udp_unsummed(
        &h2.ns,
        &h2.ip,
        &target,
        vec![vxlan_rco(VNI, 0x07, &frame); 4],
    );
    let malformed = wait_for(Duration::from_secs(5), || {
        let n = switch_drop(&h1.stats(), "vxlan_malformed");
        (n >= 3).then_some(n)
    });
    std::thread::sleep(Duration::from_millis(300));
    let stats = h1.stats();
    assert_eq!(malformed, Some(3), "{stats}");
    assert_eq!(switch_drop(&stats, "vxlan_malformed"), 3, "{stats}");
    assert_eq!(counter(&stats, "vxlan_rco_rx"), 0, "{stats}");

    // (c) The same in-bounds RCO with the outer checksum: taken.
    send_udp(
        &h2.ns,
        &h2.ip,
        &target,
        vec![vxlan_rco(VNI, 0x07, &frame); 2],
    );
    let taken = wait_for(Duration::from_secs(5), || {
        let n = counter(&h1.stats(), "vxlan_rco_rx");
        (n >= 2).then_some(n)
    });
    assert_eq!(taken, Some(2), "{}", h1.stats());
    assert_ok(&weft(&h1.daemon, &["status"]), "weft status after the junk");
}

// ---------------------------------------------------------------------------
// 5. MTU honesty
// ---------------------------------------------------------------------------

#[test]
fn too_big_for_the_tunnel_gets_frag_needed() {
    require_root!();
    const I: u8 = 64;
    let ul = Underlay::new(I);
    let h1 = ul.weft_host("h1", 1, &[]);
    let h2 = ul.weft_host("h2", 2, &[]);
    // `big` claims MTU 1500 although the underlay (1500) only carries 1450
    // inside VXLAN; `std` takes the honest default.
    for (h, range) in [(&h1, "16"), (&h2, "32")] {
        for (name, k, vni, extra) in [
            ("big", 1u8, "6401", &["--mtu", "1500"][..]),
            ("std", 2u8, "6402", &[][..]),
        ] {
            let mut args = vec![
                "network".to_string(),
                "create".into(),
                name.into(),
                "--subnet".into(),
                subnet(I, k),
                "--vni".into(),
                vni.into(),
                "--ip-range".into(),
                format!("10.{I}.{k}.{range}/28"),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            h.weft(&args);
        }
    }
    mesh(&[&h1, &h2]);
    let big1 = h1.container("big1", "big", &[]);
    let big2 = h2.container("big2", "big", &[]);
    let std1 = h1.container("std1", "std", &[]);
    let std2 = h2.container("std2", "std", &[]);
    for (c, mtu) in [(&big1, 1500), (&std1, 1450)] {
        let out = c.ns.ip(&["link", "show", &c.ep.ifname]);
        assert!(
            text(&out.stdout).contains(&format!("mtu {mtu} ")),
            "MTU of {} in {}:\n{}",
            c.ep.ifname,
            c.ns.name,
            describe(&out)
        );
    }
    assert_reaches(&big1.ns, &big2.ep.ip);
    assert_reaches(&std1.ns, &std2.ep.ip);

    // The largest packet that fits the default MTU crosses with DF set.
    let out = ping_retry(&std1.ns, &std2.ep.ip, &["-M", "do", "-s", "1422"]);
    assert_ok(&out, "ping -M do -s 1422 on the 1450 network");

    // Without DF, a 1500-byte packet is fragmented to fit the tunnel (both
    // ways: the echo reply is just as big).
    let out = ping_retry(&big1.ns, &big2.ep.ip, &["-M", "dont", "-s", "1472"]);
    assert_ok(&out, "ping -M dont -s 1472 on the 1500 network");

    // With DF, weft's gateway says what fits.
    let before = h1.stats();
    let out = big1.ns.exec(&[
        "ping",
        "-n",
        "-c",
        "1",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        "1472",
        &big2.ep.ip,
    ]);
    let said = text(&out.stdout);
    assert!(
        !out.status.success(),
        "ping -M do -s 1472 over a 1450 tunnel passed:\n{}",
        describe(&out)
    );
    assert!(
        said.contains("Frag needed and DF set (mtu = 1450)"),
        "no ICMP fragmentation needed (mtu = 1450):\n{}",
        describe(&out)
    );
    assert!(
        said.contains(&format!("From {}", addr(I, 1, 1))),
        "the error does not come from the gateway:\n{}",
        describe(&out)
    );
    let after = h1.stats();
    assert!(
        switch_drop(&after, "tunnel_too_big") > switch_drop(&before, "tunnel_too_big"),
        "tunnel_too_big did not grow: {before} -> {after}"
    );
    assert!(
        counter(&after, "icmp_errors_sent") > counter(&before, "icmp_errors_sent"),
        "icmp_errors_sent did not grow: {before} -> {after}"
    );
    // The sender's kernel took the hint.
    let out = big1.ns.ip(&["route", "get", &big2.ep.ip]);
    assert!(
        text(&out.stdout).contains("mtu 1450"),
        "no PMTU exception in {}:\n{}",
        big1.ns.name,
        describe(&out)
    );
}
