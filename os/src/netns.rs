//! Running code inside another network namespace.
//!
//! Network namespaces are per-thread on Linux, so [`run_in_netns`] never
//! switches the caller's thread: it spawns a short-lived thread, moves that
//! thread into the target namespace with `setns(fd, CLONE_NEWNET)`, runs the
//! closure there and returns its result. Sockets and TAP descriptors created
//! by the closure stay bound to the namespace they were created in and keep
//! working from any thread afterwards.
//!
//! Namespaces are named by path: `/var/run/netns/NAME` for namespaces managed
//! by `ip netns` ([`netns_path_for_name`]) or `/proc/PID/ns/net` for the
//! namespace of a process ([`netns_path_for_pid`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Directory where `ip netns` keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// Errors from the functions in this module.
#[derive(Debug, Error)]
pub enum NetnsError {
    /// The namespace path does not exist.
    #[error(
        "network namespace {} does not exist (see `ip netns list` for the available namespaces)",
        path.display()
    )]
    NotFound {
        /// The path that was looked up.
        path: PathBuf,
        /// The error from `open(2)`.
        #[source]
        source: io::Error,
    },
    /// The path exists but is not a network namespace file.
    #[error("{} is not a network namespace: {reason}", path.display())]
    NotANetns {
        /// The path that was opened.
        path: PathBuf,
        /// What gave it away.
        reason: String,
        /// The error from `setns(2)` or `ioctl(2)`, if one was reported.
        #[source]
        source: Option<io::Error>,
    },
    /// The caller may not open or enter the namespace (needs CAP_SYS_ADMIN).
    #[error(
        "permission denied to {op} network namespace {}: it belongs to another user; \
         run the daemon as root, or attach a namespace this user created \
         (for example with `unshare --user --map-root-user --net CMD`)",
        path.display()
    )]
    Permission {
        /// The namespace path.
        path: PathBuf,
        /// What was being done ("open" or "enter").
        op: &'static str,
        /// The error from the system call.
        #[source]
        source: io::Error,
    },
    /// Any other system error.
    #[error("failed to {op} network namespace {}", path.display())]
    Io {
        /// The namespace path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error from the system call.
        #[source]
        source: io::Error,
    },
    /// The closure passed to [`run_in_netns`] panicked.
    #[error("task running in network namespace {} panicked: {message}", path.display())]
    Panicked {
        /// The namespace path.
        path: PathBuf,
        /// The panic message, if it was a string.
        message: String,
    },
    /// A namespace name cannot be turned into a path.
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

/// `/var/run/netns/NAME`, the path of a namespace created by `ip netns add`.
///
/// Rejects names that are empty, `.` or `..`, or contain `/` or NUL, so the
/// result always names a file directly inside [`NETNS_RUN_DIR`].
pub fn netns_path_for_name(name: &str) -> Result<PathBuf, NetnsError> {
    let reason = if name.is_empty() {
        Some("the name is empty")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not namespace names")
    } else if name.contains('/') {
        Some("the name contains '/'")
    } else if name.contains('\0') {
        Some("the name contains a NUL byte")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetnsError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(Path::new(NETNS_RUN_DIR).join(name)),
    }
}

/// `/proc/PID/ns/net`, the network namespace of process `pid`.
pub fn netns_path_for_pid(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

pub(crate) fn open_ns(path: &Path) -> Result<File, NetnsError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            let path = path.to_owned();
            match source.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => NetnsError::NotFound { path, source },
                Some(libc::EACCES) | Some(libc::EPERM) => NetnsError::Permission {
                    path,
                    op: "open",
                    source,
                },
                _ => NetnsError::Io {
                    path,
                    op: "open",
                    source,
                },
            }
        })
}

/// Checks that `path` exists and is a network namespace, without entering
/// it.
pub fn check_netns(path: &Path) -> Result<(), NetnsError> {
    check_netns_file(&open_ns(path)?, path)
}

/// Checks that the open `file` (opened by `path`) is a network namespace.
pub(crate) fn check_netns_file(file: &File, path: &Path) -> Result<(), NetnsError> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the
    // descriptor, which is open for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if rc < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) => NetnsError::NotANetns {
                path: path.to_owned(),
                reason: "it is not a namespace file".to_owned(),
                source: Some(source),
            },
            _ => NetnsError::Io {
                path: path.to_owned(),
                op: "query the type of",
                source,
            },
        });
    }
    if rc != libc::CLONE_NEWNET {
        return Err(NetnsError::NotANetns {
            path: path.to_owned(),
            reason: format!("it is a namespace of another type (CLONE_* {rc:#x})"),
            source: None,
        });
    }
    Ok(())
}

/// Runs `f` on a dedicated thread that has entered the network namespace at
/// `ns`, and returns its result.
///
/// The calling thread never changes namespace. A panic in `f` is caught and
/// reported as [`NetnsError::Panicked`].
pub fn run_in_netns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let file = open_ns(ns)?;
    let path = ns.to_owned();
    let thread_path = path.clone();
    let handle = std::thread::Builder::new()
        .name("weft-netns".to_owned())
        .spawn(move || -> Result<T, NetnsError> {
            // SAFETY: `file` is an open descriptor owned by this closure; setns
            // only affects the current (dedicated, short-lived) thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc < 0 {
                let source = io::Error::last_os_error();
                let path = thread_path;
                return Err(match source.raw_os_error() {
                    Some(libc::EINVAL) => NetnsError::NotANetns {
                        path,
                        reason: "setns(CLONE_NEWNET) rejected it".to_owned(),
                        source: Some(source),
                    },
                    Some(libc::EPERM) => NetnsError::Permission {
                        path,
                        op: "enter",
                        source,
                    },
                    _ => NetnsError::Io {
                        path,
                        op: "enter",
                        source,
                    },
                });
            }
            drop(file);
            Ok(f())
        })
        .map_err(|source| NetnsError::Io {
            path: path.clone(),
            op: "spawn a thread for",
            source,
        })?;
    match handle.join() {
        Ok(result) => result,
        Err(payload) => {
            let message = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_owned()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "non-string panic payload".to_owned()
            };
            Err(NetnsError::Panicked { path, message })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testns::{is_root, TestNs};

    fn current_netns_inode() -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    #[test]
    fn path_helpers() {
        assert_eq!(
            netns_path_for_name("blue").unwrap(),
            PathBuf::from("/var/run/netns/blue")
        );
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(
                matches!(
                    netns_path_for_name(bad),
                    Err(NetnsError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(netns_path_for_pid(42), PathBuf::from("/proc/42/ns/net"));
    }

    #[test]
    fn missing_path_is_not_found() {
        let path = Path::new("/var/run/netns/weft-definitely-missing");
        let err = run_in_netns(path, || ()).unwrap_err();
        assert!(matches!(err, NetnsError::NotFound { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("weft-definitely-missing"), "{msg}");
        assert!(msg.contains("ip netns list"), "{msg}");
        assert!(matches!(
            check_netns(path),
            Err(NetnsError::NotFound { .. })
        ));
    }

    #[test]
    fn regular_file_is_not_a_netns() {
        if !is_root() {
            eprintln!("skipping regular_file_is_not_a_netns: needs root");
            return;
        }
        let path = Path::new("/etc/hostname");
        let err = run_in_netns(path, || ()).unwrap_err();
        assert!(matches!(err, NetnsError::NotANetns { .. }), "{err:?}");
        assert!(err.to_string().contains("/etc/hostname"));
        let err = check_netns(path).unwrap_err();
        assert!(matches!(err, NetnsError::NotANetns { .. }), "{err:?}");
    }

    #[test]
    fn other_namespace_type_is_not_a_netns() {
        let err = check_netns(Path::new("/proc/self/ns/uts")).unwrap_err();
        assert!(matches!(err, NetnsError::NotANetns { .. }), "{err:?}");
        check_netns(&netns_path_for_pid(std::process::id())).expect("own netns");
    }

    #[test]
    fn runs_in_the_namespace_and_returns_the_value() {
        let Some(ns) = TestNs::new("netns-run") else {
            return;
        };
        check_netns(ns.path()).expect("check_netns");
        let before = current_netns_inode();
        let inside = run_in_netns(ns.path(), current_netns_inode).unwrap();
        assert_ne!(inside, before, "closure did not run in the namespace");
        assert_eq!(current_netns_inode(), before, "caller's namespace changed");
        let name = run_in_netns(ns.path(), || {
            std::thread::current().name().map(str::to_owned)
        })
        .unwrap();
        assert_eq!(name.as_deref(), Some("weft-netns"));
    }

    #[test]
    fn panic_is_reported_as_error() {
        let Some(ns) = TestNs::new("netns-panic") else {
            return;
        };
        let err = run_in_netns(ns.path(), || -> u32 { panic!("boom {}", 7) }).unwrap_err();
        match err {
            NetnsError::Panicked { message, .. } => assert_eq!(message, "boom 7"),
            other => panic!("expected Panicked, got {other:?}"),
        }
    }
}
