//! Many hosts, one network: daemons joined through a real etcd
//! (`weft daemon --store etcd://...`), on real namespaces.
//!
//! Every test builds a little data centre as the overlay tests do: an
//! "underlay" namespace with a kernel bridge (192.168.<k>.254, which also
//! runs the test's own etcd, data in a temporary directory) and "host"
//! namespaces on it, each running a daemon with `--store`. No test uses
//! `peer add` or `--ip-range`: hosts, networks, addresses and endpoints all
//! come from the store.
//!
//! The TLS tests make their own CA, server and client certificates with the
//! `openssl` CLI in a temporary directory ([`Pki`]) and run etcd with
//! `--client-cert-auth`; the login test turns etcd's authentication on.
//!
//! Subnet indices 70..=75 (overlay subnets 10.<index>.0.0/24, underlays
//! 192.168.<index>.0/24).

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use common::*;

/// etcd's client port in the underlay namespace.
const ETCD_PORT: u16 = 2379;
/// Longest a dead host may take to disappear: the lease TTL (10 s) plus
/// etcd's expiry check and the watch.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(25);
/// Longest a change takes to reach every host in these tests (it takes
/// milliseconds; the bound only keeps a broken build from hanging).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(5);

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}:\n{}", describe(out));
}

/// A test's own certificate authority, made with the `openssl` CLI in a
/// temporary directory: `ca.pem`, a server certificate `server.pem`
/// (subjectAltName: the etcd address) with `server.key`, a client
/// certificate `client.pem` with `client.key`, and `other-ca.pem`, a CA
/// that signed neither.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new(server_ip: &str) -> Pki {
        let pki = Pki {
            dir: TempDir::new("pki"),
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        for (ca, cn) in [("ca", "weft-t-ca"), ("other-ca", "weft-t-other-ca")] {
            pki.openssl(
                &[&["req", "-x509"], &ec[..], &["-nodes", "-days", "2"]].concat(),
                &[
                    "-keyout",
                    &pki.file(&format!("{ca}.key")),
                    "-out",
                    &pki.file(&format!("{ca}.pem")),
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            );
        }
        for (name, ext) in [
            (
                "server",
                format!("subjectAltName=IP:{server_ip}\nextendedKeyUsage=serverAuth,clientAuth\n"),
            ),
            ("client", "extendedKeyUsage=clientAuth\n".to_string()),
        ] {
            let ext_file = pki.file(&format!("{name}.ext"));
            std::fs::write(&ext_file, ext).expect("write the extensions file");
            pki.openssl(
                &[&["req"], &ec[..], &["-nodes"]].concat(),
                &[
                    "-keyout",
                    &pki.file(&format!("{name}.key")),
                    "-out",
                    &pki.file(&format!("{name}.csr")),
                    "-subj",
                    &format!("/CN=weft-t-{name}"),
                ],
            );
            pki.openssl(
                &["x509", "-req", "-days", "2", "-CAcreateserial"],
                &[
                    "-in",
                    &pki.file(&format!("{name}.csr")),
                    "-CA",
                    &pki.file("ca.pem"),
                    "-CAkey",
                    &pki.file("ca.key"),
                    "-out",
                    &pki.file(&format!("{name}.pem")),
                    "-extfile",
                    &ext_file,
                ],
            );
        }
        pki
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn openssl(&self, args: &[&str], more: &[&str]) {
        let out = run_timeout(
            Command::new("openssl").args(args).args(more),
            Duration::from_secs(30),
        );
        assert_ok(&out, &format!("openssl {args:?} {more:?}"));
    }

    /// The daemon's flags for a client certificate and the right CA.
    fn client_flags(&self) -> Vec<String> {
        [
            "--store-ca",
            &self.file("ca.pem"),
            "--store-cert",
            &self.file("client.pem"),
            "--store-key",
            &self.file("client.key"),
        ]
        .map(str::to_string)
        .to_vec()
    }
}

/// A real etcd in a namespace, its data in a temporary directory; killed
/// (with its process group) on drop.
struct Etcd {
    server: Option<Bg>,
    data: TempDir,
    ns: String,
    ip: String,
    /// etcdctl's TLS flags, when etcd serves TLS and checks client
    /// certificates (`--client-cert-auth`).
    tls: Option<Vec<String>>,
    /// etcdctl's `--user`, once authentication is on.
    user: Option<String>,
}

impl Etcd {
    fn start(ns: &Netns, ip: &str) -> Etcd {
        Etcd::start_with(ns, ip, None)
    }

    /// With `pki`, etcd serves TLS with its server certificate and accepts
    /// only clients with a certificate its CA signed.
    fn start_with(ns: &Netns, ip: &str, pki: Option<&Pki>) -> Etcd {
        let mut etcd = Etcd {
            server: None,
            data: TempDir::new("etcd"),
            ns: ns.name.clone(),
            ip: ip.to_string(),
            tls: pki.map(|p| {
                [
                    "--cacert",
                    &p.file("ca.pem"),
                    "--cert",
                    &p.file("client.pem"),
                    "--key",
                    &p.file("client.key"),
                ]
                .map(str::to_string)
                .to_vec()
            }),
            user: None,
        };
        let server_tls = pki.map(|p| {
            [
                "--cert-file",
                &p.file("server.pem"),
                "--key-file",
                &p.file("server.key"),
                "--trusted-ca-file",
                &p.file("ca.pem"),
                "--client-cert-auth",
            ]
            .map(str::to_string)
            .to_vec()
        });
        etcd.spawn_with(server_tls.as_deref().unwrap_or_default());
        etcd
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://{}:{ETCD_PORT}", self.ip)
    }

    /// Runs etcdctl against this etcd, with its TLS flags and user.
    fn etcdctl(&self, args: &[&str]) -> Output {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}:{ETCD_PORT}", self.ip);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "etcdctl", "--endpoints", &client])
            .args(self.tls.iter().flatten());
        if let Some(user) = &self.user {
            cmd.args(["--user", user]);
        }
        run_timeout(cmd.args(args), Duration::from_secs(5))
    }

    /// Adds user `root` with `password` and turns authentication on: from
    /// then on every client must log in.
    fn enable_auth(&mut self, password: &str) {
        let root = format!("root:{password}");
        assert_ok(
            &self.etcdctl(&["user", "add", &root, "--interactive=false"]),
            "etcdctl user add root",
        );
        // etcd 3.4 wants root to hold the root role (which may not exist yet).
        let _ = self.etcdctl(&["role", "add", "root"]);
        assert_ok(
            &self.etcdctl(&["user", "grant-role", "root", "root"]),
            "etcdctl user grant-role root root",
        );
        assert_ok(&self.etcdctl(&["auth", "enable"]), "etcdctl auth enable");
        self.user = Some(root);
        assert_ok(
            &self.etcdctl(&["endpoint", "health"]),
            "etcdctl as root after auth enable",
        );
    }

    fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    fn spawn_with(&mut self, server_tls: &[String]) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}:{ETCD_PORT}", self.ip);
        let peer = format!("http://{}:2380", self.ip);
        let data = self.data.path().join("member");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "etcd", "--name", "weft-t"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("weft-t={peer}")])
            .args(server_tls)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        self.server = Some(Bg::spawn(cmd, "etcd"));
        let healthy = wait_for(Duration::from_secs(20), || {
            let out = self.etcdctl(&["endpoint", "health"]);
            out.status.success().then_some(())
        });
        assert!(healthy.is_some(), "etcd did not become healthy at {client}");
    }

    /// Stops etcd (SIGTERM, then waits); its data stays for [`Etcd::spawn`].
    fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.signal(Signal::SIGTERM);
            server.wait_timeout(Duration::from_secs(10));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Bg's drop kills the group.
        self.server.take();
    }
}

/// The underlay: a namespace with bridge `br0` (192.168.<k>.254) and etcd.
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
        assert_ok(
            &ul.ns.ip(&["link", "add", "br0", "type", "bridge"]),
            "bridge",
        );
        assert_ok(
            &ul.ns
                .ip(&["addr", "add", &format!("{}/24", ul.addr(254)), "dev", "br0"]),
            "underlay address",
        );
        assert_ok(&ul.ns.ip(&["link", "set", "br0", "up"]), "br0 up");
        ul
    }

    fn addr(&self, n: u8) -> String {
        format!("192.168.{}.{n}", self.k)
    }

    /// A host namespace plugged into the bridge as `ul0` = 192.168.<k>.<n>,
    /// running a daemon joined to `store`.
    fn host(&self, n: u8, store: &str, prefix: &str) -> Host {
        self.host_with(n, store, prefix, &[])
    }

    /// [`Underlay::host`] with more `weft daemon` flags (TLS, login).
    fn host_with(&self, n: u8, store: &str, prefix: &str, extra: &[String]) -> Host {
        let ns = Netns::new("host");
        let port = format!("p{n}");
        assert_ok(
            &self.ns.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns", &ns.name,
            ]),
            "veth",
        );
        assert_ok(
            &self.ns.ip(&["link", "set", &port, "master", "br0", "up"]),
            "bridge port",
        );
        let ip = self.addr(n);
        assert_ok(
            &ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "ul0"]),
            "host address",
        );
        assert_ok(&ns.ip(&["link", "set", "ul0", "up"]), "ul0 up");
        let mut args = vec!["--vtep-ip", &ip, "--store", store, "--store-prefix", prefix];
        args.extend(extra.iter().map(String::as_str));
        let daemon = Daemon::start_in(&ns, &args);
        Host {
            daemon,
            _ns: ns,
            ip,
        }
    }
}

/// A host namespace with its daemon (dropped first).
struct Host {
    daemon: Daemon,
    /// Kept until the daemon is gone.
    _ns: Netns,
    ip: String,
}

impl Host {
    fn json(&self, args: &[&str]) -> Value {
        json(&self.daemon, args)
    }

    fn weft(&self, args: &[&str]) -> Output {
        weft(&self.daemon, args)
    }

    fn container(&self, network: &str) -> Container {
        let ns = Netns::new("c");
        let ep = attach(&self.daemon, network, &ns, &[]);
        Container { ns, ep }
    }

    fn has_network(&self, name: &str) -> bool {
        self.json(&["network", "ls"])
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["name"] == name))
    }

    /// Static fdb entries of `network` that point at a VTEP, by MAC.
    fn remote_macs(&self, network: &str) -> BTreeSet<String> {
        self.json(&["fdb", network])
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["static"] == true && e["vtep"].is_string())
            .filter_map(|e| e["mac"].as_str().map(str::to_string))
            .collect()
    }

    /// Neighbour bindings of `network`, as `ip mac`.
    fn neighbors(&self, network: &str) -> BTreeSet<String> {
        self.json(&["neighbor", "ls", network])
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                format!(
                    "{} {}",
                    n["ip"].as_str().unwrap_or(""),
                    n["mac"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    fn peers(&self) -> BTreeSet<String> {
        self.json(&["peer", "ls"])
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                p["addr"]
                    .as_str()
                    .map(|a| a.split(':').next().unwrap_or("").to_string())
            })
            .collect()
    }

    fn store(&self) -> Value {
        self.json(&["status"])["store"].clone()
    }
}

struct Container {
    ns: Netns,
    ep: Endpoint,
}

fn ping(from: &Netns, target: &str) -> Output {
    from.exec(&["ping", "-n", "-c", "1", "-W", "2", target])
}

fn assert_reaches(from: &Netns, target: &str) {
    let out = ping(from, target);
    assert!(
        out.status.success(),
        "ping {target} from {} failed:\n{}",
        from.name,
        describe(&out)
    );
}

/// Waits until `f` holds, or fails with `what`.
fn converge(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    let done = wait_for(timeout, || f().then_some(()));
    assert!(done.is_some(), "{what}: not within {timeout:?}");
    start.elapsed()
}

/// A prefix of the test's own, so tests sharing nothing still never meet.
fn prefix() -> String {
    format!("/{}/", unique_name("weft"))
}

#[test]
fn three_hosts_share_one_network_without_peers_or_ranges() {
    require_root!();
    let ul = Underlay::new(70);
    let etcd = Etcd::start(&ul.ns, &ul.addr(254));
    let prefix = prefix();
    // Host 3 turns remote checksum offload off; the others keep it.
    let no_rco = strings(&["--remote-csum", "off"]);
    let hosts: Vec<Host> = (1..=3)
        .map(|n| match n {
            3 => ul.host_with(n, &etcd.url(), &prefix, &no_rco),
            _ => ul.host(n, &etcd.url(), &prefix),
        })
        .collect();
    for h in &hosts {
        let store = h.store();
        assert_eq!(store["connected"], true, "{store}");
        assert!(store["revision"].as_i64().unwrap_or(0) > 0, "{store}");
    }
    converge("every host sees three hosts", CONVERGE_TIMEOUT, || {
        hosts.iter().all(|h| h.store()["hosts"] == 3)
    });
    // Peers come from the store.
    for h in &hosts {
        let others: BTreeSet<String> = hosts
            .iter()
            .filter(|o| o.ip != h.ip)
            .map(|o| o.ip.clone())
            .collect();
        assert_eq!(h.peers(), others, "peers of {}", h.ip);
        // Hosts 1 and 2 advertise remote checksum offload and use it with
        // each other; host 3 neither asks for it nor sends it.
        let list = h.json(&["peer", "ls"]);
        for p in list.as_array().unwrap() {
            let ip = p["addr"].as_str().and_then(|a| a.split(':').next());
            let both = h.ip != hosts[2].ip && ip != Some(hosts[2].ip.as_str());
            assert_eq!(
                p["remote_csum"].as_bool().unwrap_or(false),
                both,
                "peer {p} on {}: {list}",
                h.ip
            );
        }
    }

    // One network, created once, on host 1.
    let out = hosts[0].weft(&[
        "network",
        "create",
        "ov",
        "--subnet",
        &subnet(70, 0),
        "--vni",
        "70",
    ]);
    assert_ok(&out, "network create");
    let took = converge("the network reaches every host", CONVERGE_TIMEOUT, || {
        hosts.iter().all(|h| h.has_network("ov"))
    });
    eprintln!("network visible on every host after {took:?}");
    // Creating it again elsewhere is refused.
    let again = hosts[1].weft(&[
        "network",
        "create",
        "ov",
        "--subnet",
        &subnet(70, 0),
        "--vni",
        "70",
    ]);
    assert!(!again.status.success(), "{}", describe(&again));

    // One endpoint per host, addresses from the store's blocks.
    let cs: Vec<Container> = hosts.iter().map(|h| h.container("ov")).collect();
    let ips: BTreeSet<&str> = cs.iter().map(|c| c.ep.ip.as_str()).collect();
    assert_eq!(ips.len(), 3, "addresses collide: {ips:?}");
    // Every host has every remote endpoint installed before any packet:
    // a static fdb entry on the tunnel and a neighbour binding.
    for (i, h) in hosts.iter().enumerate() {
        converge("remote endpoints installed", CONVERGE_TIMEOUT, || {
            let macs = h.remote_macs("ov");
            let neigh = h.neighbors("ov");
            cs.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .all(|(_, c)| {
                    macs.contains(&c.ep.mac) && neigh.contains(&format!("{} {}", c.ep.ip, c.ep.mac))
                })
        });
    }
    let flooded_before: Vec<u64> = hosts
        .iter()
        .map(|h| {
            h.json(&["stats"])["counters"]["arp_suppressed"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    for a in &cs {
        for b in &cs {
            if a.ep.ip != b.ep.ip {
                assert_reaches(&a.ns, &b.ep.ip);
            }
        }
    }
    // ARP for remote endpoints was answered locally.
    let suppressed: u64 = hosts
        .iter()
        .zip(&flooded_before)
        .map(|(h, before)| {
            h.json(&["stats"])["counters"]["arp_suppressed"]
                .as_u64()
                .unwrap_or(0)
                - before
        })
        .sum();
    assert!(
        suppressed >= 3,
        "ARP was not answered locally ({suppressed} suppressed)"
    );

    // `network rm` is refused while any host has endpoints on it.
    let rm = hosts[1].weft(&["network", "rm", "ov"]);
    assert!(!rm.status.success(), "network rm should be refused");
    let msg = text(&rm.stderr);
    assert!(msg.contains("endpoint"), "{msg}");
    assert!(hosts[1].has_network("ov"));

    // Detach withdraws an endpoint from every other host.
    let c1 = &cs[1];
    hosts[1].weft(&["detach", "ov", &c1.ep.name]);
    converge("a detached endpoint is withdrawn", CONVERGE_TIMEOUT, || {
        !hosts[0].remote_macs("ov").contains(&c1.ep.mac)
            && !hosts[2]
                .neighbors("ov")
                .iter()
                .any(|n| n.starts_with(&format!("{} ", c1.ep.ip)))
    });

    // A host killed with SIGKILL is withdrawn when its lease expires.
    let dead = &hosts[2];
    let dead_ep = cs[2].ep.clone();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dead.daemon.pid() as i32),
        Signal::SIGKILL,
    )
    .expect("kill host 3's daemon");
    let took = converge("the dead host is withdrawn", WITHDRAW_TIMEOUT, || {
        !hosts[0].peers().contains(&dead.ip)
            && !hosts[0].remote_macs("ov").contains(&dead_ep.mac)
            && !hosts[0]
                .neighbors("ov")
                .iter()
                .any(|n| n.starts_with(&format!("{} ", dead_ep.ip)))
    });
    eprintln!("dead host withdrawn after {took:?}");
    assert_eq!(hosts[0].store()["hosts"], 2);

    // The network can go once no host has endpoints on it, and leaves
    // every host.
    hosts[0].weft(&["detach", "ov", &cs[0].ep.name]);
    let rm = hosts[1].weft(&["network", "rm", "ov"]);
    assert_ok(&rm, "network rm");
    converge(
        "the network leaves every live host",
        CONVERGE_TIMEOUT,
        || !hosts[0].has_network("ov") && !hosts[1].has_network("ov"),
    );
}

#[test]
fn concurrent_attaches_on_every_host_never_collide() {
    require_root!();
    const PER_HOST: usize = 6;
    let ul = Underlay::new(71);
    let etcd = Etcd::start(&ul.ns, &ul.addr(254));
    let prefix = prefix();
    let hosts: Vec<Host> = (1..=3).map(|n| ul.host(n, &etcd.url(), &prefix)).collect();
    // A /24 is cut into blocks of 16 addresses: every host leases its own.
    assert_ok(
        &hosts[0].weft(&[
            "network",
            "create",
            "ov",
            "--subnet",
            &subnet(71, 0),
            "--vni",
            "71",
        ]),
        "network create",
    );
    converge("the network reaches every host", CONVERGE_TIMEOUT, || {
        hosts.iter().all(|h| h.has_network("ov"))
    });
    let namespaces: Vec<Vec<Netns>> = hosts
        .iter()
        .map(|_| (0..PER_HOST).map(|_| Netns::new("c")).collect())
        .collect();
    let endpoints: Vec<Endpoint> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .zip(&namespaces)
            .flat_map(|(h, nss)| nss.iter().map(move |ns| (h, ns)))
            .map(|(h, ns)| s.spawn(move || attach(&h.daemon, "ov", ns, &[])))
            .collect();
        handles
            .into_iter()
            .map(|t| t.join().expect("attach"))
            .collect()
    });
    let ips: BTreeSet<&str> = endpoints.iter().map(|e| e.ip.as_str()).collect();
    assert_eq!(
        ips.len(),
        endpoints.len(),
        "two endpoints got one address: {:?}",
        endpoints.iter().map(|e| &e.ip).collect::<Vec<_>>()
    );
    let macs: BTreeSet<&str> = endpoints.iter().map(|e| e.mac.as_str()).collect();
    assert_eq!(macs.len(), endpoints.len(), "two endpoints got one MAC");
    // Every host installed all the others' endpoints.
    for h in &hosts {
        converge("remote endpoints installed", CONVERGE_TIMEOUT, || {
            h.remote_macs("ov").len() == PER_HOST * (hosts.len() - 1)
        });
    }
    // And an explicit address held elsewhere is refused with its holder.
    let ns = Netns::new("c");
    let taken = &endpoints[0].ip;
    let out = hosts[2].weft(&["attach", "ov", "--netns", &ns.name, "--ip", taken]);
    assert!(
        !out.status.success(),
        "a taken address was handed out twice"
    );
    assert!(text(&out.stderr).contains("already"), "{}", describe(&out));
}

#[test]
fn forwarding_survives_a_store_outage_and_the_daemons_resync() {
    require_root!();
    let ul = Underlay::new(72);
    let mut etcd = Etcd::start(&ul.ns, &ul.addr(254));
    let prefix = prefix();
    let hosts: Vec<Host> = (1..=2).map(|n| ul.host(n, &etcd.url(), &prefix)).collect();
    assert_ok(
        &hosts[0].weft(&[
            "network",
            "create",
            "ov",
            "--subnet",
            &subnet(72, 0),
            "--vni",
            "72",
        ]),
        "network create",
    );
    converge("the network reaches every host", CONVERGE_TIMEOUT, || {
        hosts.iter().all(|h| h.has_network("ov"))
    });
    let a = hosts[0].container("ov");
    let b = hosts[1].container("ov");
    converge("remote endpoints installed", CONVERGE_TIMEOUT, || {
        hosts[0].remote_macs("ov").contains(&b.ep.mac)
    });
    assert_reaches(&a.ns, &b.ep.ip);

    // Traffic keeps flowing while the store is down for 10 s.
    etcd.stop();
    converge(
        "status shows the store lost",
        Duration::from_secs(15),
        || hosts.iter().all(|h| h.store()["connected"] == false),
    );
    let status = text(&hosts[0].weft(&["status"]).stdout);
    assert!(status.contains("DISCONNECTED"), "{status}");
    let outage = Instant::now();
    let mut pings = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        assert_reaches(&a.ns, &b.ep.ip);
        pings += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(pings >= 10);
    // A cluster-wide change is refused clearly meanwhile.
    let ns = Netns::new("c");
    let out = hosts[1].weft(&["attach", "ov", "--netns", &ns.name]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("store"), "{}", describe(&out));

    etcd.spawn();
    converge("the daemons reconnect", Duration::from_secs(20), || {
        hosts.iter().all(|h| h.store()["connected"] == true)
    });
    // Nothing was withdrawn (the leases outlived the outage), and changes
    // flow again: a new endpoint on host 2 reaches host 1.
    assert!(hosts[0].remote_macs("ov").contains(&b.ep.mac));
    assert_reaches(&a.ns, &b.ep.ip);
    let c = Container {
        ep: attach(&hosts[1].daemon, "ov", &ns, &[]),
        ns,
    };
    converge(
        "an endpoint made after the outage is installed",
        CONVERGE_TIMEOUT,
        || hosts[0].remote_macs("ov").contains(&c.ep.mac),
    );
    assert_reaches(&a.ns, &c.ep.ip);
}

#[test]
fn a_host_cut_off_while_the_store_compacts_reads_everything_again() {
    require_root!();
    let ul = Underlay::new(73);
    let etcd = Etcd::start(&ul.ns, &ul.addr(254));
    let prefix = prefix();
    let hosts: Vec<Host> = (1..=2).map(|n| ul.host(n, &etcd.url(), &prefix)).collect();
    assert_ok(
        &hosts[0].weft(&[
            "network",
            "create",
            "ov",
            "--subnet",
            &subnet(73, 0),
            "--vni",
            "73",
        ]),
        "network create",
    );
    converge("the network reaches every host", CONVERGE_TIMEOUT, || {
        hosts.iter().all(|h| h.has_network("ov"))
    });
    let a = hosts[0].container("ov");
    let b = hosts[1].container("ov");
    converge("remote endpoints installed", CONVERGE_TIMEOUT, || {
        hosts[1].remote_macs("ov").contains(&a.ep.mac)
    });

    // Cut host 2 off the underlay until it notices.
    assert_ok(
        &hosts[1]._ns.ip(&["link", "set", "ul0", "down"]),
        "ul0 down",
    );
    // Usually within 6 s (HTTP/2 and lease keep-alives); should a loaded
    // machine take past the lease's 10 s, host 2 registers again on its
    // return, and must still catch up through a full read.
    converge("host 2 notices", Duration::from_secs(20), || {
        hosts[1].store()["connected"] == false
    });
    // Meanwhile host 1 adds one endpoint and withdraws another, and the
    // store compacts that history away.
    let c = hosts[0].container("ov");
    hosts[0].weft(&["detach", "ov", &a.ep.name]);
    let etcdctl = |args: &[&str]| {
        let endpoint = format!("http://{}:{ETCD_PORT}", ul.addr(254));
        let mut all = vec!["etcdctl", "--endpoints", endpoint.as_str()];
        all.extend_from_slice(args);
        ul.ns.exec(&all)
    };
    let out = etcdctl(&["endpoint", "status", "--write-out", "json"]);
    assert_ok(&out, "etcdctl endpoint status");
    let status: Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
    let revision = status[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("a revision");
    assert_ok(
        &etcdctl(&["compact", &revision.to_string()]),
        "etcdctl compact",
    );

    assert_ok(&hosts[1]._ns.ip(&["link", "set", "ul0", "up"]), "ul0 up");
    converge("host 2 reconnects", Duration::from_secs(20), || {
        hosts[1].store()["connected"] == true
    });
    converge("host 2 caught up", CONVERGE_TIMEOUT, || {
        let macs = hosts[1].remote_macs("ov");
        macs.contains(&c.ep.mac) && !macs.contains(&a.ep.mac)
    });
    assert!(
        hosts[1].store()["revision"].as_i64().unwrap_or(0) >= revision,
        "host 2's view is older than the compaction"
    );
    let log = std::fs::read_to_string(&hosts[1].daemon.log).unwrap_or_default();
    assert!(
        log.contains("compacted"),
        "host 2 did not resynchronise from a full read:\n{log}"
    );
    assert_reaches(&b.ns, &c.ep.ip);
}

#[test]
fn bad_or_unreachable_store_is_refused_clearly() {
    require_root!();
    let dir = TempDir::new("store");
    let sock = dir.path().join("weft.sock");
    let state = dir.path().join("state");
    let run = |store: &str| {
        run_timeout(
            Command::new(WEFT)
                .arg("--socket")
                .arg(&sock)
                .arg("daemon")
                .arg("--state-dir")
                .arg(&state)
                .args(["--vtep-ip", "127.0.0.1", "--store", store]),
            Duration::from_secs(30),
        )
    };
    for (store, says) in [
        ("127.0.0.1:2379", "etcd://HOST:PORT"),
        ("etcd://127.0.0.1", "has no port"),
        ("https://127.0.0.1", "has no port"),
    ] {
        let out = run(store);
        assert!(!out.status.success(), "{store} was accepted");
        assert!(
            text(&out.stderr).contains(says),
            "{store}: {}",
            describe(&out)
        );
        assert!(!sock.exists(), "a refused --store left the socket behind");
    }
    // Nothing listens on port 1.
    let out = run("etcd://127.0.0.1:1");
    assert!(!out.status.success());
    let msg = text(&out.stderr);
    assert!(
        msg.contains("cannot reach the store at etcd://127.0.0.1:1"),
        "{}",
        describe(&out)
    );
    assert!(
        !sock.exists(),
        "an unreachable store left the socket behind"
    );
}

/// Runs `weft daemon` (in `ns`, if given) with `args`, expecting it to be
/// refused: it fails and leaves no socket, and its stderr is returned.
/// When `early` (bad flags or files), it did not even make its state
/// directory.
fn refused_daemon(ns: Option<&str>, args: &[String], early: bool) -> String {
    let dir = TempDir::new("refused");
    let sock = dir.path().join("weft.sock");
    let state = dir.path().join("state");
    let mut cmd = match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, WEFT]);
            cmd
        }
        None => Command::new(WEFT),
    };
    let out = run_timeout(
        cmd.arg("--socket")
            .arg(&sock)
            .arg("daemon")
            .arg("--state-dir")
            .arg(&state)
            .args(args),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(!sock.exists(), "{args:?}: a refused daemon left its socket");
    assert!(
        !(early && state.exists()),
        "{args:?}: refused flags made the state directory"
    );
    text(&out.stderr)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[test]
fn tls_store_with_client_certificates() {
    require_root!();
    let ul = Underlay::new(74);
    let pki = Pki::new(&ul.addr(254));
    let etcd = Etcd::start_with(&ul.ns, &ul.addr(254), Some(&pki));
    let url = etcd.url();
    assert!(url.starts_with("etcds://"), "{url}");
    let prefix = prefix();
    let hosts: Vec<Host> = (1..=2)
        .map(|n| ul.host_with(n, &url, &prefix, &pki.client_flags()))
        .collect();
    for h in &hosts {
        let store = h.store();
        assert_eq!(store["connected"], true, "{store}");
        assert_eq!(store["url"], url.as_str(), "{store}");
    }
    let status = text(&hosts[0].weft(&["status"]).stdout);
    assert!(status.contains("connected"), "{status}");

    // A network made on one host reaches the other through the TLS store,
    // and so do endpoints: they ping without peer add.
    assert_ok(
        &hosts[0].weft(&[
            "network",
            "create",
            "tls",
            "--subnet",
            "10.74.0.0/24",
            "--vni",
            "74",
        ]),
        "network create",
    );
    converge("network on host 2", CONVERGE_TIMEOUT, || {
        hosts[1].has_network("tls")
    });
    let a = hosts[0].container("tls");
    let b = hosts[1].container("tls");
    converge("endpoint a on host 2", CONVERGE_TIMEOUT, || {
        hosts[1]
            .neighbors("tls")
            .iter()
            .any(|n| n.starts_with(&format!("{} ", a.ep.ip)))
    });
    assert_reaches(&a.ns, &b.ep.ip);
    assert_eq!(hosts[1].store()["hosts"], 2);
    // What etcd holds is what the daemons wrote over TLS.
    let keys = etcd.etcdctl(&["get", "--prefix", "--keys-only", &prefix]);
    assert_ok(&keys, "etcdctl get");
    assert!(
        text(&keys.stdout).contains(&format!("{prefix}networks/tls")),
        "{}",
        describe(&keys)
    );

    // A CA that did not sign etcd's certificate: refused, naming the TLS
    // verification failure, not an unreachable store.
    let vtep = [
        "--vtep-ip",
        &ul.addr(254),
        "--store",
        &url,
        "--store-prefix",
        &prefix,
    ];
    let mut wrong_ca = strings(&vtep);
    wrong_ca.extend(strings(&[
        "--store-ca",
        &pki.file("other-ca.pem"),
        "--store-cert",
        &pki.file("client.pem"),
        "--store-key",
        &pki.file("client.key"),
    ]));
    let err = refused_daemon(Some(&ul.ns.name), &wrong_ca, false);
    assert!(
        err.contains("TLS verification of etcd's certificate failed")
            && err.contains("UnknownIssuer")
            && err.contains("other-ca.pem")
            && !err.contains("cannot reach"),
        "{err}"
    );
    // No client certificate for an etcd with --client-cert-auth.
    let mut no_cert = strings(&vtep);
    no_cert.extend(strings(&["--store-ca", &pki.file("ca.pem")]));
    let err = refused_daemon(Some(&ul.ns.name), &no_cert, false);
    // (etcd's alert, or with TLS 1.3 sometimes only the closed connection.)
    assert!(
        err.contains("over TLS") && err.contains("pass --store-cert and --store-key"),
        "{err}"
    );
    // Plain gRPC to a TLS etcd does not get in either, and is told why.
    let err = refused_daemon(
        Some(&ul.ns.name),
        &strings(&[
            "--vtep-ip",
            &ul.addr(254),
            "--store",
            &format!("etcd://{}:{ETCD_PORT}", ul.addr(254)),
        ]),
        false,
    );
    assert!(
        err.contains("closed the connection") && err.contains("write the store as etcds://"),
        "{err}"
    );
    // The refused daemons registered nothing.
    assert_eq!(hosts[0].store()["hosts"], 2);
}

#[test]
fn bad_tls_files_are_refused_before_the_daemon_starts() {
    require_root!();
    let pki = Pki::new("127.0.0.1");
    let unreadable = pki.file("absent.pem");
    let ca = pki.file("ca.pem");
    let cert = pki.file("client.pem");
    let key = pki.file("client.key");
    let server_key = pki.file("server.key");
    let store = [
        "--vtep-ip",
        "127.0.0.1",
        "--store",
        "etcds://127.0.0.1:2379",
    ];
    let cases: [(Vec<&str>, &str); 7] = [
        // A key is not a CA bundle.
        (vec!["--store-ca", &key], "holds no certificate"),
        // Nor is a certificate a key.
        (
            vec![
                "--store-ca",
                &ca,
                "--store-cert",
                &cert,
                "--store-key",
                &cert,
            ],
            "holds no private key",
        ),
        // The server's key does not belong to the client certificate.
        (
            vec![
                "--store-ca",
                &ca,
                "--store-cert",
                &cert,
                "--store-key",
                &server_key,
            ],
            "cannot sign for --store-cert",
        ),
        (
            vec!["--store-ca", &ca, "--store-key", &key],
            "--store-key needs --store-cert",
        ),
        (
            vec!["--store-ca", &ca, "--store-cert", &cert],
            "--store-cert needs --store-key",
        ),
        (
            vec![
                "--store-ca",
                &ca,
                "--store-cert",
                &cert,
                "--store-key",
                &unreadable,
            ],
            "--store-key",
        ),
        (
            vec![
                "--store-ca",
                &ca,
                "--store-cert",
                &unreadable,
                "--store-key",
                &key,
            ],
            "--store-cert",
        ),
    ];
    for (flags, says) in cases {
        let mut args = strings(&store);
        args.extend(strings(&flags));
        let err = refused_daemon(None, &args, true);
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    let err = refused_daemon(
        None,
        &strings(&[
            "--vtep-ip",
            "127.0.0.1",
            "--store",
            "etcds://127.0.0.1:2379",
            "--store-ca",
            &unreadable,
        ]),
        true,
    );
    assert!(
        err.contains(&unreadable) && err.contains("cannot read it"),
        "{err}"
    );
    // TLS files with a plain store.
    let err = refused_daemon(
        None,
        &strings(&[
            "--vtep-ip",
            "127.0.0.1",
            "--store",
            "etcd://127.0.0.1:2379",
            "--store-ca",
            &ca,
            "--store-cert",
            &cert,
            "--store-key",
            &key,
        ]),
        true,
    );
    assert!(err.contains("write the store as etcds://"), "{err}");
}

#[test]
fn store_with_user_and_password() {
    require_root!();
    let ul = Underlay::new(75);
    let mut etcd = Etcd::start(&ul.ns, &ul.addr(254));
    let password = "weft-t-secret";
    etcd.enable_auth(password);
    let prefix = prefix();
    let login = strings(&["--store-user", "root", "--store-password", password]);
    let hosts: Vec<Host> = (1..=2)
        .map(|n| ul.host_with(n, &etcd.url(), &prefix, &login))
        .collect();
    assert_ok(
        &hosts[0].weft(&[
            "network",
            "create",
            "auth",
            "--subnet",
            "10.75.0.0/24",
            "--vni",
            "75",
        ]),
        "network create",
    );
    converge("network on host 2", CONVERGE_TIMEOUT, || {
        hosts[1].has_network("auth")
    });
    for h in &hosts {
        assert_eq!(h.store()["connected"], true);
        assert_eq!(h.store()["hosts"], 2);
    }
    let vtep = [
        "--vtep-ip",
        &ul.addr(254),
        "--store",
        &etcd.url(),
        "--store-prefix",
        &prefix,
    ];
    // A wrong password, and no login at all, are refused as such.
    let mut wrong = strings(&vtep);
    wrong.extend(strings(&[
        "--store-user",
        "root",
        "--store-password",
        "wrong",
    ]));
    let err = refused_daemon(Some(&ul.ns.name), &wrong, false);
    assert!(
        err.contains("refused to log in") && err.contains("authentication failed"),
        "{err}"
    );
    let err = refused_daemon(Some(&ul.ns.name), &strings(&vtep), false);
    assert!(
        err.contains("refused to log in") && err.contains("--store-user"),
        "{err}"
    );
    assert_eq!(hosts[0].store()["hosts"], 2);
}
