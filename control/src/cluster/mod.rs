//! Hooks for a cluster store: what a multi-host control plane (the
//! `weft-cluster` crate, on etcd) publishes for this host and what it feeds
//! back from the other hosts.
//!
//! The control plane calls a [`ClusterStore`] when a local operation changes
//! something every host must know: an overlay network is created or removed,
//! an address is handed out (from address blocks the host leases from the
//! store), an endpoint attaches or detaches. The store's agent drives the
//! other direction through [`Control::cluster_event`](crate::Control::cluster_event): hosts that register
//! become peers, networks created elsewhere appear here, and endpoints of
//! other hosts are installed as static forwarding and neighbour entries on
//! the tunnel toward their host before the first packet, so ARP for them is
//! answered locally (RFC 7348 §4 leaves the learning method open; this is
//! the control-plane alternative to flood-and-learn).
//!
//! Only overlay networks (those with a VNI) are cluster-wide; a network
//! without one stays local to its host.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use weft_api::StoreInfo;
use weft_packet::MacAddr;

use crate::error::ApiResult;

mod sync;

/// A host as registered in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Where the host receives VXLAN.
    pub vtep: SocketAddrV4,
    pub underlay_mtu: u32,
    /// weft's version on that host.
    pub version: String,
    /// The host takes remote checksum offload (draft-herbert-vxlan-rco),
    /// so peers send to it with inner checksums left partial. Absent in
    /// records of older builds: false.
    #[serde(default)]
    pub remote_csum: bool,
}

/// A cluster-wide (overlay) network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub internal: bool,
    pub vni: u32,
}

/// An endpoint as published: where its address and MAC live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// The VTEP address of the host it is attached on.
    pub host: Ipv4Addr,
}

/// A change in the store, as the agent reports it. Each is idempotent:
/// the agent may repeat one after a resynchronisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    HostUp(HostRecord),
    HostDown(Ipv4Addr),
    NetworkUp(NetworkRecord),
    NetworkDown(String),
    EndpointUp(EndpointRecord),
    EndpointDown { network: String, ip: Ipv4Addr },
}

/// What the control plane asks of a cluster store. Calls block until the
/// store answered (or a timeout passed) and fail with a clear error when it
/// did not; none of them changes local state.
pub trait ClusterStore: Send {
    /// Stores a new overlay network; `AlreadyExists` when another host
    /// created one by that name or with that VNI.
    fn publish_network(&self, net: &NetworkRecord) -> ApiResult<()>;
    /// Removes an overlay network from the store; `Conflict` while any host
    /// has endpoints on it.
    fn remove_network(&self, name: &str) -> ApiResult<()>;
    /// The address blocks of `network` this host holds.
    fn blocks(&self, network: &str) -> Vec<Ipv4Net>;
    /// Leases one more free block of `subnet` for this host; `Exhausted`
    /// when every block is held.
    fn claim_block(&self, network: &str, subnet: Ipv4Net) -> ApiResult<Ipv4Net>;
    /// Publishes a local endpoint; `AlreadyExists` when its address is
    /// already another endpoint's, anywhere.
    fn publish_endpoint(&self, ep: &EndpointRecord) -> ApiResult<()>;
    /// Withdraws a local endpoint (queued while the store is unreachable).
    fn withdraw_endpoint(&self, network: &str, ip: Ipv4Addr);
    /// The store's state, for `status`.
    fn status(&self) -> StoreInfo;
    /// Whether this host uses remote checksum offload with the others: it
    /// says so in its record, and sends with it to hosts whose records
    /// say so (`weft daemon --remote-csum`).
    fn remote_csum(&self) -> bool {
        true
    }
}

/// What the control plane knows of the other hosts.
#[derive(Default)]
pub struct Remote {
    /// Hosts registered in the store, by VTEP address.
    pub hosts: BTreeMap<Ipv4Addr, HostRecord>,
    /// Peers added because a host registered (not by `peer add`).
    pub peers: BTreeSet<Ipv4Addr>,
    /// Endpoints of other hosts, by (network, address).
    pub endpoints: BTreeMap<(String, Ipv4Addr), EndpointRecord>,
}
