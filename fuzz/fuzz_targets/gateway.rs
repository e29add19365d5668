//! The gateway of two routed networks, driven through the switch core with
//! structure-aware inputs: ARP requests and replies (RFC 826), ICMP echo
//! (RFC 792), IPv4 with TTL 0 and 1 (RFC 1812 §5.3.1), fragments and
//! packets too big for the next hop (RFC 791 §3.2, RFC 1191), to the
//! gateway, across the two subnets, to the outside and from it.
//!
//! Input: up to [`MAX_STEPS`] steps, each a tag byte and then its fields as
//! `arbitrary` reads them (integers little-endian):
//! - tag % 4 == 0, a raw frame: ingress index (u8), control byte (as in
//!   `switch_frame`: bit 7 forces the port's source MAC, bit 6 its IPv4
//!   source, bit 5 the gateway's MAC as destination), length (u16), bytes.
//!   The seeds are real frames in this form (`fuzz/seeds/make_seeds.py`);
//! - 1: an ARP request or reply built from fields;
//! - 2: an IPv4 packet built from fields (see [`IpStep`]);
//! - 3: time passes (u16 milliseconds) and the core expires state.
//!
//! Checks, besides not panicking: every frame leaves through a configured
//! port and holds an Ethernet header; nothing sent to an endpoint other
//! than the sender exceeds that network's MTU; every IPv4 packet the router
//! originates or forwards has a valid header checksum, a TTL of at least 1,
//! and fragment fields that stay inside 65,535 bytes; a valid echo request
//! to the gateway is answered with the matching reply; a valid packet routed
//! to an endpoint of the other network arrives with its TTL decremented —
//! whole if it fits, as fragments that reassemble to the original payload
//! if not, or as "fragmentation needed" back to the sender when DF is set;
//! TTL 0 or 1 gets "time exceeded" instead.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use weft_nat::Protocol;
use weft_packet::checksum::{checksum, checksum_with, pseudo_header_sum_v4};
use weft_packet::MacAddr;
use weft_switch::counters::DropReason;
use weft_switch::frame::{Offload, NO_OFFLOAD};
use weft_switch::switch::{Punt, Switch, Transmit};
use weft_switch::PortId;

#[path = "common/two_networks.rs"]
mod two_networks;

use two_networks::{
    endpoint_ip, gateway_ip, gateway_mac, mac, mtu, two_networks, CONFIGURED, UNKNOWN_PORT,
    UPLINK_IP, UPLINK_PORT,
};

const MAX_STEPS: usize = 8;
const INGRESS: [u32; 8] = [100, 101, 150, 200, 201, 250, UPLINK_PORT, UNKNOWN_PORT];
const ENDPOINTS: [u32; 4] = [100, 101, 200, 201];
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const MAX_IP_LEN: usize = 9000;

fn is_endpoint(port: u32) -> bool {
    ENDPOINTS.contains(&port)
}

/// The two routed networks with a published UDP port.
fn topology() -> Switch {
    let mut sw = two_networks();
    sw.publish(Protocol::Udp, 5353, SocketAddrV4::new(endpoint_ip(200), 53));
    sw
}

/// Where a built packet or ARP question is aimed.
#[derive(Debug, Clone, Copy)]
enum Dst {
    OwnGateway,
    OtherGateway,
    Endpoint(u32),
    /// An address in a subnet with no endpoint behind it.
    Unknown(u32),
    SubnetBroadcast(u32),
    Outside,
    Uplink,
    Any(Ipv4Addr),
}

impl<'a> Arbitrary<'a> for Dst {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0u8..=7)? {
            0 => Dst::OwnGateway,
            1 => Dst::OtherGateway,
            2 => Dst::Endpoint(*u.choose(&ENDPOINTS)?),
            3 => Dst::Unknown(u.int_in_range(1..=3)?),
            4 => Dst::SubnetBroadcast(u.int_in_range(1..=2)?),
            5 => Dst::Outside,
            6 => Dst::Uplink,
            _ => Dst::Any(Ipv4Addr::from(u.arbitrary::<u32>()?)),
        })
    }
}

impl Dst {
    fn addr(self, own_net: u32) -> Ipv4Addr {
        match self {
            Dst::OwnGateway => gateway_ip(own_net),
            Dst::OtherGateway => gateway_ip(3 - own_net.clamp(1, 2)),
            Dst::Endpoint(p) => endpoint_ip(p),
            Dst::Unknown(n) => Ipv4Addr::new(10, n as u8, 0, 99),
            Dst::SubnetBroadcast(n) => Ipv4Addr::new(10, n as u8, 0, 255),
            Dst::Outside => OUTSIDE_IP,
            Dst::Uplink => UPLINK_IP,
            Dst::Any(a) => a,
        }
    }
}

/// The ingress side of a built frame: its port, and the source MAC and
/// address a well-behaved sender there would use.
#[derive(Debug, Clone, Copy)]
struct From {
    port: u32,
    mac: MacAddr,
    ip: Ipv4Addr,
    /// The network whose gateway the sender talks to (0: the uplink).
    net: u32,
}

impl<'a> Arbitrary<'a> for From {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let port = *u.choose(&INGRESS)?;
        Ok(match port {
            UPLINK_PORT | UNKNOWN_PORT => From {
                port,
                mac: mac(901),
                ip: OUTSIDE_IP,
                net: 0,
            },
            p if p % 100 == 50 => From {
                port,
                mac: mac(p + 10),
                ip: Ipv4Addr::new(10, (p / 100) as u8, 0, 60),
                net: p / 100,
            },
            p => From {
                port,
                mac: mac(p),
                ip: endpoint_ip(p),
                net: p / 100,
            },
        })
    }
}

impl From {
    fn router_mac(&self) -> MacAddr {
        if self.net == 0 {
            mac(UPLINK_PORT)
        } else {
            gateway_mac(self.net)
        }
    }
}

#[derive(Debug)]
struct ArpStep {
    from: From,
    request: bool,
    broadcast: bool,
    target: Dst,
    /// Sender address other than the port's own.
    spoof: Option<Ipv4Addr>,
    /// Hardware/protocol type and length fields other than Ethernet/IPv4.
    odd_header: Option<[u8; 6]>,
}

impl<'a> Arbitrary<'a> for ArpStep {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let from = u.arbitrary()?;
        let flags: u8 = u.arbitrary()?;
        let target = u.arbitrary()?;
        let spoof = if flags & 4 != 0 {
            Some(Ipv4Addr::from(u.arbitrary::<u32>()?))
        } else {
            None
        };
        let odd_header = if flags & 8 != 0 {
            Some(u.arbitrary()?)
        } else {
            None
        };
        Ok(ArpStep {
            from,
            request: flags & 1 == 0,
            broadcast: flags & 2 == 0,
            target,
            spoof,
            odd_header,
        })
    }
}

impl ArpStep {
    fn build(&self) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        let dst = if self.broadcast {
            MacAddr::BROADCAST
        } else {
            self.from.router_mac()
        };
        dst.write(&mut f, 0);
        self.from.mac.write(&mut f, 6);
        f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let a = &mut f[14..];
        a[..6].copy_from_slice(&self.odd_header.unwrap_or([0, 1, 8, 0, 6, 4]));
        let op: u16 = if self.request { 1 } else { 2 };
        a[6..8].copy_from_slice(&op.to_be_bytes());
        self.from.mac.write(a, 8);
        a[14..18].copy_from_slice(&self.spoof.unwrap_or(self.from.ip).octets());
        if !self.request {
            dst.write(a, 18);
        }
        a[24..28].copy_from_slice(&self.target.addr(self.from.net).octets());
        f
    }
}

#[derive(Debug, Clone, Copy)]
enum Payload {
    Echo {
        request: bool,
        id: u16,
        seq: u16,
    },
    /// An ICMP message of any type, errors included.
    Icmp {
        ty: u8,
        code: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Other(u8),
}

impl<'a> Arbitrary<'a> for Payload {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0u8..=5)? {
            0 | 1 => Payload::Echo {
                request: true,
                id: u.arbitrary()?,
                seq: u.arbitrary()?,
            },
            2 => match u.int_in_range(0u8..=2)? {
                0 => Payload::Echo {
                    request: false,
                    id: u.arbitrary()?,
                    seq: u.arbitrary()?,
                },
                _ => Payload::Icmp {
                    ty: u.arbitrary()?,
                    code: u.arbitrary()?,
                },
            },
            3 => Payload::Udp {
                sport: u.arbitrary()?,
                dport: u.arbitrary()?,
            },
            4 => Payload::Tcp {
                sport: u.arbitrary()?,
                dport: u.arbitrary()?,
                flags: u.arbitrary()?,
            },
            _ => Payload::Other(u.arbitrary()?),
        })
    }
}

impl Payload {
    /// Whether the packet may be (or may look to the router like) an ICMP
    /// error, about which no ICMP error is sent (RFC 1812 §4.3.2.7).
    fn may_be_icmp_error(self) -> bool {
        matches!(self, Payload::Icmp { .. } | Payload::Other(1))
    }

    fn proto(self) -> u8 {
        match self {
            Payload::Echo { .. } | Payload::Icmp { .. } => 1,
            Payload::Udp { .. } => 17,
            Payload::Tcp { .. } => 6,
            Payload::Other(p) => p,
        }
    }
}

/// An IPv4 packet built from fields, valid unless the fields say otherwise.
#[derive(Debug)]
struct IpStep {
    from: From,
    /// Sent to the gateway's MAC (routed) rather than bridged.
    to_router: bool,
    dst: Dst,
    ttl: u8,
    dont_fragment: bool,
    more_fragments: bool,
    /// In 8-byte units (13 bits).
    frag_offset: u16,
    ident: u16,
    /// Options, in 4-byte words (NOPs and an end-of-list).
    option_words: u8,
    payload: Payload,
    /// Bytes after the transport header.
    data_len: usize,
    /// Ethernet padding after the IP packet.
    padding: u8,
    spoof_source: bool,
    bad_header_checksum: bool,
    bad_payload_checksum: bool,
}

impl<'a> Arbitrary<'a> for IpStep {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let from = u.arbitrary()?;
        let dst = u.arbitrary()?;
        let flags: u16 = u.arbitrary()?;
        let ttl = match flags & 3 {
            0 => 0,
            1 => 1,
            2 => 64,
            _ => u.arbitrary()?,
        };
        // Lengths near the two MTUs, tiny, or anything up to jumbo size.
        let data_len = match u.int_in_range(0u8..=3)? {
            0 => usize::from(u.int_in_range(0u16..=64)?),
            1 => usize::from(u.int_in_range(1340u16..=1520)?),
            2 => usize::from(u.int_in_range(0u16..=3000)?),
            _ => usize::from(u.int_in_range(0u16..=MAX_IP_LEN as u16 - 100)?),
        };
        Ok(IpStep {
            from,
            dst,
            to_router: flags & 4 == 0,
            dont_fragment: flags & 8 != 0,
            more_fragments: flags & 16 != 0,
            frag_offset: if flags & 32 != 0 {
                u.int_in_range(0u16..=0x1fff)?
            } else {
                0
            },
            option_words: if flags & 64 != 0 {
                u.int_in_range(0u8..=10)?
            } else {
                0
            },
            spoof_source: flags & 128 != 0,
            bad_header_checksum: flags & 256 != 0,
            bad_payload_checksum: flags & 512 != 0,
            padding: if flags & 1024 != 0 { u.arbitrary()? } else { 0 },
            ttl,
            ident: u.arbitrary()?,
            payload: u.arbitrary()?,
            data_len,
        })
    }
}

impl IpStep {
    fn src(&self) -> Ipv4Addr {
        if self.spoof_source {
            Ipv4Addr::new(10, 9, 9, 9)
        } else {
            self.from.ip
        }
    }

    fn dst_addr(&self) -> Ipv4Addr {
        self.dst.addr(self.from.net)
    }

    fn header_len(&self) -> usize {
        20 + 4 * usize::from(self.option_words)
    }

    fn is_fragment(&self) -> bool {
        self.more_fragments || self.frag_offset != 0
    }

    /// Valid as a sender on an endpoint port would send it, to the router.
    fn is_clean(&self) -> bool {
        is_endpoint(self.from.port)
            && self.to_router
            && !self.spoof_source
            && !self.bad_header_checksum
            && !self.is_fragment()
    }

    fn build(&self) -> Vec<u8> {
        let hl = self.header_len();
        let transport = match self.payload {
            Payload::Echo { .. } | Payload::Icmp { .. } | Payload::Udp { .. } => 8,
            Payload::Tcp { .. } => 20,
            Payload::Other(_) => 0,
        };
        let ip_len = (hl + transport + self.data_len).min(MAX_IP_LEN);
        let mut f = vec![0u8; 14 + ip_len + usize::from(self.padding)];
        let dst_mac = if self.to_router {
            self.from.router_mac()
        } else {
            match self.dst {
                Dst::Endpoint(p) => mac(p),
                _ => MacAddr::BROADCAST,
            }
        };
        dst_mac.write(&mut f, 0);
        self.from.mac.write(&mut f, 6);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let (src, dst) = (self.src(), self.dst_addr());
        {
            let ip = &mut f[14..14 + ip_len];
            ip[0] = 0x40 | (hl / 4) as u8;
            ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&self.ident.to_be_bytes());
            let mut frag = self.frag_offset & 0x1fff;
            if self.dont_fragment {
                frag |= 0x4000;
            }
            if self.more_fragments {
                frag |= 0x2000;
            }
            ip[6..8].copy_from_slice(&frag.to_be_bytes());
            ip[8] = self.ttl;
            ip[9] = self.payload.proto();
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            for (i, b) in ip[20..hl].iter_mut().enumerate() {
                *b = if i + 1 == hl - 20 { 0 } else { 1 };
            }
            let body = &mut ip[hl..];
            for (i, b) in body.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31).wrapping_add(7);
            }
            let (l4_sum_at, pseudo) = match self.payload {
                Payload::Echo { request, id, seq } => {
                    body[0] = if request { 8 } else { 0 };
                    body[1] = 0;
                    body[4..6].copy_from_slice(&id.to_be_bytes());
                    body[6..8].copy_from_slice(&seq.to_be_bytes());
                    (Some(2), false)
                }
                Payload::Icmp { ty, code } => {
                    body[0] = ty;
                    body[1] = code;
                    (Some(2), false)
                }
                Payload::Udp { sport, dport } if body.len() >= 8 => {
                    body[0..2].copy_from_slice(&sport.to_be_bytes());
                    body[2..4].copy_from_slice(&dport.to_be_bytes());
                    let len = body.len() as u16;
                    body[4..6].copy_from_slice(&len.to_be_bytes());
                    (Some(6), true)
                }
                Payload::Tcp {
                    sport,
                    dport,
                    flags,
                } if body.len() >= 20 => {
                    body[0..2].copy_from_slice(&sport.to_be_bytes());
                    body[2..4].copy_from_slice(&dport.to_be_bytes());
                    body[12] = 5 << 4;
                    body[13] = flags;
                    (Some(16), true)
                }
                _ => (None, false),
            };
            if let Some(at) = l4_sum_at.filter(|&at| at + 2 <= body.len()) {
                body[at..at + 2].fill(0);
                let initial = if pseudo {
                    pseudo_header_sum_v4(src, dst, self.payload.proto(), body.len() as u16)
                } else {
                    0
                };
                let mut sum = checksum_with(initial, body);
                if self.bad_payload_checksum {
                    sum ^= 0x5a5a;
                }
                body[at..at + 2].copy_from_slice(&sum.to_be_bytes());
            }
            let mut sum = checksum(&ip[..hl]);
            if self.bad_header_checksum {
                sum ^= 0x00ff;
            }
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        // Padding bytes, as a NIC might leave them.
        for b in &mut f[14 + ip_len..] {
            *b = 0xa5;
        }
        f
    }
}

#[derive(Debug)]
enum Step {
    Raw {
        ingress: u32,
        control: u8,
        frame: Vec<u8>,
    },
    Arp(ArpStep),
    Ip(IpStep),
    Later(u16),
}

impl<'a> Arbitrary<'a> for Step {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.arbitrary::<u8>()? % 4 {
            0 => {
                let ingress = INGRESS[usize::from(u.arbitrary::<u8>()? & 7)];
                let control = u.arbitrary()?;
                let len = usize::from(u.arbitrary::<u16>()?).min(u.len());
                Step::Raw {
                    ingress,
                    control,
                    frame: u.bytes(len)?.to_vec(),
                }
            }
            1 => Step::Arp(u.arbitrary()?),
            2 => Step::Ip(u.arbitrary()?),
            _ => Step::Later(u.arbitrary()?),
        })
    }
}

/// Everything the core sent while handling one step.
#[derive(Default)]
struct Recorder {
    sent: Vec<(u32, Vec<u8>)>,
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
        self.sent.push((port.0, frame.to_vec()));
    }

    fn punt(&mut self, punt: Punt<'_>) -> std::result::Result<(), DropReason> {
        assert!(
            CONFIGURED.contains(&punt.port.0),
            "punted from unconfigured {:?}",
            punt.port
        );
        Ok(())
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Checks on every frame sent while handling a frame from `ingress`.
fn check_sent(ingress: u32, sent: &[(u32, Vec<u8>)]) {
    for (port, f) in sent {
        if is_endpoint(*port) && *port != ingress {
            let net = port / 100;
            assert!(
                f.len() <= 14 + mtu(net),
                "a {}-byte frame sent to port {port} on a network with MTU {}",
                f.len(),
                mtu(net)
            );
        }
        let src = MacAddr::read(f, 6);
        let routed = [gateway_mac(1), gateway_mac(2), mac(UPLINK_PORT)].contains(&src);
        // Only an endpoint's frames cannot carry a router MAC as source
        // (port security): from a tunnel a frame may be bridged as it came.
        if !routed || !is_endpoint(ingress) || be16(f, 12) != 0x0800 {
            continue;
        }
        let ip = &f[14..];
        assert!(
            ip.len() >= 20 && ip[0] >> 4 == 4,
            "routed a non-IPv4 packet"
        );
        let hl = usize::from(ip[0] & 0xf) * 4;
        let total = usize::from(be16(ip, 2));
        assert!(hl >= 20 && hl <= total && total <= ip.len(), "bad lengths");
        assert_eq!(checksum(&ip[..hl]), 0, "routed with a bad header checksum");
        assert!(ip[8] >= 1, "routed with TTL 0");
        let frag = be16(ip, 6);
        let end = usize::from(frag & 0x1fff) * 8 + (total - hl);
        assert!(end <= 65535, "a fragment ending at byte {end}");
    }
}

/// IPv4 packets in `sent` to `port`, as (header, payload).
fn packets_to(sent: &[(u32, Vec<u8>)], port: u32) -> Vec<(&[u8], &[u8])> {
    sent.iter()
        .filter(|(p, f)| *p == port && be16(f, 12) == 0x0800)
        .map(|(_, f)| {
            let ip = &f[14..];
            let hl = usize::from(ip[0] & 0xf) * 4;
            let total = usize::from(be16(ip, 2));
            (&ip[..hl], &ip[hl..total])
        })
        .collect()
}

fn icmp_error_to(sent: &[(u32, Vec<u8>)], port: u32, ty: u8, code: u8) -> Option<u16> {
    packets_to(sent, port)
        .into_iter()
        .find(|(h, m)| h[9] == 1 && m.len() >= 8 && m[0] == ty && m[1] == code)
        .map(|(_, m)| be16(m, 6))
}

/// What must come of a clean packet (see [`IpStep::is_clean`]).
fn check_ip(
    step: &IpStep,
    built: &[u8],
    result: &std::result::Result<(), DropReason>,
    sent: &[(u32, Vec<u8>)],
) {
    let sender = step.from.port;
    let net = step.from.net;
    let hl = step.header_len();
    let original = &built[14..14 + (built.len() - 14 - usize::from(step.padding))];
    let ip_len = original.len();
    match (step.dst, step.payload) {
        (
            Dst::OwnGateway,
            Payload::Echo {
                request: true,
                id,
                seq,
            },
        ) if !step.bad_payload_checksum && ip_len <= mtu(net) => {
            assert!(
                result.is_ok(),
                "echo request to the gateway refused: {result:?}"
            );
            let replies = packets_to(sent, sender);
            assert_eq!(replies.len(), 1, "one echo reply");
            let (h, m) = replies[0];
            assert_eq!(&h[12..16], &gateway_ip(net).octets());
            assert_eq!(&h[16..20], &step.from.ip.octets());
            assert_eq!((m[0], be16(m, 4), be16(m, 6)), (0, id, seq), "echo reply");
            assert_eq!(checksum(m), 0, "echo reply checksum");
            assert_eq!(&m[8..], &original[hl + 8..], "echo reply data");
        }
        (Dst::Endpoint(to), _) if to / 100 != net => {
            let out_mtu = mtu(to / 100);
            if step.ttl <= 1 {
                assert!(
                    packets_to(sent, to).is_empty(),
                    "TTL {} forwarded",
                    step.ttl
                );
                if !step.payload.may_be_icmp_error() {
                    assert!(
                        icmp_error_to(sent, sender, 11, 0).is_some(),
                        "no time exceeded"
                    );
                }
                return;
            }
            if ip_len > out_mtu && step.dont_fragment {
                assert!(
                    packets_to(sent, to).is_empty(),
                    "DF packet over the MTU forwarded"
                );
                if !step.payload.may_be_icmp_error() {
                    assert_eq!(
                        icmp_error_to(sent, sender, 3, 4),
                        Some(out_mtu as u16),
                        "no frag needed"
                    );
                }
                return;
            }
            assert!(result.is_ok(), "routed packet refused: {result:?}");
            let pieces = packets_to(sent, to);
            assert!(!pieces.is_empty(), "routed packet lost");
            let payload = &original[hl..];
            let mut rebuilt = vec![None; payload.len()];
            for (h, body) in &pieces {
                assert_eq!(h[8], step.ttl - 1, "TTL not decremented");
                assert_eq!(be16(h, 4), step.ident, "identification changed");
                assert_eq!(&h[12..20], &original[12..20], "addresses changed");
                let at = usize::from(be16(h, 6) & 0x1fff) * 8;
                assert!(at + body.len() <= payload.len(), "fragment past the end");
                for (i, b) in body.iter().enumerate() {
                    assert!(rebuilt[at + i].replace(*b).is_none(), "fragments overlap");
                }
            }
            let mfs = pieces
                .iter()
                .filter(|(h, _)| be16(h, 6) & 0x2000 == 0)
                .count();
            assert_eq!(mfs, 1, "exactly one last fragment");
            let rebuilt: Option<Vec<u8>> = rebuilt.into_iter().collect();
            assert_eq!(
                rebuilt.as_deref(),
                Some(payload),
                "fragments do not reassemble"
            );
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut sw = topology();
    let mut now = Instant::now();
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(step) = u.arbitrary::<Step>() else {
            break;
        };
        let mut tx = Recorder::default();
        match step {
            Step::Raw {
                ingress,
                control,
                mut frame,
            } => {
                if is_endpoint(ingress) {
                    if control & 0x80 != 0 && frame.len() >= 12 {
                        mac(ingress).write(&mut frame, 6);
                    }
                    if control & 0x40 != 0 && frame.len() >= 30 {
                        frame[26..30].copy_from_slice(&endpoint_ip(ingress).octets());
                    }
                }
                if control & 0x20 != 0 && frame.len() >= 6 {
                    let router = if ingress == UPLINK_PORT {
                        mac(UPLINK_PORT)
                    } else {
                        gateway_mac(ingress / 100)
                    };
                    router.write(&mut frame, 0);
                }
                let result = sw.handle(PortId(ingress), &mut frame, &NO_OFFLOAD, now, &mut tx);
                if frame.len() < 14 || ingress == UNKNOWN_PORT {
                    assert!(result.is_err(), "accepted a frame it cannot have forwarded");
                }
                check_sent(ingress, &tx.sent);
            }
            Step::Arp(arp) => {
                let mut frame = arp.build();
                let result =
                    sw.handle(PortId(arp.from.port), &mut frame, &NO_OFFLOAD, now, &mut tx);
                check_sent(arp.from.port, &tx.sent);
                let asks_gateway = matches!(arp.target, Dst::OwnGateway);
                if is_endpoint(arp.from.port)
                    && arp.request
                    && asks_gateway
                    && arp.spoof.is_none()
                    && arp.odd_header.is_none()
                    && result.is_ok()
                {
                    let reply = tx
                        .sent
                        .iter()
                        .find(|(p, f)| *p == arp.from.port && be16(f, 12) == 0x0806);
                    let (_, f) = reply.expect("no ARP reply from the gateway");
                    assert_eq!(be16(f, 20), 2, "ARP reply opcode");
                    assert_eq!(
                        MacAddr::read(f, 22),
                        gateway_mac(arp.from.net),
                        "ARP reply sender"
                    );
                }
            }
            Step::Ip(ip) => {
                let built = ip.build();
                let mut frame = built.clone();
                let result = sw.handle(PortId(ip.from.port), &mut frame, &NO_OFFLOAD, now, &mut tx);
                check_sent(ip.from.port, &tx.sent);
                if ip.is_clean() {
                    check_ip(&ip, &built, &result, &tx.sent);
                }
            }
            Step::Later(ms) => {
                now += Duration::from_millis(u64::from(ms));
                sw.expire(now);
            }
        }
    }
});
