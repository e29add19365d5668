//! One frame through the whole forwarding core: port security, ARP, the
//! gateway (routing, TTL, ICMP errors, fragmentation) and bridging.
//!
//! Input: a control byte, then the frame.
//! - bits 0-2: the ingress port (endpoints and tunnels of two networks, the
//!   uplink, and one unknown port);
//! - bit 7: write the ingress endpoint's MAC into the source MAC (bytes
//!   6..12), so the frame gets past port security;
//! - bit 6: write the endpoint's IPv4 address into the IPv4 source (bytes
//!   26..30), past the sender-address check;
//! - bit 5: write the gateway's MAC (the uplink's, on the uplink) into the
//!   destination (bytes 0..6), so IPv4 takes the routed path;
//! - bit 6 on the uplink: write the uplink address into the IPv4
//!   destination (bytes 30..34), so the frame meets NAT (replies, the
//!   published port, ICMP errors);
//! - bit 4: hand the (possibly rewritten) frame in a second time, after the
//!   core has learned from the first.
//!
//! Every transmitted frame must hold at least an Ethernet header and leave
//! through a configured port.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use weft_switch::counters::{DropReason, SwitchCounters};
use weft_switch::frame::{Offload, NO_OFFLOAD};
use weft_nat::Protocol;
use weft_switch::switch::{
    LoadBalance, NetworkConfig, PortConfig, Punt, ServiceConfig, Switch, Transmit, TunnelConfig,
    UplinkConfig,
};
use weft_packet::MacAddr;
use weft_switch::{NetworkId, PortId};

const UNKNOWN_PORT: u32 = 999;
/// Ingress choices for the low three bits of the control byte.
const UPLINK_PORT: u32 = 900;
const INGRESS: [u32; 8] = [100, 101, 150, 200, 201, 250, UNKNOWN_PORT, UPLINK_PORT];
const CONFIGURED: [u32; 7] = [100, 101, 150, 200, 201, 250, UPLINK_PORT];
const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
}

fn endpoint_ip(port: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, (port / 100) as u8, 0, 2 + (port % 100) as u8)
}

fn gateway_mac(net: u32) -> MacAddr {
    mac(1000 + net)
}

/// Networks 10.1.0.0/24 (MTU 1500) and 10.2.0.0/24 (MTU 1400, so routed
/// packets may need fragmenting or an ICMP error), routed to each other,
/// each with two endpoints (n00, n01) and a tunnel (n50).
fn topology() -> Switch {
    let mut sw = Switch::new(Arc::new(SwitchCounters::default()));
    for n in 1..=2u32 {
        sw.add_network(NetworkConfig {
            id: NetworkId(n),
            subnet: format!("10.{n}.0.0/24").parse().unwrap(),
            gateway_ip: Ipv4Addr::new(10, n as u8, 0, 1),
            gateway_mac: gateway_mac(n),
            mtu: if n == 1 { 1500 } else { 1400 },
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
    // The outside: an uplink with NAT, a published port and a service VIP.
    sw.set_uplink(UplinkConfig {
        port: PortId(UPLINK_PORT),
        ip: UPLINK_IP,
        prefix_len: 24,
        mac: mac(UPLINK_PORT),
        gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
        mtu: 1500,
    })
    .unwrap();
    sw.publish(
        Protocol::Tcp,
        8080,
        std::net::SocketAddrV4::new(endpoint_ip(100), 80),
    );
    sw.set_service(ServiceConfig {
        network: NetworkId(1),
        vip: Ipv4Addr::new(10, 1, 0, 200),
        proto: Protocol::Tcp,
        port: 80,
        backends: vec![endpoint_ip(100), endpoint_ip(101)],
        lb: LoadBalance::RoundRobin,
    });
    sw
}

struct Recorder {
    frames: usize,
}

impl Transmit for Recorder {
    fn transmit(&mut self, port: PortId, frame: &[u8], _offload: &Offload) {
        assert!(
            frame.len() >= 14,
            "transmitted a {}-byte frame to {port:?}",
            frame.len()
        );
        assert!(
            CONFIGURED.contains(&port.0),
            "transmitted to unconfigured {port:?}"
        );
        self.frames += 1;
    }

    fn punt(&mut self, punt: Punt<'_>) -> Result<(), DropReason> {
        assert!(
            CONFIGURED.contains(&punt.port.0),
            "punted from unconfigured {:?}",
            punt.port
        );
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let ingress = INGRESS[usize::from(control & 0x7)];
    let is_endpoint = ingress % 100 < 50 && ingress != UNKNOWN_PORT;
    let mut frame = rest.to_vec();
    if is_endpoint {
        if control & 0x80 != 0 && frame.len() >= 12 {
            mac(ingress).write(&mut frame, 6);
        }
        if control & 0x40 != 0 && frame.len() >= 30 {
            frame[26..30].copy_from_slice(&endpoint_ip(ingress).octets());
        }
    }
    if control & 0x20 != 0 && frame.len() >= 6 {
        if ingress == UPLINK_PORT {
            mac(UPLINK_PORT).write(&mut frame, 0);
        } else {
            gateway_mac(ingress / 100).write(&mut frame, 0);
        }
    }
    if ingress == UPLINK_PORT && control & 0x40 != 0 && frame.len() >= 34 {
        frame[30..34].copy_from_slice(&UPLINK_IP.octets());
    }

    let mut sw = topology();
    let mut tx = Recorder { frames: 0 };
    let now = Instant::now();
    let first = sw.handle(PortId(ingress), &mut frame, &NO_OFFLOAD, now, &mut tx);
    if frame.len() < 14 || ingress == UNKNOWN_PORT {
        assert!(first.is_err(), "accepted a frame it cannot have forwarded");
    }
    if control & 0x10 != 0 {
        let later = now + Duration::from_secs(1);
        let _ = sw.handle(PortId(ingress), &mut frame, &NO_OFFLOAD, later, &mut tx);
        sw.expire(later);
    }
    let _ = tx.frames;
});
