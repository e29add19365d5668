//! Shared harness for weft-cli's integration tests: what is specific to
//! the `weft` binary. The generic parts (namespaces, background processes,
//! bounded commands and waits, names, the root check) come from
//! [`weft_testkit`] and are re-exported here, so `use common::*` brings
//! everything.
//!
//! These tests drive the real `weft` binary against real network namespaces
//! and the real kernel stack, so they need root; without it every test
//! prints `skipped: needs root` and returns.
//!
//! # Running in parallel (CI note)
//!
//! See [`weft_testkit`] for the conventions (names `weft-t<pid>-<counter>-`,
//! one daemon per test with its own dir, guards, bounded waits). Every
//! test takes its subnets from `10.<index>.<k>.0/24` ([`subnet`]), where
//! `<index>` is unique per test across all test files (switching: 10..=19,
//! bad_input: 20..=39, port_security: 40..=49, cleanup: 50..=59, overlay:
//! 60..=69, whose underlays also use 192.168.60..=69.0/24; cluster: 70..=74,
//! whose underlays also use 192.168.70..=74.0/24; hardening: 100..=107; nat: 80..=93, whose uplinks
//! also use 192.168.80..=93.0/24; dns_tcp: 95; rootless: 96; cni: 97; podman:
//! 98; cni and podman uplinks ([`Uplinked`]) use 192.168.97.0/24 and
//! 192.168.98.0/24). Networks of
//! different daemons never meet anyway, since each namespace belongs to
//! exactly one test, but distinct ranges keep logs readable.

#![allow(dead_code, unused_imports)]

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

pub use weft_testkit::*;

/// The binary under test.
pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A `weft daemon` of the test's own: [`weft_testkit::Daemon`] started
/// from [`WEFT`].
pub struct Daemon(weft_testkit::Daemon);

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts a daemon with extra `weft daemon` arguments (e.g.
    /// `["--mac-aging", "2"]`) and waits up to 10 s for `status`.
    pub fn start_with(extra: &[&str]) -> Daemon {
        Daemon(weft_testkit::Daemon::spawn(WEFT, None, extra))
    }

    /// Starts a daemon whose process runs inside namespace `ns` (through
    /// `ip netns exec`, which execs weft, so the pid is the daemon's), e.g.
    /// a "host" namespace of an overlay test; it still creates its TAPs in
    /// whatever namespaces `attach` names. Drop the daemon before `ns`.
    pub fn start_in(ns: &Netns, extra: &[&str]) -> Daemon {
        Daemon(weft_testkit::Daemon::spawn(WEFT, Some(ns), extra))
    }
}

impl Deref for Daemon {
    type Target = weft_testkit::Daemon;

    fn deref(&self) -> &weft_testkit::Daemon {
        &self.0
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut weft_testkit::Daemon {
        &mut self.0
    }
}

/// Runs `weft --socket SOCK ARGS...`.
pub fn weft_sock(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(WEFT);
    cmd.arg("--socket").arg(socket).args(args);
    run_timeout(&mut cmd, CMD_TIMEOUT)
}

/// Runs `weft --socket <daemon's socket> ARGS...`.
pub fn weft(daemon: &Daemon, args: &[&str]) -> Output {
    weft_sock(&daemon.socket, args)
}

/// Runs a weft command that must succeed; returns its stdout.
pub fn weft_ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = weft(daemon, args);
    assert!(
        out.status.success(),
        "`weft {}` failed:\n{}",
        args.join(" "),
        describe(&out)
    );
    text(&out.stdout)
}

/// Runs `weft ARGS... --json`, which must succeed, and parses its stdout.
pub fn json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let stdout = weft_ok(daemon, &all);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "`weft {}` printed invalid JSON ({e}):\n{stdout}",
            all.join(" ")
        )
    })
}

/// `weft network create NAME --subnet CIDR EXTRA...`, which must succeed.
pub fn create_network(daemon: &Daemon, name: &str, cidr: &str, extra: &[&str]) {
    let mut args = vec!["network", "create", name, "--subnet", cidr];
    args.extend_from_slice(extra);
    weft_ok(daemon, &args);
}

/// `weft attach NETWORK --netns NS EXTRA... --json` → EndpointInfo.
pub fn attach(daemon: &Daemon, network: &str, ns: &Netns, extra: &[&str]) -> Endpoint {
    let mut args = vec!["attach", network, "--netns", ns.name.as_str()];
    args.extend_from_slice(extra);
    Endpoint::from_json(&json(daemon, &args))
}

/// The fields of an EndpointInfo the tests use.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub network: String,
    pub ifname: String,
    /// Address without prefix length.
    pub ip: String,
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub port: u64,
    pub raw: Value,
}

impl Endpoint {
    pub fn from_json(v: &Value) -> Endpoint {
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("EndpointInfo without string `{k}`: {v}"))
                .to_string()
        };
        let ip_cidr = s("ip");
        Endpoint {
            name: s("name"),
            network: s("network"),
            ifname: s("ifname"),
            ip: ip_cidr.split('/').next().unwrap().to_string(),
            mac: s("mac").to_ascii_lowercase(),
            port: v["port"]
                .as_u64()
                .unwrap_or_else(|| panic!("EndpointInfo without numeric `port`: {v}")),
            raw: v.clone(),
        }
    }
}

/// The `drops[reason]` counter of a switch port in `weft stats --json`
/// (0 when the reason is absent).
pub fn port_drops(daemon: &Daemon, port: u64, reason: &str) -> u64 {
    let stats = json(daemon, &["stats"]);
    let ports = stats["ports"]
        .as_array()
        .unwrap_or_else(|| panic!("stats without `ports`: {stats}"));
    let p = ports
        .iter()
        .find(|p| p["port"].as_u64() == Some(port))
        .unwrap_or_else(|| panic!("no port {port} in stats: {stats}"));
    p["drops"][reason].as_u64().unwrap_or(0)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> [u8; 6] {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).unwrap_or_else(|_| panic!("bad MAC {s}")))
        .collect();
    parts.try_into().unwrap_or_else(|_| panic!("bad MAC {s}"))
}

/// A daemon running in a "router" namespace R whose uplink `up0` is a veth
/// to an "outside" namespace O: O has 192.168.<index>.1/24, weft owns
/// 192.168.<index>.2 on `up0` (no kernel address there) with O as its next
/// hop, so published ports are reached from O through the uplink. The
/// daemon is declared first so it stops before the namespaces go.
pub struct Uplinked {
    pub daemon: Daemon,
    pub r: Netns,
    pub o: Netns,
    pub index: u8,
}

impl Uplinked {
    pub fn new(index: u8) -> Uplinked {
        let r = Netns::new("r");
        let o = Netns::new("o");
        r.add_veth("up0", &o, "o0");
        let _ = r.exec(&["sysctl", "-qw", "net.ipv6.conf.up0.disable_ipv6=1"]);
        r.ip_ok(&["link", "set", "up0", "up"]);
        o.ip_ok(&["addr", "add", &format!("192.168.{index}.1/24"), "dev", "o0"]);
        o.ip_ok(&["link", "set", "o0", "up"]);
        let daemon = Daemon::start_in(&r, &[]);
        let w = Uplinked {
            daemon,
            r,
            o,
            index,
        };
        weft_ok(
            &w.daemon,
            &[
                "uplink",
                "set",
                "--interface",
                "up0",
                "--ip",
                &format!("{}/24", w.uplink_ip()),
                "--gateway",
                &w.outside_ip(),
            ],
        );
        w
    }

    /// weft's own address on the uplink, 192.168.<index>.2.
    pub fn uplink_ip(&self) -> String {
        format!("192.168.{}.2", self.index)
    }

    /// O's address, 192.168.<index>.1 (the uplink's next hop).
    pub fn outside_ip(&self) -> String {
        format!("192.168.{}.1", self.index)
    }
}
