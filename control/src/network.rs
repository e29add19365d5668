//! Networks and the routes between them: `network create`, `network rm`,
//! `route allow` and `route deny`.
//!
//! A network is a subnet with a gateway (the first host address unless
//! given) that answers ARP and ping and routes, per RFC 1812, only to the
//! networks a route allows. Overlay networks (with a VNI, RFC 7348) get one
//! tunnel port per peer.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::ipam::{parse_addr, parse_subnet, Pool, SubnetExt};
use weft_api::{ErrorKind, NatFiltering, NatSettings, NetworkInfo, RouteInfo};
use weft_datapath::Change;
use weft_nat::conntrack::HostLimits;
use weft_packet::{stable_hash, MacAddr};
use weft_switch::switch::{Filtering, NetworkConfig, NetworkNat};
use weft_switch::NetworkId;
use weft_vtep::Vni;

use crate::error::{check_name, datapath_error, err, ipam_error, ApiResult};
use crate::ports::{Datapath, Provisioner};
use crate::state::{Control, Network, DEFAULT_MTU, MAX_MTU, MIN_MTU};

/// What `network create` asks for, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: String,
    pub gateway: Option<String>,
    pub mtu: Option<u32>,
    pub internal: bool,
    pub vni: Option<u32>,
    pub ip_range: Option<String>,
    pub nat_filtering: Option<weft_api::NatFiltering>,
    pub nat_max_flows: Option<u32>,
    pub nat_max_ports: Option<u32>,
}

impl<D: Datapath, P: Provisioner> Control<D, P> {
    /// `network create`: creates the network and saves it.
    pub fn network_create(&mut self, spec: NetworkSpec) -> ApiResult<NetworkInfo> {
        let name = spec.name.clone();
        let info = self.create_network(spec)?;
        if let Err(e) = self.save() {
            let _ = self.remove_network_now(&name);
            return Err(e);
        }
        if self.cluster_wide(&name) {
            let published = self.network_record(&name).and_then(|rec| {
                self.cluster
                    .as_ref()
                    .expect("cluster_wide checked")
                    .publish_network(&rec)
            });
            if let Err(e) = published {
                let _ = self.remove_network_now(&name);
                let _ = self.save();
                return Err(e);
            }
        }
        tracing::info!(network = %name, subnet = %info.subnet, vni = ?info.vni, "network created");
        Ok(info)
    }

    /// `network rm`: removes a network without endpoints or services.
    pub fn network_remove(&mut self, name: &str) -> ApiResult<NetworkInfo> {
        let net = self.network(name)?;
        if !net.endpoints.is_empty() {
            let names: Vec<&str> = net.endpoints.keys().map(String::as_str).collect();
            return Err(err(
                ErrorKind::Conflict,
                format!(
                    "network `{name}` still has {} endpoint(s) ({}): detach them first with `weft detach {name} ENDPOINT`",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
        let services: Vec<String> = self
            .nat
            .services_of(name)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if !services.is_empty() {
            return Err(err(
                ErrorKind::Conflict,
                format!(
                    "network `{name}` still has service(s) {}: remove them first with `weft service rm NAME`",
                    services.join(", ")
                ),
            ));
        }
        if self.cluster_wide(name) {
            // Refused while any host has endpoints on it.
            self.cluster
                .as_ref()
                .expect("cluster_wide checked")
                .remove_network(name)?;
            self.remote.endpoints.retain(|(n, _), _| n != name);
        }
        let spec = self.spec_of(name)?;
        let routes = self.routes_of(name);
        let info = self.remove_network_now(name)?;
        if let Err(e) = self.save() {
            // Put it back as it was, routes included.
            if self.create_network(spec).is_ok() {
                for other in routes {
                    let _ = self.set_route(name, &other, true);
                }
            }
            return Err(e);
        }
        tracing::info!(network = %name, "network removed");
        Ok(info)
    }

    /// `route allow` / `route deny`: lets two networks route to each other,
    /// or stops them, and saves it.
    pub fn route_set(&mut self, a: &str, b: &str, allowed: bool) -> ApiResult<RouteInfo> {
        let was = self.routes.contains(&route_key(a, b));
        self.set_route(a, b, allowed)?;
        if let Err(e) = self.save() {
            let _ = self.set_route(a, b, was);
            return Err(e);
        }
        Ok(RouteInfo {
            a: a.to_string(),
            b: b.to_string(),
        })
    }

    /// The spec that would create network `name` again as it is.
    fn spec_of(&self, name: &str) -> ApiResult<NetworkSpec> {
        let net = self.network(name)?;
        Ok(NetworkSpec {
            name: net.name.clone(),
            subnet: net.subnet.to_string(),
            gateway: Some(net.gateway.to_string()),
            mtu: Some(net.mtu),
            internal: net.internal,
            vni: net.vni.map(Vni::get),
            ip_range: net.pool.range().map(|r| r.to_string()),
            nat_filtering: Some(net.nat.filtering),
            nat_max_flows: Some(net.nat.max_flows),
            nat_max_ports: Some(net.nat.max_ports),
        })
    }

    /// Creates a network in the registry and the datapath (not saved).
    pub(crate) fn create_network(&mut self, spec: NetworkSpec) -> ApiResult<NetworkInfo> {
        let nat = nat_settings(&spec)?;
        let name = spec.name;
        check_name("network", &name)?;
        if self.networks.contains_key(&name) {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!("a network named `{name}` already exists: pick another name or remove it with `weft network rm {name}`"),
            ));
        }
        let subnet = parse_subnet(&spec.subnet).map_err(ipam_error)?;
        if let Some(other) = self.networks.values().find(|n| n.subnet.overlaps(&subnet)) {
            return Err(err(
                ErrorKind::Conflict,
                format!(
                    "subnet {subnet} overlaps network `{}` ({}): pick a subnet that does not",
                    other.name, other.subnet
                ),
            ));
        }
        let gateway = match &spec.gateway {
            Some(text) => {
                let ip = parse_addr(text).map_err(ipam_error)?;
                if !subnet.is_host(ip) {
                    return Err(err(
                        ErrorKind::InvalidArgument,
                        format!("gateway {ip} is not a host address of {subnet}: pick one inside the subnet"),
                    ));
                }
                ip
            }
            None => subnet.first_host(),
        };
        let vni = match spec.vni {
            Some(v) => Some(self.check_new_vni(v)?),
            None => None,
        };
        let default_mtu = if vni.is_some() {
            self.overlay.max_inner_ip_len()
        } else {
            DEFAULT_MTU
        };
        let mtu = spec.mtu.unwrap_or(default_mtu);
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("MTU {mtu} is out of range: use {MIN_MTU} to {MAX_MTU}"),
            ));
        }
        let mut pool = match &spec.ip_range {
            Some(text) => {
                let range = parse_subnet(text).map_err(ipam_error)?;
                Pool::with_range(subnet, range).map_err(ipam_error)?
            }
            None => Pool::new(subnet),
        };
        pool.reserve(gateway).map_err(ipam_error)?;
        if vni.is_some() {
            // Overlay networks need the VTEP socket; bind it before any
            // state changes so a refusal leaves nothing behind.
            self.ensure_vtep()?;
        }
        let id = NetworkId(self.next_network);
        let gateway_mac = match vni {
            // Per host, so that replies to this host's gateway cross the
            // overlay to it rather than stopping at the asker's own.
            Some(v) => MacAddr::local_from_seed(stable_hash(&[
                "gateway",
                &v.get().to_string(),
                &self
                    .overlay
                    .vtep_ip()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            ])),
            None => MacAddr::local_from_seed(stable_hash(&["gateway", &name])),
        };
        // The network, its flag and its tunnels reach the datapath as one
        // batch.
        let mut changes = vec![Change::AddNetwork(NetworkConfig {
            id,
            subnet,
            gateway_ip: gateway,
            gateway_mac,
            mtu,
        })];
        if spec.internal {
            changes.push(Change::SetInternal {
                network: id,
                internal: true,
            });
        }
        changes.push(Change::SetNetworkNat {
            network: id,
            nat: network_nat(nat),
        });
        let mut tunnels = BTreeMap::new();
        if let Some(vni) = vni {
            let peers: Vec<Ipv4Addr> = self.overlay.peers.keys().copied().collect();
            for peer in peers {
                let (change, port) = self.tunnel_change(id, vni, peer);
                changes.push(change);
                tunnels.insert(peer, port);
            }
        }
        self.datapath.apply(changes).map_err(datapath_error)?;
        self.next_network += 1;
        let net = Network {
            id,
            name: name.clone(),
            subnet,
            gateway,
            gateway_mac,
            mtu,
            internal: spec.internal,
            nat,
            vni,
            pool,
            endpoints: BTreeMap::new(),
            tunnels,
        };
        self.networks.insert(name.clone(), net);
        Ok(self.networks[&name].info())
    }

    /// Removes a network without endpoints and its tunnels, as one batch
    /// (not saved).
    pub(crate) fn remove_network_now(&mut self, name: &str) -> ApiResult<NetworkInfo> {
        let net = self.network(name)?;
        let id = net.id;
        let mut changes: Vec<Change> = net
            .tunnels
            .values()
            .map(|&port| Change::RemovePort(port))
            .collect();
        changes.push(Change::RemoveNetwork(id));
        self.datapath.apply(changes).map_err(datapath_error)?;
        let net = self.networks.remove(name).expect("looked up above");
        self.routes.retain(|(a, b)| a != name && b != name);
        self.forget_names(id);
        Ok(net.info())
    }

    /// Allows or denies routing between two networks (not saved).
    pub(crate) fn set_route(&mut self, a: &str, b: &str, allowed: bool) -> ApiResult<()> {
        let ida = self.network(a)?.id;
        let idb = self.network(b)?.id;
        if allowed {
            if let Some(net) = [a, b]
                .iter()
                .map(|n| &self.networks[*n])
                .find(|n| n.internal)
            {
                return Err(err(
                    ErrorKind::Conflict,
                    format!(
                        "network `{}` is internal: nothing leaves it through its gateway, so it cannot be routed to `{}`; create it without --internal to route it",
                        net.name,
                        if net.name == a { b } else { a }
                    ),
                ));
            }
        }
        if a == b {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("`{a}` is the same network twice: a route joins two different networks"),
            ));
        }
        self.datapath
            .apply(vec![Change::SetRoute {
                a: ida,
                b: idb,
                allowed,
            }])
            .map_err(datapath_error)?;
        if allowed {
            self.routes.insert(route_key(a, b));
        } else {
            self.routes.remove(&route_key(a, b));
        }
        Ok(())
    }
}

/// How a route is stored: the smaller name first.
fn route_key(a: &str, b: &str) -> (String, String) {
    if a < b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// The datapath's form of a network's NAT settings.
fn network_nat(nat: NatSettings) -> NetworkNat {
    NetworkNat {
        filtering: match nat.filtering {
            NatFiltering::AddressDependent => Filtering::AddressDependent,
            NatFiltering::EndpointIndependent => Filtering::EndpointIndependent,
        },
        limits: HostLimits {
            flows: nat.max_flows,
            ports: nat.max_ports,
        },
    }
}

/// The NAT settings `spec` asks for, checked.
fn nat_settings(spec: &NetworkSpec) -> ApiResult<NatSettings> {
    let mut nat = NatSettings::default();
    if let Some(f) = spec.nat_filtering {
        nat.filtering = f;
    }
    for (value, slot, flag) in [
        (spec.nat_max_flows, &mut nat.max_flows, "--nat-max-flows"),
        (spec.nat_max_ports, &mut nat.max_ports, "--nat-max-ports"),
    ] {
        match value {
            Some(0) => {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    format!("{flag} 0 would refuse every connection: give at least 1"),
                ))
            }
            Some(v) => *slot = v,
            None => {}
        }
    }
    Ok(nat)
}
