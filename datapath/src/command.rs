//! What the control plane sends the worker: [`Command`]s, of which
//! [`Command::Apply`] carries a batch of [`Change`]s applied all or
//! nothing, and what comes back: [`DatapathError`], DNS queries
//! ([`DnsQuery`]) and captured frames ([`Captured`]).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use weft_nat::conntrack::FlowInfo;
use weft_nat::Protocol;
use weft_os::udp::VxlanSocket;
use weft_packet::MacAddr;
use weft_switch::counters::PortCounters;
use weft_switch::mac_table::Learned;
use weft_switch::neighbor::Neighbor;
use weft_switch::switch::{
    ConfigError, NetworkConfig, NetworkNat, PortConfig, Punt, ServiceConfig, TunnelConfig,
    UplinkConfig,
};
use weft_switch::{NetworkId, PortId};
use weft_vtep::Vni;

use crate::port::{HostListener, Port};

/// A DNS query to a gateway, handed to the resolver thread: the worker's
/// copy of the core's [`Punt`].
#[derive(Debug, Clone)]
pub struct DnsQuery {
    /// Where the answer goes back out.
    pub port: PortId,
    pub network: NetworkId,
    pub client_mac: MacAddr,
    pub client: SocketAddrV4,
    pub gateway_mac: MacAddr,
    pub gateway: Ipv4Addr,
    /// UDP: the DNS message. TCP: the whole IPv4 packet (a TCP segment
    /// for the gateway's port 53, for the DNS-over-TCP responder).
    pub message: Vec<u8>,
    pub tcp: bool,
}

impl DnsQuery {
    /// Copies a punted query.
    pub fn from_punt(punt: &Punt<'_>) -> Self {
        DnsQuery {
            port: punt.port,
            network: punt.network,
            client_mac: punt.client_mac,
            client: punt.client,
            gateway_mac: punt.gateway_mac,
            gateway: punt.gateway,
            message: punt.message.to_vec(),
            tcp: punt.tcp,
        }
    }
}

/// One change to the forwarding state. Changes reach the worker in
/// batches ([`Command::Apply`]) that it applies completely or not at all.
///
/// Most changes can be undone exactly, and the worker undoes them when a
/// later change of their batch fails. The *removals* — [`Change::RemovePort`],
/// [`Change::RemoveNetwork`], [`Change::RemoveUplink`] and
/// [`Change::RemovePeer`] — cannot (a closed TAP cannot be reopened, and
/// what was learned on a port or network is forgotten with it), so a batch
/// lists them after every other change: the worker checks all of them
/// against the state the earlier changes left before it applies the first,
/// and once they are checked they cannot fail. A batch with a removal before
/// another kind of change is refused as a whole ([`DatapathError::Order`]).
pub enum Change {
    AddNetwork(NetworkConfig),
    RemoveNetwork(NetworkId),
    SetRoute {
        a: NetworkId,
        b: NetworkId,
        allowed: bool,
    },
    /// Adds a port; its device starts being polled at once.
    AddPort {
        cfg: PortConfig,
        io: Box<dyn Port>,
        counters: Arc<PortCounters>,
    },
    /// Removes a port and closes its device (a TAP disappears with it), or
    /// removes a tunnel port.
    RemovePort(PortId),
    /// Starts serving VXLAN on a bound socket.
    BindVtep(VxlanSocket),
    /// Accepts VXLAN from `ip`; its tunnel ports share `counters`.
    AddPeer {
        ip: Ipv4Addr,
        counters: Arc<PortCounters>,
    },
    /// Stops accepting VXLAN from `ip` (remove its tunnels first).
    RemovePeer(Ipv4Addr),
    /// Adds the tunnel port of one overlay network toward one peer.
    AddTunnel {
        cfg: TunnelConfig,
        vni: Vni,
        peer: SocketAddrV4,
        /// Send with remote checksum offload (draft-herbert-vxlan-rco):
        /// the peer completes (or needs no) inner checksums.
        remote_csum: bool,
    },
    /// Feeds a MAC → port binding (e.g. a MAC behind a VTEP).
    SetStaticMac {
        network: NetworkId,
        mac: MacAddr,
        port: PortId,
    },
    /// Feeds an IPv4 → MAC binding for ARP suppression and routing.
    SetStaticNeighbor {
        network: NetworkId,
        ip: Ipv4Addr,
        mac: MacAddr,
    },
    /// Forgets `mac` in `network`, static or learned (a remote endpoint
    /// withdrawn by the cluster's store).
    ClearMac {
        network: NetworkId,
        mac: MacAddr,
    },
    /// Forgets the IPv4 → MAC binding of `ip` in `network`.
    ClearNeighbor {
        network: NetworkId,
        ip: Ipv4Addr,
    },
    /// Attaches the uplink device as port `cfg.port`, replacing (and, once
    /// the batch has succeeded, closing) the attached one.
    SetUplink {
        cfg: UplinkConfig,
        io: Box<dyn Port>,
        counters: Arc<PortCounters>,
    },
    /// Detaches the uplink and closes its device.
    RemoveUplink,
    /// Sends traffic for the uplink address on `host_port` to `target`.
    Publish {
        proto: Protocol,
        host_port: u16,
        target: SocketAddrV4,
    },
    Unpublish {
        proto: Protocol,
        host_port: u16,
    },
    /// Hands the uplink a bound host socket to serve a published port on
    /// (the socket uplink; any other uplink refuses).
    Listen(HostListener),
    /// Stops the uplink serving a published port.
    Unlisten {
        tcp: bool,
        host_port: u16,
    },
    /// Adds or replaces a service VIP.
    SetService(ServiceConfig),
    RemoveService {
        vip: Ipv4Addr,
        proto: Protocol,
        port: u16,
    },
    /// Marks a network internal: nothing leaves it through the uplink.
    SetInternal {
        network: NetworkId,
        internal: bool,
    },
    /// Sets a network's NAT behaviour (filtering, per-endpoint limits).
    SetNetworkNat {
        network: NetworkId,
        nat: NetworkNat,
    },
    /// Where DNS queries to the gateways go.
    SetDns(Option<Sender<DnsQuery>>),
    SetAging(Duration),
    /// Every port's storm-control limits.
    SetStormLimits(weft_switch::storm::StormLimits),
}

impl Change {
    /// The change's name, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::AddNetwork(_) => "AddNetwork",
            Change::RemoveNetwork(_) => "RemoveNetwork",
            Change::SetRoute { .. } => "SetRoute",
            Change::AddPort { .. } => "AddPort",
            Change::RemovePort(_) => "RemovePort",
            Change::BindVtep(_) => "BindVtep",
            Change::AddPeer { .. } => "AddPeer",
            Change::RemovePeer(_) => "RemovePeer",
            Change::AddTunnel { .. } => "AddTunnel",
            Change::SetStaticMac { .. } => "SetStaticMac",
            Change::SetStaticNeighbor { .. } => "SetStaticNeighbor",
            Change::ClearMac { .. } => "ClearMac",
            Change::ClearNeighbor { .. } => "ClearNeighbor",
            Change::SetUplink { .. } => "SetUplink",
            Change::RemoveUplink => "RemoveUplink",
            Change::Publish { .. } => "Publish",
            Change::Unpublish { .. } => "Unpublish",
            Change::Listen(_) => "Listen",
            Change::Unlisten { .. } => "Unlisten",
            Change::SetService(_) => "SetService",
            Change::RemoveService { .. } => "RemoveService",
            Change::SetInternal { .. } => "SetInternal",
            Change::SetNetworkNat { .. } => "SetNetworkNat",
            Change::SetDns(_) => "SetDns",
            Change::SetAging(_) => "SetAging",
            Change::SetStormLimits(_) => "SetStormLimits",
        }
    }

    /// Whether the change is a removal, which cannot be undone and so comes
    /// after every other change of its batch (see [`Change`]).
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Change::RemovePort(_)
                | Change::RemoveNetwork(_)
                | Change::RemoveUplink
                | Change::RemovePeer(_)
        )
    }
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// A request to the worker: a batch of changes, or a question.
pub enum Command {
    /// Applies the changes in order, all or nothing: on the first failure
    /// the applied ones are undone in reverse order and the error names the
    /// failed change ([`DatapathError::Batch`]).
    Apply(Vec<Change>),
    /// Answers with the remote IPv4 → MAC bindings of one network or all.
    DumpNeighbors {
        network: Option<NetworkId>,
        reply: Sender<Vec<(NetworkId, Neighbor)>>,
    },
    /// Answers with the learned addresses of one network or all.
    DumpFdb {
        network: Option<NetworkId>,
        reply: Sender<Vec<(NetworkId, Learned)>>,
    },
    /// Answers with every live tracked connection.
    DumpConntrack { reply: Sender<Vec<FlowInfo>> },
    /// Removes every tracked connection; answers how many there were.
    FlushConntrack { reply: Sender<usize> },
    /// Mirrors an endpoint port's frames, both directions, into `sink`
    /// (`None`: stops); answers whether the port exists.
    Capture {
        port: PortId,
        sink: Option<Sender<Captured>>,
        reply: Sender<bool>,
    },
}

/// A frame mirrored by [`Command::Capture`]: when it was seen and its
/// bytes (an offloaded super-frame is one frame, as on the TAP).
#[derive(Debug, Clone)]
pub struct Captured {
    pub time: std::time::SystemTime,
    pub frame: Vec<u8>,
}

/// Why the datapath did not carry out a command.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not poll the new port's device")]
    Register(#[source] io::Error),
    #[error("the datapath thread has stopped")]
    Stopped,
    #[error("the datapath did not answer within {0:?}")]
    Timeout(Duration),
    #[error("could not start the datapath")]
    Start(#[source] io::Error),
    #[error("peer {0} is not known to the datapath")]
    UnknownPeer(Ipv4Addr),
    #[error("a VTEP is already bound")]
    VtepBound,
    #[error("no VTEP is bound")]
    NoVtep,
    #[error("no uplink is attached")]
    NoUplink,
    #[error("the uplink cannot serve a published port")]
    Listen(#[source] io::Error),
    #[error("a removal must come after every other change of its batch")]
    Order,
    /// Change `index` (from 0) of a batch failed; the batch was undone.
    #[error("change {index} of the batch ({kind}) failed: {source}")]
    Batch {
        index: usize,
        kind: &'static str,
        source: Box<DatapathError>,
    },
}

/// Where the worker acknowledges a command.
pub(crate) type Ack = Sender<Result<(), DatapathError>>;
