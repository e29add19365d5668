//! Starting the control plane from the saved state, and `reset`, which
//! removes everything the saved state describes.
//!
//! Restore order: peers first, then the networks (whose overlay tunnels
//! need the peers), the routes, the uplink, the endpoints with their
//! published ports (their TAPs taken back from the namespaces), and the
//! services (whose backends are endpoints). The restored state is saved
//! again at once, in the current format.

use weft_api::{ErrorKind, ResetInfo};

use crate::dns::NameTables;
use crate::error::{err, ApiResult};
use crate::network::NetworkSpec;
use crate::persist::StateFile;
use crate::ports::{Datapath, Provisioner};
use crate::state::{Control, VxlanSettings};

impl<D: Datapath, P: Provisioner> Control<D, P> {
    /// The control plane with the saved state of `state` applied to the
    /// datapath. A state file that cannot be read or applied is an error
    /// that names the object that failed.
    pub fn restore(
        datapath: D,
        provisioner: P,
        state: StateFile,
        vxlan: VxlanSettings,
        names: NameTables,
    ) -> ApiResult<Self> {
        let saved = state
            .load()
            .map_err(|e| err(ErrorKind::System, e.to_string()))?;
        let mut control = Control::empty(datapath, provisioner, state, vxlan, names);
        let context = |what: String| {
            move |e: weft_api::ApiError| err(e.kind, format!("restoring {what}: {}", e.message))
        };
        for peer in &saved.peers {
            let ip = peer.split(':').next().unwrap_or(peer);
            let remote_csum = saved.remote_csum_peers.iter().any(|p| p == ip);
            control
                .add_peer(peer, remote_csum)
                .map_err(context(format!("peer {peer}")))?;
        }
        for net in saved.networks {
            let name = net.name.clone();
            control
                .create_network(NetworkSpec {
                    name: net.name,
                    subnet: net.subnet,
                    gateway: Some(net.gateway),
                    mtu: Some(net.mtu),
                    internal: net.internal,
                    vni: net.vni,
                    ip_range: net.ip_range,
                    nat_filtering: Some(net.nat.filtering),
                    nat_max_flows: Some(net.nat.max_flows),
                    nat_max_ports: Some(net.nat.max_ports),
                })
                .map_err(context(format!("network {name}")))?;
        }
        for (a, b) in saved.routes {
            control
                .set_route(&a, &b, true)
                .map_err(context(format!("route {a} <-> {b}")))?;
        }
        if let Some(u) = saved.uplink {
            control
                .uplink_set_kind(&u.interface, &u.ip, u.gateway.as_deref(), u.sockets)
                .map_err(context(if u.sockets {
                    "the socket uplink".to_string()
                } else {
                    format!("the uplink on {}", u.interface)
                }))?;
        }
        for ep in saved.endpoints {
            let what = format!("endpoint {} of network {}", ep.name, ep.network);
            control.restore_endpoint(ep).map_err(context(what))?;
        }
        for s in saved.services {
            // A backend forgotten with its namespace is left out.
            let backends: Vec<String> = s
                .backends
                .iter()
                .filter(|b| control.endpoint_ip(&s.network, b).is_ok())
                .cloned()
                .collect();
            control
                .service_create(&s.name, &s.network, &s.vip, &s.port, &backends, Some(&s.lb))
                .map_err(context(format!("service {}", s.name)))?;
        }
        control.save()?;
        Ok(control)
    }

    /// `reset`: removes everything weft made, in the reverse of the
    /// restore order (services, endpoints and their TAPs, the uplink,
    /// networks and their routes, peers), and saves the empty state. A
    /// step that fails stops the reset with what is left in place.
    pub fn reset(&mut self) -> ApiResult<ResetInfo> {
        let mut info = ResetInfo::default();
        let services: Vec<String> = self.nat.services.keys().cloned().collect();
        for name in services {
            self.service_remove(&name)?;
            info.services += 1;
        }
        let endpoints: Vec<(String, String)> = self
            .networks
            .values()
            .flat_map(|n| n.endpoints.keys().map(|e| (n.name.clone(), e.clone())))
            .collect();
        for (network, endpoint) in endpoints {
            self.detach(&network, &endpoint)?;
            info.endpoints += 1;
        }
        if self.nat.uplink.is_some() {
            self.uplink_remove()?;
            info.uplink = true;
        }
        let networks: Vec<String> = self.networks.keys().cloned().collect();
        for name in networks {
            self.remove_network_now(&name)?;
            info.networks += 1;
        }
        let peers: Vec<String> = self
            .overlay
            .peers
            .values()
            .map(|p| p.addr.ip().to_string())
            .collect();
        for peer in peers {
            self.remove_peer(&peer)?;
            info.peers += 1;
        }
        self.save()?;
        tracing::info!(?info, "reset: everything weft made was removed");
        Ok(info)
    }
}
