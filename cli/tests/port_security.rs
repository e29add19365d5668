//! Port security: frames with a forged source MAC or source IP, and
//! truncated frames, sent raw from inside a namespace, are dropped at the
//! ingress port, counted under their reason, and never reach the peer.
//!
//! Subnet indices 40..=49 (see `common` for the parallelism note).

mod common;

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use weft_os::packet::PacketSocket;

use common::*;

const ETH_P_IPV4: u16 = 0x0800;

/// Sends each frame as-is on `ifname` inside namespace `ns`, from a fresh
/// thread that joins the namespace (setns only affects the calling thread,
/// and that thread ends right after). Returns one result per frame.
fn send_raw(ns: &Netns, ifname: &str, frames: Vec<Vec<u8>>) -> Vec<io::Result<usize>> {
    let ns_path = ns.path();
    let ifname = ifname.to_string();
    spawn_in_netns(
        ns_path.clone(),
        move || -> io::Result<Vec<io::Result<usize>>> {
            let sock = PacketSocket::open(&ifname).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no packet socket on {ifname} in {}: {e}", ns_path.display()),
                )
            })?;
            let results = frames
                .iter()
                .map(|frame| sock.send(frame).map(|()| frame.len()))
                .collect();
            Ok(results)
        },
    )
    .join()
    .expect("raw sender thread panicked")
    .unwrap_or_else(|e| panic!("raw socket setup in {}: {e}", ns.name))
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet carrying a UDP datagram (UDP checksum 0 = none).
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let udp_len = 8 + data.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let mut sum: u32 = p
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !(sum as u16);
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(data);
    p
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap_or_else(|_| panic!("bad IPv4 {s}"))
}

/// Waits up to 3 s for `drops[reason]` of `port` to reach `at_least`.
fn wait_drops(d: &Daemon, port: u64, reason: &str, at_least: u64) -> u64 {
    let mut last = 0;
    let reached = wait_for(Duration::from_secs(3), || {
        last = port_drops(d, port, reason);
        (last >= at_least).then_some(())
    });
    if reached.is_none() {
        panic!(
            "drops[{reason}] of port {port} is {last}, expected >= {at_least}; stats: {}",
            json(d, &["stats"])
        );
    }
    last
}

#[test]
fn spoofed_and_malformed_frames_are_dropped_and_counted() {
    require_root!();
    const I: u8 = 40;
    const PORT: u16 = 5040;
    let d = Daemon::start();
    create_network(&d, "sec", &subnet(I, 1), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let c = Netns::new("c");
    let ep_a = attach(&d, "sec", &a, &[]);
    let ep_b = attach(&d, "sec", &b, &[]);
    let ep_c = attach(&d, "sec", &c, &[]);
    // Warm up: the switch and the kernels know everyone.
    for (from, to) in [(&a, &ep_b), (&c, &ep_b), (&a, &ep_c)] {
        let out = from.ping(&to.ip);
        assert!(out.status.success(), "warm-up ping:\n{}", describe(&out));
    }

    // B listens for UDP; whatever it receives lands in this file.
    let received = d.dir.join("udp-received");
    let port = PORT.to_string();
    let _listener = b.spawn(
        &["nc", "-u", "-l", &port],
        Stdio::null(),
        Stdio::from(File::create(&received).unwrap()),
    );
    assert!(
        b.wait_listening("udp", PORT, Duration::from_secs(5)),
        "nc -u -l {PORT} not listening in {}",
        b.name
    );

    let mac_a = parse_mac(&ep_a.mac);
    let mac_b = parse_mac(&ep_b.mac);
    let forged_mac = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];
    let tag = std::process::id();
    let spoof_mac_payload = format!("SPOOFED-MAC-{tag}\n");
    let spoof_ip_payload = format!("SPOOFED-IP-{tag}\n");
    let legit_payload = format!("LEGIT-{tag}\n");

    let base_mac = port_drops(&d, ep_a.port, "spoofed_source_mac");
    let base_ip = port_drops(&d, ep_a.port, "spoofed_source_ip");
    let base_bad = port_drops(&d, ep_a.port, "malformed");

    // (a) Right IP, someone else's (made-up) source MAC.
    let frame_a = ethernet(
        mac_b,
        forged_mac,
        ETH_P_IPV4,
        &ipv4_udp(
            ip(&ep_a.ip),
            ip(&ep_b.ip),
            40001,
            PORT,
            spoof_mac_payload.as_bytes(),
        ),
    );
    // (b) Right MAC, another endpoint's (C's) source IP.
    let frame_b = ethernet(
        mac_b,
        mac_a,
        ETH_P_IPV4,
        &ipv4_udp(
            ip(&ep_c.ip),
            ip(&ep_b.ip),
            40002,
            PORT,
            spoof_ip_payload.as_bytes(),
        ),
    );
    // (c) Truncated: an Ethernet header saying IPv4, then 5 bytes. (The
    // kernel refuses AF_PACKET sends shorter than the 14-byte header.)
    let frame_c = ethernet(mac_b, mac_a, ETH_P_IPV4, &[0x45, 0, 0, 20, 0]);

    let results = send_raw(
        &a,
        &ep_a.ifname,
        vec![frame_a.clone(), frame_b.clone(), frame_c.clone()],
    );
    for (what, (r, f)) in ["spoofed MAC", "spoofed IP", "truncated"]
        .iter()
        .zip(results.iter().zip([&frame_a, &frame_b, &frame_c]))
    {
        match r {
            Ok(n) => assert_eq!(*n, f.len(), "short send of the {what} frame"),
            Err(e) => panic!("sending the {what} frame failed: {e}"),
        }
    }

    let n_mac = wait_drops(&d, ep_a.port, "spoofed_source_mac", base_mac + 1);
    let n_ip = wait_drops(&d, ep_a.port, "spoofed_source_ip", base_ip + 1);
    let n_bad = wait_drops(&d, ep_a.port, "malformed", base_bad + 1);
    eprintln!(
        "drops on port {}: spoofed_source_mac {base_mac}→{n_mac}, \
         spoofed_source_ip {base_ip}→{n_ip}, malformed {base_bad}→{n_bad}",
        ep_a.port
    );

    // Nothing forged reached B (bounded wait of 2 s).
    std::thread::sleep(Duration::from_secs(2));
    let got = std::fs::read_to_string(&received).unwrap_or_default();
    assert!(
        !got.contains("SPOOFED"),
        "a forged datagram reached {}: {got:?}",
        b.name
    );

    // Control: the same kind of raw frame with the true MAC and IP does get
    // through, so the silence above means something. (Sent last, because
    // `nc -u -l` only listens to the first sender it hears from.)
    let legit = ethernet(
        mac_b,
        mac_a,
        ETH_P_IPV4,
        &ipv4_udp(
            ip(&ep_a.ip),
            ip(&ep_b.ip),
            40003,
            PORT,
            legit_payload.as_bytes(),
        ),
    );
    let results = send_raw(&a, &ep_a.ifname, vec![legit]);
    assert!(results[0].is_ok(), "sending the legit frame: {results:?}");
    let arrived = wait_for(Duration::from_secs(3), || {
        let got = std::fs::read_to_string(&received).unwrap_or_default();
        got.contains(&legit_payload).then_some(got)
    });
    let got = arrived.unwrap_or_else(|| {
        panic!(
            "the legitimate raw datagram did not reach {} within 3 s (got {:?})",
            b.name,
            std::fs::read_to_string(&received).unwrap_or_default()
        )
    });
    assert!(!got.contains("SPOOFED"), "forged datagram arrived: {got:?}");

    // The forged frames were charged to A's port only.
    for ep in [&ep_b, &ep_c] {
        for reason in ["spoofed_source_mac", "spoofed_source_ip"] {
            assert_eq!(
                port_drops(&d, ep.port, reason),
                0,
                "{reason} charged to {}'s port {}",
                ep.name,
                ep.port
            );
        }
    }
}

#[test]
fn spoofed_arp_is_dropped() {
    require_root!();
    const I: u8 = 41;
    let d = Daemon::start();
    create_network(&d, "arp", &subnet(I, 1), &[]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let ep_a = attach(&d, "arp", &a, &[]);
    let ep_b = attach(&d, "arp", &b, &[]);
    let out = a.ping(&ep_b.ip);
    assert!(out.status.success(), "warm-up ping:\n{}", describe(&out));

    // A claims, in a gratuitous ARP reply to B, that B's own address is at
    // A's MAC (ARP sender IP not A's).
    let mac_a = parse_mac(&ep_a.mac);
    let mac_b = parse_mac(&ep_b.mac);
    let mut arp = Vec::new();
    arp.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 2]);
    arp.extend_from_slice(&mac_a);
    arp.extend_from_slice(&ip(&ep_b.ip).octets());
    arp.extend_from_slice(&mac_b);
    arp.extend_from_slice(&ip(&ep_b.ip).octets());
    let base = port_drops(&d, ep_a.port, "spoofed_source_ip");
    let results = send_raw(&a, &ep_a.ifname, vec![ethernet(mac_b, mac_a, 0x0806, &arp)]);
    assert!(results[0].is_ok(), "{results:?}");
    wait_drops(&d, ep_a.port, "spoofed_source_ip", base + 1);
}
