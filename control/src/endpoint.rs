//! Endpoints: `attach` puts a TAP device into a namespace and connects it to
//! a network's switch; `detach` takes it away again.
//!
//! Attach checks everything first (network, namespace, name, address, MAC,
//! published ports, aliases), then makes the device, hands it to the
//! datapath, and publishes its ports; when a later step fails, every earlier
//! one is undone, so nothing of a refused attach remains.

use crate::ipam::parse_addr;
use weft_api::{EndpointInfo, EndpointOwner, ErrorKind};
use weft_datapath::Change;
use weft_packet::{stable_hash, MacAddr, MacParseError};
use weft_switch::counters::PortCounters;
use weft_switch::switch::PortConfig;

use crate::error::{check_name, datapath_error, err, in_network, ipam_error, ApiResult};
use crate::nat::parse_publish;
use crate::persist::SavedEndpoint;
use crate::ports::{Datapath, NetnsTarget, Provisioner, TapRequest};
use crate::state::{no_endpoint, Control, Endpoint, Network};

/// What `attach` asks for, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachSpec {
    pub network: String,
    /// A name under `/var/run/netns`, or an absolute path to any network
    /// namespace file (exclusive with `pid`).
    pub netns: Option<String>,
    /// A process whose namespace to join (exclusive with `netns`).
    pub pid: Option<u32>,
    /// The endpoint's name (default: the namespace's name, or `pid-PID`).
    pub name: Option<String>,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub ifname: Option<String>,
    /// Ports to publish: `HOSTPORT:PORT[/tcp|/udp]`.
    pub publish: Vec<String>,
    /// Extra DNS names in the network.
    pub aliases: Vec<String>,
    /// Leave the namespace's resolv.conf alone.
    pub no_resolv_conf: bool,
    /// Who the endpoint belongs to (a CNI container and interface).
    pub owner: Option<EndpointOwner>,
    /// A path to the namespace that the caller of `attach` keeps open and
    /// has already checked (the daemon's `/proc/PID/fd/N` for a caller who
    /// may only attach namespaces it owns): the TAP is made through it, so
    /// the namespace checked is the one used even if `netns` or `pid` has
    /// come to name another since. `netns` or `pid` is still what the
    /// endpoint records, and must lead to the same namespace.
    pub pinned_netns: Option<std::path::PathBuf>,
}

/// Interface names tried for a new endpoint: eth0 … eth99.
const IFNAME_CANDIDATES: u32 = 100;

impl<D: Datapath, P: Provisioner> Control<D, P> {
    /// `attach`: connects a namespace to a network.
    pub fn attach(&mut self, req: AttachSpec) -> ApiResult<EndpointInfo> {
        let net = self.network(&req.network)?;
        if let Some(owner) = &req.owner {
            self.check_owner_free(owner)?;
        }
        let (target, default_name) = match (&req.netns, req.pid) {
            (Some(path), None) if path.starts_with('/') => {
                let path = std::path::PathBuf::from(path);
                let name = default_name_for_path(&path);
                (NetnsTarget::Path(path), name)
            }
            (Some(name), None) => (NetnsTarget::Name(name.clone()), name.clone()),
            (None, Some(pid)) => (NetnsTarget::Pid(pid), format!("pid-{pid}")),
            _ => {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    "give exactly one of --netns NAME|PATH or --pid PID",
                ))
            }
        };
        let netns = self.provisioner.open_netns(&target)?;
        // The path the TAP is made through.
        let enter = match &req.pinned_netns {
            None => netns.path.clone(),
            Some(pinned) => {
                let held = self
                    .provisioner
                    .open_netns(&NetnsTarget::Path(pinned.clone()))?;
                if held.id != netns.id {
                    return Err(err(
                        ErrorKind::NotFound,
                        format!(
                            "{} no longer leads to the namespace that was checked (the process \
                             exited or the namespace was replaced meanwhile): nothing was attached",
                            netns.path.display()
                        ),
                    ));
                }
                held.path
            }
        };
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
            None if self.cluster_allocates(&req.network) => self.cluster_address(&req.network)?,
            None => net
                .pool
                .next_free()
                .map_err(|e| in_network(ipam_error(e), &net.name))?,
        };
        let net = self.network(&req.network)?;
        let mac = match &req.mac {
            Some(text) => {
                let mac = parse_unicast_mac(text)?;
                if net.mac_in_use(mac) {
                    return Err(err(
                        ErrorKind::AlreadyExists,
                        format!("MAC {mac} is already in use in network `{}`: pick another or leave --mac out", net.name),
                    ));
                }
                mac
            }
            // Endpoint names are per host: on a cluster-wide network the
            // host's address keeps two hosts' `web` apart.
            None if self.cluster_wide(&req.network) => {
                let host = self.overlay.vtep_ip().map(|a| a.to_string());
                derive_mac(net, &format!("{name}@{}", host.unwrap_or_default()))
            }
            None => derive_mac(net, &name),
        };
        let ifname = match &req.ifname {
            Some(ifname) => ifname.clone(),
            None => self.free_ifname(&enter)?,
        };
        let first_network = !self
            .networks
            .values()
            .flat_map(|n| n.endpoints.values())
            .any(|e| e.netns_id == netns.id);
        let mut tap = TapRequest {
            ifname: ifname.clone(),
            mac,
            ip,
            prefix_len: net.subnet.prefix_len(),
            mtu: net.mtu,
            default_gateway: first_network.then_some(net.gateway),
        };
        let (network_id, gateway) = (net.id, net.gateway);

        // Every check passed: take the address, make the device, and
        // connect it with its published ports as one batch.
        let net = self
            .networks
            .get_mut(&req.network)
            .expect("looked up above");
        net.pool.reserve(ip).map_err(ipam_error)?;
        // On a cluster-wide network the address is published before the
        // device exists, so that no other host hands it out meanwhile.
        let ip = if self.cluster_wide(&req.network) {
            let ip = self.cluster_publish(&req.network, &name, ip, mac, req.ip.is_none())?;
            tap.ip = ip;
            ip
        } else {
            ip
        };
        let release = |this: &mut Self| {
            this.cluster_withdraw(&req.network, ip);
            if let Some(net) = this.networks.get_mut(&req.network) {
                net.pool.release(ip);
            }
        };
        let io = match self.provisioner.create_tap(&enter, &tap) {
            Ok(io) => io,
            Err(e) => {
                release(self);
                return Err(e);
            }
        };
        let port = self.take_port_id();
        let counters = std::sync::Arc::new(PortCounters::default());
        let mut changes = vec![Change::AddPort {
            cfg: PortConfig {
                id: port,
                network: network_id,
                mac,
                ip,
            },
            io,
            counters: std::sync::Arc::clone(&counters),
        }];
        match self.publish_changes(ip, &publishes) {
            Ok(more) => changes.extend(more),
            Err(e) => {
                // Dropping the changes closes the new device.
                drop(changes);
                release(self);
                return Err(e);
            }
        }
        if let Err(e) = self.datapath.apply(changes) {
            // The worker closed the device.
            release(self);
            return Err(datapath_error(e));
        }
        self.record_publishes(&req.network, &name, publishes);
        // Only a named namespace has a resolv.conf of its own
        // (`/etc/netns/NAME`); whoever made a namespace by path sets its own.
        let resolv_conf = match (&target, req.no_resolv_conf) {
            (NetnsTarget::Name(ns), false) if first_network => {
                self.provisioner.write_resolv_conf(ns, gateway)
            }
            _ => None,
        };
        let endpoint = Endpoint {
            name: name.clone(),
            netns: netns.path,
            netns_id: netns.id,
            ifname,
            ip,
            mac,
            port,
            counters,
            aliases: req.aliases.clone(),
            resolv_conf,
            owner: req.owner.clone(),
            default_route: first_network,
        };
        let net = self
            .networks
            .get_mut(&req.network)
            .expect("looked up above");
        let info = net.endpoint_info(&endpoint);
        net.endpoints.insert(name, endpoint);
        self.refresh_names(&req.network);
        tracing::info!(
            endpoint = %info.name, ip = %info.ip, mac = %info.mac,
            network = %info.network, port = info.port, "attached"
        );
        Ok(info)
    }

    /// `detach`: disconnects an endpoint; its TAP device disappears.
    pub fn detach(&mut self, network: &str, endpoint: &str) -> ApiResult<EndpointInfo> {
        let net = self.network(network)?;
        let ep = net
            .endpoints
            .get(endpoint)
            .ok_or_else(|| no_endpoint(network, endpoint))?;
        let info = net.endpoint_info(ep);
        let port = ep.port;
        // Its published ports, the services it backs and the port leave
        // the datapath as one batch, the removal last.
        let mut changes = self.unpublish_changes(network, endpoint);
        let (services, service_changes) = self.services_without(network, endpoint)?;
        changes.extend(service_changes);
        changes.push(Change::RemovePort(port));
        self.datapath.apply(changes).map_err(datapath_error)?;
        self.forget_publishes(network, endpoint);
        self.record_services(services);
        self.cluster_withdraw(network, info.ip.addr());
        let net = self.networks.get_mut(network).expect("looked up above");
        if let Some(ep) = net.endpoints.remove(endpoint) {
            net.pool.release(ep.ip);
            if let Some(path) = ep.resolv_conf {
                self.provisioner.remove_resolv_conf(&path);
            }
        }
        self.refresh_names(network);
        tracing::info!(%endpoint, %network, "detached");
        Ok(info)
    }

    /// An owner (a runtime's container interface) has one endpoint at
    /// most: refuse a second attach of the same one.
    fn check_owner_free(&self, owner: &EndpointOwner) -> ApiResult<()> {
        let taken = self.networks.values().find_map(|n| {
            n.endpoints
                .values()
                .find(|e| e.owner.as_ref() == Some(owner))
                .map(|e| (n.name.as_str(), e.name.as_str()))
        });
        match taken {
            None => Ok(()),
            Some((network, endpoint)) => Err(err(
                ErrorKind::AlreadyExists,
                format!(
                    "container {} already has interface `{}`{} attached as endpoint `{endpoint}` of network `{network}`: detach it first (CNI DEL)",
                    owner.container_id,
                    owner.ifname,
                    if owner.network.is_empty() {
                        String::new()
                    } else {
                        format!(" on runtime network `{}`", owner.network)
                    },
                ),
            )),
        }
    }

    /// Takes back an endpoint of the saved state: its namespace must still
    /// be the one it was attached to (same device and inode); its TAP,
    /// left there by the daemon before, is re-attached with the same name,
    /// address and MAC (or made again when it is gone), and its published
    /// ports come back with it. Returns `Ok(false)` when the namespace is
    /// gone or replaced (the workload ended while no daemon ran): the
    /// endpoint is then forgotten.
    pub(crate) fn restore_endpoint(&mut self, saved: SavedEndpoint) -> ApiResult<bool> {
        let target = NetnsTarget::Path(saved.netns.clone().into());
        match self.provisioner.open_netns(&target) {
            Ok(ns) if ns.id == saved.netns_id => {}
            Ok(_) | Err(_) => {
                tracing::warn!(
                    endpoint = %saved.name, network = %saved.network, netns = %saved.netns,
                    "the endpoint's namespace is gone or was replaced: endpoint forgotten"
                );
                return Ok(false);
            }
        }
        let bad = |what: &str, e: String| {
            err(
                ErrorKind::InvalidArgument,
                format!(
                    "endpoint `{}`: bad {what} in the state file: {e}",
                    saved.name
                ),
            )
        };
        let ip = parse_addr(&saved.ip).map_err(|e| bad("address", e.to_string()))?;
        let mac = parse_unicast_mac(&saved.mac).map_err(|e| bad("MAC", e.message))?;
        let publishes = saved
            .publish
            .iter()
            .map(|p| parse_publish(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_publishes(&saved.network, &publishes)?;
        let net = self.network(&saved.network)?;
        if net.endpoints.contains_key(&saved.name) || net.mac_in_use(mac) {
            return Err(bad("entry", "it is there twice".into()));
        }
        let tap = TapRequest {
            ifname: saved.ifname.clone(),
            mac,
            ip,
            prefix_len: net.subnet.prefix_len(),
            mtu: net.mtu,
            default_gateway: saved.default_route.then_some(net.gateway),
        };
        let network_id = net.id;
        let net = self.networks.get_mut(&saved.network).expect("looked up");
        net.pool.reserve(ip).map_err(ipam_error)?;
        let netns = std::path::PathBuf::from(&saved.netns);
        let io = match self.provisioner.adopt_tap(&netns, &tap) {
            Ok(io) => io,
            Err(e) => {
                self.release_vip(&saved.network, ip);
                return Err(e);
            }
        };
        let port = self.take_port_id();
        let counters = std::sync::Arc::new(PortCounters::default());
        let mut changes = vec![Change::AddPort {
            cfg: PortConfig {
                id: port,
                network: network_id,
                mac,
                ip,
            },
            io,
            counters: std::sync::Arc::clone(&counters),
        }];
        match self.publish_changes(ip, &publishes) {
            Ok(publish) => changes.extend(publish),
            Err(e) => {
                self.release_vip(&saved.network, ip);
                return Err(e);
            }
        }
        if let Err(e) = self.datapath.apply(changes) {
            self.release_vip(&saved.network, ip);
            return Err(datapath_error(e));
        }
        self.record_publishes(&saved.network, &saved.name, publishes);
        let endpoint = Endpoint {
            name: saved.name.clone(),
            netns,
            netns_id: saved.netns_id,
            ifname: saved.ifname,
            ip,
            mac,
            port,
            counters,
            aliases: saved.aliases,
            resolv_conf: saved.resolv_conf,
            owner: saved.owner,
            default_route: saved.default_route,
        };
        let net = self.networks.get_mut(&saved.network).expect("looked up");
        net.endpoints.insert(saved.name.clone(), endpoint);
        self.refresh_names(&saved.network);
        tracing::info!(endpoint = %saved.name, network = %saved.network, %ip, %mac, "endpoint restored");
        Ok(true)
    }

    /// The first of eth0, eth1, … that the namespace does not have yet.
    fn free_ifname(&self, netns: &std::path::Path) -> ApiResult<String> {
        for n in 0..IFNAME_CANDIDATES {
            let name = format!("eth{n}");
            if !self.provisioner.link_exists(netns, &name)? {
                return Ok(name);
            }
        }
        Err(err(
            ErrorKind::Exhausted,
            format!(
                "the namespace already has eth0 to eth{}: pass --ifname",
                IFNAME_CANDIDATES - 1
            ),
        ))
    }
}

/// The default endpoint name for a namespace given by path:
/// `pid-PID` for `/proc/PID/ns/net`, else the file's name (`X` for
/// `/run/netns/X`).
fn default_name_for_path(path: &std::path::Path) -> String {
    let parts: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => p.to_str(),
            _ => None,
        })
        .collect();
    match parts.as_slice() {
        ["proc", pid, "ns", "net"] if pid.parse::<u32>().is_ok() => format!("pid-{pid}"),
        [.., last] => (*last).to_owned(),
        [] => String::new(),
    }
}

/// A unicast, non-zero MAC address from text.
pub fn parse_unicast_mac(text: &str) -> ApiResult<MacAddr> {
    let mac: MacAddr = text
        .parse()
        .map_err(|e: MacParseError| err(ErrorKind::InvalidArgument, e.to_string()))?;
    if !mac.is_unicast() || mac == MacAddr::ZERO {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!("{mac} is not a unicast MAC address: the first octet must be even and the address non-zero"),
        ));
    }
    Ok(mac)
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
