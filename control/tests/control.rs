//! The control plane's rules, over a fake datapath and provisioner: every
//! API operation, every refusal leaving everything as it was, and requests
//! whose later step fails leaving nothing of their earlier steps. These run
//! as an ordinary user, without namespaces.

mod fake;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use fake::{control, FakeDatapath, FakeProvisioner, Model, StateDir, TestControl};
use weft_api::{
    EndpointInfo, ErrorKind, KernelPortStats, NetworkInfo, PeerInfo, PublishInfo, Request,
    Response, RouteInfo, ServiceInfo, TapCounters, UplinkInfo,
};
use weft_control::{AttachSpec, NetworkSpec};
use weft_packet::MacAddr;
use weft_switch::mac_table::Learned;
use weft_switch::neighbor::Neighbor;
use weft_switch::{NetworkId, PortId};

/// Everything a request could change, as seen from outside.
#[derive(Debug, PartialEq)]
struct Seen {
    networks: Vec<NetworkInfo>,
    routes: Vec<RouteInfo>,
    endpoints: Vec<EndpointInfo>,
    publishes: Vec<PublishInfo>,
    services: Vec<ServiceInfo>,
    peers: Vec<PeerInfo>,
    uplink: Option<UplinkInfo>,
    model: Model,
    open_devices: usize,
    resolv_confs: BTreeSet<PathBuf>,
    saved: String,
}

struct World {
    dp: FakeDatapath,
    prov: FakeProvisioner,
    dir: StateDir,
}

impl World {
    fn new(tag: &str) -> Self {
        World {
            dp: FakeDatapath::default(),
            prov: FakeProvisioner::with_namespaces(&["ns1", "ns2", "ns3", "ns4"]),
            dir: StateDir::new(tag),
        }
    }

    fn control(&self) -> TestControl<'_> {
        control(&self.dp, &self.prov, &self.dir)
    }

    fn seen(&self, c: &TestControl<'_>) -> Seen {
        Seen {
            networks: c.network_list(),
            routes: c.route_list(),
            endpoints: c.endpoint_list(None).unwrap(),
            publishes: c.publish_list(),
            services: c.service_list(),
            peers: c.peer_list(),
            uplink: c.uplink_show().ok(),
            model: self.dp.model(),
            open_devices: self.prov.open_devices(),
            resolv_confs: self.prov.resolv_confs.lock().unwrap().clone(),
            saved: self.dir.saved(),
        }
    }
}

fn net(name: &str, subnet: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        subnet: subnet.into(),
        ..NetworkSpec::default()
    }
}

fn overlay(name: &str, subnet: &str, vni: u32) -> NetworkSpec {
    NetworkSpec {
        vni: Some(vni),
        ..net(name, subnet)
    }
}

fn attach(network: &str, netns: &str) -> AttachSpec {
    AttachSpec {
        network: network.into(),
        netns: Some(netns.into()),
        ..AttachSpec::default()
    }
}

/// Applies `request`, expects a refusal of `kind` that changed nothing,
/// and returns its message.
fn refused(w: &World, c: &mut TestControl<'_>, request: Request, kind: ErrorKind) -> String {
    let before = w.seen(c);
    let e = c
        .handle(request.clone())
        .expect_err(&format!("{request:?} should be refused"));
    assert_eq!(e.kind, kind, "{request:?}: {}", e.message);
    assert!(!e.message.is_empty());
    assert_eq!(
        w.seen(c),
        before,
        "{request:?} was refused but changed state"
    );
    e.message
}

fn create(c: &mut TestControl<'_>, spec: NetworkSpec) -> NetworkInfo {
    c.network_create(spec).unwrap()
}

fn create_req(name: &str, subnet: &str) -> Request {
    Request::NetworkCreate {
        name: name.into(),
        subnet: subnet.into(),
        gateway: None,
        mtu: None,
        internal: false,
        vni: None,
        ip_range: None,
        nat_filtering: None,
        nat_max_flows: None,
        nat_max_ports: None,
    }
}

fn attach_req(spec: AttachSpec) -> Request {
    Request::Attach {
        network: spec.network,
        netns: spec.netns,
        pid: spec.pid,
        name: spec.name,
        ip: spec.ip,
        mac: spec.mac,
        ifname: spec.ifname,
        publish: spec.publish,
        aliases: spec.aliases,
        no_resolv_conf: spec.no_resolv_conf,
        owner: spec.owner,
    }
}

// ---- status and networks ------------------------------------------------

#[test]
fn status_counts_networks_and_endpoints() {
    let w = World::new("status");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.attach(attach("a", "ns1")).unwrap();
    let Response::Status(s) = c.handle(Request::Status).unwrap() else {
        panic!("status reply")
    };
    assert_eq!((s.networks, s.endpoints), (1, 1));
    assert_eq!(s.api_version, weft_api::API_VERSION);
    assert_eq!(s.vxlan_listen, None, "no VTEP until an overlay needs one");
}

#[test]
fn network_create_takes_the_first_host_as_gateway_and_is_saved() {
    let w = World::new("create");
    let mut c = w.control();
    let info = create(&mut c, net("a", "10.1.0.0/24"));
    assert_eq!(info.gateway.to_string(), "10.1.0.1");
    assert_eq!(info.mtu, 1500);
    assert_eq!(info.free_addresses, 253);
    assert_eq!(w.dp.model().networks.len(), 1);
    assert!(w.dir.saved().contains("10.1.0.0/24"));
}

#[test]
fn network_create_refuses_bad_names_subnets_gateways_and_mtus() {
    let w = World::new("create-bad");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    for name in ["", "-x", "has space", &"n".repeat(65)] {
        let msg = refused(
            &w,
            &mut c,
            create_req(name, "10.9.0.0/24"),
            ErrorKind::InvalidArgument,
        );
        assert!(msg.contains("not valid"), "{msg}");
    }
    refused(
        &w,
        &mut c,
        create_req("b", "10.9.0.0/33"),
        ErrorKind::InvalidArgument,
    );
    refused(
        &w,
        &mut c,
        create_req("b", "nonsense"),
        ErrorKind::InvalidArgument,
    );
    let mut req = create_req("b", "10.9.0.0/24");
    if let Request::NetworkCreate { gateway, .. } = &mut req {
        *gateway = Some("10.8.0.1".into());
    }
    let msg = refused(&w, &mut c, req, ErrorKind::InvalidArgument);
    assert!(msg.contains("not a host address"), "{msg}");
    for bad_mtu in [67, 65522] {
        let mut req = create_req("b", "10.9.0.0/24");
        if let Request::NetworkCreate { mtu, .. } = &mut req {
            *mtu = Some(bad_mtu);
        }
        refused(&w, &mut c, req, ErrorKind::InvalidArgument);
    }
}

#[test]
fn network_create_refuses_a_taken_name_or_an_overlapping_subnet() {
    let w = World::new("create-dup");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    refused(
        &w,
        &mut c,
        create_req("a", "10.2.0.0/24"),
        ErrorKind::AlreadyExists,
    );
    let msg = refused(
        &w,
        &mut c,
        create_req("b", "10.1.0.128/25"),
        ErrorKind::Conflict,
    );
    assert!(msg.contains("overlaps network `a`"), "{msg}");
}

#[test]
fn network_create_refused_by_the_datapath_leaves_nothing() {
    let w = World::new("create-dp");
    let mut c = w.control();
    w.dp.fail_after("AddNetwork", 0);
    refused(
        &w,
        &mut c,
        create_req("a", "10.1.0.0/24"),
        ErrorKind::Internal,
    );
    assert!(
        c.network_create(net("a", "10.1.0.0/24")).is_ok(),
        "the name is free again"
    );
}

#[test]
fn internal_network_whose_flag_fails_is_removed_again() {
    let w = World::new("create-internal");
    let mut c = w.control();
    w.dp.fail_after("SetInternal", 0);
    let mut req = create_req("a", "10.1.0.0/24");
    if let Request::NetworkCreate { internal, .. } = &mut req {
        *internal = true;
    }
    let message = refused(&w, &mut c, req, ErrorKind::Internal);
    assert!(
        message.contains("change 1 of the batch (SetInternal)"),
        "{message}"
    );
    // The network and its flag were one batch: the datapath never held it.
    assert_eq!(w.dp.count("AddNetwork"), 0);
    assert_eq!(w.dp.count("RemoveNetwork"), 0);
    assert!(w.dp.model().networks.is_empty());
}

#[test]
fn network_create_that_cannot_be_saved_is_undone() {
    let w = World::new("create-save");
    let mut c = w.control();
    w.dir.break_saving();
    let msg = refused(
        &w,
        &mut c,
        create_req("a", "10.1.0.0/24"),
        ErrorKind::System,
    );
    assert!(msg.contains("could not be saved"), "{msg}");
    w.dir.mend_saving();
    create(&mut c, net("a", "10.1.0.0/24"));
}

#[test]
fn additions_that_cannot_be_saved_are_undone() {
    let w = World::new("add-save");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    // Published ports need an uplink.
    c.handle(Request::UplinkSet {
        interface: "eth9".into(),
        ip: "192.0.2.10/24".into(),
        gateway: None,
        sockets: false,
    })
    .unwrap();
    c.handle(attach_req(attach("a", "ns1"))).unwrap();
    w.dir.break_saving();
    let attach_ns2 = attach_req(AttachSpec {
        publish: vec!["8080:80".into()],
        ..attach("a", "ns2")
    });
    for request in [
        attach_ns2.clone(),
        Request::PublishAdd {
            network: "a".into(),
            endpoint: "ns1".into(),
            spec: "9090:90/udp".into(),
            host_ip: None,
        },
        Request::ServiceCreate {
            name: "web".into(),
            network: "a".into(),
            vip: "10.1.0.200".into(),
            port: "80".into(),
            backends: vec!["ns1".into()],
            lb: None,
        },
    ] {
        let msg = refused(&w, &mut c, request, ErrorKind::System);
        assert!(msg.contains("could not be saved"), "{msg}");
    }
    w.dir.mend_saving();
    // What was undone can be made again.
    c.handle(attach_ns2).unwrap();
}

#[test]
fn overlay_network_binds_the_vtep_and_fits_the_underlay() {
    let w = World::new("overlay");
    let mut c = w.control();
    let info = create(&mut c, overlay("ov", "10.20.0.0/24", 42));
    assert_eq!(info.vni, Some(42));
    assert_eq!(info.mtu, 1450, "1500 less 50 bytes of VXLAN headers");
    assert!(w.dp.model().vtep_bound);
    assert!(c.status().vxlan_listen.is_some());
}

#[test]
fn overlay_network_refuses_reserved_taken_and_oversized_vnis() {
    let w = World::new("overlay-vni");
    let mut c = w.control();
    create(&mut c, overlay("ov", "10.20.0.0/24", 42));
    for (vni, kind) in [
        (0, ErrorKind::InvalidArgument),
        (1 << 24, ErrorKind::InvalidArgument),
        (42, ErrorKind::AlreadyExists),
    ] {
        let mut req = create_req("ov2", "10.21.0.0/24");
        if let Request::NetworkCreate { vni: v, .. } = &mut req {
            *v = Some(vni);
        }
        refused(&w, &mut c, req, kind);
    }
}

#[test]
fn overlay_network_whose_vtep_cannot_bind_leaves_nothing() {
    let w = World::new("overlay-bind");
    let mut c = w.control();
    w.prov
        .fail_vtep
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let mut req = create_req("ov", "10.20.0.0/24");
    if let Request::NetworkCreate { vni, .. } = &mut req {
        *vni = Some(7);
    }
    refused(&w, &mut c, req, ErrorKind::System);
    assert!(!w.dp.model().vtep_bound);
}

#[test]
fn overlay_network_whose_tunnel_fails_is_removed_with_its_other_tunnels() {
    let w = World::new("overlay-tunnel");
    let mut c = w.control();
    c.peer_add("192.0.2.7", false).unwrap();
    c.peer_add("192.0.2.8", false).unwrap();
    w.dp.fail_after("AddTunnel", 1);
    let mut req = create_req("ov", "10.20.0.0/24");
    if let Request::NetworkCreate { vni, .. } = &mut req {
        *vni = Some(7);
    }
    refused(&w, &mut c, req, ErrorKind::Internal);
    assert!(
        w.dp.model().ports.is_empty(),
        "the first tunnel was removed"
    );
}

#[test]
fn network_inspect_shows_endpoints_and_routes() {
    let w = World::new("inspect");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    create(&mut c, net("b", "10.2.0.0/24"));
    c.route_set("a", "b", true).unwrap();
    c.attach(attach("a", "ns1")).unwrap();
    let detail = c.network_inspect("a").unwrap();
    assert_eq!(detail.attached.len(), 1);
    assert_eq!(detail.routes_to, vec!["b".to_string()]);
    assert_eq!(detail.network.endpoints, 1);
    refused(
        &w,
        &mut c,
        Request::NetworkInspect { name: "zz".into() },
        ErrorKind::NotFound,
    );
}

#[test]
fn network_remove_is_refused_while_endpoints_or_services_remain() {
    let w = World::new("rm-busy");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.attach(attach("a", "ns1")).unwrap();
    let msg = refused(
        &w,
        &mut c,
        Request::NetworkRemove { name: "a".into() },
        ErrorKind::Conflict,
    );
    assert!(msg.contains("ns1"), "{msg}");
    c.detach("a", "ns1").unwrap();
    c.service_create("web", "a", "10.1.0.100", "80", &[], None)
        .unwrap();
    let msg = refused(
        &w,
        &mut c,
        Request::NetworkRemove { name: "a".into() },
        ErrorKind::Conflict,
    );
    assert!(msg.contains("web"), "{msg}");
    refused(
        &w,
        &mut c,
        Request::NetworkRemove { name: "zz".into() },
        ErrorKind::NotFound,
    );
}

#[test]
fn network_remove_drops_its_routes_and_tunnels_and_is_saved() {
    let w = World::new("rm");
    let mut c = w.control();
    c.peer_add("192.0.2.7", false).unwrap();
    create(&mut c, overlay("ov", "10.20.0.0/24", 9));
    create(&mut c, net("b", "10.2.0.0/24"));
    c.route_set("ov", "b", true).unwrap();
    c.network_remove("ov").unwrap();
    let m = w.dp.model();
    assert!(m.routes.is_empty() && m.ports.is_empty());
    assert_eq!(m.networks.len(), 1);
    assert!(c.route_list().is_empty());
    assert!(!w.dir.saved().contains("10.20.0.0"));
}

#[test]
fn network_remove_that_cannot_be_saved_puts_the_network_back() {
    let w = World::new("rm-save");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    create(&mut c, net("b", "10.2.0.0/24"));
    c.route_set("a", "b", true).unwrap();
    w.dir.break_saving();
    let e = c.network_remove("a").unwrap_err();
    assert_eq!(e.kind, ErrorKind::System);
    assert_eq!(c.network_list().len(), 2);
    assert_eq!(c.route_list().len(), 1);
    assert_eq!(w.dp.model().routes.len(), 1);
}

// ---- routes ---------------------------------------------------------------

#[test]
fn routes_reach_the_datapath_and_are_saved() {
    let w = World::new("routes");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    create(&mut c, net("b", "10.2.0.0/24"));
    c.handle(Request::RouteAllow {
        a: "b".into(),
        b: "a".into(),
    })
    .unwrap();
    assert_eq!(w.dp.model().routes.len(), 1);
    assert_eq!(c.route_list()[0].a, "a", "stored smaller name first");
    assert!(w.dir.saved().contains("\"a\""));
    c.route_set("a", "b", false).unwrap();
    assert!(w.dp.model().routes.is_empty());
    assert!(c.route_list().is_empty());
}

#[test]
fn routes_are_refused_to_internal_unknown_or_identical_networks() {
    let w = World::new("routes-bad");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.network_create(NetworkSpec {
        internal: true,
        ..net("in", "10.3.0.0/24")
    })
    .unwrap();
    let allow = |a: &str, b: &str| Request::RouteAllow {
        a: a.into(),
        b: b.into(),
    };
    let msg = refused(&w, &mut c, allow("a", "in"), ErrorKind::Conflict);
    assert!(msg.contains("internal"), "{msg}");
    refused(&w, &mut c, allow("a", "a"), ErrorKind::InvalidArgument);
    refused(&w, &mut c, allow("a", "zz"), ErrorKind::NotFound);
}

#[test]
fn route_that_cannot_be_saved_is_undone() {
    let w = World::new("routes-save");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    create(&mut c, net("b", "10.2.0.0/24"));
    w.dir.break_saving();
    refused(
        &w,
        &mut c,
        Request::RouteAllow {
            a: "a".into(),
            b: "b".into(),
        },
        ErrorKind::System,
    );
}

// ---- attach and detach -------------------------------------------------------

#[test]
fn attach_takes_the_first_free_address_a_stable_mac_and_eth0() {
    let w = World::new("attach");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    let one = c.attach(attach("a", "ns1")).unwrap();
    let two = c.attach(attach("a", "ns2")).unwrap();
    assert_eq!(
        (one.ip.to_string().as_str(), two.ip.to_string().as_str()),
        ("10.1.0.2/24", "10.1.0.3/24")
    );
    assert_eq!(one.ifname, "eth0");
    assert_eq!(one.name, "ns1", "named after the namespace");
    assert_ne!(one.mac, two.mac);
    let mac: MacAddr = one.mac.parse().unwrap();
    assert!(mac.is_unicast());
    assert_eq!(w.prov.open_devices(), 2);
    let taps = w.prov.taps.lock().unwrap();
    assert_eq!(taps[0].1.default_gateway, Some(Ipv4Addr::new(10, 1, 0, 1)));
    assert_eq!(taps[0].1.mtu, 1500);
}

#[test]
fn endpoints_whose_namespace_is_gone_are_reaped() {
    let w = World::new("reap");
    w.prov.pids.lock().unwrap().insert(4242, (1, 999));
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    let one = c.attach(attach("a", "ns1")).unwrap();
    let two = c.attach(attach("a", "ns2")).unwrap();
    let by_pid = c
        .attach(AttachSpec {
            network: "a".into(),
            pid: Some(4242),
            ..AttachSpec::default()
        })
        .unwrap();
    assert_eq!(w.prov.open_devices(), 3);
    assert!(c.reap_gone_endpoints().is_empty(), "nothing is gone yet");

    // ns1 is deleted; ns2 is deleted and made again (another namespace
    // under the same name); the process exits.
    w.prov.namespaces.lock().unwrap().remove("ns1");
    w.prov
        .namespaces
        .lock()
        .unwrap()
        .insert("ns2".into(), (1, 777));
    w.prov.pids.lock().unwrap().remove(&4242);
    let mut reaped: Vec<String> = c
        .reap_gone_endpoints()
        .into_iter()
        .map(|e| e.name)
        .collect();
    reaped.sort();
    assert_eq!(
        reaped,
        vec![one.name.clone(), two.name.clone(), by_pid.name.clone()]
    );
    assert!(c.endpoint_list(None).unwrap().is_empty());
    assert_eq!(w.prov.open_devices(), 0, "the devices were closed");
    assert!(
        w.prov.resolv_confs.lock().unwrap().is_empty(),
        "the resolv.conf files were removed"
    );
    // The addresses are free again: the next endpoint gets .2.
    w.prov
        .namespaces
        .lock()
        .unwrap()
        .insert("ns3".into(), (1, 555));
    let three = c.attach(attach("a", "ns3")).unwrap();
    assert_eq!(three.ip, one.ip);
    assert!(c.reap_gone_endpoints().is_empty());
}

#[test]
fn attach_by_pid_is_named_after_the_pid() {
    let w = World::new("attach-pid");
    w.prov.pids.lock().unwrap().insert(4242, (1, 999));
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    let ep = c
        .attach(AttachSpec {
            network: "a".into(),
            pid: Some(4242),
            ..AttachSpec::default()
        })
        .unwrap();
    assert_eq!(ep.name, "pid-4242");
    assert_eq!(ep.netns, "/proc/4242/ns/net");
    assert!(
        w.prov.resolv_confs.lock().unwrap().is_empty(),
        "a process's namespace has no /etc/netns entry"
    );
}

/// An attach through a pinned namespace (the daemon's held descriptor of
/// the namespace it checked) makes the TAP through that path and records
/// the pid's path; when the pid has meanwhile come to name another
/// namespace (the process exited and its pid was reused), it is refused
/// and nothing is made.
#[test]
fn a_pinned_attach_uses_the_checked_namespace_or_nothing() {
    let w = World::new("attach-pinned");
    w.prov.pids.lock().unwrap().insert(4242, (1, 999));
    let pinned = PathBuf::from("/proc/77/fd/9");
    w.prov
        .paths
        .lock()
        .unwrap()
        .insert(pinned.clone(), (1, 999));
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    let ep = c
        .attach(AttachSpec {
            network: "a".into(),
            pid: Some(4242),
            pinned_netns: Some(pinned.clone()),
            ..AttachSpec::default()
        })
        .unwrap();
    assert_eq!(ep.netns, "/proc/4242/ns/net", "the named path is recorded");
    let taps = w.prov.taps.lock().unwrap().clone();
    assert_eq!(taps.len(), 1);
    assert_eq!(taps[0].0, pinned, "the TAP is made through the pinned path");

    // The pid now names another process's namespace.
    w.prov.pids.lock().unwrap().insert(4242, (1, 1000));
    let request = attach_req(AttachSpec {
        network: "a".into(),
        pid: Some(4242),
        name: Some("again".into()),
        ..AttachSpec::default()
    });
    let before = w.seen(&c);
    let e = c
        .handle_pinned(request, Some(pinned))
        .expect_err("a pid that changed namespace is refused");
    assert_eq!(e.kind, ErrorKind::NotFound, "{}", e.message);
    assert!(e.message.contains("no longer leads"), "{}", e.message);
    assert_eq!(w.seen(&c), before, "a refused attach changed state");
    assert_eq!(w.prov.taps.lock().unwrap().len(), 1, "a TAP was made");
}

#[test]
fn attach_needs_exactly_one_namespace_that_exists() {
    let w = World::new("attach-ns");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    let both = AttachSpec {
        pid: Some(1),
        ..attach("a", "ns1")
    };
    refused(&w, &mut c, attach_req(both), ErrorKind::InvalidArgument);
    let neither = AttachSpec {
        network: "a".into(),
        ..AttachSpec::default()
    };
    refused(&w, &mut c, attach_req(neither), ErrorKind::InvalidArgument);
    refused(
        &w,
        &mut c,
        attach_req(attach("a", "nope")),
        ErrorKind::NotFound,
    );
    refused(
        &w,
        &mut c,
        attach_req(attach("zz", "ns1")),
        ErrorKind::NotFound,
    );
}

#[test]
fn attach_refuses_a_taken_name_address_or_mac() {
    let w = World::new("attach-taken");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    let first = c.attach(attach("a", "ns1")).unwrap();
    refused(
        &w,
        &mut c,
        attach_req(AttachSpec {
            name: Some("ns1".into()),
            ..attach("a", "ns2")
        }),
        ErrorKind::AlreadyExists,
    );
    refused(
        &w,
        &mut c,
        attach_req(AttachSpec {
            ip: Some("10.1.0.2".into()),
            ..attach("a", "ns2")
        }),
        ErrorKind::AlreadyExists,
    );
    refused(
        &w,
        &mut c,
        attach_req(AttachSpec {
            mac: Some(first.mac.clone()),
            ..attach("a", "ns2")
        }),
        ErrorKind::AlreadyExists,
    );
}

#[test]
fn attach_refuses_bad_addresses_macs_aliases_and_ports() {
    let w = World::new("attach-bad");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.uplink_set("eth9", "192.0.2.50/24", None).unwrap();
    let cases = [
        AttachSpec {
            ip: Some("10.2.0.5".into()),
            ..attach("a", "ns1")
        },
        AttachSpec {
            ip: Some("10.1.0.255".into()),
            ..attach("a", "ns1")
        },
        AttachSpec {
            mac: Some("01:00:5e:00:00:01".into()),
            ..attach("a", "ns1")
        },
        AttachSpec {
            mac: Some("zz".into()),
            ..attach("a", "ns1")
        },
        AttachSpec {
            aliases: vec!["bad alias".into()],
            ..attach("a", "ns1")
        },
        AttachSpec {
            publish: vec!["80".into()],
            ..attach("a", "ns1")
        },
        AttachSpec {
            publish: vec!["8080:80".into(), "8080:81".into()],
            ..attach("a", "ns1")
        },
        AttachSpec {
            name: Some("-x".into()),
            ..attach("a", "ns1")
        },
    ];
    for spec in cases {
        refused(&w, &mut c, attach_req(spec), ErrorKind::InvalidArgument);
    }
}

#[test]
fn attach_refuses_an_exhausted_pool() {
    let w = World::new("attach-full");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/30"));
    c.attach(attach("a", "ns1")).unwrap();
    let msg = refused(
        &w,
        &mut c,
        attach_req(attach("a", "ns2")),
        ErrorKind::Exhausted,
    );
    assert!(msg.contains("network `a`"), "{msg}");
}

#[test]
fn attach_whose_device_cannot_be_made_leaves_nothing() {
    let w = World::new("attach-tap");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    w.prov
        .fail_tap
        .store(1, std::sync::atomic::Ordering::SeqCst);
    refused(
        &w,
        &mut c,
        attach_req(attach("a", "ns1")),
        ErrorKind::System,
    );
    assert_eq!(
        c.attach(attach("a", "ns1")).unwrap().ip.to_string(),
        "10.1.0.2/24"
    );
}

#[test]
fn attach_refused_by_the_datapath_closes_the_device() {
    let w = World::new("attach-dp");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    w.dp.fail_after("AddPort", 0);
    refused(
        &w,
        &mut c,
        attach_req(attach("a", "ns1")),
        ErrorKind::Internal,
    );
    assert_eq!(w.prov.open_devices(), 0);
}

#[test]
fn attach_whose_second_port_fails_to_publish_undoes_everything() {
    let w = World::new("attach-publish");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.uplink_set("eth9", "192.0.2.50/24", None).unwrap();
    w.dp.fail_after("Publish", 1);
    refused(
        &w,
        &mut c,
        attach_req(AttachSpec {
            publish: vec!["8080:80".into(), "5353:53/udp".into()],
            ..attach("a", "ns1")
        }),
        ErrorKind::Internal,
    );
    // The port and its publishes were one batch: none of it was kept, and
    // nothing needed undoing from outside.
    assert_eq!(w.dp.count("Publish"), 0, "the first port was not kept");
    assert_eq!(w.dp.count("AddPort"), 0);
    assert_eq!(w.dp.count("Unpublish"), 0);
    assert!(w.dp.model().publishes.is_empty());
    assert_eq!(w.prov.open_devices(), 1, "only the uplink");
    assert_eq!(c.network_list()[0].free_addresses, 253);
}

#[test]
fn only_the_first_network_of_a_namespace_sets_its_default_route_and_resolver() {
    let w = World::new("attach-second");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    create(&mut c, net("b", "10.2.0.0/24"));
    c.attach(attach("a", "ns1")).unwrap();
    let second = c.attach(attach("b", "ns1")).unwrap();
    assert_eq!(
        second.ifname, "eth0",
        "the fake has no links; the name is free"
    );
    let taps = w.prov.taps.lock().unwrap();
    assert_eq!(taps[1].1.default_gateway, None);
    assert_eq!(w.prov.resolv_confs.lock().unwrap().len(), 1);
}

#[test]
fn attach_skips_interface_names_the_namespace_has() {
    let w = World::new("attach-ifname");
    w.prov.links.lock().unwrap().insert(
        PathBuf::from("/var/run/netns/ns1"),
        ["eth0".to_string(), "eth1".to_string()].into(),
    );
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    assert_eq!(c.attach(attach("a", "ns1")).unwrap().ifname, "eth2");
}

#[test]
fn attach_can_leave_the_resolver_alone() {
    let w = World::new("attach-resolv");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.attach(AttachSpec {
        no_resolv_conf: true,
        ..attach("a", "ns1")
    })
    .unwrap();
    assert!(w.prov.resolv_confs.lock().unwrap().is_empty());
}

#[test]
fn attach_takes_a_namespace_path() {
    let w = World::new("attach-path");
    w.prov
        .paths
        .lock()
        .unwrap()
        .insert(PathBuf::from("/run/user/1000/netns/cni-1234"), (1, 500));
    w.prov.pids.lock().unwrap().insert(4242, (1, 501));
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    let bind = c
        .attach(attach("a", "/run/user/1000/netns/cni-1234"))
        .unwrap();
    assert_eq!(bind.netns, "/run/user/1000/netns/cni-1234");
    assert_eq!(bind.name, "cni-1234", "named after the file by default");
    let proc = c.attach(attach("a", "/proc/4242/ns/net")).unwrap();
    assert_eq!(proc.name, "pid-4242");
    // A named namespace under its path is the same namespace: its second
    // network does not set the default route again.
    create(&mut c, net("b", "10.2.0.0/24"));
    c.attach(attach("a", "ns1")).unwrap();
    let by_path = c
        .attach(AttachSpec {
            name: Some("ns1-b".into()),
            ..attach("b", "/run/netns/ns1")
        })
        .unwrap();
    assert_eq!(by_path.netns, "/run/netns/ns1");
    let taps = w.prov.taps.lock().unwrap();
    assert!(taps[0].1.default_gateway.is_some());
    assert_eq!(taps[3].1.default_gateway, None);
    assert_eq!(
        w.prov.resolv_confs.lock().unwrap().len(),
        1,
        "only the named attach writes a resolver file"
    );
}

#[test]
fn attach_refuses_a_missing_namespace_path() {
    let w = World::new("attach-path-missing");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    refused(
        &w,
        &mut c,
        attach_req(attach("a", "/run/netns/nope")),
        ErrorKind::NotFound,
    );
}

#[test]
fn endpoints_remember_their_owner() {
    let w = World::new("attach-owner");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    let owner = weft_api::EndpointOwner {
        network: "front".into(),
        container_id: "c0ffee".into(),
        ifname: "eth0".into(),
    };
    let info = c
        .attach(AttachSpec {
            owner: Some(owner.clone()),
            ..attach("a", "ns1")
        })
        .unwrap();
    assert_eq!(info.owner.as_ref(), Some(&owner));
    let plain = c.attach(attach("a", "ns2")).unwrap();
    assert_eq!(plain.owner, None);
    let listed = c.endpoint_list(Some("a")).unwrap();
    let found: Vec<_> = listed
        .iter()
        .filter(|e| e.owner.as_ref() == Some(&owner))
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(found, ["ns1"]);
    // One endpoint per owner, in any network: a second attach of the same
    // container interface is refused and changes nothing.
    create(&mut c, net("b", "10.2.0.0/24"));
    for network in ["a", "b"] {
        let again = AttachSpec {
            owner: Some(owner.clone()),
            name: Some("again".into()),
            ..attach(network, "ns4")
        };
        let msg = refused(&w, &mut c, attach_req(again), ErrorKind::AlreadyExists);
        assert!(msg.contains("c0ffee"), "{msg}");
        assert!(msg.contains("`ns1`"), "{msg}");
    }
    assert_eq!(c.endpoint_list(None).unwrap().len(), 2);
    // The same container and interface on another runtime network is
    // another owner.
    let other = weft_api::EndpointOwner {
        network: "back".into(),
        ..owner.clone()
    };
    c.attach(AttachSpec {
        owner: Some(other),
        ..attach("b", "ns3")
    })
    .unwrap();
    // On the wire: present when set, absent when not, and old requests
    // without an owner still decode.
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["owner"]["container_id"], "c0ffee");
    assert_eq!(json["owner"]["ifname"], "eth0");
    assert_eq!(json["owner"]["network"], "front");
    let unnamed: weft_api::EndpointOwner =
        serde_json::from_str(r#"{"container_id":"c","ifname":"eth0"}"#).unwrap();
    assert_eq!(unnamed.network, "");
    assert!(serde_json::to_value(&plain).unwrap().get("owner").is_none());
    let old: Request =
        serde_json::from_str(r#"{"op":"attach","network":"a","netns":"ns3"}"#).unwrap();
    assert!(matches!(old, Request::Attach { owner: None, .. }));
}

#[test]
fn detach_frees_the_address_device_ports_backends_and_resolver() {
    let w = World::new("detach");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.uplink_set("eth9", "192.0.2.50/24", None).unwrap();
    let before = w.seen(&c);
    c.attach(AttachSpec {
        publish: vec!["8080:80".into()],
        ..attach("a", "ns1")
    })
    .unwrap();
    c.service_create("web", "a", "10.1.0.100", "80", &["ns1".into()], None)
        .unwrap();
    c.detach("a", "ns1").unwrap();
    assert!(c.service_list()[0].backends.is_empty());
    c.service_remove("web").unwrap();
    assert_eq!(w.seen(&c), before);
}

#[test]
fn detach_is_one_batch_and_a_refused_one_changes_nothing() {
    let w = World::new("detach-batch");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.uplink_set("eth9", "192.0.2.50/24", None).unwrap();
    c.attach(AttachSpec {
        publish: vec!["8080:80".into(), "5353:53/udp".into()],
        ..attach("a", "ns1")
    })
    .unwrap();
    c.service_create("web", "a", "10.1.0.100", "80", &["ns1".into()], None)
        .unwrap();
    assert_eq!(
        w.dp.batches.lock().unwrap().last().unwrap(),
        &["SetService"],
    );
    let attached = w.dp.batches.lock().unwrap()[2].clone();
    assert_eq!(attached, ["AddPort", "Publish", "Publish"]);

    // The port's removal fails: the publishes and the service stay.
    w.dp.fail_after("RemovePort", 0);
    refused(
        &w,
        &mut c,
        Request::Detach {
            network: "a".into(),
            endpoint: "ns1".into(),
        },
        ErrorKind::Internal,
    );
    assert_eq!(w.dp.model().publishes.len(), 2);
    assert_eq!(w.prov.open_devices(), 2, "the TAP and the uplink");

    c.detach("a", "ns1").unwrap();
    assert_eq!(
        w.dp.batches.lock().unwrap().last().unwrap(),
        &["Unpublish", "Unpublish", "SetService", "RemovePort"],
    );
    assert!(w.dp.model().publishes.is_empty());
    assert_eq!(w.prov.open_devices(), 1, "the uplink");
}

#[test]
fn detach_of_an_unknown_endpoint_is_refused() {
    let w = World::new("detach-bad");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    let detach = |n: &str, e: &str| Request::Detach {
        network: n.into(),
        endpoint: e.into(),
    };
    refused(&w, &mut c, detach("a", "ghost"), ErrorKind::NotFound);
    refused(&w, &mut c, detach("zz", "ghost"), ErrorKind::NotFound);
}

#[test]
fn endpoints_are_listed_per_network() {
    let w = World::new("endpoints");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    create(&mut c, net("b", "10.2.0.0/24"));
    c.attach(attach("a", "ns1")).unwrap();
    c.attach(attach("b", "ns2")).unwrap();
    assert_eq!(c.endpoint_list(None).unwrap().len(), 2);
    let only_b = c.endpoint_list(Some("b")).unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].network, "b");
    refused(
        &w,
        &mut c,
        Request::Endpoints {
            network: Some("zz".into()),
        },
        ErrorKind::NotFound,
    );
}

// ---- forwarding database, neighbours, counters -----------------------------------

#[test]
fn fdb_names_the_endpoint_or_vtep_behind_each_port() {
    let w = World::new("fdb");
    let mut c = w.control();
    c.peer_add("192.0.2.7", false).unwrap();
    let ov = create(&mut c, overlay("ov", "10.20.0.0/24", 5));
    let ep = c.attach(attach("ov", "ns1")).unwrap();
    let tunnel_port = *w
        .dp
        .model()
        .ports
        .iter()
        .find(|(_, k)| **k == "tunnel")
        .unwrap()
        .0;
    let id = NetworkId(1);
    let learned = |port: u32, mac: &str| Learned {
        mac: mac.parse().unwrap(),
        port: PortId(port),
        age: Duration::from_millis(1500),
        is_static: false,
    };
    *w.dp.fdb.lock().unwrap() = vec![
        (id, learned(ep.port, &ep.mac)),
        (id, learned(tunnel_port, "02:00:00:00:00:09")),
    ];
    let rows = c.fdb(Some(&ov.name)).unwrap();
    assert_eq!(rows[0].endpoint.as_deref(), Some("ns1"));
    assert_eq!(rows[1].vtep.as_deref(), Some("192.0.2.7"));
    assert_eq!(rows[0].age_secs, 1.5);
    refused(
        &w,
        &mut c,
        Request::Fdb {
            network: Some("zz".into()),
        },
        ErrorKind::NotFound,
    );
}

#[test]
fn fdb_add_needs_an_overlay_network_and_a_known_peer() {
    let w = World::new("fdb-add");
    let mut c = w.control();
    create(&mut c, net("plain", "10.1.0.0/24"));
    c.peer_add("192.0.2.7", false).unwrap();
    create(&mut c, overlay("ov", "10.20.0.0/24", 5));
    let add = |n: &str, mac: &str, vtep: &str| Request::FdbAdd {
        network: n.into(),
        mac: mac.into(),
        vtep: vtep.into(),
    };
    refused(
        &w,
        &mut c,
        add("plain", "02:00:00:00:00:01", "192.0.2.7"),
        ErrorKind::InvalidArgument,
    );
    refused(
        &w,
        &mut c,
        add("ov", "02:00:00:00:00:01", "192.0.2.99"),
        ErrorKind::NotFound,
    );
    refused(
        &w,
        &mut c,
        add("ov", "ff:ff:ff:ff:ff:ff", "192.0.2.7"),
        ErrorKind::InvalidArgument,
    );
    let Response::StaticMac(added) = c
        .handle(add("ov", "02:00:00:00:00:01", "192.0.2.7"))
        .unwrap()
    else {
        panic!("fdb_add reply")
    };
    assert_eq!(added.vtep.to_string(), "192.0.2.7");
    assert_eq!(w.dp.model().static_macs.len(), 1);
}

#[test]
fn neighbors_are_fed_and_listed() {
    let w = World::new("neigh");
    let mut c = w.control();
    create(&mut c, overlay("ov", "10.20.0.0/24", 5));
    c.neighbor_add("ov", "10.20.0.77", "02:00:00:00:00:77")
        .unwrap();
    assert_eq!(w.dp.model().static_neighbors.len(), 1);
    *w.dp.neighbors.lock().unwrap() = vec![(
        NetworkId(1),
        Neighbor {
            ip: Ipv4Addr::new(10, 20, 0, 77),
            mac: "02:00:00:00:00:77".parse().unwrap(),
            age: Duration::ZERO,
            is_static: true,
        },
    )];
    let rows = c.neighbor_list(Some("ov")).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].r#static);
    refused(
        &w,
        &mut c,
        Request::NeighborAdd {
            network: "ov".into(),
            ip: "not-an-ip".into(),
            mac: "02:00:00:00:00:01".into(),
        },
        ErrorKind::InvalidArgument,
    );
}

#[test]
fn stats_list_every_port_including_the_uplink() {
    let w = World::new("stats");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.attach(attach("a", "ns1")).unwrap();
    c.uplink_set("eth9", "192.0.2.50/24", Some("192.0.2.1"))
        .unwrap();
    w.dp.counters
        .icmp_rate_limited
        .store(3, std::sync::atomic::Ordering::Relaxed);
    let stats = c.stats();
    assert_eq!(stats.ports.len(), 2);
    assert_eq!(stats.ports[1].endpoint, "uplink:eth9");
    assert_eq!(stats.switch_drops.get("icmp_rate_limited"), Some(&3));
    assert!(
        !stats.switch_drops.contains_key("fdb_full"),
        "zeros are left out"
    );
    assert_eq!(stats.ports[1].kernel, None, "the uplink has no TAP to read");
}

#[test]
fn stats_read_each_taps_kernel_counters_and_say_which_are_unavailable() {
    let w = World::new("stats-kernel");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    let one = c.attach(attach("a", "ns1")).unwrap();
    let two = c.attach(attach("a", "ns2")).unwrap();
    let read = TapCounters {
        from_endpoint_packets: 1000,
        from_endpoint_dropped: 24_000,
        to_endpoint_packets: 990,
        to_endpoint_dropped: 3,
    };
    w.prov
        .tap_counters
        .lock()
        .unwrap()
        .insert((PathBuf::from(&one.netns), one.ifname.clone()), read);
    let kernel = |c: &TestControl<'_>, port: u32| {
        c.stats()
            .ports
            .into_iter()
            .find(|p| p.port == port)
            .and_then(|p| p.kernel)
    };
    assert_eq!(kernel(&c, one.port), Some(KernelPortStats::Counters(read)));
    assert_eq!(
        kernel(&c, two.port),
        Some(KernelPortStats::Counters(TapCounters::default()))
    );
    // ns2 is deleted: its port says so until the reaper detaches it, and
    // `stats` still answers for every other port.
    w.prov.namespaces.lock().unwrap().remove("ns2");
    let stats = c.stats();
    assert_eq!(stats.ports.len(), 2);
    assert_eq!(
        kernel(&c, two.port),
        Some(KernelPortStats::Unavailable(format!(
            "namespace {} is gone",
            two.netns
        )))
    );
    assert_eq!(kernel(&c, one.port), Some(KernelPortStats::Counters(read)));
    // Made again under the same name: another namespace, not the TAP's.
    w.prov
        .namespaces
        .lock()
        .unwrap()
        .insert("ns2".into(), (1, 4242));
    assert!(matches!(
        kernel(&c, two.port),
        Some(KernelPortStats::Unavailable(_))
    ));
}

// ---- peers ---------------------------------------------------------------------

#[test]
fn a_peer_gets_a_tunnel_on_every_overlay_network() {
    let w = World::new("peer");
    let mut c = w.control();
    create(&mut c, overlay("ov1", "10.20.0.0/24", 5));
    create(&mut c, overlay("ov2", "10.21.0.0/24", 6));
    create(&mut c, net("plain", "10.1.0.0/24"));
    let info = c.peer_add("192.0.2.7", false).unwrap();
    assert_eq!(info.addr, "192.0.2.7:4789");
    assert_eq!(w.dp.count("AddTunnel"), 2);
    assert!(w.dir.saved().contains("192.0.2.7:4789"));
    c.peer_remove("192.0.2.7").unwrap();
    assert!(w.dp.model().ports.is_empty());
    assert!(w.dp.model().peers.is_empty());
}

#[test]
fn peers_are_refused_when_bad_taken_or_this_host() {
    let w = World::new("peer-bad");
    let mut c = w.control();
    c.peer_add("192.0.2.7:8472", false).unwrap();
    let add = |a: &str| Request::PeerAdd {
        addr: a.into(),
        remote_csum: false,
    };
    for bad in [
        "",
        "host",
        "192.0.2.9:0",
        "224.0.0.1",
        "0.0.0.0",
        "192.0.2.1",
    ] {
        refused(&w, &mut c, add(bad), ErrorKind::InvalidArgument);
    }
    refused(&w, &mut c, add("192.0.2.7"), ErrorKind::AlreadyExists);
    refused(
        &w,
        &mut c,
        Request::PeerRemove {
            ip: "192.0.2.99".into(),
        },
        ErrorKind::NotFound,
    );
}

#[test]
fn a_peer_whose_second_tunnel_fails_is_not_added() {
    let w = World::new("peer-tunnel");
    let mut c = w.control();
    create(&mut c, overlay("ov1", "10.20.0.0/24", 5));
    create(&mut c, overlay("ov2", "10.21.0.0/24", 6));
    w.dp.fail_after("AddTunnel", 1);
    refused(
        &w,
        &mut c,
        Request::PeerAdd {
            addr: "192.0.2.7".into(),
            remote_csum: false,
        },
        ErrorKind::Internal,
    );
}

#[test]
fn a_peer_that_cannot_be_saved_is_not_added() {
    let w = World::new("peer-save");
    let mut c = w.control();
    create(&mut c, overlay("ov1", "10.20.0.0/24", 5));
    w.dir.break_saving();
    refused(
        &w,
        &mut c,
        Request::PeerAdd {
            addr: "192.0.2.7".into(),
            remote_csum: false,
        },
        ErrorKind::System,
    );
}

// ---- NAT: uplink, published ports, services, conntrack ----------------------------------

#[test]
fn uplink_is_set_shown_replaced_and_removed() {
    let w = World::new("uplink");
    let mut c = w.control();
    let info = c
        .uplink_set("eth9", "192.0.2.50/24", Some("192.0.2.1"))
        .unwrap();
    assert_eq!(info.ip.to_string(), "192.0.2.50/24");
    assert_eq!(info.gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(c.uplink_show().unwrap(), info);
    c.uplink_set("eth9", "192.0.2.51/24", None).unwrap();
    assert_eq!(w.prov.open_devices(), 1, "the old uplink device was closed");
    c.uplink_remove().unwrap();
    assert_eq!(w.prov.open_devices(), 0);
    refused(&w, &mut c, Request::UplinkShow, ErrorKind::NotFound);
    refused(&w, &mut c, Request::UplinkRemove, ErrorKind::NotFound);
}

#[test]
fn uplink_is_refused_inside_a_network_or_on_a_missing_interface() {
    let w = World::new("uplink-bad");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    let set = |i: &str, ip: &str| Request::UplinkSet {
        interface: i.into(),
        ip: ip.into(),
        gateway: None,
        sockets: false,
    };
    refused(
        &w,
        &mut c,
        set("eth9", "10.1.0.200/24"),
        ErrorKind::Conflict,
    );
    for bad in ["192.0.2.50", "192.0.2.50/33", "0.0.0.0/24", "x/24"] {
        refused(&w, &mut c, set("eth9", bad), ErrorKind::InvalidArgument);
    }
    refused(
        &w,
        &mut c,
        set("nope0", "192.0.2.50/24"),
        ErrorKind::NotFound,
    );
}

#[test]
fn publishing_with_no_uplink_is_refused_with_what_to_do() {
    let w = World::new("publish-no-uplink");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.attach(attach("a", "ns1")).unwrap();
    let e = c.publish_add("a", "ns1", "8080:80").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("uplink set --sockets"), "{}", e.message);
    let e = c
        .attach(AttachSpec {
            publish: vec!["8081:80".into()],
            ..attach("a", "ns2")
        })
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(c.publish_list().is_empty());
    assert_eq!(w.dp.count("Publish"), 0);
}

#[test]
fn ports_are_published_listed_and_removed() {
    let w = World::new("publish");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.uplink_set("eth9", "192.0.2.50/24", None).unwrap();
    c.attach(attach("a", "ns1")).unwrap();
    let p = c.publish_add("a", "ns1", "8080:80").unwrap();
    assert_eq!((p.proto.as_str(), p.host_port, p.port), ("tcp", 8080, 80));
    assert_eq!(p.target.to_string(), "10.1.0.2:80");
    c.publish_add("a", "ns1", "5353:53/udp").unwrap();
    assert_eq!(c.publish_list().len(), 2);
    assert_eq!(w.dp.model().publishes.len(), 2);
    c.publish_remove("a", "ns1", "5353/udp").unwrap();
    assert_eq!(w.dp.model().publishes.len(), 1);
}

#[test]
fn publishing_is_refused_for_taken_ports_internal_networks_and_strangers() {
    let w = World::new("publish-bad");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.uplink_set("eth9", "192.0.2.50/24", None).unwrap();
    c.network_create(NetworkSpec {
        internal: true,
        ..net("in", "10.3.0.0/24")
    })
    .unwrap();
    c.attach(attach("a", "ns1")).unwrap();
    c.attach(attach("a", "ns2")).unwrap();
    c.attach(attach("in", "ns3")).unwrap();
    c.publish_add("a", "ns1", "8080:80").unwrap();
    let add = |n: &str, e: &str, s: &str| Request::PublishAdd {
        network: n.into(),
        endpoint: e.into(),
        spec: s.into(),
        host_ip: None,
    };
    let msg = refused(
        &w,
        &mut c,
        add("a", "ns2", "8080:80"),
        ErrorKind::AlreadyExists,
    );
    assert!(msg.contains("ns1"), "{msg}");
    refused(&w, &mut c, add("in", "ns3", "9090:80"), ErrorKind::Conflict);
    refused(
        &w,
        &mut c,
        add("a", "ghost", "9090:80"),
        ErrorKind::NotFound,
    );
    refused(
        &w,
        &mut c,
        add("a", "ns2", "0:80"),
        ErrorKind::InvalidArgument,
    );
    refused(
        &w,
        &mut c,
        add("a", "ns2", "9090:80/sctp"),
        ErrorKind::InvalidArgument,
    );
    let rm = |s: &str| Request::PublishRemove {
        network: "a".into(),
        endpoint: "ns1".into(),
        spec: s.into(),
    };
    refused(&w, &mut c, rm("9999"), ErrorKind::NotFound);
    refused(&w, &mut c, rm("8080/udp"), ErrorKind::NotFound);
}

#[test]
fn a_service_reserves_its_vip_and_is_named_in_dns() {
    let w = World::new("service");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.attach(attach("a", "ns1")).unwrap();
    c.attach(attach("a", "ns2")).unwrap();
    let free = c.network_list()[0].free_addresses;
    let s = c
        .service_create(
            "web",
            "a",
            "10.1.0.100",
            "80",
            &["ns1".into(), "ns2".into()],
            Some("hash"),
        )
        .unwrap();
    assert_eq!((s.lb.as_str(), s.backends.len()), ("hash", 2));
    assert_eq!(c.network_list()[0].free_addresses, free - 1);
    let backends = &w.dp.model().services.values().next().unwrap().clone();
    assert_eq!(backends.len(), 2);
    refused(
        &w,
        &mut c,
        attach_req(AttachSpec {
            ip: Some("10.1.0.100".into()),
            ..attach("a", "ns3")
        }),
        ErrorKind::AlreadyExists,
    );
    c.service_remove("web").unwrap();
    assert_eq!(c.network_list()[0].free_addresses, free);
    assert!(w.dp.model().services.is_empty());
}

#[test]
fn services_are_refused_on_bad_vips_ports_methods_and_backends() {
    let w = World::new("service-bad");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.attach(attach("a", "ns1")).unwrap();
    c.service_create("web", "a", "10.1.0.100", "80", &[], None)
        .unwrap();
    let create = |name: &str, vip: &str, port: &str, lb: Option<&str>, backends: &[&str]| {
        Request::ServiceCreate {
            name: name.into(),
            network: "a".into(),
            vip: vip.into(),
            port: port.into(),
            backends: backends.iter().map(|b| b.to_string()).collect(),
            lb: lb.map(str::to_string),
        }
    };
    refused(
        &w,
        &mut c,
        create("web", "10.1.0.101", "80", None, &[]),
        ErrorKind::AlreadyExists,
    );
    refused(
        &w,
        &mut c,
        create("db", "10.1.0.1", "80", None, &[]),
        ErrorKind::Conflict,
    );
    refused(
        &w,
        &mut c,
        create("db", "10.1.0.100", "80", None, &[]),
        ErrorKind::AlreadyExists,
    );
    refused(
        &w,
        &mut c,
        create("db", "10.1.0.2", "80", None, &[]),
        ErrorKind::AlreadyExists,
    );
    refused(
        &w,
        &mut c,
        create("db", "10.1.0.101", "0", None, &[]),
        ErrorKind::InvalidArgument,
    );
    refused(
        &w,
        &mut c,
        create("db", "10.1.0.101", "80", Some("random"), &[]),
        ErrorKind::InvalidArgument,
    );
    refused(
        &w,
        &mut c,
        create("db", "10.1.0.101", "80", None, &["ghost"]),
        ErrorKind::NotFound,
    );
    refused(
        &w,
        &mut c,
        create("bad name", "10.1.0.101", "80", None, &[]),
        ErrorKind::InvalidArgument,
    );
}

#[test]
fn a_service_refused_by_the_datapath_gives_its_vip_back() {
    let w = World::new("service-dp");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    w.dp.fail_after("SetService", 0);
    refused(
        &w,
        &mut c,
        Request::ServiceCreate {
            name: "web".into(),
            network: "a".into(),
            vip: "10.1.0.100".into(),
            port: "80".into(),
            backends: vec![],
            lb: None,
        },
        ErrorKind::Internal,
    );
}

#[test]
fn service_backends_are_added_and_removed() {
    let w = World::new("backend");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.attach(attach("a", "ns1")).unwrap();
    c.service_create("web", "a", "10.1.0.100", "80", &[], None)
        .unwrap();
    let s = c.service_backend("web", "ns1", true).unwrap();
    assert_eq!(s.backends, vec!["ns1".to_string()]);
    let backend = |add: bool, e: &str| {
        if add {
            Request::ServiceBackendAdd {
                name: "web".into(),
                endpoint: e.into(),
            }
        } else {
            Request::ServiceBackendRemove {
                name: "web".into(),
                endpoint: e.into(),
            }
        }
    };
    refused(&w, &mut c, backend(true, "ns1"), ErrorKind::AlreadyExists);
    refused(&w, &mut c, backend(true, "ghost"), ErrorKind::NotFound);
    c.service_backend("web", "ns1", false).unwrap();
    refused(&w, &mut c, backend(false, "ns1"), ErrorKind::NotFound);
    refused(
        &w,
        &mut c,
        Request::ServiceRemove { name: "zz".into() },
        ErrorKind::NotFound,
    );
}

#[test]
fn conntrack_is_listed_and_flushed_through_the_datapath() {
    let w = World::new("conntrack");
    let mut c = w.control();
    *w.dp.flows.lock().unwrap() = 7;
    assert!(c.conntrack_list().unwrap().is_empty());
    let Response::Flushed(f) = c.handle(Request::ConntrackFlush).unwrap() else {
        panic!("flush reply")
    };
    assert_eq!(f.flushed, 7);
    assert_eq!(
        serde_json::to_string(&Response::Flushed(f)).unwrap(),
        r#"{"flushed":7}"#,
        "the wire form docs/api.md shows"
    );
}

#[test]
fn network_nat_settings_reach_the_datapath_and_survive_a_restart() {
    let w = World::new("natopts");
    {
        let mut c = w.control();
        let info = create(&mut c, net("plain", "10.2.0.0/24"));
        assert_eq!(info.nat, weft_api::NatSettings::default());
        let info = c
            .network_create(NetworkSpec {
                nat_filtering: Some(weft_api::NatFiltering::EndpointIndependent),
                nat_max_flows: Some(300),
                nat_max_ports: Some(20),
                ..net("p2p", "10.1.0.0/24")
            })
            .unwrap();
        assert_eq!(info.nat.max_flows, 300);
        let model = w.dp.model();
        assert!(
            model.nat.values().any(|n| *n == (true, 300, 20)),
            "{model:?}"
        );
        assert!(model.nat.values().any(|n| *n == (false, 16384, 8192)));
        for (flows, ports) in [(Some(0), None), (None, Some(0))] {
            let mut req = create_req("zero", "10.3.0.0/24");
            if let Request::NetworkCreate {
                nat_max_flows,
                nat_max_ports,
                ..
            } = &mut req
            {
                *nat_max_flows = flows;
                *nat_max_ports = ports;
            }
            let msg = refused(&w, &mut c, req, ErrorKind::InvalidArgument);
            assert!(msg.contains("at least 1"), "{msg}");
        }
        // The wire form names the filtering in kebab case.
        let v = serde_json::to_value(c.network_list()).unwrap();
        assert!(v.to_string().contains("endpoint-independent"), "{v}");
    }
    let dp = FakeDatapath::default();
    let c = control(&dp, &w.prov, &w.dir);
    let p2p = c
        .network_list()
        .into_iter()
        .find(|n| n.name == "p2p")
        .unwrap();
    assert_eq!(
        (p2p.nat.filtering, p2p.nat.max_flows, p2p.nat.max_ports),
        (weft_api::NatFiltering::EndpointIndependent, 300, 20)
    );
    assert!(dp.model().nat.values().any(|n| *n == (true, 300, 20)));
}

// ---- restart --------------------------------------------------------------------

#[test]
fn a_new_control_plane_restores_networks_routes_and_peers() {
    let w = World::new("restore");
    {
        let mut c = w.control();
        c.peer_add("192.0.2.7", false).unwrap();
        create(&mut c, overlay("ov", "10.20.0.0/24", 5));
        c.network_create(NetworkSpec {
            ip_range: Some("10.1.0.128/25".into()),
            mtu: Some(9000),
            ..net("a", "10.1.0.0/24")
        })
        .unwrap();
        c.route_set("a", "ov", true).unwrap();
    }
    let dp = FakeDatapath::default();
    let c = control(&dp, &w.prov, &w.dir);
    let nets = c.network_list();
    assert_eq!(nets.len(), 2);
    let a = nets.iter().find(|n| n.name == "a").unwrap();
    assert_eq!(
        (a.mtu, a.ip_range.map(|r| r.to_string())),
        (9000, Some("10.1.0.128/25".to_string()))
    );
    assert_eq!(c.route_list().len(), 1);
    assert_eq!(c.peer_list().len(), 1);
    assert_eq!(
        dp.count("AddTunnel"),
        1,
        "the overlay network is joined to its peer"
    );
}

#[test]
fn remote_checksum_offload_is_per_peer_and_survives_a_restart() {
    let w = World::new("rco");
    {
        let mut c = w.control();
        let info = c.peer_add("192.0.2.7", true).unwrap();
        assert!(info.remote_csum);
        assert!(!c.peer_add("192.0.2.8", false).unwrap().remote_csum);
        create(&mut c, overlay("ov", "10.20.0.0/24", 5));
        let tunnels = w.dp.model().remote_csum_tunnels.clone();
        assert_eq!(
            tunnels.into_iter().collect::<Vec<_>>(),
            [("192.0.2.7".parse().unwrap(), 5)],
            "only the peer added with it sends with RCO"
        );
    }
    let dp = FakeDatapath::default();
    let c = control(&dp, &w.prov, &w.dir);
    let peers: Vec<(String, bool)> = c
        .peer_list()
        .into_iter()
        .map(|p| (p.addr, p.remote_csum))
        .collect();
    assert_eq!(
        peers,
        [
            ("192.0.2.7:4789".to_string(), true),
            ("192.0.2.8:4789".to_string(), false)
        ]
    );
    assert_eq!(dp.model().remote_csum_tunnels.len(), 1);
}

#[test]
fn a_new_control_plane_restores_everything_the_api_made() {
    let w = World::new("restore-all");
    let before;
    {
        let mut c = w.control();
        create(&mut c, net("a", "10.1.0.0/24"));
        create(&mut c, net("b", "10.2.0.0/24"));
        c.route_set("a", "b", true).unwrap();
        c.handle(Request::UplinkSet {
            interface: "eth9".into(),
            ip: "192.0.2.10/24".into(),
            gateway: Some("192.0.2.1".into()),
            sockets: false,
        })
        .unwrap();
        c.handle(attach_req(AttachSpec {
            publish: vec!["8080:80".into(), "5353:53/udp".into()],
            aliases: vec!["www".into()],
            mac: Some("02:00:00:00:01:0a".into()),
            ..attach("a", "ns1")
        }))
        .unwrap();
        c.handle(attach_req(attach("a", "ns2"))).unwrap();
        c.handle(attach_req(attach("b", "ns3"))).unwrap();
        c.handle(Request::ServiceCreate {
            name: "web".into(),
            network: "a".into(),
            vip: "10.1.0.200".into(),
            port: "80".into(),
            backends: vec!["ns1".into(), "ns2".into()],
            lb: Some("hash".into()),
        })
        .unwrap();
        before = w.seen(&c);
    }
    let dp = FakeDatapath::default();
    let c = control(&dp, &w.prov, &w.dir);
    let after = w.seen(&c);
    let ports = |s: &Seen| {
        s.endpoints
            .iter()
            .map(|e| EndpointInfo {
                port: 0,
                ..e.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(ports(&after), ports(&before));
    assert_eq!(after.networks, before.networks);
    assert_eq!(after.routes, before.routes);
    assert_eq!(after.publishes, before.publishes);
    assert_eq!(after.services, before.services);
    assert_eq!(
        after.uplink.map(|u| (u.interface, u.ip, u.mac, u.gateway)),
        before.uplink.map(|u| (u.interface, u.ip, u.mac, u.gateway))
    );
    assert_eq!(after.saved, before.saved, "restoring rewrote the state");
    assert_eq!(dp.count("Publish"), 2, "the published ports are back");
}

#[test]
fn an_endpoint_whose_namespace_is_gone_is_forgotten_on_restore() {
    let w = World::new("restore-gone");
    {
        let mut c = w.control();
        create(&mut c, net("a", "10.1.0.0/24"));
        c.handle(attach_req(attach("a", "ns1"))).unwrap();
        c.handle(attach_req(attach("a", "ns2"))).unwrap();
        c.handle(Request::ServiceCreate {
            name: "web".into(),
            network: "a".into(),
            vip: "10.1.0.200".into(),
            port: "80".into(),
            backends: vec!["ns1".into(), "ns2".into()],
            lb: None,
        })
        .unwrap();
    }
    w.prov.namespaces.lock().unwrap().remove("ns2");
    let dp = FakeDatapath::default();
    let c = control(&dp, &w.prov, &w.dir);
    let names: Vec<String> = c
        .endpoint_list(None)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["ns1"]);
    assert_eq!(c.service_list()[0].backends, ["ns1"]);
    assert!(!w.dir.saved().contains("ns2"), "{}", w.dir.saved());
}

#[test]
fn neighbor_announcements_tell_each_endpoint_its_gateway_and_peers() {
    let w = World::new("announce");
    let mut c = w.control();
    let net_a = create(&mut c, net("a", "10.1.0.0/24"));
    let e1 = c.attach(attach("a", "ns1")).unwrap();
    let e2 = c.attach(attach("a", "ns2")).unwrap();
    let frames = c.neighbor_announcements();
    assert_eq!(frames.len(), 4, "two ports, two neighbors each");
    let mac = |s: &str| s.parse::<weft_packet::MacAddr>().unwrap();
    for (port, f) in &frames {
        let (to, others): (&EndpointInfo, Vec<(std::net::Ipv4Addr, String)>) = if port.0 == e1.port
        {
            (
                &e1,
                vec![
                    (net_a.gateway, net_a.gateway_mac.clone()),
                    (e2.ip.addr(), e2.mac.clone()),
                ],
            )
        } else {
            (
                &e2,
                vec![
                    (net_a.gateway, net_a.gateway_mac.clone()),
                    (e1.ip.addr(), e1.mac.clone()),
                ],
            )
        };
        assert_eq!(f.len(), 42);
        assert_eq!(f[0..6], mac(&to.mac).0, "to the endpoint's MAC");
        assert_eq!(f[12..14], [0x08, 0x06], "ARP");
        assert_eq!(f[14 + 6..14 + 8], [0, 2], "a reply");
        let spa = std::net::Ipv4Addr::new(f[28], f[29], f[30], f[31]);
        let sha = &f[22..28];
        let (_, from_mac) = others
            .iter()
            .find(|(ip, _)| *ip == spa)
            .unwrap_or_else(|| panic!("{spa} is no neighbor of {}", to.name));
        assert_eq!(sha, mac(from_mac).0);
        assert_eq!(
            f[38..42],
            to.ip.addr().octets(),
            "for the endpoint's address"
        );
    }
}

#[test]
fn reset_removes_everything_and_saves_nothing() {
    let w = World::new("reset");
    let mut c = w.control();
    c.peer_add("192.0.2.7", false).unwrap();
    create(&mut c, net("a", "10.1.0.0/24"));
    create(&mut c, overlay("ov", "10.20.0.0/24", 5));
    c.handle(Request::UplinkSet {
        interface: "eth9".into(),
        ip: "192.0.2.10/24".into(),
        gateway: None,
        sockets: false,
    })
    .unwrap();
    c.handle(attach_req(AttachSpec {
        publish: vec!["8080:80".into()],
        ..attach("a", "ns1")
    }))
    .unwrap();
    c.handle(attach_req(attach("ov", "ns2"))).unwrap();
    c.handle(Request::ServiceCreate {
        name: "web".into(),
        network: "a".into(),
        vip: "10.1.0.200".into(),
        port: "80".into(),
        backends: vec!["ns1".into()],
        lb: None,
    })
    .unwrap();
    let reply = serde_json::to_value(c.handle(Request::Reset).unwrap()).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({"services": 1, "endpoints": 2, "uplink": true, "networks": 2, "peers": 1})
    );
    assert_eq!(w.prov.open_devices(), 0, "every device closed");
    assert!(w.prov.resolv_confs.lock().unwrap().is_empty());
    drop(c);
    let dp = FakeDatapath::default();
    let c = control(&dp, &w.prov, &w.dir);
    assert!(c.network_list().is_empty());
    assert!(c.peer_list().is_empty());
    assert!(c.uplink_show().is_err());
}

#[test]
fn a_corrupt_state_file_is_refused_with_what_to_do() {
    let w = World::new("corrupt");
    std::fs::write(w.dir.0.join("state.json"), b"{ not json").unwrap();
    let state = weft_control::StateFile::in_dir(&w.dir.0).unwrap();
    let result =
        weft_control::Control::restore(&w.dp, &w.prov, state, fake::vxlan(), Default::default());
    let Err(e) = result else {
        panic!("a corrupt state file was accepted")
    };
    assert!(e.message.contains("move it away"), "{}", e.message);
}

// ---- the wire --------------------------------------------------------------------

#[test]
fn replies_serialize_as_the_bare_result() {
    let w = World::new("wire");
    let mut c = w.control();
    let reply = c.handle(create_req("a", "10.1.0.0/24")).unwrap();
    let value = serde_json::to_value(&reply).unwrap();
    assert_eq!(value["name"], "a");
    assert_eq!(value["gateway"], "10.1.0.1");
    let list = serde_json::to_value(c.handle(Request::NetworkList).unwrap()).unwrap();
    assert!(list.is_array());
}

#[test]
fn shutdown_closes_devices_and_removes_resolvers() {
    let w = World::new("shutdown");
    let mut c = w.control();
    create(&mut c, net("a", "10.1.0.0/24"));
    c.attach(attach("a", "ns1")).unwrap();
    assert_eq!(w.prov.open_devices(), 1);
    c.shutdown();
    assert_eq!(w.prov.open_devices(), 0);
    assert!(w.prov.resolv_confs.lock().unwrap().is_empty());
}
