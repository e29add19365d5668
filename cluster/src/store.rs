//! [`EtcdStore`]: the control plane's [`ClusterStore`] on etcd. Each call
//! runs one transaction on the store's runtime and waits for it (at most
//! [`REQUEST_TIMEOUT`](crate::agent::REQUEST_TIMEOUT) per request), so the
//! API thread that asked gets a definite answer.
//!
//! Uniqueness comes from the transactions' compare-and-create, never from
//! reading first: a network name or VNI, an address block and an endpoint
//! address are each created only if absent, so two hosts acting at the same
//! instant cannot both win.

use std::net::Ipv4Addr;
use std::sync::Arc;

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use ipnet::Ipv4Net;
use tokio::runtime::Runtime;
use weft_api::{ApiError, ErrorKind, StoreInfo};
use weft_control::cluster::{ClusterStore, EndpointRecord, NetworkRecord};
use weft_control::ApiResult;

use crate::agent::{bounded, client, Shared};
use crate::layout::{self, BlockRecord};

/// The cluster store as the control plane sees it.
pub struct EtcdStore {
    pub(crate) shared: Arc<Shared>,
    pub(crate) runtime: Arc<Runtime>,
}

fn store_error(url: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorKind::System,
        format!("the cluster store {url} did not answer ({why}), so nothing changed: cluster-wide changes wait until it is back (see `weft status`)"),
    )
}

impl EtcdStore {
    /// Runs `f` with the session's client on the store's runtime.
    fn call<T, F, Fut>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let url = &self.shared.config.url;
        let client = client(&self.shared).map_err(|why| store_error(url, &why))?;
        self.runtime
            .block_on(f(client))
            .map_err(|why| store_error(url, &why))
    }

    fn lease(&self) -> ApiResult<i64> {
        self.shared
            .lock()
            .lease
            .ok_or_else(|| store_error(&self.shared.config.url, "this host is not registered"))
    }
}

impl ClusterStore for EtcdStore {
    fn publish_network(&self, net: &NetworkRecord) -> ApiResult<()> {
        let key = self.shared.key(&layout::network_key(&net.name));
        let vni = self.shared.key(&layout::vni_key(net.vni));
        let value = serde_json::to_vec(net).expect("records serialize");
        let txn = Txn::new()
            .when([
                Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(vni.as_str(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(key.as_str(), value, None),
                TxnOp::put(vni.as_str(), net.name.as_bytes(), None),
            ])
            .or_else([TxnOp::get(vni.as_str(), None)]);
        let resp = self.call(|mut c| async move { bounded(c.txn(txn)).await })?;
        if resp.succeeded() {
            return Ok(());
        }
        let holder = resp.op_responses().into_iter().find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        });
        Err(ApiError::new(
            ErrorKind::AlreadyExists,
            match holder {
                Some(other) if other != net.name => format!(
                    "VNI {} is already used by network `{other}` in the cluster: pick another",
                    net.vni
                ),
                _ => format!(
                    "another host already created a network named `{}`: it is on this host too (see `weft network ls`), or pick another name",
                    net.name
                ),
            },
        ))
    }

    fn remove_network(&self, name: &str) -> ApiResult<()> {
        let key = self.shared.key(&layout::network_key(name));
        let endpoints = self.shared.key(&layout::endpoints_of(name));
        let blocks = self.shared.key(&layout::blocks_of(name));
        let current = {
            let key = key.clone();
            self.call(|mut c| async move { bounded(c.get(key, None)).await })?
        };
        let Some(kv) = current.kvs().first() else {
            // Never published, or removed elsewhere meanwhile.
            return Ok(());
        };
        let vni = serde_json::from_slice::<NetworkRecord>(kv.value())
            .map(|n| self.shared.key(&layout::vni_key(n.vni)))
            .ok();
        let mut ops = vec![
            TxnOp::delete(key.as_str(), None),
            TxnOp::delete(blocks.as_str(), Some(DeleteOptions::new().with_prefix())),
        ];
        if let Some(vni) = vni {
            ops.push(TxnOp::delete(vni, None));
        }
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision()),
                // No key under endpoints/<name>/ at all.
                Compare::create_revision(endpoints.as_str(), CompareOp::Equal, 0).with_prefix(),
            ])
            .and_then(ops)
            .or_else([TxnOp::get(
                endpoints.as_str(),
                Some(GetOptions::new().with_prefix()),
            )]);
        let resp = self.call(|mut c| async move { bounded(c.txn(txn)).await })?;
        if resp.succeeded() {
            return Ok(());
        }
        let holders: Vec<EndpointRecord> = resp
            .op_responses()
            .into_iter()
            .flat_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => g
                    .kvs()
                    .iter()
                    .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        if holders.is_empty() {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("network `{name}` changed in the store meanwhile: try again"),
            ));
        }
        let list: Vec<String> = holders
            .iter()
            .map(|e| format!("{} ({}) on {}", e.name, e.ip, e.host))
            .collect();
        Err(ApiError::new(
            ErrorKind::Conflict,
            format!(
                "network `{name}` still has {} endpoint(s) in the cluster: {}; detach them on their hosts first",
                holders.len(),
                list.join(", ")
            ),
        ))
    }

    fn blocks(&self, network: &str) -> Vec<Ipv4Net> {
        self.shared
            .lock()
            .blocks
            .get(network)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    fn claim_block(&self, network: &str, subnet: Ipv4Net) -> ApiResult<Ipv4Net> {
        let lease = self.lease()?;
        let prefix = self.shared.key(&layout::blocks_of(network));
        let holder = serde_json::to_vec(&BlockRecord {
            host: self.shared.host_ip(),
        })
        .expect("records serialize");
        let shared = Arc::clone(&self.shared);
        let claimed = self.call(|mut c| async move {
            let held = bounded(c.get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ))
            .await?;
            let taken: std::collections::BTreeSet<String> = held
                .kvs()
                .iter()
                .filter_map(|kv| kv.key_str().ok().map(str::to_string))
                .collect();
            for block in layout::blocks(subnet) {
                let key = shared.key(&layout::block_key(network, block));
                if taken.contains(&key) {
                    continue;
                }
                let txn = Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.as_str(),
                        holder.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                // Lost a race for this block: the next one.
                if bounded(c.txn(txn)).await?.succeeded() {
                    return Ok(Some(block));
                }
            }
            Ok(None)
        })?;
        match claimed {
            Some(block) => {
                self.shared
                    .lock()
                    .blocks
                    .entry(network.to_string())
                    .or_default()
                    .insert(block);
                tracing::info!(%network, %block, "leased an address block");
                Ok(block)
            }
            None => Err(ApiError::new(
                ErrorKind::Exhausted,
                format!("network `{network}`: every address block of {subnet} is held by a host; detach endpoints or create a larger subnet"),
            )),
        }
    }

    fn publish_endpoint(&self, ep: &EndpointRecord) -> ApiResult<()> {
        let lease = self.lease()?;
        let key = self.shared.key(&layout::endpoint_key(&ep.network, ep.ip));
        let network = self.shared.key(&layout::network_key(&ep.network));
        let value = serde_json::to_vec(ep).expect("records serialize");
        let txn = Txn::new()
            .when([
                Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                Compare::version(network.as_str(), CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = self.call(|mut c| async move { bounded(c.txn(txn)).await })?;
        if resp.succeeded() {
            let mut state = self.shared.lock();
            state
                .endpoints
                .insert((ep.network.clone(), ep.ip), ep.clone());
            state.withdrawals.remove(&(ep.network.clone(), ep.ip));
            return Ok(());
        }
        let other: Option<EndpointRecord> = resp.op_responses().into_iter().find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .and_then(|kv| serde_json::from_slice(kv.value()).ok()),
            _ => None,
        });
        Err(match other {
            Some(o) => ApiError::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} is already used by endpoint `{}` on host {} in network `{}`: pick another address or leave --ip out",
                    ep.ip, o.name, o.host, ep.network
                ),
            ),
            None => ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "network `{}` is no longer in the cluster store: another host removed it",
                    ep.network
                ),
            ),
        })
    }

    fn withdraw_endpoint(&self, network: &str, ip: Ipv4Addr) {
        {
            let mut state = self.shared.lock();
            state.endpoints.remove(&(network.to_string(), ip));
            state.withdrawals.insert((network.to_string(), ip));
        }
        let key = self.shared.key(&layout::endpoint_key(network, ip));
        let me = self.shared.host_ip();
        // Delete only while it is still this host's record.
        let sent = self.call(|mut c| async move {
            let current = bounded(c.get(key.as_str(), None)).await?;
            if let Some(kv) = current.kvs().first() {
                let ours = serde_json::from_slice::<EndpointRecord>(kv.value())
                    .is_ok_and(|r| r.host == me);
                if ours {
                    let txn = Txn::new()
                        .when([Compare::mod_revision(
                            key.as_str(),
                            CompareOp::Equal,
                            kv.mod_revision(),
                        )])
                        .and_then([TxnOp::delete(key.as_str(), None)]);
                    bounded(c.txn(txn)).await?;
                }
            }
            Ok(())
        });
        match sent {
            Ok(()) => {
                self.shared
                    .lock()
                    .withdrawals
                    .remove(&(network.to_string(), ip));
            }
            Err(e) => {
                tracing::warn!(%network, %ip, error = %e.message, "withdrawal queued until the store is back");
            }
        }
    }

    fn remote_csum(&self) -> bool {
        self.shared.me.remote_csum
    }

    fn status(&self) -> StoreInfo {
        let hosts = self.shared.hosts();
        let state = self.shared.lock();
        StoreInfo {
            url: self.shared.config.url.clone(),
            prefix: self.shared.config.prefix.clone(),
            connected: state.connected,
            revision: state.revision,
            hosts,
            remote_endpoints: 0,
            last_error: if state.connected {
                None
            } else {
                state.last_error.clone()
            },
        }
    }
}
