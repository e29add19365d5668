//! What the control plane needs from the world, as two traits: the
//! [`Datapath`] it configures and the [`Provisioner`] that makes devices in
//! the operating system.
//!
//! The daemon implements them over the real datapath worker and the real
//! OS code; tests implement them in memory, so every control-plane rule can
//! be checked as an ordinary user, without namespaces or TAP devices.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weft_api::{ApiError, TapCounters};
use weft_datapath::port::{HostListener, Port};
use weft_datapath::{Change, DatapathError};
pub use weft_hostnet::Config as SocketUplinkConfig;
use weft_nat::conntrack::FlowInfo;
use weft_os::udp::VxlanSocket;
use weft_packet::MacAddr;
use weft_switch::counters::SwitchCounters;
use weft_switch::mac_table::Learned;
use weft_switch::neighbor::Neighbor;
use weft_switch::NetworkId;

/// The forwarding datapath as the control plane drives it: a request's
/// changes go as one batch of [`Change`]s, applied completely or refused.
pub trait Datapath {
    /// Applies `changes` in order, all or nothing: on error none of them
    /// took effect. Removals come after every other change of a batch (see
    /// [`Change`]).
    fn apply(&self, changes: Vec<Change>) -> Result<(), DatapathError>;
    /// The learned (and static) MAC addresses of one network, or of all.
    fn fdb(&self, network: Option<NetworkId>) -> Result<Vec<(NetworkId, Learned)>, DatapathError>;
    /// The remote IPv4 → MAC bindings of one network, or of all.
    fn neighbors(
        &self,
        network: Option<NetworkId>,
    ) -> Result<Vec<(NetworkId, Neighbor)>, DatapathError>;
    /// Switch-wide counters.
    fn counters(&self) -> &SwitchCounters;
    /// A copy of the tracked connections.
    fn conntrack_snapshot(&self) -> Result<Vec<FlowInfo>, DatapathError>;
    /// Forgets every tracked connection; returns how many there were.
    fn conntrack_flush(&self) -> Result<usize, DatapathError>;
    /// Stops forwarding and closes every port.
    fn shutdown(self);
}

/// Which network namespace an endpoint goes into, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsTarget {
    /// A name under `/var/run/netns` (as `ip netns add` makes).
    Name(String),
    /// The namespace of a process.
    Pid(u32),
    /// Any file that is a network namespace: `/run/netns/X`,
    /// `/proc/PID/ns/net`, a bind mount elsewhere (as CNI's `CNI_NETNS`).
    Path(PathBuf),
}

/// A network namespace found and checked by the provisioner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// The path the namespace was opened by.
    pub path: PathBuf,
    /// Device and inode of the namespace file: the same namespace under
    /// any path has the same identity.
    pub id: (u64, u64),
}

/// A TAP device to create inside a namespace and configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapRequest {
    pub ifname: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u32,
    /// Set the namespace's default route via this gateway.
    pub default_gateway: Option<Ipv4Addr>,
}

/// An uplink device opened for the datapath.
pub struct UplinkDevice {
    pub port: Box<dyn Port>,
    /// The interface's MTU.
    pub mtu: u32,
    /// The socket uplink's own counters (flows opened, pings refused, a
    /// full flow table, retransmissions), shown by `weft stats`.
    pub socket_counters: Option<Arc<weft_hostnet::Counters>>,
}

/// Makes and finds the operating-system objects endpoints need. Errors are
/// already API errors: what went wrong and what the user can do about it.
pub trait Provisioner {
    /// Finds the namespace `target` names and checks that it is one.
    fn open_netns(&self, target: &NetnsTarget) -> Result<Netns, ApiError>;
    /// The identity ([`Netns::id`]) of what `path` leads to now, for the
    /// reaper's check that an endpoint's namespace is still there: an
    /// error of kind `NotFound` when nothing is there. Cheaper than
    /// [`Provisioner::open_netns`] where it can be: the reaper asks it
    /// for every endpoint every second.
    fn netns_id(&self, path: &Path) -> Result<(u64, u64), ApiError> {
        self.open_netns(&NetnsTarget::Path(path.to_owned()))
            .map(|ns| ns.id)
    }
    /// Whether the namespace already has an interface called `ifname`.
    fn link_exists(&self, netns: &Path, ifname: &str) -> Result<bool, ApiError>;
    /// Creates and configures a TAP device in the namespace and returns it
    /// as a datapath port. On error nothing is left in the namespace. The
    /// device outlives the daemon when the provisioner can make it so
    /// (a process exit leaves it; dropping the port removes it).
    fn create_tap(&self, netns: &Path, tap: &TapRequest) -> Result<Box<dyn Port>, ApiError>;
    /// Takes back the TAP `tap.ifname` an earlier daemon left in the
    /// namespace (its configuration made to match `tap`), or, when there is
    /// none, creates it as [`Provisioner::create_tap`] does. Used when the
    /// saved state is restored.
    fn adopt_tap(&self, netns: &Path, tap: &TapRequest) -> Result<Box<dyn Port>, ApiError>;
    /// Opens `interface` of the daemon's namespace as the NAT uplink.
    fn open_uplink(&self, interface: &str) -> Result<UplinkDevice, ApiError>;
    /// Makes the socket uplink (the daemon's own host sockets).
    fn open_socket_uplink(&self, cfg: SocketUplinkConfig) -> Result<UplinkDevice, ApiError> {
        let _ = cfg;
        Err(ApiError::new(
            weft_api::ErrorKind::Internal,
            "this daemon cannot make a socket uplink",
        ))
    }
    /// Binds a host socket for a port published through the socket uplink
    /// (`tcp`: a listener; otherwise UDP).
    fn listen_host(&self, tcp: bool, addr: SocketAddrV4) -> Result<HostListener, ApiError> {
        let _ = (tcp, addr);
        Err(ApiError::new(
            weft_api::ErrorKind::Internal,
            "this daemon cannot listen on host ports",
        ))
    }
    /// The kernel's counters of the TAP `ifname` in `netns` (the namespace
    /// it was attached in, which must still be there by that path), read
    /// on the calling thread without involving the datapath. The error is
    /// what `stats` shows for the port instead.
    fn tap_counters(&self, netns: &Netns, ifname: &str) -> Result<TapCounters, ApiError> {
        let _ = (netns, ifname);
        Err(ApiError::new(
            weft_api::ErrorKind::Internal,
            "this daemon cannot read the kernel's counters of a TAP",
        ))
    }
    /// Binds the VXLAN socket on `listen`.
    fn bind_vtep(&self, listen: SocketAddrV4) -> Result<VxlanSocket, ApiError>;
    /// Points a named namespace's resolver at `gateway`; returns the file
    /// written, or `None` when the namespace's resolver is not weft's to set.
    fn write_resolv_conf(&self, netns_name: &str, gateway: Ipv4Addr) -> Option<PathBuf>;
    /// Removes a resolver file [`Provisioner::write_resolv_conf`] wrote.
    fn remove_resolv_conf(&self, path: &Path);
}

/// The real datapath worker.
impl Datapath for weft_datapath::Datapath {
    fn apply(&self, changes: Vec<Change>) -> Result<(), DatapathError> {
        weft_datapath::Datapath::apply(self, changes)
    }

    fn fdb(&self, network: Option<NetworkId>) -> Result<Vec<(NetworkId, Learned)>, DatapathError> {
        weft_datapath::Datapath::fdb(self, network)
    }

    fn neighbors(
        &self,
        network: Option<NetworkId>,
    ) -> Result<Vec<(NetworkId, Neighbor)>, DatapathError> {
        weft_datapath::Datapath::neighbors(self, network)
    }

    fn counters(&self) -> &SwitchCounters {
        weft_datapath::Datapath::counters(self)
    }

    fn conntrack_snapshot(&self) -> Result<Vec<FlowInfo>, DatapathError> {
        self.conntrack()
    }

    fn conntrack_flush(&self) -> Result<usize, DatapathError> {
        weft_datapath::Datapath::conntrack_flush(self)
    }

    fn shutdown(self) {
        weft_datapath::Datapath::shutdown(self)
    }
}
