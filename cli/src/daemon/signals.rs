//! SIGINT and SIGTERM, received synchronously on a dedicated thread.
//!
//! The signals are blocked in every thread (the mask is inherited, so this
//! must run before any thread starts) and taken with `sigwait`, so that no
//! handler runs at an arbitrary point of the datapath.

use std::io;

/// The blocked stop signals, ready to be waited for.
pub struct StopSignals {
    set: libc::sigset_t,
}

// SAFETY: a sigset_t is plain data; waiting on it from another thread is what
// it is for.
unsafe impl Send for StopSignals {}

/// Blocks SIGINT and SIGTERM in the calling thread (and the threads it will
/// start).
pub fn block_stop_signals() -> io::Result<StopSignals> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    // SAFETY: `set` is initialised; the old mask is not wanted (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(StopSignals { set })
}

impl StopSignals {
    /// Waits for SIGINT or SIGTERM and returns its name.
    pub fn wait(&self) -> &'static str {
        loop {
            let mut signal: libc::c_int = 0;
            // SAFETY: `self.set` is an initialised sigset_t and `signal` a
            // valid out pointer.
            let rc = unsafe { libc::sigwait(&self.set, &mut signal) };
            if rc == 0 {
                return match signal {
                    libc::SIGINT => "SIGINT",
                    _ => "SIGTERM",
                };
            }
        }
    }
}
