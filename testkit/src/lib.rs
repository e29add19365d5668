//! Test-only helpers for weft's tests: the resources a test makes, each a
//! guard, and bounded ways to run commands and wait.
//!
//! Used only as a dev-dependency. Many of weft's tests drive real network
//! namespaces and the real kernel stack (and some the real `weft` binary),
//! so they need root; without it they print `skipped: needs root` and
//! return ([`require_root!`], [`skip_without_root`]).
//!
//! # Conventions
//!
//! * **Names.** Everything a test creates on the system is named with the
//!   prefix `weft-t<pid>-<counter>-` ([`unique_name`], [`name_prefix`]):
//!   namespaces `weft-t<pid>-<counter>-<tag>` ([`Netns`]), daemon dirs
//!   `/tmp/weft-t<pid>-<counter>-daemon/` ([`Daemon`]), scratch dirs
//!   ([`TempDir`]). The pid keeps processes apart, the counter threads, and
//!   a leftover is easy to trace back (CI checks `ip netns list` for
//!   `weft-t` after the tests).
//! * **Guards.** Every resource is a guard released on every exit path,
//!   panics included: a [`Netns`] kills the processes inside it and
//!   deletes itself (and its `/etc/netns/NAME`), a [`Bg`] kills its process
//!   group, a [`Daemon`] stops its daemon and removes its dir, a [`TempDir`]
//!   removes itself. Drop a daemon that runs inside a namespace before the
//!   namespace.
//! * **Bounded waits.** Every command runs with a timeout ([`run_timeout`],
//!   [`CMD_TIMEOUT`]) after which its whole process group is killed, and
//!   every wait polls against a deadline ([`wait_for`]).
//! * **No `unsafe`.** System calls go through `nix`.
//!
//! # Running in parallel (CI note)
//!
//! `cargo test` runs test functions on parallel threads of one process and
//! `cargo nextest` runs each in its own process. Both are safe:
//!
//! * every test starts its own daemon with its own socket, state dir and log
//!   under `/tmp/weft-t<pid>-<n>-daemon/` ([`Daemon`]);
//! * every namespace is named `weft-t<pid>-<counter>-<tag>` ([`Netns`]), so
//!   names never collide between threads or processes;
//! * every test takes its subnets from `10.<index>.<k>.0/24` ([`subnet`]),
//!   where `<index>` is unique per test across all test files (weft-cli's
//!   `tests/common/mod.rs` keeps the table). Networks of different daemons
//!   never meet anyway, since each namespace belongs to exactly one test,
//!   but distinct ranges keep logs readable.

#![forbid(unsafe_code)]

mod cmd;
mod daemon;
mod names;
mod netns;
mod process;
mod wait;

pub use cmd::{describe, host_exec, run_timeout, sha256, text, CMD_TIMEOUT};
pub use daemon::Daemon;
pub use names::{addr, name_prefix, next_id, subnet, unique_name, TempDir};
pub use netns::{enter_netns, netns_list, spawn_in_netns, Netns};
pub use process::{kill_group, process_exists, Bg};
pub use wait::wait_for;

/// Whether the tests run as root (needed for namespaces, TAPs, raw sockets).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `true` (after printing `skipping test WHAT: needs root`) when not
/// running as root, for tests that return early:
/// `if skip_without_root("tag") { return; }`.
pub fn skip_without_root(what: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipping test {what}: needs root");
    true
}

/// Returns from the calling test with `skipped: needs root` when not
/// running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}
