//! The harness's guards leave nothing behind, on a panic as on a normal
//! return; SIGTERM leaves the endpoints for the next daemon and `weft
//! reset` removes them.
//!
//! Subnet indices 50..=59 (see `common` for the parallelism note).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Stdio;

use common::*;

/// What a scenario created, recorded as it goes so it can be checked after
/// the scenario's guards are gone.
#[derive(Default, Debug)]
struct Created {
    namespaces: Vec<String>,
    daemon_pid: Option<i32>,
    daemon_dir: Option<PathBuf>,
    background_pid: Option<i32>,
    unguarded_pid: Option<i32>,
}

/// Daemon + 2 namespaces + attach + a server in one namespace; panics after
/// the setup when `panic_midway`.
fn scenario(i: u8, tag: &str, created: &mut Created, panic_midway: bool) {
    let d = Daemon::start();
    created.daemon_pid = Some(d.pid() as i32);
    created.daemon_dir = Some(d.dir.clone());
    let a = Netns::new(tag);
    created.namespaces.push(a.name.clone());
    let b = Netns::new(tag);
    created.namespaces.push(b.name.clone());
    create_network(&d, "n", &subnet(i, 1), &[]);
    let ep_a = attach(&d, "n", &a, &[]);
    let ep_b = attach(&d, "n", &b, &[]);
    let server = b.spawn(&["nc", "-l", "5050"], Stdio::null(), Stdio::null());
    created.background_pid = Some(server.pid() as i32);
    // A process started inside the namespace without a guard of its own
    // (the Child handle is dropped, which neither kills nor waits): the
    // namespace guard must kill it.
    let unguarded = a
        .command(&["sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sleep in the namespace");
    let pid = unguarded.id() as i32;
    drop(unguarded);
    created.unguarded_pid = Some(pid);
    assert!(alive(pid), "sleep {pid} did not start");
    let out = a.ping(&ep_b.ip);
    assert!(out.status.success(), "{}", describe(&out));
    if panic_midway {
        panic!("deliberate panic midway through the scenario");
    }
    let _ = ep_a;
}

fn assert_nothing_left(tag: &str, created: &Created) {
    assert_eq!(
        created.namespaces.len(),
        2,
        "scenario did not get far: {created:?}"
    );
    let suffix = format!("-{tag}");
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&name_prefix()) && n.ends_with(&suffix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    for ns in &created.namespaces {
        assert!(
            !PathBuf::from("/var/run/netns").join(ns).exists(),
            "{ns} still mounted"
        );
    }

    let pid = created.daemon_pid.expect("daemon pid recorded");
    assert!(!process_exists(pid), "daemon {pid} still exists");
    let bg = created.background_pid.expect("server pid recorded");
    assert!(!process_exists(bg), "background server {bg} still exists");

    let dir = created.daemon_dir.as_ref().expect("daemon dir recorded");
    assert!(!dir.exists(), "daemon temp dir {} left", dir.display());

    let sleeper = created.unguarded_pid.expect("sleep pid recorded");
    let gone = wait_for(std::time::Duration::from_secs(2), || {
        (!alive(sleeper)).then_some(())
    });
    assert!(
        gone.is_some(),
        "process {sleeper} started inside a namespace still runs"
    );
}

/// Exists and is not a zombie waiting for a reaper.
fn alive(pid: i32) -> bool {
    if !process_exists(pid) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    !(stat.is_empty() || state.starts_with('Z') || state.starts_with('X'))
}

#[test]
fn a_panic_midway_leaves_nothing_behind() {
    require_root!();
    let tag = "cupanic";
    let mut created = Created::default();
    let result = catch_unwind(AssertUnwindSafe(|| scenario(50, tag, &mut created, true)));
    let err = result.expect_err("the scenario should have panicked");
    let msg = err
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(
        msg.contains("deliberate panic"),
        "panicked for another reason: {msg}"
    );
    assert_nothing_left(tag, &created);
}

#[test]
fn a_normal_return_leaves_nothing_behind() {
    require_root!();
    let tag = "cunormal";
    let mut created = Created::default();
    scenario(51, tag, &mut created, false);
    assert_nothing_left(tag, &created);
}

#[test]
fn sigterm_keeps_endpoints_and_reset_removes_them() {
    require_root!();
    let mut d = Daemon::start();
    let a = Netns::new("a");
    let b = Netns::new("b");
    create_network(&d, "n", &subnet(52, 1), &[]);
    let ep_a = attach(&d, "n", &a, &[]);
    let ep_b = attach(&d, "n", &b, &[]);
    let link_exists =
        |ns: &Netns, ep: &Endpoint| ns.ip(&["link", "show", &ep.ifname]).status.success();
    for (ns, ep) in [(&a, &ep_a), (&b, &ep_b)] {
        assert!(
            link_exists(ns, ep),
            "TAP {} missing in {}",
            ep.ifname,
            ns.name
        );
    }
    let resolv_conf = |ns: &Netns| {
        std::path::PathBuf::from("/etc/netns")
            .join(&ns.name)
            .join("resolv.conf")
    };
    for ns in [&a, &b] {
        assert!(
            resolv_conf(ns).exists(),
            "attach wrote no resolv.conf for {}",
            ns.name
        );
    }
    // SIGTERM: exit 0, the socket goes, the endpoints stay for the next
    // daemon.
    let status = d
        .kill_keeping(nix::sys::signal::Signal::SIGTERM)
        .expect("daemon exit status");
    assert!(status.success(), "daemon exited with {status} on SIGTERM");
    assert!(
        !d.socket.exists(),
        "socket {} left behind",
        d.socket.display()
    );
    for (ns, ep) in [(&a, &ep_a), (&b, &ep_b)] {
        assert!(
            link_exists(ns, ep),
            "{} left {} when the daemon stopped",
            ep.ifname,
            ns.name
        );
        assert!(
            resolv_conf(ns).exists(),
            "{} removed",
            resolv_conf(ns).display()
        );
    }
    // `weft reset` on the next daemon removes all of it.
    d.respawn(&[]);
    let reset = json(&d, &["reset"]);
    assert_eq!(reset["endpoints"], 2, "{reset}");
    assert_eq!(reset["networks"], 1, "{reset}");
    for (ns, ep) in [(&a, &ep_a), (&b, &ep_b)] {
        assert!(
            !link_exists(ns, ep),
            "{} still in {} after reset",
            ep.ifname,
            ns.name
        );
        assert!(
            !resolv_conf(ns).exists(),
            "{} left behind after reset",
            resolv_conf(ns).display()
        );
    }
    let networks = json(&d, &["network", "ls"]);
    assert_eq!(networks, serde_json::json!([]), "networks after reset");
}
