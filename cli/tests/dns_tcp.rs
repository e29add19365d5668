//! DNS over TCP to a network's gateway (RFC 7766; 2-byte length prefix,
//! RFC 1035 §4.2.2), served inside weft since no kernel interface holds
//! the gateway's address; and the UDP path beside it.
//!
//! Subnets: 10.95.0.0/24 (see the index table in `common`).

mod common;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

const I: u8 = 95;
const TYPE_A: u16 = 1;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `f` on a thread that has joined the namespace at `path` (setns
/// changes only the calling thread, which ends right after).
fn spawn_in<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> JoinHandle<io::Result<T>> {
    spawn_in_netns(path, f)
}

fn in_netns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    spawn_in(ns.path(), f)
        .join()
        .expect("namespace thread panicked")
}

/// A query (RD set) for `name`, type A, class IN.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&TYPE_A.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut f = (msg.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    f
}

/// RCODE, ANCOUNT and the A records of a reply.
#[derive(Debug)]
struct Reply {
    id: u16,
    rcode: u8,
    ancount: u16,
    a: Vec<Ipv4Addr>,
}

/// Skips a (possibly compressed) name; the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)? as usize;
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        at += 1 + len;
        if len == 0 {
            return Some(at);
        }
    }
}

fn parse(msg: &[u8]) -> Result<Reply, String> {
    let be = |at: usize| {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| format!("truncated reply: {msg:?}"))
    };
    let flags = be(2)?;
    if flags & 0x8000 == 0 {
        return Err(format!("QR not set: {msg:?}"));
    }
    let mut reply = Reply {
        id: be(0)?,
        rcode: (flags & 0xf) as u8,
        ancount: be(6)?,
        a: Vec::new(),
    };
    let mut at = 12;
    for _ in 0..be(4)? {
        at = skip_name(msg, at).ok_or("bad question")? + 4;
    }
    for _ in 0..reply.ancount {
        at = skip_name(msg, at).ok_or("bad answer")?;
        let (rtype, rdlen) = (be(at)?, be(at + 8)? as usize);
        let data = msg.get(at + 10..at + 10 + rdlen).ok_or("truncated rdata")?;
        if rtype == TYPE_A && rdlen == 4 {
            reply
                .a
                .push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + rdlen;
    }
    Ok(reply)
}

/// Reads one length-prefixed message.
fn read_msg(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg)?;
    Ok(msg)
}

fn connect(server: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&server, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// One query on a connection of its own; the reply and how long it took.
fn ask_tcp(
    ns: &Netns,
    server: SocketAddr,
    id: u16,
    name: &str,
) -> (Result<Reply, String>, Duration) {
    let q = framed(&query(id, name));
    in_netns(ns, move || {
        let t = Instant::now();
        let mut s = connect(server)?;
        s.write_all(&q)?;
        let msg = read_msg(&mut s)?;
        Ok((parse(&msg), t.elapsed()))
    })
    .unwrap_or_else(|e| (Err(format!("TCP: {e}")), Duration::ZERO))
}

fn ask_udp(ns: &Netns, server: SocketAddr, id: u16, name: &str) -> Result<Reply, String> {
    let q = query(id, name);
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(server)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.send(&q)?;
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf)?;
        Ok(parse(&buf[..n]))
    })
    .unwrap_or_else(|e| Err(format!("UDP: {e}")))
}

fn resolves(reply: &Result<Reply, String>, id: u16, ip: &str) -> bool {
    matches!(reply, Ok(r) if r.id == id && r.rcode == 0 && r.ancount >= 1
        && r.a.iter().any(|a| a.to_string() == ip))
}

#[test]
fn dns_over_tcp() {
    require_root!();
    let daemon = Daemon::start_with(&["--dns-upstream", "127.0.0.1:9"]);
    create_network(&daemon, "n", &subnet(I, 0), &[]);
    let web1_ns = Netns::new("web1");
    let db1_ns = Netns::new("db1");
    let web1 = attach(
        &daemon,
        "n",
        &web1_ns,
        &["--name", "web1", "--alias", "www"],
    );
    let db1 = attach(&daemon, "n", &db1_ns, &["--name", "db1"]);
    let gw: SocketAddr = format!("{}:53", addr(I, 0, 1)).parse().unwrap();

    // One query, one connection.
    let (r, _) = ask_tcp(&web1_ns, gw, 0x1001, "db1");
    assert!(resolves(&r, 0x1001, &db1.ip), "db1 over TCP: {r:?}");
    let (r, _) = ask_tcp(&db1_ns, gw, 0x1002, "www");
    assert!(resolves(&r, 0x1002, &web1.ip), "www over TCP: {r:?}");

    // Two pipelined queries on one connection, the first one's length
    // prefix split across segments; then the client half-closes and still
    // gets both answers, then the server's FIN.
    let (q1, q2) = (framed(&query(0x2001, "db1")), framed(&query(0x2002, "www")));
    let out = in_netns(&web1_ns, move || {
        let mut s = connect(gw)?;
        s.set_nodelay(true)?;
        s.write_all(&q1[..1])?;
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(&q1[1..])?;
        s.write_all(&q2)?;
        s.shutdown(Shutdown::Write)?;
        let a = read_msg(&mut s)?;
        let b = read_msg(&mut s)?;
        let mut rest = Vec::new();
        let eof = s.read_to_end(&mut rest).map(|_| rest.is_empty());
        Ok((parse(&a), parse(&b), eof))
    });
    let (a, b, eof) = out.unwrap_or_else(|e| panic!("pipelined queries: {e}"));
    let mut answers = [a, b];
    answers.sort_by_key(|r| r.as_ref().map(|r| r.id).unwrap_or(0));
    assert!(
        resolves(&answers[0], 0x2001, &db1.ip),
        "pipelined db1: {answers:?}"
    );
    assert!(
        resolves(&answers[1], 0x2002, &web1.ip),
        "pipelined www: {answers:?}"
    );
    assert!(
        matches!(eof, Ok(true)),
        "server did not close after the answers: {eof:?}"
    );

    // A name nobody knows, with a dead upstream: SERVFAIL within 2.5 s.
    let (r, took) = ask_tcp(&web1_ns, gw, 0x3001, "nosuch.example");
    assert!(
        matches!(&r, Ok(rep) if rep.id == 0x3001 && rep.rcode == 2),
        "expected SERVFAIL: {r:?}"
    );
    assert!(
        took <= Duration::from_millis(2500),
        "SERVFAIL took {took:?}"
    );

    // Many connections, one after another and several at once: more than
    // the spare listeners, so closed sockets must listen again.
    for k in 0..24u16 {
        let (r, _) = ask_tcp(&web1_ns, gw, 0x4000 + k, "db1");
        assert!(resolves(&r, 0x4000 + k, &db1.ip), "connection {k}: {r:?}");
    }
    let workers: Vec<_> = (0..16u16)
        .map(|k| {
            let q = framed(&query(0x5000 + k, "www"));
            spawn_in(db1_ns.path(), move || {
                let mut s = connect(gw)?;
                s.write_all(&q)?;
                Ok(parse(&read_msg(&mut s)?))
            })
        })
        .collect();
    for (k, w) in workers.into_iter().enumerate() {
        let r = w
            .join()
            .expect("client thread panicked")
            .unwrap_or_else(|e| Err(format!("TCP: {e}")));
        assert!(
            resolves(&r, 0x5000 + k as u16, &web1.ip),
            "concurrent connection {k}: {r:?}"
        );
    }

    // A message the resolver drops (here an empty one) ends the
    // connection.
    let eof = in_netns(&web1_ns, move || {
        let mut s = connect(gw)?;
        s.write_all(&[0, 0])?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)?;
        Ok(rest)
    });
    assert!(
        matches!(&eof, Ok(rest) if rest.is_empty()),
        "empty message: {eof:?}"
    );

    // The UDP path still works.
    let r = ask_udp(&web1_ns, gw, 0x6001, "db1");
    assert!(resolves(&r, 0x6001, &db1.ip), "db1 over UDP: {r:?}");
}
