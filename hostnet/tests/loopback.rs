//! The socket uplink against real host sockets on loopback: frames in as
//! the switch would send them, frames out as the switch would receive
//! them. No privilege needed.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use weft_hostnet::tcp::{ACK, FIN, PSH, RST, SYN};
use weft_hostnet::uplink::HostListener;
use weft_hostnet::{Config, FrameBuf, SocketUplink};
use weft_os::tap::VIRTIO_NET_HDR_GSO_TCPV4;
use weft_packet::MacAddr;
use weft_switch::frame::{Offload, MAX_FRAME_LEN, NO_OFFLOAD};

const UPLINK: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const UMAC: [u8; 6] = [2, 0, 0, 0, 0, 0x15];
const HMAC: [u8; 6] = [2, 0, 0, 0, 0, 0x02];

struct Buf(Vec<u8>, usize, Offload);

impl FrameBuf for Buf {
    fn frame_space(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn set_frame(&mut self, len: usize, offload: Offload) {
        self.1 = len;
        self.2 = offload;
    }
}

fn uplink() -> SocketUplink {
    SocketUplink::new(Config {
        uplink_ip: UPLINK,
        uplink_mac: MacAddr(UMAC),
        host_ip: HOST,
        host_mac: MacAddr(HMAC),
        max_flows: 64,
    })
    .unwrap()
}

/// A received frame: TCP fields and payload, or UDP/ICMP payload.
#[derive(Debug, Clone)]
struct Got {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
    payload: Vec<u8>,
    offload: Offload,
    proto: u8,
}

/// Receives frames until `want` says stop (or 3 s pass).
fn recv_until(up: &mut SocketUplink, mut want: impl FnMut(&Got) -> bool) -> Vec<Got> {
    let mut bufs: Vec<Buf> = (0..8)
        .map(|_| Buf(vec![0; MAX_FRAME_LEN], 0, NO_OFFLOAD))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        let n = up.recv_batch(&mut bufs, Instant::now());
        for b in &bufs[..n] {
            let f = &b.0[..b.1];
            assert_eq!(&f[0..6], &UMAC, "to the uplink's MAC");
            let p = SlicedPacket::from_ethernet(f).unwrap();
            let Some(NetSlice::Ipv4(ip)) = p.net else {
                panic!("not IPv4")
            };
            let h = ip.header();
            assert_eq!(h.destination_addr(), UPLINK);
            let g = match p.transport {
                Some(TransportSlice::Tcp(t)) => Got {
                    src: SocketAddrV4::new(h.source_addr(), t.source_port()),
                    dst: SocketAddrV4::new(h.destination_addr(), t.destination_port()),
                    flags: f[14 + 20 + 13],
                    seq: t.sequence_number(),
                    ack: t.acknowledgment_number(),
                    window: t.window_size(),
                    payload: t.payload().to_vec(),
                    offload: b.2,
                    proto: 6,
                },
                Some(TransportSlice::Udp(u)) => Got {
                    src: SocketAddrV4::new(h.source_addr(), u.source_port()),
                    dst: SocketAddrV4::new(h.destination_addr(), u.destination_port()),
                    flags: 0,
                    seq: 0,
                    ack: 0,
                    window: 0,
                    payload: u.payload().to_vec(),
                    offload: b.2,
                    proto: 17,
                },
                Some(TransportSlice::Icmpv4(i)) => Got {
                    src: SocketAddrV4::new(h.source_addr(), 0),
                    dst: SocketAddrV4::new(UPLINK, 0),
                    flags: 0,
                    seq: 0,
                    ack: 0,
                    window: 0,
                    payload: i.slice().to_vec(),
                    offload: b.2,
                    proto: 1,
                },
                _ => panic!("unexpected frame"),
            };
            let stop = want(&g);
            out.push(g);
            if stop {
                return out;
            }
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    panic!("timed out; got {out:?}");
}

fn tcp_frame(
    sport: u16,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(UMAC, HMAC)
        .ipv4(UPLINK.octets(), dst.ip().octets(), 64)
        .tcp(sport, dst.port(), seq, 4096);
    if flags & SYN != 0 {
        b = b.syn();
        b = b
            .options(&[
                etherparse::TcpOptionElement::MaximumSegmentSize(1460),
                etherparse::TcpOptionElement::WindowScale(7),
            ])
            .unwrap();
    }
    if flags & ACK != 0 {
        b = b.ack(ack);
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    if flags & PSH != 0 {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

#[test]
fn tcp_flow_both_ways_with_super_frames_and_close() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let mut up = uplink();
    let now = Instant::now;
    // To the virtual host's address: the host's loopback.
    let dst = SocketAddrV4::new(HOST, port);
    up.send_frame(&tcp_frame(40000, dst, 100, 0, SYN, &[]), now());
    let got = recv_until(&mut up, |g| g.flags & SYN != 0);
    let synack = got.last().unwrap();
    assert_eq!(synack.flags, SYN | ACK);
    assert_eq!(synack.ack, 101);
    assert_eq!(synack.src, dst);
    let (mut conn, peer) = server.accept().unwrap();
    // A flow to the host's loopback does not pace: cubic, where the
    // kernel has it, whatever the system default.
    let available = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .unwrap_or_default();
    if available.split_whitespace().any(|a| a == "cubic") {
        let out = std::process::Command::new("ss")
            .args(["-Htin", "src", &peer.to_string()])
            .output()
            .expect("run ss");
        let ss = String::from_utf8_lossy(&out.stdout);
        assert!(ss.contains("cubic"), "weft's host socket: {ss}");
    }
    let mut isn = synack.seq.wrapping_add(1);
    up.send_frame(&tcp_frame(40000, dst, 101, isn, ACK, &[]), now());
    // Endpoint → host.
    up.send_frame(&tcp_frame(40000, dst, 101, isn, ACK | PSH, b"hello"), now());
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    let got = recv_until(&mut up, |g| g.ack == 106);
    assert!(got.last().unwrap().window > 0);
    // Host → endpoint: 300 KB, some of it in super-frames.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    conn.write_all(&data).unwrap();
    let mut received = Vec::new();
    let mut saw_gso = false;
    while received.len() < data.len() {
        let got = recv_until(&mut up, |g| !g.payload.is_empty());
        for g in got {
            if g.payload.is_empty() {
                continue;
            }
            assert_eq!(g.seq, isn.wrapping_add(received.len() as u32), "in order");
            saw_gso |= g.offload.gso_type == VIRTIO_NET_HDR_GSO_TCPV4;
            if g.offload.gso_type == VIRTIO_NET_HDR_GSO_TCPV4 {
                assert_eq!(g.offload.gso_size, 1460, "segments of the endpoint's MSS");
            }
            received.extend_from_slice(&g.payload);
            let ack = isn.wrapping_add(received.len() as u32);
            up.send_frame(&tcp_frame(40000, dst, 106, ack, ACK, &[]), now());
        }
    }
    assert_eq!(received, data);
    assert!(saw_gso, "large reads leave as TSO super-frames");
    isn = isn.wrapping_add(data.len() as u32);
    // The host closes: FIN to the endpoint; the endpoint closes too.
    drop(conn);
    let got = recv_until(&mut up, |g| g.flags & FIN != 0);
    assert_eq!(got.last().unwrap().seq, isn);
    up.send_frame(
        &tcp_frame(40000, dst, 106, isn.wrapping_add(1), ACK | FIN, &[]),
        now(),
    );
    let got = recv_until(&mut up, |g| g.ack == 107);
    assert_eq!(got.last().unwrap().flags & RST, 0);
    assert_eq!(
        up.flows(),
        0,
        "the flow is gone once both FINs are acknowledged"
    );
}

#[test]
fn tcp_to_a_closed_port_is_reset_and_strays_are_reset() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut up = uplink();
    let dst = SocketAddrV4::new(HOST, port);
    up.send_frame(&tcp_frame(40001, dst, 5, 0, SYN, &[]), Instant::now());
    let got = recv_until(&mut up, |g| g.flags & RST != 0);
    assert_eq!(got.last().unwrap().ack, 6);
    // A segment of no flow.
    up.send_frame(&tcp_frame(40002, dst, 5, 77, ACK, b"x"), Instant::now());
    let got = recv_until(&mut up, |g| g.flags & RST != 0);
    assert_eq!(got.last().unwrap().seq, 77);
    assert_eq!(up.flows(), 0);
}

#[test]
fn udp_flow_and_published_udp_port_keep_addresses() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let mut up = uplink();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(UMAC, HMAC)
        .ipv4(UPLINK.octets(), HOST.octets(), 64)
        .udp(5000, port)
        .write(&mut f, b"ping")
        .unwrap();
    up.send_frame(&f, Instant::now());
    let mut buf = [0u8; 16];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    server.send_to(b"pong", from).unwrap();
    let got = recv_until(&mut up, |g| g.proto == 17);
    let g = got.last().unwrap();
    assert_eq!(
        (g.src, g.dst.port(), &g.payload[..]),
        (SocketAddrV4::new(HOST, port), 5000, &b"pong"[..])
    );

    // A published UDP port: a client on the host's loopback appears as
    // the virtual host; the endpoint's answer reaches the client.
    let l = HostListener::bind(false, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (_, hp) = l.port();
    up.listen(l).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"q", ("127.0.0.1", hp)).unwrap();
    let got = recv_until(&mut up, |g| g.proto == 17 && g.dst.port() == hp);
    let g = got.last().unwrap().clone();
    assert_eq!(*g.src.ip(), HOST);
    assert_eq!(g.src.port(), client.local_addr().unwrap().port());
    let mut f = Vec::new();
    PacketBuilder::ethernet2(UMAC, HMAC)
        .ipv4(UPLINK.octets(), HOST.octets(), 64)
        .udp(hp, g.src.port())
        .write(&mut f, b"a")
        .unwrap();
    up.send_frame(&f, Instant::now());
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"a");
    assert!(up.unlisten(false, hp).is_some());
}

#[test]
fn published_tcp_port_opens_a_flow_from_the_client() {
    let mut up = uplink();
    let l = HostListener::bind(true, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (_, hp) = l.port();
    up.listen(l).unwrap();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", hp)).unwrap();
    let cport = client.local_addr().unwrap().port();
    let got = recv_until(&mut up, |g| g.flags & SYN != 0);
    let syn = got.last().unwrap().clone();
    assert_eq!(syn.flags, SYN);
    assert_eq!(
        syn.src,
        SocketAddrV4::new(HOST, cport),
        "loopback client as the virtual host"
    );
    assert_eq!(syn.dst.port(), hp);
    // The endpoint (behind DNAT) answers SYN-ACK from the uplink address.
    let peer = syn.src;
    let mut f = Vec::new();
    PacketBuilder::ethernet2(UMAC, HMAC)
        .ipv4(UPLINK.octets(), HOST.octets(), 64)
        .tcp(hp, peer.port(), 9000, 4096)
        .syn()
        .ack(syn.seq.wrapping_add(1))
        .write(&mut f, &[])
        .unwrap();
    up.send_frame(&f, Instant::now());
    recv_until(&mut up, |g| g.flags == ACK && g.ack == 9001);
    client.write_all(b"hi").unwrap();
    let got = recv_until(&mut up, |g| !g.payload.is_empty());
    assert_eq!(got.last().unwrap().payload, b"hi");
    let ack = |n: u32| {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(UMAC, HMAC)
            .ipv4(UPLINK.octets(), HOST.octets(), 64)
            .tcp(hp, peer.port(), 9001, 4096)
            .ack(syn.seq.wrapping_add(1 + n))
            .write(&mut f, &[])
            .unwrap();
        f
    };
    // More data before the first is acknowledged: only the new bytes go
    // out (the peek offset moved past those in flight).
    client.write_all(b"there").unwrap();
    let got = recv_until(&mut up, |g| !g.payload.is_empty());
    let g = got.last().unwrap();
    assert_eq!(
        (g.payload.as_slice(), g.seq),
        (&b"there"[..], syn.seq.wrapping_add(3))
    );
    up.send_frame(&ack(7), Instant::now());
    let mut f = Vec::new();
    PacketBuilder::ethernet2(UMAC, HMAC)
        .ipv4(UPLINK.octets(), HOST.octets(), 64)
        .tcp(hp, peer.port(), 9001, 4096)
        .ack(syn.seq.wrapping_add(3))
        .psh()
        .write(&mut f, b"yo")
        .unwrap();
    up.send_frame(&f, Instant::now());
    let mut buf = [0u8; 2];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"yo");
}

#[test]
fn ping_goes_through_a_ping_socket_or_is_counted_as_refused() {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    let mut it = range.split_whitespace().map(|x| x.parse::<u32>().unwrap());
    let (lo, hi) = (it.next().unwrap(), it.next().unwrap());
    let gid = nix::unistd::getegid().as_raw();
    let allowed = lo <= gid && gid <= hi;
    let mut up = uplink();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(UMAC, HMAC)
        .ipv4(UPLINK.octets(), HOST.octets(), 64)
        .icmpv4_echo_request(0x4242, 1)
        .write(&mut f, b"abcdefgh")
        .unwrap();
    up.send_frame(&f, Instant::now());
    if allowed {
        let got = recv_until(&mut up, |g| g.proto == 1);
        let p = &got.last().unwrap().payload;
        assert_eq!(p[0], 0, "echo reply");
        assert_eq!(&p[4..6], &[0x42, 0x42], "the endpoint's identifier");
        assert_eq!(*got.last().unwrap().src.ip(), HOST);
    } else {
        let c = up.counters();
        assert_eq!(c.ping_refused.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(up.flows(), 0);
    }
}

#[test]
fn arp_for_anything_but_the_uplink_is_answered() {
    let mut up = uplink();
    let mut req = vec![0u8; 42];
    req[0..6].fill(0xff);
    req[6..12].copy_from_slice(&UMAC);
    req[12..14].copy_from_slice(&[8, 6]);
    req[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    req[22..28].copy_from_slice(&UMAC);
    req[28..32].copy_from_slice(&UPLINK.octets());
    req[38..42].copy_from_slice(&HOST.octets());
    up.send_frame(&req, Instant::now());
    let mut bufs = vec![Buf(vec![0; MAX_FRAME_LEN], 0, NO_OFFLOAD)];
    assert_eq!(up.recv_batch(&mut bufs, Instant::now()), 1);
    let f = &bufs[0].0[..bufs[0].1];
    assert_eq!(&f[20..22], &[0, 2]);
    assert_eq!(&f[22..28], &HMAC);
    // ARP for the uplink's own address is not answered.
    req[38..42].copy_from_slice(&UPLINK.octets());
    up.send_frame(&req, Instant::now());
    assert_eq!(up.recv_batch(&mut bufs, Instant::now()), 0);
}
