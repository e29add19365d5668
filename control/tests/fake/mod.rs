//! In-memory stand-ins for the datapath and the provisioner, so that the
//! control plane's rules run as an ordinary user, with no namespace, TAP or
//! packet socket.
//!
//! [`FakeDatapath`] keeps a model of what the real worker would hold
//! (networks, routes, ports, published ports, services, peers, ...), applies
//! each batch of changes to a copy that it keeps only if the whole batch
//! succeeded, and can be told to refuse the batch holding the next change of
//! a kind.
//! [`FakeProvisioner`] knows a few namespaces, counts the devices it made that
//! are still open, and can be told to fail. Together they let a test check
//! that a refused request left the datapath, the devices and the registry
//! exactly as they were.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use weft_api::{ApiError, ErrorKind, TapCounters};
use weft_control::dns::NameTables;
use weft_control::{
    Control, Datapath, Netns, NetnsTarget, Provisioner, StateFile, TapRequest, UplinkDevice,
    VxlanSettings,
};
use weft_datapath::port::{Offload, PacketBuf, Port, PortCapabilities};
use weft_datapath::{Change, DatapathError};
use weft_nat::conntrack::FlowInfo;
use weft_os::udp::VxlanSocket;
use weft_switch::counters::SwitchCounters;
use weft_switch::mac_table::Learned;
use weft_switch::neighbor::Neighbor;
use weft_switch::NetworkId;

/// What the datapath holds, as the commands it accepted made it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub networks: BTreeSet<u32>,
    pub internal: BTreeSet<u32>,
    /// Network → (endpoint-independent filtering, max flows, max ports).
    pub nat: BTreeMap<u32, (bool, u32, u32)>,
    pub routes: BTreeSet<(u32, u32)>,
    /// Port id → "endpoint", "tunnel" or "uplink".
    pub ports: BTreeMap<u32, &'static str>,
    pub vtep_bound: bool,
    pub peers: BTreeSet<Ipv4Addr>,
    /// Tunnels (peer, VNI) that send with remote checksum offload.
    pub remote_csum_tunnels: BTreeSet<(Ipv4Addr, u32)>,
    pub uplink: Option<u32>,
    /// (protocol, host port) → target.
    pub publishes: BTreeMap<(String, u16), SocketAddrV4>,
    /// Host ports a socket uplink serves: (tcp, port).
    pub listening: BTreeSet<(bool, u16)>,
    /// (VIP, protocol, port) → backend addresses.
    pub services: BTreeMap<(Ipv4Addr, String, u16), Vec<Ipv4Addr>>,
    pub static_macs: BTreeSet<(u32, String, u32)>,
    pub static_neighbors: BTreeSet<(u32, Ipv4Addr, String)>,
}

/// A datapath that applies commands to a [`Model`].
#[derive(Default)]
pub struct FakeDatapath {
    pub model: Mutex<Model>,
    /// Every change of the batches accepted, by kind, in order.
    pub log: Mutex<Vec<&'static str>>,
    /// The batches accepted, each as the kinds of its changes.
    pub batches: Mutex<Vec<Vec<&'static str>>>,
    /// Refuse the batch holding the change of this kind after letting
    /// `skip` of them pass.
    fail: Mutex<Option<(&'static str, usize)>>,
    /// Devices handed over, kept open as the worker would.
    devices: Mutex<BTreeMap<u32, Box<dyn Port>>>,
    pub counters: SwitchCounters,
    pub fdb: Mutex<Vec<(NetworkId, Learned)>>,
    pub neighbors: Mutex<Vec<(NetworkId, Neighbor)>>,
    pub flows: Mutex<usize>,
}

/// The kind of a change, as the fake's log and failure switch name it.
pub fn kind(change: &Change) -> &'static str {
    change.kind()
}

impl FakeDatapath {
    /// Makes the datapath refuse the batch holding the first change of
    /// `kind` after `skip` of them passed; later ones pass again.
    pub fn fail_after(&self, kind: &'static str, skip: usize) {
        *self.fail.lock().unwrap() = Some((kind, skip));
    }

    pub fn model(&self) -> Model {
        self.model.lock().unwrap().clone()
    }

    pub fn count(&self, of: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|k| **k == of)
            .count()
    }

    fn should_fail(&self, k: &'static str) -> bool {
        let mut fail = self.fail.lock().unwrap();
        match fail.as_mut() {
            Some((want, skip)) if *want == k => {
                if *skip == 0 {
                    *fail = None;
                    true
                } else {
                    *skip -= 1;
                    false
                }
            }
            _ => false,
        }
    }

    /// Applies one change to `m`; devices handed over go to `added`, the
    /// ones to close once the batch holds to `closed`.
    fn apply_change(
        m: &mut Model,
        change: Change,
        added: &mut BTreeMap<u32, Box<dyn Port>>,
        closed: &mut Vec<u32>,
    ) -> Result<(), DatapathError> {
        let proto = |p: weft_nat::Protocol| format!("{p:?}");
        match change {
            Change::AddNetwork(cfg) => {
                assert!(m.networks.insert(cfg.id.0), "network added twice");
            }
            Change::RemoveNetwork(id) => {
                assert!(m.networks.remove(&id.0), "unknown network removed");
                m.internal.remove(&id.0);
                m.nat.remove(&id.0);
                m.routes.retain(|(a, b)| *a != id.0 && *b != id.0);
            }
            Change::SetNetworkNat { network, nat } => {
                let eif = nat.filtering == weft_switch::switch::Filtering::EndpointIndependent;
                m.nat
                    .insert(network.0, (eif, nat.limits.flows, nat.limits.ports));
            }
            Change::SetInternal { network, internal } => {
                if internal {
                    m.internal.insert(network.0);
                } else {
                    m.internal.remove(&network.0);
                }
            }
            Change::SetRoute { a, b, allowed } => {
                let key = (a.0.min(b.0), a.0.max(b.0));
                if allowed {
                    m.routes.insert(key);
                } else {
                    m.routes.remove(&key);
                }
            }
            Change::AddPort { cfg, io, .. } => {
                assert!(
                    m.networks.contains(&cfg.network.0),
                    "port on unknown network"
                );
                assert!(
                    m.ports.insert(cfg.id.0, "endpoint").is_none(),
                    "port id reused"
                );
                added.insert(cfg.id.0, io);
            }
            Change::AddTunnel {
                cfg,
                vni,
                peer,
                remote_csum,
            } => {
                assert!(
                    m.networks.contains(&cfg.network.0),
                    "tunnel on unknown network"
                );
                if remote_csum {
                    m.remote_csum_tunnels.insert((*peer.ip(), vni.get()));
                }
                assert!(m.vtep_bound, "tunnel before the VTEP");
                assert!(
                    m.ports.insert(cfg.id.0, "tunnel").is_none(),
                    "port id reused"
                );
            }
            Change::RemovePort(id) => {
                assert!(m.ports.remove(&id.0).is_some(), "unknown port removed");
                closed.push(id.0);
            }
            Change::BindVtep(_) => {
                if m.vtep_bound {
                    return Err(DatapathError::VtepBound);
                }
                m.vtep_bound = true;
            }
            Change::AddPeer { ip, .. } => {
                if !m.vtep_bound {
                    return Err(DatapathError::NoVtep);
                }
                m.peers.insert(ip);
            }
            Change::RemovePeer(ip) => {
                if !m.peers.remove(&ip) {
                    return Err(DatapathError::UnknownPeer(ip));
                }
            }
            Change::SetStaticMac { network, mac, port } => {
                m.static_macs.insert((network.0, mac.to_string(), port.0));
            }
            Change::SetStaticNeighbor { network, ip, mac } => {
                m.static_neighbors.insert((network.0, ip, mac.to_string()));
            }
            Change::ClearMac { network, mac } => {
                let mac = mac.to_string();
                m.static_macs
                    .retain(|(n, m, _)| !(*n == network.0 && *m == mac));
            }
            Change::ClearNeighbor { network, ip } => {
                m.static_neighbors
                    .retain(|(n, i, _)| !(*n == network.0 && *i == ip));
            }
            Change::SetUplink { cfg, io, .. } => {
                if let Some(old) = m.uplink.take() {
                    m.ports.remove(&old);
                    closed.push(old);
                }
                m.uplink = Some(cfg.port.0);
                m.ports.insert(cfg.port.0, "uplink");
                added.insert(cfg.port.0, io);
            }
            Change::RemoveUplink => {
                let old = m.uplink.take().ok_or(DatapathError::NoUplink)?;
                m.ports.remove(&old);
                closed.push(old);
            }
            Change::Publish {
                proto: p,
                host_port,
                target,
            } => {
                m.publishes.insert((proto(p), host_port), target);
            }
            Change::Unpublish {
                proto: p,
                host_port,
            } => {
                m.publishes.remove(&(proto(p), host_port));
            }
            Change::Listen(l) => {
                m.listening.insert(l.port());
            }
            Change::Unlisten { tcp, host_port } => {
                m.listening.remove(&(tcp, host_port));
            }
            Change::SetService(s) => {
                m.services
                    .insert((s.vip, proto(s.proto), s.port), s.backends);
            }
            Change::RemoveService {
                vip,
                proto: p,
                port,
            } => {
                m.services.remove(&(vip, proto(p), port));
            }
            Change::SetDns(_) | Change::SetAging(_) | Change::SetStormLimits(_) => {}
        }
        Ok(())
    }
}

impl Datapath for &FakeDatapath {
    /// Applies the batch to a copy of the model and keeps the copy only if
    /// every change succeeded; devices handed over by a refused batch are
    /// closed, as the worker's undo closes them.
    fn apply(&self, changes: Vec<Change>) -> Result<(), DatapathError> {
        let kinds: Vec<&'static str> = changes.iter().map(kind).collect();
        if let Some(first) = changes.iter().position(Change::is_removal) {
            assert!(
                changes[first..].iter().all(Change::is_removal),
                "a removal before another change in {kinds:?}"
            );
        }
        let mut m = self.model();
        let mut added = BTreeMap::new();
        let mut closed = Vec::new();
        for (index, change) in changes.into_iter().enumerate() {
            let k = kinds[index];
            let result = if self.should_fail(k) {
                Err(DatapathError::Stopped)
            } else {
                FakeDatapath::apply_change(&mut m, change, &mut added, &mut closed)
            };
            if let Err(e) = result {
                return Err(DatapathError::Batch {
                    index,
                    kind: k,
                    source: Box::new(e),
                });
            }
        }
        *self.model.lock().unwrap() = m;
        let mut devices = self.devices.lock().unwrap();
        for id in closed {
            devices.remove(&id);
        }
        devices.append(&mut added);
        self.log.lock().unwrap().extend(kinds.iter().copied());
        self.batches.lock().unwrap().push(kinds);
        Ok(())
    }

    fn fdb(&self, network: Option<NetworkId>) -> Result<Vec<(NetworkId, Learned)>, DatapathError> {
        let all = self.fdb.lock().unwrap().clone();
        Ok(all
            .into_iter()
            .filter(|(n, _)| network.is_none_or(|want| want == *n))
            .collect())
    }

    fn neighbors(
        &self,
        network: Option<NetworkId>,
    ) -> Result<Vec<(NetworkId, Neighbor)>, DatapathError> {
        let all = self.neighbors.lock().unwrap().clone();
        Ok(all
            .into_iter()
            .filter(|(n, _)| network.is_none_or(|want| want == *n))
            .collect())
    }

    fn counters(&self) -> &SwitchCounters {
        &self.counters
    }

    fn conntrack_snapshot(&self) -> Result<Vec<FlowInfo>, DatapathError> {
        Ok(Vec::new())
    }

    fn conntrack_flush(&self) -> Result<usize, DatapathError> {
        Ok(std::mem::take(&mut *self.flows.lock().unwrap()))
    }

    fn shutdown(self) {
        self.devices.lock().unwrap().clear();
    }
}

/// A device the fake provisioner made; counts itself while open.
pub struct FakePort {
    open: Arc<AtomicUsize>,
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

/// Namespaces, links and devices, in memory.
#[derive(Default)]
pub struct FakeProvisioner {
    /// Named namespaces that exist, with their identity.
    pub namespaces: Mutex<BTreeMap<String, (u64, u64)>>,
    /// Namespace files at other paths (bind mounts), with their identity.
    pub paths: Mutex<BTreeMap<PathBuf, (u64, u64)>>,
    /// Processes that exist, with their namespace's identity.
    pub pids: Mutex<BTreeMap<u32, (u64, u64)>>,
    /// Interfaces present per namespace path.
    pub links: Mutex<BTreeMap<PathBuf, BTreeSet<String>>>,
    /// TAP devices requested, in order.
    pub taps: Mutex<Vec<(PathBuf, TapRequest)>>,
    /// Devices made and not yet closed.
    pub open: Arc<AtomicUsize>,
    /// Interfaces that can be an uplink.
    pub interfaces: Mutex<BTreeSet<String>>,
    /// resolv.conf files written and not removed.
    pub resolv_confs: Mutex<BTreeSet<PathBuf>>,
    pub fail_tap: AtomicU32,
    pub fail_vtep: AtomicU32,
    /// The kernel's counters of TAPs, by namespace path and name (a TAP
    /// made and not listed here has all zeros).
    pub tap_counters: Mutex<BTreeMap<(PathBuf, String), TapCounters>>,
}

impl FakeProvisioner {
    pub fn with_namespaces(names: &[&str]) -> Self {
        let p = FakeProvisioner::default();
        for (i, name) in names.iter().enumerate() {
            p.namespaces
                .lock()
                .unwrap()
                .insert(name.to_string(), (1, 100 + i as u64));
        }
        p.interfaces.lock().unwrap().insert("eth9".into());
        p
    }

    /// The namespace at `path`: a bind mount, a named namespace under
    /// `/run/netns` or `/var/run/netns`, or a process's `/proc/PID/ns/net`.
    fn path_netns(&self, path: &Path) -> Option<(u64, u64)> {
        if let Some(id) = self.paths.lock().unwrap().get(path) {
            return Some(*id);
        }
        let text = path.to_str()?;
        for dir in ["/run/netns/", "/var/run/netns/"] {
            if let Some(name) = text.strip_prefix(dir) {
                return self.namespaces.lock().unwrap().get(name).copied();
            }
        }
        let pid = text.strip_prefix("/proc/")?.strip_suffix("/ns/net")?;
        self.pids.lock().unwrap().get(&pid.parse().ok()?).copied()
    }

    pub fn open_devices(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn device(&self) -> FakePort {
        self.open.fetch_add(1, Ordering::SeqCst);
        FakePort {
            open: Arc::clone(&self.open),
        }
    }
}

impl Provisioner for &FakeProvisioner {
    fn open_netns(&self, target: &NetnsTarget) -> Result<Netns, ApiError> {
        let found = match target {
            NetnsTarget::Name(name) => self
                .namespaces
                .lock()
                .unwrap()
                .get(name)
                .map(|id| (PathBuf::from(format!("/var/run/netns/{name}")), *id)),
            NetnsTarget::Pid(pid) => self
                .pids
                .lock()
                .unwrap()
                .get(pid)
                .map(|id| (PathBuf::from(format!("/proc/{pid}/ns/net")), *id)),
            NetnsTarget::Path(path) => self.path_netns(path).map(|id| (path.clone(), id)),
        };
        let (path, id) = found
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("{target:?} not found")))?;
        Ok(Netns { path, id })
    }

    fn link_exists(&self, netns: &Path, ifname: &str) -> Result<bool, ApiError> {
        Ok(self
            .links
            .lock()
            .unwrap()
            .get(netns)
            .is_some_and(|l| l.contains(ifname)))
    }

    fn tap_counters(&self, netns: &Netns, ifname: &str) -> Result<TapCounters, ApiError> {
        if self.path_netns(&netns.path) != Some(netns.id) {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("namespace {} is gone", netns.path.display()),
            ));
        }
        let key = (netns.path.clone(), ifname.to_string());
        if let Some(c) = self.tap_counters.lock().unwrap().get(&key) {
            return Ok(*c);
        }
        let made = self
            .taps
            .lock()
            .unwrap()
            .iter()
            .any(|(path, tap)| *path == netns.path && tap.ifname == ifname);
        if made {
            Ok(TapCounters::default())
        } else {
            Err(ApiError::new(
                ErrorKind::NotFound,
                format!("no interface {ifname}"),
            ))
        }
    }

    fn create_tap(&self, netns: &Path, tap: &TapRequest) -> Result<Box<dyn Port>, ApiError> {
        if self.fail_tap.load(Ordering::SeqCst) > 0 {
            self.fail_tap.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(ErrorKind::System, "netlink said no"));
        }
        self.taps
            .lock()
            .unwrap()
            .push((netns.to_path_buf(), tap.clone()));
        Ok(Box::new(self.device()))
    }

    /// Like `create_tap`, recorded the same way: the fake's devices do not
    /// outlive the test, so there is never one to take back.
    fn adopt_tap(&self, netns: &Path, tap: &TapRequest) -> Result<Box<dyn Port>, ApiError> {
        self.create_tap(netns, tap)
    }

    fn open_uplink(&self, interface: &str) -> Result<UplinkDevice, ApiError> {
        if !self.interfaces.lock().unwrap().contains(interface) {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("cannot use {interface} as the uplink: no such interface"),
            ));
        }
        Ok(UplinkDevice {
            port: Box::new(self.device()),
            mtu: 1500,
            socket_counters: None,
        })
    }

    fn bind_vtep(&self, _listen: SocketAddrV4) -> Result<VxlanSocket, ApiError> {
        if self.fail_vtep.load(Ordering::SeqCst) > 0 {
            self.fail_vtep.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(ErrorKind::System, "port 4789 is taken"));
        }
        // A real socket on loopback: binding one needs no privilege.
        VxlanSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 1)
            .map_err(|e| ApiError::new(ErrorKind::System, e.to_string()))
    }

    fn write_resolv_conf(&self, netns_name: &str, _gateway: Ipv4Addr) -> Option<PathBuf> {
        let path = PathBuf::from(format!("/etc/netns/{netns_name}/resolv.conf"));
        self.resolv_confs.lock().unwrap().insert(path.clone());
        Some(path)
    }

    fn remove_resolv_conf(&self, path: &Path) {
        self.resolv_confs.lock().unwrap().remove(path);
    }
}

/// A state directory unique to one test, removed when dropped.
pub struct StateDir(pub PathBuf);

impl StateDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-t{}-{}-control-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        StateDir(dir)
    }

    /// Makes the next saves fail: a directory where the temporary file
    /// goes stops even root from creating it.
    pub fn break_saving(&self) {
        std::fs::create_dir_all(self.0.join("state.json.tmp")).unwrap();
    }

    pub fn mend_saving(&self) {
        let _ = std::fs::remove_dir_all(self.0.join("state.json.tmp"));
    }

    pub fn saved(&self) -> String {
        std::fs::read_to_string(self.0.join("state.json")).unwrap_or_default()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The settings every test uses: a VTEP address of 192.0.2.1 (TEST-NET-1,
/// never used for traffic here) and a 1500-byte underlay.
pub fn vxlan() -> VxlanSettings {
    VxlanSettings {
        listen: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        vtep_ip: Some(Ipv4Addr::new(192, 0, 2, 1)),
        underlay_mtu: 1500,
    }
}

pub type TestControl<'a> = Control<&'a FakeDatapath, &'a FakeProvisioner>;

/// A control plane over the fakes, starting from `dir`'s saved state.
pub fn control<'a>(
    dp: &'a FakeDatapath,
    prov: &'a FakeProvisioner,
    dir: &StateDir,
) -> TestControl<'a> {
    let state = StateFile::in_dir(&dir.0).unwrap();
    Control::restore(dp, prov, state, vxlan(), NameTables::default()).unwrap()
}
