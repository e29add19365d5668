//! The conntrack table allocates nothing per packet or per new flow once
//! made (after the first flow to an external address, which allocates
//! that address's port bitmap): creating flows through new and existing
//! mappings, inbound flows through a mapping, per-host limits, early
//! eviction at a full table, expiry and removal. Counted with an
//! allocator that counts the calls made on the test's own thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddrV4};

use weft_nat::conntrack::tcp_flags::{ACK, SYN};
use weft_nat::conntrack::{Conntrack, ConntrackConfig, HostLimits, NatSpec, Timestamp};
use weft_nat::{FlowKey, Protocol};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts the calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

fn key(proto: Protocol, host: u8, sp: u16, remote: u32, dp: u16) -> FlowKey {
    FlowKey::new(
        proto,
        SocketAddrV4::new(Ipv4Addr::new(172, 17, 0, host), sp),
        SocketAddrV4::new(Ipv4Addr::from(0xc633_6400 + remote), dp),
    )
}

#[test]
fn flows_mappings_limits_and_eviction_allocate_nothing() {
    let mut ct = Conntrack::new(ConntrackConfig {
        capacity: 512,
        ..Default::default()
    });
    let masq = NatSpec {
        snat: Some(UPLINK),
        limits: HostLimits {
            flows: 300,
            ports: 200,
        },
        ..NatSpec::default()
    };
    let t = Timestamp::from_secs;
    // Warm up: the port bitmaps of both protocols, in and out of range.
    for proto in [Protocol::Udp, Protocol::Tcp] {
        for sp in [40000, 5000, 80] {
            let k = key(proto, 1, sp, 1, 53);
            ct.track_or_create(&k, masq, 1, SYN, t(0)).unwrap();
            ct.remove(&k);
        }
    }
    let before = allocs();
    for round in 0..3u64 {
        let now = t(1000 * round + 1);
        // Many sockets of several hosts, each to several destinations
        // (existing mappings), answered or not.
        for host in 2..4u8 {
            for s in 0..20u16 {
                for r in 0..3u32 {
                    let k = key(Protocol::Udp, host, 1024 + s * 7, r, 3478);
                    let hit = ct.track_or_create(&k, masq, 100, 0, now).unwrap();
                    if r == 0 {
                        ct.track(&hit.reply, 100, 0, now).unwrap();
                        // From another port of a contacted address.
                        let inbound = FlowKey::new(
                            Protocol::Udp,
                            SocketAddrV4::new(*hit.reply.src.ip(), 9999),
                            hit.reply.dst,
                        );
                        let _ = ct
                            .create_inbound(&inbound, k.src, masq.limits, 10, 0, now)
                            .unwrap();
                    }
                }
            }
        }
        // One host floods TCP SYNs well past the table: eviction and
        // refusals, no allocation.
        for s in 0..2000u16 {
            let k = key(Protocol::Tcp, 9, 30000 + s % 250, u32::from(s), 80);
            let _ = ct.track_or_create(&k, masq, 60, SYN, now);
            let _ = ct.track(&k, 60, ACK, now);
        }
        assert!(ct.len() <= ct.capacity());
        // Everything expires before the next round.
        while ct.expire(t(1000 * round + 900), 64).removed > 0 {}
    }
    let during = allocs() - before;
    assert_eq!(during, 0, "{during} allocations on the flow path");
    assert!(ct.stats().early_evicted > 0);
    assert!(ct.stats().host_limited > 0);
}
