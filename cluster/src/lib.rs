//! weft's multi-host control plane on etcd (the v3 API, over gRPC with the
//! `etcd-client` crate).
//!
//! With `weft daemon --store etcd://HOST:PORT`, every daemon registers its
//! host (VTEP address, underlay MTU, version) under a lease it keeps alive,
//! and watches the store for the others. Through the control plane's
//! [`ClusterStore`](weft_control::cluster::ClusterStore) hooks, overlay
//! networks are created and removed cluster-wide, addresses come from
//! blocks each host leases on demand (as Calico's IPAM blocks), and
//! endpoints are published so every host installs every remote endpoint's
//! MAC and address before the first packet. The records and their keys are
//! described in [`layout`].
//!
//! The client runs on a small tokio runtime of its own (one worker thread);
//! the datapath is untouched, and keeps forwarding on the last known state
//! while the store is away ([`agent`] explains the reconnection).
//!
//! The store may be reached over TLS (`--store etcds://...` with
//! `--store-ca`, and `--store-cert`/`--store-key` when etcd checks client
//! certificates) and with a user and password when etcd has authentication
//! on; every file and option is checked before the daemon starts ([`tls`]).
//!
//! Modules: [`config`] (`--store`), [`tls`] (the TLS files and handshake
//! failures), [`error`], [`layout`] (keys and records), [`agent`]
//! (registration, watch, resynchronisation) and [`store`] (the hooks'
//! transactions).

#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod error;
pub mod layout;
pub mod store;
pub mod tls;

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

pub use config::{StoreConfig, DEFAULT_LEASE_TTL, DEFAULT_PREFIX};
pub use error::ClusterError;
pub use store::EtcdStore;
pub use tls::TlsFiles;
use weft_control::cluster::{ClusterEvent, HostRecord};

/// Connects to the store, registers this host, reads every record (their
/// events are in `events` when this returns) and starts the agent that
/// follows the store from then on. Fails with a clear error when the store
/// does not answer.
pub fn start(
    config: StoreConfig,
    me: HostRecord,
    events: Sender<ClusterEvent>,
) -> Result<EtcdStore, ClusterError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("weft-store")
        .enable_all()
        .build()
        .map_err(ClusterError::Runtime)?;
    let shared = Arc::new(agent::Shared {
        config,
        me,
        state: Mutex::new(agent::State::default()),
    });
    runtime
        .block_on(agent::start(&shared, &events))
        .map_err(|why| {
            let url = shared.config.url.clone();
            if let Some(why) = tls::explain_failure(&why, shared.config.tls.as_ref()) {
                ClusterError::TlsRefused { url, why }
            } else if agent::is_auth_failure(&why) {
                ClusterError::AuthRefused { url, why }
            } else if let Some(why) = shared
                .config
                .tls
                .is_none()
                .then(|| tls::explain_plain_failure(&why))
                .flatten()
            {
                ClusterError::ClosedOnPlain { url, why }
            } else {
                ClusterError::Unreachable { url, why }
            }
        })?;
    tracing::info!(url = %shared.config.url, prefix = %shared.config.prefix, revision = shared.lock().revision, "joined the cluster store");
    runtime.spawn(agent::run(Arc::clone(&shared), events));
    Ok(EtcdStore {
        shared,
        runtime: Arc::new(runtime),
    })
}
