//! Whether this process is privileged on the host: what weft uses to choose
//! its defaults (the socket under `/run/weft` and the state under
//! `/var/lib/weft`, or the per-user XDG directories) and whether it can
//! enter a workload's namespace directly or needs the rootless helper
//! ([`crate::userns`]).
//!
//! "Root" is a matter of capabilities, not of the user id: root inside a
//! user namespace (rootless podman, `unshare --map-root-user`) has uid 0
//! but no power over the host's network, and a process with file
//! capabilities may have that power without uid 0. So [`Privilege`] reads
//! the effective capability set from `/proc/self/status` and checks that
//! the process lives in the initial user namespace.

use std::fs;

/// `CAP_NET_ADMIN` from `<linux/capability.h>`.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN` from `<linux/capability.h>`.
pub const CAP_SYS_ADMIN: u32 = 21;

/// What this process may do on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privilege {
    /// The effective capability set (`CapEff`), 0 if unreadable.
    pub effective: u64,
    /// Whether the process lives in the initial (host) user namespace,
    /// where its capabilities count for the host's namespaces.
    pub initial_userns: bool,
}

impl Privilege {
    /// Reads the current process's privilege from `/proc`.
    pub fn current() -> Privilege {
        let effective = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_cap_eff(&s))
            .unwrap_or(0);
        Privilege {
            effective,
            initial_userns: in_initial_userns(),
        }
    }

    /// Whether capability `cap` (a `CAP_*` number) is effective.
    pub fn has(&self, cap: u32) -> bool {
        cap < 64 && self.effective & (1u64 << cap) != 0
    }

    /// `CAP_NET_ADMIN` over the host: may create TAPs and configure the
    /// host's network. This is what "running as root" means to weft's
    /// defaults.
    pub fn host_net_admin(&self) -> bool {
        self.initial_userns && self.has(CAP_NET_ADMIN)
    }

    /// `CAP_SYS_ADMIN` (to enter any network namespace with `setns`) and
    /// `CAP_NET_ADMIN` over the host: may provision a TAP in any namespace
    /// without the rootless helper.
    pub fn can_enter_any_netns(&self) -> bool {
        self.host_net_admin() && self.has(CAP_SYS_ADMIN)
    }
}

/// Whether this process has `CAP_NET_ADMIN` in the initial user namespace
/// (see [`Privilege::host_net_admin`]).
pub fn is_privileged() -> bool {
    Privilege::current().host_net_admin()
}

/// The `CapEff:` line of a `/proc/PID/status` text.
fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Whether this process is in the initial user namespace: the same
/// namespace as pid 1 when `/proc/1/ns/user` is readable, else an identity
/// `uid_map` over the whole range (what only the initial namespace has,
/// short of a deliberately identical map).
fn in_initial_userns() -> bool {
    if let (Ok(me), Ok(init)) = (
        fs::read_link("/proc/self/ns/user"),
        fs::read_link("/proc/1/ns/user"),
    ) {
        return me == init;
    }
    fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| is_identity_map(&m))
}

fn is_identity_map(map: &str) -> bool {
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| !f.is_empty())
        .collect();
    lines.len() == 1 && lines[0] == ["0", "0", "4294967295"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let status = "Name:\tweft\nCapPrm:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1fffeffffff));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
        let p = Privilege {
            effective: 1 << CAP_NET_ADMIN,
            initial_userns: true,
        };
        assert!(p.host_net_admin());
        assert!(!p.can_enter_any_netns());
        let p = Privilege {
            effective: u64::MAX,
            initial_userns: false,
        };
        assert!(!p.host_net_admin());
    }

    #[test]
    fn identity_map_only_for_the_whole_range() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0       1000          1\n"));
        assert!(!is_identity_map(""));
    }

    #[test]
    fn root_on_the_host_is_privileged() {
        if nix::unistd::geteuid().is_root() && in_initial_userns() {
            let p = Privilege::current();
            assert_eq!(p.host_net_admin(), p.has(CAP_NET_ADMIN));
        }
    }
}
