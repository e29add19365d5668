//! The control plane's registry: networks with their endpoints and tunnels,
//! routes, the overlay's peers, the NAT's uplink, published ports and
//! services, and the lookups every operation shares.
//!
//! The operations that change it live beside this module (`network`,
//! `endpoint`, `overlay`, `nat`); each validates the whole request before it
//! changes anything and undoes its own earlier steps when a later one fails,
//! so a refused request leaves the registry, the datapath and the
//! namespaces as they were.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;

use crate::ipam::Pool;
use ipnet::Ipv4Net;
use weft_api::{ApiError, EndpointInfo, ErrorKind, NetworkInfo, PortStats};
use weft_nat::Protocol;
use weft_packet::MacAddr;
use weft_switch::counters::PortCounters;
use weft_switch::switch::LoadBalance;
use weft_switch::{NetworkId, PortId};
use weft_vtep::Vni;

use crate::cluster::{ClusterStore, Remote};
use crate::dns::{table_for, NameTables};
use crate::error::{err, in_network, ipam_error, ApiResult};
use crate::persist::{
    SavedEndpoint, SavedNetwork, SavedService, SavedState, SavedUplink, StateFile,
};
use crate::ports::{Datapath, Provisioner};

/// Default MTU of a network's interfaces (Ethernet).
pub const DEFAULT_MTU: u32 = 1500;
/// Smallest MTU an IPv4 link may have (RFC 791).
pub const MIN_MTU: u32 = 68;
/// Largest MTU a TAP device accepts.
pub const MAX_MTU: u32 = 65521;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers
/// (RFC 7348 §5).
pub const VXLAN_OVERHEAD: u32 = 50;

/// One attached endpoint: a TAP device in a namespace.
pub struct Endpoint {
    pub name: String,
    /// As the user named it: `/var/run/netns/NAME`, `/proc/PID/ns/net` or
    /// the path given.
    pub netns: PathBuf,
    /// Device and inode of the namespace, to recognise it under any path.
    pub netns_id: (u64, u64),
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub port: PortId,
    pub counters: Arc<PortCounters>,
    /// Extra DNS names.
    pub aliases: Vec<String>,
    /// The resolv.conf weft wrote for the namespace, to remove on detach.
    pub resolv_conf: Option<PathBuf>,
    /// Who the endpoint belongs to, as the client said on attach.
    pub owner: Option<weft_api::EndpointOwner>,
    /// Whether attach set the namespace's default route via the gateway.
    pub default_route: bool,
}

/// One network: a subnet, its gateway, its address pool and endpoints.
pub struct Network {
    pub id: NetworkId,
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub gateway_mac: MacAddr,
    pub mtu: u32,
    pub internal: bool,
    /// NAT behaviour.
    pub nat: weft_api::NatSettings,
    /// Set for overlay networks.
    pub vni: Option<Vni>,
    pub pool: Pool,
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Tunnel ports of an overlay network, by peer address.
    pub tunnels: BTreeMap<Ipv4Addr, PortId>,
}

impl Network {
    pub fn info(&self) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            subnet: self.subnet,
            gateway: self.gateway,
            gateway_mac: self.gateway_mac.to_string(),
            mtu: self.mtu,
            internal: self.internal,
            vni: self.vni.map(Vni::get),
            ip_range: self.pool.range(),
            endpoints: self.endpoints.len(),
            free_addresses: self.pool.free_count(),
            nat: self.nat,
        }
    }

    pub fn endpoint_info(&self, ep: &Endpoint) -> EndpointInfo {
        EndpointInfo {
            name: ep.name.clone(),
            network: self.name.clone(),
            netns: ep.netns.display().to_string(),
            ifname: ep.ifname.clone(),
            ip: weft_api::Ipv4Net::new(ep.ip, self.subnet.prefix_len()).expect("a valid prefix"),
            mac: ep.mac.to_string(),
            port: ep.port.0,
            owner: ep.owner.clone(),
        }
    }

    /// Checks that `vip` can become a service VIP here.
    pub fn check_vip(&self, vip: Ipv4Addr) -> ApiResult<()> {
        if vip == self.gateway {
            return Err(err(
                ErrorKind::Conflict,
                format!(
                    "{vip} is the gateway of `{}`: pick a free address for the VIP",
                    self.name
                ),
            ));
        }
        self.pool
            .check(vip)
            .map_err(|e| in_network(ipam_error(e), &self.name))
    }

    pub fn mac_in_use(&self, mac: MacAddr) -> bool {
        mac == self.gateway_mac || self.endpoints.values().any(|e| e.mac == mac)
    }

    /// The saved form of the network.
    fn saved(&self) -> SavedNetwork {
        SavedNetwork {
            name: self.name.clone(),
            subnet: self.subnet.to_string(),
            gateway: self.gateway.to_string(),
            mtu: self.mtu,
            internal: self.internal,
            vni: self.vni.map(Vni::get),
            ip_range: self.pool.range().map(|r| r.to_string()),
            nat: self.nat,
        }
    }
}

/// The daemon's VXLAN options.
#[derive(Debug, Clone, Copy)]
pub struct VxlanSettings {
    pub listen: SocketAddrV4,
    /// The address peers reach this host at, if known.
    pub vtep_ip: Option<Ipv4Addr>,
    /// MTU of the underlay network.
    pub underlay_mtu: u32,
}

/// A remote VTEP.
pub struct Peer {
    pub addr: SocketAddrV4,
    /// Send to it with remote checksum offload.
    pub remote_csum: bool,
    pub counters: Arc<PortCounters>,
}

/// Overlay state: the VTEP socket's address once bound, and the peers.
pub struct Overlay {
    pub settings: VxlanSettings,
    pub bound: Option<SocketAddrV4>,
    pub peers: BTreeMap<Ipv4Addr, Peer>,
}

impl Overlay {
    pub fn new(settings: VxlanSettings) -> Self {
        Overlay {
            settings,
            bound: None,
            peers: BTreeMap::new(),
        }
    }

    pub fn vtep_ip(&self) -> Option<Ipv4Addr> {
        self.settings.vtep_ip
    }

    /// Largest inner IP packet that fits the underlay once encapsulated:
    /// also the default MTU of an overlay network.
    pub fn max_inner_ip_len(&self) -> u32 {
        self.settings.underlay_mtu - VXLAN_OVERHEAD
    }
}

/// A published port: `host_port` on the uplink address → endpoint `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub proto: Protocol,
    pub host_port: u16,
    pub port: u16,
    /// Where the socket uplink listens (`None`: every host address).
    pub host_ip: Option<Ipv4Addr>,
}

/// The NAT uplink.
pub struct Uplink {
    pub counters: Arc<PortCounters>,
    /// The interface; empty for the socket uplink.
    pub interface: String,
    /// The socket uplink: published ports are served by host listeners.
    pub sockets: bool,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: MacAddr,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
    pub port: PortId,
    /// The socket uplink's counters (`None` for an interface uplink).
    pub socket_counters: Option<Arc<weft_hostnet::Counters>>,
}

/// A service VIP and its backends.
#[derive(Debug, Clone)]
pub struct Service {
    pub network: String,
    pub vip: Ipv4Addr,
    pub proto: Protocol,
    pub port: u16,
    pub backends: Vec<String>,
    pub lb: LoadBalance,
}

/// NAT state: the uplink, published ports and services.
#[derive(Default)]
pub struct Nat {
    pub uplink: Option<Uplink>,
    /// (network, endpoint) → its published ports.
    pub publishes: BTreeMap<(String, String), Vec<Publish>>,
    pub services: BTreeMap<String, Service>,
}

impl Nat {
    /// The endpoint a host port is published for, if any.
    pub fn owner_of(&self, proto: Protocol, host_port: u16) -> Option<&(String, String)> {
        self.publishes.iter().find_map(|(owner, list)| {
            list.iter()
                .any(|p| p.proto == proto && p.host_port == host_port)
                .then_some(owner)
        })
    }

    /// The service whose VIP is `ip` in `network`.
    pub fn vip_in_use(&self, network: &str, ip: Ipv4Addr) -> Option<&str> {
        self.services
            .iter()
            .find(|(_, s)| s.network == network && s.vip == ip)
            .map(|(n, _)| n.as_str())
    }

    /// Services of `network`, name and VIP.
    pub fn services_of(&self, network: &str) -> Vec<(String, Ipv4Addr)> {
        self.services
            .iter()
            .filter(|(_, s)| s.network == network)
            .map(|(n, s)| (n.clone(), s.vip))
            .collect()
    }
}

/// The control plane: the whole registry, the datapath it drives and the
/// provisioner that makes devices. Requests reach it one at a time.
pub struct Control<D: Datapath, P: Provisioner> {
    pub(crate) datapath: D,
    pub(crate) provisioner: P,
    pub(crate) networks: BTreeMap<String, Network>,
    /// Pairs of network names allowed to route, each stored smaller first.
    pub(crate) routes: BTreeSet<(String, String)>,
    pub(crate) next_network: u32,
    pub(crate) next_port: u32,
    pub(crate) state: StateFile,
    pub(crate) overlay: Overlay,
    pub(crate) nat: Nat,
    /// DNS name tables, shared with the DNS responders.
    pub(crate) names: NameTables,
    /// The cluster store, with `--store`.
    pub(crate) cluster: Option<Box<dyn ClusterStore>>,
    /// What the cluster store says of the other hosts.
    pub(crate) remote: Remote,
}

impl<D: Datapath, P: Provisioner> Control<D, P> {
    /// An empty control plane; [`Control::restore`] loads the saved state.
    pub fn empty(
        datapath: D,
        provisioner: P,
        state: StateFile,
        vxlan: VxlanSettings,
        names: NameTables,
    ) -> Self {
        Control {
            datapath,
            provisioner,
            networks: BTreeMap::new(),
            routes: BTreeSet::new(),
            next_network: 1,
            next_port: 1,
            state,
            overlay: Overlay::new(vxlan),
            nat: Nat::default(),
            names,
            cluster: None,
            remote: Remote::default(),
        }
    }

    /// The datapath the control plane drives.
    pub fn datapath(&self) -> &D {
        &self.datapath
    }

    /// The provisioner the control plane makes devices with.
    pub fn provisioner(&self) -> &P {
        &self.provisioner
    }

    /// Stops the datapath, closing every TAP weft made, and removes the
    /// resolv.conf files it wrote for namespaces.
    pub fn shutdown(self) {
        self.datapath.shutdown();
        for ep in self.networks.values().flat_map(|n| n.endpoints.values()) {
            if let Some(path) = &ep.resolv_conf {
                self.provisioner.remove_resolv_conf(path);
            }
        }
    }

    pub(crate) fn network(&self, name: &str) -> ApiResult<&Network> {
        self.networks.get(name).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("no network named `{name}`: see `weft network ls`"),
            )
        })
    }

    /// The network with datapath id `id`.
    pub(crate) fn network_by_id(&self, id: NetworkId) -> Option<&Network> {
        self.networks.values().find(|n| n.id == id)
    }

    /// The address of an endpoint.
    pub(crate) fn endpoint_ip(&self, network: &str, endpoint: &str) -> ApiResult<Ipv4Addr> {
        let net = self.network(network)?;
        net.endpoints
            .get(endpoint)
            .map(|e| e.ip)
            .ok_or_else(|| no_endpoint(network, endpoint))
    }

    /// Takes a service VIP out of the network's pool.
    pub(crate) fn reserve_vip(&mut self, network: &str, vip: Ipv4Addr) -> ApiResult<()> {
        let net = self
            .networks
            .get_mut(network)
            .ok_or_else(|| err(ErrorKind::NotFound, format!("no network named `{network}`")))?;
        net.pool.reserve(vip).map_err(ipam_error)
    }

    pub(crate) fn release_vip(&mut self, network: &str, vip: Ipv4Addr) {
        if let Some(net) = self.networks.get_mut(network) {
            net.pool.release(vip);
        }
    }

    /// A port number for a new port.
    pub(crate) fn take_port_id(&mut self) -> PortId {
        let port = PortId(self.next_port);
        self.next_port += 1;
        port
    }

    /// Networks `name` may route to.
    pub(crate) fn routes_of(&self, name: &str) -> Vec<String> {
        self.routes
            .iter()
            .filter_map(|(a, b)| {
                if a == name {
                    Some(b.clone())
                } else if b == name {
                    Some(a.clone())
                } else {
                    None
                }
            })
            .collect()
    }

    /// Everything the API created, in its saved form.
    pub(crate) fn saved(&self) -> SavedState {
        // With a cluster store, overlay networks are kept here too: their
        // endpoints' TAPs outlive the daemon and are taken back before the
        // store is reached, and the store's record of a network this file
        // already holds is accepted as the same network. Peers the store
        // brought are not kept: they come back from it.
        let endpoints = self
            .networks
            .values()
            .flat_map(|n| n.endpoints.values().map(move |e| (n, e)))
            .map(|(n, e)| SavedEndpoint {
                network: n.name.clone(),
                name: e.name.clone(),
                netns: e.netns.display().to_string(),
                netns_id: e.netns_id,
                ifname: e.ifname.clone(),
                ip: e.ip.to_string(),
                mac: e.mac.to_string(),
                default_route: e.default_route,
                aliases: e.aliases.clone(),
                publish: self
                    .nat
                    .publishes
                    .get(&(n.name.clone(), e.name.clone()))
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{}:{}/{}", p.host_port, p.port, p.proto.name()))
                    .collect(),
                resolv_conf: e.resolv_conf.clone(),
                owner: e.owner.clone(),
            })
            .collect();
        SavedState {
            networks: self.networks.values().map(Network::saved).collect(),
            routes: self.routes.iter().cloned().collect(),
            peers: self
                .overlay
                .peers
                .iter()
                .filter(|(ip, _)| !self.remote.peers.contains(ip))
                .map(|(_, p)| p.addr.to_string())
                .collect(),
            remote_csum_peers: self
                .overlay
                .peers
                .iter()
                .filter(|(ip, p)| p.remote_csum && !self.remote.peers.contains(ip))
                .map(|(ip, _)| ip.to_string())
                .collect(),
            uplink: self.nat.uplink.as_ref().map(|u| SavedUplink {
                interface: u.interface.clone(),
                sockets: u.sockets,
                ip: format!("{}/{}", u.ip, u.prefix_len),
                gateway: u.gateway.map(|g| g.to_string()),
            }),
            endpoints,
            services: self
                .nat
                .services
                .iter()
                .map(|(name, s)| SavedService {
                    name: name.clone(),
                    network: s.network.clone(),
                    vip: s.vip.to_string(),
                    port: format!("{}/{}", s.port, s.proto.name()),
                    backends: s.backends.clone(),
                    lb: lb_name(s.lb).to_string(),
                })
                .collect(),
            ..SavedState::default()
        }
    }

    /// Writes everything the API created to the state file.
    pub(crate) fn save(&self) -> ApiResult<()> {
        let saved = self.saved();
        self.state.save(&saved).map_err(|e| {
            err(
                ErrorKind::System,
                format!("the change could not be saved, so it was not made: {e}"),
            )
        })
    }

    /// Saves after a change that was already made: a failure says so,
    /// since the change stays in effect until the daemon restarts.
    pub(crate) fn save_made(&self) -> ApiResult<()> {
        let saved = self.saved();
        self.state.save(&saved).map_err(|e| {
            tracing::error!(error = %e, "a change could not be saved");
            err(
                ErrorKind::System,
                format!("the change was made but could not be saved, so a restarted daemon will not have it: {e}"),
            )
        })
    }

    /// Rebuilds the DNS names of one network.
    pub(crate) fn refresh_names(&self, network: &str) {
        let Some(net) = self.networks.get(network) else {
            return;
        };
        let endpoints: Vec<(u64, Vec<String>, Ipv4Addr)> = net
            .endpoints
            .values()
            .map(|e| {
                let mut names = vec![e.name.clone()];
                names.extend(e.aliases.iter().cloned());
                (u64::from(e.port.0), names, e.ip)
            })
            .collect();
        let services = self.nat.services_of(network);
        let table = table_for(
            &net.name,
            (net.subnet.network(), net.subnet.prefix_len()),
            &endpoints,
            &services,
        );
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(net.id, table);
    }

    /// Forgets the DNS names of a removed network.
    pub(crate) fn forget_names(&self, id: NetworkId) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// A load-balancing method as the API names it.
pub(crate) fn lb_name(lb: LoadBalance) -> &'static str {
    match lb {
        LoadBalance::RoundRobin => "rr",
        LoadBalance::Hash => "hash",
    }
}

/// The not-found error for an endpoint.
pub fn no_endpoint(network: &str, endpoint: &str) -> ApiError {
    err(
        ErrorKind::NotFound,
        format!(
            "network `{network}` has no endpoint named `{endpoint}`: see `weft endpoints {network}`"
        ),
    )
}

/// One port's counters as `weft stats` reports them.
pub fn port_stats(
    port: PortId,
    network: &str,
    endpoint: &str,
    counters: &PortCounters,
) -> PortStats {
    let snap = counters.snapshot();
    PortStats {
        port: port.0,
        network: network.to_string(),
        endpoint: endpoint.to_string(),
        rx_packets: snap.rx_packets,
        rx_bytes: snap.rx_bytes,
        tx_packets: snap.tx_packets,
        tx_bytes: snap.tx_bytes,
        storm_pauses: snap.storm_pauses,
        drops: snap.drops_by_name(),
        kernel: None,
    }
}
