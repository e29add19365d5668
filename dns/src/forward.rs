//! Blocking forwarding of non-local queries to upstream servers, over UDP
//! or, for queries that came over TCP, over TCP ([`Upstream`]).
//!
//! [`Forwarder::forward`] sends the client's query to each upstream in
//! turn within one overall deadline (default [`Forwarder::DEFAULT_TIMEOUT`],
//! 2 s). The time left is split evenly among the upstreams not yet tried,
//! so a dead first server cannot starve the others, and a single dead
//! server costs the whole deadline. When no usable answer arrives in time
//! the client gets SERVFAIL rather than silence (RFC 8906 §3: a server
//! should always respond, and SERVFAIL is the answer for a failed
//! upstream).
//!
//! Each attempt uses a fresh UDP socket on an ephemeral port, connected to
//! the upstream (so the kernel drops datagrams from other sources and an
//! ICMP port unreachable fails the attempt at once), and a fresh
//! transaction ID. A reply is accepted only if its ID matches, QR is set
//! and its question equals the query's (name case-insensitively); other
//! datagrams are ignored and the wait goes on. The accepted reply is
//! relayed verbatim except that the client's ID is restored. A SERVFAIL,
//! REFUSED or NOTIMP reply makes the forwarder try the next upstream; it
//! is relayed only if nothing better arrives. A truncated (TC) reply is
//! relayed as is, and the client retries over TCP.
//!
//! Over TCP (RFC 7766 §5: a query that came over TCP goes on over TCP, so a
//! large answer is not truncated on the way), each attempt opens a
//! connection to the upstream within its share of the deadline, sends the
//! query with its two-byte length prefix (RFC 1035 §4.2.2) and reads
//! length-prefixed messages until the matching reply.
//!
//! # Upstreams from resolv.conf
//!
//! [`parse_resolv_conf`] reads `nameserver` lines. Loopback entries such
//! as systemd-resolved's `127.0.0.53` are **kept**: containers cannot reach
//! the host's loopback, but this forwarder runs in the weft daemon on the
//! host side, where they work.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::wire::{
    parse_header_and_question, rcode_response, Query, Rcode, HEADER_LEN, MAX_TCP_LEN,
};

/// Why forwarding produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The upstream list is empty.
    #[error("no upstream DNS servers configured")]
    NoUpstreams,
    /// The raw query is shorter than a DNS header.
    #[error("query too short to forward")]
    ShortQuery,
    /// No upstream gave a matching reply before the deadline.
    #[error("no reply from {tried} upstream server(s) within {timeout:?}")]
    NoReply {
        /// How many upstreams were tried.
        tried: usize,
        /// The overall deadline.
        timeout: Duration,
    },
}

/// How queries travel to the upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// One datagram each way.
    Udp,
    /// A connection per attempt, length-prefixed messages.
    Tcp,
}

/// Relays queries to a list of upstream servers. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    /// The default overall deadline for one forwarded query.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// A forwarder to `upstreams`, tried in order, with the default deadline.
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder {
            upstreams,
            timeout: Forwarder::DEFAULT_TIMEOUT,
        }
    }

    /// A forwarder to the `nameserver`s of resolv.conf text.
    pub fn from_resolv_conf(text: &str) -> Forwarder {
        Forwarder::new(parse_resolv_conf(text))
    }

    /// Replaces the overall deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Forwarder {
        self.timeout = timeout;
        self
    }

    /// The upstream servers, in the order they are tried.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The overall deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Forwards `raw` (the client's query bytes, parsed as `query`) and
    /// returns the response for the client: an upstream's reply with the
    /// client's ID, or SERVFAIL if there is none within the deadline.
    pub fn forward(&self, query: &Query, raw: &[u8]) -> Vec<u8> {
        self.forward_over(Upstream::Udp, query, raw)
    }

    /// [`forward`](Self::forward) over `transport`.
    pub fn forward_over(&self, transport: Upstream, query: &Query, raw: &[u8]) -> Vec<u8> {
        self.try_forward_over(transport, query, raw)
            .unwrap_or_else(|_| rcode_response(query, Rcode::ServFail, false))
    }

    /// Like [`Forwarder::forward`] but reports failure instead of building
    /// SERVFAIL. Blocks for at most the deadline (plus scheduling slack).
    pub fn try_forward(&self, query: &Query, raw: &[u8]) -> Result<Vec<u8>, ForwardError> {
        self.try_forward_over(Upstream::Udp, query, raw)
    }

    /// [`try_forward`](Self::try_forward) over `transport`.
    pub fn try_forward_over(
        &self,
        transport: Upstream,
        query: &Query,
        raw: &[u8],
    ) -> Result<Vec<u8>, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        if raw.len() < HEADER_LEN {
            return Err(ForwardError::ShortQuery);
        }
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; MAX_TCP_LEN];
        let mut fallback = None;
        let mut tried = 0;
        let n = self.upstreams.len();
        for (i, &upstream) in self.upstreams.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let left = (n - i) as u32;
            let attempt_deadline = now + (deadline - now) / left;
            tried += 1;
            let answer = match transport {
                Upstream::Udp => ask(upstream, query, raw, attempt_deadline, &mut buf),
                Upstream::Tcp => ask_tcp(upstream, query, raw, attempt_deadline),
            };
            let Ok(Some(mut reply)) = answer else {
                continue;
            };
            reply[..2].copy_from_slice(&query.header.id.to_be_bytes());
            let rcode = Rcode::from_header(reply[3] & 0x0f);
            if matches!(
                rcode,
                Some(Rcode::ServFail | Rcode::Refused | Rcode::NotImp)
            ) {
                fallback = Some(reply);
                continue;
            }
            return Ok(reply);
        }
        fallback.ok_or(ForwardError::NoReply {
            tried,
            timeout: self.timeout,
        })
    }
}

/// One attempt against one upstream. `Ok(None)`: nothing matching arrived
/// before `deadline`.
fn ask(
    upstream: SocketAddr,
    query: &Query,
    raw: &[u8],
    deadline: Instant,
    buf: &mut [u8],
) -> io::Result<Option<Vec<u8>>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(upstream)?;
    let id = random_id();
    let mut out = raw.to_vec();
    out[..2].copy_from_slice(&id.to_be_bytes());
    sock.send(&out)?;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        sock.set_read_timeout(Some(deadline - now))?;
        let len = match sock.recv(buf) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let reply = &buf[..len];
        if reply_matches(reply, id, query) {
            return Ok(Some(reply.to_vec()));
        }
    }
}

/// One attempt over TCP. `Ok(None)`: no matching reply before `deadline`.
fn ask_tcp(
    upstream: SocketAddr,
    query: &Query,
    raw: &[u8],
    deadline: Instant,
) -> io::Result<Option<Vec<u8>>> {
    let timed_out = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
    };
    let left = |deadline: Instant| deadline.saturating_duration_since(Instant::now());
    if left(deadline).is_zero() {
        return Ok(None);
    }
    let mut stream = match TcpStream::connect_timeout(&upstream, left(deadline)) {
        Ok(s) => s,
        Err(e) if timed_out(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let id = random_id();
    let Ok(len) = u16::try_from(raw.len()) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(raw.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(raw);
    out[2..4].copy_from_slice(&id.to_be_bytes());
    stream.set_write_timeout(Some(left(deadline).max(Duration::from_millis(1))))?;
    match stream.write_all(&out) {
        Ok(()) => {}
        Err(e) if timed_out(&e) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut len = [0u8; 2];
    loop {
        let wait = left(deadline);
        if wait.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(wait))?;
        let read = stream.read_exact(&mut len).and_then(|()| {
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut msg).map(|()| msg)
        });
        match read {
            Ok(msg) if reply_matches(&msg, id, query) => return Ok(Some(msg)),
            Ok(_) => continue,
            Err(e) if timed_out(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Whether `reply` answers the query sent with transaction ID `id`.
fn reply_matches(reply: &[u8], id: u16, query: &Query) -> bool {
    let Ok((header, question)) = parse_header_and_question(reply) else {
        return false;
    };
    if header.id != id || !header.qr() || header.opcode() != query.header.opcode() {
        return false;
    }
    match question {
        Some(q) => q == query.question,
        // Some servers omit the question in error replies; accept those
        // only as errors (they end up as the fallback at most).
        None => matches!(
            Rcode::from_header(header.rcode()),
            Some(Rcode::FormErr | Rcode::ServFail | Rcode::NotImp | Rcode::Refused)
        ),
    }
}

/// A transaction ID that is hard to guess (RFC 5452 §9.2). Not
/// cryptographic, but keyed by std's per-process random hasher keys; the
/// kernel-chosen ephemeral source port adds further entropy.
fn random_id() -> u16 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.finish() as u16
}

/// The upstream servers named by resolv.conf text, port 53, in order,
/// without duplicates.
///
/// Reads `nameserver ADDRESS` lines; `#` and `;` start comments. IPv6
/// addresses may carry a numeric zone (`fe80::1%2`); entries with a named
/// zone (`%eth0`) or that do not parse are skipped. Loopback addresses are
/// kept (see the module docs).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(parse_server) else {
            continue;
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

fn parse_server(word: &str) -> Option<SocketAddr> {
    if let Some((ip, zone)) = word.split_once('%') {
        let ip: Ipv6Addr = ip.parse().ok()?;
        let scope: u32 = zone.parse().ok()?;
        return Some(SocketAddrV6::new(ip, 53, 0, scope).into());
    }
    let ip: IpAddr = word.parse().ok()?;
    Some(SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let text = "\
# generated
search example.org
nameserver 127.0.0.53
nameserver 192.0.2.1 # primary
nameserver   2001:db8::1
nameserver fe80::1%2
nameserver fe80::1%eth0
nameserver bogus
;nameserver 192.0.2.9
nameserver 192.0.2.1
options edns0 trust-ad
";
        let got = parse_resolv_conf(text);
        let want: Vec<SocketAddr> = vec![
            "127.0.0.53:53".parse().unwrap(),
            "192.0.2.1:53".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap(),
            SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 2).into(),
        ];
        assert_eq!(got, want);
        assert_eq!(Forwarder::from_resolv_conf(text).upstreams(), &want[..]);
    }

    #[test]
    fn ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..64).map(|_| random_id()).collect();
        assert!(ids.len() > 32);
    }
}
