//! Overlay networks across hosts (RFC 7348): the VTEP socket, the peers,
//! and the tunnel ports that join them.
//!
//! Every overlay network has one tunnel port per peer. The VTEP socket is
//! bound on first need (the first overlay network or peer), so daemons that
//! never use VXLAN never hold port 4789. Peers are static, as with
//! `ip link add … type vxlan remote …`; the forwarding database can also be
//! fed (`fdb add`, `neighbor add`) by whatever control plane runs above.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;

use weft_os::udp::VxlanSocket;
use weft_switch::counters::PortCounters;
use weft_switch::datapath::Command;
use weft_switch::ipam::parse_addr;
use weft_switch::switch::TunnelConfig;
use weft_switch::wire::MacAddr;
use weft_switch::PortId;
use weft_vtep::{Vni, VXLAN_UDP_PORT};

use super::control::{datapath_error, err, ok, ApiResult, Control};
use crate::api::{ApiError, ErrorKind, NeighborEntry, PeerInfo};

/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// Send sockets in the VTEP's pool, so outer source ports vary by flow.
const SEND_SOCKETS: usize = 8;

/// The daemon's VXLAN options.
#[derive(Debug, Clone, Copy)]
pub struct VxlanSettings {
    pub listen: SocketAddrV4,
    /// The address peers reach this host at, if known.
    pub vtep_ip: Option<Ipv4Addr>,
    /// MTU of the underlay network.
    pub underlay_mtu: u32,
}

impl VxlanSettings {
    /// `--vtep-ip` if given, else the listen address if specific, else the
    /// address of the interface holding the default route.
    pub fn resolve_vtep_ip(listen: SocketAddrV4, given: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        given
            .or_else(|| (!listen.ip().is_unspecified()).then_some(*listen.ip()))
            .or_else(default_route_address)
    }
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

pub(super) struct Peer {
    addr: SocketAddrV4,
    counters: Arc<PortCounters>,
}

/// Overlay state of the control plane.
pub struct Overlay {
    settings: VxlanSettings,
    bound: Option<SocketAddrV4>,
    peers: BTreeMap<Ipv4Addr, Peer>,
}

impl Overlay {
    pub fn new(settings: VxlanSettings) -> Self {
        Overlay {
            settings,
            bound: None,
            peers: BTreeMap::new(),
        }
    }

    pub fn bound(&self) -> Option<SocketAddrV4> {
        self.bound
    }

    pub fn vtep_ip(&self) -> Option<Ipv4Addr> {
        self.settings.vtep_ip
    }

    /// Inner MTU that fits the underlay once encapsulated.
    pub fn default_inner_mtu(&self) -> u32 {
        self.settings.underlay_mtu - VXLAN_OVERHEAD
    }

    fn max_inner_ip_len(&self) -> u32 {
        self.settings.underlay_mtu - VXLAN_OVERHEAD
    }

    pub fn saved_peers(&self) -> Vec<String> {
        self.peers.values().map(|p| p.addr.to_string()).collect()
    }
}

/// Parses `IP` or `IP:PORT`.
fn parse_peer(text: &str) -> Result<SocketAddrV4, ApiError> {
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

impl Control {
    /// Binds the VTEP socket if it is not bound yet.
    pub(super) fn ensure_vtep(&mut self) -> Result<(), ApiError> {
        if self.overlay.bound.is_some() {
            return Ok(());
        }
        let listen = self.overlay.settings.listen;
        let socket = VxlanSocket::bind(listen, SEND_SOCKETS).map_err(|e| {
            err(
                ErrorKind::System,
                format!(
                    "cannot serve VXLAN on {listen}: {e} ({}); another VTEP may hold the port: pass `weft daemon --vxlan-listen ADDR:PORT`",
                    e.io_error()
                ),
            )
        })?;
        let local = socket.local_addr();
        self.datapath
            .execute(Command::BindVtep(socket))
            .map_err(datapath_error)?;
        self.overlay.bound = Some(local);
        eprintln!("weft: serving VXLAN on {local}");
        Ok(())
    }

    /// Checks a VNI for a new overlay network.
    pub(super) fn check_new_vni(&self, value: u32) -> Result<Vni, ApiError> {
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

    fn add_tunnel(&mut self, network: &str, peer: Ipv4Addr) -> Result<(), ApiError> {
        let addr = self.overlay.peers[&peer].addr;
        let max_ip_len = self.overlay.max_inner_ip_len();
        let net = self.network(network)?;
        let vni = net.vni.expect("overlay network");
        let port = PortId(self.next_port);
        self.datapath
            .execute(Command::AddTunnel {
                cfg: TunnelConfig {
                    id: port,
                    network: net.id,
                    max_ip_len,
                },
                vni,
                peer: addr,
            })
            .map_err(datapath_error)?;
        self.next_port += 1;
        self.networks
            .get_mut(network)
            .expect("looked up above")
            .tunnels
            .insert(peer, port);
        Ok(())
    }

    fn remove_tunnel(&mut self, network: &str, peer: Ipv4Addr) -> Result<(), ApiError> {
        let Some(&port) = self
            .networks
            .get(network)
            .and_then(|n| n.tunnels.get(&peer))
        else {
            return Ok(());
        };
        self.datapath
            .execute(Command::RemovePort(port))
            .map_err(datapath_error)?;
        if let Some(net) = self.networks.get_mut(network) {
            net.tunnels.remove(&peer);
        }
        Ok(())
    }

    /// Gives a new overlay network a tunnel to every peer.
    pub(super) fn connect_network_to_peers(&mut self, network: &str) -> Result<(), ApiError> {
        let peers: Vec<Ipv4Addr> = self.overlay.peers.keys().copied().collect();
        for peer in peers {
            self.add_tunnel(network, peer)?;
        }
        Ok(())
    }

    fn overlay_networks(&self) -> Vec<String> {
        self.networks
            .values()
            .filter(|n| n.vni.is_some())
            .map(|n| n.name.clone())
            .collect()
    }

    pub(super) fn add_peer(&mut self, text: &str) -> Result<PeerInfo, ApiError> {
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
        self.datapath
            .execute(Command::AddPeer {
                ip,
                counters: Arc::clone(&counters),
            })
            .map_err(datapath_error)?;
        self.overlay.peers.insert(ip, Peer { addr, counters });
        let networks = self.overlay_networks();
        for (i, network) in networks.iter().enumerate() {
            if let Err(e) = self.add_tunnel(network, ip) {
                for done in &networks[..i] {
                    let _ = self.remove_tunnel(done, ip);
                }
                let _ = self.datapath.execute(Command::RemovePeer(ip));
                self.overlay.peers.remove(&ip);
                return Err(e);
            }
        }
        eprintln!("weft: added peer {addr}");
        Ok(self.peer_info(&self.overlay.peers[&ip]))
    }

    pub(super) fn remove_peer(&mut self, text: &str) -> Result<PeerInfo, ApiError> {
        let ip = parse_addr(text).map_err(|e| err(ErrorKind::InvalidArgument, e.to_string()))?;
        let Some(peer) = self.overlay.peers.get(&ip) else {
            return Err(err(
                ErrorKind::NotFound,
                format!("{ip} is not a peer: see `weft peer ls`"),
            ));
        };
        let info = self.peer_info(peer);
        for network in self.overlay_networks() {
            self.remove_tunnel(&network, ip)?;
        }
        self.datapath
            .execute(Command::RemovePeer(ip))
            .map_err(datapath_error)?;
        self.overlay.peers.remove(&ip);
        eprintln!("weft: removed peer {ip}");
        Ok(info)
    }

    fn peer_info(&self, peer: &Peer) -> PeerInfo {
        let snap = peer.counters.snapshot();
        PeerInfo {
            addr: peer.addr.to_string(),
            rx_packets: snap.rx_packets,
            rx_bytes: snap.rx_bytes,
            tx_packets: snap.tx_packets,
            tx_bytes: snap.tx_bytes,
            drops: snap.drops_by_name(),
        }
    }

    pub(super) fn peer_list(&self) -> Vec<PeerInfo> {
        self.overlay
            .peers
            .values()
            .map(|p| self.peer_info(p))
            .collect()
    }

    fn overlay_network(&self, name: &str) -> Result<&super::control::Network, ApiError> {
        let net = self.network(name)?;
        if net.vni.is_none() {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("network `{name}` is not an overlay network (created without --vni)"),
            ));
        }
        Ok(net)
    }

    pub(super) fn fdb_add(&mut self, network: &str, mac: &str, vtep: &str) -> ApiResult {
        let net = self.overlay_network(network)?;
        let mac = parse_mac(mac)?;
        let ip = parse_addr(vtep).map_err(|e| err(ErrorKind::InvalidArgument, e.to_string()))?;
        let Some(&port) = net.tunnels.get(&ip) else {
            return Err(err(
                ErrorKind::NotFound,
                format!("{ip} is not a peer: add it first with `weft peer add {ip}`"),
            ));
        };
        let id = net.id;
        self.datapath
            .execute(Command::SetStaticMac {
                network: id,
                mac,
                port,
            })
            .map_err(datapath_error)?;
        ok(
            &serde_json::json!({ "network": network, "mac": mac.to_string(), "vtep": ip.to_string() }),
        )
    }

    pub(super) fn neighbor_add(&mut self, network: &str, ip: &str, mac: &str) -> ApiResult {
        let net = self.overlay_network(network)?;
        let mac = parse_mac(mac)?;
        let ip = parse_addr(ip).map_err(|e| err(ErrorKind::InvalidArgument, e.to_string()))?;
        let id = net.id;
        self.datapath
            .execute(Command::SetStaticNeighbor {
                network: id,
                ip,
                mac,
            })
            .map_err(datapath_error)?;
        ok(&serde_json::json!({ "network": network, "ip": ip.to_string(), "mac": mac.to_string() }))
    }

    pub(super) fn neighbor_list(&self, network: Option<&str>) -> ApiResult {
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
                let net = self.networks.values().find(|x| x.id == net_id)?;
                Some(NeighborEntry {
                    network: net.name.clone(),
                    ip: n.ip.to_string(),
                    mac: n.mac.to_string(),
                    age_secs: (n.age.as_secs_f64() * 10.0).round() / 10.0,
                    r#static: n.is_static,
                })
            })
            .collect();
        ok(&rows)
    }
}

fn parse_mac(text: &str) -> Result<MacAddr, ApiError> {
    let mac: MacAddr = text
        .parse()
        .map_err(|e: weft_switch::wire::MacParseError| {
            err(ErrorKind::InvalidArgument, e.to_string())
        })?;
    if !mac.is_unicast() || mac == MacAddr::ZERO {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!("{mac} is not a unicast MAC address"),
        ));
    }
    Ok(mac)
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
