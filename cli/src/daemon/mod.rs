//! `weft daemon`: the control API server and the datapath it drives.

use std::path::PathBuf;
use std::time::Duration;

/// Options of `weft daemon`, already resolved by the command line.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where to serve the control API.
    pub socket: PathBuf,
    /// Where networks and routes are persisted across restarts.
    pub state_dir: PathBuf,
    /// How long a learned MAC address lives without being seen.
    pub mac_aging: Duration,
}

/// Runs the daemon in the foreground until SIGINT or SIGTERM.
pub fn run(_opts: DaemonOptions) -> anyhow::Result<()> {
    anyhow::bail!("daemon not written yet")
}
