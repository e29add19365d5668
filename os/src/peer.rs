//! Who is on the other end of a Unix socket, and who owns a network
//! namespace: what the daemon needs to decide whether a caller may act on a
//! namespace.
//!
//! * [`peer_credentials`] reads `SO_PEERCRED` (socket(7)): the pid, uid and
//!   gid of the process that connected, as the kernel recorded them at
//!   `connect(2)`; the client cannot forge them.
//! * [`netns_owner_uid`] finds the user namespace that owns a network
//!   namespace (`NS_GET_USERNS`) and the uid that created that user
//!   namespace (`NS_GET_OWNER_UID`), see ioctl_ns(2). A namespace made by
//!   `unshare --user --net` belongs to the user who ran it; one made by
//!   `ip netns add` as root belongs to uid 0.
//! * [`HeldNetns`] closes the gap between checking a namespace and using
//!   it: the namespace file is opened once, its owner is read from that
//!   descriptor, and the descriptor stays open while the namespace is used
//!   through [`HeldNetns::fd_path`]. A pid that is reused meanwhile, or a
//!   `/run/netns` entry replaced, cannot put another namespace in its place.
//!   By pid, a pidfd (pidfd_open(2)) taken before the namespace file is
//!   opened shows the file belongs to that same process: the process was
//!   still alive after the open, so the pid was never reused in between.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::netns::{check_netns_file, netns_path_for_pid, open_ns};

/// `NS_GET_USERNS` from `<linux/nsfs.h>`: `_IO(0xb7, 0x1)`.
const NS_GET_USERNS: libc::Ioctl = 0xb701;
/// `NS_GET_OWNER_UID` from `<linux/nsfs.h>`: `_IO(0xb7, 0x4)`.
const NS_GET_OWNER_UID: libc::Ioctl = 0xb704;

/// The credentials of a connected Unix socket's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// `SO_PEERCRED` of `stream`.
pub fn peer_credentials(stream: &UnixStream) -> io::Result<PeerCred> {
    let cred = getsockopt(stream, PeerCredentials).map_err(io::Error::from)?;
    Ok(PeerCred {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

/// The uid that owns the user namespace owning the network namespace at
/// `path` (0 for the host's namespaces and every namespace root made).
pub fn netns_owner_uid(path: &Path) -> io::Result<u32> {
    let net = open_ns(path).map_err(|e| io::Error::other(crate::error_chain(&e)))?;
    owner_uid_of(&net)
}

/// The uid owning the user namespace that owns the namespace open as `net`.
fn owner_uid_of(net: &File) -> io::Result<u32> {
    // SAFETY: NS_GET_USERNS takes no argument; it returns a new descriptor
    // (or -1) for the namespace file `net`, which is open during the call.
    let rc = unsafe { libc::ioctl(net.as_raw_fd(), NS_GET_USERNS) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl succeeded, so `rc` is a new descriptor we own.
    let user = unsafe { File::from_raw_fd(rc) };
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer, which
    // points at a live local of that type; `user` is open during the call.
    let rc = unsafe {
        libc::ioctl(
            user.as_raw_fd(),
            NS_GET_OWNER_UID,
            &mut uid as *mut libc::uid_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uid)
}

/// A network namespace opened once and kept open: checked on this
/// descriptor, and used through it.
#[derive(Debug)]
pub struct HeldNetns {
    file: File,
    /// The path it was opened by.
    path: PathBuf,
    /// The uid owning the namespace's user namespace.
    pub owner_uid: u32,
    /// Device and inode of the namespace (the same under any path).
    pub id: (u64, u64),
}

impl HeldNetns {
    /// Opens the network namespace at `path`.
    ///
    /// `ErrorKind::NotFound` when there is nothing there; an error naming
    /// the reason when it is not a network namespace.
    pub fn open(path: &Path) -> io::Result<HeldNetns> {
        let file = open_ns(path).map_err(netns_io_error)?;
        HeldNetns::of_file(file, path)
    }

    /// Opens the network namespace of process `pid`, making sure through a
    /// pidfd that the namespace file opened is that process's, not a
    /// later process's that was given the same pid.
    pub fn of_pid(pid: u32) -> io::Result<HeldNetns> {
        let path = netns_path_for_pid(pid);
        let raw_pid = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::NotFound, format!("no process {pid}")))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor or -1; no memory is passed.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
        let pidfd = match rc {
            // Kernels before 5.3: fall back to the path alone.
            -1 if io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) => None,
            -1 if io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no process {pid}"),
                ))
            }
            -1 => return Err(io::Error::last_os_error()),
            // SAFETY: the call succeeded, so `rc` is a new descriptor we own.
            fd => Some(unsafe { File::from_raw_fd(fd as i32) }),
        };
        let held = HeldNetns::open(&path)?;
        if let Some(pidfd) = pidfd {
            // SAFETY: signal 0 only checks that the process the pidfd
            // refers to still exists; null info and zero flags are allowed.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    0,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            if rc != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ESRCH) {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("process {pid} exited while its namespace was being opened"),
                    ));
                }
                // EPERM: another user's process; it was alive all the same.
                if e.raw_os_error() != Some(libc::EPERM) {
                    return Err(e);
                }
            }
        }
        Ok(held)
    }

    fn of_file(file: File, path: &Path) -> io::Result<HeldNetns> {
        check_netns_file(&file, path).map_err(netns_io_error)?;
        let owner_uid = owner_uid_of(&file)?;
        let meta = file.metadata()?;
        Ok(HeldNetns {
            file,
            path: path.to_owned(),
            owner_uid,
            id: (meta.dev(), meta.ino()),
        })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path that leads to exactly this namespace for as long as `self`
    /// is alive, from this process and from its children of the same user
    /// (`/proc/PID/fd/N` of this process, not `/proc/self`).
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }
}

fn netns_io_error(e: crate::NetnsError) -> io::Error {
    let kind = match &e {
        crate::NetnsError::NotFound { .. } => io::ErrorKind::NotFound,
        crate::NetnsError::Permission { .. } => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::InvalidInput,
    };
    io::Error::new(kind, crate::error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_of_a_socketpair_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_credentials(&a).unwrap();
        assert_eq!(cred.pid, std::process::id() as i32);
        assert_eq!(cred.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(cred.gid, nix::unistd::getegid().as_raw());
    }

    #[test]
    fn own_namespace_owner() {
        // This process's network namespace is owned by whoever made its user
        // namespace: the host's (uid 0) unless the tests run inside one.
        let uid = netns_owner_uid(Path::new("/proc/self/ns/net")).unwrap();
        let in_host_userns = std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
            .unwrap_or(false);
        if in_host_userns {
            assert_eq!(uid, 0);
        }
        assert!(netns_owner_uid(Path::new("/nonexistent/ns")).is_err());
    }

    #[test]
    fn held_namespace_is_the_one_checked() {
        let own = Path::new("/proc/self/ns/net");
        let held = HeldNetns::of_pid(std::process::id()).unwrap();
        assert_eq!(held.owner_uid, netns_owner_uid(own).unwrap());
        let meta = std::fs::metadata(own).unwrap();
        assert_eq!(held.id, (meta.dev(), meta.ino()));
        // The descriptor's path leads to the same namespace, and is one.
        let by_fd = std::fs::metadata(held.fd_path()).unwrap();
        assert_eq!((by_fd.dev(), by_fd.ino()), held.id);
        crate::check_netns(&held.fd_path()).unwrap();
        assert_eq!(
            held.path(),
            Path::new(&format!("/proc/{}/ns/net", std::process::id()))
        );
    }

    #[test]
    fn held_namespace_of_a_process_that_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let e = HeldNetns::of_pid(pid).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let e = HeldNetns::open(Path::new("/nonexistent/ns")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        // Not a namespace at all.
        let e = HeldNetns::open(Path::new("/proc/self/status")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        // A namespace of another type.
        assert!(HeldNetns::open(Path::new("/proc/self/ns/uts")).is_err());
    }
}
