//! Reaping: endpoints whose namespace is gone are detached by the daemon.
//!
//! A TAP descriptor holds a reference to the network namespace it was made
//! in, so a namespace deleted without `detach` (`ip netns del`, a container
//! whose runtime removed its bind mount, a process that exited) never
//! disappears while weft holds its endpoint: the address, the descriptor
//! and `/etc/netns/NAME/resolv.conf` would stay forever. The daemon calls
//! [`Control::reap_gone_endpoints`] every second; it checks that the path
//! each endpoint was attached by still leads to the same namespace (same
//! device and inode) and detaches those it no longer does, exactly as
//! `detach` would.

use weft_api::{EndpointInfo, ErrorKind};

use crate::ports::{Datapath, Provisioner};
use crate::state::Control;

impl<D: Datapath, P: Provisioner> Control<D, P> {
    /// Detaches every endpoint whose namespace is gone: its path no longer
    /// exists, or leads to another namespace. Returns what was detached.
    pub fn reap_gone_endpoints(&mut self) -> Vec<EndpointInfo> {
        let mut gone = Vec::new();
        for net in self.networks.values() {
            for ep in net.endpoints.values() {
                let still_there = match self.provisioner.netns_id(&ep.netns) {
                    Ok(id) => id == ep.netns_id,
                    // Only "not found" means gone; any other error (say, a
                    // permission problem) leaves the endpoint alone.
                    Err(e) => e.kind != ErrorKind::NotFound,
                };
                if !still_there {
                    gone.push((net.name.clone(), ep.name.clone()));
                }
            }
        }
        let mut reaped = Vec::with_capacity(gone.len());
        for (network, endpoint) in gone {
            match self.detach(&network, &endpoint) {
                Ok(info) => {
                    tracing::info!(
                        %network,
                        %endpoint,
                        netns = %info.netns,
                        ip = %info.ip,
                        "namespace gone: endpoint detached"
                    );
                    reaped.push(info);
                }
                Err(e) => tracing::warn!(
                    %network,
                    %endpoint,
                    error = %e.message,
                    "namespace gone, but the endpoint could not be detached"
                ),
            }
        }
        reaped
    }
}
