//! weft's control plane as a library.
//!
//! [`Control`] holds the registry of networks, endpoints, routes, peers,
//! the uplink, published ports and services, and applies API requests
//! ([`weft_api::Request`]) to it one at a time, either through
//! [`Control::handle`] or through its typed methods (`network_create`,
//! `attach`, …). It does no I/O of its own: it drives a [`Datapath`] and
//! makes devices through a [`Provisioner`], the two traits of [`ports`].
//! The daemon plugs in the real datapath worker and OS code; tests plug in
//! fakes and run as an ordinary user.
//!
//! Every request is applied completely or not at all: each operation checks
//! the whole request first, sends the datapath all its changes as one batch
//! ([`Datapath::apply`], which the worker applies all or nothing), and, when
//! a step outside the datapath fails (the OS, the address pool, or saving
//! the state), undoes its own earlier steps before it returns the error.
//!
//! A multi-host control plane plugs in through [`cluster`]: a
//! [`cluster::ClusterStore`] the operations publish to, and
//! [`Control::cluster_event`] for what other hosts did.
//!
//! Modules, lowest first: [`error`], [`ports`], [`persist`], [`dns`] (the
//! gateways' DNS responders and the name tables they read), `state` (the
//! registry and shared lookups), then one module per group of operations
//! (`overlay`, `nat`, `network`, `endpoint`, `query`, `reap`), `startup` and
//! `dispatch`.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod dns;
pub mod error;
pub mod ipam;
pub mod persist;
pub mod ports;

mod dispatch;
mod endpoint;
mod nat;
mod network;
mod overlay;
mod query;
mod reap;
mod startup;
mod state;

pub use endpoint::{parse_unicast_mac, AttachSpec};
pub use error::ApiResult;
pub use nat::parse_publish;
pub use network::NetworkSpec;
pub use overlay::resolve_vtep_ip;
pub use persist::{PersistError, StateFile};
pub use ports::{
    Datapath, Netns, NetnsTarget, Provisioner, SocketUplinkConfig, TapRequest, UplinkDevice,
};
pub use query::{MetricsSources, PortSource, TapLocation, TapToRead};
pub use state::{Control, VxlanSettings, DEFAULT_MTU, VXLAN_OVERHEAD};
