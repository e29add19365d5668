//! The pieces together, the way the router calls them per packet: what
//! Docker's bridge driver sets up with iptables MASQUERADE / DNAT and
//! conntrack.

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::PacketBuilder;
use weft_nat::conntrack::tcp_flags::{ACK, SYN};
use weft_nat::conntrack::{Conntrack, Direction, FlowState, NatSpec, TcpState, Timestamp};
use weft_nat::translate::{inspect, translate, TranslateOptions};

const BRIDGE_NET: [u8; 3] = [172, 17, 0];
const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const CONTAINER: [u8; 4] = [172, 17, 0, 2];
const SERVER: [u8; 4] = [198, 51, 100, 20];
const CLIENT: [u8; 4] = [192, 0, 2, 99];

/// The NAT policy: from the bridge to elsewhere is masqueraded; to
/// UPLINK:8080 is forwarded to CONTAINER:80.
fn policy(dst: SocketAddrV4, src: SocketAddrV4) -> NatSpec {
    let from_bridge = src.ip().octets()[..3] == BRIDGE_NET;
    NatSpec {
        snat: from_bridge.then_some(UPLINK),
        dnat: (dst == SocketAddrV4::new(UPLINK, 8080))
            .then(|| SocketAddrV4::new(CONTAINER.into(), 80)),
        ..NatSpec::default()
    }
}

/// One packet through the NAT; `None` if dropped.
fn forward(ct: &mut Conntrack, mut packet: Vec<u8>, now: Timestamp) -> Option<Vec<u8>> {
    let info = inspect(&packet).ok()?;
    let hit = if info.icmp_error {
        ct.lookup(&info.key, now)?
    } else if info.key.src.ip().octets()[..3] == BRIDGE_NET
        || info.key.dst == SocketAddrV4::new(UPLINK, 8080)
    {
        let nat = policy(info.key.dst, info.key.src);
        ct.track_or_create(&info.key, nat, info.len, info.tcp_flags, now)
            .ok()?
    } else {
        // Unsolicited inbound: only replies of known flows pass.
        ct.track(&info.key, info.len, info.tcp_flags, now)?
    };
    translate(&mut packet, &hit.rewrite, TranslateOptions::default()).ok()?;
    Some(packet)
}

fn tcp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, flags: u8) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, 1, 1000);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(1);
    }
    let mut v = Vec::new();
    b.write(&mut v, b"").unwrap();
    v
}

fn udp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sp, dp)
        .write(&mut v, b"payload")
        .unwrap();
    v
}

#[test]
fn masquerade_session() {
    let mut ct = Conntrack::default();
    let now = Timestamp::from_secs(1);
    let out = forward(&mut ct, tcp(CONTAINER, 45000, SERVER, 443, SYN), now).unwrap();
    assert_eq!(out, tcp(UPLINK.octets(), 45000, SERVER, 443, SYN));
    let back = forward(
        &mut ct,
        tcp(SERVER, 443, UPLINK.octets(), 45000, SYN | ACK),
        now,
    )
    .unwrap();
    assert_eq!(back, tcp(SERVER, 443, CONTAINER, 45000, SYN | ACK));
    forward(&mut ct, tcp(CONTAINER, 45000, SERVER, 443, ACK), now).unwrap();
    let snap = ct.snapshot(now);
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].state, FlowState::Tcp(TcpState::Established));
    // Unsolicited packet to the uplink: dropped.
    assert!(forward(&mut ct, tcp(SERVER, 443, UPLINK.octets(), 45001, SYN), now).is_none());
}

#[test]
fn port_unreachable_for_masqueraded_udp_reaches_the_container() {
    let mut ct = Conntrack::default();
    let now = Timestamp::from_secs(1);
    let sent = forward(&mut ct, udp(CONTAINER, 45353, SERVER, 53), now).unwrap();
    assert_eq!(sent, udp(UPLINK.octets(), 45353, SERVER, 53));
    let mut err = Vec::new();
    PacketBuilder::ipv4(SERVER, UPLINK.octets(), 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut err, &sent)
        .unwrap();
    let inside = forward(&mut ct, err, now).unwrap();
    let mut want = Vec::new();
    PacketBuilder::ipv4(SERVER, CONTAINER, 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut want, &udp(CONTAINER, 45353, SERVER, 53))
        .unwrap();
    assert_eq!(inside, want);
    // The error neither refreshed nor counted.
    let f = ct.snapshot(now)[0];
    assert_eq!(f.reply_counters.packets, 0);
}

#[test]
fn published_port() {
    let mut ct = Conntrack::default();
    let now = Timestamp::from_secs(1);
    let inb = forward(&mut ct, tcp(CLIENT, 51000, UPLINK.octets(), 8080, SYN), now).unwrap();
    assert_eq!(inb, tcp(CLIENT, 51000, CONTAINER, 80, SYN));
    // The container answers from :80; the client sees UPLINK:8080. The
    // reply matches the flow (Reply direction), so the policy's
    // masquerade for bridge sources does not create a second flow.
    let out = forward(&mut ct, tcp(CONTAINER, 80, CLIENT, 51000, SYN | ACK), now).unwrap();
    assert_eq!(out, tcp(UPLINK.octets(), 8080, CLIENT, 51000, SYN | ACK));
    assert_eq!(ct.len(), 1);
    let hit = ct
        .lookup(
            &inspect(&tcp(CONTAINER, 80, CLIENT, 51000, ACK))
                .unwrap()
                .key,
            now,
        )
        .unwrap();
    assert_eq!(hit.direction, Direction::Reply);
}

#[test]
fn ping_through_masquerade() {
    let mut ct = Conntrack::default();
    let now = Timestamp::from_secs(1);
    let mut req = Vec::new();
    PacketBuilder::ipv4(CONTAINER, SERVER, 64)
        .icmpv4_echo_request(0x0042, 1)
        .write(&mut req, b"ping")
        .unwrap();
    let out = forward(&mut ct, req, now).unwrap();
    let id = u16::from_be_bytes([out[24], out[25]]);
    assert_eq!(&out[12..16], &UPLINK.octets());
    let mut rep = Vec::new();
    PacketBuilder::ipv4(SERVER, UPLINK.octets(), 64)
        .icmpv4_echo_reply(id, 1)
        .write(&mut rep, b"ping")
        .unwrap();
    let back = forward(&mut ct, rep, now).unwrap();
    let mut want = Vec::new();
    PacketBuilder::ipv4(SERVER, CONTAINER, 64)
        .icmpv4_echo_reply(0x0042, 1)
        .write(&mut want, b"ping")
        .unwrap();
    assert_eq!(back, want);
}
