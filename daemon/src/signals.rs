//! SIGINT and SIGTERM, received synchronously on a dedicated thread.
//!
//! The signals are blocked in every thread (the mask is inherited, so this
//! must run before any thread starts) and taken with `sigwait`, so that no
//! handler runs at an arbitrary point of the datapath.

use nix::sys::signal::{SigSet, Signal};

/// The blocked stop signals, ready to be waited for.
pub struct StopSignals {
    set: SigSet,
}

/// Blocks SIGINT and SIGTERM in the calling thread (and the threads it will
/// start).
pub fn block_stop_signals() -> nix::Result<StopSignals> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()?;
    Ok(StopSignals { set })
}

impl StopSignals {
    /// Waits for SIGINT or SIGTERM and returns its name.
    pub fn wait(&self) -> &'static str {
        loop {
            match self.set.wait() {
                Ok(Signal::SIGINT) => return "SIGINT",
                Ok(_) => return "SIGTERM",
                Err(_) => continue,
            }
        }
    }
}
