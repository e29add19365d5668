//! The topologies `weft bench` measures: two endpoint namespaces (client
//! and server) joined by one switch, each in namespaces of its own named
//! `weft-b<pid>-<switch>-<role>`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{Context as _, Error, Result};
use serde_json::json;

use super::sys::{self, in_ns, run, run_env, Guard, Proc};
use super::Reporter;
use weft_api::client::{self, ClientError};
use weft_api::{EndpointInfo, Request};

/// The two scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Scenario {
    /// Two namespaces on one host, one switch between them
    SameHost,
    /// Two hosts (namespaces) joined by a VXLAN overlay over a veth underlay
    Overlay,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SameHost => "same-host",
            Scenario::Overlay => "overlay",
        }
    }

    /// The switch every other one is compared with.
    pub fn baseline(self) -> Switch {
        match self {
            Scenario::SameHost => Switch::KernelBridge,
            Scenario::Overlay => Switch::KernelVxlan,
        }
    }

    /// The switches of this scenario, weft first, in column and
    /// measurement order. `weft-baseline` (measured only with
    /// `--baseline-weft`) comes right after weft, so that the two are
    /// measured back to back.
    pub fn switches(self) -> &'static [Switch] {
        match self {
            Scenario::SameHost => &[
                Switch::Weft,
                Switch::WeftBaseline,
                Switch::KernelBridge,
                Switch::Ovs,
                Switch::OvsTso,
                Switch::Vde,
            ],
            Scenario::Overlay => &[Switch::Weft, Switch::WeftBaseline, Switch::KernelVxlan],
        }
    }
}

/// A switch to measure (`weft` and the peers of `--against`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Switch {
    /// weft itself (always measured)
    #[cfg_attr(feature = "clap", value(skip))]
    Weft,
    /// weft started from another binary (`--baseline-weft`), in the same
    /// topologies as weft
    #[cfg_attr(feature = "clap", value(skip))]
    WeftBaseline,
    /// Linux bridge with veth pairs (same-host baseline)
    KernelBridge,
    /// Linux vxlan devices and bridges (overlay baseline)
    KernelVxlan,
    /// Open vSwitch, userspace datapath
    Ovs,
    /// Open vSwitch, userspace datapath with userspace TSO
    OvsTso,
    /// VDE switch with tap plugs
    Vde,
}

impl Switch {
    pub fn name(self) -> &'static str {
        match self {
            Switch::Weft => "weft",
            Switch::WeftBaseline => "weft-baseline",
            Switch::KernelBridge => "kernel-bridge",
            Switch::KernelVxlan => "kernel-vxlan",
            Switch::Ovs => "ovs",
            Switch::OvsTso => "ovs-tso",
            Switch::Vde => "vde",
        }
    }

    /// Short tag for namespace and directory names.
    fn tag(self, scenario: Scenario) -> &'static str {
        match (self, scenario) {
            (Switch::Weft, Scenario::SameHost) => "weft",
            (Switch::Weft, Scenario::Overlay) => "oweft",
            (Switch::WeftBaseline, Scenario::SameHost) => "bweft",
            (Switch::WeftBaseline, Scenario::Overlay) => "obweft",
            (Switch::KernelBridge, _) => "kbr",
            (Switch::KernelVxlan, _) => "kvx",
            (Switch::Ovs, _) => "ovs",
            (Switch::OvsTso, _) => "ovstso",
            (Switch::Vde, _) => "vde",
        }
    }

    /// Whether the switch runs as userspace processes whose CPU time can
    /// be read from /proc.
    pub fn is_userspace(self) -> bool {
        !matches!(self, Switch::KernelBridge | Switch::KernelVxlan)
    }

    /// A missing tool and the Debian package that has it, if any.
    pub fn missing(self) -> Option<(&'static str, &'static str)> {
        let (tools, package): (&[&str], _) = match self {
            Switch::Weft | Switch::WeftBaseline | Switch::KernelBridge | Switch::KernelVxlan => {
                (&[], "")
            }
            Switch::Ovs => (
                &[
                    "ovsdb-tool",
                    "ovsdb-server",
                    "ovs-vswitchd",
                    "ovs-vsctl",
                    "ethtool",
                ],
                "openvswitch-switch",
            ),
            Switch::OvsTso => (
                &["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"],
                "openvswitch-switch",
            ),
            Switch::Vde => (&["vde_switch", "vde_plug2tap"], "vde2"),
        };
        for tool in tools {
            if sys::find_in_path(tool).is_none() {
                let package = if *tool == "ethtool" {
                    "ethtool"
                } else {
                    package
                };
                return Some((tool, package));
            }
        }
        if matches!(self, Switch::Ovs | Switch::OvsTso) && !Path::new(OVS_SCHEMA).is_file() {
            return Some((OVS_SCHEMA, package));
        }
        None
    }
}

const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Where topologies put their files and how they name things.
pub struct Ctx<'a> {
    /// The weft binary.
    pub exe: &'a Path,
    /// The weft binary `weft-baseline` starts its daemons from
    /// (`--baseline-weft`).
    pub baseline_exe: Option<&'a Path>,
    /// `weft-b<pid>`.
    pub prefix: String,
    /// The run's temporary directory.
    pub tmp: PathBuf,
    /// Where cleanup warnings go.
    pub report: &'a dyn Reporter,
}

/// A built topology; dropping it tears it down.
pub struct Topology<'r> {
    pub client_ns: String,
    pub server_ns: String,
    pub server_ip: String,
    /// The server's interface inside `server_ns`.
    pub server_if: String,
    /// The switch's processes (userspace switches), for CPU accounting.
    pub switch_pids: Vec<u32>,
    /// Where measurements may write scratch files.
    pub dir: PathBuf,
    pub guard: Guard<'r>,
}

impl<'r> Topology<'r> {
    /// A topology tagged `tag` with nothing built yet: its client and
    /// server namespace names, and a scratch directory its guard removes.
    pub fn empty(ctx: &Ctx<'r>, tag: &str) -> Result<Topology<'r>> {
        let mut guard = Guard::new(ctx.report);
        let dir = ctx.tmp.join(tag);
        guard.add_dir(&dir)?;
        Ok(Topology {
            client_ns: ns_name(ctx, tag, "cli"),
            server_ns: ns_name(ctx, tag, "srv"),
            server_ip: String::new(),
            server_if: "eth0".into(),
            switch_pids: Vec::new(),
            dir,
            guard,
        })
    }
}

/// The name of namespace `role` of the topology tagged `tag`.
pub fn ns_name(ctx: &Ctx, tag: &str, role: &str) -> String {
    format!("{}-{tag}-{role}", ctx.prefix)
}

/// Builds the topology of `switch` in `scenario`.
pub fn build<'r>(ctx: &Ctx<'r>, scenario: Scenario, switch: Switch) -> Result<Topology<'r>> {
    let tag = switch.tag(scenario);
    let mut topo = Topology::empty(ctx, tag)?;
    let ns = |role: &str| ns_name(ctx, tag, role);
    // weft-baseline is weft's topology with daemons from another binary.
    let weft_exe = match switch {
        Switch::WeftBaseline => ctx
            .baseline_exe
            .context("weft-baseline needs a binary (--baseline-weft)")?,
        _ => ctx.exe,
    };
    match (scenario, switch) {
        (Scenario::SameHost, Switch::Weft | Switch::WeftBaseline) => {
            weft_same_host(weft_exe, &mut topo)?
        }
        (Scenario::SameHost, Switch::KernelBridge) => kernel_bridge(&mut topo, &ns("sw"))?,
        (Scenario::SameHost, Switch::Ovs) => ovs(&mut topo, &ns("sw"), false)?,
        (Scenario::SameHost, Switch::OvsTso) => ovs(&mut topo, &ns("sw"), true)?,
        (Scenario::SameHost, Switch::Vde) => vde(&mut topo)?,
        (Scenario::Overlay, Switch::Weft | Switch::WeftBaseline) => {
            weft_overlay(weft_exe, &mut topo, [ns("h1"), ns("h2")])?
        }
        (Scenario::Overlay, Switch::KernelVxlan) => kernel_vxlan(&mut topo, [ns("h1"), ns("h2")])?,
        (scenario, switch) => {
            return Err(Error::Tool(format!(
                "{} has no {} topology",
                switch.name(),
                scenario.name()
            )))
        }
    }
    wait_reachable(&topo)?;
    Ok(topo)
}

/// Pings the server from the client until it answers (ARP, learning).
pub(super) fn wait_reachable(topo: &Topology) -> Result<()> {
    let mut last = String::new();
    for _ in 0..10 {
        let out = sys::run_bounded(
            &in_ns(
                &topo.client_ns,
                &["ping", "-c", "1", "-W", "1", &topo.server_ip],
            ),
            &[],
            Duration::from_secs(5),
        )?;
        if out.status.success() {
            return Ok(());
        }
        last = format!("{}{}", out.stdout, out.stderr);
    }
    Err(Error::Tool(format!(
        "the client cannot ping the server {}: {}",
        topo.server_ip,
        last.lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("no output")
    )))
}

/// Both endpoint namespaces.
fn add_endpoints(topo: &mut Topology) -> Result<()> {
    let (c, s) = (topo.client_ns.clone(), topo.server_ns.clone());
    topo.guard.add_netns(&c)?;
    topo.guard.add_netns(&s)
}

/// A veth pair: `port` in `switch_ns`, `eth0` in `ep_ns` with `cidr`.
fn veth(switch_ns: &str, port: &str, ep_ns: &str, cidr: &str, mtu: u32) -> Result<()> {
    let mtu = mtu.to_string();
    run(&[
        "ip", "-n", switch_ns, "link", "add", port, "mtu", &mtu, "type", "veth", "peer", "name",
        "eth0", "mtu", &mtu, "netns", ep_ns,
    ])?;
    run(&["ip", "-n", switch_ns, "link", "set", port, "up"])?;
    address(ep_ns, "eth0", cidr)
}

fn address(ns: &str, ifname: &str, cidr: &str) -> Result<()> {
    run(&["ip", "-n", ns, "addr", "add", cidr, "dev", ifname])?;
    run(&["ip", "-n", ns, "link", "set", ifname, "up"])?;
    Ok(())
}

/// A Linux bridge `br0` in its own namespace `sw` with the client and
/// server on ports of it (10.232.0.0/24); more ports: [`bridge_port`].
pub(super) fn kernel_bridge(topo: &mut Topology, sw: &str) -> Result<()> {
    topo.guard.add_netns(sw)?;
    add_endpoints(topo)?;
    run(&["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])?;
    run(&["ip", "-n", sw, "link", "set", "br0", "up"])?;
    for (port, ns, cidr) in [
        ("p-cli", &topo.client_ns, "10.232.0.2/24"),
        ("p-srv", &topo.server_ns, "10.232.0.3/24"),
    ] {
        bridge_port(sw, port, ns, cidr)?;
    }
    topo.server_ip = "10.232.0.3".into();
    Ok(())
}

/// A port `port` of [`kernel_bridge`]'s bridge in `sw`: a veth pair whose
/// other end is `eth0` in `ep_ns` (which must exist) with `cidr`.
pub(super) fn bridge_port(sw: &str, port: &str, ep_ns: &str, cidr: &str) -> Result<()> {
    veth(sw, port, ep_ns, cidr, 1500)?;
    run(&["ip", "-n", sw, "link", "set", port, "master", "br0"])?;
    Ok(())
}

/// Starts a weft daemon from `exe` (in `netns` if given) and waits until
/// it answers.
pub(super) fn start_weft(
    exe: &Path,
    topo: &mut Topology,
    name: &str,
    netns: Option<&str>,
    extra: &[&str],
) -> Result<PathBuf> {
    let socket = topo.dir.join(format!("{name}.sock"));
    let state = topo.dir.join(format!("{name}-state"));
    let log = topo.dir.join(format!("{name}.log"));
    let mut args: Vec<String> = vec![
        exe.display().to_string(),
        "daemon".into(),
        "--socket".into(),
        socket.display().to_string(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    if let Some(ns) = netns {
        args = in_ns(ns, &args);
    }
    let proc = Proc::spawn(&args, &log, &[], false)?;
    topo.switch_pids.push(proc.pid());
    topo.guard.procs.push(proc);
    let result = sys::wait_until("the weft daemon to listen", Duration::from_secs(10), || {
        if let Some(p) = topo.guard.procs.last_mut() {
            p.check_alive()?;
        }
        match client::call(&socket, &Request::Status) {
            Ok(_) => Ok(true),
            Err(ClientError::NotRunning { .. }) => Ok(false),
            Err(e) => Err(e).context("the daemon does not answer `status`"),
        }
    });
    result.with_context(|| format!("weft daemon log:{}", sys::log_tail(&log, 10)))?;
    Ok(socket)
}

fn weft_call(socket: &Path, req: serde_json::Value, what: &str) -> Result<serde_json::Value> {
    sys::check_interrupted()?;
    // Built from JSON so that fields added to the API later take their
    // defaults.
    let req: Request =
        serde_json::from_value(req).with_context(|| format!("building the `{what}` request"))?;
    client::call(socket, &req).with_context(|| format!("`weft {what}` failed"))
}

pub(super) fn weft_network(
    socket: &Path,
    subnet: &str,
    vni: Option<u32>,
    ip_range: Option<&str>,
) -> Result<()> {
    let mut req = json!({ "op": "network_create", "name": "bench", "subnet": subnet });
    if let Some(vni) = vni {
        req["vni"] = json!(vni);
    }
    if let Some(range) = ip_range {
        req["ip_range"] = json!(range);
    }
    weft_call(socket, req, "network create")?;
    Ok(())
}

pub(super) fn weft_attach(socket: &Path, netns: &str, name: &str) -> Result<EndpointInfo> {
    let req = json!({
        "op": "attach",
        "network": "bench",
        "netns": netns,
        "name": name,
        "ifname": "eth0",
        "no_resolv_conf": true,
    });
    let value = weft_call(socket, req, "attach")?;
    serde_json::from_value(value).context("reading the reply to `weft attach`")
}

fn weft_same_host(exe: &Path, topo: &mut Topology) -> Result<()> {
    let socket = start_weft(exe, topo, "weft", None, &[])?;
    add_endpoints(topo)?;
    weft_network(&socket, "10.231.0.0/24", None, None)?;
    weft_attach(&socket, &topo.client_ns.clone(), "cli")?;
    let server = weft_attach(&socket, &topo.server_ns.clone(), "srv")?;
    topo.server_ip = server.ip.addr().to_string();
    topo.server_if = server.ifname;
    Ok(())
}

/// Two host namespaces joined by a veth underlay 192.168.231.1/.2 (u0).
fn underlay(topo: &mut Topology, hosts: &[String; 2]) -> Result<()> {
    for h in hosts {
        topo.guard.add_netns(h)?;
    }
    add_endpoints(topo)?;
    run(&[
        "ip", "link", "add", "u0", "netns", &hosts[0], "type", "veth", "peer", "name", "u0",
        "netns", &hosts[1],
    ])?;
    address(&hosts[0], "u0", "192.168.231.1/24")?;
    address(&hosts[1], "u0", "192.168.231.2/24")
}

fn weft_overlay(exe: &Path, topo: &mut Topology, hosts: [String; 2]) -> Result<()> {
    underlay(topo, &hosts)?;
    let s1 = start_weft(
        exe,
        topo,
        "h1",
        Some(&hosts[0]),
        &["--vtep-ip", "192.168.231.1"],
    )?;
    let s2 = start_weft(
        exe,
        topo,
        "h2",
        Some(&hosts[1]),
        &["--vtep-ip", "192.168.231.2"],
    )?;
    weft_network(&s1, "10.235.0.0/24", Some(4242), Some("10.235.0.0/25"))?;
    weft_network(&s2, "10.235.0.0/24", Some(4242), Some("10.235.0.128/25"))?;
    for (socket, peer) in [(&s1, "192.168.231.2"), (&s2, "192.168.231.1")] {
        // Both ends are weft: inner checksums are left to the receiver
        // (remote checksum offload).
        let rco = json!({ "op": "peer_add", "addr": peer, "remote_csum": true });
        if let Err(e) = weft_call(socket, rco, "peer add --remote-csum") {
            // An older weft (a `--baseline-weft` binary) refuses the field
            // it does not know (the API has `deny_unknown_fields`) and
            // changes nothing: add the peer as that build can.
            if !e.message().contains("remote_csum") {
                return Err(e);
            }
            weft_call(
                socket,
                json!({ "op": "peer_add", "addr": peer }),
                "peer add",
            )?;
        }
    }
    weft_attach(&s1, &topo.client_ns.clone(), "cli")?;
    let server = weft_attach(&s2, &topo.server_ns.clone(), "srv")?;
    topo.server_ip = server.ip.addr().to_string();
    topo.server_if = server.ifname;
    Ok(())
}

fn kernel_vxlan(topo: &mut Topology, hosts: [String; 2]) -> Result<()> {
    underlay(topo, &hosts)?;
    let eps = [topo.client_ns.clone(), topo.server_ns.clone()];
    for i in 0..2 {
        let (h, local, remote) = (
            &hosts[i],
            format!("192.168.231.{}", i + 1),
            format!("192.168.231.{}", 2 - i),
        );
        run(&[
            "ip", "-n", h, "link", "add", "vx0", "type", "vxlan", "id", "4242", "local", &local,
            "remote", &remote, "dstport", "4789", "dev", "u0",
        ])?;
        run(&["ip", "-n", h, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", h, "link", "set", "vx0", "master", "br0"])?;
        run(&["ip", "-n", h, "link", "set", "vx0", "up"])?;
        run(&["ip", "-n", h, "link", "set", "br0", "up"])?;
        veth(h, "p-ep", &eps[i], &format!("10.236.0.{}/24", i + 2), 1450)?;
        run(&["ip", "-n", h, "link", "set", "p-ep", "master", "br0"])?;
    }
    topo.server_ip = "10.236.0.3".into();
    Ok(())
}

/// Open vSwitch with the userspace datapath, run privately: its own
/// database and ovs-vswitchd inside the switch namespace, files under the
/// topology's directory. Ports are veths opened with AF_PACKET, as in OVS's
/// own system-userspace tests; without userspace TSO the endpoints must not
/// hand it partial checksums, so their tx offloads are turned off (as
/// those tests do).
fn ovs(topo: &mut Topology, sw: &str, tso: bool) -> Result<()> {
    let dir = topo.dir.clone();
    let env: [(&str, &Path); 4] = [
        ("OVS_RUNDIR", &dir),
        ("OVS_LOGDIR", &dir),
        ("OVS_DBDIR", &dir),
        ("OVS_SYSCONFDIR", &dir),
    ];
    topo.guard.add_netns(sw)?;
    add_endpoints(topo)?;
    let db = dir.join("conf.db");
    let db_sock = dir.join("db.sock");
    let remote = format!("unix:{}", db_sock.display());
    run(&[
        "ovsdb-tool",
        "create",
        &db.display().to_string(),
        OVS_SCHEMA,
    ])?;
    let ovsdb_log = dir.join("ovsdb-server.log");
    let args = in_ns(
        sw,
        &[
            "ovsdb-server".to_string(),
            db.display().to_string(),
            format!("--remote=punix:{}", db_sock.display()),
            format!("--pidfile={}", dir.join("ovsdb-server.pid").display()),
            format!("--unixctl={}", dir.join("ovsdb-server.ctl").display()),
            format!("--log-file={}", ovsdb_log.display()),
            "--no-chdir".into(),
        ],
    );
    topo.guard.procs.push(Proc::spawn(
        &args,
        &dir.join("ovsdb-server.out"),
        &env,
        false,
    )?);
    sys::wait_until("ovsdb-server's socket", Duration::from_secs(10), || {
        if let Some(p) = topo.guard.procs.last_mut() {
            p.check_alive()?;
        }
        Ok(db_sock.exists())
    })
    .with_context(|| format!("ovsdb-server log:{}", sys::log_tail(&ovsdb_log, 10)))?;
    let db_arg = format!("--db={remote}");
    let vsctl = |args: &[&str]| -> Result<String> {
        let mut all = vec!["ovs-vsctl", &db_arg, "--timeout=20"];
        all.extend_from_slice(args);
        run_env(&all, &env)
    };
    vsctl(&["--no-wait", "init"])?;
    let tso_opt = format!("other_config:userspace-tso-enable={tso}");
    vsctl(&["--no-wait", "set", "Open_vSwitch", ".", &tso_opt])?;
    let vswitchd_log = dir.join("ovs-vswitchd.log");
    let args = in_ns(
        sw,
        &[
            "ovs-vswitchd".to_string(),
            remote.clone(),
            format!("--pidfile={}", dir.join("ovs-vswitchd.pid").display()),
            format!("--unixctl={}", dir.join("ovs-vswitchd.ctl").display()),
            format!("--log-file={}", vswitchd_log.display()),
            "--no-chdir".into(),
        ],
    );
    let proc = Proc::spawn(&args, &dir.join("ovs-vswitchd.out"), &env, false)?;
    topo.switch_pids.push(proc.pid());
    topo.guard.procs.push(proc);
    let with_log = |e: Error| {
        e.context(format!(
            "ovs-vswitchd log:{}",
            sys::log_tail(&vswitchd_log, 10)
        ))
    };
    vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "Bridge",
        "br0",
        "datapath_type=netdev",
    ])
    .map_err(with_log)?;
    for (port, ns, cidr) in [
        ("p-cli", topo.client_ns.clone(), "10.233.0.2/24"),
        ("p-srv", topo.server_ns.clone(), "10.233.0.3/24"),
    ] {
        veth(sw, port, &ns, cidr, 1500)?;
        vsctl(&["add-port", "br0", port]).map_err(with_log)?;
        if !tso {
            run(&in_ns(&ns, &["ethtool", "-K", "eth0", "tx", "off"]))?;
        }
    }
    if let Some(p) = topo.guard.procs.last_mut() {
        p.check_alive().map_err(with_log)?;
    }
    topo.server_ip = "10.233.0.3".into();
    Ok(())
}

/// vde_switch with one vde_plug2tap per endpoint, each started inside its
/// namespace so that the TAP device is created there.
fn vde(topo: &mut Topology) -> Result<()> {
    add_endpoints(topo)?;
    let dir = topo.dir.clone();
    let sock = dir.join("switch");
    let ctl = sock.join("ctl");
    let sock_arg = sock.display().to_string();
    // vde_switch's console exits on EOF: keep its stdin open.
    let sw = Proc::spawn(
        &["vde_switch", "-s", &sock_arg],
        &dir.join("vde_switch.log"),
        &[],
        true,
    )?;
    topo.switch_pids.push(sw.pid());
    topo.guard.procs.push(sw);
    sys::wait_until("vde_switch's socket", Duration::from_secs(10), || {
        if let Some(p) = topo.guard.procs.last_mut() {
            p.check_alive()?;
        }
        Ok(ctl.exists())
    })
    .with_context(|| {
        format!(
            "vde_switch log:{}",
            sys::log_tail(&dir.join("vde_switch.log"), 10)
        )
    })?;
    for (ns, cidr, name) in [
        (topo.client_ns.clone(), "10.234.0.2/24", "cli"),
        (topo.server_ns.clone(), "10.234.0.3/24", "srv"),
    ] {
        let log = dir.join(format!("plug-{name}.log"));
        let plug = Proc::spawn(
            &in_ns(&ns, &["vde_plug2tap", "-s", &sock_arg, "eth0"]),
            &log,
            &[],
            false,
        )?;
        topo.switch_pids.push(plug.pid());
        topo.guard.procs.push(plug);
        sys::wait_until("vde_plug2tap's TAP device", Duration::from_secs(10), || {
            if let Some(p) = topo.guard.procs.last_mut() {
                p.check_alive()?;
            }
            Ok(run(&["ip", "-n", &ns, "link", "show", "eth0"]).is_ok())
        })
        .with_context(|| format!("vde_plug2tap log:{}", sys::log_tail(&log, 10)))?;
        address(&ns, "eth0", cidr)?;
    }
    topo.server_ip = "10.234.0.3".into();
    Ok(())
}
