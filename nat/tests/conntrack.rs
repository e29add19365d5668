//! Connection tracking behaviour with synthetic time.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

use weft_nat::conntrack::tcp_flags::{ACK, FIN, RST, SYN};
use weft_nat::conntrack::{
    Conntrack, ConntrackConfig, ConntrackError, Direction, FlowState, NatSpec, TcpState, Timeouts,
    Timestamp,
};
use weft_nat::{FlowKey, PortAllocError, PortRange, Protocol, Rewrite};

const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

fn host(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 17, 0, n)
}

fn key(proto: Protocol, src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> FlowKey {
    FlowKey::new(
        proto,
        SocketAddrV4::new(src, sp),
        SocketAddrV4::new(dst, dp),
    )
}

fn masq() -> NatSpec {
    NatSpec {
        snat: Some(UPLINK),
        dnat: None,
        ..NatSpec::default()
    }
}

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn ms(millis: u64) -> Timestamp {
    Timestamp::from_nanos(millis * 1_000_000)
}

fn state(ct: &Conntrack, k: &FlowKey, now: Timestamp) -> Option<FlowState> {
    ct.get(k, now).map(|f| f.state)
}

#[test]
fn snat_flow_is_found_from_both_directions() {
    let mut ct = Conntrack::default();
    let k = key(Protocol::Udp, host(2), 40000, REMOTE, 53);
    let hit = ct.track_or_create(&k, masq(), 60, 0, t(0)).unwrap();
    assert_eq!(hit.direction, Direction::Original);
    // Port preserved.
    let ext = SocketAddrV4::new(UPLINK, 40000);
    assert_eq!(hit.reply, FlowKey::new(Protocol::Udp, k.dst, ext));
    assert_eq!(
        hit.rewrite,
        Rewrite {
            src: Some(ext),
            dst: None
        }
    );
    let back = ct.track(&hit.reply, 90, 0, t(1)).unwrap();
    assert_eq!(back.direction, Direction::Reply);
    assert_eq!(
        back.rewrite,
        Rewrite {
            src: None,
            dst: Some(k.src)
        }
    );
    assert_eq!(back.rewrite.apply_to(&hit.reply), k.reversed());
    let info = ct.get(&k, t(1)).unwrap();
    assert_eq!(info.translated(), FlowKey::new(Protocol::Udp, ext, k.dst));
    assert_eq!(
        (info.orig_counters.packets, info.orig_counters.bytes),
        (1, 60)
    );
    assert_eq!(
        (info.reply_counters.packets, info.reply_counters.bytes),
        (1, 90)
    );
    assert_eq!(info.state, FlowState::Udp { assured: true });
    assert_eq!(ct.get(&hit.reply, t(1)), Some(info));
    // Unrelated tuple: nothing.
    assert!(ct.track(&k.reversed(), 1, 0, t(1)).is_none());
    assert_eq!(ct.len(), 1);
}

#[test]
fn dnat_flow_rewrites_destination_and_reply_source() {
    let mut ct = Conntrack::default();
    let published = SocketAddrV4::new(UPLINK, 8080);
    let server = SocketAddrV4::new(host(5), 80);
    let k = FlowKey::new(Protocol::Tcp, SocketAddrV4::new(REMOTE, 51000), published);
    let nat = NatSpec {
        snat: None,
        dnat: Some(server),
        ..NatSpec::default()
    };
    let hit = ct.track_or_create(&k, nat, 60, SYN, t(0)).unwrap();
    assert_eq!(
        hit.rewrite,
        Rewrite {
            src: None,
            dst: Some(server)
        }
    );
    assert_eq!(hit.reply, FlowKey::new(Protocol::Tcp, server, k.src));
    let back = ct.track(&hit.reply, 60, SYN | ACK, t(0)).unwrap();
    assert_eq!(
        back.rewrite,
        Rewrite {
            src: Some(published),
            dst: None
        }
    );
    assert_eq!(back.state, FlowState::Tcp(TcpState::SynRecv));
    assert_eq!(ct.ports().in_use(Protocol::Tcp, UPLINK), 0);
}

#[test]
fn untranslated_flow_has_identity_rewrite() {
    let mut ct = Conntrack::default();
    let k = key(Protocol::Udp, host(2), 1, host(3), 2);
    let hit = ct
        .track_or_create(&k, NatSpec::default(), 1, 0, t(0))
        .unwrap();
    assert!(hit.rewrite.is_identity());
    assert_eq!(hit.reply, k.reversed());
    assert!(ct
        .track(&k.reversed(), 1, 0, t(0))
        .unwrap()
        .rewrite
        .is_identity());
}

#[test]
fn icmp_echo_identifier_is_allocated_and_mapped() {
    let mut ct = Conntrack::new(ConntrackConfig {
        port_range: PortRange::new(1000, 1999).unwrap(),
        ..Default::default()
    });
    let k = key(Protocol::Icmp, host(2), 7, REMOTE, 7);
    let hit = ct.track_or_create(&k, masq(), 84, 0, t(0)).unwrap();
    let id = hit.reply.dst.port();
    assert!((1000..=1999).contains(&id));
    assert_eq!(hit.reply.src.port(), id, "both ports carry the identifier");
    assert_eq!(hit.rewrite.src, Some(SocketAddrV4::new(UPLINK, id)));
    let back = ct.track(&hit.reply, 84, 0, t(1)).unwrap();
    assert_eq!(back.rewrite.dst, Some(k.src));
    // ICMP: 30 s regardless of replies.
    assert!(ct.get(&k, ms(30_999)).is_some());
    assert!(ct.get(&k, t(31)).is_none());
}

#[test]
fn udp_timeouts_unreplied_and_assured() {
    let mut ct = Conntrack::default();
    let k = key(Protocol::Udp, host(2), 40000, REMOTE, 53);
    ct.track_or_create(&k, masq(), 1, 0, t(100)).unwrap();
    assert_eq!(
        state(&ct, &k, t(100)),
        Some(FlowState::Udp { assured: false })
    );
    // Outbound packets refresh but do not assure.
    ct.track(&k, 1, 0, t(120)).unwrap();
    assert!(ct.get(&k, ms(149_999)).is_some());
    assert!(ct.get(&k, t(150)).is_none(), "30 s after the last packet");

    let k2 = key(Protocol::Udp, host(2), 40001, REMOTE, 53);
    let hit = ct.track_or_create(&k2, masq(), 1, 0, t(0)).unwrap();
    ct.track(&hit.reply, 1, 0, t(10)).unwrap();
    assert_eq!(
        state(&ct, &k2, t(10)),
        Some(FlowState::Udp { assured: true })
    );
    assert!(ct.get(&k2, t(129)).is_some());
    assert!(ct.get(&k2, t(130)).is_none(), "120 s once assured");
}

/// Packets (direction, flags) after the SYN, the state they lead to and its
/// timeout.
type Case = (&'static [(Direction, u8)], TcpState, Duration);

/// Each TCP state's timeout, reached through real flag sequences.
#[test]
fn tcp_state_timeouts() {
    let to = Timeouts::default();
    let cases: [Case; 8] = [
        (&[], TcpState::SynSent, to.tcp_syn_sent),
        (
            &[(Direction::Reply, SYN | ACK)],
            TcpState::SynRecv,
            to.tcp_syn_recv,
        ),
        (
            &[(Direction::Reply, SYN | ACK), (Direction::Original, ACK)],
            TcpState::Established,
            to.tcp_established,
        ),
        (
            &[
                (Direction::Reply, SYN | ACK),
                (Direction::Original, ACK),
                (Direction::Original, FIN | ACK),
            ],
            TcpState::FinWait,
            to.tcp_fin_wait,
        ),
        (
            &[
                (Direction::Reply, SYN | ACK),
                (Direction::Original, ACK),
                (Direction::Original, FIN | ACK),
                (Direction::Reply, ACK),
            ],
            TcpState::CloseWait,
            to.tcp_close_wait,
        ),
        (
            &[
                (Direction::Reply, SYN | ACK),
                (Direction::Original, ACK),
                (Direction::Original, FIN | ACK),
                (Direction::Reply, ACK),
                (Direction::Reply, FIN | ACK),
            ],
            TcpState::LastAck,
            to.tcp_last_ack,
        ),
        (
            &[
                (Direction::Reply, SYN | ACK),
                (Direction::Original, ACK),
                (Direction::Original, FIN | ACK),
                (Direction::Reply, FIN | ACK),
                (Direction::Original, ACK),
            ],
            TcpState::TimeWait,
            to.tcp_time_wait,
        ),
        (
            &[
                (Direction::Reply, SYN | ACK),
                (Direction::Original, ACK),
                (Direction::Reply, RST),
            ],
            TcpState::Close,
            to.tcp_close,
        ),
    ];
    assert_eq!(to.tcp_established, Duration::from_secs(7440));
    for (i, (steps, want, timeout)) in cases.into_iter().enumerate() {
        let mut ct = Conntrack::default();
        let k = key(Protocol::Tcp, host(2), 40000 + i as u16, REMOTE, 443);
        let hit = ct.track_or_create(&k, masq(), 60, SYN, t(0)).unwrap();
        let mut now = t(0);
        for &(dir, flags) in steps {
            now = now.saturating_add(Duration::from_secs(1));
            let pk = if dir == Direction::Original {
                k
            } else {
                hit.reply
            };
            ct.track(&pk, 40, flags, now).unwrap();
        }
        assert_eq!(state(&ct, &k, now), Some(FlowState::Tcp(want)), "{want}");
        let deadline = now.saturating_add(timeout);
        let just_before = Timestamp::from_nanos(deadline.as_nanos() - 1);
        assert!(
            ct.get(&k, just_before).is_some(),
            "{want} alive before {timeout:?}"
        );
        assert!(
            ct.get(&k, deadline).is_none(),
            "{want} expired at {timeout:?}"
        );
        assert!(ct.track(&hit.reply, 1, ACK, deadline).is_none());
    }
}

#[test]
fn configurable_timeouts_and_midstream_pickup() {
    let mut ct = Conntrack::new(ConntrackConfig {
        timeouts: Timeouts {
            tcp_established: Duration::from_secs(5),
            ..Default::default()
        },
        ..Default::default()
    });
    let k = key(Protocol::Tcp, host(2), 40000, REMOTE, 443);
    // A bare ACK picks the flow up as established.
    let hit = ct.track_or_create(&k, masq(), 1, ACK, t(0)).unwrap();
    assert_eq!(hit.state, FlowState::Tcp(TcpState::Established));
    assert!(ct.get(&k, ms(4_999)).is_some());
    assert!(ct.get(&k, t(5)).is_none());
}

#[test]
fn tcp_port_reuse_from_time_wait() {
    let mut ct = Conntrack::default();
    let k = key(Protocol::Tcp, host(2), 40000, REMOTE, 443);
    let hit = ct.track_or_create(&k, masq(), 1, SYN, t(0)).unwrap();
    ct.track(&hit.reply, 1, RST, t(1)).unwrap();
    assert_eq!(state(&ct, &k, t(1)), Some(FlowState::Tcp(TcpState::Close)));
    let again = ct.track_or_create(&k, masq(), 1, SYN, t(2)).unwrap();
    assert_eq!(again.state, FlowState::Tcp(TcpState::SynSent));
    assert_eq!(again.reply, hit.reply, "same mapping");
}

#[test]
fn table_full_refuses_new_flows_but_existing_ones_keep_working() {
    let mut ct = Conntrack::new(ConntrackConfig {
        capacity: 3,
        shards: 2,
        ..Default::default()
    });
    let keys: Vec<FlowKey> = (0..3)
        .map(|i| key(Protocol::Udp, host(2), 40000 + i, REMOTE, 53))
        .collect();
    let hits: Vec<_> = keys
        .iter()
        .map(|k| ct.track_or_create(k, masq(), 1, 0, t(0)).unwrap())
        .collect();
    // Answered, so none of them is evicted early to make room.
    for h in &hits {
        ct.track(&h.reply, 1, 0, t(0)).unwrap();
    }
    let extra = key(Protocol::Udp, host(3), 40000, REMOTE, 53);
    for n in 1..=2u64 {
        assert_eq!(
            ct.track_or_create(&extra, masq(), 1, 0, t(1)),
            Err(ConntrackError::TableFull { capacity: 3 })
        );
        assert_eq!(ct.stats().table_full, n);
    }
    assert_eq!(
        ct.ports().in_use(Protocol::Udp, UPLINK),
        3,
        "refusal leaks no port"
    );
    for (k, h) in keys.iter().zip(&hits) {
        assert_eq!(
            ct.track_or_create(k, masq(), 1, 0, t(2)).unwrap().direction,
            Direction::Original
        );
        assert_eq!(
            ct.track(&h.reply, 1, 0, t(2)).unwrap().direction,
            Direction::Reply
        );
    }
    assert_eq!(ct.len(), 3);
    // Room again once one is gone.
    assert!(ct.remove(&hits[0].reply));
    assert!(!ct.remove(&keys[0]));
    assert_eq!(ct.len(), 2);
    ct.track_or_create(&extra, masq(), 1, 0, t(3)).unwrap();
    assert_eq!(ct.stats().created, 4);
}

#[test]
fn expire_respects_budget_and_resumes() {
    let mut ct = Conntrack::new(ConntrackConfig {
        shards: 4,
        ..Default::default()
    });
    for i in 0..50u16 {
        let k = key(Protocol::Udp, host(2), 40000 + i, REMOTE, 53);
        ct.track_or_create(&k, masq(), 1, 0, t(0)).unwrap();
    }
    // 10 of them stay fresh.
    for i in 0..10u16 {
        ct.track(
            &key(Protocol::Udp, host(2), 40000 + i, REMOTE, 53),
            1,
            0,
            t(20),
        )
        .unwrap();
    }
    assert_eq!(ct.len(), 50);
    assert_eq!(ct.expire(t(29), 100).removed, 0, "nothing expired yet");
    let now = t(40);
    let mut removed = Vec::new();
    loop {
        let r = ct.expire(now, 7);
        assert!(r.removed <= 7);
        if r.removed == 0 {
            break;
        }
        removed.push(r.removed);
    }
    assert_eq!(removed.iter().sum::<usize>(), 40);
    assert_eq!(removed[0], 7);
    assert_eq!(ct.len(), 10);
    assert_eq!(ct.stats().expired, 40);
    assert_eq!(ct.ports().in_use(Protocol::Udp, UPLINK), 10, "ports freed");
    assert_eq!(ct.snapshot(now).len(), 10);
    // Budget 0 does nothing.
    assert_eq!(ct.expire(t(1000), 0).removed, 0);
    assert_eq!(ct.len(), 10);
}

#[test]
fn expired_flows_are_absent_before_expire_runs_and_lookup_reaps_them() {
    let mut ct = Conntrack::default();
    let k = key(Protocol::Udp, host(2), 40000, REMOTE, 53);
    let hit = ct.track_or_create(&k, masq(), 1, 0, t(0)).unwrap();
    assert_eq!(ct.len(), 1);
    assert!(ct.track(&hit.reply, 1, 0, t(31)).is_none());
    assert!(ct.lookup(&k, t(31)).is_none());
    assert_eq!(ct.len(), 0, "reaped by the lookup");
    assert!(!ct.ports().is_in_use(Protocol::Udp, UPLINK, 40000));
    // A new flow for the same tuple gets the same port again.
    let again = ct.track_or_create(&k, masq(), 1, 0, t(32)).unwrap();
    assert_eq!(again.reply, hit.reply);
    assert_eq!(ct.expire(t(33), 10).removed, 0);
    assert!(ct.track(&again.reply, 1, 0, t(33)).is_some());
}

#[test]
fn lookup_does_not_refresh_or_count() {
    let mut ct = Conntrack::default();
    let k = key(Protocol::Udp, host(2), 40000, REMOTE, 53);
    let hit = ct.track_or_create(&k, masq(), 1, 0, t(0)).unwrap();
    assert_eq!(
        ct.lookup(&hit.reply, t(29)).unwrap().direction,
        Direction::Reply
    );
    let f = ct.get(&k, t(29)).unwrap();
    assert_eq!(f.reply_counters.packets, 0);
    assert_eq!(f.state, FlowState::Udp { assured: false });
    assert!(ct.get(&k, t(30)).is_none());
}

#[test]
fn twenty_endpoints_connecting_at_once_get_distinct_ports() {
    // The table has one owner; threads share it behind a mutex.
    let ct = Mutex::new(Conntrack::default());
    let hits: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20u8)
            .map(|i| {
                let ct = &ct;
                // Every endpoint uses the same source port: preservation can
                // only win once.
                s.spawn(move || {
                    ct.lock().unwrap().track_or_create(
                        &key(Protocol::Tcp, host(10 + i), 45000, REMOTE, 443),
                        masq(),
                        60,
                        SYN,
                        t(0),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let ports: HashSet<u16> = hits.iter().map(|h| h.reply.dst.port()).collect();
    assert_eq!(ports.len(), 20, "no two flows share a source port");
    assert!(ports.contains(&45000));
    assert!(ports.iter().all(|p| PortRange::default().contains(*p)));
    assert!(hits.iter().all(|h| *h.reply.dst.ip() == UPLINK));
    assert_eq!(ct.lock().unwrap().len(), 20);
}

#[test]
fn port_exhaustion_is_an_error_and_counted() {
    let mut ct = Conntrack::new(ConntrackConfig {
        port_range: PortRange::new(5000, 5002).unwrap(),
        ..Default::default()
    });
    for i in 0..3 {
        ct.track_or_create(
            &key(Protocol::Udp, host(2), 5000 + i, REMOTE, 53),
            masq(),
            1,
            0,
            t(0),
        )
        .unwrap();
    }
    let err = ct
        .track_or_create(
            &key(Protocol::Udp, host(3), 5000, REMOTE, 53),
            masq(),
            1,
            0,
            t(0),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ConntrackError::Ports(PortAllocError::Exhausted { .. })
    ));
    assert_eq!(ct.stats().port_exhausted, 1);
    assert_eq!(ct.ports().exhausted(), 1);
    assert_eq!(ct.len(), 3, "capacity reservation released");
    // TCP has its own pool.
    ct.track_or_create(
        &key(Protocol::Tcp, host(2), 200, REMOTE, 53),
        masq(),
        1,
        SYN,
        t(0),
    )
    .unwrap();
}

/// An SNAT port whose reply tuple is already held by another (DNAT) flow
/// is skipped.
#[test]
fn snat_skips_ports_whose_reply_tuple_is_taken() {
    let mut ct = Conntrack::new(ConntrackConfig {
        port_range: PortRange::new(8080, 8081).unwrap(),
        ..Default::default()
    });
    // Inbound REMOTE:53 -> UPLINK:8080 forwarded (no SNAT port claimed).
    let fwd = FlowKey::new(
        Protocol::Udp,
        SocketAddrV4::new(REMOTE, 53),
        SocketAddrV4::new(UPLINK, 8080),
    );
    ct.track_or_create(
        &fwd,
        NatSpec {
            snat: None,
            dnat: Some(SocketAddrV4::new(host(9), 53)),
            ..NatSpec::default()
        },
        1,
        0,
        t(0),
    )
    .unwrap();
    // Outbound from port 8080 would map to reply REMOTE:53 -> UPLINK:8080.
    let out = key(Protocol::Udp, host(2), 8080, REMOTE, 53);
    let hit = ct.track_or_create(&out, masq(), 1, 0, t(0)).unwrap();
    assert_eq!(hit.reply.dst.port(), 8081);
    assert!(
        !ct.ports().is_in_use(Protocol::Udp, UPLINK, 8080),
        "held port released"
    );
    // No port left whose reply tuple is free.
    let out2 = key(Protocol::Udp, host(3), 8080, REMOTE, 53);
    assert!(ct.track_or_create(&out2, masq(), 1, 0, t(0)).is_err());
    assert_eq!(ct.len(), 2);
    assert_eq!(ct.ports().in_use(Protocol::Udp, UPLINK), 1);
}

#[test]
fn snapshot_and_flush() {
    let mut ct = Conntrack::default();
    let a = key(Protocol::Tcp, host(2), 40000, REMOTE, 443);
    let b = key(Protocol::Udp, host(3), 40001, REMOTE, 53);
    ct.track_or_create(&a, masq(), 60, SYN, t(10)).unwrap();
    ct.track_or_create(&b, masq(), 70, 0, t(12)).unwrap();
    ct.track(&b, 30, 0, t(15)).unwrap();
    let snap = ct.snapshot(t(20));
    assert_eq!(snap.len(), 2);
    let fb = snap.iter().find(|f| f.original == b).unwrap();
    assert_eq!(fb.age(t(20)), Duration::from_secs(8));
    assert_eq!(fb.last_seen, t(15));
    assert_eq!(fb.remaining(t(20)), Duration::from_secs(25));
    assert_eq!((fb.orig_counters.packets, fb.orig_counters.bytes), (2, 100));
    assert_eq!(fb.proto(), Protocol::Udp);
    assert_eq!(fb.state.to_string(), "UNREPLIED");
    let fa = snap.iter().find(|f| f.original == a).unwrap();
    assert_eq!(fa.state.to_string(), "SYN_SENT");
    assert_eq!(*fa.translated().src.ip(), UPLINK);
    assert_eq!(ct.flush(), 2);
    assert!(ct.is_empty());
    assert!(ct.snapshot(t(20)).is_empty());
    assert!(ct.track(&a, 1, ACK, t(20)).is_none());
    assert_eq!(ct.ports().in_use(Protocol::Tcp, UPLINK), 0);
}

/// Four threads create, look up and expire flows at once; the table stays
/// consistent (every port accounted for, counts match).
#[test]
fn concurrent_hammering() {
    let ct = Mutex::new(Conntrack::new(ConntrackConfig {
        capacity: 10_000,
        shards: 16,
        ..Default::default()
    }));
    let misses = AtomicUsize::new(0);
    let barrier = Barrier::new(4);
    std::thread::scope(|s| {
        for th in 0..4u8 {
            let (ct, misses, barrier) = (&ct, &misses, &barrier);
            s.spawn(move || {
                for round in 0..3u64 {
                    let now = t(round * 200);
                    let mut replies = Vec::new();
                    for i in 0..500u16 {
                        let k = key(Protocol::Udp, host(th + 1), 40000 + i, REMOTE, 53);
                        let hit = ct
                            .lock()
                            .unwrap()
                            .track_or_create(&k, masq(), 10, 0, now)
                            .unwrap();
                        replies.push(hit.reply);
                        // A second thread shares some flows.
                        let shared = key(Protocol::Tcp, host(100), 50000 + i, REMOTE, 80);
                        ct.lock()
                            .unwrap()
                            .track_or_create(&shared, masq(), 10, ACK, now)
                            .unwrap();
                    }
                    for r in &replies {
                        if ct.lock().unwrap().track(r, 10, 0, now).is_none() {
                            misses.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Everything from the previous round (assured: 120 s) has
                    // expired; wait
                    // until every thread is done with this round's flows.
                    barrier.wait();
                    ct.lock().unwrap().expire(now, 64);
                }
            });
        }
    });
    assert_eq!(misses.load(Ordering::Relaxed), 0);
    let mut ct = ct.into_inner().unwrap();
    // Drain whatever is left expired, then check the books balance.
    let now = t(410);
    while ct.expire(now, 1000).removed > 0 {}
    let snap = ct.snapshot(now);
    assert_eq!(snap.len(), 4 * 500 + 500);
    assert_eq!(ct.len(), snap.len());
    let udp_ports: HashSet<u16> = snap
        .iter()
        .filter(|f| f.proto() == Protocol::Udp)
        .map(|f| f.reply.dst.port())
        .collect();
    assert_eq!(udp_ports.len(), 2000, "no shared source ports");
    assert_eq!(ct.ports().in_use(Protocol::Udp, UPLINK), 2000);
    assert_eq!(ct.ports().in_use(Protocol::Tcp, UPLINK), 500);
    let shared = snap.iter().find(|f| f.proto() == Protocol::Tcp).unwrap();
    assert_eq!(
        shared.orig_counters.packets, 12,
        "every thread's packets counted"
    );
    // UDP flows expire between rounds and are created anew; the shared TCP
    // flows (established, 7440 s) are created once, by one thread.
    assert_eq!(ct.stats().created, 3 * 2000 + 500);
}

const REMOTE2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);

/// RFC 4787 REQ-1 / RFC 5382 REQ-1: one internal endpoint keeps one
/// external port whatever the destination, and the mapping (with its
/// port) lives as long as one of its flows does.
#[test]
fn mappings_are_endpoint_independent() {
    for proto in [Protocol::Udp, Protocol::Tcp] {
        let mut ct = Conntrack::default();
        // Another host holds 40000 first: ours gets another port, but the
        // same one for every destination.
        ct.track_or_create(&key(proto, host(3), 40000, REMOTE, 9), masq(), 1, SYN, t(0))
            .unwrap();
        let a = ct
            .track_or_create(
                &key(proto, host(2), 40000, REMOTE, 3478),
                masq(),
                1,
                SYN,
                t(0),
            )
            .unwrap();
        let b = ct
            .track_or_create(
                &key(proto, host(2), 40000, REMOTE2, 3478),
                masq(),
                1,
                SYN,
                t(0),
            )
            .unwrap();
        let c = ct
            .track_or_create(
                &key(proto, host(2), 40000, REMOTE, 80),
                masq(),
                1,
                SYN,
                t(0),
            )
            .unwrap();
        let port = a.reply.dst.port();
        assert_ne!(port, 40000, "{proto}: taken by host 3");
        assert_eq!(port % 2, 0, "{proto}: parity of 40000 kept");
        assert_eq!(b.reply.dst.port(), port, "{proto}");
        assert_eq!(c.reply.dst.port(), port, "{proto}");
        let internal = SocketAddrV4::new(host(2), 40000);
        assert_eq!(ct.mapping_owner(proto, UPLINK, port), Some(internal));
        assert_eq!(ct.mapping_of(proto, internal, UPLINK), Some(port));
        assert_eq!(
            ct.ports().in_use(proto, UPLINK),
            2,
            "{proto}: one port per endpoint"
        );
        assert!(ct.permits(proto, internal, REMOTE));
        assert!(ct.permits(proto, internal, REMOTE2));
        assert!(!ct.permits(proto, internal, Ipv4Addr::new(192, 0, 2, 1)));
        // The mapping goes with its last flow.
        assert!(ct.remove(&a.original));
        assert!(ct.remove(&b.original));
        assert!(!ct.permits(proto, internal, REMOTE2));
        assert_eq!(ct.mapping_owner(proto, UPLINK, port), Some(internal));
        assert!(ct.remove(&c.original));
        assert_eq!(ct.mapping_owner(proto, UPLINK, port), None);
        assert!(!ct.permits(proto, internal, REMOTE));
        assert_eq!(ct.ports().in_use(proto, UPLINK), 1);
    }
}

/// An inbound packet admitted through a mapping creates a flow whose
/// replies leave from the mapped port; the mapping's books balance.
#[test]
fn inbound_through_a_mapping() {
    let mut ct = Conntrack::default();
    let internal = SocketAddrV4::new(host(2), 45000);
    let out = ct
        .track_or_create(
            &key(Protocol::Udp, host(2), 45000, REMOTE, 3478),
            masq(),
            1,
            0,
            t(0),
        )
        .unwrap();
    let ext = out.reply.dst;
    // From another remote (what endpoint-independent filtering admits).
    let inbound = FlowKey::new(Protocol::Udp, SocketAddrV4::new(REMOTE2, 9999), ext);
    let hit = ct
        .create_inbound(&inbound, internal, Default::default(), 10, 0, t(1))
        .unwrap()
        .expect("mapping exists");
    assert_eq!(hit.direction, Direction::Reply);
    assert_eq!(hit.rewrite.dst, Some(internal));
    assert_eq!(hit.state, FlowState::Udp { assured: false }, "one way only");
    // The endpoint answers: it leaves from the mapped port.
    let answer = FlowKey::new(Protocol::Udp, internal, inbound.src);
    let back = ct.track(&answer, 10, 0, t(1)).unwrap();
    assert_eq!(back.rewrite.src, Some(ext));
    assert_eq!(back.state, FlowState::Udp { assured: true });
    assert_eq!(ct.ports().in_use(Protocol::Udp, UPLINK), 1);
    // A port no mapping holds: nothing.
    let stray = FlowKey::new(
        Protocol::Udp,
        inbound.src,
        SocketAddrV4::new(UPLINK, ext.port() + 1),
    );
    assert_eq!(
        ct.create_inbound(&stray, internal, Default::default(), 1, 0, t(1)),
        Ok(None)
    );
    // A TCP SYN from outside completes its handshake.
    let tcp_internal = SocketAddrV4::new(host(2), 46000);
    let o = ct
        .track_or_create(
            &key(Protocol::Tcp, host(2), 46000, REMOTE, 80),
            masq(),
            1,
            SYN,
            t(0),
        )
        .unwrap();
    let syn = FlowKey::new(Protocol::Tcp, SocketAddrV4::new(REMOTE2, 7000), o.reply.dst);
    let h = ct
        .create_inbound(&syn, tcp_internal, Default::default(), 1, SYN, t(2))
        .unwrap()
        .unwrap();
    assert_eq!(h.state, FlowState::Tcp(TcpState::SynRecv));
    let synack = FlowKey::new(Protocol::Tcp, tcp_internal, syn.src);
    ct.track(&synack, 1, SYN | ACK, t(2)).unwrap();
    let est = ct.track(&syn, 1, ACK, t(2)).unwrap();
    assert_eq!(est.state, FlowState::Tcp(TcpState::Established));
    // Flush leaves nothing behind.
    ct.flush();
    assert_eq!(ct.ports().in_use(Protocol::Udp, UPLINK), 0);
    assert_eq!(ct.ports().in_use(Protocol::Tcp, UPLINK), 0);
    assert_eq!(ct.mapping_owner(Protocol::Udp, UPLINK, ext.port()), None);
}

/// Per-host limits refuse the host over its share; unconfirmed flows are
/// evicted early to make room (its own at its limit, anyone's when the
/// table is full), confirmed ones never are.
#[test]
fn host_limits_and_early_eviction() {
    use weft_nat::conntrack::HostLimits;
    let mut ct = Conntrack::new(ConntrackConfig {
        capacity: 8,
        ..Default::default()
    });
    let limited = NatSpec {
        limits: HostLimits { flows: 4, ports: 2 },
        ..masq()
    };
    // Two confirmed flows from host 2 (two sockets: two ports).
    for p in [2024u16, 3024] {
        let h = ct
            .track_or_create(
                &key(Protocol::Udp, host(2), p, REMOTE, 53),
                limited,
                1,
                0,
                t(0),
            )
            .unwrap();
        ct.track(&h.reply, 1, 0, t(0)).unwrap();
    }
    // A third socket: over its port limit.
    assert!(matches!(
        ct.track_or_create(
            &key(Protocol::Udp, host(2), 4024, REMOTE, 53),
            limited,
            1,
            0,
            t(0)
        ),
        Err(ConntrackError::HostLimit {
            what: "ports",
            limit: 2,
            ..
        })
    ));
    // Same sockets, new destinations: unreplied flows up to 4.
    for d in [1u16, 2] {
        ct.track_or_create(
            &key(Protocol::Udp, host(2), 2024, REMOTE2, d),
            limited,
            1,
            0,
            t(1),
        )
        .unwrap();
    }
    assert_eq!(ct.len(), 4);
    // At the limit: one of its own unreplied flows makes room.
    ct.track_or_create(
        &key(Protocol::Udp, host(2), 2024, REMOTE2, 3),
        limited,
        1,
        0,
        t(2),
    )
    .unwrap();
    assert_eq!(ct.len(), 4);
    assert_eq!(ct.stats().early_evicted, 1);
    // Fill the table with another host's unreplied flows, then a third
    // host still gets in: the flooder's flows make room.
    for d in 0..4u16 {
        ct.track_or_create(
            &key(Protocol::Udp, host(3), 4000, REMOTE, 100 + d),
            masq(),
            1,
            0,
            t(3),
        )
        .unwrap();
    }
    assert_eq!(ct.len(), 8);
    ct.track_or_create(
        &key(Protocol::Tcp, host(4), 5000, REMOTE, 80),
        masq(),
        1,
        SYN,
        t(4),
    )
    .unwrap();
    assert_eq!(ct.len(), 8);
    assert_eq!(ct.stats().early_evicted, 2);
    // Host 2's two confirmed flows are still there.
    assert!(ct
        .get(&key(Protocol::Udp, host(2), 2024, REMOTE, 53), t(4))
        .is_some());
    assert!(ct
        .get(&key(Protocol::Udp, host(2), 3024, REMOTE, 53), t(4))
        .is_some());
    assert_eq!(ct.stats().host_limited, 1);
}

/// A client's kernel reuses a source port for a second service VIP that
/// shares the backend: the SNAT mapping (endpoint-independent) gives the
/// same reply tuple as the first, closed connection, whose entry the new
/// SYN takes over, as a SYN reopens a TIME_WAIT entry in Linux. While the
/// first is still open the second is refused instead.
#[test]
fn a_syn_takes_over_the_reply_tuple_of_a_closed_connection() {
    let mut ct = Conntrack::default();
    let gateway = host(1);
    let backend = SocketAddrV4::new(host(5), 80);
    let via = NatSpec {
        snat: Some(gateway),
        dnat: Some(backend),
        ..NatSpec::default()
    };
    let first = key(Protocol::Tcp, host(2), 40000, host(100), 80);
    let second = key(Protocol::Tcp, host(2), 40000, host(101), 80);
    let hit = ct.track_or_create(&first, via, 60, SYN, t(0)).unwrap();
    ct.track(&hit.reply, 60, SYN | ACK, t(0)).unwrap();
    ct.track(&first, 60, ACK, t(0)).unwrap();

    // Open: the second connection would share the reply tuple.
    assert!(matches!(
        ct.track_or_create(&second, via, 60, SYN, t(1)),
        Err(ConntrackError::Conflict(_))
    ));

    // Reset: closed, so the second takes the tuple over.
    ct.track(&hit.reply, 40, RST | ACK, t(2)).unwrap();
    assert_eq!(
        state(&ct, &first, t(2)),
        Some(FlowState::Tcp(TcpState::Close))
    );
    let again = ct.track_or_create(&second, via, 60, SYN, t(3)).unwrap();
    assert_eq!(again.reply, hit.reply);
    assert_eq!(state(&ct, &first, t(3)), None);
    assert_eq!(
        state(&ct, &second, t(3)),
        Some(FlowState::Tcp(TcpState::SynSent))
    );
}
