//! The control plane: the registry of networks, endpoints and routes, and the
//! handler of every API request.
//!
//! Each handler validates the whole request before it changes anything, so a
//! refused request leaves the registry, the datapath and the namespaces as
//! they were. The only side effects that can fail midway (creating the TAP,
//! handing a port to the datapath) are undone before the error is returned.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use weft_os::netns::{check_netns, netns_path_for_name, netns_path_for_pid, NetnsError};
use weft_os::provision::{link_exists, provision_tap, ProvisionError, TapSpec};
use weft_os::tap::TapOptions;
use weft_switch::counters::PortCounters;
use weft_switch::datapath::{Command, Datapath, DatapathError};
use weft_switch::ipam::{parse_addr, IpamError, Ipv4Net, Pool};
use weft_switch::port::TapPort;
use weft_switch::switch::{NetworkConfig, PortConfig};
use weft_switch::wire::{stable_hash, MacAddr};
use weft_switch::{NetworkId, PortId};
use weft_vtep::Vni;

use super::dns::NameTables;
use super::nat::{parse_publish, NatControl};
use super::overlay::{Overlay, VxlanSettings};
use super::persist::{SavedNetwork, SavedState, StateFile};
use crate::api::{
    ApiError, EndpointInfo, ErrorKind, FdbEntry, NetworkDetail, NetworkInfo, PortStats, Request,
    RouteInfo, Stats, StatusInfo, API_VERSION,
};

/// Default MTU of a network's interfaces (Ethernet).
pub const DEFAULT_MTU: u32 = 1500;
/// Smallest MTU an IPv4 link may have (RFC 791).
const MIN_MTU: u32 = 68;
/// Largest MTU a TAP device accepts.
const MAX_MTU: u32 = 65521;
/// Longest network or endpoint name.
const MAX_NAME_LEN: usize = 64;

pub(super) type ApiResult = Result<serde_json::Value, ApiError>;

struct Endpoint {
    name: String,
    /// As the user named it: `/var/run/netns/NAME` or `/proc/PID/ns/net`.
    netns: PathBuf,
    /// Device and inode of the namespace, to recognise it under any path.
    netns_id: (u64, u64),
    ifname: String,
    ip: Ipv4Addr,
    mac: MacAddr,
    port: PortId,
    counters: Arc<PortCounters>,
    /// Extra DNS names.
    aliases: Vec<String>,
    /// The resolv.conf weft wrote for the namespace, to remove on detach.
    resolv_conf: Option<PathBuf>,
}

pub(super) struct Network {
    pub(super) id: NetworkId,
    pub(super) name: String,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    gateway_mac: MacAddr,
    mtu: u32,
    internal: bool,
    /// Set for overlay networks.
    pub(super) vni: Option<Vni>,
    pool: Pool,
    endpoints: BTreeMap<String, Endpoint>,
    /// Tunnel ports of an overlay network, by peer address.
    pub(super) tunnels: BTreeMap<Ipv4Addr, PortId>,
}

/// What `network create` asks for, as given.
pub(super) struct NetworkSpec<'a> {
    pub name: String,
    pub subnet: &'a str,
    pub gateway: Option<&'a str>,
    pub mtu: Option<u32>,
    pub internal: bool,
    pub vni: Option<u32>,
    pub ip_range: Option<&'a str>,
}

impl Network {
    fn info(&self) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            subnet: self.subnet.to_string(),
            gateway: self.gateway.to_string(),
            gateway_mac: self.gateway_mac.to_string(),
            mtu: self.mtu,
            internal: self.internal,
            vni: self.vni.map(Vni::get),
            ip_range: self.pool.range().map(|r| r.to_string()),
            endpoints: self.endpoints.len(),
            free_addresses: self.pool.free_count(),
        }
    }

    fn endpoint_info(&self, ep: &Endpoint) -> EndpointInfo {
        EndpointInfo {
            name: ep.name.clone(),
            network: self.name.clone(),
            netns: ep.netns.display().to_string(),
            ifname: ep.ifname.clone(),
            ip: format!("{}/{}", ep.ip, self.subnet.prefix_len()),
            mac: ep.mac.to_string(),
            port: ep.port.0,
        }
    }

    /// Whether the network was created `--internal`.
    pub(super) fn is_internal(&self) -> bool {
        self.internal
    }

    /// Whether `ip` is inside the network's subnet.
    pub(super) fn contains(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(ip)
    }

    /// Checks that `vip` can become a service VIP here.
    pub(super) fn check_vip(&self, vip: Ipv4Addr) -> Result<(), ApiError> {
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

    fn mac_in_use(&self, mac: MacAddr) -> bool {
        mac == self.gateway_mac || self.endpoints.values().any(|e| e.mac == mac)
    }
}

/// The daemon's whole control state.
pub struct Control {
    pub(super) datapath: Datapath,
    pub(super) networks: BTreeMap<String, Network>,
    /// Pairs of network names allowed to route, each stored smaller first.
    routes: BTreeSet<(String, String)>,
    next_network: u32,
    pub(super) next_port: u32,
    state: StateFile,
    pub(super) overlay: Overlay,
    pub(super) nat: NatControl,
    /// DNS name tables, shared with the resolver thread.
    names: NameTables,
}

pub(super) fn err(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError::new(kind, message)
}

pub(super) fn ok<T: serde::Serialize>(value: &T) -> ApiResult {
    serde_json::to_value(value).map_err(|e| err(ErrorKind::Internal, e.to_string()))
}

pub(super) fn datapath_error(e: DatapathError) -> ApiError {
    err(
        ErrorKind::Internal,
        format!("the datapath refused the change: {e}"),
    )
}

fn ipam_error(e: IpamError) -> ApiError {
    let kind = match e {
        IpamError::AddressTaken { .. } => ErrorKind::AlreadyExists,
        IpamError::Exhausted { .. } => ErrorKind::Exhausted,
        _ => ErrorKind::InvalidArgument,
    };
    err(kind, e.to_string())
}

/// Prefixes an error with the network it concerns.
fn in_network(mut e: ApiError, network: &str) -> ApiError {
    e.message = format!("network `{network}`: {}", e.message);
    e
}

/// Checks a network or endpoint name: what the CLI and file names tolerate.
pub(super) fn check_name_pub(what: &str, name: &str) -> Result<(), ApiError> {
    check_name(what, name)
}

fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(err(
            ErrorKind::InvalidArgument,
            format!(
                "{what} name `{name}` is not valid: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit"
            ),
        ))
    }
}

impl Control {
    /// Starts from the saved state, registering its networks and routes with
    /// the datapath.
    pub fn new(
        datapath: Datapath,
        state: StateFile,
        vxlan: VxlanSettings,
        names: NameTables,
    ) -> anyhow::Result<Self> {
        let saved = state.load()?;
        let mut control = Control {
            datapath,
            networks: BTreeMap::new(),
            routes: BTreeSet::new(),
            next_network: 1,
            next_port: 1,
            state,
            overlay: Overlay::new(vxlan),
            nat: NatControl::default(),
            names,
        };
        for peer in &saved.peers {
            control
                .add_peer(peer)
                .map_err(|e| anyhow::anyhow!("restoring peer {peer}: {}", e.message))?;
        }
        for net in saved.networks {
            let name = net.name.clone();
            control
                .create_network(NetworkSpec {
                    name: net.name,
                    subnet: &net.subnet,
                    gateway: Some(net.gateway.as_str()),
                    mtu: Some(net.mtu),
                    internal: net.internal,
                    vni: net.vni,
                    ip_range: net.ip_range.as_deref(),
                })
                .map_err(|e| anyhow::anyhow!("restoring network {name}: {}", e.message))?;
        }
        for (a, b) in saved.routes {
            control
                .set_route(&a, &b, true)
                .map_err(|e| anyhow::anyhow!("restoring route {a} <-> {b}: {}", e.message))?;
        }
        Ok(control)
    }

    /// Handles one request; the reply's value or the reason for refusal.
    pub fn handle(&mut self, request: Request) -> ApiResult {
        match request {
            Request::Status => ok(&StatusInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                api_version: API_VERSION,
                pid: std::process::id(),
                networks: self.networks.len(),
                endpoints: self.networks.values().map(|n| n.endpoints.len()).sum(),
                vxlan_listen: self.overlay.bound().map(|a| a.to_string()),
                vtep_ip: self.overlay.vtep_ip().map(|a| a.to_string()),
            }),
            Request::NetworkCreate {
                name,
                subnet,
                gateway,
                mtu,
                internal,
                vni,
                ip_range,
            } => {
                let info = self.create_network(NetworkSpec {
                    name,
                    subnet: &subnet,
                    gateway: gateway.as_deref(),
                    mtu,
                    internal,
                    vni,
                    ip_range: ip_range.as_deref(),
                })?;
                self.save()?;
                ok(&info)
            }
            Request::NetworkList => ok(&self
                .networks
                .values()
                .map(Network::info)
                .collect::<Vec<_>>()),
            Request::NetworkInspect { name } => {
                let net = self.network(&name)?;
                let detail = NetworkDetail {
                    network: net.info(),
                    attached: net
                        .endpoints
                        .values()
                        .map(|e| net.endpoint_info(e))
                        .collect(),
                    routes_to: self.routes_of(&name),
                };
                ok(&detail)
            }
            Request::NetworkRemove { name } => self.remove_network(&name),
            Request::Attach {
                network,
                netns,
                pid,
                name,
                ip,
                mac,
                ifname,
                publish,
                aliases,
                no_resolv_conf,
            } => self.attach(AttachRequest {
                network,
                netns,
                pid,
                name,
                ip,
                mac,
                ifname,
                publish,
                aliases,
                no_resolv_conf,
            }),
            Request::Detach { network, endpoint } => self.detach(&network, &endpoint),
            Request::RouteAllow { a, b } => {
                self.set_route(&a, &b, true)?;
                self.save()?;
                ok(&RouteInfo { a, b })
            }
            Request::RouteDeny { a, b } => {
                self.set_route(&a, &b, false)?;
                self.save()?;
                ok(&RouteInfo { a, b })
            }
            Request::RouteList => ok(&self
                .routes
                .iter()
                .map(|(a, b)| RouteInfo {
                    a: a.clone(),
                    b: b.clone(),
                })
                .collect::<Vec<_>>()),
            Request::Endpoints { network } => {
                let nets: Vec<&Network> = match &network {
                    Some(name) => vec![self.network(name)?],
                    None => self.networks.values().collect(),
                };
                ok(&nets
                    .iter()
                    .flat_map(|n| n.endpoints.values().map(|e| n.endpoint_info(e)))
                    .collect::<Vec<_>>())
            }
            Request::Fdb { network } => self.fdb(network.as_deref()),
            Request::Stats => ok(&self.stats()),
            Request::PeerAdd { addr } => {
                let info = self.add_peer(&addr)?;
                self.save()?;
                ok(&info)
            }
            Request::PeerList => ok(&self.peer_list()),
            Request::PeerRemove { ip } => {
                let info = self.remove_peer(&ip)?;
                self.save()?;
                ok(&info)
            }
            Request::FdbAdd { network, mac, vtep } => self.fdb_add(&network, &mac, &vtep),
            Request::NeighborAdd { network, ip, mac } => self.neighbor_add(&network, &ip, &mac),
            Request::Neighbors { network } => self.neighbor_list(network.as_deref()),
            Request::UplinkSet {
                interface,
                ip,
                gateway,
            } => self.uplink_set(&interface, &ip, gateway.as_deref()),
            Request::UplinkShow => self.uplink_show(),
            Request::UplinkRemove => self.uplink_remove(),
            Request::PublishAdd {
                network,
                endpoint,
                spec,
            } => self.publish_add(&network, &endpoint, &spec),
            Request::PublishList => self.publish_list(),
            Request::PublishRemove {
                network,
                endpoint,
                spec,
            } => self.publish_remove(&network, &endpoint, &spec),
            Request::ServiceCreate {
                name,
                network,
                vip,
                port,
                backends,
                lb,
            } => self.service_create(&name, &network, &vip, &port, &backends, lb.as_deref()),
            Request::ServiceList => self.service_list(),
            Request::ServiceRemove { name } => self.service_remove(&name),
            Request::ServiceBackendAdd { name, endpoint } => {
                self.service_backend(&name, &endpoint, true)
            }
            Request::ServiceBackendRemove { name, endpoint } => {
                self.service_backend(&name, &endpoint, false)
            }
            Request::Conntrack => self.conntrack_list(),
            Request::ConntrackFlush => self.conntrack_flush(),
        }
    }

    /// Stops the datapath, closing every TAP weft made.
    /// Stops the datapath, closing every TAP weft made, and removes the
    /// resolv.conf files it wrote for namespaces.
    pub fn shutdown(self) {
        self.datapath.shutdown();
        for ep in self.networks.values().flat_map(|n| n.endpoints.values()) {
            if let Some(path) = &ep.resolv_conf {
                remove_resolv_conf(path);
            }
        }
    }

    pub(super) fn network(&self, name: &str) -> Result<&Network, ApiError> {
        self.networks.get(name).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("no network named `{name}`: see `weft network ls`"),
            )
        })
    }

    fn routes_of(&self, name: &str) -> Vec<String> {
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

    fn save(&self) -> Result<(), ApiError> {
        let saved = SavedState {
            networks: self
                .networks
                .values()
                .map(|n| SavedNetwork {
                    name: n.name.clone(),
                    subnet: n.subnet.to_string(),
                    gateway: n.gateway.to_string(),
                    mtu: n.mtu,
                    internal: n.internal,
                    vni: n.vni.map(Vni::get),
                    ip_range: n.pool.range().map(|r| r.to_string()),
                })
                .collect(),
            routes: self.routes.iter().cloned().collect(),
            peers: self.overlay.saved_peers(),
        };
        self.state.save(&saved).map_err(|e| {
            err(
                ErrorKind::System,
                format!("the change was applied but could not be saved: {e:#}"),
            )
        })
    }

    fn create_network(&mut self, spec: NetworkSpec<'_>) -> Result<NetworkInfo, ApiError> {
        let name = spec.name;
        check_name("network", &name)?;
        if self.networks.contains_key(&name) {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!("a network named `{name}` already exists: pick another name or remove it with `weft network rm {name}`"),
            ));
        }
        let subnet: Ipv4Net = spec.subnet.parse().map_err(ipam_error)?;
        if let Some(other) = self.networks.values().find(|n| n.subnet.overlaps(subnet)) {
            return Err(err(
                ErrorKind::Conflict,
                format!(
                    "subnet {subnet} overlaps network `{}` ({}): pick a subnet that does not",
                    other.name, other.subnet
                ),
            ));
        }
        let gateway = match spec.gateway {
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
            self.overlay.default_inner_mtu()
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
        let mut pool = match spec.ip_range {
            Some(text) => {
                let range: Ipv4Net = text.parse().map_err(ipam_error)?;
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
        self.datapath
            .execute(Command::AddNetwork(NetworkConfig {
                id,
                subnet,
                gateway_ip: gateway,
                gateway_mac,
                mtu,
            }))
            .map_err(datapath_error)?;
        if spec.internal {
            self.datapath
                .execute(Command::SetInternal {
                    network: id,
                    internal: true,
                })
                .map_err(datapath_error)?;
        }
        self.next_network += 1;
        let net = Network {
            id,
            name: name.clone(),
            subnet,
            gateway,
            gateway_mac,
            mtu,
            internal: spec.internal,
            vni,
            pool,
            endpoints: BTreeMap::new(),
            tunnels: BTreeMap::new(),
        };
        self.networks.insert(name.clone(), net);
        if vni.is_some() {
            if let Err(e) = self.connect_network_to_peers(&name) {
                let _ = self.remove_network_now(&name);
                return Err(e);
            }
        }
        Ok(self.networks[&name].info())
    }

    fn remove_network(&mut self, name: &str) -> ApiResult {
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
        let info = self.remove_network_now(name)?;
        self.save()?;
        ok(&info)
    }

    /// Removes a network without endpoints, its tunnels first.
    fn remove_network_now(&mut self, name: &str) -> Result<NetworkInfo, ApiError> {
        let net = self.network(name)?;
        let id = net.id;
        let tunnels: Vec<PortId> = net.tunnels.values().copied().collect();
        for port in tunnels {
            self.datapath
                .execute(Command::RemovePort(port))
                .map_err(datapath_error)?;
        }
        if let Some(net) = self.networks.get_mut(name) {
            net.tunnels.clear();
        }
        self.datapath
            .execute(Command::RemoveNetwork(id))
            .map_err(datapath_error)?;
        let net = self.networks.remove(name).expect("looked up above");
        self.routes.retain(|(a, b)| a != name && b != name);
        Ok(net.info())
    }

    fn set_route(&mut self, a: &str, b: &str, allowed: bool) -> Result<(), ApiError> {
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
        let key = if a < b {
            (a.to_string(), b.to_string())
        } else {
            (b.to_string(), a.to_string())
        };
        self.datapath
            .execute(Command::SetRoute {
                a: ida,
                b: idb,
                allowed,
            })
            .map_err(datapath_error)?;
        if allowed {
            self.routes.insert(key);
        } else {
            self.routes.remove(&key);
        }
        Ok(())
    }

    fn attach(&mut self, req: AttachRequest) -> ApiResult {
        let net = self.network(&req.network)?;
        let (netns, default_name) = match (&req.netns, req.pid) {
            (Some(name), None) => (
                netns_path_for_name(name)
                    .map_err(|e| err(ErrorKind::InvalidArgument, e.to_string()))?,
                name.clone(),
            ),
            (None, Some(pid)) => (netns_path_for_pid(pid), format!("pid-{pid}")),
            _ => {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    "give exactly one of --netns NAME or --pid PID",
                ))
            }
        };
        check_netns(&netns).map_err(|e| netns_error(e, &req))?;
        let netns_id = std::fs::metadata(&netns)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| err(ErrorKind::NotFound, format!("{}: {e}", netns.display())))?;

        let name = req.name.clone().unwrap_or(default_name);
        check_name("endpoint", &name)?;
        if net.endpoints.contains_key(&name) {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!(
                    "network `{}` already has an endpoint named `{name}`: pass another --name",
                    net.name
                ),
            ));
        }
        let publishes = req
            .publish
            .iter()
            .map(|p| parse_publish(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_publishes(&req.network, &publishes)?;
        for alias in &req.aliases {
            check_name("alias", alias)?;
        }
        let net = self.network(&req.network)?;
        let ip = match &req.ip {
            Some(text) => {
                let ip = parse_addr(text).map_err(ipam_error)?;
                net.pool
                    .check(ip)
                    .map_err(|e| in_network(ipam_error(e), &net.name))?;
                ip
            }
            None => net
                .pool
                .next_free()
                .map_err(|e| in_network(ipam_error(e), &net.name))?,
        };
        let mac = match &req.mac {
            Some(text) => {
                let mac: MacAddr =
                    text.parse()
                        .map_err(|e: weft_switch::wire::MacParseError| {
                            err(ErrorKind::InvalidArgument, e.to_string())
                        })?;
                if !mac.is_unicast() || mac == MacAddr::ZERO {
                    return Err(err(
                        ErrorKind::InvalidArgument,
                        format!("{mac} is not a unicast MAC address: the first octet must be even and the address non-zero"),
                    ));
                }
                if net.mac_in_use(mac) {
                    return Err(err(
                        ErrorKind::AlreadyExists,
                        format!("MAC {mac} is already in use in network `{}`: pick another or leave --mac out", net.name),
                    ));
                }
                mac
            }
            None => derive_mac(net, &name),
        };
        let ifname = match &req.ifname {
            Some(ifname) => ifname.clone(),
            None => free_ifname(&netns, &req)?,
        };
        let first_network = !self
            .networks
            .values()
            .flat_map(|n| n.endpoints.values())
            .any(|e| e.netns_id == netns_id);

        let spec = TapSpec {
            ifname: ifname.clone(),
            mac: mac.0,
            ip,
            prefix_len: net.subnet.prefix_len(),
            mtu: net.mtu,
            default_gateway: first_network.then_some(net.gateway),
            tap: TapOptions {
                vnet_hdr: true,
                multi_queue: false,
            },
            disable_ipv6: true,
        };
        let tap = provision_tap(&netns, spec).map_err(|e| provision_error(e, &req))?;
        let io = TapPort::new(tap).map_err(|e| {
            err(
                ErrorKind::System,
                format!("could not make the TAP non-blocking: {e}"),
            )
        })?;
        let port = PortId(self.next_port);
        let counters = Arc::new(PortCounters::default());
        let network_id = net.id;
        self.datapath
            .execute(Command::AddPort {
                cfg: PortConfig {
                    id: port,
                    network: network_id,
                    mac,
                    ip,
                },
                io: Box::new(io),
                counters: Arc::clone(&counters),
            })
            .map_err(datapath_error)?;
        self.next_port += 1;

        let net = self
            .networks
            .get_mut(&req.network)
            .expect("looked up above");
        net.pool.reserve(ip).map_err(ipam_error)?;
        let resolv_conf = match (&req.netns, req.no_resolv_conf) {
            (Some(ns), false) if first_network => write_resolv_conf(ns, net.gateway),
            _ => None,
        };
        let endpoint = Endpoint {
            name: name.clone(),
            netns,
            netns_id,
            ifname,
            ip,
            mac,
            port,
            counters,
            aliases: req.aliases.clone(),
            resolv_conf,
        };
        let info = net.endpoint_info(&endpoint);
        net.endpoints.insert(name.clone(), endpoint);
        let network = req.network.clone();
        self.apply_publishes(&network, &name, ip, publishes)?;
        self.refresh_names(&network);
        eprintln!(
            "weft: attached {} ({}, {}) to network {} on port {}",
            info.name, info.ip, info.mac, info.network, info.port
        );
        ok(&info)
    }

    fn detach(&mut self, network: &str, endpoint: &str) -> ApiResult {
        let net = self.network(network)?;
        let ep = net.endpoints.get(endpoint).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("network `{network}` has no endpoint named `{endpoint}`: see `weft endpoints {network}`"),
            )
        })?;
        let info = net.endpoint_info(ep);
        self.datapath
            .execute(Command::RemovePort(ep.port))
            .map_err(datapath_error)?;
        self.drop_publishes(network, endpoint);
        self.drop_backend(network, endpoint);
        let net = self.networks.get_mut(network).expect("looked up above");
        if let Some(ep) = net.endpoints.remove(endpoint) {
            net.pool.release(ep.ip);
            if let Some(path) = ep.resolv_conf {
                remove_resolv_conf(&path);
            }
        }
        self.refresh_names(network);
        eprintln!("weft: detached {endpoint} from network {network}");
        ok(&info)
    }

    fn fdb(&self, network: Option<&str>) -> ApiResult {
        let id = match network {
            Some(name) => Some(self.network(name)?.id),
            None => None,
        };
        let learned = self.datapath.fdb(id).map_err(datapath_error)?;
        let mut rows = Vec::with_capacity(learned.len());
        for (net_id, entry) in learned {
            let Some(net) = self.networks.values().find(|n| n.id == net_id) else {
                continue;
            };
            let endpoint = net
                .endpoints
                .values()
                .find(|e| e.port == entry.port)
                .map(|e| e.name.clone());
            let vtep = net
                .tunnels
                .iter()
                .find(|(_, &p)| p == entry.port)
                .map(|(ip, _)| ip.to_string());
            rows.push(FdbEntry {
                network: net.name.clone(),
                mac: entry.mac.to_string(),
                port: entry.port.0,
                endpoint,
                age_secs: (entry.age.as_secs_f64() * 10.0).round() / 10.0,
                vtep,
                r#static: entry.is_static,
            });
        }
        ok(&rows)
    }

    fn stats(&self) -> Stats {
        let mut ports = Vec::new();
        for net in self.networks.values() {
            for ep in net.endpoints.values() {
                ports.push(port_stats(ep.port, &net.name, &ep.name, &ep.counters));
            }
        }
        if let Some((port, interface, counters)) = self.nat.uplink_counters() {
            ports.push(port_stats(
                port,
                "-",
                &format!("uplink:{interface}"),
                counters,
            ));
        }
        ports.sort_by_key(|p| p.port);
        let c = self.datapath.counters();
        let load = |v: &std::sync::atomic::AtomicU64| v.load(std::sync::atomic::Ordering::Relaxed);
        let nonzero = |pairs: &[(&str, &std::sync::atomic::AtomicU64)]| -> BTreeMap<String, u64> {
            pairs
                .iter()
                .map(|(name, v)| (name.to_string(), load(v)))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        let switch_drops = nonzero(&[
            ("icmp_rate_limited", &c.icmp_rate_limited),
            ("fdb_full", &c.fdb_full),
            ("tunnel_too_big", &c.tunnel_too_big),
            ("vxlan_malformed", &c.vxlan_malformed),
            ("vxlan_unknown_vni", &c.vxlan_unknown_vni),
            ("vxlan_unknown_peer", &c.vxlan_unknown_peer),
            ("conntrack_full", &c.conntrack_full),
        ]);
        let counters = nonzero(&[
            ("arp_suppressed", &c.arp_suppressed),
            ("icmp_errors_sent", &c.icmp_errors_sent),
        ]);
        Stats {
            ports,
            switch_drops,
            counters,
            peers: self.peer_list(),
        }
    }
}

impl Control {
    /// The address of an endpoint.
    pub(super) fn endpoint_ip(&self, network: &str, endpoint: &str) -> Result<Ipv4Addr, ApiError> {
        let net = self.network(network)?;
        net.endpoints.get(endpoint).map(|e| e.ip).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("network `{network}` has no endpoint named `{endpoint}`: see `weft endpoints {network}`"),
            )
        })
    }

    /// Takes a service VIP out of the network's pool.
    pub(super) fn reserve_vip(&mut self, network: &str, vip: Ipv4Addr) -> Result<(), ApiError> {
        let net = self
            .networks
            .get_mut(network)
            .ok_or_else(|| err(ErrorKind::NotFound, format!("no network named `{network}`")))?;
        net.pool.reserve(vip).map_err(ipam_error)
    }

    pub(super) fn release_vip(&mut self, network: &str, vip: Ipv4Addr) {
        if let Some(net) = self.networks.get_mut(network) {
            net.pool.release(vip);
        }
    }

    /// Rebuilds the DNS names of one network.
    pub(super) fn refresh_names(&self, network: &str) {
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
        let table = super::dns::table_for(
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
}

/// First line of every resolv.conf weft writes: how weft recognises its own.
const RESOLV_CONF_MARK: &str = "# written by weft";

/// Points a named namespace's resolv.conf (`/etc/netns/NAME/resolv.conf`,
/// which `ip netns exec` bind-mounts) at the gateway, unless the file
/// exists and is not weft's. Returns the path when weft wrote it.
fn write_resolv_conf(netns: &str, gateway: Ipv4Addr) -> Option<PathBuf> {
    let dir = PathBuf::from("/etc/netns").join(netns);
    let path = dir.join("resolv.conf");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if !existing.starts_with(RESOLV_CONF_MARK) {
            return None;
        }
    }
    let text = format!(
        "{RESOLV_CONF_MARK}: the gateway answers for this network's names (remove this file or attach with --no-resolv-conf to manage it yourself)\nnameserver {gateway}\noptions ndots:0\n"
    );
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::write(&path, text).ok()?;
    Some(path)
}

/// Removes a resolv.conf weft wrote, and its directory if left empty.
fn remove_resolv_conf(path: &std::path::Path) {
    let ours = std::fs::read_to_string(path).is_ok_and(|t| t.starts_with(RESOLV_CONF_MARK));
    if ours {
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// One port's counters as `weft stats` reports them.
fn port_stats(port: PortId, network: &str, endpoint: &str, counters: &PortCounters) -> PortStats {
    let snap = counters.snapshot();
    PortStats {
        port: port.0,
        network: network.to_string(),
        endpoint: endpoint.to_string(),
        rx_packets: snap.rx_packets,
        rx_bytes: snap.rx_bytes,
        tx_packets: snap.tx_packets,
        tx_bytes: snap.tx_bytes,
        drops: snap.drops_by_name(),
    }
}

struct AttachRequest {
    network: String,
    netns: Option<String>,
    pid: Option<u32>,
    name: Option<String>,
    ip: Option<String>,
    mac: Option<String>,
    ifname: Option<String>,
    publish: Vec<String>,
    aliases: Vec<String>,
    no_resolv_conf: bool,
}

/// The default MAC of an endpoint: stable for a network and endpoint name,
/// locally administered, and unique within the network.
fn derive_mac(net: &Network, endpoint: &str) -> MacAddr {
    let mut salt = 0u32;
    loop {
        let mac = MacAddr::local_from_seed(stable_hash(&[&net.name, endpoint, &salt.to_string()]));
        if !net.mac_in_use(mac) {
            return mac;
        }
        salt += 1;
    }
}

/// The first of eth0, eth1, … that the namespace does not have yet.
fn free_ifname(netns: &std::path::Path, req: &AttachRequest) -> Result<String, ApiError> {
    for n in 0..100 {
        let name = format!("eth{n}");
        if !link_exists(netns, &name).map_err(|e| provision_error(e, req))? {
            return Ok(name);
        }
    }
    Ok("eth100".to_string())
}

fn netns_error(e: NetnsError, req: &AttachRequest) -> ApiError {
    match (&e, req.pid) {
        (NetnsError::NotFound { .. }, Some(pid)) => err(
            ErrorKind::NotFound,
            format!("no process with PID {pid} (or its network namespace is gone): check the PID"),
        ),
        (NetnsError::NotFound { .. }, None) => err(
            ErrorKind::NotFound,
            format!(
                "network namespace `{}` not found: create it with `ip netns add {0}` or check `ip netns list`",
                req.netns.as_deref().unwrap_or_default()
            ),
        ),
        (NetnsError::Permission { .. }, _) => err(ErrorKind::System, e.to_string()),
        _ => err(ErrorKind::InvalidArgument, e.to_string()),
    }
}

fn provision_error(e: ProvisionError, req: &AttachRequest) -> ApiError {
    match e {
        ProvisionError::IfnameTaken { .. } => err(ErrorKind::AlreadyExists, e.to_string()),
        ProvisionError::InvalidSpec { .. } => err(ErrorKind::InvalidArgument, e.to_string()),
        ProvisionError::Netns(inner) => netns_error(inner, req),
        other => err(
            ErrorKind::System,
            format!("{other}: {}", source_chain(&other)),
        ),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
