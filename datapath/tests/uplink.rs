//! Tests of the uplink: [`PacketSocket`] and [`UplinkPort`] on one end of a
//! veth pair between two scratch network namespaces, with the host's own
//! tools (`ping`, `ip neigh`) and a second packet socket on the other end as
//! the world. Frames are built and checked with etherparse.
//!
//! Every test needs root (namespaces, veth, CAP_NET_RAW) and is skipped
//! otherwise. Namespaces come from `weft-testkit`: named
//! `weft-t<pid>-<n>-<tag>` and deleted by a guard, also when a test panics.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use etherparse::{IpNumber, Ipv4Header, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use weft_datapath::port::{Offload, PacketBuf, Port, NO_OFFLOAD};
use weft_datapath::uplink::{UplinkPort, UPLINK_MAX_BATCH};
use weft_os::netns::run_in_netns;
use weft_os::packet::{
    PacketError, PacketSocket, RecvMeta, DEFAULT_RECV_BUFFER, PACKET_BROADCAST, PACKET_OTHERHOST,
};
use weft_os::tap::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP,
};
use weft_switch::offload::TCP_CSUM_OFFSET;
use weft_testkit::{skip_without_root, Netns};

/// weft's own MAC on the uplink's link (not the interface's).
const WEFT_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x02];
/// weft's address on the link; nobody in the namespaces owns it.
const WEFT_IP: [u8; 4] = [10, 77, 0, 2];
/// The address of the peer end.
const PEER_IP: [u8; 4] = [10, 77, 0, 1];
const WEFT_IP6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const PEER_IP6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// IEEE 802 local experimental ethertype, for frames nobody else sends.
const ETHERTYPE_TEST: u16 = 0x88b5;
const UPLINK: &str = "up0";
const PEER: &str = "peer0";
const TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Netns`] with the helpers these tests use.
struct TestNs(Netns);

impl TestNs {
    fn new(tag: &str) -> TestNs {
        TestNs(Netns::new(tag))
    }

    /// Output of `ip -n NS ARGS...`, which must succeed.
    fn ip(&self, args: &[&str]) -> String {
        self.0.ip_ok(args)
    }

    /// Runs `f` in the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_netns(&self.0.path(), f).expect("run_in_netns")
    }

    fn open(&self, ifname: &'static str) -> PacketSocket {
        self.run(move || PacketSocket::open(ifname))
            .unwrap_or_else(|e| panic!("open packet socket on {ifname}: {e}"))
    }
}

/// Two namespaces joined by a veth pair: `up0` in `uplink` (no address:
/// weft's side), `peer0` with 10.77.0.1/24 and fd77::1/64 in `peer`.
struct Link {
    uplink: TestNs,
    peer: TestNs,
}

impl Link {
    /// `None` (after saying why) when not running as root.
    fn new(tag: &str) -> Option<Link> {
        if skip_without_root(tag) {
            return None;
        }
        let uplink = TestNs::new(&format!("{tag}-u"));
        let peer = TestNs::new(&format!("{tag}-p"));
        uplink.0.add_veth(UPLINK, &peer.0, PEER);
        peer.ip(&["addr", "add", "10.77.0.1/24", "dev", PEER]);
        peer.ip(&["addr", "add", "fd77::1/64", "dev", PEER, "nodad"]);
        uplink.ip(&["link", "set", UPLINK, "up"]);
        peer.ip(&["link", "set", PEER, "up"]);
        let deadline = Instant::now() + TIMEOUT;
        while !(uplink.ip(&["link", "show", UPLINK]).contains("LOWER_UP")
            && peer.ip(&["link", "show", PEER]).contains("LOWER_UP"))
        {
            assert!(Instant::now() < deadline, "veth pair did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(Link { uplink, peer })
    }
}

/// Receives frames until one satisfies `pred` or `timeout` passes.
fn recv_matching(
    sock: &PacketSocket,
    timeout: Duration,
    mut pred: impl FnMut(&[u8], &RecvMeta) -> bool,
) -> Option<(Vec<u8>, RecvMeta)> {
    let mut buf = vec![0u8; 70_000];
    let deadline = Instant::now() + timeout;
    loop {
        match sock.recv_frame(&mut buf) {
            Ok(meta) => {
                let frame = &buf[..meta.len];
                if pred(frame, &meta) {
                    return Some((frame.to_vec(), meta));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("recv on {}: {e}", sock.ifname()),
        }
    }
}

fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[12], frame[13]])
}

/// An Ethernet frame with [`ETHERTYPE_TEST`] and `payload`.
fn test_frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE_TEST.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// An Ethernet/IPv4 ARP packet (RFC 826).
fn arp_frame(
    dst: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f.resize(60, 0);
    f
}

#[test]
fn open_reports_interface_properties_and_errors() {
    let Some(link) = Link::new("open") else {
        return;
    };
    let sock = link.uplink.open(UPLINK);
    assert_eq!(sock.ifname(), UPLINK);
    assert!(
        link.uplink
            .ip(&["link", "show", UPLINK])
            .starts_with(&format!("{}: {UPLINK}@", sock.ifindex())),
        "ifindex {}",
        sock.ifindex()
    );
    let mac = sock.mac().unwrap();
    let mac_text = mac.map(|b| format!("{b:02x}")).join(":");
    assert!(
        link.uplink
            .ip(&["link", "show", UPLINK])
            .contains(&format!("link/ether {mac_text}")),
        "mac {mac_text}"
    );
    assert_eq!(sock.mtu().unwrap(), 1500);
    link.uplink.ip(&["link", "set", UPLINK, "mtu", "1400"]);
    assert_eq!(sock.mtu().unwrap(), 1400, "MTU is read live");
    assert!(
        sock.ignores_outgoing(),
        "PACKET_IGNORE_OUTGOING (Linux ≥ 4.20)"
    );
    assert!(!sock.is_promiscuous());
    // As root, SO_RCVBUFFORCE bypasses rmem_max; the kernel reports double.
    assert!(
        sock.recv_buffer().unwrap() >= DEFAULT_RECV_BUFFER,
        "{}",
        sock.recv_buffer().unwrap()
    );
    // SOCK_CLOEXEC | SOCK_NONBLOCK.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap();
    assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "close-on-exec");
    assert_ne!(flags & libc::O_NONBLOCK as u32, 0, "non-blocking");
    let mut buf = [0u8; 2048];
    let err = loop {
        // Drain whatever the kernel sent when the link came up.
        match sock.recv(&mut buf) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

    let err = link.uplink.run(|| PacketSocket::open("nope0")).unwrap_err();
    assert!(matches!(err, PacketError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("nope0") && msg.contains("ip link"),
        "unhelpful message: {msg}"
    );
    let err = link.uplink.run(|| PacketSocket::open("lo")).unwrap_err();
    assert!(
        matches!(err, PacketError::NotEthernet { hw_type: 772, .. }),
        "{err:?}"
    );
    let err = link.uplink.run(|| PacketSocket::open("a/b")).unwrap_err();
    assert!(matches!(err, PacketError::InvalidName { .. }), "{err:?}");
    let err = link.uplink.run(|| UplinkPort::open("nope1")).unwrap_err();
    assert!(matches!(err, PacketError::NotFound { .. }), "{err:?}");
}

/// A neighbour pings weft's address: the ARP request arrives, weft's reply
/// lands in the neighbour's table, and the echo request to weft's MAC is
/// answered through the socket.
#[test]
fn arp_and_ping_through_the_packet_socket() {
    let Some(link) = Link::new("ping") else {
        return;
    };
    let sock = link.uplink.open(UPLINK);
    sock.set_promiscuous(true).unwrap();
    let peer_mac = link.peer.open(PEER).mac().unwrap();

    let weft_ip = Ipv4Addr::from(WEFT_IP).to_string();
    let mut ping = link.peer.0.spawn(
        &["ping", "-n", "-c1", "-W5", &weft_ip],
        Stdio::null(),
        Stdio::null(),
    );

    let (req, meta) = recv_matching(&sock, TIMEOUT, |f, _| {
        f.len() >= 42 && ethertype(f) == 0x0806 && f[38..42] == WEFT_IP
    })
    .expect("ARP request for weft's address");
    assert_eq!(&req[0..6], &[0xff; 6], "broadcast");
    assert_eq!(meta.pkt_type, PACKET_BROADCAST);
    assert_eq!(u16::from_be_bytes([req[20], req[21]]), 1, "a request");
    assert_eq!(&req[22..28], &peer_mac, "sender MAC");
    assert_eq!(&req[28..32], &PEER_IP, "sender IP");
    assert_eq!(&req[38..42], &WEFT_IP, "target IP");

    sock.send(&arp_frame(
        peer_mac, 2, WEFT_MAC, WEFT_IP, peer_mac, PEER_IP,
    ))
    .expect("send ARP reply");

    let (echo, meta) = recv_matching(&sock, TIMEOUT, |f, _| {
        matches!(
            SlicedPacket::from_ethernet(f).map(|p| p.transport),
            Ok(Some(TransportSlice::Icmpv4(_)))
        )
    })
    .expect("ICMP echo request to weft's MAC");
    assert_eq!(&echo[0..6], &WEFT_MAC);
    assert_eq!(meta.pkt_type, PACKET_OTHERHOST);
    let p = SlicedPacket::from_ethernet(&echo).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
        unreachable!()
    };
    let etherparse::Icmpv4Type::EchoRequest(req) = icmp.icmp_type() else {
        panic!("not an echo request: {:?}", icmp.icmp_type());
    };
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(WEFT_MAC, peer_mac)
        .ipv4(WEFT_IP, PEER_IP, 64)
        .icmpv4_echo_reply(req.id, req.seq)
        .write(&mut reply, icmp.payload())
        .unwrap();
    sock.send(&reply).expect("send echo reply");

    assert!(
        ping.wait_timeout(TIMEOUT).is_some_and(|s| s.success()),
        "ping did not get weft's reply"
    );
    let neigh = link.peer.ip(&["neigh", "show", "10.77.0.2", "dev", PEER]);
    assert!(
        neigh.contains("lladdr 02:77:00:00:00:02"),
        "neighbour entry: {neigh:?}"
    );
}

#[test]
fn promiscuous_membership_follows_the_socket() {
    let Some(link) = Link::new("promisc") else {
        return;
    };
    let promiscuity = || {
        let text = link.uplink.ip(&["-d", "link", "show", UPLINK]);
        let at = text.find("promiscuity ").expect("promiscuity in ip -d");
        text[at + 12..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    let sock = link.uplink.open(UPLINK);
    assert_eq!(promiscuity(), 0);
    sock.set_promiscuous(true).unwrap();
    sock.set_promiscuous(true).unwrap();
    assert!(sock.is_promiscuous());
    assert_eq!(promiscuity(), 1, "idempotent");
    // (`ip link` shows the PROMISC flag only for `ip link set promisc on`;
    // socket memberships show in the promiscuity count.)
    sock.set_promiscuous(false).unwrap();
    sock.set_promiscuous(false).unwrap();
    assert_eq!(promiscuity(), 0);
    sock.set_promiscuous(true).unwrap();
    assert_eq!(promiscuity(), 1);

    // A unicast frame to a foreign MAC arrives, marked as such.
    let peer = link.peer.open(PEER);
    let frame = test_frame(WEFT_MAC, peer.mac().unwrap(), b"to weft's own MAC");
    peer.send(&frame).unwrap();
    let (got, meta) = recv_matching(&sock, TIMEOUT, |f, _| ethertype(f) == ETHERTYPE_TEST)
        .expect("unicast frame to weft's MAC");
    assert_eq!(got, frame);
    assert_eq!(meta.pkt_type, PACKET_OTHERHOST);
    assert_eq!(meta.vlan_tci, None);
    assert!(!meta.truncated && !meta.csum_not_ready);

    // The kernel drops the membership with the socket.
    drop(sock);
    assert_eq!(promiscuity(), 0);
}

#[test]
fn own_sends_are_not_read_back() {
    let Some(link) = Link::new("own") else {
        return;
    };
    let sock = link.uplink.open(UPLINK);
    sock.set_promiscuous(true).unwrap();
    let other = link.uplink.open(UPLINK);
    let peer = link.peer.open(PEER);
    let peer_mac = peer.mac().unwrap();

    let mine = test_frame(peer_mac, WEFT_MAC, b"sent by weft");
    sock.send(&mine).unwrap();
    let (got, _) = recv_matching(&peer, TIMEOUT, |f, _| ethertype(f) == ETHERTYPE_TEST)
        .expect("the frame reaches the peer");
    assert_eq!(got, mine);

    // Something from the peer, so we know the receive queues are live.
    let theirs = test_frame(WEFT_MAC, peer_mac, b"sent by the peer");
    peer.send(&theirs).unwrap();
    for s in [&sock, &other] {
        let (got, _) = recv_matching(s, TIMEOUT, |f, _| ethertype(f) == ETHERTYPE_TEST)
            .expect("the peer's frame");
        assert_eq!(got, theirs, "own frame read back (or the peer's missing)");
        assert!(
            recv_matching(s, Duration::from_millis(200), |f, _| {
                ethertype(f) == ETHERTYPE_TEST
            })
            .is_none(),
            "own frame read back"
        );
    }
}

#[test]
fn stripped_vlan_tag_is_put_back() {
    let Some(link) = Link::new("vlan") else {
        return;
    };
    let sock = link.uplink.open(UPLINK);
    sock.set_promiscuous(true).unwrap();
    let peer = link.peer.open(PEER);
    let mut frame = Vec::new();
    frame.extend_from_slice(&WEFT_MAC);
    frame.extend_from_slice(&peer.mac().unwrap());
    frame.extend_from_slice(&[0x81, 0x00, 0x20, 0x64]); // PCP 1, VID 100
    frame.extend_from_slice(&ETHERTYPE_TEST.to_be_bytes());
    frame.extend_from_slice(b"tagged frame on the uplink");
    frame.resize(64, 0);
    peer.send(&frame).unwrap();
    let (got, meta) = recv_matching(&sock, TIMEOUT, |f, _| {
        f.len() >= 18 && f[16..18] == ETHERTYPE_TEST.to_be_bytes()
    })
    .expect("tagged frame");
    assert_eq!(meta.vlan_tci, Some(0x2064));
    assert_eq!(got, frame);
}

/// Frames the peer's kernel generated with checksum offload arrive with
/// TP_STATUS_CSUMNOTREADY; the uplink port completes them.
#[test]
fn partial_checksums_are_completed_on_receive() {
    let Some(link) = Link::new("csum") else {
        return;
    };
    let raw = link.uplink.open(UPLINK);
    raw.set_promiscuous(true).unwrap();
    let mut port = link.uplink.run(|| UplinkPort::open(UPLINK)).unwrap();
    assert!(port.socket().is_promiscuous());
    assert_eq!(port.capabilities().max_batch, UPLINK_MAX_BATCH);
    assert_eq!(
        port.poll_fd(),
        Some(std::os::fd::AsRawFd::as_raw_fd(port.socket()))
    );
    link.peer.ip(&[
        "neigh",
        "replace",
        "10.77.0.2",
        "lladdr",
        "02:77:00:00:00:02",
        "dev",
        PEER,
    ]);

    link.peer.run(|| {
        let udp = UdpSocket::bind("10.77.0.1:0").unwrap();
        udp.send_to(b"hello, uplink", "10.77.0.2:9999").unwrap();
        // A SYN nobody answers.
        let to: SocketAddr = "10.77.0.2:80".parse().unwrap();
        let _ = TcpStream::connect_timeout(&to, Duration::from_millis(100));
    });

    let is = |proto: IpNumber| {
        move |f: &[u8], _: &RecvMeta| {
            f.len() > 34 && ethertype(f) == 0x0800 && f[23] == proto.0 && f[0..6] == WEFT_MAC
        }
    };
    let (_, meta) = recv_matching(&raw, TIMEOUT, is(IpNumber::UDP)).expect("UDP datagram");
    assert!(meta.csum_not_ready, "veth keeps the checksum partial");
    let (_, meta) = recv_matching(&raw, TIMEOUT, is(IpNumber::TCP)).expect("TCP SYN");
    assert!(meta.csum_not_ready, "veth keeps the checksum partial");

    let mut bufs: Vec<PacketBuf> = (0..4).map(|_| PacketBuf::new()).collect();
    let (mut udp_ok, mut tcp_ok) = (false, false);
    let deadline = Instant::now() + TIMEOUT;
    while !(udp_ok && tcp_ok) {
        assert!(Instant::now() < deadline, "udp {udp_ok}, tcp {tcp_ok}");
        let n = port.recv_batch(&mut bufs).unwrap();
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for buf in &bufs[..n] {
            assert_eq!(buf.offload(), NO_OFFLOAD);
            let Ok(p) = SlicedPacket::from_ethernet(buf.frame()) else {
                continue;
            };
            let Some(NetSlice::Ipv4(ip)) = &p.net else {
                continue;
            };
            let h = ip.header();
            if h.destination() != WEFT_IP {
                continue;
            }
            match &p.transport {
                Some(TransportSlice::Udp(udp)) => {
                    let want = udp
                        .to_header()
                        .calc_checksum_ipv4_raw(h.source(), h.destination(), udp.payload())
                        .unwrap();
                    assert_eq!(udp.checksum(), want, "UDP checksum completed");
                    assert_eq!(udp.payload(), b"hello, uplink");
                    udp_ok = true;
                }
                Some(TransportSlice::Tcp(tcp)) => {
                    let want = tcp.calc_checksum_ipv4(h.source(), h.destination()).unwrap();
                    assert_eq!(tcp.checksum(), want, "TCP checksum completed");
                    assert!(tcp.syn());
                    tcp_ok = true;
                }
                _ => {}
            }
        }
    }
}

/// The folded, uncomplemented pseudo-header sum a `CHECKSUM_PARTIAL`
/// frame carries in its checksum field (RFC 9293 §3.1, RFC 8200 §8.1).
fn pseudo_sum(addrs: &[u8], proto: u8, len: usize) -> u16 {
    let len = len as u32;
    let mut s = (len >> 16) + (len & 0xffff) + u32::from(proto);
    for w in addrs.chunks(2) {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A TCP super-frame of 10 kB with a partial checksum, as a TAP hands it
/// over, and its offload metadata.
fn gso_frame(v6: bool, dst_mac: [u8; 6], payload: &[u8], mss: u16) -> (Vec<u8>, Offload) {
    let b = PacketBuilder::ethernet2(WEFT_MAC, dst_mac);
    let b = if v6 {
        b.ipv6(WEFT_IP6, PEER_IP6, 64)
    } else {
        b.ip(etherparse::IpHeaders::Ipv4(
            {
                let mut h = Ipv4Header::new(0, 64, IpNumber::TCP, WEFT_IP, PEER_IP).unwrap();
                h.identification = 0x4242;
                h.dont_fragment = true;
                h
            },
            Default::default(),
        ))
    };
    let mut frame = Vec::new();
    b.tcp(40000, 5201, 0x1000_0000, 501)
        .ack(7)
        .psh()
        .write(&mut frame, payload)
        .unwrap();
    let (l4, ip_hdr) = if v6 { (54usize, 40) } else { (34usize, 20) };
    // The TCP checksum field holds the pseudo-header sum (CHECKSUM_PARTIAL).
    let addrs = if v6 {
        frame[22..54].to_vec()
    } else {
        frame[26..34].to_vec()
    };
    let partial = pseudo_sum(&addrs, 6, frame.len() - l4);
    frame[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
    let offload = Offload {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: if v6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        },
        hdr_len: (14 + ip_hdr + 20) as u16,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: TCP_CSUM_OFFSET,
        num_buffers: 0,
    };
    (frame, offload)
}

#[test]
fn gso_frames_leave_as_checksummed_segments() {
    let Some(link) = Link::new("gso") else {
        return;
    };
    let mut port = link.uplink.run(|| UplinkPort::open(UPLINK)).unwrap();
    let capture = link.peer.open(PEER);
    let peer_mac = capture.mac().unwrap();
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 251) as u8).collect();

    for (v6, mss) in [(false, 1448u16), (true, 1428)] {
        let (frame, offload) = gso_frame(v6, peer_mac, &payload, mss);
        port.send(&frame, &offload).expect("send GSO frame");

        let count = payload.len().div_ceil(usize::from(mss));
        let mut data = Vec::new();
        for i in 0..count {
            let (seg, _) = recv_matching(&capture, TIMEOUT, |f, _| {
                f[6..12] == WEFT_MAC && ethertype(f) == if v6 { 0x86dd } else { 0x0800 }
            })
            .unwrap_or_else(|| panic!("segment {i} of {count} (v6 {v6})"));
            assert!(seg.len() <= 1514, "segment {i} is {} bytes", seg.len());
            let p = SlicedPacket::from_ethernet(&seg).expect("etherparse parses the segment");
            let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                panic!("segment {i} is not TCP");
            };
            let want = match &p.net {
                Some(NetSlice::Ipv4(ip)) => {
                    let h = ip.header().to_header();
                    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
                    assert_eq!(h.identification, 0x4242u16.wrapping_add(i as u16));
                    assert_eq!(usize::from(h.total_len), seg.len() - 14);
                    tcp.calc_checksum_ipv4(h.source, h.destination).unwrap()
                }
                Some(NetSlice::Ipv6(ip)) => {
                    let h = ip.header();
                    assert_eq!(usize::from(h.payload_length()), seg.len() - 54);
                    tcp.calc_checksum_ipv6(h.source(), h.destination()).unwrap()
                }
                _ => panic!("segment {i} is not IP"),
            };
            assert_eq!(tcp.checksum(), want, "TCP checksum of segment {i}");
            assert_eq!(
                tcp.sequence_number(),
                0x1000_0000u32.wrapping_add((i * usize::from(mss)) as u32)
            );
            assert_eq!(tcp.psh(), i + 1 == count, "PSH only on the last segment");
            assert!(tcp.ack());
            let expect_len = if i + 1 == count {
                payload.len() - i * usize::from(mss)
            } else {
                usize::from(mss)
            };
            assert_eq!(tcp.payload().len(), expect_len);
            data.extend_from_slice(tcp.payload());
        }
        assert_eq!(data, payload, "payload reassembles (v6 {v6})");
    }

    // A frame with only a partial checksum leaves with it completed.
    let mut small = Vec::new();
    PacketBuilder::ethernet2(WEFT_MAC, peer_mac)
        .ipv4(WEFT_IP, PEER_IP, 64)
        .udp(5000, 6000)
        .write(&mut small, b"partial")
        .unwrap();
    let good = u16::from_be_bytes([small[40], small[41]]);
    let partial = pseudo_sum(&small[26..34], 17, 15);
    small[40..42].copy_from_slice(&partial.to_be_bytes());
    let offload = Offload {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: VIRTIO_NET_HDR_GSO_NONE,
        csum_start: 34,
        csum_offset: 6,
        ..NO_OFFLOAD
    };
    port.send(&small, &offload).unwrap();
    let (got, _) = recv_matching(&capture, TIMEOUT, |f, _| {
        f[6..12] == WEFT_MAC && ethertype(f) == 0x0800 && f[23] == 17
    })
    .expect("UDP frame");
    assert_eq!(u16::from_be_bytes([got[40], got[41]]), good);

    // Plain frames go as they are; the MTU is the kernel's to enforce.
    let plain = test_frame(peer_mac, WEFT_MAC, b"plain");
    port.send(&plain, &NO_OFFLOAD).unwrap();
    let (got, _) = recv_matching(&capture, TIMEOUT, |f, _| ethertype(f) == ETHERTYPE_TEST)
        .expect("plain frame");
    assert_eq!(got, plain);
    let jumbo = test_frame(peer_mac, WEFT_MAC, &[0u8; 3000]);
    let err = port.send(&jumbo, &NO_OFFLOAD).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE), "{err}");

    // Offloads it cannot do are refused, not sent.
    let bad = Offload {
        gso_type: VIRTIO_NET_HDR_GSO_UDP,
        gso_size: 1000,
        ..NO_OFFLOAD
    };
    let err = port.send(&small, &bad).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}
