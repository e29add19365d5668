//! weft's benchmarks.
//!
//! - [`harness`]: the `weft bench` harness, which measures weft against
//!   other switches (kernel bridge and VXLAN, Open vSwitch, VDE) in network
//!   namespaces of its own; the `weft` binary parses the command line and
//!   calls [`harness::run`].
//! - The criterion micro-benchmarks live in `benches/`; run them with
//!   `cargo bench -p weft-benches`.

#![forbid(unsafe_code)]

pub mod harness;
