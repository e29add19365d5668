//! Running commands with a bound, and bounded waits.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::process::{exited_unreaped, kill_group};

/// Default bound for one helper command (ip, weft, ping, ...).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// Lossy text of a byte buffer.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A readable dump of a finished command for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Runs `cmd` to completion with stdin closed, collecting its output. After
/// `timeout` the command's whole process group is killed and the output so
/// far is returned with the (signal) status.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let pid = child.id();
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    loop {
        if exited_unreaped(pid) {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("timed out after {timeout:?}, killing: {cmd:?}");
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    // The leader is not reaped yet, so its group id cannot have been reused:
    // kill whatever is left in the group (on timeout the command itself,
    // otherwise grandchildren that would hold the pipes open).
    kill_group(pid, Signal::SIGKILL);
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Runs a host command (`args[0]` is the program) with [`CMD_TIMEOUT`].
pub fn host_exec(args: &[&str]) -> Output {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    run_timeout(&mut cmd, CMD_TIMEOUT)
}

/// `sha256sum FILE` → hex digest (bounded to 120 s).
pub fn sha256(path: &Path) -> String {
    let out = run_timeout(
        Command::new("sha256sum").arg(path),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "sha256sum {}:\n{}",
        path.display(),
        describe(&out)
    );
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
