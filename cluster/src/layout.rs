//! Where weft's records live in the store, under the prefix (`/weft/`):
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `hosts/<vtep-ip>` | [`HostRecord`] | the host's |
//! | `networks/<name>` | [`NetworkRecord`] | none |
//! | `vnis/<vni>` | network name (keeps VNIs unique) | none |
//! | `blocks/<network>/<a.b.c.d>-<len>` | [`BlockRecord`] | the holder's |
//! | `endpoints/<network>/<ip>` | [`EndpointRecord`] | the host's |
//!
//! Everything a host holds is attached to its lease, so a host that dies
//! loses its registration, its endpoints and its address blocks at once
//! when the lease expires. Values are JSON.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use weft_control::cluster::{ClusterEvent, EndpointRecord, HostRecord, NetworkRecord};

/// An address block as stored: who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub host: Ipv4Addr,
}

/// One record of the store, parsed from its key (without the prefix) and
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Host(HostRecord),
    Network(NetworkRecord),
    Block {
        network: String,
        block: Ipv4Net,
        host: Ipv4Addr,
    },
    Endpoint(EndpointRecord),
    /// `vnis/…` and anything this version does not know.
    Other,
}

/// What a deleted key was, from the key alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    Host(Ipv4Addr),
    Network(String),
    Block { network: String, block: Ipv4Net },
    Endpoint { network: String, ip: Ipv4Addr },
    Other,
}

pub fn host_key(ip: Ipv4Addr) -> String {
    format!("hosts/{ip}")
}

pub fn network_key(name: &str) -> String {
    format!("networks/{name}")
}

pub fn vni_key(vni: u32) -> String {
    format!("vnis/{vni}")
}

pub fn blocks_of(network: &str) -> String {
    format!("blocks/{network}/")
}

pub fn block_key(network: &str, block: Ipv4Net) -> String {
    format!(
        "blocks/{network}/{}-{}",
        block.network(),
        block.prefix_len()
    )
}

pub fn endpoints_of(network: &str) -> String {
    format!("endpoints/{network}/")
}

pub fn endpoint_key(network: &str, ip: Ipv4Addr) -> String {
    format!("endpoints/{network}/{ip}")
}

fn parse_block(text: &str) -> Option<Ipv4Net> {
    let (addr, len) = text.split_once('-')?;
    Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()
}

/// What a key names.
pub fn gone(key: &str) -> Gone {
    let parts: Vec<&str> = key.split('/').collect();
    let parsed = match parts.as_slice() {
        ["hosts", ip] => ip.parse().ok().map(Gone::Host),
        ["networks", name] => Some(Gone::Network((*name).to_string())),
        ["blocks", network, block] => parse_block(block).map(|block| Gone::Block {
            network: (*network).to_string(),
            block,
        }),
        ["endpoints", network, ip] => ip.parse().ok().map(|ip| Gone::Endpoint {
            network: (*network).to_string(),
            ip,
        }),
        _ => None,
    };
    parsed.unwrap_or(Gone::Other)
}

/// Parses a record; `None` when the value is not what its key promises
/// (written by something else, or a newer weft).
pub fn item(key: &str, value: &[u8]) -> Option<Item> {
    Some(match gone(key) {
        Gone::Host(_) => Item::Host(serde_json::from_slice(value).ok()?),
        Gone::Network(_) => Item::Network(serde_json::from_slice(value).ok()?),
        Gone::Block { network, block } => {
            let rec: BlockRecord = serde_json::from_slice(value).ok()?;
            Item::Block {
                network,
                block,
                host: rec.host,
            }
        }
        Gone::Endpoint { .. } => Item::Endpoint(serde_json::from_slice(value).ok()?),
        Gone::Other => Item::Other,
    })
}

/// The control-plane event for a record that appeared or changed.
pub fn up_event(item: &Item) -> Option<ClusterEvent> {
    match item {
        Item::Host(h) => Some(ClusterEvent::HostUp(h.clone())),
        Item::Network(n) => Some(ClusterEvent::NetworkUp(n.clone())),
        Item::Endpoint(e) => Some(ClusterEvent::EndpointUp(e.clone())),
        Item::Block { .. } | Item::Other => None,
    }
}

/// The control-plane event for a record that went away.
pub fn down_event(gone: &Gone) -> Option<ClusterEvent> {
    match gone {
        Gone::Host(ip) => Some(ClusterEvent::HostDown(*ip)),
        Gone::Network(n) => Some(ClusterEvent::NetworkDown(n.clone())),
        Gone::Endpoint { network, ip } => Some(ClusterEvent::EndpointDown {
            network: network.clone(),
            ip: *ip,
        }),
        Gone::Block { .. } | Gone::Other => None,
    }
}

/// The order a full resynchronisation applies records in: hosts (peers and
/// tunnels), then networks, then endpoints (which need both); removals in
/// the opposite order.
pub fn rank(key: &str) -> u8 {
    match key.split('/').next() {
        Some("hosts") => 0,
        Some("networks") => 1,
        Some("blocks") => 2,
        Some("endpoints") => 3,
        _ => 4,
    }
}

/// The prefix length of the address blocks of `subnet`: 16 blocks for a
/// /24, 64-address blocks (as Calico's default) for /22 and larger subnets,
/// never smaller than 4 addresses.
pub fn block_len(subnet: Ipv4Net) -> u8 {
    (subnet.prefix_len() + 4)
        .clamp(26, 30)
        .max(subnet.prefix_len())
}

/// Every block of `subnet`, lowest first.
pub fn blocks(subnet: Ipv4Net) -> impl Iterator<Item = Ipv4Net> {
    subnet
        .subnets(block_len(subnet))
        .expect("block_len is at least the subnet's prefix length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn keys_round_trip() {
        let b = net("10.1.0.16/28");
        assert_eq!(
            gone(&block_key("web", b)),
            Gone::Block {
                network: "web".into(),
                block: b
            }
        );
        let ip = Ipv4Addr::new(10, 1, 0, 17);
        assert_eq!(
            gone(&endpoint_key("web", ip)),
            Gone::Endpoint {
                network: "web".into(),
                ip
            }
        );
        assert_eq!(gone(&host_key(ip)), Gone::Host(ip));
        assert_eq!(gone(&network_key("web")), Gone::Network("web".into()));
        assert_eq!(gone("hosts/not-an-ip"), Gone::Other);
        assert_eq!(gone("vnis/42"), Gone::Other);
        assert_eq!(item("hosts/10.0.0.1", b"{garbage"), None);
    }

    #[test]
    fn block_sizes() {
        assert_eq!(block_len(net("10.0.0.0/24")), 28);
        assert_eq!(block_len(net("10.0.0.0/16")), 26);
        assert_eq!(block_len(net("10.0.0.0/28")), 30);
        assert_eq!(block_len(net("10.0.0.0/30")), 30);
        assert_eq!(blocks(net("10.0.0.0/24")).count(), 16);
        assert_eq!(blocks(net("10.0.0.0/24")).nth(1), Some(net("10.0.0.16/28")));
    }
}
