//! weft's forwarding core: Ethernet switching with MAC learning (IEEE
//! 802.1D), a routing gateway per network (RFC 1812), port security, NAT
//! and the tunnel ports' side of VXLAN.
//!
//! The core ([`switch::Switch`]) does no I/O: frames go in with their
//! ingress port and a timestamp, and forwarding decisions come out through
//! a [`switch::Transmit`]. The `weft-datapath` crate's worker owns the ports,
//! polls them and feeds the core; the control plane talks to the worker
//! only through its command queue.

#![forbid(unsafe_code)]

pub mod counters;
pub mod frame;
pub mod gateway;
pub mod mac_table;
pub mod neighbor;
pub mod offload;
pub mod storm;
pub mod switch;
pub mod unresolved;

use serde::{Deserialize, Serialize};

/// A switch port number, unique for the daemon's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortId(pub u32);

/// A network number, unique for the daemon's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkId(pub u32);
