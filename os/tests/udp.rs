//! `VxlanSocket` over real loopback sockets (127.0.0.1, ephemeral ports
//! only): batched receive, the send-socket pool, GSO with and without GRO,
//! and the errors a VTEP operator sees.
#![cfg(target_os = "linux")]

use std::collections::HashSet;
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use weft_os::udp::{RecvMeta, SocketError, VxlanSocket, BATCH_SIZE, MAX_UDP_PAYLOAD};

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn any_port() -> SocketAddrV4 {
    SocketAddrV4::new(LOOPBACK, 0)
}

/// A recognisable payload: byte `i` is `(seed + i) % 251`.
fn payload(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((seed + i) % 251) as u8).collect()
}

/// Receives until `want_bytes` have arrived (or 5 s pass), returning each
/// buffer's metadata and bytes.
fn recv_bytes(sock: &VxlanSocket, want_bytes: usize) -> Vec<(RecvMeta, Vec<u8>)> {
    let mut storage = vec![vec![0u8; 65_536]; BATCH_SIZE];
    let mut meta = [RecvMeta::default(); BATCH_SIZE];
    let mut out = Vec::new();
    let mut total = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while total < want_bytes {
        assert!(
            Instant::now() < deadline,
            "timed out with {total} of {want_bytes} bytes"
        );
        let mut bufs: Vec<&mut [u8]> = storage.iter_mut().map(|b| &mut b[..]).collect();
        match sock.recv_batch(&mut bufs, &mut meta) {
            Ok(n) => {
                assert!(n > 0 && n <= BATCH_SIZE);
                for i in 0..n {
                    total += meta[i].len;
                    out.push((meta[i], bufs[i][..meta[i].len].to_vec()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("recv_batch: {e}"),
        }
    }
    assert_eq!(total, want_bytes, "more bytes arrived than were sent");
    out
}

fn assert_empty(sock: &VxlanSocket) {
    let mut buf = [0u8; 64];
    let mut bufs: [&mut [u8]; 1] = [&mut buf];
    let mut meta = [RecvMeta::default()];
    let err = sock.recv_batch(&mut bufs, &mut meta).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn pool_sends_arrive_with_source_and_length() {
    let rx = VxlanSocket::bind(any_port(), 0).unwrap();
    let tx = VxlanSocket::bind(any_port(), 4).unwrap();
    let ports = tx.send_ports();
    assert_eq!(ports.len(), 4);

    // Header and frame as separate parts, as a VTEP sends them.
    let mut sent = Vec::new();
    for i in 0..20u32 {
        let header = [0x08, 0, 0, 0, 0, 0, i as u8, 0];
        let frame = payload(i as usize, 60 + i as usize * 37);
        tx.send(
            rx.local_addr(),
            i,
            &[IoSlice::new(&header), IoSlice::new(&frame)],
        )
        .unwrap();
        let mut whole = header.to_vec();
        whole.extend_from_slice(&frame);
        sent.push((i, whole));
    }
    let want: usize = sent.iter().map(|(_, d)| d.len()).sum();
    let got = recv_bytes(&rx, want);
    assert_eq!(got.len(), sent.len(), "one buffer per datagram without GRO");
    // Each flow stays on one socket, so its datagrams stay in order; match
    // each by its tag byte (header byte 6).
    for (meta, data) in &got {
        let i = u32::from(data[6]);
        let (_, expect) = &sent[i as usize];
        assert_eq!(data, expect, "datagram {i}");
        assert_eq!(meta.len, expect.len());
        assert_eq!(meta.stride, meta.len);
        assert!(!meta.truncated);
        assert_eq!(
            meta.src,
            SocketAddrV4::new(LOOPBACK, ports[i as usize % 4]),
            "datagram {i} left from the wrong socket"
        );
        assert_eq!(tx.send_port(i), ports[i as usize % 4]);
    }
    assert_empty(&rx);
}

#[test]
fn flow_hashes_spread_over_source_ports() {
    let rx = VxlanSocket::bind(any_port(), 0).unwrap();
    let tx = VxlanSocket::bind(any_port(), 4).unwrap();
    let ports: HashSet<u16> = tx.send_ports().into_iter().collect();
    assert_eq!(ports.len(), 4, "send sockets share a port");
    assert!(!ports.contains(&tx.local_addr().port()));

    for h in 0..4u32 {
        tx.send(
            rx.local_addr(),
            h,
            &[IoSlice::new(b"0123456789abcdefghijklmn")],
        )
        .unwrap();
    }
    let seen: HashSet<u16> = recv_bytes(&rx, 4 * 24)
        .iter()
        .map(|(m, _)| m.src.port())
        .collect();
    assert_eq!(seen, ports, "4 flow hashes should use 4 source ports");
}

#[test]
fn without_pool_the_listen_socket_sends() {
    let rx = VxlanSocket::bind(any_port(), 0).unwrap();
    let tx = VxlanSocket::bind(any_port(), 0).unwrap();
    assert_eq!(tx.send_ports(), vec![tx.local_addr().port()]);
    tx.send(rx.local_addr(), 12345, &[IoSlice::new(b"hello")])
        .unwrap();
    let got = recv_bytes(&rx, 5);
    assert_eq!(got[0].0.src, tx.local_addr());
}

/// Sends 10 segments of 1000 bytes with one `send_gso`, to a receiver
/// without GRO and to one with GRO, and checks both get the same bytes.
#[test]
fn gso_arrives_split_or_coalesced() {
    let plain_rx = VxlanSocket::bind(any_port(), 0).unwrap();
    let gro_rx = VxlanSocket::bind(any_port(), 0).unwrap();
    let gro = gro_rx.enable_gro();
    assert_eq!(gro_rx.gro_enabled(), gro);
    let tx = VxlanSocket::bind(any_port(), 2).unwrap();
    eprintln!(
        "GSO supported: {} (max {} segments); GRO accepted: {gro}",
        tx.gso_supported(),
        tx.max_gso_segments()
    );

    let data = payload(7, 10 * 1000);
    tx.send_gso(plain_rx.local_addr(), 1, &data, 1000).unwrap();
    tx.send_gso(gro_rx.local_addr(), 1, &data, 1000).unwrap();

    let plain = recv_bytes(&plain_rx, data.len());
    assert_eq!(plain.len(), 10, "without GRO each segment is a datagram");
    for (meta, _) in &plain {
        assert_eq!((meta.len, meta.stride), (1000, 1000));
        assert_eq!(meta.src.port(), tx.send_port(1));
    }
    let plain_bytes: Vec<u8> = plain.iter().flat_map(|(_, d)| d.clone()).collect();
    assert_eq!(plain_bytes, data);

    let coalesced = recv_bytes(&gro_rx, data.len());
    eprintln!(
        "10 x 1000 bytes with GRO arrived in {} buffer(s)",
        coalesced.len()
    );
    let mut gro_bytes = Vec::new();
    for (meta, bytes) in &coalesced {
        assert_eq!(meta.stride, 1000, "stride is the segment size");
        for d in meta.datagrams(bytes) {
            assert_eq!(d.len(), 1000);
            gro_bytes.extend_from_slice(d);
        }
    }
    assert_eq!(gro_bytes, data, "GRO must deliver the same bytes");
    if gro && tx.gso_supported() {
        assert!(
            coalesced.len() < 10,
            "GSO + GRO on loopback should coalesce, got {} buffers",
            coalesced.len()
        );
    }
}

/// More segments than one GSO send may carry, and a short last segment:
/// `send_gso` splits into runs and every datagram arrives, in order.
#[test]
fn gso_long_run_with_short_tail() {
    let rx = VxlanSocket::bind(any_port(), 0).unwrap();
    let tx = VxlanSocket::bind(any_port(), 1).unwrap();
    let data = payload(3, 150 * 1000 + 321);
    tx.send_gso(rx.local_addr(), 9, &data, 1000).unwrap();
    let got = recv_bytes(&rx, data.len());
    assert_eq!(got.len(), 151);
    assert!(got[..150].iter().all(|(m, _)| m.len == 1000));
    assert_eq!(got[150].0.len, 321);
    let bytes: Vec<u8> = got.iter().flat_map(|(_, d)| d.clone()).collect();
    assert_eq!(bytes, data);
}

#[test]
fn oversized_datagrams_are_errors() {
    let rx = VxlanSocket::bind(any_port(), 0).unwrap();
    let tx = VxlanSocket::bind(any_port(), 2).unwrap();
    let big = vec![0u8; MAX_UDP_PAYLOAD + 1];
    let err = tx
        .send(rx.local_addr(), 0, &[IoSlice::new(&big)])
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE), "{err}");
    // Split over two parts, too.
    let err = tx
        .send(
            rx.local_addr(),
            0,
            &[IoSlice::new(&big[..8]), IoSlice::new(&big[8..])],
        )
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE), "{err}");
    // One "segment" too large for a datagram.
    let huge = vec![0u8; 65_535];
    let err = tx.send_gso(rx.local_addr(), 0, &huge, 65_535).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE), "{err}");
    // A zero segment size is the caller's mistake.
    let err = tx.send_gso(rx.local_addr(), 0, &huge, 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    // The largest datagram still goes through, and GSO is still on.
    let max = vec![0u8; MAX_UDP_PAYLOAD];
    tx.send(rx.local_addr(), 0, &[IoSlice::new(&max)]).unwrap();
    assert_eq!(recv_bytes(&rx, MAX_UDP_PAYLOAD).len(), 1);
    assert_empty(&rx);
}

#[test]
fn empty_socket_would_block() {
    let rx = VxlanSocket::bind(any_port(), 0).unwrap();
    assert_empty(&rx);
    // No room is not an error.
    let mut none: [&mut [u8]; 0] = [];
    assert_eq!(rx.recv_batch(&mut none, &mut []).unwrap(), 0);
}

#[test]
fn short_buffer_reports_truncation() {
    let rx = VxlanSocket::bind(any_port(), 0).unwrap();
    let tx = VxlanSocket::bind(any_port(), 0).unwrap();
    tx.send(rx.local_addr(), 0, &[IoSlice::new(&[1u8; 100])])
        .unwrap();
    let mut buf = [0u8; 10];
    let mut bufs: [&mut [u8]; 1] = [&mut buf];
    let mut meta = [RecvMeta::default()];
    let deadline = Instant::now() + Duration::from_secs(5);
    let n = loop {
        match rx.recv_batch(&mut bufs, &mut meta) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            r => break r.unwrap(),
        }
    };
    assert_eq!(n, 1);
    assert_eq!(meta[0].len, 10);
    assert!(meta[0].truncated);
}

#[test]
fn bind_to_address_in_use_names_it() {
    let taken = UdpSocket::bind(any_port()).unwrap();
    let addr = match taken.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    let err = VxlanSocket::bind(addr, 2).unwrap_err();
    assert!(
        matches!(err, SocketError::Bind { addr: a, .. } if a == addr),
        "{err:?}"
    );
    assert_eq!(err.io_error().kind(), io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let source = std::error::Error::source(&err).expect("the cause is kept");
    assert!(source.to_string().contains("in use"), "{source}");

    // A second VTEP on the same port is refused too (no SO_REUSEADDR).
    let first = VxlanSocket::bind(any_port(), 0).unwrap();
    let err = VxlanSocket::bind(first.local_addr(), 0).unwrap_err();
    assert_eq!(err.io_error().kind(), io::ErrorKind::AddrInUse, "{err}");
}

#[test]
fn bind_to_foreign_address_names_it() {
    // 192.0.2.1 (TEST-NET-1) is no address of this host; nothing is sent.
    let addr = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 0);
    let err = VxlanSocket::bind(addr, 1).unwrap_err();
    assert_eq!(err.io_error().kind(), io::ErrorKind::AddrNotAvailable);
    assert!(err.to_string().contains("192.0.2.1:0"), "{err}");
}

#[test]
fn sockets_are_set_up() {
    let sock = VxlanSocket::bind(any_port(), 8).unwrap();
    assert_eq!(sock.send_ports().len(), 8);
    assert_eq!(sock.local_addr().ip(), &LOOPBACK);
    assert_ne!(sock.local_addr().port(), 0);
    assert!(sock.recv_fd() >= 0);
    // Linux reports twice the size it was given; anything above the
    // 208 KiB default means the request took effect (capped at rmem_max
    // when not privileged).
    let size = sock.recv_buffer_size().unwrap();
    assert!(size > 256 * 1024, "SO_RCVBUF = {size}");
    eprintln!("SO_RCVBUF = {size}");
}
