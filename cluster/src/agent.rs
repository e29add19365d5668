//! The agent: one task on the store's runtime thread that keeps this host
//! registered and the control plane's view of the others current.
//!
//! A session registers the host under a lease (granted anew only when the
//! old one expired, and then re-writing every block and endpoint this host
//! holds), then watches the whole prefix from the revision after the last
//! one seen, sending a keep-alive every third of the lease's TTL. When the
//! store goes away the session ends, the data plane keeps the last known
//! state, and a new session starts a second later: it resumes the watch
//! where the last one stopped, or, when the store compacted that history
//! away, reads everything and reports only the differences.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use ipnet::Ipv4Net;
use weft_control::cluster::{ClusterEvent, EndpointRecord, HostRecord};

use crate::config::StoreConfig;
use crate::layout::{self, BlockRecord, Gone, Item};

/// Bound of one store request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between sessions while the store is unreachable.
const RETRY: Duration = Duration::from_secs(1);

/// What the agent and the blocking calls share.
pub struct Shared {
    pub config: StoreConfig,
    pub me: HostRecord,
    pub state: Mutex<State>,
}

/// The agent's view of the store and of what this host holds in it.
#[derive(Default)]
pub struct State {
    pub client: Option<Client>,
    pub connected: bool,
    pub last_error: Option<String>,
    /// The host's lease, while it is alive.
    pub lease: Option<i64>,
    /// The store revision `view` reflects.
    pub revision: i64,
    /// Every record under the prefix, by key without the prefix.
    pub view: BTreeMap<String, Vec<u8>>,
    /// Address blocks this host holds, by network.
    pub blocks: BTreeMap<String, BTreeSet<Ipv4Net>>,
    /// Endpoints this host published, to write again under a new lease.
    pub endpoints: BTreeMap<(String, Ipv4Addr), EndpointRecord>,
    /// Withdrawals that could not reach the store yet.
    pub withdrawals: BTreeSet<(String, Ipv4Addr)>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.config.prefix)
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        *self.me.vtep.ip()
    }

    /// Number of hosts registered.
    pub fn hosts(&self) -> usize {
        self.lock()
            .view
            .keys()
            .filter(|k| k.starts_with("hosts/"))
            .count()
    }
}

/// A short description of a store error, with its causes (a transport
/// error's cause says, for one, why a TLS handshake failed).
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => match std::error::Error::source(s) {
            Some(cause) => format!("{}: {}", s.message(), crate::tls::chain(cause)),
            None => s.message().to_string(),
        },
        other => crate::tls::chain(other),
    }
}

/// Whether a store error is etcd refusing the user or password.
pub fn is_auth_failure(why: &str) -> bool {
    why.contains("authentication failed") || why.contains("user name is empty")
}

/// Bounds a store request by [`REQUEST_TIMEOUT`].
pub async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
    }
}

/// A new client for the configured members (connecting is lazy: the first
/// request tells whether the store is there).
pub async fn connect(config: &StoreConfig) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT);
    if let Some((user, password)) = &config.user {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &config.tls {
        options = options.with_tls(tls.options());
    }
    bounded(Client::connect(config.endpoints.clone(), Some(options))).await
}

/// The client of the current session.
pub fn client(shared: &Shared) -> Result<Client, String> {
    let state = shared.lock();
    match (&state.client, state.lease) {
        (Some(c), Some(_)) if state.connected => Ok(c.clone()),
        _ => Err(state
            .last_error
            .clone()
            .unwrap_or_else(|| "not connected".into())),
    }
}

/// Registers the host: keeps the current lease if it is still alive, else
/// grants a new one and writes the host, its blocks and its endpoints under
/// it. Pending withdrawals are sent.
async fn register(shared: &Shared, client: &mut Client) -> Result<i64, String> {
    let current = shared.lock().lease;
    if let Some(id) = current {
        let alive = bounded(client.lease_time_to_live(id, None)).await?;
        if alive.ttl() > 0 {
            flush_withdrawals(shared, client).await?;
            return Ok(id);
        }
        tracing::warn!(lease = id, "the host's lease expired: registering again");
    }
    let lease = bounded(client.lease_grant(shared.config.lease_ttl, None))
        .await?
        .id();
    let with_lease = || Some(PutOptions::new().with_lease(lease));
    let me = serde_json::to_vec(&shared.me).expect("records serialize");
    bounded(client.put(
        shared.key(&layout::host_key(shared.host_ip())),
        me,
        with_lease(),
    ))
    .await?;
    let (blocks, endpoints) = {
        let state = shared.lock();
        (state.blocks.clone(), state.endpoints.clone())
    };
    let holder = serde_json::to_vec(&BlockRecord {
        host: shared.host_ip(),
    })
    .expect("records serialize");
    for (network, held) in blocks {
        for block in held {
            let key = shared.key(&layout::block_key(&network, block));
            if !rewrite_own(shared, client, &key, holder.clone(), lease).await? {
                tracing::warn!(%network, %block, "another host took this host's address block while it was away");
                if let Some(set) = shared.lock().blocks.get_mut(&network) {
                    set.remove(&block);
                }
            }
        }
    }
    for ((network, ip), rec) in endpoints {
        let key = shared.key(&layout::endpoint_key(&network, ip));
        let value = serde_json::to_vec(&rec).expect("records serialize");
        if !rewrite_own(shared, client, &key, value, lease).await? {
            tracing::warn!(%network, %ip, "another host took this endpoint's address while this host was away");
        }
    }
    shared.lock().lease = Some(lease);
    flush_withdrawals(shared, client).await?;
    tracing::info!(host = %shared.me.vtep, lease, "registered in the store");
    Ok(lease)
}

/// Writes `value` at `key` under `lease` unless another host holds the key;
/// whether it was written.
async fn rewrite_own(
    shared: &Shared,
    client: &mut Client,
    key: &str,
    value: Vec<u8>,
    lease: i64,
) -> Result<bool, String> {
    let current = bounded(client.get(key, None)).await?;
    if let Some(kv) = current.kvs().first() {
        let holder: Option<BlockRecord> = serde_json::from_slice(kv.value()).ok();
        if holder.is_some_and(|h| h.host != shared.host_ip()) {
            return Ok(false);
        }
    }
    bounded(client.put(key, value, Some(PutOptions::new().with_lease(lease)))).await?;
    Ok(true)
}

/// Sends the withdrawals queued while the store was away. Only this host's
/// own records are deleted.
async fn flush_withdrawals(shared: &Shared, client: &mut Client) -> Result<(), String> {
    let pending: Vec<(String, Ipv4Addr)> = shared.lock().withdrawals.iter().cloned().collect();
    for (network, ip) in pending {
        let key = shared.key(&layout::endpoint_key(&network, ip));
        let current = bounded(client.get(key.as_str(), None)).await?;
        let ours = current.kvs().first().is_some_and(|kv| {
            serde_json::from_slice::<EndpointRecord>(kv.value())
                .is_ok_and(|r| r.host == shared.host_ip())
        });
        if ours {
            let revision = current.kvs()[0].mod_revision();
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            bounded(client.txn(txn)).await?;
        }
        shared.lock().withdrawals.remove(&(network, ip));
    }
    Ok(())
}

/// Reads every record and reports what changed since the view; returns
/// the revision read at.
async fn full_read(
    shared: &Shared,
    client: &mut Client,
    events: &Sender<ClusterEvent>,
) -> Result<i64, String> {
    let resp = bounded(client.get(
        shared.config.prefix.as_str(),
        Some(GetOptions::new().with_prefix()),
    ))
    .await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
    let fresh: BTreeMap<String, Vec<u8>> = resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = kv.key_str().ok()?;
            let rest = key.strip_prefix(shared.config.prefix.as_str())?;
            Some((rest.to_string(), kv.value().to_vec()))
        })
        .collect();
    let old = std::mem::take(&mut shared.lock().view);
    // Removals first, endpoints before networks before hosts.
    let mut gone: Vec<&String> = old.keys().filter(|k| !fresh.contains_key(*k)).collect();
    gone.sort_by_key(|k| std::cmp::Reverse(layout::rank(k)));
    for key in gone {
        apply_delete(shared, key, events);
    }
    let mut changed: Vec<(&String, &Vec<u8>)> = fresh
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .collect();
    changed.sort_by_key(|(k, _)| layout::rank(k));
    for (key, value) in changed {
        apply_put(shared, key, value, events);
    }
    let mut state = shared.lock();
    state.view = fresh;
    state.revision = revision;
    Ok(revision)
}

/// Records a put in the view and reports it.
fn apply_put(shared: &Shared, key: &str, value: &[u8], events: &Sender<ClusterEvent>) {
    let mut state = shared.lock();
    state.view.insert(key.to_string(), value.to_vec());
    match layout::item(key, value) {
        Some(Item::Block {
            network,
            block,
            host,
        }) if host == shared.host_ip() => {
            state.blocks.entry(network).or_default().insert(block);
        }
        Some(item) => {
            drop(state);
            if let Some(event) = layout::up_event(&item) {
                let _ = events.send(event);
            }
        }
        None => tracing::warn!(key, "ignoring a record weft cannot read"),
    }
}

/// Records a delete in the view and reports it.
fn apply_delete(shared: &Shared, key: &str, events: &Sender<ClusterEvent>) {
    let mut state = shared.lock();
    state.view.remove(key);
    let gone = layout::gone(key);
    match &gone {
        Gone::Block { network, block } => {
            if let Some(set) = state.blocks.get_mut(network) {
                set.remove(block);
            }
        }
        Gone::Endpoint { network, ip } => {
            // Removed by `network rm` elsewhere, or expired: no longer ours.
            state.endpoints.remove(&(network.clone(), *ip));
        }
        _ => {}
    }
    drop(state);
    if let Some(event) = layout::down_event(&gone) {
        let _ = events.send(event);
    }
}

/// One session: register, catch up, then follow the watch and keep the
/// lease alive until the store goes away.
async fn session(shared: &Shared, events: &Sender<ClusterEvent>) -> Result<(), String> {
    let mut client = connect(&shared.config).await?;
    {
        let mut state = shared.lock();
        state.client = Some(client.clone());
    }
    let lease = register(shared, &mut client).await?;
    let mut revision = shared.lock().revision;
    if revision == 0 {
        revision = full_read(shared, &mut client, events).await?;
    }
    let prefix = shared.config.prefix.clone();
    loop {
        let (_watcher, mut stream) = bounded(
            client.watch(
                prefix.as_str(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1)
                        .with_progress_notify(),
                ),
            ),
        )
        .await?;
        {
            let mut state = shared.lock();
            state.connected = true;
            state.last_error = None;
        }
        tracing::info!(revision, "watching the store");
        let (mut keeper, mut alive) = bounded(client.lease_keep_alive(lease)).await?;
        let mut tick = tokio::time::interval(Duration::from_secs(
            (shared.config.lease_ttl as u64 / 3).max(1),
        ));
        let compacted = loop {
            tokio::select! {
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(resp)) => resp,
                        Ok(None) => return Err("the watch ended".into()),
                        Err(e) => return Err(describe(&e)),
                    };
                    if resp.compact_revision() > 0 {
                        break true;
                    }
                    if resp.canceled() {
                        return Err(format!("the store cancelled the watch: {}", resp.cancel_reason()));
                    }
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        let Some(key) = kv.key_str().ok().and_then(|k| k.strip_prefix(prefix.as_str())) else {
                            continue;
                        };
                        match event.event_type() {
                            EventType::Put => apply_put(shared, key, kv.value(), events),
                            EventType::Delete => apply_delete(shared, key, events),
                        }
                        revision = revision.max(kv.mod_revision());
                    }
                    if let Some(h) = resp.header() {
                        revision = revision.max(h.revision());
                    }
                    shared.lock().revision = revision;
                }
                _ = tick.tick() => {
                    keeper.keep_alive().await.map_err(|e| describe(&e))?;
                    match bounded(alive.message()).await? {
                        Some(r) if r.ttl() > 0 => {}
                        _ => {
                            shared.lock().lease = None;
                            return Err("the host's lease expired".into());
                        }
                    }
                }
            }
        };
        if compacted {
            tracing::warn!(
                revision,
                "the store compacted past the last revision seen: reading everything"
            );
            revision = full_read(shared, &mut client, events).await?;
        }
    }
}

/// Runs sessions until the process ends.
pub async fn run(shared: Arc<Shared>, events: Sender<ClusterEvent>) {
    loop {
        let result = session(&shared, &events).await;
        let why = match result {
            Ok(()) => "the session ended".to_string(),
            Err(e) => crate::tls::explain_failure(&e, shared.config.tls.as_ref()).unwrap_or(e),
        };
        let was = {
            let mut state = shared.lock();
            let was = state.connected;
            state.connected = false;
            state.last_error = Some(why.clone());
            was
        };
        if was {
            tracing::warn!(error = %why, url = %shared.config.url, "lost the store: forwarding goes on with the last known state");
        } else {
            tracing::debug!(error = %why, "the store is still unreachable");
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The first session's work, done before the daemon serves: check that the
/// store answers, read everything, and register.
pub async fn start(shared: &Shared, events: &Sender<ClusterEvent>) -> Result<(), String> {
    let mut client = connect(&shared.config).await?;
    bounded(client.get("weft-probe", Some(GetOptions::new().with_count_only()))).await?;
    shared.lock().client = Some(client.clone());
    // Read first: address blocks this host held before a restart (under
    // its old lease) are then written again under the new one.
    full_read(shared, &mut client, events).await?;
    register(shared, &mut client).await?;
    let mut state = shared.lock();
    state.connected = true;
    Ok(())
}
