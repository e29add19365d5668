//! Starting the control plane from the saved state: peers first, then the
//! networks (whose overlay tunnels need the peers), then the routes.

use weft_api::ErrorKind;

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
            control
                .add_peer(peer)
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
        Ok(control)
    }
}
