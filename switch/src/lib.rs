//! weft's single-host datapath: Ethernet switching with MAC learning, a
//! routing gateway per network, port security, and TAP ports in network
//! namespaces.
//!
//! The forwarding core ([`switch::Switch`]) does no I/O: frames go in with
//! their ingress port and a timestamp, and forwarding decisions come out. The
//! [`datapath`] worker owns the ports, polls them with mio and feeds the core;
//! the control plane talks to it only through a lock-free command queue.

pub mod counters;
pub mod datapath;
pub mod gateway;
pub mod ipam;
pub mod mac_table;
pub mod neighbor;
pub mod offload;
pub mod port;
pub mod provision;
pub mod switch;
pub mod sys;
pub mod uplink;
pub mod vxlan_io;

use serde::{Deserialize, Serialize};

/// A switch port number, unique for the daemon's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortId(pub u32);

/// A network number, unique for the daemon's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkId(pub u32);
