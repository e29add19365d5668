//! The worker applies a batch of changes all or nothing. These tests drive
//! the real worker thread with in-memory ports (no device to poll), so they
//! run as an ordinary user.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weft_datapath::port::{Offload, PacketBuf, Port, PortCapabilities};
use weft_datapath::{Change, Datapath, DatapathError};
use weft_nat::Conntrack;
use weft_packet::MacAddr;
use weft_switch::counters::PortCounters;
use weft_switch::switch::{ConfigError, NetworkConfig, PortConfig, UplinkConfig};
use weft_switch::{NetworkId, PortId};

/// A device that is never readable and counts itself while open.
struct FakePort {
    open: Arc<AtomicUsize>,
}

impl FakePort {
    fn boxed(open: &Arc<AtomicUsize>) -> Box<dyn Port> {
        open.fetch_add(1, Ordering::SeqCst);
        Box::new(FakePort {
            open: Arc::clone(open),
        })
    }
}

impl Drop for FakePort {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Port for FakePort {
    fn recv_batch(&mut self, _bufs: &mut [PacketBuf]) -> io::Result<usize> {
        Ok(0)
    }

    fn send(&mut self, _frame: &[u8], _offload: &Offload) -> io::Result<()> {
        Ok(())
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    fn capabilities(&self) -> PortCapabilities {
        PortCapabilities { max_batch: 1 }
    }
}

fn start() -> Datapath {
    Datapath::start_with(Duration::from_secs(300), Conntrack::default()).unwrap()
}

fn mac(last: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, last])
}

fn network(id: u32) -> Change {
    Change::AddNetwork(NetworkConfig {
        id: NetworkId(id),
        subnet: format!("10.{id}.0.0/24").parse().unwrap(),
        gateway_ip: Ipv4Addr::new(10, id as u8, 0, 1),
        gateway_mac: mac(100 + id as u8),
        mtu: 1500,
    })
}

fn port(id: u32, net: u32, open: &Arc<AtomicUsize>) -> Change {
    Change::AddPort {
        cfg: PortConfig {
            id: PortId(id),
            network: NetworkId(net),
            mac: mac(id as u8),
            ip: Ipv4Addr::new(10, net as u8, 0, 10 + id as u8),
        },
        io: FakePort::boxed(open),
        counters: Arc::new(PortCounters::default()),
    }
}

fn static_mac(net: u32, m: u8, port: u32) -> Change {
    Change::SetStaticMac {
        network: NetworkId(net),
        mac: mac(m),
        port: PortId(port),
    }
}

fn static_neighbor(net: u32, host: u8, m: u8) -> Change {
    Change::SetStaticNeighbor {
        network: NetworkId(net),
        ip: Ipv4Addr::new(10, net as u8, 0, host),
        mac: mac(m),
    }
}

/// The forwarding database, without ages (time passes between dumps).
fn fdb(dp: &Datapath) -> Vec<(u32, MacAddr, u32, bool)> {
    let mut rows: Vec<_> = dp
        .fdb(None)
        .unwrap()
        .into_iter()
        .map(|(n, l)| (n.0, l.mac, l.port.0, l.is_static))
        .collect();
    rows.sort();
    rows
}

fn neighbors(dp: &Datapath) -> Vec<(u32, Ipv4Addr, MacAddr, bool)> {
    let mut rows: Vec<_> = dp
        .neighbors(None)
        .unwrap()
        .into_iter()
        .map(|(n, b)| (n.0, b.ip, b.mac, b.is_static))
        .collect();
    rows.sort();
    rows
}

fn batch_error(e: DatapathError) -> (usize, DatapathError) {
    match e {
        DatapathError::Batch { index, source, .. } => (index, *source),
        other => panic!("not a batch error: {other}"),
    }
}

#[test]
fn a_batch_applies_everything() {
    let dp = start();
    let open = Arc::new(AtomicUsize::new(0));
    dp.apply(vec![
        network(1),
        network(2),
        Change::SetRoute {
            a: NetworkId(1),
            b: NetworkId(2),
            allowed: true,
        },
        port(1, 1, &open),
        port(2, 2, &open),
        static_mac(1, 50, 1),
        static_neighbor(2, 77, 51),
    ])
    .unwrap();
    assert_eq!(open.load(Ordering::SeqCst), 2);
    assert_eq!(fdb(&dp), vec![(1, mac(50), 1, true)]);
    assert_eq!(
        neighbors(&dp),
        vec![(2, Ipv4Addr::new(10, 2, 0, 77), mac(51), true)]
    );
    // Removals, last in their batch: the ports close, the network goes.
    dp.apply(vec![
        Change::RemovePort(PortId(1)),
        Change::RemovePort(PortId(2)),
        Change::RemoveNetwork(NetworkId(2)),
    ])
    .unwrap();
    assert_eq!(open.load(Ordering::SeqCst), 0);
    assert_eq!(neighbors(&dp), vec![]);
    dp.shutdown();
}

#[test]
fn a_batch_whose_third_change_fails_leaves_everything_as_it_was() {
    let dp = start();
    let open = Arc::new(AtomicUsize::new(0));
    dp.apply(vec![
        network(1),
        port(1, 1, &open),
        static_mac(1, 50, 1),
        static_neighbor(1, 77, 51),
    ])
    .unwrap();
    let (fdb_before, neighbors_before) = (fdb(&dp), neighbors(&dp));
    let flows_before = dp.conntrack().unwrap().len();

    // The third change names a network that does not exist.
    let e = dp
        .apply(vec![
            network(2),
            port(2, 2, &open),
            port(3, 9, &open),
            static_mac(1, 50, 2),
        ])
        .unwrap_err();
    let (index, source) = batch_error(e);
    assert_eq!(index, 2);
    assert!(matches!(
        source,
        DatapathError::Config(ConfigError::UnknownNetwork(NetworkId(9)))
    ));
    assert_eq!(
        open.load(Ordering::SeqCst),
        1,
        "the batch's ports are closed"
    );
    assert_eq!(fdb(&dp), fdb_before);
    assert_eq!(neighbors(&dp), neighbors_before);
    assert_eq!(dp.conntrack().unwrap().len(), flows_before);

    // Overwrites are undone too: a static MAC moved to a new port, a
    // neighbour rebound, a route opened.
    let e = dp
        .apply(vec![
            port(2, 1, &open),
            static_mac(1, 50, 2),
            static_neighbor(1, 77, 60),
            Change::SetRoute {
                a: NetworkId(1),
                b: NetworkId(7),
                allowed: true,
            },
        ])
        .unwrap_err();
    assert_eq!(batch_error(e).0, 3);
    assert_eq!(open.load(Ordering::SeqCst), 1);
    assert_eq!(fdb(&dp), fdb_before);
    assert_eq!(neighbors(&dp), neighbors_before);

    // Nothing of the refused batches is left: the same changes apply.
    dp.apply(vec![network(2), port(2, 2, &open), port(3, 2, &open)])
        .unwrap();
    assert_eq!(open.load(Ordering::SeqCst), 3);
    dp.shutdown();
    assert_eq!(open.load(Ordering::SeqCst), 0);
}

#[test]
fn removals_are_checked_before_any_is_applied() {
    let dp = start();
    let open = Arc::new(AtomicUsize::new(0));
    dp.apply(vec![network(1), port(1, 1, &open), port(2, 1, &open)])
        .unwrap();

    // The network still has port 2: nothing is removed, port 1 stays open.
    let e = dp
        .apply(vec![
            Change::RemovePort(PortId(1)),
            Change::RemoveNetwork(NetworkId(1)),
        ])
        .unwrap_err();
    let (index, source) = batch_error(e);
    assert_eq!(index, 1);
    assert!(matches!(
        source,
        DatapathError::Config(ConfigError::NetworkBusy(NetworkId(1)))
    ));
    assert_eq!(open.load(Ordering::SeqCst), 2);

    // A change after a removal is refused whole.
    let e = dp
        .apply(vec![Change::RemovePort(PortId(1)), network(2)])
        .unwrap_err();
    let (index, source) = batch_error(e);
    assert_eq!(index, 1);
    assert!(matches!(source, DatapathError::Order));
    assert_eq!(open.load(Ordering::SeqCst), 2);

    // A failing change before the removals: they never happen.
    let e = dp
        .apply(vec![port(3, 9, &open), Change::RemovePort(PortId(1))])
        .unwrap_err();
    assert_eq!(batch_error(e).0, 0);
    assert_eq!(open.load(Ordering::SeqCst), 2);

    dp.apply(vec![
        Change::RemovePort(PortId(1)),
        Change::RemovePort(PortId(2)),
        Change::RemoveNetwork(NetworkId(1)),
    ])
    .unwrap();
    assert_eq!(open.load(Ordering::SeqCst), 0);
    dp.shutdown();
}

#[test]
fn the_same_batch_succeeds_once_what_made_it_fail_is_gone() {
    let dp = start();
    let open = Arc::new(AtomicUsize::new(0));
    dp.apply(vec![network(1), port(1, 1, &open)]).unwrap();
    let batch = |open: &Arc<AtomicUsize>| {
        vec![
            network(2),
            port(2, 2, open),
            // Port 1 is taken while the first batch stands.
            port(1, 2, open),
        ]
    };
    let (index, source) = batch_error(dp.apply(batch(&open)).unwrap_err());
    assert_eq!(index, 2);
    assert!(matches!(
        source,
        DatapathError::Config(ConfigError::DuplicatePort(PortId(1)))
    ));
    assert_eq!(open.load(Ordering::SeqCst), 1);
    dp.apply(vec![Change::RemovePort(PortId(1))]).unwrap();
    assert_eq!(open.load(Ordering::SeqCst), 0);
    // Network 2 and port 2 were undone: the identical batch applies.
    dp.apply(batch(&open)).unwrap();
    assert_eq!(open.load(Ordering::SeqCst), 2);
    dp.shutdown();
}

fn uplink(id: u32, open: &Arc<AtomicUsize>) -> Change {
    Change::SetUplink {
        cfg: UplinkConfig {
            port: PortId(id),
            ip: Ipv4Addr::new(192, 0, 2, 50),
            prefix_len: 24,
            mac: mac(200),
            gateway: None,
            mtu: 1500,
        },
        io: FakePort::boxed(open),
        counters: Arc::new(PortCounters::default()),
    }
}

#[test]
fn a_replaced_uplink_closes_only_when_its_batch_holds() {
    let dp = start();
    let open = Arc::new(AtomicUsize::new(0));
    dp.apply(vec![network(1), uplink(10, &open)]).unwrap();
    assert_eq!(open.load(Ordering::SeqCst), 1);

    // A new uplink, then a failure: the new device closes, the old stays.
    let e = dp
        .apply(vec![uplink(11, &open), port(3, 9, &open)])
        .unwrap_err();
    assert_eq!(batch_error(e).0, 1);
    assert_eq!(open.load(Ordering::SeqCst), 1);
    // The old uplink is attached again: removing it works and closes it.
    dp.apply(vec![Change::RemoveUplink]).unwrap();
    assert_eq!(open.load(Ordering::SeqCst), 0);

    dp.apply(vec![uplink(10, &open)]).unwrap();
    dp.apply(vec![uplink(11, &open)]).unwrap();
    assert_eq!(open.load(Ordering::SeqCst), 1, "the replaced uplink closed");
    let e = dp
        .apply(vec![Change::RemoveUplink, Change::RemoveUplink])
        .unwrap_err();
    assert!(matches!(batch_error(e), (1, DatapathError::NoUplink)));
    assert_eq!(open.load(Ordering::SeqCst), 1);
    dp.shutdown();
}
