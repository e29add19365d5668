//! DNS over TCP on the gateways (RFC 7766; each message carries a 2-byte
//! length prefix, RFC 1035 §4.2.2).
//!
//! No kernel interface holds a gateway's address, so the TCP connections
//! end inside weft: the datapath hands every TCP segment for a gateway's
//! port 53 (the whole IPv4 packet) to the resolver thread, which passes it
//! here. One thread, "weft-dns-tcp", owns a smoltcp interface of medium IP
//! (no ARP: the segments already are IPv4 packets) that accepts any
//! destination address (`any_ip` with a default route through its own
//! placeholder address), so it answers for every gateway at once without
//! being told their addresses. Each IPv4 packet it emits is wrapped in an
//! Ethernet header from the gateway's MAC to the client's and injected
//! into the client's port; who is where is learned from the incoming
//! segments, keyed by (gateway, client address and port).
//!
//! A connection may carry several queries, pipelined (RFC 7766 §6.2.1.1);
//! answers go back as they are ready, possibly out of order (§7). Local
//! names are answered at once; other names are forwarded upstream on a
//! short-lived thread each (bounded in number), SERVFAIL within the
//! forwarder's deadline if no upstream answers. The server closes a
//! connection when the client has half-closed it and every answer is out,
//! after an idle timeout (§6.2.3, [`IDLE_TIMEOUT`] unless configured), or
//! on a message it drops.
//!
//! Everything is bounded: the queue from the datapath (segments beyond it
//! are dropped, as on a congested link, and TCP retransmits them), the
//! sockets (a few spare listeners, at most [`MAX_SOCKETS`] in all; a SYN
//! that finds no listener is dropped), the sockets one client address may
//! hold ([`MAX_PER_CLIENT`]) and one network may hold ([`MAX_PER_NETWORK`]),
//! so that one endpoint (or one network) holding connections open cannot
//! starve the others (RFC 7766 §6.2.2: servers should limit connections per
//! client); a SYN over either limit is dropped and counted, and the client's
//! TCP tries again later. The queries in flight per connection
//! (beyond it the connection is not read, so TCP's window pushes back),
//! the bytes waiting to be sent, and the learned peers.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use weft_datapath::DnsQuery;
use weft_datapath::Injector;
use weft_dns::{Forwarder, FrameDecoder, NameTable, Outcome, Resolver, ResolverConfig, Transport};
use weft_packet::{ethernet, MacAddr, ETHERTYPE_IPV4, ETH_HEADER_LEN, IP_PROTO_TCP};
use weft_switch::switch::DNS_PORT;
use weft_switch::{NetworkId, PortId};

use super::names::NameTables;

/// Segments waiting for the TCP thread.
const QUEUE: usize = 1024;
/// Most TCP sockets at once (listening or connected).
const MAX_SOCKETS: usize = 256;
/// Most connections (half-open included) from one client address.
const MAX_PER_CLIENT: usize = 8;
/// Most connections to one gateway (one network) at once.
const MAX_PER_NETWORK: usize = 64;
/// Listening sockets kept ready for new connections.
const SPARE_LISTENERS: usize = 4;
/// Receive and send buffers of each socket.
const RX_BUF: usize = 4096;
const TX_BUF: usize = 16 * 1024;
/// Queries of one connection being answered at once.
const MAX_PENDING: usize = 8;
/// Answer bytes one connection may have waiting for its send buffer.
const MAX_OUT: usize = 4 * (2 + 65535);
/// Forwarded TCP queries in flight at once.
const MAX_FORWARDS: usize = 32;
/// A connection with nothing to do is closed after this long, unless the
/// daemon is told otherwise (`weft daemon --dns-tcp-idle-timeout`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection still closing after this long is reset.
const LINGER: Duration = Duration::from_secs(10);
/// Unacknowledged data for this long resets the connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// Clients (gateway, address, port) remembered at once, and for how long
/// after their last segment.
const MAX_PEERS: usize = 4096;
const PEER_IDLE: Duration = Duration::from_secs(120);
/// Packets held between the channel and smoltcp, each way.
const LINK_QUEUE: usize = 256;
/// MTU of the virtual link; segments are further bounded by the client's
/// MSS, which reflects its own MTU.
const MTU: usize = 1500;
/// The interface's own address (RFC 7600's IPv4 dummy address), only the
/// next hop of its default route: with `any_ip`, smoltcp takes a packet
/// for any address routed through one of its own.
const SELF_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);

/// Starts the TCP thread; returns the queue of segments it serves.
pub(super) fn start(
    tables: NameTables,
    forwarder: Arc<Forwarder>,
    injector: Injector,
    idle_timeout: Duration,
) -> io::Result<Sender<DnsQuery>> {
    let (tx, rx) = bounded(QUEUE);
    std::thread::Builder::new()
        .name("weft-dns-tcp".into())
        .spawn(move || Server::new(tables, forwarder, injector, idle_timeout).run(rx))?;
    Ok(tx)
}

/// Where a client is and which network it asks in.
#[derive(Debug, Clone, Copy)]
struct Peer {
    network: NetworkId,
    port: PortId,
    client_mac: MacAddr,
    gateway_mac: MacAddr,
    seen: Instant,
}

/// (gateway, client address and port).
type PeerKey = (Ipv4Addr, SocketAddrV4);

/// An answer computed away from the TCP thread.
struct Answer {
    socket: SocketHandle,
    conn: u64,
    message: Vec<u8>,
}

/// One accepted connection.
struct Conn {
    /// Tells answers of an earlier connection on the same socket apart.
    id: u64,
    network: NetworkId,
    decoder: FrameDecoder,
    /// Framed answers not yet in the socket's send buffer.
    out: Vec<u8>,
    /// Queries being forwarded.
    pending: usize,
    last_active: Instant,
    /// Close once every answer is out.
    finish: bool,
    closing_since: Option<Instant>,
}

/// One socket of the pool.
struct Slot {
    handle: SocketHandle,
    conn: Option<Conn>,
}

struct Server {
    tables: NameTables,
    forwarder: Arc<Forwarder>,
    injector: Injector,
    resolver: Resolver,
    in_flight: Arc<AtomicUsize>,
    answers_tx: Sender<Answer>,
    answers_rx: Receiver<Answer>,
    iface: Interface,
    link: Link,
    sockets: SocketSet<'static>,
    slots: Vec<Slot>,
    peers: HashMap<PeerKey, Peer>,
    epoch: Instant,
    next_conn: u64,
    last_prune: Instant,
    /// SYNs dropped by the per-client and per-network limits.
    refused: u64,
    /// A connection with nothing to do is closed after this long.
    idle_timeout: Duration,
}

impl Server {
    fn new(
        tables: NameTables,
        forwarder: Arc<Forwarder>,
        injector: Injector,
        idle_timeout: Duration,
    ) -> Server {
        let epoch = Instant::now();
        let mut link = Link::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = random_seed();
        let mut iface = Interface::new(config, &mut link, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(SELF_ADDR), 32));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(SELF_ADDR);
        iface.set_any_ip(true);
        let (answers_tx, answers_rx) = bounded(MAX_FORWARDS);
        Server {
            tables,
            forwarder,
            injector,
            resolver: Resolver::new(ResolverConfig::default()),
            in_flight: Arc::new(AtomicUsize::new(0)),
            answers_tx,
            answers_rx,
            iface,
            link,
            sockets: SocketSet::new(Vec::new()),
            slots: Vec::new(),
            peers: HashMap::new(),
            epoch,
            next_conn: 0,
            last_prune: epoch,
            refused: 0,
            idle_timeout,
        }
    }

    /// Serves until the resolver thread drops its end of the queue.
    fn run(mut self, segments: Receiver<DnsQuery>) {
        let _ = self.top_up_listeners();
        let answers = self.answers_rx.clone();
        loop {
            let now = Instant::now();
            while let Ok(q) = segments.try_recv() {
                self.learn(q, now);
            }
            while let Ok(a) = self.answers_rx.try_recv() {
                self.answered(a);
            }
            self.step(now);
            let wait = self.wait();
            select! {
                recv(segments) -> q => match q {
                    Ok(q) => self.learn(q, Instant::now()),
                    Err(_) => return,
                },
                recv(answers) -> a => {
                    if let Ok(a) = a {
                        self.answered(a);
                    }
                }
                default(wait) => {}
            }
        }
    }

    /// How long to sleep when nothing arrives.
    fn wait(&mut self) -> Duration {
        let ts = self.timestamp(Instant::now());
        let cap = if self.slots.iter().any(|s| s.conn.is_some()) {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        match self.iface.poll_delay(ts, &self.sockets) {
            Some(d) => Duration::from_micros(d.total_micros()).min(cap),
            None => cap,
        }
    }

    fn timestamp(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(now.duration_since(self.epoch).as_micros() as i64)
    }

    /// Remembers where a segment came from and queues it for smoltcp.
    fn learn(&mut self, q: DnsQuery, now: Instant) {
        if !q.tcp || self.link.rx.len() >= LINK_QUEUE {
            return;
        }
        let key = (q.gateway, q.client);
        if !self.peers.contains_key(&key) && self.peers.len() >= MAX_PEERS {
            self.prune_peers(now);
            if self.peers.len() >= MAX_PEERS {
                return;
            }
        }
        self.peers.insert(
            key,
            Peer {
                network: q.network,
                port: q.port,
                client_mac: q.client_mac,
                gateway_mac: q.gateway_mac,
                seen: now,
            },
        );
        self.link.rx.push_back(q.message);
    }

    fn prune_peers(&mut self, now: Instant) {
        self.peers
            .retain(|_, p| now.duration_since(p.seen) < PEER_IDLE);
        self.last_prune = now;
    }

    /// A forwarded query's answer is back.
    fn answered(&mut self, a: Answer) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let Some(conn) = self
            .slots
            .iter_mut()
            .find(|s| s.handle == a.socket)
            .and_then(|s| s.conn.as_mut())
            .filter(|c| c.id == a.conn)
        else {
            return;
        };
        conn.pending = conn.pending.saturating_sub(1);
        queue_answer(conn, &a.message);
    }

    /// Feeds smoltcp, serves every connection, sends what smoltcp emits.
    fn step(&mut self, now: Instant) {
        let ts = self.timestamp(now);
        // One segment at a time, with a listener ready for each SYN; at
        // capacity a new SYN is dropped rather than reset, so the client
        // tries again a little later.
        while let Some(syn) = self.link.rx.front().map(|p| is_syn(p)) {
            if syn && !self.within_limits() {
                self.link.rx.pop_front();
                self.refused += 1;
                if self.refused.is_power_of_two() {
                    tracing::info!(
                        refused = self.refused,
                        "DNS over TCP: connections over the per-client or per-network limit dropped"
                    );
                }
                continue;
            }
            if syn && self.top_up_listeners() == 0 {
                self.link.rx.pop_front();
                continue;
            }
            self.iface
                .poll_ingress_single(ts, &mut self.link, &mut self.sockets);
        }
        self.iface.poll(ts, &mut self.link, &mut self.sockets);
        for i in 0..self.slots.len() {
            self.serve_slot(i, now);
        }
        let _ = self.top_up_listeners();
        self.iface.poll(ts, &mut self.link, &mut self.sockets);
        self.flush();
        if now.duration_since(self.last_prune) >= PEER_IDLE / 4 {
            self.prune_peers(now);
        }
    }

    /// Whether the SYN at the front of the queue may have a socket: its
    /// client and its gateway are under [`MAX_PER_CLIENT`] and
    /// [`MAX_PER_NETWORK`].
    fn within_limits(&self) -> bool {
        let Some((client, gateway)) = self.link.rx.front().and_then(|p| syn_ends(p)) else {
            return true;
        };
        let (mut of_client, mut of_network) = (0, 0);
        for slot in &self.slots {
            let socket = self.sockets.get::<tcp::Socket>(slot.handle);
            if matches!(
                socket.state(),
                tcp::State::Listen | tcp::State::Closed | tcp::State::TimeWait
            ) {
                continue;
            }
            let (Some(local), Some(remote)) = (socket.local_endpoint(), socket.remote_endpoint())
            else {
                continue;
            };
            if local.addr == IpAddress::Ipv4(gateway) {
                of_network += 1;
                if remote.addr == IpAddress::Ipv4(client) {
                    of_client += 1;
                }
            }
        }
        of_client < MAX_PER_CLIENT && of_network < MAX_PER_NETWORK
    }

    /// Keeps [`SPARE_LISTENERS`] sockets listening, within [`MAX_SOCKETS`];
    /// returns how many listen.
    fn top_up_listeners(&mut self) -> usize {
        let mut listening = self
            .slots
            .iter()
            .filter(|s| self.sockets.get::<tcp::Socket>(s.handle).is_listening())
            .count();
        while listening < SPARE_LISTENERS && self.slots.len() < MAX_SOCKETS {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; RX_BUF]),
                tcp::SocketBuffer::new(vec![0; TX_BUF]),
            );
            configure(&mut socket);
            if socket.listen(DNS_PORT).is_err() {
                break;
            }
            let handle = self.sockets.add(socket);
            self.slots.push(Slot { handle, conn: None });
            listening += 1;
        }
        listening
    }

    fn serve_slot(&mut self, i: usize, now: Instant) {
        let handle = self.slots[i].handle;
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        match socket.state() {
            tcp::State::Listen | tcp::State::SynReceived => return,
            tcp::State::Closed | tcp::State::TimeWait => {
                // Done (TIME-WAIT too: the client has closed its side and
                // had our last ACK, so the socket is free for a new one).
                socket.abort();
                self.slots[i].conn = None;
                configure(socket);
                let _ = socket.listen(DNS_PORT);
                return;
            }
            _ => {}
        }
        if self.slots[i].conn.is_none() {
            let peer = match (socket.local_endpoint(), socket.remote_endpoint()) {
                (Some(local), Some(remote)) => match (local.addr, remote.addr) {
                    (IpAddress::Ipv4(gw), IpAddress::Ipv4(client)) => self
                        .peers
                        .get(&(gw, SocketAddrV4::new(client, remote.port)))
                        .copied(),
                },
                _ => None,
            };
            let Some(peer) = peer else {
                socket.abort();
                return;
            };
            self.next_conn += 1;
            self.slots[i].conn = Some(Conn {
                id: self.next_conn,
                network: peer.network,
                decoder: FrameDecoder::new(),
                out: Vec::new(),
                pending: 0,
                last_active: now,
                finish: false,
                closing_since: None,
            });
        }
        let Some(conn) = self.slots[i].conn.as_mut() else {
            return;
        };

        // Read queries while there is room for more in flight.
        let mut buf = [0u8; RX_BUF];
        while !conn.finish && conn.pending < MAX_PENDING {
            if let Some(msg) = conn.decoder.next_message() {
                conn.last_active = now;
                let ctx = Ctx {
                    tables: &self.tables,
                    resolver: &self.resolver,
                    forwarder: &self.forwarder,
                    in_flight: &self.in_flight,
                    answers: &self.answers_tx,
                };
                ctx.query(handle, conn, msg);
                continue;
            }
            if !socket.can_recv() || conn.decoder.buffered() > 2 + 65535 {
                break;
            }
            match socket.recv_slice(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    conn.decoder.push(&buf[..n]);
                    conn.last_active = now;
                }
            }
        }

        // Write answers.
        if !conn.out.is_empty() && socket.can_send() {
            if let Ok(n) = socket.send_slice(&conn.out) {
                conn.out.drain(..n);
                conn.last_active = now;
            }
        }
        if conn.out.len() > MAX_OUT {
            socket.abort();
            self.slots[i].conn = None;
            return;
        }

        // Close when the client is done, on a dropped message, or idle.
        let idle = conn.pending == 0 && conn.out.is_empty() && socket.send_queue() == 0;
        if let Some(since) = conn.closing_since {
            if now.duration_since(since) >= LINGER {
                socket.abort();
            }
        } else if idle
            && (conn.finish
                || !socket.may_recv()
                || now.duration_since(conn.last_active) >= self.idle_timeout)
        {
            socket.close();
            conn.closing_since = Some(now);
        }
    }

    /// Wraps each IPv4 packet smoltcp emitted in Ethernet and sends it to
    /// the client's port.
    fn flush(&mut self) {
        for packet in self.link.tx.drain(..) {
            let Some(key) = packet_key(&packet) else {
                continue;
            };
            let Some(peer) = self.peers.get(&key) else {
                continue;
            };
            let mut frame = vec![0u8; ETH_HEADER_LEN + packet.len()];
            peer.client_mac.write(&mut frame, ethernet::DST);
            peer.gateway_mac.write(&mut frame, ethernet::SRC);
            frame[ethernet::ETHERTYPE..ETH_HEADER_LEN]
                .copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            frame[ETH_HEADER_LEN..].copy_from_slice(&packet);
            self.injector.send(peer.port, frame);
        }
    }
}

/// What answering one query needs, borrowed apart from the socket set.
struct Ctx<'a> {
    tables: &'a NameTables,
    resolver: &'a Resolver,
    forwarder: &'a Arc<Forwarder>,
    in_flight: &'a Arc<AtomicUsize>,
    answers: &'a Sender<Answer>,
}

impl Ctx<'_> {
    /// Answers `msg` now or hands it to a forwarding thread.
    fn query(&self, socket: SocketHandle, conn: &mut Conn, msg: Vec<u8>) {
        let outcome = {
            let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
            let empty = NameTable::new();
            let table = tables.get(&conn.network).unwrap_or(&empty);
            self.resolver.resolve(table, &msg, Transport::Tcp)
        };
        match outcome {
            Outcome::Reply(answer) => queue_answer(conn, &answer),
            Outcome::Drop => conn.finish = true,
            Outcome::Forward(parsed) => {
                let servfail =
                    || weft_dns::wire::rcode_response(&parsed, weft_dns::Rcode::ServFail, false);
                if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_FORWARDS {
                    self.in_flight.fetch_sub(1, Ordering::Relaxed);
                    queue_answer(conn, &servfail());
                    return;
                }
                let (fwd, answers, id) =
                    (Arc::clone(self.forwarder), self.answers.clone(), conn.id);
                let query = parsed.clone();
                let spawned = std::thread::Builder::new()
                    .name("weft-dns-tcp-fwd".into())
                    .spawn(move || {
                        // RFC 7766 §5: what came over TCP goes on over TCP.
                        let message = fwd.forward_over(weft_dns::Upstream::Tcp, &query, &msg);
                        // Never blocks: one slot per forward in flight.
                        let _ = answers.try_send(Answer {
                            socket,
                            conn: id,
                            message,
                        });
                    });
                match spawned {
                    Ok(_) => conn.pending += 1,
                    Err(_) => {
                        self.in_flight.fetch_sub(1, Ordering::Relaxed);
                        queue_answer(conn, &servfail());
                    }
                }
            }
        }
    }
}

/// Appends `answer`, length-prefixed, to what `conn` sends.
fn queue_answer(conn: &mut Conn, answer: &[u8]) {
    if weft_dns::tcp::write_frame(answer, &mut conn.out).is_err() {
        conn.finish = true;
    }
}

fn configure(socket: &mut tcp::Socket) {
    socket.set_timeout(Some(smoltcp::time::Duration::from_millis(
        ACK_TIMEOUT.as_millis() as u64,
    )));
    socket.set_ack_delay(None);
    socket.set_nagle_enabled(false);
}

/// (source, destination address and port) of an IPv4 TCP packet.
fn packet_key(p: &[u8]) -> Option<PeerKey> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    if p.first()? >> 4 != 4 || *p.get(9)? != IP_PROTO_TCP || ihl < 20 {
        return None;
    }
    let ip = |at: usize| {
        p.get(at..at + 4)
            .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    let port = p.get(ihl + 2..ihl + 4)?;
    let port = u16::from_be_bytes([port[0], port[1]]);
    Some((ip(12)?, SocketAddrV4::new(ip(16)?, port)))
}

/// (client, gateway) addresses of an incoming IPv4 packet.
fn syn_ends(p: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let ip = |at: usize| {
        p.get(at..at + 4)
            .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    Some((ip(12)?, ip(16)?))
}

/// Whether an IPv4 TCP packet opens a connection (SYN without ACK).
fn is_syn(p: &[u8]) -> bool {
    let ihl = usize::from(p.first().map_or(0, |b| b & 0x0f)) * 4;
    p.get(ihl + 13).is_some_and(|flags| flags & 0x12 == 0x02)
}

/// A seed for smoltcp's initial sequence numbers; need not be strong.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15
}

/// The virtual link between the channel and smoltcp: IPv4 packets in,
/// IPv4 packets out.
#[derive(Default)]
struct Link {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct RxToken(Vec<u8>);

struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut packet = vec![0u8; len];
        let r = f(&mut packet);
        self.0.push(packet);
        r
    }
}

impl phy::Device for Link {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        (self.tx.len() < LINK_QUEUE).then_some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = None;
        // TAPs with checksum offload hand weft segments whose TCP checksum
        // is only partial; they come from a local kernel, so verifying
        // them would only reject good segments. Outgoing ones are complete.
        let mut checksum = ChecksumCapabilities::default();
        checksum.tcp = Checksum::Tx;
        caps.checksum = checksum;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_key_reads_tcp_endpoints() {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = IP_PROTO_TCP;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 7]);
        p[20..22].copy_from_slice(&53u16.to_be_bytes());
        p[22..24].copy_from_slice(&40000u16.to_be_bytes());
        assert_eq!(
            packet_key(&p),
            Some((
                Ipv4Addr::new(10, 0, 0, 1),
                SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 7), 40000)
            ))
        );
        p[9] = 17;
        assert_eq!(packet_key(&p), None);
        assert_eq!(packet_key(&p[..10]), None);
    }
}
