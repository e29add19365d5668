//! The `weft-cni` plugin, invoked as a container runtime invokes it: the
//! `CNI_*` environment variables, the network configuration on stdin, the
//! result or error as JSON on stdout (CNI spec 1.1).
//!
//! The tests that attach need root (namespaces, TAP devices) and print
//! `skipped: needs root` without it; those about versions, bad input and a
//! missing daemon run as anyone. Subnets: `10.97.k.0/24`, the uplink
//! 192.168.97.0/24 (see `common/mod.rs`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const PLUGIN: &str = env!("CARGO_BIN_EXE_weft-cni");
const INDEX: u8 = 97;

/// What one plugin run printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    /// Shown (through `Debug`) when an assertion fails.
    #[allow(dead_code)]
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("plugin printed invalid JSON ({e}): {self:?}"))
    }

    /// Asserts success and returns the result (`Null` when silent).
    fn ok(&self) -> Value {
        assert_eq!(self.code, 0, "plugin failed: {self:?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts an error result with `code` and returns its message.
    fn err(&self, code: u64) -> String {
        assert_ne!(self.code, 0, "plugin should have failed: {self:?}");
        let v = self.json();
        assert_eq!(v["code"].as_u64(), Some(code), "wrong code: {self:?}");
        assert!(v["cniVersion"].is_string(), "error without cniVersion: {v}");
        assert_eq!(self.code as u64, code.min(255), "exit status: {self:?}");
        v["msg"].as_str().unwrap_or_default().to_owned()
    }
}

/// Runs the plugin with exactly `env` (nothing inherited) and `stdin`,
/// killed after 20 s.
fn plugin(env: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft-cni");
    {
        let mut input = child.stdin.take().expect("stdin piped");
        // The plugin may exit before reading (a bad environment).
        let _ = input.write_all(stdin.as_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait for weft-cni").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("collect weft-cni output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    }
}

/// A network configuration for weft network `network` on `socket`.
fn config(version: &str, network: &str, socket: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": network,
        "type": "weft-cni",
        "socket": socket,
    })
}

/// [`config`] 1.0.0 for weft network `weft-tnet` on `socket`.
fn good_value(socket: &Path) -> Value {
    config("1.0.0", "weft-tnet", socket)
}

/// One container as the runtime sees it.
struct Container<'a> {
    id: &'a str,
    netns: String,
    ifname: &'a str,
    args: &'a str,
}

impl Container<'_> {
    fn env<'e>(&'e self, command: &'e str) -> Vec<(&'e str, &'e str)> {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", self.id),
            ("CNI_NETNS", self.netns.as_str()),
            ("CNI_IFNAME", self.ifname),
            ("CNI_ARGS", self.args),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    }

    fn run(&self, command: &str, config: &Value) -> Run {
        plugin(&self.env(command), &config.to_string())
    }
}

fn gc_env() -> Vec<(&'static str, &'static str)> {
    vec![("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]
}

/// The endpoints of `network` as the daemon lists them.
fn endpoints(daemon: &Daemon, network: &str) -> Vec<Value> {
    json(daemon, &["endpoints", network])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn version_lists_the_supported_versions() {
    let env = [("CNI_COMMAND", "VERSION")];
    let v = plugin(&env, r#"{"cniVersion":"1.0.0"}"#).ok();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    assert_eq!(plugin(&env, "").ok()["cniVersion"], "1.1.0");
    plugin(&env, r#"{"cniVersion":"0.2.0"}"#).err(1);
}

#[test]
fn bad_environment_and_configuration_have_their_codes() {
    let dir = TempDir::new("cni-bad");
    let socket = dir.path().join("none.sock");
    let good = config("1.0.0", "weft-tnet", &socket).to_string();
    let c = Container {
        id: "weft-t-bad",
        netns: "/var/run/netns/weft-t-none".into(),
        ifname: "eth0",
        args: "",
    };
    // No command, an unknown one.
    plugin(&[], &good).err(4);
    plugin(&[("CNI_COMMAND", "ATTACH")], &good).err(4);
    // ADD without CNI_NETNS, with a relative one, a bad container ID, a bad
    // interface name.
    let mut env = c.env("ADD");
    env.retain(|(k, _)| *k != "CNI_NETNS");
    plugin(&env, &good).err(4);
    let mut env = c.env("ADD");
    env[2].1 = "netns-x";
    plugin(&env, &good).err(4);
    let mut env = c.env("ADD");
    env[1].1 = "../x";
    plugin(&env, &good).err(4);
    let mut env = c.env("ADD");
    env[3].1 = "a/b";
    plugin(&env, &good).err(4);
    // DEL needs the container and interface, not the namespace.
    let mut env = c.env("DEL");
    env.retain(|(k, _)| *k != "CNI_CONTAINERID");
    plugin(&env, &good).err(4);
    // Not JSON, the wrong shape, an unsupported version, no name.
    c.run("ADD", &Value::Null).err(6);
    plugin(&c.env("ADD"), "{not json").err(6);
    plugin(&c.env("ADD"), r#"{"cniVersion":"1.0.0","name":3}"#).err(6);
    let msg = c.run("ADD", &config("0.3.1", "weft-tnet", &socket)).err(1);
    assert!(msg.contains("0.3.1"), "{msg}");
    c.run("ADD", &json!({"cniVersion": "1.0.0", "type": "weft-cni"}))
        .err(7);
    // Capabilities weft cannot honour.
    let mut cfg = config("1.0.0", "weft-tnet", &socket);
    cfg["runtimeConfig"] = json!({"ips": ["fd00::2/64"]});
    c.run("ADD", &cfg).err(2);
    let v6 = Container {
        args: "IgnoreUnknown=1;IP=fd00::2",
        netns: c.netns.clone(),
        ..c
    };
    let msg = v6.run("ADD", &good_value(&socket)).err(2);
    assert!(msg.contains("CNI_ARGS IP"), "{msg}");
    cfg["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "sctp"}]});
    c.run("ADD", &cfg).err(2);
}

#[test]
fn a_missing_daemon_is_try_again_later() {
    let dir = TempDir::new("cni-nodaemon");
    let socket = dir.path().join("none.sock");
    let cfg = config("1.1.0", "weft-tnet", &socket);
    let c = Container {
        id: "weft-t-nodaemon",
        netns: "/var/run/netns/weft-t-none".into(),
        ifname: "eth0",
        args: "IgnoreUnknown=1",
    };
    let msg = c.run("ADD", &cfg).err(11);
    assert!(msg.contains("no weft daemon"), "{msg}");
    assert!(msg.contains(&socket.display().to_string()), "{msg}");
    // Endpoints die with their daemon: nothing to delete or collect.
    c.run("DEL", &cfg).ok();
    plugin(&gc_env(), &cfg.to_string()).ok();
    // STATUS: no socket at all is transient.
    let status = [("CNI_COMMAND", "STATUS")];
    plugin(&status, &cfg.to_string()).err(11);
    // A socket nobody listens on: the plugin is not available.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind stale socket"));
    plugin(&status, &config("1.1.0", "weft-tnet", &stale).to_string()).err(50);
}

#[test]
fn add_check_gc_del_as_a_runtime_does() {
    require_root!();
    let daemon = Daemon::start();
    let net = unique_name("cni");
    create_network(&daemon, &net, &subnet(INDEX, 1), &[]);
    let ns1 = Netns::new("cni1");
    let ns2 = Netns::new("cni2");
    let ns3 = Netns::new("cni3");
    let cfg = config("1.0.0", &net, &daemon.socket);

    // STATUS with a daemon: silent success.
    assert_eq!(
        plugin(&[("CNI_COMMAND", "STATUS")], &cfg.to_string()).ok(),
        Value::Null
    );

    // ADD into a namespace given by path.
    let c1 = Container {
        id: "weft-t-c1-0123456789abcdef",
        netns: ns1.path().display().to_string(),
        ifname: "eth0",
        args: "IgnoreUnknown=1",
    };
    let result = c1.run("ADD", &cfg).ok();
    assert_eq!(result["cniVersion"], "1.0.0");
    let iface = &result["interfaces"][0];
    assert_eq!(iface["name"], "eth0");
    assert_eq!(iface["sandbox"], c1.netns.as_str());
    let mac = iface["mac"].as_str().expect("interface mac").to_owned();
    let ip = &result["ips"][0];
    let address = ip["address"].as_str().expect("ips address").to_owned();
    let gateway = addr(INDEX, 1, 1);
    assert!(address.starts_with(&format!("10.{INDEX}.1.")), "{result}");
    assert!(address.ends_with("/24"), "{result}");
    assert_eq!(ip["gateway"], gateway.as_str());
    assert_eq!(ip["interface"], 0);
    assert!(ip.get("version").is_none(), "1.0.0 has no ips version");
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": gateway}])
    );
    assert_eq!(result["dns"]["nameservers"], json!([gateway]));
    // The interface exists in the namespace with that address and MAC.
    let shown = ns1.ip_ok(&["-j", "addr", "show", "dev", "eth0"]);
    let shown: Value = serde_json::from_str(&shown).expect("ip -j addr");
    assert_eq!(shown[0]["address"].as_str(), Some(mac.as_str()), "{shown}");
    let inet = shown[0]["addr_info"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["family"] == "inet"))
        .unwrap_or_else(|| panic!("no IPv4 address on eth0: {shown}"));
    let local = format!(
        "{}/{}",
        inet["local"].as_str().unwrap_or_default(),
        inet["prefixlen"]
    );
    assert_eq!(local, address, "{shown}");
    // The daemon knows the owner; the name comes from the container ID.
    let eps = endpoints(&daemon, &net);
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0]["name"], "cni-weft-t-c1-01");
    assert_eq!(
        eps[0]["owner"],
        json!({"network": net, "container_id": c1.id, "ifname": "eth0"})
    );

    // CHECK against the ADD result: fine; against a changed one: refused.
    let mut with_prev = cfg.clone();
    with_prev["prevResult"] = result.clone();
    assert_eq!(c1.run("CHECK", &with_prev).ok(), Value::Null);
    let mut changed = with_prev.clone();
    changed["prevResult"]["interfaces"][0]["mac"] = json!("02:00:00:00:00:01");
    let msg = c1.run("CHECK", &changed).err(110);
    assert!(msg.contains("MAC"), "{msg}");

    // A second container, named by the runtime, with aliases, a static
    // address and MAC, on config version 0.4.0.
    let c2 = Container {
        id: "weft-t-c2",
        netns: ns2.path().display().to_string(),
        ifname: "eth1",
        args: "IgnoreUnknown=1;K8S_POD_NAME=weft-t-web",
    };
    let mut cfg2 = config("0.4.0", &net, &daemon.socket);
    cfg2["runtimeConfig"] = json!({
        "aliases": {(net.as_str()): ["weft-t-web", "weft-t-alias"]},
        "ips": [format!("{}/24", addr(INDEX, 1, 50))],
        "mac": "02:aa:bb:cc:dd:ee",
    });
    let r2 = c2.run("ADD", &cfg2).ok();
    assert_eq!(r2["cniVersion"], "0.4.0");
    assert_eq!(r2["ips"][0]["version"], "4");
    assert_eq!(
        r2["ips"][0]["address"],
        format!("{}/24", addr(INDEX, 1, 50))
    );
    assert_eq!(r2["interfaces"][0]["mac"], "02:aa:bb:cc:dd:ee");
    assert_eq!(r2["interfaces"][0]["name"], "eth1");
    let eps = endpoints(&daemon, &net);
    assert!(
        eps.iter().any(|e| e["name"] == "weft-t-web"),
        "named after K8S_POD_NAME: {eps:?}"
    );

    // An endpoint attached by hand has no owner: GC leaves it alone.
    weft_ok(
        &daemon,
        &[
            "attach",
            &net,
            "--netns",
            ns3.path().to_str().unwrap(),
            "--name",
            "weft-t-hand",
        ],
    );

    // GC keeps the listed attachment (c1) and the unowned one.
    let mut gc = cfg.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": c1.id, "ifname": "eth0"}]);
    plugin(&gc_env(), &gc.to_string()).ok();
    let names: Vec<String> = endpoints(&daemon, &net)
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"cni-weft-t-c1-01".to_owned()), "{names:?}");
    assert!(names.contains(&"weft-t-hand".to_owned()), "{names:?}");
    let gone = ns2.ip(&["link", "show", "eth1"]);
    assert!(!gone.status.success(), "GC left eth1 in {}", ns2.name);

    // DEL, DEL again; CHECK of what is gone fails.
    c1.run("DEL", &with_prev).ok();
    assert!(!ns1.ip(&["link", "show", "eth0"]).status.success());
    c1.run("DEL", &with_prev).ok();
    c1.run("CHECK", &with_prev).err(110);
    let names: Vec<Value> = endpoints(&daemon, &net);
    assert_eq!(names.len(), 1, "{names:?}");

    // ADD to a network weft does not have: a configuration error.
    let other = config("1.0.0", "weft-t-nonet", &daemon.socket);
    let msg = c1.run("ADD", &other).err(7);
    assert!(msg.contains("weft-t-nonet"), "{msg}");
}

#[test]
fn check_after_detach_fails_and_del_succeeds() {
    require_root!();
    let daemon = Daemon::start();
    let net = unique_name("cnid");
    create_network(&daemon, &net, &subnet(INDEX, 2), &[]);
    let ns = Netns::new("cnid");
    let cfg = config("1.1.0", &net, &daemon.socket);
    let c = Container {
        id: "weft-t-detached",
        netns: ns.path().display().to_string(),
        ifname: "eth0",
        args: "K8S_POD_NAME=weft-t-det",
    };
    let result = c.run("ADD", &cfg).ok();
    let mut with_prev = cfg.clone();
    with_prev["prevResult"] = result;
    c.run("CHECK", &with_prev).ok();
    weft_ok(&daemon, &["detach", &net, "weft-t-det"]);
    let msg = c.run("CHECK", &with_prev).err(110);
    assert!(msg.contains(c.id), "{msg}");
    c.run("DEL", &with_prev).ok();
}

/// The names of `network`'s endpoints.
fn names(daemon: &Daemon, network: &str) -> Vec<String> {
    let mut names: Vec<String> = endpoints(daemon, network)
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

/// The interfaces of namespace `ns` other than `lo`.
fn links(ns: &Netns) -> Vec<String> {
    let shown: Value =
        serde_json::from_str(&ns.ip_ok(&["-j", "link", "show"])).expect("ip -j link");
    let mut names: Vec<String> = shown
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| *n != "lo")
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

#[test]
fn one_endpoint_per_owner_and_one_name_per_interface() {
    require_root!();
    let daemon = Daemon::start();
    let net = unique_name("cnim");
    create_network(&daemon, &net, &subnet(INDEX, 3), &[]);
    let ns = Netns::new("cnim");
    let cfg = config("1.0.0", &net, &daemon.socket);
    let eth0 = Container {
        id: "weft-t-multi-0123456789",
        netns: ns.path().display().to_string(),
        ifname: "eth0",
        args: "IgnoreUnknown=1;K8S_POD_NAME=weft-t-multi",
    };
    let first = eth0.run("ADD", &cfg).ok();
    assert_eq!(names(&daemon, &net), ["weft-t-multi"]);

    // The same container interface again (under another name): refused,
    // with the endpoint it has, and nothing changes.
    let again = Container {
        args: "IgnoreUnknown=1;K8S_POD_NAME=weft-t-again",
        netns: eth0.netns.clone(),
        ..eth0
    };
    let msg = again.run("ADD", &cfg).err(100);
    assert!(msg.contains(eth0.id), "{msg}");
    assert!(msg.contains("`weft-t-multi`"), "{msg}");
    assert!(msg.contains("DEL"), "{msg}");
    assert_eq!(names(&daemon, &net), ["weft-t-multi"]);
    assert_eq!(links(&ns), ["eth0"]);

    // A second interface of the container on the same network: the name
    // gets the interface; the alias that is the first one's name stays
    // with the first.
    // Its static address and MAC come in CNI_ARGS, as podman sends them
    // for `--ip` and `--mac-address`.
    let static_ip = addr(INDEX, 3, 40);
    let args =
        format!("IgnoreUnknown=1;K8S_POD_NAME=weft-t-multi;MAC=02:aa:bb:cc:dd:40;IP={static_ip}");
    let eth1 = Container {
        ifname: "eth1",
        netns: eth0.netns.clone(),
        args: &args,
        ..eth0
    };
    let mut cfg1 = cfg.clone();
    cfg1["runtimeConfig"] = json!({"aliases": {(net.as_str()): ["weft-t-multi", "weft-t-m1"]}});
    let second = eth1.run("ADD", &cfg1).ok();
    assert_eq!(second["interfaces"][0]["name"], "eth1");
    assert_eq!(second["interfaces"][0]["mac"], "02:aa:bb:cc:dd:40");
    assert_eq!(second["ips"][0]["address"], format!("{static_ip}/24"));
    assert_eq!(names(&daemon, &net), ["weft-t-multi", "weft-t-multi-eth1"]);
    assert_eq!(links(&ns), ["eth0", "eth1"]);
    // The default route stays with the first.
    assert_eq!(second["routes"], json!([]), "{second}");
    assert_ne!(first["ips"][0]["address"], second["ips"][0]["address"]);

    // DEL of one interface leaves the other.
    eth1.run("DEL", &cfg1).ok();
    assert_eq!(names(&daemon, &net), ["weft-t-multi"]);
    assert_eq!(links(&ns), ["eth0"]);
    eth0.run("DEL", &cfg).ok();
    assert_eq!(names(&daemon, &net), Vec::<String>::new());
}

#[test]
fn gc_and_del_touch_only_their_own_network_configuration() {
    require_root!();
    let daemon = Daemon::start();
    let net = unique_name("cnig");
    create_network(&daemon, &net, &subnet(INDEX, 4), &[]);
    let (ns1, ns2) = (Netns::new("cnig1"), Netns::new("cnig2"));
    // Two runtimes' configurations for the same weft network.
    let mut cfg_a = config("1.1.0", &net, &daemon.socket);
    cfg_a["name"] = json!("weft-t-runtime-a");
    cfg_a["network"] = json!(net);
    let mut cfg_b = cfg_a.clone();
    cfg_b["name"] = json!("weft-t-runtime-b");
    let c1 = Container {
        id: "weft-t-gc-a",
        netns: ns1.path().display().to_string(),
        ifname: "eth0",
        args: "K8S_POD_NAME=weft-t-ga",
    };
    let c2 = Container {
        id: "weft-t-gc-b",
        netns: ns2.path().display().to_string(),
        ifname: "eth0",
        args: "K8S_POD_NAME=weft-t-gb",
    };
    c1.run("ADD", &cfg_a).ok();
    c2.run("ADD", &cfg_b).ok();
    let owner = &endpoints(&daemon, &net)
        .into_iter()
        .find(|e| e["name"] == "weft-t-gb")
        .expect("weft-t-gb listed")["owner"];
    assert_eq!(owner["network"], "weft-t-runtime-b");

    // A's GC with nothing valid removes A's endpoint only.
    let mut gc_a = cfg_a.clone();
    gc_a["cni.dev/valid-attachments"] = json!([]);
    plugin(&gc_env(), &gc_a.to_string()).ok();
    assert_eq!(names(&daemon, &net), ["weft-t-gb"]);
    assert_eq!(links(&ns1), Vec::<String>::new());
    // Without the list: refused when the configuration has endpoints, a
    // no-op when it has none.
    let msg = plugin(&gc_env(), &cfg_b.to_string()).err(7);
    assert!(msg.contains("valid-attachments"), "{msg}");
    plugin(&gc_env(), &cfg_a.to_string()).ok();
    assert_eq!(names(&daemon, &net), ["weft-t-gb"]);
    // DEL through the other configuration is not this attachment's.
    c2.run("DEL", &cfg_a).ok();
    assert_eq!(names(&daemon, &net), ["weft-t-gb"]);
    c2.run("DEL", &cfg_b).ok();
    assert_eq!(names(&daemon, &net), Vec::<String>::new());
}

/// Accepts one TCP connection on `listener` within 10 s and greets it
/// with `hello PEER`.
fn greet_once(listener: TcpListener) -> std::thread::JoinHandle<std::io::Result<SocketAddr>> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    stream.set_nonblocking(false)?;
                    writeln!(stream, "hello {peer}")?;
                    return Ok(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    })
}

/// Connects from namespace `ns` to `dst` and reads one line.
fn fetch_line(ns: &Netns, dst: SocketAddr) -> std::io::Result<String> {
    ns.run(move || {
        let stream = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line)
    })
}

#[test]
fn port_mappings_publish_on_the_uplink() {
    require_root!();
    let w = Uplinked::new(INDEX);
    let net = unique_name("cnip");
    create_network(&w.daemon, &net, &subnet(INDEX, 5), &[]);
    let ns = Netns::new("cnip");
    let mut cfg = config("1.0.0", &net, &w.daemon.socket);
    cfg["runtimeConfig"] = json!({"portMappings": [
        {"hostPort": 18097, "containerPort": 8080, "protocol": "tcp", "hostIP": ""},
    ]});
    let c = Container {
        id: "weft-t-ports",
        netns: ns.path().display().to_string(),
        ifname: "eth0",
        args: "IgnoreUnknown=1;K8S_POD_NAME=weft-t-web",
    };
    c.run("ADD", &cfg).ok();
    let published = json(&w.daemon, &["publish", "ls"]).to_string();
    assert!(published.contains("18097"), "{published}");
    assert!(published.contains("weft-t-web"), "{published}");

    // From the outside, the uplink's port reaches the container's server,
    // which sees the outside's own address.
    let listener = ns
        .run(|| TcpListener::bind("0.0.0.0:8080"))
        .expect("listen in the container");
    let server = greet_once(listener);
    let dst: SocketAddr = format!("{}:18097", w.uplink_ip()).parse().unwrap();
    let line = wait_for(Duration::from_secs(10), || fetch_line(&w.o, dst).ok())
        .expect("no answer through the published port");
    let peer = server.join().expect("server thread").expect("accept");
    assert_eq!(peer.ip().to_string(), w.outside_ip());
    assert_eq!(line.trim(), format!("hello {peer}"));

    // DEL takes the published port away with the endpoint.
    c.run("DEL", &cfg).ok();
    let published = json(&w.daemon, &["publish", "ls"]).to_string();
    assert!(!published.contains("18097"), "{published}");
    let _listener = ns
        .run(|| TcpListener::bind("0.0.0.0:8080"))
        .expect("listen again");
    assert!(
        fetch_line(&w.o, dst).is_err(),
        "the port still answers after DEL"
    );
}
