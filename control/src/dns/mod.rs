//! The gateways' DNS service (what Docker's 127.0.0.11 is on user-defined
//! networks): names of endpoints, their aliases and services, answered
//! within the asker's network only; other names forwarded upstream, with
//! SERVFAIL within 2 s when no upstream answers (RFC 8906).
//!
//! The datapath hands each query for a gateway's port 53 to the UDP
//! responder ([`udp`]) over a bounded queue, which passes TCP segments on
//! to the DNS-over-TCP responder ([`tcp`], RFC 7766); answers go back as
//! frames through the datapath's injector. Both read the tables of
//! [`names`], which the control plane keeps.

pub mod names;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crossbeam_channel::{bounded, Sender};
use weft_datapath::DnsQuery;
use weft_datapath::Injector;
use weft_dns::Forwarder;

pub use names::{table_for, NameTables};

/// Queries waiting for the resolver thread.
const QUEUE: usize = 1024;
/// How long forwarding may take before the answer is SERVFAIL.
const UPSTREAM_DEADLINE: std::time::Duration = std::time::Duration::from_millis(1800);

/// What the DNS service did, for the metrics exporter. Relaxed atomics,
/// written by the resolver threads only.
#[derive(Debug, Default)]
pub struct DnsCounters {
    /// UDP queries received.
    pub udp_queries: AtomicU64,
    /// TCP segments for port 53 handed to the TCP responder.
    pub tcp_segments: AtomicU64,
    /// Queries answered from the network's own names.
    pub local_answers: AtomicU64,
    /// Queries forwarded upstream.
    pub forwarded: AtomicU64,
    /// Answers that were SERVFAIL (no upstream answered in time, or too
    /// many forwards in flight).
    pub servfail: AtomicU64,
    /// Queries dropped unanswered (malformed, or a TCP segment that found
    /// the TCP responder's queue full).
    pub dropped: AtomicU64,
}

pub use tcp::IDLE_TIMEOUT as TCP_IDLE_TIMEOUT;

/// Starts the resolver thread; returns the queue the datapath feeds.
/// `counters` records what it does; a DNS-over-TCP connection with nothing
/// to do is closed after `tcp_idle_timeout` ([`TCP_IDLE_TIMEOUT`] by
/// default).
pub fn start(
    tables: NameTables,
    upstreams: Vec<SocketAddr>,
    injector: Injector,
    counters: Arc<DnsCounters>,
    tcp_idle_timeout: std::time::Duration,
) -> std::io::Result<Sender<DnsQuery>> {
    let (tx, rx) = bounded(QUEUE);
    // Upstreams get 1.8 s in all, so that with the queueing and the trip
    // through the datapath the asker has its SERVFAIL within 2 s.
    let forwarder = Arc::new(Forwarder::new(upstreams).with_timeout(UPSTREAM_DEADLINE));
    let tcp = tcp::start(
        Arc::clone(&tables),
        Arc::clone(&forwarder),
        injector.clone(),
        tcp_idle_timeout,
    )?;
    std::thread::Builder::new()
        .name("weft-dns".into())
        .spawn(move || udp::serve(rx, tcp, tables, forwarder, injector, &counters))?;
    Ok(tx)
}
