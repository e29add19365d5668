//! The kernel's counters of a link inside another network namespace: how
//! `weft stats` shows what happened to an endpoint's frames on the kernel's
//! side of its TAP device (`tx_dropped`: frames the endpoint sent that tun's
//! queue had no room for because weft had not read them yet; `rx_dropped`:
//! frames weft wrote that the kernel then dropped).
//!
//! [`link_stats_in`] opens the namespace by the path it was attached by,
//! checks that the path still leads to the same namespace (device and
//! inode, as the daemon's reaper does), and sends one `RTM_GETLINK` from a
//! short-lived thread that entered it through the descriptor just opened.
//! Nothing here runs on, or waits for, the datapath; the kernel sums its
//! per-CPU counters when asked, so the packets themselves pay nothing.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::netlink::{LinkStats, Netlink, NetlinkError};
use crate::netns::run_in_netns;
use crate::peer::HeldNetns;

/// Why a link's counters could not be read.
#[derive(Debug, Error)]
pub enum LinkStatsError {
    /// Nothing is at the namespace's path any more.
    #[error("namespace {} is gone", .path.display())]
    NamespaceGone { path: PathBuf },
    /// The path leads to another namespace than the one attached.
    #[error("{} is now another namespace", .path.display())]
    NamespaceReplaced { path: PathBuf },
    /// The namespace is there but could not be opened or entered.
    #[error("cannot enter namespace {}: {reason}", .path.display())]
    Enter { path: PathBuf, reason: String },
    /// The namespace has no interface of that name.
    #[error("namespace {} has no interface {ifname:?}", .path.display())]
    NoLink { path: PathBuf, ifname: String },
    /// The kernel did not answer the request as expected.
    #[error("reading the counters of {ifname:?} in {}", .path.display())]
    Netlink {
        path: PathBuf,
        ifname: String,
        #[source]
        source: NetlinkError,
    },
}

/// The counters of interface `ifname` in the network namespace at `netns`,
/// provided that path still leads to the namespace whose device and inode
/// are `id` (when given).
pub fn link_stats_in(
    netns: &Path,
    id: Option<(u64, u64)>,
    ifname: &str,
) -> Result<LinkStats, LinkStatsError> {
    let path = netns.to_owned();
    let held = match HeldNetns::open(netns) {
        Ok(held) => held,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(LinkStatsError::NamespaceGone { path })
        }
        Err(e) => {
            return Err(LinkStatsError::Enter {
                path,
                reason: e.to_string(),
            })
        }
    };
    if id.is_some_and(|id| id != held.id) {
        return Err(LinkStatsError::NamespaceReplaced { path });
    }
    let name = ifname.to_owned();
    // Through the descriptor just checked: a path replaced meanwhile
    // cannot put another namespace in its place.
    let read = run_in_netns(&held.fd_path(), move || {
        Netlink::open().and_then(|mut nl| nl.link_stats(&name))
    });
    match read {
        Ok(Ok(Some(stats))) => Ok(stats),
        Ok(Ok(None)) => Err(LinkStatsError::NoLink {
            path,
            ifname: ifname.to_owned(),
        }),
        Ok(Err(source)) => Err(LinkStatsError::Netlink {
            path,
            ifname: ifname.to_owned(),
            source,
        }),
        Err(e) => Err(LinkStatsError::Enter {
            path,
            reason: crate::error_chain(&e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testns::TestNs;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    #[test]
    fn reads_loopback_counters_and_names_what_is_missing() {
        let Some(ns) = TestNs::new("lstats") else {
            return;
        };
        let meta = std::fs::metadata(ns.path()).unwrap();
        let id = (meta.dev(), meta.ino());
        let before = link_stats_in(ns.path(), Some(id), "lo").expect("lo's counters");
        let up = Command::new("ip")
            .args(["-n", ns.name(), "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        let ping = Command::new("ip")
            .args(["netns", "exec", ns.name(), "ping", "-c", "3", "-i", "0.01"])
            .args(["-W", "1", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(ping.status.success(), "{ping:?}");
        let after = link_stats_in(ns.path(), None, "lo").unwrap();
        // Three echo requests and three replies, each sent and received.
        assert!(
            after.rx_packets >= before.rx_packets + 6,
            "{before:?} -> {after:?}"
        );
        assert!(
            after.tx_packets >= before.tx_packets + 6,
            "{before:?} -> {after:?}"
        );

        let e = link_stats_in(ns.path(), Some(id), "weft-nope0").unwrap_err();
        assert!(matches!(e, LinkStatsError::NoLink { .. }), "{e}");
        assert!(e.to_string().contains("no interface \"weft-nope0\""), "{e}");
        // The same path, but not the namespace that was attached.
        let e = link_stats_in(ns.path(), Some((id.0, id.1 + 1)), "lo").unwrap_err();
        assert!(matches!(e, LinkStatsError::NamespaceReplaced { .. }), "{e}");
        let e = link_stats_in(ns.path(), None, "bad/name").unwrap_err();
        assert!(matches!(e, LinkStatsError::Netlink { .. }), "{e}");
    }

    #[test]
    fn a_namespace_that_is_gone_says_so() {
        let gone = Path::new("/run/netns/weft-t-never-made");
        let e = link_stats_in(gone, None, "eth0").unwrap_err();
        assert!(matches!(e, LinkStatsError::NamespaceGone { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "namespace /run/netns/weft-t-never-made is gone"
        );
        // Not a namespace at all.
        let e = link_stats_in(Path::new("/proc/self/status"), None, "eth0").unwrap_err();
        assert!(matches!(e, LinkStatsError::Enter { .. }), "{e}");
    }
}
