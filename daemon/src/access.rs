//! Who may do what on the control socket, decided from the caller's
//! `SO_PEERCRED` (see `weft_os::peer`).
//!
//! * **Administrators** — uid 0 and the user the daemon runs as (the only
//!   user of a rootless daemon) — may do everything.
//! * **Anyone else who can connect** (a member of the socket's group, or
//!   anyone when the socket is made world-writable) may read the list of
//!   networks, endpoints, routes, peers, published ports and services, and
//!   may attach and detach network namespaces **it owns**: namespaces whose
//!   owning user namespace was created by the caller's uid (`unshare --user
//!   --net`, a rootless container). The host's namespaces and those made by
//!   `ip netns add` belong to root and are refused. Such a caller names its
//!   namespace by `--pid`, by `/proc/PID/ns/net`, or under `/run/netns`
//!   (never by a path of its own, which it could swap after the check), and
//!   may not publish host ports.
//!
//! An ordinary caller's namespace is opened once, here: its owner is read
//! from that descriptor ([`HeldNetns`]), and the attach is made through the
//! same descriptor, so a pid reused (or a `/run/netns` entry replaced)
//! between the check and the attach cannot slip another namespace in.

use std::path::{Path, PathBuf};

use weft_api::{ApiError, ErrorKind, Request};
use weft_os::peer::{netns_owner_uid, HeldNetns, PeerCred};

/// The caller's standing with this daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Admin,
    /// An ordinary user: may act only on namespaces its uid owns.
    User(u32),
}

impl Access {
    /// `caller`'s standing with a daemon running as `daemon_uid`.
    pub fn of(caller: PeerCred, daemon_uid: u32) -> Access {
        if caller.uid == 0 || caller.uid == daemon_uid {
            Access::Admin
        } else {
            Access::User(caller.uid)
        }
    }
}

/// Requests that only read state any user of the socket may see.
fn is_public_read(request: &Request) -> bool {
    matches!(
        request,
        Request::Status
            | Request::NetworkList
            | Request::NetworkInspect { .. }
            | Request::RouteList
            | Request::Endpoints { .. }
            | Request::PeerList
            | Request::UplinkShow
            | Request::PublishList
            | Request::ServiceList
    )
}

/// The `op` of a request, for messages.
fn op_name(request: &Request) -> String {
    serde_json::to_value(request)
        .ok()
        .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "this request".into())
}

fn denied(message: String) -> ApiError {
    ApiError::new(ErrorKind::PermissionDenied, message)
}

/// Checks `request` from a caller with standing `access`. `endpoint_netns`
/// finds the namespace path of an existing endpoint (for `detach`).
///
/// For an ordinary caller's `attach`, returns the namespace it names,
/// opened and checked: the attach must be made through
/// [`HeldNetns::fd_path`] while it is held.
pub fn check(
    access: Access,
    request: &Request,
    endpoint_netns: impl FnOnce(&str, &str) -> Option<String>,
) -> Result<Option<HeldNetns>, ApiError> {
    let Access::User(uid) = access else {
        return Ok(None);
    };
    if is_public_read(request) {
        return Ok(None);
    }
    match request {
        Request::Attach {
            netns,
            pid,
            publish,
            ..
        } => {
            if !publish.is_empty() {
                return Err(denied(format!(
                    "uid {uid} may not publish host ports: only root or the daemon's user may"
                )));
            }
            let held = match (netns, pid) {
                (Some(n), None) => {
                    let path = user_netns_path(n)?;
                    HeldNetns::open(&path).map_err(|e| cannot_open(&path, e))?
                }
                (None, Some(pid)) => HeldNetns::of_pid(*pid)
                    .map_err(|e| cannot_open(&weft_os::netns_path_for_pid(*pid), e))?,
                // Let the control plane say what is wrong with the request.
                _ => return Ok(None),
            };
            if held.owner_uid != uid {
                return Err(not_yours(uid, held.owner_uid, held.path()));
            }
            Ok(Some(held))
        }
        Request::Detach { network, endpoint } => match endpoint_netns(network, endpoint) {
            Some(path) => check_owned(uid, Path::new(&path)).map(|()| None),
            // Not found: the control plane says so.
            None => Ok(None),
        },
        other => Err(denied(format!(
            "`{}` needs root or the daemon's user; uid {uid} may only list state and \
             attach or detach network namespaces it owns (see docs/api.md, \"Permissions\")",
            op_name(other)
        ))),
    }
}

/// The path of a namespace an ordinary user names: a name under
/// `/run/netns`, `/proc/PID/ns/net` (or a thread's), or a path under
/// `/run/netns` — all places the user cannot redirect after the check.
fn user_netns_path(netns: &str) -> Result<PathBuf, ApiError> {
    if !netns.starts_with('/') {
        return weft_os::netns_path_for_name(netns)
            .map_err(|e| ApiError::new(ErrorKind::InvalidArgument, e.to_string()));
    }
    let parts: Vec<&str> = netns.split('/').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let plain = |s: &str| !s.is_empty() && s != "." && s != "..";
    let ok = match parts.as_slice() {
        ["", "proc", pid, "ns", "net"] => digits(pid),
        ["", "proc", pid, "task", tid, "ns", "net"] => digits(pid) && digits(tid),
        ["", "run", "netns", name] | ["", "var", "run", "netns", name] => plain(name),
        _ => false,
    };
    if ok {
        Ok(PathBuf::from(netns))
    } else {
        Err(denied(format!(
            "only root or the daemon's user may attach a namespace by the path `{}`: \
             name it by --pid PID or /proc/PID/ns/net instead",
            weft_api::excerpt(netns)
        )))
    }
}

fn not_yours(uid: u32, owner: u32, path: &Path) -> ApiError {
    denied(format!(
        "network namespace {} belongs to uid {owner}, not to you (uid {uid}): attach a \
         namespace of your own (for example one made by `unshare --user --map-root-user \
         --net`), or ask root",
        path.display()
    ))
}

/// Why an ordinary caller's namespace could not be opened for the check.
fn cannot_open(path: &Path, e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::new(
            ErrorKind::NotFound,
            format!("network namespace {} not found: {e}", path.display()),
        ),
        std::io::ErrorKind::InvalidInput => {
            ApiError::new(ErrorKind::InvalidArgument, e.to_string())
        }
        _ => denied(format!(
            "cannot tell who owns network namespace {} ({e}): refused",
            path.display()
        )),
    }
}

/// Refuses unless the namespace at `path` belongs to `uid`; a namespace
/// that cannot be found is left to the control plane to report.
fn check_owned(uid: u32, path: &Path) -> Result<(), ApiError> {
    match netns_owner_uid(path) {
        Ok(owner) if owner == uid => Ok(()),
        Ok(owner) => Err(not_yours(uid, owner, path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || path_missing(path) => Ok(()),
        Err(e) => Err(denied(format!(
            "cannot tell who owns network namespace {} ({e}): refused",
            path.display()
        ))),
    }
}

fn path_missing(path: &Path) -> bool {
    !path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(uid: u32) -> PeerCred {
        PeerCred {
            pid: 1,
            uid,
            gid: uid,
        }
    }

    #[test]
    fn standing() {
        assert_eq!(Access::of(cred(0), 0), Access::Admin);
        assert_eq!(Access::of(cred(1000), 1000), Access::Admin);
        assert_eq!(Access::of(cred(0), 1000), Access::Admin);
        assert_eq!(Access::of(cred(65534), 0), Access::User(65534));
    }

    #[test]
    fn ordinary_users_may_read_but_not_configure() {
        let user = Access::User(65534);
        let none = |_: &str, _: &str| None;
        assert!(check(user, &Request::NetworkList, none).is_ok());
        let create = Request::NetworkCreate {
            name: "a".into(),
            subnet: "10.0.0.0/24".into(),
            gateway: None,
            mtu: None,
            internal: false,
            vni: None,
            ip_range: None,
            nat_filtering: None,
            nat_max_flows: None,
            nat_max_ports: None,
        };
        let e = check(user, &create, none).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert!(e.message.contains("`network_create`"), "{}", e.message);
        assert!(check(Access::Admin, &create, none).is_ok());
        assert!(check(user, &Request::Stats, none).is_err());
    }

    #[test]
    fn user_paths() {
        assert!(user_netns_path("/proc/12/ns/net").is_ok());
        assert!(user_netns_path("/proc/12/task/13/ns/net").is_ok());
        assert!(user_netns_path("/run/netns/x").is_ok());
        for bad in [
            "/tmp/x",
            "/proc/self/ns/net",
            "/run/netns/../../tmp/x",
            "/proc/1/ns/../ns/net",
        ] {
            let e = user_netns_path(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::PermissionDenied, "{bad}");
        }
    }

    #[test]
    fn the_hosts_namespace_is_not_a_users() {
        // The host's network namespace belongs to uid 0 (when the tests run
        // in the host's user namespace, as CI does).
        if netns_owner_uid(Path::new("/proc/1/ns/net")).ok() != Some(0) {
            return;
        }
        let e = check_owned(65534, Path::new("/proc/1/ns/net")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert!(e.message.contains("belongs to uid 0"), "{}", e.message);
    }
}
