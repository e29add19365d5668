//! The cluster hooks of [`Control`]: local operations that publish to the
//! [`ClusterStore`](super::ClusterStore) (overlay networks, addresses from
//! leased blocks, endpoints), and the store's [`ClusterEvent`]s applied
//! here (peers, networks and remote endpoints installed as static
//! forwarding and neighbour entries, RFC 7348 §4).

use std::net::Ipv4Addr;

use weft_api::{ErrorKind, StoreInfo};
use weft_datapath::Change;
use weft_packet::MacAddr;

use super::{ClusterEvent, ClusterStore, EndpointRecord, HostRecord, NetworkRecord};
use crate::error::{err, ApiResult};
use crate::ipam::SubnetExt;
use crate::network::NetworkSpec;
use crate::ports::{Datapath, Provisioner};
use crate::state::Control;

/// How many addresses an attach tries before giving up when other hosts
/// keep taking the ones it picks.
const PUBLISH_ATTEMPTS: usize = 16;
/// Most blocks one attach claims looking for a free address.
const CLAIM_ATTEMPTS: usize = 64;

impl<D: Datapath, P: Provisioner> Control<D, P> {
    /// Connects the control plane to a cluster store. Overlay networks and
    /// store peers are then kept in the store rather than the state file.
    pub fn set_cluster(&mut self, store: Box<dyn ClusterStore>) {
        self.cluster = Some(store);
    }

    /// This host's VTEP address, which names it in the store.
    fn own_host(&self) -> Option<Ipv4Addr> {
        self.overlay.vtep_ip()
    }

    /// Whether addresses of `network` come from blocks leased from the
    /// store: overlay networks without an `--ip-range` of their own.
    pub(crate) fn cluster_allocates(&self, network: &str) -> bool {
        self.cluster.is_some()
            && self
                .networks
                .get(network)
                .is_some_and(|n| n.vni.is_some() && n.pool.range().is_none())
    }

    /// Whether `network` is published in the store.
    pub(crate) fn cluster_wide(&self, network: &str) -> bool {
        self.cluster.is_some() && self.networks.get(network).is_some_and(|n| n.vni.is_some())
    }

    /// A free address of `network` from this host's blocks, claiming a new
    /// block when they are full. Not reserved.
    pub(crate) fn cluster_address(&self, network: &str) -> ApiResult<Ipv4Addr> {
        let store = self.cluster.as_ref().expect("cluster_allocates checked");
        let net = self.network(network)?;
        for block in store.blocks(network) {
            if let Some(ip) = net.pool.next_free_in(block) {
                return Ok(ip);
            }
        }
        for _ in 0..CLAIM_ATTEMPTS {
            let block = store.claim_block(network, net.subnet)?;
            if let Some(ip) = net.pool.next_free_in(block) {
                return Ok(ip);
            }
        }
        Err(err(
            ErrorKind::Exhausted,
            format!("network `{network}`: no free address in the blocks this host could lease; detach endpoints or create a larger subnet"),
        ))
    }

    /// Publishes a new local endpoint of a cluster-wide network; `ip` is
    /// reserved in the pool already. With an address picked automatically
    /// (`auto`), one another host took in the meantime stays reserved here
    /// (it is that host's) and the next free one is tried. Returns the
    /// address published, reserved; on error none of this host's
    /// reservations remain.
    pub(crate) fn cluster_publish(
        &mut self,
        network: &str,
        name: &str,
        mut ip: Ipv4Addr,
        mac: MacAddr,
        auto: bool,
    ) -> ApiResult<Ipv4Addr> {
        let result = self.publish_attempts(network, name, &mut ip, mac, auto);
        if result.is_err() {
            if let Some(net) = self.networks.get_mut(network) {
                net.pool.release(ip);
            }
        }
        result.map(|()| ip)
    }

    fn publish_attempts(
        &mut self,
        network: &str,
        name: &str,
        ip: &mut Ipv4Addr,
        mac: MacAddr,
        auto: bool,
    ) -> ApiResult<()> {
        let Some(host) = self.own_host() else {
            return Err(err(
                ErrorKind::System,
                "this host has no VTEP address to publish endpoints under: start the daemon with --vtep-ip",
            ));
        };
        for _ in 0..PUBLISH_ATTEMPTS {
            let rec = EndpointRecord {
                network: network.to_string(),
                name: name.to_string(),
                ip: *ip,
                mac,
                host,
            };
            let store = self.cluster.as_ref().expect("cluster_wide checked");
            match store.publish_endpoint(&rec) {
                Ok(()) => return Ok(()),
                Err(e) if auto && e.kind == ErrorKind::AlreadyExists => {
                    tracing::debug!(ip = %ip, %network, "address taken elsewhere, trying the next");
                    let next = self.cluster_address(network)?;
                    let net = self.networks.get_mut(network).expect("checked by attach");
                    net.pool.reserve(next).map_err(crate::error::ipam_error)?;
                    *ip = next;
                }
                Err(e) => return Err(e),
            }
        }
        Err(err(
            ErrorKind::Conflict,
            format!(
                "network `{network}`: other hosts kept taking the addresses picked here; try again"
            ),
        ))
    }

    /// Withdraws a local endpoint from the store, if the network is
    /// cluster-wide.
    pub(crate) fn cluster_withdraw(&self, network: &str, ip: Ipv4Addr) {
        if let (true, Some(store)) = (self.cluster_wide(network), self.cluster.as_ref()) {
            store.withdraw_endpoint(network, ip);
        }
    }

    /// The store part of `status`.
    pub(crate) fn store_status(&self) -> Option<StoreInfo> {
        self.cluster.as_ref().map(|s| {
            let mut info = s.status();
            info.remote_endpoints = self.remote.endpoints.len();
            info
        })
    }

    /// Applies one change the store's agent saw. Whatever cannot be applied
    /// (a network whose name or subnet clashes with a local one) is logged
    /// and skipped: the store is shared and one host's leftovers must not
    /// stop the others.
    pub fn cluster_event(&mut self, event: ClusterEvent) {
        if let Err(e) = self.apply_cluster_event(event.clone()) {
            tracing::warn!(?event, error = %e.message, "could not apply a change from the store");
        }
    }

    fn apply_cluster_event(&mut self, event: ClusterEvent) -> ApiResult<()> {
        match event {
            ClusterEvent::HostUp(rec) => self.remote_host_up(rec),
            ClusterEvent::HostDown(ip) => self.remote_host_down(ip),
            ClusterEvent::NetworkUp(rec) => self.remote_network_up(rec),
            ClusterEvent::NetworkDown(name) => self.remote_network_down(&name),
            ClusterEvent::EndpointUp(rec) => self.remote_endpoint_up(rec),
            ClusterEvent::EndpointDown { network, ip } => self.remote_endpoint_down(&network, ip),
        }
    }

    fn remote_host_up(&mut self, rec: HostRecord) -> ApiResult<()> {
        let ip = *rec.vtep.ip();
        if Some(ip) == self.own_host() {
            return Ok(());
        }
        self.remote.hosts.insert(ip, rec.clone());
        if !self.overlay.peers.contains_key(&ip) {
            let ours = self.cluster.as_ref().is_none_or(|c| c.remote_csum());
            self.add_peer(&rec.vtep.to_string(), rec.remote_csum && ours)?;
            self.remote.peers.insert(ip);
            tracing::info!(host = %rec.vtep, version = %rec.version, "host joined");
        }
        // Endpoints that arrived before their host.
        for ep in self.remote_endpoints_on(ip) {
            self.install_remote(&ep)?;
        }
        Ok(())
    }

    /// The known remote endpoints of host `ip`.
    fn remote_endpoints_on(&self, ip: Ipv4Addr) -> Vec<EndpointRecord> {
        self.remote
            .endpoints
            .values()
            .filter(|e| e.host == ip)
            .cloned()
            .collect()
    }

    fn remote_host_down(&mut self, ip: Ipv4Addr) -> ApiResult<()> {
        self.remote.hosts.remove(&ip);
        let gone = self.remote_endpoints_on(ip);
        for ep in &gone {
            self.uninstall_remote(ep)?;
        }
        if self.remote.peers.remove(&ip) {
            self.remove_peer(&ip.to_string())?;
            tracing::info!(host = %ip, "host left");
        }
        Ok(())
    }

    fn remote_network_up(&mut self, rec: NetworkRecord) -> ApiResult<()> {
        if let Some(local) = self.networks.get(&rec.name) {
            if local.subnet == rec.subnet && local.vni.map(|v| v.get()) == Some(rec.vni) {
                return Ok(());
            }
            return Err(err(
                ErrorKind::Conflict,
                format!(
                    "the store's network `{}` ({}, VNI {}) clashes with this host's network of that name: remove the local one",
                    rec.name, rec.subnet, rec.vni
                ),
            ));
        }
        self.create_network(NetworkSpec {
            name: rec.name.clone(),
            subnet: rec.subnet.to_string(),
            gateway: Some(rec.gateway.to_string()),
            mtu: Some(rec.mtu),
            internal: rec.internal,
            vni: Some(rec.vni),
            ip_range: None,
            // NAT filtering and limits are each host's own choice: the
            // store's record does not carry them, so this host's defaults.
            nat_filtering: None,
            nat_max_flows: None,
            nat_max_ports: None,
        })?;
        tracing::info!(network = %rec.name, subnet = %rec.subnet, vni = rec.vni, "network created by another host");
        let waiting: Vec<EndpointRecord> = self
            .remote
            .endpoints
            .values()
            .filter(|e| e.network == rec.name)
            .cloned()
            .collect();
        for ep in waiting {
            self.install_remote(&ep)?;
        }
        Ok(())
    }

    fn remote_network_down(&mut self, name: &str) -> ApiResult<()> {
        let Some(net) = self.networks.get(name) else {
            return Ok(());
        };
        if net.vni.is_none() {
            return Ok(());
        }
        if !net.endpoints.is_empty() {
            return Err(err(
                ErrorKind::Conflict,
                format!("network `{name}` was removed from the store but still has endpoints here: detach them"),
            ));
        }
        self.remote.endpoints.retain(|(n, _), _| n != name);
        self.remove_network_now(name)?;
        tracing::info!(network = %name, "network removed by another host");
        Ok(())
    }

    fn remote_endpoint_up(&mut self, rec: EndpointRecord) -> ApiResult<()> {
        if Some(rec.host) == self.own_host() {
            return Ok(());
        }
        let key = (rec.network.clone(), rec.ip);
        if let Some(old) = self.remote.endpoints.get(&key).cloned() {
            if old == rec {
                return self.install_remote(&rec);
            }
            self.uninstall_remote(&old)?;
        }
        self.remote.endpoints.insert(key, rec.clone());
        self.install_remote(&rec)
    }

    fn remote_endpoint_down(&mut self, network: &str, ip: Ipv4Addr) -> ApiResult<()> {
        match self.remote.endpoints.remove(&(network.to_string(), ip)) {
            Some(rec) => self.uninstall_remote(&rec),
            None => Ok(()),
        }
    }

    /// Installs a remote endpoint's MAC on the tunnel toward its host and
    /// its address → MAC binding, in one batch, and keeps its address out
    /// of this host's pool. Waits (does nothing) while its network or host
    /// is not known yet.
    fn install_remote(&mut self, ep: &EndpointRecord) -> ApiResult<()> {
        let Some(net) = self.networks.get_mut(&ep.network) else {
            return Ok(());
        };
        let Some(&port) = net.tunnels.get(&ep.host) else {
            return Ok(());
        };
        if net.subnet.is_host(ep.ip) && !net.pool.is_taken(ep.ip) {
            let _ = net.pool.reserve(ep.ip);
        }
        let id = net.id;
        self.datapath
            .apply(vec![
                Change::SetStaticMac {
                    network: id,
                    mac: ep.mac,
                    port,
                },
                Change::SetStaticNeighbor {
                    network: id,
                    ip: ep.ip,
                    mac: ep.mac,
                },
            ])
            .map_err(crate::error::datapath_error)?;
        tracing::debug!(network = %ep.network, ip = %ep.ip, mac = %ep.mac, host = %ep.host, "remote endpoint installed");
        Ok(())
    }

    /// Takes a remote endpoint's entries away and frees its address here.
    fn uninstall_remote(&mut self, ep: &EndpointRecord) -> ApiResult<()> {
        let Some(net) = self.networks.get_mut(&ep.network) else {
            return Ok(());
        };
        if !net.endpoints.values().any(|e| e.ip == ep.ip) && net.gateway != ep.ip {
            net.pool.release(ep.ip);
        }
        let id = net.id;
        self.datapath
            .apply(vec![
                Change::ClearMac {
                    network: id,
                    mac: ep.mac,
                },
                Change::ClearNeighbor {
                    network: id,
                    ip: ep.ip,
                },
            ])
            .map_err(crate::error::datapath_error)?;
        tracing::debug!(network = %ep.network, ip = %ep.ip, "remote endpoint withdrawn");
        Ok(())
    }

    /// The record of a local overlay network, to publish.
    pub(crate) fn network_record(&self, name: &str) -> ApiResult<NetworkRecord> {
        let net = self.network(name)?;
        Ok(NetworkRecord {
            name: net.name.clone(),
            subnet: net.subnet,
            gateway: net.gateway,
            mtu: net.mtu,
            internal: net.internal,
            vni: net.vni.map(|v| v.get()).unwrap_or_default(),
        })
    }
}
