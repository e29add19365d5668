//! The success result of `ADD` (CNI spec 1.1, section "Success"):
//! `interfaces` (with `mac` and `sandbox`), `ips` (address with prefix,
//! gateway, index into `interfaces`), `routes` and `dns`; and the
//! `VERSION` result ("Version success").
//!
//! A 0.4.0 result differs only in each `ips` entry's `version: "4"`.

use std::net::Ipv4Addr;

use serde_json::{json, Value};
use weft_api::EndpointInfo;

use crate::SUPPORTED_VERSIONS;

/// The `ADD` result for `endpoint` in namespace `sandbox`. `default_route`:
/// this is the namespace's first network, whose gateway is its default
/// route.
pub fn add_result(
    version: &str,
    endpoint: &EndpointInfo,
    gateway: Ipv4Addr,
    sandbox: &str,
    default_route: bool,
) -> Value {
    let mut ip = json!({
        "address": endpoint.ip.to_string(),
        "gateway": gateway.to_string(),
        "interface": 0,
    });
    if version == "0.4.0" {
        ip["version"] = json!("4");
    }
    let routes: Vec<Value> = if default_route {
        vec![json!({"dst": "0.0.0.0/0", "gw": gateway.to_string()})]
    } else {
        Vec::new()
    };
    json!({
        "cniVersion": version,
        "interfaces": [{
            "name": endpoint.ifname,
            "mac": endpoint.mac,
            "sandbox": sandbox,
        }],
        "ips": [ip],
        "routes": routes,
        "dns": {"nameservers": [gateway.to_string()]},
    })
}

/// The `VERSION` result.
pub fn version_result(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

/// What `CHECK` compares: the address (with prefix) and MAC `prevResult`
/// gives for interface `ifname` in `sandbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub address: Option<String>,
    pub mac: Option<String>,
}

/// Reads the interface `ifname` in `sandbox` and its address from a
/// previous result; `None` when it has no such interface.
pub fn expected(prev: &Value, ifname: &str, sandbox: &str) -> Option<Expected> {
    let interfaces = prev.get("interfaces")?.as_array()?;
    let index = interfaces.iter().position(|i| {
        i.get("name").and_then(Value::as_str) == Some(ifname)
            && i.get("sandbox")
                .and_then(Value::as_str)
                .is_none_or(|s| s == sandbox)
    })?;
    let mac = interfaces[index]
        .get("mac")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let address = prev
        .get("ips")
        .and_then(Value::as_array)
        .and_then(|ips| {
            ips.iter()
                .find(|ip| ip.get("interface").and_then(Value::as_u64) == Some(index as u64))
        })
        .and_then(|ip| ip.get("address"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some(Expected { address, mac })
}
