//! Every bad input is refused with a clear message naming what was wrong,
//! a non-zero exit code (1 refused, 3 no daemon), and no change of state.
//!
//! Subnet indices 20..=39 (see `common` for the parallelism note).

mod common;

use std::process::Output;

use common::*;
use serde_json::Value;

/// A daemon with network `alpha` (`10.<i>.1.0/24`), namespace `a` attached
/// to it as endpoint `web1` (address .2), and a spare namespace `b`.
struct Fixture {
    i: u8,
    // Field order = drop order: namespaces go after the daemon stopped.
    d: Daemon,
    a: Netns,
    b: Netns,
    web1: Endpoint,
}

fn fixture(i: u8) -> Fixture {
    let d = Daemon::start();
    let a = Netns::new("a");
    let b = Netns::new("b");
    create_network(&d, "alpha", &subnet(i, 1), &[]);
    let web1 = attach(&d, "alpha", &a, &["--name", "web1"]);
    assert_eq!(web1.ip, addr(i, 1, 2));
    Fixture { i, d, a, b, web1 }
}

fn snapshot(d: &Daemon) -> (Value, Value) {
    (json(d, &["network", "ls"]), json(d, &["endpoints"]))
}

/// Links in the namespace other than `lo`.
fn links(ns: &Netns) -> Vec<String> {
    let out = ns.ip(&["-o", "link", "show"]);
    assert!(out.status.success(), "{}", describe(&out));
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| n != "lo")
        .collect()
}

/// Runs `weft ARGS`, which must be refused with exit 1, a stderr naming
/// every one of `needles`, and no visible change of the daemon's state or of
/// the spare namespace.
fn assert_refused(f: &Fixture, args: &[&str], needles: &[&str]) -> Output {
    let before = snapshot(&f.d);
    let links_before = links(&f.b);
    let out = weft(&f.d, args);
    let cmd = format!("weft {}", args.join(" "));
    assert_eq!(
        out.status.code(),
        Some(1),
        "`{cmd}` should be refused with exit 1:\n{}",
        describe(&out)
    );
    let err = text(&out.stderr);
    assert!(!err.trim().is_empty(), "`{cmd}` gave no message");
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr of `{cmd}` should mention {needle:?}:\n{err}"
        );
    }
    assert_eq!(
        snapshot(&f.d),
        before,
        "`{cmd}` was refused but changed the daemon's state"
    );
    assert_eq!(
        links(&f.b),
        links_before,
        "`{cmd}` was refused but changed the links of {}",
        f.b.name
    );
    eprintln!("`{cmd}` → {}", err.trim());
    out
}

#[test]
fn unknown_namespace() {
    require_root!();
    let f = fixture(20);
    let missing = unique_name("nosuch");
    assert_refused(
        &f,
        &["attach", "alpha", "--netns", &missing],
        &[missing.as_str()],
    );
}

#[test]
fn unknown_pid() {
    require_root!();
    let f = fixture(21);
    assert!(!std::path::Path::new("/proc/4000000").exists());
    assert_refused(&f, &["attach", "alpha", "--pid", "4000000"], &["4000000"]);
}

#[test]
fn unparseable_cidr() {
    require_root!();
    let f = fixture(22);
    for bad in ["10.0.0.0/33", "banana", "10.22.300.0/24"] {
        assert_refused(&f, &["network", "create", "bad", "--subnet", bad], &[bad]);
    }
    // A gateway outside its subnet is just as wrong.
    let gw = addr(f.i, 9, 1);
    assert_refused(
        &f,
        &[
            "network",
            "create",
            "bad",
            "--subnet",
            &subnet(f.i, 8),
            "--gateway",
            &gw,
        ],
        &[gw.as_str()],
    );
}

#[test]
fn overlapping_cidr() {
    require_root!();
    let f = fixture(23);
    let inside = format!("10.{}.1.128/25", f.i);
    let around = format!("10.{}.0.0/16", f.i);
    let same = subnet(f.i, 1);
    for cidr in [&inside, &around, &same] {
        assert_refused(
            &f,
            &["network", "create", "beta", "--subnet", cidr],
            &[cidr.as_str()],
        );
    }
    // A neighbouring subnet is fine.
    create_network(&f.d, "beta", &subnet(f.i, 2), &[]);
}

#[test]
fn ip_outside_subnet() {
    require_root!();
    let f = fixture(24);
    let outside = addr(f.i, 2, 5);
    assert_refused(
        &f,
        &["attach", "alpha", "--netns", &f.b.name, "--ip", &outside],
        &[outside.as_str()],
    );
    // The network and broadcast addresses are not endpoint addresses either.
    for special in [addr(f.i, 1, 0), addr(f.i, 1, 255)] {
        assert_refused(
            &f,
            &["attach", "alpha", "--netns", &f.b.name, "--ip", &special],
            &[special.as_str()],
        );
    }
    assert_refused(
        &f,
        &["attach", "alpha", "--netns", &f.b.name, "--ip", "10.1.2"],
        &["10.1.2"],
    );
}

#[test]
fn ip_already_taken() {
    require_root!();
    let f = fixture(25);
    let taken = f.web1.ip.clone();
    assert_refused(
        &f,
        &["attach", "alpha", "--netns", &f.b.name, "--ip", &taken],
        &[taken.as_str()],
    );
    let gateway = addr(f.i, 1, 1);
    assert_refused(
        &f,
        &["attach", "alpha", "--netns", &f.b.name, "--ip", &gateway],
        &[gateway.as_str()],
    );
    // A free one is fine.
    let free = addr(f.i, 1, 77);
    let ep = attach(&f.d, "alpha", &f.b, &["--ip", &free]);
    assert_eq!(ep.ip, free);
}

#[test]
fn exhausted_pool() {
    require_root!();
    let f = fixture(26);
    let tiny = format!("10.{}.3.0/30", f.i);
    create_network(&f.d, "tiny", &tiny, &[]);
    let net = json(&f.d, &["network", "inspect", "tiny"]);
    assert_eq!(net["free_addresses"], 1, "{net}");
    // .0 network, .1 gateway, .2 the only endpoint address, .3 broadcast.
    let ep = attach(&f.d, "tiny", &f.a, &[]);
    assert_eq!(ep.ip, format!("10.{}.3.2", f.i));
    assert_refused(&f, &["attach", "tiny", "--netns", &f.b.name], &["tiny"]);
}

#[test]
fn duplicate_network_name() {
    require_root!();
    let f = fixture(27);
    assert_refused(
        &f,
        &["network", "create", "alpha", "--subnet", &subnet(f.i, 7)],
        &["alpha"],
    );
}

#[test]
fn duplicate_endpoint_name() {
    require_root!();
    let f = fixture(28);
    assert_refused(
        &f,
        &["attach", "alpha", "--netns", &f.b.name, "--name", "web1"],
        &["web1"],
    );
}

#[test]
fn removing_a_network_with_endpoints() {
    require_root!();
    let f = fixture(29);
    assert_refused(&f, &["network", "rm", "alpha"], &["alpha"]);
    // Once empty it goes.
    weft_ok(&f.d, &["detach", "alpha", &f.web1.name]);
    weft_ok(&f.d, &["network", "rm", "alpha"]);
    assert_eq!(json(&f.d, &["network", "ls"]), serde_json::json!([]));
    assert_eq!(
        links(&f.a),
        Vec::<String>::new(),
        "detach left a link in {}",
        f.a.name
    );
}

#[test]
fn unknown_network_and_endpoint() {
    require_root!();
    let f = fixture(30);
    assert_refused(
        &f,
        &["attach", "nosuchnet", "--netns", &f.b.name],
        &["nosuchnet"],
    );
    assert_refused(&f, &["network", "rm", "nosuchnet"], &["nosuchnet"]);
    assert_refused(&f, &["network", "inspect", "nosuchnet"], &["nosuchnet"]);
    assert_refused(&f, &["detach", "alpha", "nosuchep"], &["nosuchep"]);
    assert_refused(
        &f,
        &["route", "allow", "alpha", "nosuchnet"],
        &["nosuchnet"],
    );
}

#[test]
fn no_daemon_running() {
    // Needs no privileges: nothing is listening on this socket.
    let socket = format!("/tmp/{}nodaemon.sock", unique_name("x"));
    let commands: [&[&str]; 5] = [
        &["status"],
        &["network", "ls"],
        &["network", "create", "n", "--subnet", "10.31.0.0/24"],
        &["endpoints", "--json"],
        &["stats"],
    ];
    for args in commands {
        let out = weft_sock(std::path::Path::new(&socket), args);
        let cmd = format!("weft --socket {socket} {}", args.join(" "));
        assert_eq!(
            out.status.code(),
            Some(3),
            "`{cmd}` without a daemon should exit 3:\n{}",
            describe(&out)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains("weft daemon"),
            "stderr of `{cmd}` should point at `weft daemon`:\n{err}"
        );
    }
}

#[test]
fn routing_an_internal_network() {
    require_root!();
    let f = fixture(36);
    create_network(&f.d, "vault", &subnet(f.i, 9), &["--internal"]);
    let out = assert_refused(
        &f,
        &["route", "allow", "alpha", "vault"],
        &["vault", "internal"],
    );
    let _ = out;
    assert_eq!(json(&f.d, &["route", "ls"]), serde_json::json!([]));
}

#[test]
fn publishing_from_an_internal_network() {
    require_root!();
    let f = fixture(37);
    create_network(&f.d, "vault", &subnet(f.i, 9), &["--internal"]);
    let _ep = attach(&f.d, "vault", &f.b, &["--name", "safe"]);
    assert_refused(
        &f,
        &["publish", "vault", "safe", "8080:80"],
        &["vault", "internal"],
    );
    assert_eq!(json(&f.d, &["publish", "ls"]), serde_json::json!([]));
}

#[test]
fn removing_a_network_that_still_has_services() {
    require_root!();
    let f = fixture(38);
    create_network(&f.d, "svcnet", &subnet(f.i, 9), &[]);
    let vip = addr(f.i, 9, 200);
    weft_ok(
        &f.d,
        &[
            "service",
            "create",
            "api",
            "--network",
            "svcnet",
            "--vip",
            &vip,
            "--port",
            "80",
        ],
    );
    assert_refused(&f, &["network", "rm", "svcnet"], &["svcnet", "api"]);
}
