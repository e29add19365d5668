//! The plugin's operations (CNI spec 1.1, section "CNI Operations"), each
//! over the weft daemon's API:
//!
//! * `ADD` ("ADD: Add container to network"): `attach` with the namespace
//!   path of `CNI_NETNS`, the interface `CNI_IFNAME`, the endpoint named
//!   after `K8S_POD_NAME` (else the container ID; a container's second
//!   interface on the network adds `-IFNAME`), and the owner that `DEL`,
//!   `CHECK` and `GC` find it by: the attachment key of section "GC"
//!   (network name, container ID, interface). The daemon refuses a second
//!   endpoint for one owner. A static address and MAC come from the `ips`
//!   and `mac` capabilities, else from `IP` and `MAC` in `CNI_ARGS`;
//! * `DEL` ("DEL: Remove container from network"): `detach` the owner's
//!   endpoint; one already gone is no error;
//! * `CHECK` ("CHECK: Check container's networking is as expected"): the
//!   endpoint exists with `prevResult`'s address and MAC;
//! * `GC` ("GC: Clean up any stale resources"): detach the endpoints this
//!   network configuration made (their owner names its `name`) whose
//!   owner is not in `cni.dev/valid-attachments`;
//! * `STATUS` ("STATUS: Check plugin status"): the daemon answers;
//! * `VERSION` ("VERSION: probe plugin version support").
//!
//! Endpoints do not outlive the daemon (their TAP devices close with it),
//! so `DEL` and `GC` find nothing to remove when it is not running and
//! succeed; `ADD` and `CHECK` fail with 11, "try again later".

use std::path::Path;

use serde_json::Value;
use weft_api::client::{call_as, ClientError};
use weft_api::{EndpointInfo, EndpointOwner, ErrorKind, NetworkInfo, Request, StatusInfo};

use crate::config::{check_version, Config};
use crate::env::{self, Command, Env};
use crate::error::{
    from_client, CniError, CHECK_FAILED, INVALID_CONFIG, NOT_AVAILABLE, TRY_AGAIN_LATER,
};
use crate::result::{add_result, expected, version_result};
use crate::LATEST_VERSION;

/// Runs the command `CNI_COMMAND` names: its result JSON, `None` for a
/// silent success, or the error.
pub fn dispatch(
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    let command = env::command(var)?;
    if command == Command::Version {
        return version(stdin).map(Some);
    }
    let config = Config::parse(stdin)?;
    let env = Env::read(var, command).map_err(|e| e.version(&config.cni_version))?;
    let out = match command {
        Command::Add => add(&config, &env).map(Some),
        Command::Del => del(&config, &env).map(|()| None),
        Command::Check => check(&config, &env).map(|()| None),
        Command::Gc => gc(&config).map(|()| None),
        Command::Status => status(&config).map(|()| None),
        Command::Version => unreachable!("answered above"),
    };
    out.map_err(|e| e.version(&config.cni_version))
}

/// `VERSION`: stdin holds at most `{"cniVersion": …}`.
fn version(stdin: &[u8]) -> Result<Value, CniError> {
    let text = String::from_utf8_lossy(stdin);
    if text.trim().is_empty() {
        return Ok(version_result(LATEST_VERSION));
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        CniError::new(
            crate::error::DECODING_FAILURE,
            format!("the VERSION input is not valid JSON: {e}"),
        )
    })?;
    match value.get("cniVersion").and_then(Value::as_str) {
        None => Ok(version_result(LATEST_VERSION)),
        Some(v) => {
            check_version(v)?;
            Ok(version_result(v))
        }
    }
}

/// The attachment key of this invocation.
fn owner(config: &Config, env: &Env) -> EndpointOwner {
    EndpointOwner {
        network: config.name.clone(),
        container_id: env.container_id.clone().unwrap_or_default(),
        ifname: env.ifname.clone().unwrap_or_default(),
    }
}

/// The endpoint's name: `K8S_POD_NAME`, else `cni-` and the container
/// ID's first 12 characters; with `-IFNAME` appended when the container
/// already has another interface among `existing` (the network's
/// endpoints), so each of its interfaces gets a name of its own.
fn endpoint_name(env: &Env, existing: &[EndpointInfo]) -> String {
    let id = env.container_id.as_deref().unwrap_or_default();
    let base = match env.arg("K8S_POD_NAME").filter(|n| !n.is_empty()) {
        Some(name) => name.to_owned(),
        None => format!("cni-{}", &id[..id.len().min(12)]),
    };
    let ifname = env.ifname.as_deref().unwrap_or_default();
    let another = existing.iter().any(|e| {
        e.owner
            .as_ref()
            .is_some_and(|o| o.container_id == id && o.ifname != ifname)
    });
    if another {
        format!("{base}-{ifname}")
    } else {
        base
    }
}

/// The network, or error 7 when the daemon has none of that name.
fn network(config: &Config, socket: &Path) -> Result<NetworkInfo, CniError> {
    let networks: Vec<NetworkInfo> = call_as(socket, &Request::NetworkList).map_err(from_client)?;
    networks
        .into_iter()
        .find(|n| n.name == config.network())
        .ok_or_else(|| {
            config.invalid(format!(
                "weft has no network `{0}`: create it with `weft network create {0} --subnet …`",
                config.network()
            ))
        })
}

/// The network's endpoints; `None` when the network (or the daemon) is
/// gone, and with it every endpoint.
fn endpoints(config: &Config, socket: &Path) -> Result<Option<Vec<EndpointInfo>>, CniError> {
    let req = Request::Endpoints {
        network: Some(config.network().to_owned()),
    };
    match call_as::<Vec<EndpointInfo>>(socket, &req) {
        Ok(list) => Ok(Some(list)),
        Err(ClientError::NotRunning { .. }) => Ok(None),
        Err(ClientError::Refused(e)) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(from_client(e)),
    }
}

/// Detaches one endpoint; one already gone is no error.
fn detach(config: &Config, socket: &Path, endpoint: &str) -> Result<(), CniError> {
    let req = Request::Detach {
        network: config.network().to_owned(),
        endpoint: endpoint.to_owned(),
    };
    match call_as::<EndpointInfo>(socket, &req) {
        Ok(_) => Ok(()),
        Err(ClientError::NotRunning { .. }) => Ok(()),
        Err(ClientError::Refused(e)) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(from_client(e)),
    }
}

fn add(config: &Config, env: &Env) -> Result<Value, CniError> {
    let socket = config.socket();
    let netns = env.netns.clone().unwrap_or_default();
    let publish = config.publish()?;
    let ip = config.static_ip(env.arg("IP"))?;
    let net = network(config, &socket)?;
    let existing = endpoints(config, &socket)?.unwrap_or_default();
    let name = endpoint_name(env, &existing);
    // The runtime gives every interface of a container the same aliases;
    // the container's first interface keeps those that are its name.
    let id = env.container_id.as_deref().unwrap_or_default();
    let taken = |alias: &str| {
        existing
            .iter()
            .any(|e| e.name == alias && e.owner.as_ref().is_some_and(|o| o.container_id == id))
    };
    let mut aliases: Vec<String> = Vec::new();
    for alias in config.aliases() {
        if alias != name && !aliases.contains(&alias) && !taken(&alias) {
            aliases.push(alias);
        }
    }
    let endpoint: EndpointInfo = call_as(
        &socket,
        &Request::Attach {
            network: config.network().to_owned(),
            netns: Some(netns.clone()),
            pid: None,
            name: Some(name),
            ip,
            mac: config.static_mac(env.arg("MAC")),
            ifname: env.ifname.clone(),
            publish,
            aliases,
            no_resolv_conf: true,
            owner: Some(owner(config, env)),
        },
    )
    .map_err(from_client)?;
    // The namespace's first weft network sets its default route (as
    // `attach` does): no other endpoint in this namespace.
    let all: Vec<EndpointInfo> =
        call_as(&socket, &Request::Endpoints { network: None }).map_err(from_client)?;
    let first = !all
        .iter()
        .any(|e| e.netns == netns && !(e.network == endpoint.network && e.name == endpoint.name));
    Ok(add_result(
        &config.cni_version,
        &endpoint,
        net.gateway,
        &netns,
        first,
    ))
}

fn del(config: &Config, env: &Env) -> Result<(), CniError> {
    let socket = config.socket();
    let owner = owner(config, env);
    let Some(list) = endpoints(config, &socket)? else {
        return Ok(());
    };
    for ep in list.iter().filter(|e| e.owner.as_ref() == Some(&owner)) {
        detach(config, &socket, &ep.name)?;
    }
    Ok(())
}

fn check(config: &Config, env: &Env) -> Result<(), CniError> {
    let socket = config.socket();
    let owner = owner(config, env);
    let netns = env.netns.as_deref().unwrap_or_default();
    let prev = config.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "CHECK needs `prevResult` in the configuration",
        )
    })?;
    let want = expected(prev, &owner.ifname, netns).ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            format!("prevResult has no interface `{}` in {netns}", owner.ifname),
        )
    })?;
    let list = match call_as::<Vec<EndpointInfo>>(
        &socket,
        &Request::Endpoints {
            network: Some(config.network().to_owned()),
        },
    ) {
        Ok(list) => list,
        Err(ClientError::Refused(e)) if e.kind == ErrorKind::NotFound => {
            return Err(CniError::new(CHECK_FAILED, format!("weft: {}", e.message)))
        }
        Err(e) => return Err(from_client(e)),
    };
    let ep = list
        .iter()
        .find(|e| e.owner.as_ref() == Some(&owner))
        .ok_or_else(|| {
            CniError::new(
                CHECK_FAILED,
                format!(
                    "container {} has no endpoint `{}` in weft network `{}`",
                    owner.container_id,
                    owner.ifname,
                    config.network()
                ),
            )
        })?;
    let mut wrong = Vec::new();
    if ep.netns != netns {
        wrong.push(format!("namespace {} (expected {netns})", ep.netns));
    }
    if let Some(address) = &want.address {
        if ep.ip.to_string() != *address {
            wrong.push(format!("address {} (expected {address})", ep.ip));
        }
    }
    if let Some(mac) = &want.mac {
        if !ep.mac.eq_ignore_ascii_case(mac) {
            wrong.push(format!("MAC {} (expected {mac})", ep.mac));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            CHECK_FAILED,
            format!(
                "endpoint `{}` differs from prevResult: {}",
                ep.name,
                wrong.join(", ")
            ),
        ))
    }
}

fn gc(config: &Config) -> Result<(), CniError> {
    let socket = config.socket();
    let valid: Vec<EndpointOwner> = config
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| EndpointOwner {
            network: config.name.clone(),
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
        })
        .collect();
    let Some(mut list) = endpoints(config, &socket)? else {
        return Ok(());
    };
    // Only what this network configuration made: endpoints attached by
    // hand have no owner, and other configurations may share the weft
    // network.
    list.retain(|ep| ep.owner.as_ref().is_some_and(|o| o.network == config.name));
    if config.valid_attachments.is_none() && !list.is_empty() {
        // Without the list every container's endpoint would look stale:
        // refuse rather than detach them all.
        return Err(CniError::new(
            INVALID_CONFIG,
            "GC needs `cni.dev/valid-attachments` (the attachments still in use); nothing was removed",
        ));
    }
    for ep in &list {
        if ep.owner.as_ref().is_some_and(|o| !valid.contains(o)) {
            detach(config, &socket, &ep.name)?;
        }
    }
    Ok(())
}

fn status(config: &Config) -> Result<(), CniError> {
    let socket = config.socket();
    if !socket.exists() {
        return Err(CniError::new(
            TRY_AGAIN_LATER,
            format!(
                "no weft daemon socket at {}: start the daemon with `weft daemon`",
                socket.display()
            ),
        ));
    }
    match call_as::<StatusInfo>(&socket, &Request::Status) {
        Ok(_) => Ok(()),
        Err(e) => Err(CniError::new(
            NOT_AVAILABLE,
            format!("the weft daemon cannot serve ADD: {e}"),
        )),
    }
}
