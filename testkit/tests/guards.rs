//! The guards release what they made, and every wait is bounded.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_testkit::*;

#[test]
fn names_carry_the_process_prefix_and_differ() {
    let a = unique_name("x");
    let b = unique_name("x");
    assert!(
        a.starts_with(&format!("weft-t{}-", std::process::id())),
        "{a}"
    );
    assert!(a.starts_with(&name_prefix()) && a.ends_with("-x"), "{a}");
    assert_ne!(a, b);
    assert_eq!(subnet(12, 3), "10.12.3.0/24");
    assert_eq!(addr(12, 3, 4), "10.12.3.4");
}

#[test]
fn run_timeout_kills_a_command_that_overruns() {
    let started = Instant::now();
    let out = run_timeout(
        Command::new("sh").args(["-c", "echo early; sleep 30"]),
        Duration::from_millis(300),
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!out.status.success());
    assert_eq!(text(&out.stdout), "early\n");
}

#[test]
fn run_timeout_returns_output_and_status() {
    let out = run_timeout(
        Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
        CMD_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
}

#[test]
fn wait_for_gives_up_after_its_timeout() {
    let started = Instant::now();
    assert_eq!(wait_for(Duration::from_millis(200), || None::<()>), None);
    assert!(started.elapsed() >= Duration::from_millis(200));
    let mut n = 0;
    assert_eq!(
        wait_for(Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        }),
        Some(3)
    );
}

#[test]
fn bg_is_killed_with_its_group_on_drop() {
    let dir = TempDir::new("bg");
    let pidfile = dir.path().join("pid");
    let mut cmd = Command::new("sh");
    // The shell's own child is in the same group and must go too.
    cmd.arg("-c")
        .arg(format!("sleep 30 & echo $! > {}; wait", pidfile.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut bg = Bg::spawn(cmd, "sleeper");
    let shell = bg.pid() as i32;
    let sleeper: i32 = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    })
    .expect("the shell wrote its child's pid");
    assert!(process_exists(shell) && process_exists(sleeper));
    assert_eq!(bg.wait_timeout(Duration::from_millis(100)), None);
    drop(bg);
    assert!(!process_exists(shell), "shell {shell} survived");
    // The sleeper is not our child: init reaps it, which may take a moment.
    let gone = wait_for(Duration::from_secs(5), || {
        (!process_exists(sleeper)).then_some(())
    });
    assert!(gone.is_some(), "sleeper {sleeper} survived its group");
}

#[test]
fn temp_dir_is_removed_on_drop() {
    let dir = TempDir::new("tk");
    let path = dir.path().to_path_buf();
    assert!(path.is_dir());
    assert!(path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&name_prefix()));
    std::fs::write(path.join("f"), b"x").unwrap();
    drop(dir);
    assert!(!path.exists());
}

#[test]
fn netns_is_deleted_with_its_processes_also_on_panic() {
    require_root!();
    let ns = Netns::new("tk");
    let name = ns.name.clone();
    assert!(netns_list().contains(&name));
    let sleeper = ns.spawn(&["sleep", "30"], Stdio::null(), Stdio::null());
    let sleeper_pid = i32::try_from(sleeper.pid()).expect("pid fits");
    // Leaked on purpose: the namespace guard must still kill it.
    std::mem::forget(sleeper);
    let joined = wait_for(Duration::from_secs(5), || {
        ns.pids().contains(&sleeper_pid).then_some(())
    });
    assert!(
        joined.is_some(),
        "sleeper {sleeper_pid} never joined {name}"
    );
    let lo = ns.run(|| std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr());
    assert!(lo.is_ok(), "{lo:?}");
    // Only the guard moves into the thread that panics.
    let panic = std::thread::spawn(move || {
        let _ns = ns;
        std::panic::panic_any("guard test panics on purpose")
    })
    .join()
    .expect_err("the thread panics");
    assert_eq!(
        panic.downcast_ref::<&str>(),
        Some(&"guard test panics on purpose")
    );
    assert!(!netns_list().contains(&name), "{name} left behind");
    // Killed but never reaped (its Bg was forgotten): a zombie is gone.
    let gone = wait_for(Duration::from_secs(5), || {
        (!process_exists(sleeper_pid) || is_zombie(sleeper_pid)).then_some(())
    });
    assert!(
        gone.is_some(),
        "sleeper {sleeper_pid} still runs after the guard"
    );
}

/// Whether `pid` has exited and waits to be reaped (state `Z` in
/// `/proc/PID/stat`).
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, after_name) = stat.rsplit_once(')')?;
            after_name
                .split_whitespace()
                .next()
                .map(|state| state == "Z")
        })
        .unwrap_or(true)
}
