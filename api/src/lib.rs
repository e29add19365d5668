//! The control API: the JSON messages exchanged over the daemon's Unix socket.
//!
//! One connection carries one request and one reply, each a single JSON
//! document terminated by a newline. `docs/api.md` documents every message;
//! keep the two in step.

use std::net::{Ipv4Addr, SocketAddrV4};

pub use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub mod client;

/// API version reported by `status`; bumped on incompatible changes.
pub const API_VERSION: u32 = 1;

/// A request from a client to the daemon.
///
/// Unknown fields are refused (`deny_unknown_fields`): a misspelt option
/// must not be silently ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Daemon liveness and version.
    Status,
    NetworkCreate {
        name: String,
        subnet: String,
        #[serde(default)]
        gateway: Option<String>,
        #[serde(default)]
        mtu: Option<u32>,
        #[serde(default)]
        internal: bool,
        /// VXLAN network identifier: makes the network an overlay across
        /// the daemon's peers (RFC 7348).
        #[serde(default)]
        vni: Option<u32>,
        /// The part of the subnet this host hands out (overlay networks).
        #[serde(default)]
        ip_range: Option<String>,
        /// Which inbound packets the network's NAT mappings admit
        /// (default: address-dependent).
        #[serde(default)]
        nat_filtering: Option<NatFiltering>,
        /// Most tracked connections one endpoint may hold (default 16384).
        #[serde(default)]
        nat_max_flows: Option<u32>,
        /// Most SNAT mappings (external ports) one endpoint may hold
        /// (default 8192).
        #[serde(default)]
        nat_max_ports: Option<u32>,
    },
    NetworkList,
    NetworkInspect {
        name: String,
    },
    NetworkRemove {
        name: String,
    },
    Attach {
        network: String,
        /// A name under `/var/run/netns`, or the absolute path of any
        /// network namespace file (`/run/netns/X`, `/proc/PID/ns/net`, a
        /// bind mount): exclusive with `pid`.
        #[serde(default)]
        netns: Option<String>,
        /// A process whose network namespace to join (exclusive with `netns`).
        #[serde(default)]
        pid: Option<u32>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        ip: Option<String>,
        #[serde(default)]
        mac: Option<String>,
        #[serde(default)]
        ifname: Option<String>,
        /// Ports to publish: `HOSTPORT:PORT[/tcp|/udp]`.
        #[serde(default)]
        publish: Vec<String>,
        /// Extra DNS names for the endpoint in its network.
        #[serde(default)]
        aliases: Vec<String>,
        /// Leave `/etc/netns/NAME/resolv.conf` alone.
        #[serde(default)]
        no_resolv_conf: bool,
        /// Who the endpoint belongs to (a CNI plugin's container and
        /// interface), to find it by later.
        #[serde(default)]
        owner: Option<EndpointOwner>,
    },
    Detach {
        network: String,
        endpoint: String,
    },
    RouteAllow {
        a: String,
        b: String,
    },
    RouteDeny {
        a: String,
        b: String,
    },
    RouteList,
    Endpoints {
        #[serde(default)]
        network: Option<String>,
    },
    Fdb {
        #[serde(default)]
        network: Option<String>,
    },
    Stats,
    /// Adds a remote VTEP: `IP` or `IP:PORT` (default port 4789).
    PeerAdd {
        addr: String,
        /// Send to it with remote checksum offload (draft-herbert-vxlan-rco,
        /// Linux's `remcsumrx`): inner checksums left for the peer. Left out
        /// when false, so a plain `peer_add` still reaches a daemon that
        /// predates the field.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        remote_csum: bool,
    },
    PeerList,
    PeerRemove {
        ip: String,
    },
    /// Feeds the forwarding database: `mac` sits behind VTEP `vtep`.
    FdbAdd {
        network: String,
        mac: String,
        vtep: String,
    },
    /// Feeds an IP → MAC binding (for ARP suppression and routing).
    NeighborAdd {
        network: String,
        ip: String,
        mac: String,
    },
    /// Remote IP → MAC bindings known to the switch.
    Neighbors {
        #[serde(default)]
        network: Option<String>,
    },
    /// Attaches the uplink: an interface of the daemon's namespace where
    /// weft owns `ip` (`IP/PREFIX`), with `gateway` as next hop; or, with
    /// `sockets`, the socket uplink (the daemon's own host sockets, no
    /// privilege), where `ip` and `gateway` are optional and name weft's
    /// side and the host's side of its virtual link.
    UplinkSet {
        #[serde(default)]
        interface: String,
        #[serde(default)]
        ip: String,
        #[serde(default)]
        gateway: Option<String>,
        #[serde(default)]
        sockets: bool,
    },
    UplinkShow,
    UplinkRemove,
    /// Publishes `spec` (`HOSTPORT:PORT[/proto]`) of an endpoint; with the
    /// socket uplink, the host listens on `host_ip` (default: every
    /// address).
    PublishAdd {
        network: String,
        endpoint: String,
        spec: String,
        #[serde(default)]
        host_ip: Option<String>,
    },
    PublishList,
    /// Removes a published port: `spec` is `HOSTPORT[/proto]`.
    PublishRemove {
        network: String,
        endpoint: String,
        spec: String,
    },
    ServiceCreate {
        name: String,
        network: String,
        vip: String,
        /// `PORT[/tcp|/udp]`.
        port: String,
        #[serde(default)]
        backends: Vec<String>,
        /// `rr` (default) or `hash`.
        #[serde(default)]
        lb: Option<String>,
    },
    ServiceList,
    ServiceRemove {
        name: String,
    },
    ServiceBackendAdd {
        name: String,
        endpoint: String,
    },
    ServiceBackendRemove {
        name: String,
        endpoint: String,
    },
    /// Tracked connections.
    Conntrack,
    ConntrackFlush,
    /// Removes everything weft made: services, endpoints (their TAPs),
    /// the uplink, networks, peers; the saved state becomes empty.
    Reset,
    /// Mirrors an endpoint's frames, both directions: the reply line is
    /// followed on the same connection by a pcap stream (libpcap format,
    /// Ethernet), ended after `count` frames or when the client closes.
    Capture {
        /// Needed when endpoints of several networks have the name.
        #[serde(default)]
        network: Option<String>,
        endpoint: String,
        #[serde(default)]
        count: Option<u64>,
    },
}

/// Longest excerpt of a client's input that an error message quotes.
pub const MAX_EXCERPT: usize = 120;

/// At most [`MAX_EXCERPT`] bytes of `text` (cut at a character boundary),
/// with `…` when something was left out: error messages quote bad input
/// through this, so a hostile request is never echoed back whole.
pub fn excerpt(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_EXCERPT {
        return text.into();
    }
    let mut end = MAX_EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// Decodes one request line, refusing unknown operations and unknown or
/// misspelt fields with a message that names them (and quotes at most a
/// short excerpt of the input).
pub fn decode_request(line: &str) -> Result<Request, ApiError> {
    serde_json::from_str::<Request>(line).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidArgument,
            format!(
                "the request is not a valid weft API request: {}; see docs/api.md",
                excerpt(&e.to_string())
            ),
        )
    })
}

/// The uplink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UplinkInfo {
    /// The interface; empty for the socket uplink.
    pub interface: String,
    /// Whether this is the socket uplink (the daemon's host sockets).
    #[serde(default)]
    pub sockets: bool,
    /// The address weft owns on the link, with the link's prefix length.
    pub ip: Ipv4Net,
    pub mac: String,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
    pub port: u32,
}

/// A published port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishInfo {
    pub network: String,
    pub endpoint: String,
    pub proto: String,
    pub host_port: u16,
    /// The endpoint's port.
    pub port: u16,
    /// Where the traffic goes: the endpoint's address and port.
    pub target: SocketAddrV4,
}

/// A service VIP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceInfo {
    pub name: String,
    pub network: String,
    pub vip: Ipv4Addr,
    pub proto: String,
    pub port: u16,
    /// Backend endpoint names.
    pub backends: Vec<String>,
    pub lb: String,
}

/// A tracked connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlowEntry {
    pub proto: String,
    /// `SRC -> DST` as the flow started.
    pub original: String,
    /// `SRC -> DST` of the replies, after translation.
    pub reply: String,
    /// Whether addresses or ports are rewritten.
    pub translated: bool,
    pub state: String,
    pub age_secs: f64,
    pub expires_secs: f64,
    pub orig_packets: u64,
    pub orig_bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
}

/// The daemon's reply: exactly one of `result` or `error` is present.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Reply {
    /// The reply to a request that succeeded.
    pub fn success(response: &Response) -> Self {
        match serde_json::to_value(response) {
            Ok(value) => Reply {
                ok: true,
                result: Some(value),
                error: None,
            },
            Err(e) => Reply::failure(ApiError::new(
                ErrorKind::Internal,
                format!("the reply did not serialize: {e}"),
            )),
        }
    }

    pub fn failure(error: ApiError) -> Self {
        Reply {
            ok: false,
            result: None,
            error: Some(error),
        }
    }
}

/// What a request that succeeded returns: one variant per shape of result.
///
/// On the wire it is the bare value (`untagged`), so the JSON of every reply
/// is exactly what `docs/api.md` shows for its request; a client knows from
/// its own request which variant to decode (see [`client::call_as`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Response {
    Status(StatusInfo),
    Network(NetworkInfo),
    Networks(Vec<NetworkInfo>),
    NetworkDetail(NetworkDetail),
    Endpoint(EndpointInfo),
    Endpoints(Vec<EndpointInfo>),
    Route(RouteInfo),
    Routes(Vec<RouteInfo>),
    Fdb(Vec<FdbEntry>),
    StaticMac(StaticMac),
    StaticNeighbor(StaticNeighbor),
    Neighbors(Vec<NeighborEntry>),
    Stats(Stats),
    Peer(PeerInfo),
    Peers(Vec<PeerInfo>),
    Uplink(UplinkInfo),
    Publish(PublishInfo),
    Publishes(Vec<PublishInfo>),
    Service(ServiceInfo),
    Services(Vec<ServiceInfo>),
    Flows(Vec<FlowEntry>),
    Flushed(FlushInfo),
    Reset(ResetInfo),
    Capture(CaptureInfo),
}

/// Reply to `capture`, before the pcap stream: the port captured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureInfo {
    pub network: String,
    pub endpoint: String,
    pub port: u32,
    pub ifname: String,
}

/// Reply to `reset`: how many of each kind of object were removed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ResetInfo {
    pub services: usize,
    pub endpoints: usize,
    pub uplink: bool,
    pub networks: usize,
    pub peers: usize,
}

/// Reply to `fdb_add`: the MAC now sits behind the VTEP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StaticMac {
    pub network: String,
    pub mac: String,
    pub vtep: Ipv4Addr,
}

/// Reply to `neighbor_add`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StaticNeighbor {
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: String,
}

/// Reply to `conntrack_flush`: how many tracked connections were removed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlushInfo {
    pub flushed: usize,
}

/// Why a request was refused. A refused request changed no state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// What was wrong and what to do about it, for a person.
    pub message: String,
}

/// Longest message an [`ApiError`] carries; longer ones are cut (a message
/// that quotes a hostile value must stay short).
pub const MAX_MESSAGE: usize = 1024;

impl ApiError {
    /// An error with `message` cut to [`MAX_MESSAGE`] bytes.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        ApiError { kind, message }
    }
}

/// Machine-readable class of an [`ApiError`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was malformed or a value did not parse.
    InvalidArgument,
    /// A named network, endpoint or namespace does not exist.
    NotFound,
    /// The name or address is already in use.
    AlreadyExists,
    /// The request conflicts with current state (overlap, endpoints left).
    Conflict,
    /// An address pool has no free address.
    Exhausted,
    /// The operating system refused an operation (permissions, netlink).
    System,
    /// The caller (as `SO_PEERCRED` tells the daemon) may not make this
    /// request: it is not root or the daemon's user, and the request is
    /// not on a namespace it owns.
    PermissionDenied,
    /// A bug in weft.
    Internal,
}

/// Which inbound packets a network's NAT mappings admit (RFC 4787 §5,
/// RFC 5382 REQ-3).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NatFiltering {
    /// Only from addresses the endpoint has sent to from that mapping.
    #[default]
    AddressDependent,
    /// From anyone while the mapping lives.
    EndpointIndependent,
}

impl NatFiltering {
    /// The name used on the command line and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            NatFiltering::AddressDependent => "address-dependent",
            NatFiltering::EndpointIndependent => "endpoint-independent",
        }
    }
}

impl std::str::FromStr for NatFiltering {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "address-dependent" => Ok(NatFiltering::AddressDependent),
            "endpoint-independent" => Ok(NatFiltering::EndpointIndependent),
            _ => Err(format!(
                "`{s}` is not a NAT filtering: use address-dependent or endpoint-independent"
            )),
        }
    }
}

/// A network's NAT behaviour.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct NatSettings {
    pub filtering: NatFiltering,
    /// Most tracked connections one endpoint may hold.
    pub max_flows: u32,
    /// Most SNAT mappings (external ports) one endpoint may hold.
    pub max_ports: u32,
}

impl NatSettings {
    /// Default per-endpoint connection limit: far above what a container
    /// normally holds, a quarter of the default table.
    pub const DEFAULT_MAX_FLOWS: u32 = 16384;
    /// Default per-endpoint SNAT mapping limit.
    pub const DEFAULT_MAX_PORTS: u32 = 8192;
}

impl Default for NatSettings {
    fn default() -> Self {
        NatSettings {
            filtering: NatFiltering::default(),
            max_flows: Self::DEFAULT_MAX_FLOWS,
            max_ports: Self::DEFAULT_MAX_PORTS,
        }
    }
}

/// A network as reported by `network ls` and `network inspect`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub gateway_mac: String,
    pub mtu: u32,
    pub internal: bool,
    /// VXLAN network identifier of an overlay network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// The part of the subnet this host hands out, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
    /// Number of attached endpoints.
    pub endpoints: usize,
    /// Free addresses left in the pool.
    pub free_addresses: u64,
    /// NAT behaviour.
    #[serde(default)]
    pub nat: NatSettings,
}

/// A network with its endpoints and routes, for `network inspect`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkDetail {
    #[serde(flatten)]
    pub network: NetworkInfo,
    pub attached: Vec<EndpointInfo>,
    /// Networks this one may route to (`route allow`).
    pub routes_to: Vec<String>,
}

/// An attached endpoint: one TAP device in one namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointInfo {
    pub name: String,
    pub network: String,
    /// `/var/run/netns/NAME` or `/proc/PID/ns/net` as given on attach.
    pub netns: String,
    pub ifname: String,
    /// Address with prefix length, e.g. `10.1.0.2/24`.
    pub ip: Ipv4Net,
    pub mac: String,
    /// The switch port number, as shown by `fdb` and `stats`.
    pub port: u32,
    /// Who the endpoint belongs to, when the client said so on attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<EndpointOwner>,
}

/// The owner of an endpoint as a container runtime names it: the
/// runtime's network, the container's ID and the interface name inside it
/// (CNI's attachment key). The daemon gives one owner at most one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct EndpointOwner {
    /// The runtime's name for the network (CNI: the configuration's
    /// `name`), which may differ from the weft network's; empty when the
    /// client gave none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

/// A pair of networks allowed to route to each other.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteInfo {
    pub a: String,
    pub b: String,
}

/// A learned MAC address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FdbEntry {
    pub network: String,
    pub mac: String,
    pub port: u32,
    /// The endpoint behind the port, if any.
    pub endpoint: Option<String>,
    /// Seconds since the address was last seen as a source.
    pub age_secs: f64,
    /// The remote VTEP the address sits behind, for overlay entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<String>,
    /// Fed by `fdb add` (never ages) rather than learned.
    #[serde(default)]
    pub r#static: bool,
}

/// A remote VTEP and its traffic.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerInfo {
    /// `IP:PORT` datagrams are sent to.
    pub addr: String,
    /// Datagrams to it carry remote checksum offload.
    #[serde(default)]
    pub remote_csum: bool,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Drops by reason; reasons with a zero count are left out.
    pub drops: std::collections::BTreeMap<String, u64>,
}

/// A remote IP → MAC binding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NeighborEntry {
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub age_secs: f64,
    #[serde(default)]
    pub r#static: bool,
}

/// Counters for one switch port.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortStats {
    pub port: u32,
    pub network: String,
    pub endpoint: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Times the datapath stopped reading the port because a storm spent
    /// its storm-control budget (what the endpoint sent meanwhile waited
    /// in, or was dropped from, its TAP's queue).
    #[serde(default)]
    pub storm_pauses: u64,
    /// Drops by reason; reasons with a zero count are left out.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// What the kernel counted on its side of an endpoint's TAP device,
    /// read when `stats` was asked; absent for ports with no TAP (the
    /// uplink, tunnels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelPortStats>,
}

/// The kernel's counters of an endpoint's TAP device, or why there are
/// none this time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KernelPortStats {
    Counters(TapCounters),
    /// Why they could not be read (say, the namespace is gone and the
    /// endpoint is about to be detached); the other ports are unaffected.
    Unavailable(String),
}

/// A TAP device's counters in the endpoint's namespace (`ip -s link` there),
/// named by direction. The kernel counts a frame the endpoint sends when
/// weft reads it, and drops it when tun's queue (`txqueuelen` frames) is
/// full because weft has not read the ones before it: frames the endpoint
/// sent = `from_endpoint_packets + from_endpoint_dropped`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TapCounters {
    /// Frames the endpoint sent that weft read (the TAP's `tx_packets`).
    pub from_endpoint_packets: u64,
    /// Frames the endpoint sent that the kernel dropped because weft had
    /// not read the queue in time (the TAP's `tx_dropped`).
    pub from_endpoint_dropped: u64,
    /// Frames weft wrote that the kernel took in (the TAP's `rx_packets`).
    pub to_endpoint_packets: u64,
    /// Frames weft wrote that the kernel then dropped, e.g. with its
    /// input backlog full (the TAP's `rx_dropped`).
    pub to_endpoint_dropped: u64,
}

/// Whole-daemon counters for `weft stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub ports: Vec<PortStats>,
    /// Drops not tied to a port (e.g. ICMP errors suppressed by rate limit).
    pub switch_drops: std::collections::BTreeMap<String, u64>,
    /// Other switch-wide counters (e.g. ARP requests answered locally).
    #[serde(default)]
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Per-peer traffic of overlay networks.
    #[serde(default)]
    pub peers: Vec<PeerInfo>,
}

/// Reply to `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusInfo {
    pub version: String,
    pub api_version: u32,
    pub pid: u32,
    pub networks: usize,
    pub endpoints: usize,
    /// The VXLAN socket's address, once an overlay network or peer exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_listen: Option<SocketAddrV4>,
    /// The address peers reach this host at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_ip: Option<Ipv4Addr>,
    /// The cluster store, when the daemon runs with `--store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreInfo>,
    /// The CPU the datapath worker runs on next to its endpoints
    /// (`--worker-cpu follow`); absent while it runs elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_following_cpu: Option<usize>,
    /// TAPs whose receive processing runs in a kernel thread of its own
    /// because a flood is written to them (threaded NAPI); absent when
    /// none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub receive_threaded_ports: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The cluster store as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// The store's address as given to `--store` (`etcd://HOST:PORT,...`).
    pub url: String,
    /// The key prefix weft's records live under.
    pub prefix: String,
    /// Whether the daemon is connected to the store and watching it.
    pub connected: bool,
    /// The store revision the daemon's view reflects.
    pub revision: i64,
    /// Hosts registered in the store, this one included.
    pub hosts: usize,
    /// Endpoints of other hosts installed here.
    pub remote_endpoints: usize,
    /// The last store error, while disconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format_is_tagged_by_op() {
        let req: Request =
            serde_json::from_str(r#"{"op":"network_create","name":"a","subnet":"10.0.0.0/24"}"#)
                .unwrap();
        assert_eq!(
            req,
            Request::NetworkCreate {
                name: "a".into(),
                subnet: "10.0.0.0/24".into(),
                gateway: None,
                mtu: None,
                internal: false,
                vni: None,
                ip_range: None,
                nat_filtering: None,
                nat_max_flows: None,
                nat_max_ports: None,
            }
        );
        let text = serde_json::to_string(&Request::Stats).unwrap();
        assert_eq!(text, r#"{"op":"stats"}"#);
    }

    #[test]
    fn kernel_port_stats_are_tagged_and_optional() {
        let mut port = PortStats {
            port: 1,
            kernel: Some(KernelPortStats::Counters(TapCounters {
                from_endpoint_packets: 5,
                from_endpoint_dropped: 6,
                to_endpoint_packets: 7,
                to_endpoint_dropped: 8,
            })),
            ..PortStats::default()
        };
        let text = serde_json::to_string(&port).unwrap();
        assert!(
            text.ends_with(r#""kernel":{"counters":{"from_endpoint_packets":5,"from_endpoint_dropped":6,"to_endpoint_packets":7,"to_endpoint_dropped":8}}}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<PortStats>(&text).unwrap(), port);
        port.kernel = Some(KernelPortStats::Unavailable("gone".into()));
        let text = serde_json::to_string(&port).unwrap();
        assert!(
            text.ends_with(r#""kernel":{"unavailable":"gone"}}"#),
            "{text}"
        );
        // Ports without a TAP, and daemons from before, leave it out.
        port.kernel = None;
        let text = serde_json::to_string(&port).unwrap();
        assert!(!text.contains("kernel"), "{text}");
        assert_eq!(serde_json::from_str::<PortStats>(&text).unwrap(), port);
    }

    #[test]
    fn peer_add_leaves_remote_csum_out_unless_set() {
        // A plain peer_add is what daemons before the field accept.
        let plain = Request::PeerAdd {
            addr: "192.0.2.7".into(),
            remote_csum: false,
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"op":"peer_add","addr":"192.0.2.7"}"#
        );
        let rco = Request::PeerAdd {
            addr: "192.0.2.7".into(),
            remote_csum: true,
        };
        let line = serde_json::to_string(&rco).unwrap();
        assert_eq!(
            line,
            r#"{"op":"peer_add","addr":"192.0.2.7","remote_csum":true}"#
        );
        assert_eq!(decode_request(&line).unwrap(), rco);
        assert_eq!(
            decode_request(r#"{"op":"peer_add","addr":"192.0.2.7"}"#).unwrap(),
            plain
        );
    }

    #[test]
    fn unknown_op_is_rejected() {
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
    }

    #[test]
    fn misspelt_field_is_refused_and_named() {
        let err = decode_request(
            r#"{"op":"network_create","name":"a","subnet":"10.0.0.0/24","internl":true}"#,
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("`internl`"), "{}", err.message);
        let err = decode_request(
            r#"{"op":"attach","network":"a","owner":{"container_id":"c","ifname":"e","x":1}}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("`x`"), "{}", err.message);
        // Known fields still decode, including the tag.
        decode_request(r#"{"op":"attach","network":"a","netns":"n","publish":["80:80"]}"#).unwrap();
    }

    #[test]
    fn a_huge_bad_request_is_quoted_only_in_part() {
        let field = "x".repeat(1 << 20);
        let line = format!(r#"{{"op":"network_create","name":"a","subnet":"s","{field}":1}}"#);
        let err = decode_request(&line).unwrap_err();
        assert!(err.message.len() < 400, "{} bytes", err.message.len());
        let line = format!(
            r#"{{"op":"network_create","name":"a","subnet":{}}}"#,
            "1".repeat(1 << 20)
        );
        assert!(decode_request(&line).unwrap_err().message.len() < 400);
        let long = ApiError::new(ErrorKind::NotFound, "é".repeat(5000));
        assert!(long.message.len() <= MAX_MESSAGE + '…'.len_utf8());
    }
}
