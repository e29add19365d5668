//! NAT control: the uplink, published ports, service VIPs and the
//! connection-tracking listing. The datapath does the translating (SNAT
//! with endpoint ports kept where free, DNAT keeping the client address,
//! RFC 4787 / RFC 5382 terms); this module validates requests, keeps the
//! registry, and tells the datapath.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use crate::ipam::parse_addr;
use weft_api::{ApiError, ErrorKind, FlowEntry, FlushInfo, PublishInfo, ServiceInfo, UplinkInfo};
use weft_datapath::Change;
use weft_nat::Protocol;
use weft_packet::{stable_hash, MacAddr};
use weft_switch::counters::PortCounters;
use weft_switch::switch::{conntrack_time, LoadBalance, ServiceConfig, UplinkConfig};

use crate::error::{check_name, datapath_error, err, ApiResult};
use crate::ports::{Datapath, Provisioner, SocketUplinkConfig};
use crate::state::{Control, Publish, Service, Uplink};

/// A parsed `HOSTPORT:PORT[/proto]`.
pub fn parse_publish(spec: &str) -> ApiResult<Publish> {
    let bad = || {
        err(
            ErrorKind::InvalidArgument,
            format!("`{spec}` is not a port to publish: expected HOSTPORT:PORT[/tcp|/udp], e.g. 8080:80 or 5353:53/udp"),
        )
    };
    let (ports, proto) = split_proto(spec).ok_or_else(bad)?;
    let (host, port) = ports.split_once(':').ok_or_else(bad)?;
    let host_port: u16 = host.parse().map_err(|_| bad())?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host_port == 0 || port == 0 {
        return Err(bad());
    }
    Ok(Publish {
        proto,
        host_port,
        port,
        host_ip: None,
    })
}

/// Splits `X[/tcp|/udp]`.
fn split_proto(spec: &str) -> Option<(&str, Protocol)> {
    match spec.rsplit_once('/') {
        Some((rest, p)) if p.eq_ignore_ascii_case("tcp") => Some((rest, Protocol::Tcp)),
        Some((rest, p)) if p.eq_ignore_ascii_case("udp") => Some((rest, Protocol::Udp)),
        Some(_) => None,
        None => Some((spec, Protocol::Tcp)),
    }
}

fn parse_prefixed(text: &str) -> Result<(Ipv4Addr, u8), ApiError> {
    let bad = || {
        err(
            ErrorKind::InvalidArgument,
            format!("`{text}` is not IP/PREFIX, e.g. 192.168.1.50/24"),
        )
    };
    let (ip, prefix) = text.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if prefix > 32 || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err(bad());
    }
    Ok((ip, prefix))
}

/// The socket uplink's own address unless told otherwise (the address
/// slirp4netns gives its guest).
pub const SOCKET_UPLINK_IP: &str = "10.0.2.15/24";
/// The host's side of the socket uplink unless told otherwise: endpoints
/// reach the host's loopback at this address, and loopback clients of
/// published ports appear as it.
pub const SOCKET_UPLINK_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// Services by name.
type ServicesByName = Vec<(String, Service)>;

impl<D: Datapath, P: Provisioner> Control<D, P> {
    /// `uplink set`: opens `interface` as the uplink, weft owning `ip`
    /// (`IP/PREFIX`) there, with `gateway` as next hop. Replaces any
    /// uplink.
    pub fn uplink_set(
        &mut self,
        interface: &str,
        ip: &str,
        gateway: Option<&str>,
    ) -> ApiResult<UplinkInfo> {
        self.uplink_set_kind(interface, ip, gateway, false)
    }

    /// `uplink set --sockets`: the socket uplink, weft's side `ip`
    /// (`IP/PREFIX`, default [`SOCKET_UPLINK_IP`]), the host's side
    /// `gateway` (default [`SOCKET_UPLINK_HOST`]).
    pub fn uplink_set_sockets(
        &mut self,
        ip: Option<&str>,
        gateway: Option<&str>,
    ) -> ApiResult<UplinkInfo> {
        self.uplink_set_kind("", ip.unwrap_or(""), gateway, true)
    }

    /// `uplink set`, either kind.
    pub fn uplink_set_kind(
        &mut self,
        interface: &str,
        ip: &str,
        gateway: Option<&str>,
        sockets: bool,
    ) -> ApiResult<UplinkInfo> {
        if sockets && !interface.is_empty() {
            return Err(err(
                ErrorKind::InvalidArgument,
                "give either --sockets or --interface IF, not both",
            ));
        }
        if !sockets && interface.is_empty() {
            return Err(err(
                ErrorKind::InvalidArgument,
                "say what to reach the world through: --interface IF --ip IP/PREFIX (an interface weft reads with AF_PACKET, needs CAP_NET_RAW), or --sockets (the daemon's own host sockets, no privilege)",
            ));
        }
        if !sockets && ip.is_empty() {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!(
                    "--interface {interface} needs weft's address on that link: --ip IP/PREFIX"
                ),
            ));
        }
        let ip_text = if ip.is_empty() { SOCKET_UPLINK_IP } else { ip };
        let (ip, prefix_len) = parse_prefixed(ip_text)?;
        let gateway = match gateway {
            Some(g) => {
                Some(parse_addr(g).map_err(|e| err(ErrorKind::InvalidArgument, e.to_string()))?)
            }
            None if sockets => Some(SOCKET_UPLINK_HOST),
            None => None,
        };
        if let Some(net) = self.networks.values().find(|n| n.subnet.contains(&ip)) {
            return Err(err(
                ErrorKind::Conflict,
                format!("{ip} is inside network `{}`: the uplink address must be outside weft's networks (pass another --ip)", net.name),
            ));
        }
        let seed_name = if sockets { "sockets" } else { interface };
        let mac = MacAddr::local_from_seed(stable_hash(&["uplink", seed_name, &ip.to_string()]));
        let device = if sockets {
            let host_ip = gateway.expect("set above for sockets");
            if host_ip == ip {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    format!("--gateway {host_ip} is the uplink's own address: the host side needs another"),
                ));
            }
            if let Some(net) = self.networks.values().find(|n| n.subnet.contains(&host_ip)) {
                return Err(err(
                    ErrorKind::Conflict,
                    format!("{host_ip} is inside network `{}`: the host's side of the socket uplink must be outside weft's networks (pass another --gateway)", net.name),
                ));
            }
            self.provisioner.open_socket_uplink(SocketUplinkConfig {
                uplink_ip: ip,
                uplink_mac: mac,
                host_ip,
                host_mac: MacAddr::local_from_seed(stable_hash(&[
                    "uplink-host",
                    &host_ip.to_string(),
                ])),
                max_flows: weft_hostnet::uplink::DEFAULT_MAX_FLOWS,
            })?
        } else {
            self.provisioner.open_uplink(interface)?
        };
        let mtu = device.mtu;
        let socket_counters = device.socket_counters;
        let id = self.take_port_id();
        let counters = Arc::new(PortCounters::default());
        let cfg = UplinkConfig {
            port: id,
            ip,
            prefix_len,
            mac,
            gateway,
            mtu,
        };
        let mut changes = vec![Change::SetUplink {
            cfg,
            io: device.port,
            counters: Arc::clone(&counters),
        }];
        if sockets {
            // Ports published before keep working through the new uplink.
            let all: Vec<Publish> = self.nat.publishes.values().flatten().cloned().collect();
            for p in &all {
                changes.push(Change::Listen(self.bind_published(p)?));
            }
        }
        self.datapath.apply(changes).map_err(datapath_error)?;
        self.nat.uplink = Some(Uplink {
            counters,
            interface: interface.to_string(),
            sockets,
            ip,
            prefix_len,
            mac,
            gateway,
            mtu,
            port: id,
            socket_counters,
        });
        tracing::info!(%interface, sockets, %ip, prefix_len, %mac, "uplink set");
        self.uplink_show()
    }

    /// Binds the host socket of a port published through the socket
    /// uplink, with refusals that say what to do.
    fn bind_published(&self, p: &Publish) -> ApiResult<weft_datapath::port::HostListener> {
        let host = SocketAddrV4::new(p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), p.host_port);
        self.provisioner.listen_host(p.proto == Protocol::Tcp, host)
    }

    /// `uplink show`.
    pub fn uplink_show(&self) -> ApiResult<UplinkInfo> {
        let u = self.nat.uplink.as_ref().ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                "no uplink is set: set one with `weft uplink set --sockets` (no privilege needed) or `weft uplink set --interface IF --ip IP/PREFIX`",
            )
        })?;
        Ok(UplinkInfo {
            interface: u.interface.clone(),
            sockets: u.sockets,
            ip: weft_api::Ipv4Net::new(u.ip, u.prefix_len).expect("prefix checked when set"),
            mac: u.mac.to_string(),
            gateway: u.gateway,
            mtu: u.mtu,
            port: u.port.0,
        })
    }

    /// `uplink rm`: egress, published ports and services stop reaching out.
    pub fn uplink_remove(&mut self) -> ApiResult<UplinkInfo> {
        let info = self.uplink_show()?;
        self.datapath
            .apply(vec![Change::RemoveUplink])
            .map_err(datapath_error)?;
        self.nat.uplink = None;
        Ok(info)
    }

    /// Checks that `list` can be published for an endpoint of `network`
    /// (not internal, no host port taken, none twice).
    pub(crate) fn check_publishes(&self, network: &str, list: &[Publish]) -> ApiResult<()> {
        if !list.is_empty() && self.network(network)?.internal {
            return Err(err(
                ErrorKind::Conflict,
                format!("network `{network}` is internal: nothing reaches it from outside, so its ports cannot be published"),
            ));
        }
        if !list.is_empty() && self.nat.uplink.is_none() {
            return Err(err(
                ErrorKind::Conflict,
                "no uplink is set, so a published port would reach nothing: set one first with `weft uplink set --sockets` (the daemon's host sockets, no privilege needed) or `weft uplink set --interface IF --ip IP/PREFIX`",
            ));
        }
        for (i, p) in list.iter().enumerate() {
            if let Some((net, ep)) = self.nat.owner_of(p.proto, p.host_port) {
                return Err(err(
                    ErrorKind::AlreadyExists,
                    format!(
                        "host port {}/{} is already published for {ep} in {net}: pick another host port",
                        p.host_port,
                        p.proto.name()
                    ),
                ));
            }
            if list[..i]
                .iter()
                .any(|q| q.proto == p.proto && q.host_port == p.host_port)
            {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    format!(
                        "host port {}/{} is given twice",
                        p.host_port,
                        p.proto.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The changes that publish already-checked ports to `ip`: with the
    /// socket uplink, each with its bound host socket.
    pub(crate) fn publish_changes(&self, ip: Ipv4Addr, list: &[Publish]) -> ApiResult<Vec<Change>> {
        let sockets = self.nat.uplink.as_ref().is_some_and(|u| u.sockets);
        let mut changes = Vec::with_capacity(list.len() * 2);
        for p in list {
            changes.push(Change::Publish {
                proto: p.proto,
                host_port: p.host_port,
                target: SocketAddrV4::new(ip, p.port),
            });
            if sockets {
                changes.push(Change::Listen(self.bind_published(p)?));
            }
        }
        Ok(changes)
    }

    /// Records ports the datapath has published for an endpoint.
    pub(crate) fn record_publishes(&mut self, network: &str, endpoint: &str, list: Vec<Publish>) {
        if !list.is_empty() {
            self.nat
                .publishes
                .entry((network.to_string(), endpoint.to_string()))
                .or_default()
                .extend(list);
        }
    }

    /// Publishes already-checked ports of an endpoint at `ip`, as one batch.
    pub(crate) fn apply_publishes(
        &mut self,
        network: &str,
        endpoint: &str,
        ip: Ipv4Addr,
        list: Vec<Publish>,
    ) -> ApiResult<()> {
        let changes = self.publish_changes(ip, &list)?;
        self.datapath.apply(changes).map_err(datapath_error)?;
        self.record_publishes(network, endpoint, list);
        Ok(())
    }

    /// `publish add`: publishes `spec` (`HOSTPORT:PORT[/proto]`) of an endpoint.
    pub fn publish_add(
        &mut self,
        network: &str,
        endpoint: &str,
        spec: &str,
    ) -> ApiResult<PublishInfo> {
        self.publish_add_on(network, endpoint, spec, None)
    }

    /// `publish add --host-ip IP`: as [`Self::publish_add`], the socket
    /// uplink listening on `host_ip` only.
    pub fn publish_add_on(
        &mut self,
        network: &str,
        endpoint: &str,
        spec: &str,
        host_ip: Option<&str>,
    ) -> ApiResult<PublishInfo> {
        let ip = self.endpoint_ip(network, endpoint)?;
        let mut p = parse_publish(spec)?;
        if let Some(text) = host_ip {
            let addr: Ipv4Addr = text.parse().map_err(|_| {
                err(
                    ErrorKind::InvalidArgument,
                    format!("`{text}` is not an IPv4 address for --host-ip"),
                )
            })?;
            if !self.nat.uplink.as_ref().is_some_and(|u| u.sockets) {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    "--host-ip needs the socket uplink (`weft uplink set --sockets`); an interface uplink publishes on its own address",
                ));
            }
            p.host_ip = Some(addr);
        }
        self.check_publishes(network, std::slice::from_ref(&p))?;
        self.apply_publishes(network, endpoint, ip, vec![p.clone()])?;
        Ok(publish_info(network, endpoint, ip, &p))
    }

    /// `publish rm`: `spec` is `HOSTPORT[/proto]`.
    pub fn publish_remove(
        &mut self,
        network: &str,
        endpoint: &str,
        spec: &str,
    ) -> ApiResult<PublishInfo> {
        let ip = self.endpoint_ip(network, endpoint)?;
        let bad = || {
            err(
                ErrorKind::InvalidArgument,
                format!("`{spec}` is not HOSTPORT[/tcp|/udp]"),
            )
        };
        let (port, proto) = split_proto(spec).ok_or_else(bad)?;
        let host_port: u16 = port.parse().map_err(|_| bad())?;
        let key = (network.to_string(), endpoint.to_string());
        let Some(list) = self.nat.publishes.get(&key) else {
            return Err(not_published(network, endpoint, spec));
        };
        let Some(index) = list
            .iter()
            .position(|p| p.proto == proto && p.host_port == host_port)
        else {
            return Err(not_published(network, endpoint, spec));
        };
        let mut changes = vec![Change::Unpublish { proto, host_port }];
        if self.nat.uplink.as_ref().is_some_and(|u| u.sockets) {
            changes.push(Change::Unlisten {
                tcp: proto == Protocol::Tcp,
                host_port,
            });
        }
        self.datapath.apply(changes).map_err(datapath_error)?;
        let list = self.nat.publishes.get_mut(&key).expect("looked up above");
        let p = list.remove(index);
        if list.is_empty() {
            self.nat.publishes.remove(&key);
        }
        Ok(publish_info(network, endpoint, ip, &p))
    }

    /// The changes that unpublish everything of a detaching endpoint.
    pub(crate) fn unpublish_changes(&self, network: &str, endpoint: &str) -> Vec<Change> {
        let key = (network.to_string(), endpoint.to_string());
        let sockets = self.nat.uplink.as_ref().is_some_and(|u| u.sockets);
        let mut changes = Vec::new();
        for p in self.nat.publishes.get(&key).into_iter().flatten() {
            changes.push(Change::Unpublish {
                proto: p.proto,
                host_port: p.host_port,
            });
            if sockets {
                changes.push(Change::Unlisten {
                    tcp: p.proto == Protocol::Tcp,
                    host_port: p.host_port,
                });
            }
        }
        changes
    }

    /// Forgets the published ports of a detached endpoint.
    pub(crate) fn forget_publishes(&mut self, network: &str, endpoint: &str) {
        self.nat
            .publishes
            .remove(&(network.to_string(), endpoint.to_string()));
    }

    /// `publish ls`.
    pub fn publish_list(&self) -> Vec<PublishInfo> {
        let mut rows = Vec::new();
        for ((network, endpoint), list) in &self.nat.publishes {
            let ip = self
                .endpoint_ip(network, endpoint)
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            rows.extend(list.iter().map(|p| publish_info(network, endpoint, ip, p)));
        }
        rows
    }

    /// `service create`: a VIP in `network` balancing `port` over backends.
    pub fn service_create(
        &mut self,
        name: &str,
        network: &str,
        vip: &str,
        port: &str,
        backends: &[String],
        lb: Option<&str>,
    ) -> ApiResult<ServiceInfo> {
        check_name("service", name)?;
        if self.nat.services.contains_key(name) {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!("a service named `{name}` already exists: remove it first with `weft service rm {name}`"),
            ));
        }
        let net = self.network(network)?;
        let vip = parse_addr(vip).map_err(|e| err(ErrorKind::InvalidArgument, e.to_string()))?;
        net.check_vip(vip)?;
        if let Some(other) = self.nat.vip_in_use(network, vip) {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!("{vip} is already the VIP of service `{other}`"),
            ));
        }
        let bad_port = || {
            err(
                ErrorKind::InvalidArgument,
                format!("`{port}` is not PORT[/tcp|/udp], e.g. 80 or 53/udp"),
            )
        };
        let (p, proto) = split_proto(port).ok_or_else(bad_port)?;
        let port: u16 = p.parse().map_err(|_| bad_port())?;
        if port == 0 {
            return Err(bad_port());
        }
        let lb = match lb.unwrap_or("rr") {
            "rr" | "round-robin" => LoadBalance::RoundRobin,
            "hash" => LoadBalance::Hash,
            other => {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    format!("`{other}` is not a load-balancing method: use rr or hash"),
                ))
            }
        };
        for b in backends {
            self.endpoint_ip(network, b)?;
        }
        let mut unique = backends.to_vec();
        unique.dedup();
        self.reserve_vip(network, vip)?;
        let service = Service {
            network: network.to_string(),
            vip,
            proto,
            port,
            backends: unique,
            lb,
        };
        if let Err(e) = self.push_service(&service) {
            self.release_vip(network, vip);
            return Err(e);
        }
        self.nat.services.insert(name.to_string(), service);
        self.refresh_names(network);
        Ok(self.service_info(name))
    }

    fn push_service(&self, s: &Service) -> ApiResult<()> {
        let change = self.service_change(s)?;
        self.datapath.apply(vec![change]).map_err(datapath_error)
    }

    /// The change that gives the datapath service `s` (its backends by
    /// address).
    fn service_change(&self, s: &Service) -> ApiResult<Change> {
        let net = self.network(&s.network)?;
        let backends = s
            .backends
            .iter()
            .filter_map(|b| self.endpoint_ip(&s.network, b).ok())
            .collect();
        Ok(Change::SetService(ServiceConfig {
            network: net.id,
            vip: s.vip,
            proto: s.proto,
            port: s.port,
            backends,
            lb: s.lb,
        }))
    }

    fn service_info(&self, name: &str) -> ServiceInfo {
        let s = &self.nat.services[name];
        ServiceInfo {
            name: name.to_string(),
            network: s.network.clone(),
            vip: s.vip,
            proto: s.proto.name().to_string(),
            port: s.port,
            backends: s.backends.clone(),
            lb: crate::state::lb_name(s.lb).to_string(),
        }
    }

    fn service(&self, name: &str) -> ApiResult<&Service> {
        self.nat.services.get(name).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("no service named `{name}`: see `weft service ls`"),
            )
        })
    }

    /// `service ls`.
    pub fn service_list(&self) -> Vec<ServiceInfo> {
        self.nat
            .services
            .keys()
            .map(|n| self.service_info(n))
            .collect()
    }

    /// `service rm`.
    pub fn service_remove(&mut self, name: &str) -> ApiResult<ServiceInfo> {
        let s = self.service(name)?;
        let info = self.service_info(name);
        let (vip, proto, port, network) = (s.vip, s.proto, s.port, s.network.clone());
        self.datapath
            .apply(vec![Change::RemoveService { vip, proto, port }])
            .map_err(datapath_error)?;
        self.nat.services.remove(name);
        self.release_vip(&network, vip);
        self.refresh_names(&network);
        Ok(info)
    }

    /// `service backend add|rm`.
    pub fn service_backend(
        &mut self,
        name: &str,
        endpoint: &str,
        add: bool,
    ) -> ApiResult<ServiceInfo> {
        let s = self.service(name)?;
        let network = s.network.clone();
        if add {
            self.endpoint_ip(&network, endpoint)?;
            if s.backends.iter().any(|b| b == endpoint) {
                return Err(err(
                    ErrorKind::AlreadyExists,
                    format!("`{endpoint}` is already a backend of `{name}`"),
                ));
            }
        } else if !s.backends.iter().any(|b| b == endpoint) {
            return Err(err(
                ErrorKind::NotFound,
                format!("`{endpoint}` is not a backend of `{name}`: see `weft service ls`"),
            ));
        }
        let mut updated = Service {
            network: s.network.clone(),
            vip: s.vip,
            proto: s.proto,
            port: s.port,
            backends: s.backends.clone(),
            lb: s.lb,
        };
        if add {
            updated.backends.push(endpoint.to_string());
        } else {
            updated.backends.retain(|b| b != endpoint);
        }
        self.push_service(&updated)?;
        self.nat.services.insert(name.to_string(), updated);
        Ok(self.service_info(name))
    }

    /// The services a detaching endpoint backs, without it: their names,
    /// and the changes that give them to the datapath.
    pub(crate) fn services_without(
        &self,
        network: &str,
        endpoint: &str,
    ) -> ApiResult<(ServicesByName, Vec<Change>)> {
        let mut updated = Vec::new();
        let mut changes = Vec::new();
        for (name, s) in &self.nat.services {
            if s.network != network || !s.backends.iter().any(|b| b == endpoint) {
                continue;
            }
            let mut without = s.clone();
            without.backends.retain(|b| b != endpoint);
            changes.push(self.service_change(&without)?);
            updated.push((name.clone(), without));
        }
        Ok((updated, changes))
    }

    /// Records the services [`Control::services_without`] updated.
    pub(crate) fn record_services(&mut self, updated: ServicesByName) {
        self.nat.services.extend(updated);
    }

    /// `conntrack`: the tracked connections.
    pub fn conntrack_list(&self) -> ApiResult<Vec<FlowEntry>> {
        let now = conntrack_time(Instant::now());
        let rows: Vec<FlowEntry> = self
            .datapath
            .conntrack_snapshot()
            .map_err(datapath_error)?
            .into_iter()
            .map(|f| {
                let t = |k: &weft_nat::FlowKey| format!("{} -> {}", k.src, k.dst);
                let translated = f.translated() != f.original;
                FlowEntry {
                    proto: f.original.proto.name().to_string(),
                    original: t(&f.original),
                    reply: t(&f.reply),
                    translated,
                    state: f.state.to_string(),
                    age_secs: (f.age(now).as_secs_f64() * 10.0).round() / 10.0,
                    expires_secs: (f.remaining(now).as_secs_f64() * 10.0).round() / 10.0,
                    orig_packets: f.orig_counters.packets,
                    orig_bytes: f.orig_counters.bytes,
                    reply_packets: f.reply_counters.packets,
                    reply_bytes: f.reply_counters.bytes,
                }
            })
            .collect();
        Ok(rows)
    }

    /// `conntrack flush`: forgets every tracked connection.
    pub fn conntrack_flush(&self) -> ApiResult<FlushInfo> {
        let flushed = self.datapath.conntrack_flush().map_err(datapath_error)?;
        Ok(FlushInfo { flushed })
    }
}

fn not_published(network: &str, endpoint: &str, spec: &str) -> ApiError {
    err(
        ErrorKind::NotFound,
        format!("{spec} is not published for {endpoint} in {network}: see `weft publish ls`"),
    )
}

fn publish_info(network: &str, endpoint: &str, ip: Ipv4Addr, p: &Publish) -> PublishInfo {
    PublishInfo {
        network: network.to_string(),
        endpoint: endpoint.to_string(),
        proto: p.proto.name().to_string(),
        host_port: p.host_port,
        port: p.port,
        target: SocketAddrV4::new(ip, p.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_parse() {
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            Publish {
                proto: Protocol::Tcp,
                host_port: 8080,
                port: 80,
                host_ip: None,
            }
        );
        assert_eq!(parse_publish("5353:53/UDP").unwrap().proto, Protocol::Udp);
        for bad in [
            "80",
            "0:80",
            "8080:0",
            "a:b",
            "8080:80/sctp",
            "70000:80",
            "",
        ] {
            let e = parse_publish(bad).unwrap_err();
            assert!(e.message.contains(bad), "{}", e.message);
        }
    }
}
