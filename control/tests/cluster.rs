//! The control plane's cluster hooks over the fake datapath and an
//! in-memory store with etcd's rules (create-if-absent names, VNIs, blocks
//! and endpoint addresses): what other hosts' records install, what local
//! operations publish, and that a refusal by the store leaves nothing. The
//! same hooks on a real etcd run in `cli/tests/cluster.rs`.

mod fake;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use fake::{control, FakeDatapath, FakeProvisioner, StateDir};
use ipnet::Ipv4Net;
use weft_api::{ApiError, ErrorKind, StoreInfo};
use weft_control::cluster::{
    ClusterEvent, ClusterStore, EndpointRecord, HostRecord, NetworkRecord,
};
use weft_control::{AttachSpec, NetworkSpec};
use weft_packet::MacAddr;

/// This host's VTEP address in the fakes.
const ME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

#[derive(Default)]
struct Records {
    networks: BTreeMap<String, NetworkRecord>,
    /// block → holder.
    blocks: BTreeMap<Ipv4Net, Ipv4Addr>,
    endpoints: BTreeMap<(String, Ipv4Addr), EndpointRecord>,
    /// Refuse every request, as an unreachable store does.
    down: bool,
}

#[derive(Clone, Default)]
struct MemStore(Arc<Mutex<Records>>);

fn unreachable() -> ApiError {
    ApiError::new(ErrorKind::System, "the cluster store did not answer")
}

impl ClusterStore for MemStore {
    fn publish_network(&self, net: &NetworkRecord) -> Result<(), ApiError> {
        let mut r = self.0.lock().unwrap();
        if r.down {
            return Err(unreachable());
        }
        if r.networks.contains_key(&net.name) || r.networks.values().any(|n| n.vni == net.vni) {
            return Err(ApiError::new(ErrorKind::AlreadyExists, "taken"));
        }
        r.networks.insert(net.name.clone(), net.clone());
        Ok(())
    }

    fn remove_network(&self, name: &str) -> Result<(), ApiError> {
        let mut r = self.0.lock().unwrap();
        if r.endpoints.keys().any(|(n, _)| n == name) {
            return Err(ApiError::new(ErrorKind::Conflict, "endpoints remain"));
        }
        r.networks.remove(name);
        Ok(())
    }

    fn blocks(&self, _network: &str) -> Vec<Ipv4Net> {
        let r = self.0.lock().unwrap();
        r.blocks
            .iter()
            .filter(|(_, h)| **h == ME)
            .map(|(b, _)| *b)
            .collect()
    }

    fn claim_block(&self, _network: &str, subnet: Ipv4Net) -> Result<Ipv4Net, ApiError> {
        let mut r = self.0.lock().unwrap();
        let free = subnet
            .subnets(28)
            .unwrap()
            .find(|b| !r.blocks.contains_key(b))
            .ok_or_else(|| ApiError::new(ErrorKind::Exhausted, "no block"))?;
        r.blocks.insert(free, ME);
        Ok(free)
    }

    fn publish_endpoint(&self, ep: &EndpointRecord) -> Result<(), ApiError> {
        let mut r = self.0.lock().unwrap();
        if r.down {
            return Err(unreachable());
        }
        let key = (ep.network.clone(), ep.ip);
        if r.endpoints.contains_key(&key) {
            return Err(ApiError::new(ErrorKind::AlreadyExists, "address taken"));
        }
        r.endpoints.insert(key, ep.clone());
        Ok(())
    }

    fn withdraw_endpoint(&self, network: &str, ip: Ipv4Addr) {
        self.0
            .lock()
            .unwrap()
            .endpoints
            .remove(&(network.to_string(), ip));
    }

    fn status(&self) -> StoreInfo {
        StoreInfo {
            url: "etcd://mem:1".into(),
            prefix: "/weft/".into(),
            connected: !self.0.lock().unwrap().down,
            revision: 1,
            hosts: 1,
            remote_endpoints: 0,
            last_error: None,
        }
    }
}

fn ov_record() -> NetworkRecord {
    NetworkRecord {
        name: "ov".into(),
        subnet: "10.9.0.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 9, 0, 1),
        mtu: 1450,
        internal: false,
        vni: 9,
    }
}

fn other_host() -> HostRecord {
    HostRecord {
        vtep: SocketAddrV4::new(OTHER, 4789),
        underlay_mtu: 1500,
        version: "test".into(),
        remote_csum: false,
    }
}

fn remote_ep(ip: Ipv4Addr, mac: &str) -> EndpointRecord {
    EndpointRecord {
        network: "ov".into(),
        name: "remote".into(),
        ip,
        mac: mac.parse::<MacAddr>().unwrap(),
        host: OTHER,
    }
}

fn attach(netns: &str) -> AttachSpec {
    AttachSpec {
        network: "ov".into(),
        netns: Some(netns.into()),
        ..AttachSpec::default()
    }
}

#[test]
fn other_hosts_records_become_peers_networks_and_static_entries() {
    let (dp, prov, dir) = (
        FakeDatapath::default(),
        FakeProvisioner::with_namespaces(&["ns1"]),
        StateDir::new("cluster-events"),
    );
    let mut c = control(&dp, &prov, &dir);
    c.set_cluster(Box::new(MemStore::default()));
    // An endpoint that arrives before its host and network waits for them.
    let ep = remote_ep(Ipv4Addr::new(10, 9, 0, 40), "02:00:00:00:00:40");
    c.cluster_event(ClusterEvent::EndpointUp(ep.clone()));
    assert!(dp.model().static_macs.is_empty());
    c.cluster_event(ClusterEvent::HostUp(other_host()));
    assert_eq!(dp.model().peers, BTreeSet::from([OTHER]));
    c.cluster_event(ClusterEvent::NetworkUp(ov_record()));
    let m = dp.model();
    assert_eq!(m.static_macs.len(), 1, "{m:?}");
    assert!(m
        .static_neighbors
        .iter()
        .any(|(_, ip, mac)| *ip == ep.ip && mac == "02:00:00:00:00:40"));
    // Our own records come back through the watch too: ignored.
    let mine = EndpointRecord {
        host: ME,
        ..remote_ep(Ipv4Addr::new(10, 9, 0, 41), "02:00:00:00:00:41")
    };
    c.cluster_event(ClusterEvent::EndpointUp(mine));
    assert_eq!(dp.model().static_macs.len(), 1);
    // The remote address is not handed out here.
    let local = c.attach(attach("ns1")).unwrap();
    assert_ne!(local.ip.addr(), ep.ip);
    // Neither store peers nor cluster-wide networks go to the state file.
    let saved = dir.saved();
    assert!(
        !saved.contains("192.0.2.2") && !saved.contains("\"ov\""),
        "{saved}"
    );

    c.cluster_event(ClusterEvent::EndpointDown {
        network: "ov".into(),
        ip: ep.ip,
    });
    let m = dp.model();
    assert!(
        m.static_macs.is_empty() && m.static_neighbors.is_empty(),
        "{m:?}"
    );
    c.cluster_event(ClusterEvent::HostDown(OTHER));
    assert!(dp.model().peers.is_empty());
    // A network removed elsewhere while this host has endpoints stays.
    c.cluster_event(ClusterEvent::NetworkDown("ov".into()));
    assert_eq!(c.network_list().len(), 1);
}

#[test]
fn a_host_that_takes_remote_checksum_offload_becomes_such_a_peer() {
    let (dp, prov, dir) = (
        FakeDatapath::default(),
        FakeProvisioner::with_namespaces(&[]),
        StateDir::new("cluster-rco"),
    );
    let mut c = control(&dp, &prov, &dir);
    c.set_cluster(Box::new(MemStore::default()));
    let rco_host = HostRecord {
        remote_csum: true,
        ..other_host()
    };
    c.cluster_event(ClusterEvent::HostUp(rco_host));
    c.cluster_event(ClusterEvent::NetworkUp(ov_record()));
    assert_eq!(
        dp.model()
            .remote_csum_tunnels
            .into_iter()
            .collect::<Vec<_>>(),
        [(OTHER, 9)]
    );
    assert!(c.peer_list()[0].remote_csum);

    // A record from a build before the field: no RCO.
    let old: HostRecord =
        serde_json::from_str(r#"{"vtep":"192.0.2.3:4789","underlay_mtu":1500,"version":"0.0.9"}"#)
            .unwrap();
    assert!(!old.remote_csum);
    c.cluster_event(ClusterEvent::HostUp(old));
    let peers = c.peer_list();
    let third = peers.iter().find(|p| p.addr == "192.0.2.3:4789").unwrap();
    assert!(!third.remote_csum);
    assert_eq!(dp.model().remote_csum_tunnels.len(), 1);
}

#[test]
fn attach_takes_addresses_from_leased_blocks_and_skips_ones_taken_elsewhere() {
    let (dp, prov, dir) = (
        FakeDatapath::default(),
        FakeProvisioner::with_namespaces(&["ns1", "ns2"]),
        StateDir::new("cluster-ipam"),
    );
    let mut c = control(&dp, &prov, &dir);
    let store = MemStore::default();
    c.set_cluster(Box::new(store.clone()));
    // Another host's block holds the start of the subnet.
    store
        .0
        .lock()
        .unwrap()
        .blocks
        .insert("10.9.0.0/28".parse().unwrap(), OTHER);
    c.network_create(NetworkSpec {
        name: "ov".into(),
        subnet: "10.9.0.0/24".into(),
        vni: Some(9),
        ..NetworkSpec::default()
    })
    .unwrap();
    assert!(store.0.lock().unwrap().networks.contains_key("ov"));
    // Someone already published the first address of the block this host
    // will lease (an explicit --ip elsewhere): it is skipped.
    let squatter = remote_ep(Ipv4Addr::new(10, 9, 0, 16), "02:00:00:00:00:16");
    store
        .0
        .lock()
        .unwrap()
        .endpoints
        .insert(("ov".into(), squatter.ip), squatter);
    let a = c.attach(attach("ns1")).unwrap();
    assert_eq!(a.ip.addr(), Ipv4Addr::new(10, 9, 0, 17));
    let published = store.0.lock().unwrap().endpoints.clone();
    assert_eq!(published[&("ov".into(), a.ip.addr())].host, ME);

    // An unreachable store refuses the attach and leaves nothing.
    store.0.lock().unwrap().down = true;
    let before = (dp.model(), prov.open_devices());
    let e = c.attach(attach("ns2")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::System);
    assert_eq!((dp.model(), prov.open_devices()), before);
    store.0.lock().unwrap().down = false;

    // Detach withdraws; then the network can go, from the store too.
    c.detach("ov", &a.name).unwrap();
    assert!(!store
        .0
        .lock()
        .unwrap()
        .endpoints
        .contains_key(&("ov".into(), a.ip.addr())));
    store.0.lock().unwrap().endpoints.clear();
    c.network_remove("ov").unwrap();
    assert!(store.0.lock().unwrap().networks.is_empty());
}

#[test]
fn network_refused_by_the_store_is_not_created_here() {
    let (dp, prov, dir) = (
        FakeDatapath::default(),
        FakeProvisioner::with_namespaces(&[]),
        StateDir::new("cluster-refused"),
    );
    let mut c = control(&dp, &prov, &dir);
    let store = MemStore::default();
    store
        .0
        .lock()
        .unwrap()
        .networks
        .insert("ov".into(), ov_record());
    c.set_cluster(Box::new(store));
    let e = c
        .network_create(NetworkSpec {
            name: "ov".into(),
            subnet: "10.9.0.0/24".into(),
            vni: Some(9),
            ..NetworkSpec::default()
        })
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert!(c.network_list().is_empty());
    assert!(dp.model().networks.is_empty());
    // A network without a VNI stays local and needs no store.
    c.network_create(NetworkSpec {
        name: "local".into(),
        subnet: "10.8.0.0/24".into(),
        ..NetworkSpec::default()
    })
    .unwrap();
    assert!(dir.saved().contains("local"));
}
