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

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::netns::open_ns;

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
}
