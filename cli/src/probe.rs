//! ICMP echo (RFC 792) sent from inside a network namespace, so that
//! `weft demo` needs no `ping` binary on a fresh machine.
//!
//! A raw ICMP socket is opened on a thread that joined the namespace; it
//! receives the IPv4 header with every ICMP message, which gives the reply's
//! TTL, and ICMP errors quoting our request tell why a destination is not
//! reachable.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use weft_os::netns::run_in_netns;
use weft_packet::checksum::checksum;

/// What came back for one echo request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Echo {
    Reply {
        from: Ipv4Addr,
        ttl: u8,
        rtt: Duration,
    },
    /// An ICMP error about the request (type, code), from a router.
    Error {
        from: Ipv4Addr,
        ty: u8,
        code: u8,
    },
    Timeout,
}

impl Echo {
    /// The line `ping` would print for it.
    pub fn describe(&self, seq: u16, dst: Ipv4Addr) -> String {
        match self {
            Echo::Reply { from, ttl, rtt } => format!(
                "64 bytes from {from}: icmp_seq={seq} ttl={ttl} time={:.2} ms",
                rtt.as_secs_f64() * 1000.0
            ),
            Echo::Error { from, ty, code } => {
                format!("From {from} icmp_seq={seq} {}", error_text(*ty, *code))
            }
            Echo::Timeout => format!("no answer from {dst} for icmp_seq={seq}"),
        }
    }
}

fn error_text(ty: u8, code: u8) -> &'static str {
    match (ty, code) {
        (3, 0) => "Destination Net Unreachable",
        (3, 1) => "Destination Host Unreachable",
        (3, 3) => "Destination Port Unreachable",
        (3, 4) => "Frag needed and DF set",
        (3, 13) => "Packet filtered",
        (3, _) => "Destination Unreachable",
        (11, _) => "Time to live exceeded",
        _ => "ICMP error",
    }
}

/// Payload bytes after the 8-byte ICMP header (as `ping` sends).
const PAYLOAD: usize = 56;

/// Sends `count` echo requests to `dst` from inside the namespace at
/// `netns`, one at a time, waiting up to `timeout` for each answer.
pub fn ping(netns: &Path, dst: Ipv4Addr, count: u16, timeout: Duration) -> io::Result<Vec<Echo>> {
    let ident = (std::process::id() as u16) ^ 0x5eed;
    run_in_netns(netns, move || {
        echo_in_current_netns(dst, ident, count, timeout)
    })
    .map_err(|e| io::Error::other(e.to_string()))?
}

fn echo_in_current_netns(
    dst: Ipv4Addr,
    ident: u16,
    count: u16,
    timeout: Duration,
) -> io::Result<Vec<Echo>> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let to = SockAddr::from(SocketAddrV4::new(dst, 0));
    let mut results = Vec::with_capacity(usize::from(count));
    for seq in 1..=count {
        let mut request = [0u8; 8 + PAYLOAD];
        request[0] = 8;
        request[4..6].copy_from_slice(&ident.to_be_bytes());
        request[6..8].copy_from_slice(&seq.to_be_bytes());
        for (i, b) in request[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let sum = checksum(&request);
        request[2..4].copy_from_slice(&sum.to_be_bytes());
        let sent_at = Instant::now();
        sock.send_to(&request, &to)?;
        results.push(wait_answer(&sock, ident, seq, sent_at, timeout)?);
    }
    Ok(results)
}

/// Reads until the reply or an error about request `seq` arrives.
fn wait_answer(
    sock: &Socket,
    ident: u16,
    seq: u16,
    sent_at: Instant,
    timeout: Duration,
) -> io::Result<Echo> {
    let mut buf = [0u8; 1500];
    while sent_at.elapsed() < timeout {
        let n = match (&*sock).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        if let Some(answer) = parse_answer(&buf[..n], ident, seq, sent_at) {
            return Ok(answer);
        }
    }
    Ok(Echo::Timeout)
}

/// Recognises our echo reply, or an ICMP error quoting our request.
fn parse_answer(packet: &[u8], ident: u16, seq: u16, sent_at: Instant) -> Option<Echo> {
    let hl = usize::from(packet.first()? & 0x0f) * 4;
    let ttl = *packet.get(8)?;
    let from = Ipv4Addr::new(
        *packet.get(12)?,
        *packet.get(13)?,
        *packet.get(14)?,
        *packet.get(15)?,
    );
    let icmp = packet.get(hl..)?;
    let (ty, code) = (*icmp.first()?, *icmp.get(1)?);
    let ours =
        |h: &[u8]| h.get(4..8) == Some(&[ident.to_be_bytes(), seq.to_be_bytes()].concat()[..]);
    match ty {
        0 if ours(icmp) => Some(Echo::Reply {
            from,
            ttl,
            rtt: sent_at.elapsed(),
        }),
        3 | 11 => {
            let quoted = icmp.get(8..)?;
            let qhl = usize::from(quoted.first()? & 0x0f) * 4;
            let q_icmp = quoted.get(qhl..)?;
            (q_icmp.first() == Some(&8) && ours(q_icmp)).then_some(Echo::Error { from, ty, code })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(ident: u16, seq: u16, ttl: u8) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 84, 0, 0, 0, 0, ttl, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(&ident.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p
    }

    #[test]
    fn recognises_our_reply_and_ignores_others() {
        let t = Instant::now();
        assert!(matches!(
            parse_answer(&reply(7, 1, 63), 7, 1, t),
            Some(Echo::Reply { ttl: 63, .. })
        ));
        assert_eq!(parse_answer(&reply(8, 1, 63), 7, 1, t), None);
        assert_eq!(parse_answer(&reply(7, 2, 63), 7, 1, t), None);
        assert_eq!(parse_answer(&[0x45], 7, 1, t), None);
    }

    #[test]
    fn recognises_an_error_quoting_our_request() {
        let mut request = vec![
            0x45, 0, 0, 84, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 9, 0, 2,
        ];
        request.extend_from_slice(&[8, 0, 0, 0]);
        request.extend_from_slice(&7u16.to_be_bytes());
        request.extend_from_slice(&1u16.to_be_bytes());
        let mut error = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 254, 10, 0, 0, 1,
        ];
        error.extend_from_slice(&[3, 13, 0, 0, 0, 0, 0, 0]);
        error.extend_from_slice(&request);
        let answer = parse_answer(&error, 7, 1, Instant::now());
        assert_eq!(
            answer,
            Some(Echo::Error {
                from: Ipv4Addr::new(10, 0, 0, 254),
                ty: 3,
                code: 13
            })
        );
        assert!(answer
            .unwrap()
            .describe(1, Ipv4Addr::LOCALHOST)
            .contains("Packet filtered"));
    }
}
