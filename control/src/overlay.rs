//! Overlay networks across hosts (RFC 7348): the VTEP socket, the peers,
//! and the tunnel ports that join them.
//!
//! Every overlay network has one tunnel port per peer. The VTEP socket is
//! bound on first need (the first overlay network or peer), so daemons that
//! never use VXLAN never hold port 4789. Peers are static, as with
//! `ip link add … type vxlan remote …`; the forwarding database can also be
//! fed (`fdb add`, `neighbor add`) by whatever control plane runs above.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;

use crate::ipam::parse_addr;
use weft_api::{ErrorKind, NeighborEntry, PeerInfo, StaticMac, StaticNeighbor};
use weft_datapath::Change;
use weft_switch::counters::PortCounters;
use weft_switch::switch::TunnelConfig;
use weft_switch::{NetworkId, PortId};
use weft_vtep::{Vni, VXLAN_UDP_PORT};

use crate::endpoint::parse_unicast_mac;
use crate::error::{datapath_error, err, ApiResult};
use crate::ports::{Datapath, Provisioner};
use crate::state::{Control, Network, Peer};

/// `--vtep-ip` if given, else the listen address if specific, else the
/// address of the interface holding the default route.
pub fn resolve_vtep_ip(listen: SocketAddrV4, given: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    given
        .or_else(|| (!listen.ip().is_unspecified()).then_some(*listen.ip()))
        .or_else(default_route_address)
}

/// The source address the kernel would use toward the rest of the world:
/// connecting a UDP socket only looks up a route, it sends nothing.
/// 192.0.2.1 is TEST-NET-1 (RFC 5737), never a real destination.
fn default_route_address() -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:4789").ok()?;
    match socket.local_addr().ok()? {
        std::net::SocketAddr::V4(a) if !a.ip().is_unspecified() => Some(*a.ip()),
        _ => None,
    }
}

/// Parses `IP` or `IP:PORT`.
fn parse_peer(text: &str) -> ApiResult<SocketAddrV4> {
    let bad = || {
        err(
            ErrorKind::InvalidArgument,
            format!("`{text}` is not a peer address: expected IP or IP:PORT, e.g. 192.168.1.20 or 192.168.1.20:4789"),
        )
    };
    if let Ok(addr) = text.trim().parse::<SocketAddrV4>() {
        if addr.port() == 0 {
            return Err(bad());
        }
        return Ok(addr);
    }
    let ip: Ipv4Addr = text.trim().parse().map_err(|_| bad())?;
    Ok(SocketAddrV4::new(ip, VXLAN_UDP_PORT))
}

impl<D: Datapath, P: Provisioner> Control<D, P> {
    /// Binds the VTEP socket if it is not bound yet.
    pub(crate) fn ensure_vtep(&mut self) -> ApiResult<()> {
        if self.overlay.bound.is_some() {
            return Ok(());
        }
        let listen = self.overlay.settings.listen;
        let socket = self.provisioner.bind_vtep(listen)?;
        let local = socket.local_addr();
        self.datapath
            .apply(vec![Change::BindVtep(socket)])
            .map_err(datapath_error)?;
        self.overlay.bound = Some(local);
        tracing::info!(%local, "serving VXLAN");
        Ok(())
    }

    /// Checks a VNI for a new overlay network.
    pub(crate) fn check_new_vni(&self, value: u32) -> ApiResult<Vni> {
        let vni = Vni::new(value).map_err(|_| {
            err(
                ErrorKind::InvalidArgument,
                format!("VNI {value} is out of range: use 1 to 16777215 (24 bits, RFC 7348 §5)"),
            )
        })?;
        if value == 0 {
            return Err(err(
                ErrorKind::InvalidArgument,
                "VNI 0 is reserved here: use 1 to 16777215",
            ));
        }
        if let Some(other) = self.networks.values().find(|n| n.vni == Some(vni)) {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!(
                    "VNI {value} is already used by network `{}`: pick another",
                    other.name
                ),
            ));
        }
        Ok(vni)
    }

    /// The change that adds the tunnel of overlay network `id` (VNI `vni`)
    /// toward `peer`, with the port it takes.
    pub(crate) fn tunnel_change(
        &mut self,
        id: NetworkId,
        vni: Vni,
        peer: Ipv4Addr,
    ) -> (Change, PortId) {
        let Peer {
            addr, remote_csum, ..
        } = self.overlay.peers[&peer];
        let max_ip_len = self.overlay.max_inner_ip_len();
        let port = self.take_port_id();
        let change = Change::AddTunnel {
            cfg: TunnelConfig {
                id: port,
                network: id,
                max_ip_len,
            },
            vni,
            peer: addr,
            remote_csum,
        };
        (change, port)
    }

    fn overlay_networks(&self) -> Vec<String> {
        self.networks
            .values()
            .filter(|n| n.vni.is_some())
            .map(|n| n.name.clone())
            .collect()
    }

    /// `peer add`: adds a remote VTEP (`IP` or `IP:PORT`, default port
    /// 4789), with a tunnel for every overlay network, and saves it. With
    /// `remote_csum`, datagrams to it carry remote checksum offload
    /// (draft-herbert-vxlan-rco): only for a peer that takes it (weft, or
    /// a Linux VTEP with `remcsumrx`), since any other drops them.
    pub fn peer_add(&mut self, text: &str, remote_csum: bool) -> ApiResult<PeerInfo> {
        let info = self.add_peer(text, remote_csum)?;
        if let Err(e) = self.save() {
            let ip = parse_peer(text)?.ip().to_string();
            let _ = self.remove_peer(&ip);
            return Err(e);
        }
        Ok(info)
    }

    /// `peer rm`: removes a peer and its tunnels, and saves it.
    pub fn peer_remove(&mut self, ip: &str) -> ApiResult<PeerInfo> {
        let info = self.remove_peer(ip)?;
        if let Err(e) = self.save() {
            let _ = self.add_peer(&info.addr, info.remote_csum);
            return Err(e);
        }
        Ok(info)
    }

    /// Adds a peer (not saved): `IP` or `IP:PORT`, default port 4789.
    pub(crate) fn add_peer(&mut self, text: &str, remote_csum: bool) -> ApiResult<PeerInfo> {
        let addr = parse_peer(text)?;
        let ip = *addr.ip();
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("{ip} cannot be a peer: give the unicast address of another host's VTEP"),
            ));
        }
        if self.overlay.peers.contains_key(&ip) {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!("{ip} is already a peer: remove it first with `weft peer rm {ip}` to change its port"),
            ));
        }
        if Some(ip) == self.overlay.vtep_ip() {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("{ip} is this host's own VTEP address: peers are the other hosts"),
            ));
        }
        self.ensure_vtep()?;
        let counters = Arc::new(PortCounters::default());
        // The peer and its tunnels reach the datapath as one batch.
        self.overlay.peers.insert(
            ip,
            Peer {
                addr,
                remote_csum,
                counters: Arc::clone(&counters),
            },
        );
        let mut changes = vec![Change::AddPeer { ip, counters }];
        let mut tunnels = Vec::new();
        for network in self.overlay_networks() {
            let net = &self.networks[&network];
            let (id, vni) = (net.id, net.vni.expect("overlay network"));
            let (change, port) = self.tunnel_change(id, vni, ip);
            changes.push(change);
            tunnels.push((network, port));
        }
        if let Err(e) = self.datapath.apply(changes) {
            self.overlay.peers.remove(&ip);
            return Err(datapath_error(e));
        }
        for (network, port) in tunnels {
            if let Some(net) = self.networks.get_mut(&network) {
                net.tunnels.insert(ip, port);
            }
        }
        tracing::info!(peer = %addr, remote_csum, "peer added");
        Ok(self.peer_info(&self.overlay.peers[&ip]))
    }

    /// Removes a peer (not saved).
    pub(crate) fn remove_peer(&mut self, text: &str) -> ApiResult<PeerInfo> {
        let ip = parse_addr(text).map_err(|e| err(ErrorKind::InvalidArgument, e.to_string()))?;
        let Some(peer) = self.overlay.peers.get(&ip) else {
            return Err(err(
                ErrorKind::NotFound,
                format!("{ip} is not a peer: see `weft peer ls`"),
            ));
        };
        let info = self.peer_info(peer);
        // Its tunnels and the peer leave the datapath as one batch.
        let mut changes: Vec<Change> = self
            .networks
            .values()
            .filter_map(|n| n.tunnels.get(&ip))
            .map(|&port| Change::RemovePort(port))
            .collect();
        changes.push(Change::RemovePeer(ip));
        self.datapath.apply(changes).map_err(datapath_error)?;
        for net in self.networks.values_mut() {
            net.tunnels.remove(&ip);
        }
        self.overlay.peers.remove(&ip);
        tracing::info!(peer = %ip, "peer removed");
        Ok(info)
    }

    fn peer_info(&self, peer: &Peer) -> PeerInfo {
        let snap = peer.counters.snapshot();
        PeerInfo {
            addr: peer.addr.to_string(),
            remote_csum: peer.remote_csum,
            rx_packets: snap.rx_packets,
            rx_bytes: snap.rx_bytes,
            tx_packets: snap.tx_packets,
            tx_bytes: snap.tx_bytes,
            drops: snap.drops_by_name(),
        }
    }

    /// `peer ls`: the peers and their traffic.
    pub fn peer_list(&self) -> Vec<PeerInfo> {
        self.overlay
            .peers
            .values()
            .map(|p| self.peer_info(p))
            .collect()
    }

    fn overlay_network(&self, name: &str) -> ApiResult<&Network> {
        let net = self.network(name)?;
        if net.vni.is_none() {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("network `{name}` is not an overlay network (created without --vni)"),
            ));
        }
        Ok(net)
    }

    /// `fdb add`: `mac` of an overlay network sits behind VTEP `vtep`.
    pub fn fdb_add(&mut self, network: &str, mac: &str, vtep: &str) -> ApiResult<StaticMac> {
        let net = self.overlay_network(network)?;
        let mac = parse_unicast_mac(mac)?;
        let ip = parse_addr(vtep).map_err(|e| err(ErrorKind::InvalidArgument, e.to_string()))?;
        let Some(&port) = net.tunnels.get(&ip) else {
            return Err(err(
                ErrorKind::NotFound,
                format!("{ip} is not a peer: add it first with `weft peer add {ip}`"),
            ));
        };
        let id = net.id;
        self.datapath
            .apply(vec![Change::SetStaticMac {
                network: id,
                mac,
                port,
            }])
            .map_err(datapath_error)?;
        Ok(StaticMac {
            network: network.to_string(),
            mac: mac.to_string(),
            vtep: ip,
        })
    }

    /// `neighbor add`: an IP → MAC binding, for ARP suppression and routing.
    pub fn neighbor_add(
        &mut self,
        network: &str,
        ip: &str,
        mac: &str,
    ) -> ApiResult<StaticNeighbor> {
        let net = self.overlay_network(network)?;
        let mac = parse_unicast_mac(mac)?;
        let ip = parse_addr(ip).map_err(|e| err(ErrorKind::InvalidArgument, e.to_string()))?;
        let id = net.id;
        self.datapath
            .apply(vec![Change::SetStaticNeighbor {
                network: id,
                ip,
                mac,
            }])
            .map_err(datapath_error)?;
        Ok(StaticNeighbor {
            network: network.to_string(),
            ip,
            mac: mac.to_string(),
        })
    }

    /// `neighbors`: the remote IP → MAC bindings the switch knows.
    pub fn neighbor_list(&self, network: Option<&str>) -> ApiResult<Vec<NeighborEntry>> {
        let id = match network {
            Some(name) => Some(self.network(name)?.id),
            None => None,
        };
        let rows: Vec<NeighborEntry> = self
            .datapath
            .neighbors(id)
            .map_err(datapath_error)?
            .into_iter()
            .filter_map(|(net_id, n)| {
                let net = self.network_by_id(net_id)?;
                Some(NeighborEntry {
                    network: net.name.clone(),
                    ip: n.ip,
                    mac: n.mac.to_string(),
                    age_secs: (n.age.as_secs_f64() * 10.0).round() / 10.0,
                    r#static: n.is_static,
                })
            })
            .collect();
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_parse_with_default_port() {
        assert_eq!(
            parse_peer("192.0.2.7").unwrap(),
            "192.0.2.7:4789".parse().unwrap()
        );
        assert_eq!(
            parse_peer("192.0.2.7:8472").unwrap(),
            "192.0.2.7:8472".parse().unwrap()
        );
        for bad in ["", "host", "192.0.2.7:0", "192.0.2.7:99999", "::1"] {
            let e = parse_peer(bad).unwrap_err();
            assert!(e.message.contains(bad), "{}", e.message);
        }
    }
}
