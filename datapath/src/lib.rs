//! weft's datapath: the worker thread that owns every port and runs each
//! received batch through the forwarding core (`weft_switch`).
//!
//! * [`port`]: the [`port::Port`] trait (batched receive into buffers the
//!   worker owns, send with offload metadata) and the TAP port.
//! * [`uplink`]: the NAT uplink, a port on a host interface through an
//!   AF_PACKET socket.
//! * [`sockets`]: the socket uplink, a port over the daemon's own host
//!   sockets (`weft_hostnet`), for daemons without privilege.
//! * [`load`]: how heavy the traffic is, judged every 200 ms, for busy
//!   polling and placement.
//! * [`receive_thread`]: which TAPs have their receive processing run in
//!   a kernel thread of its own (threaded NAPI): those a flood is written
//!   to.
//! * [`placement`]: where the worker runs; by default next to endpoints
//!   that wait on each other, found from a per-CPU tally the kernel keeps.
//! * [`vxlan`]: the VTEP side of overlay networks (RFC 7348):
//!   encapsulation with UDP GSO, decapsulation of GRO batches.
//! * [`Datapath`] (`handle`): the handle the control plane holds; changes
//!   reach the worker as one batch ([`Command::Apply`] of [`Change`]s,
//!   `command`) through a queue, are applied all or nothing between packet
//!   batches and acknowledged once applied.
//! * `worker`: the worker thread itself, its loop, and how it applies and
//!   undoes changes.

pub mod busy_poll;
mod command;
mod handle;
pub mod load;
pub mod placement;
pub mod port;
pub mod receive_thread;
pub mod sockets;
pub mod uplink;
pub mod vxlan;
mod worker;

pub use command::{Captured, Change, Command, DatapathError, DnsQuery};
pub use handle::{Datapath, Injector, Tuning};
pub use placement::WorkerCpu;
