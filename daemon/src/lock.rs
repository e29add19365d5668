//! One daemon per state directory and per socket: an exclusive `flock(2)`
//! on `STATE_DIR/lock` and on `SOCKET.lock`, held for the daemon's life.
//!
//! The kernel drops a lock when its holder dies, however it dies, so a lock
//! file left by a killed daemon never blocks the next one, and a socket
//! file is only ever removed (as stale) by the holder of its lock.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another weft daemon is running with {what} {} (it holds {}): stop it first, or give this one its own --state-dir and --socket", target.display(), lock.display())]
    Held {
        what: &'static str,
        target: PathBuf,
        lock: PathBuf,
    },
    #[error("cannot lock {}: {source}", lock.display())]
    Io {
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held locks; dropping them (or the process ending) releases them.
#[derive(Debug)]
pub struct DaemonLock {
    _locks: Vec<Flock<File>>,
}

impl DaemonLock {
    /// Locks `state_dir/lock` and `socket.lock`.
    pub fn acquire(state_dir: &Path, socket: &Path) -> Result<DaemonLock, LockError> {
        let mut socket_lock = socket.as_os_str().to_owned();
        socket_lock.push(".lock");
        let locks = vec![
            lock_file("state directory", state_dir, &state_dir.join("lock"))?,
            lock_file("socket", socket, Path::new(&socket_lock))?,
        ];
        Ok(DaemonLock { _locks: locks })
    }
}

fn lock_file(what: &'static str, target: &Path, lock: &Path) -> Result<Flock<File>, LockError> {
    let io = |source| LockError::Io {
        lock: lock.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .map_err(io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(locked),
        Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Held {
            what,
            target: target.to_path_buf(),
            lock: lock.to_path_buf(),
        }),
        Err((_, errno)) => Err(io(errno.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("weft-t{}-lock", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("weft.sock");
        let first = DaemonLock::acquire(&dir, &socket).unwrap();
        let e = DaemonLock::acquire(&dir, &socket).unwrap_err();
        assert!(
            matches!(
                e,
                LockError::Held {
                    what: "state directory",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("stop it first"), "{e}");
        // Another state directory, the same socket: refused too.
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        let e = DaemonLock::acquire(&other, &socket).unwrap_err();
        assert!(matches!(e, LockError::Held { what: "socket", .. }), "{e}");
        drop(first);
        DaemonLock::acquire(&dir, &socket).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
