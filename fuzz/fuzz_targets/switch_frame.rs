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
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use weft_nat::Protocol;
use weft_switch::counters::DropReason;
use weft_switch::frame::{Offload, NO_OFFLOAD};
use weft_switch::switch::{LoadBalance, Punt, ServiceConfig, Switch, Transmit};
use weft_switch::{NetworkId, PortId};

#[path = "common/two_networks.rs"]
mod two_networks;

use two_networks::{
    endpoint_ip, gateway_mac, mac, two_networks, CONFIGURED, UNKNOWN_PORT, UPLINK_IP, UPLINK_PORT,
};

/// Ingress choices for the low three bits of the control byte.
const INGRESS: [u32; 8] = [100, 101, 150, 200, 201, 250, UNKNOWN_PORT, UPLINK_PORT];

/// The two routed networks with, outside, a published port and a service
/// VIP.
fn topology() -> Switch {
    let mut sw = two_networks();
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
