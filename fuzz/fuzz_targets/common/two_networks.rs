//! The switch the `switch_frame` and `gateway` targets drive: networks
//! 10.1.0.0/24 (MTU 1500) and 10.2.0.0/24 (MTU 1400, so routed packets may
//! need fragmenting or an ICMP error), routed to each other, each with two
//! endpoints (ports n00, n01) and a tunnel (n50), and an uplink with NAT
//! (port 900). Each target adds its own published ports and services.
//!
//! Included by path (`#[path = "common/two_networks.rs"] mod two_networks;`):
//! cargo-fuzz builds each target as its own binary.

use std::net::Ipv4Addr;
use std::sync::Arc;

use weft_packet::MacAddr;
use weft_switch::counters::SwitchCounters;
use weft_switch::switch::{NetworkConfig, PortConfig, Switch, TunnelConfig, UplinkConfig};
use weft_switch::{NetworkId, PortId};

pub const UPLINK_PORT: u32 = 900;
pub const UNKNOWN_PORT: u32 = 999;
/// Every port the switch knows.
pub const CONFIGURED: [u32; 7] = [100, 101, 150, 200, 201, 250, UPLINK_PORT];
pub const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

pub fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
}

pub fn endpoint_ip(port: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, (port / 100) as u8, 0, 2 + (port % 100) as u8)
}

pub fn gateway_mac(net: u32) -> MacAddr {
    mac(1000 + net)
}

pub fn gateway_ip(net: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, net as u8, 0, 1)
}

pub fn mtu(net: u32) -> usize {
    if net == 1 {
        1500
    } else {
        1400
    }
}

/// The two networks and the uplink, nothing published yet.
pub fn two_networks() -> Switch {
    let mut sw = Switch::new(Arc::new(SwitchCounters::default()));
    for n in 1..=2u32 {
        sw.add_network(NetworkConfig {
            id: NetworkId(n),
            subnet: format!("10.{n}.0.0/24").parse().unwrap(),
            gateway_ip: gateway_ip(n),
            gateway_mac: gateway_mac(n),
            mtu: mtu(n) as u32,
        })
        .unwrap();
        for p in [n * 100, n * 100 + 1] {
            sw.add_port(PortConfig {
                id: PortId(p),
                network: NetworkId(n),
                mac: mac(p),
                ip: endpoint_ip(p),
            })
            .unwrap();
        }
        sw.add_tunnel(TunnelConfig {
            id: PortId(n * 100 + 50),
            network: NetworkId(n),
            max_ip_len: 1450,
        })
        .unwrap();
    }
    sw.set_route(NetworkId(1), NetworkId(2), true).unwrap();
    sw.set_uplink(UplinkConfig {
        port: PortId(UPLINK_PORT),
        ip: UPLINK_IP,
        prefix_len: 24,
        mac: mac(UPLINK_PORT),
        gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
        mtu: 1500,
    })
    .unwrap();
    sw
}
