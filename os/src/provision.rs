//! Attaching a TAP port to a network namespace.
//!
//! [`provision_tap`] is the "attach" step for a workload: inside the target
//! namespace (via [`run_in_netns`]) it creates a TAP interface and configures
//! it like a NIC handed to that workload: MAC address, MTU, one IPv4 address,
//! link up, and optionally a default route via the network's gateway. It also
//! brings `lo` up, which a freshly created namespace lacks.
//!
//! The returned [`Tap`] is the switch side of the port: frames the workload
//! sends can be read from it, and frames written to it are delivered to the
//! workload. The whole sequence runs on one helper thread; if any step fails
//! the TAP is dropped, so the interface disappears again and the namespace is
//! left as it was (apart from `lo` being up).
//!
//! [`link_exists`] lets callers choose a free interface name (`eth0`, `eth1`,
//! ...) before provisioning.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::napi::{steer_to_first_queue, thread_napi_here, NapiQueue};
use crate::netlink::{Netlink, NetlinkError};
use crate::netns::{run_in_netns, NetnsError};
use crate::tap::{validate_ifname, Tap, TapError, TapOptions};
pub use crate::userns::HelperErrorKind;

/// What to create in the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// Interface name inside the namespace (at most 15 bytes).
    pub ifname: String,
    /// Unicast MAC address of the interface.
    pub mac: [u8; 6],
    /// IPv4 address of the interface.
    pub ip: Ipv4Addr,
    /// Prefix length of the subnet (0..=32).
    pub prefix_len: u8,
    /// MTU of the interface.
    pub mtu: u32,
    /// If set, a default route via this gateway is added.
    pub default_gateway: Option<Ipv4Addr>,
    /// How to create the TAP.
    pub tap: TapOptions,
    /// Turn IPv6 off on the interface (weft routes IPv4 only; without
    /// this, every interface's router solicitations, MLD reports and DAD
    /// probes are flooded to every port of the network).
    pub disable_ipv6: bool,
}

/// The step of [`provision_tap`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionStep {
    /// Opening the rtnetlink socket.
    OpenNetlink,
    /// Checking whether the interface name is free.
    CheckIfname,
    /// Bringing `lo` up.
    LoopbackUp,
    /// Creating the TAP device.
    CreateTap,
    /// Looking up the new interface's index.
    LookupIndex,
    /// Setting the MAC address.
    SetMac,
    /// Setting the MTU.
    SetMtu,
    /// Adding the IPv4 address.
    AddAddress,
    /// Giving a multi-queue TAP one root qdisc.
    SetQdisc,
    /// Bringing the interface up.
    LinkUp,
    /// Adding the default route.
    AddDefaultRoute,
}

impl std::fmt::Display for ProvisionStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProvisionStep::OpenNetlink => "open a netlink socket",
            ProvisionStep::CheckIfname => "check whether the interface name is free",
            ProvisionStep::LoopbackUp => "bring lo up",
            ProvisionStep::CreateTap => "create the TAP device",
            ProvisionStep::LookupIndex => "look up the interface index",
            ProvisionStep::SetMac => "set the MAC address",
            ProvisionStep::SetMtu => "set the MTU",
            ProvisionStep::AddAddress => "add the IPv4 address",
            ProvisionStep::SetQdisc => "set the root qdisc",
            ProvisionStep::LinkUp => "bring the interface up",
            ProvisionStep::AddDefaultRoute => "add the default route",
        })
    }
}

/// Errors from [`provision_tap`] and [`link_exists`].
#[derive(Debug, Error)]
pub enum ProvisionError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The spec was rejected before touching the namespace.
    #[error("invalid TAP spec for {ifname:?}: {reason}")]
    InvalidSpec {
        /// The requested interface name.
        ifname: String,
        /// What is wrong with the spec.
        reason: String,
    },
    /// An interface with the requested name already exists.
    #[error(
        "interface {ifname} already exists in network namespace {}; choose another name with --ifname",
        netns.display()
    )]
    IfnameTaken {
        /// The requested interface name.
        ifname: String,
        /// The namespace path.
        netns: PathBuf,
    },
    /// A netlink step failed.
    #[error("failed to {step} for {ifname} in network namespace {}", netns.display())]
    Netlink {
        /// The step that failed.
        step: ProvisionStep,
        /// The interface being provisioned.
        ifname: String,
        /// The namespace path.
        netns: PathBuf,
        /// The netlink error.
        #[source]
        source: NetlinkError,
    },
    /// Creating the TAP device failed.
    #[error("failed to create TAP {ifname} in network namespace {}", netns.display())]
    Tap {
        /// The interface being provisioned.
        ifname: String,
        /// The namespace path.
        netns: PathBuf,
        /// The TAP error.
        #[source]
        source: TapError,
    },
    /// The rootless helper ([`crate::userns`]) refused or failed; `message`
    /// says what to do.
    #[error("{message}")]
    Helper {
        /// What kind of failure it was.
        kind: HelperErrorKind,
        /// The helper's explanation.
        message: String,
    },
    /// The TAP was created but could not be found by name afterwards.
    #[error(
        "TAP {ifname} vanished from network namespace {} right after it was created",
        netns.display()
    )]
    Vanished {
        /// The interface being provisioned.
        ifname: String,
        /// The namespace path.
        netns: PathBuf,
    },
}

impl ProvisionError {
    /// The step that failed, for errors raised while provisioning.
    pub fn step(&self) -> Option<ProvisionStep> {
        match self {
            ProvisionError::Netlink { step, .. } => Some(*step),
            ProvisionError::Tap { .. } => Some(ProvisionStep::CreateTap),
            ProvisionError::Vanished { .. } => Some(ProvisionStep::LookupIndex),
            ProvisionError::IfnameTaken { .. } => Some(ProvisionStep::CheckIfname),
            _ => None,
        }
    }
}

pub(crate) fn validate_spec(spec: &TapSpec) -> Result<(), String> {
    validate_ifname(&spec.ifname).map_err(str::to_owned)?;
    if spec.ifname.contains('%') {
        return Err("the name contains '%' (kernel name templates are not allowed here)".into());
    }
    if spec.prefix_len > 32 {
        return Err(format!(
            "prefix length /{} is longer than 32",
            spec.prefix_len
        ));
    }
    if spec.mac[0] & 1 != 0 {
        return Err("the MAC address is a multicast address".into());
    }
    if spec.mac == [0; 6] {
        return Err("the MAC address is all zeros".into());
    }
    if spec.mtu < 68 {
        return Err(format!("MTU {} is below the IPv4 minimum of 68", spec.mtu));
    }
    Ok(())
}

/// Creates and configures a TAP interface in the network namespace at
/// `netns` and returns it. See the [module docs](self).
pub fn provision_tap(netns: &Path, spec: TapSpec) -> Result<Tap, ProvisionError> {
    validate_spec(&spec).map_err(|reason| ProvisionError::InvalidSpec {
        ifname: spec.ifname.clone(),
        reason,
    })?;
    let ns = netns.to_owned();
    run_in_netns(netns, move || provision_inside(ns, spec))?
}

/// The body of [`provision_tap`], running inside the namespace.
pub(crate) fn provision_inside(netns: PathBuf, spec: TapSpec) -> Result<Tap, ProvisionError> {
    let ifname = spec.ifname.clone();
    let nl_err = |step: ProvisionStep| {
        let ifname = ifname.clone();
        let netns = netns.clone();
        move |source| ProvisionError::Netlink {
            step,
            ifname,
            netns,
            source,
        }
    };

    let mut nl = Netlink::open().map_err(nl_err(ProvisionStep::OpenNetlink))?;
    if nl
        .link_index(&spec.ifname)
        .map_err(nl_err(ProvisionStep::CheckIfname))?
        .is_some()
    {
        return Err(ProvisionError::IfnameTaken {
            ifname: spec.ifname,
            netns,
        });
    }
    nl.set_loopback_up()
        .map_err(nl_err(ProvisionStep::LoopbackUp))?;

    let tap = Tap::create(&spec.ifname, spec.tap).map_err(|source| ProvisionError::Tap {
        ifname: spec.ifname.clone(),
        netns: netns.clone(),
        source,
    })?;
    // From here on, returning early drops `tap`, which removes the device.
    let index = nl
        .link_index(tap.name())
        .map_err(nl_err(ProvisionStep::LookupIndex))?
        .ok_or_else(|| ProvisionError::Vanished {
            ifname: spec.ifname.clone(),
            netns: netns.clone(),
        })?;
    nl.set_link_mac(index, spec.mac)
        .map_err(nl_err(ProvisionStep::SetMac))?;
    nl.set_link_mtu(index, spec.mtu)
        .map_err(nl_err(ProvisionStep::SetMtu))?;
    nl.add_ipv4_address(index, spec.ip, spec.prefix_len)
        .map_err(nl_err(ProvisionStep::AddAddress))?;
    if spec.disable_ipv6 {
        // Per-namespace sysctl, resolved in this thread's namespace. A
        // kernel without IPv6 has no such file, which is just as good.
        let knob = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", spec.ifname);
        let _ = std::fs::write(knob, "1");
    }
    if spec.tap.napi {
        // Left to the kernel, a multi-queue TAP comes up with a pfifo_fast
        // for each of its 256 possible queues: 6 MiB of kernel memory and
        // 20 ms per endpoint on this kind of VM. The endpoint sends on
        // one queue ([`set_up_napi`]), which one qdisc serves as well, as
        // it did single-queue TAPs.
        nl.set_root_qdisc(index, "pfifo_fast")
            .map_err(nl_err(ProvisionStep::SetQdisc))?;
    }
    nl.set_link_up(index)
        .map_err(nl_err(ProvisionStep::LinkUp))?;
    if let Some(gateway) = spec.default_gateway {
        nl.add_ipv4_default_route(gateway, index)
            .map_err(nl_err(ProvisionStep::AddDefaultRoute))?;
    }
    let mut tap = tap;
    set_up_napi(&mut tap, spec.tap);
    Ok(tap)
}

/// For a TAP made with [`TapOptions::napi`]: keeps the endpoint's frames
/// on its plain queue, attaches its NAPI queue, sets its `threaded`
/// attribute ([`crate::napi`]) and turns its GRO off.
/// Last, as on a kernel before 5.2 setting the attribute moves the
/// calling thread into a mount namespace of its own
/// ([`thread_napi_here`]). Without them the TAP works as well, its
/// receive processing always on the writer's CPU.
fn set_up_napi(tap: &mut Tap, opts: TapOptions) {
    if !opts.napi {
        return;
    }
    // What weft writes is merged already (see crate::ethtool); a kernel
    // that refuses leaves GRO on, which costs time, not frames.
    let _ = crate::ethtool::set_gro(tap.name(), false);
    let napi = steer_to_first_queue(tap.as_fd())
        .map_err(|e| {
            format!(
                "the program that keeps the endpoint's frames on one queue could not be loaded \
                 (it needs CAP_BPF): {e}"
            )
        })
        .and_then(|()| {
            tap.attach_napi_queue().map_err(|e| {
                format!(
                    "its NAPI queue could not be attached: {}",
                    crate::error_chain(&e)
                )
            })
        })
        .and_then(|queue| {
            thread_napi_here(tap.name())
                .map(|()| NapiQueue::new(queue))
                .map_err(|e| format!("its NAPI could not be made threaded: {e}"))
        });
    tap.set_napi(napi);
}

/// How [`adopt_tap`] got its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// The persistent TAP of an earlier daemon was taken back.
    Reattached,
    /// There was none: a new one was made.
    Created,
}

/// Like [`provision_tap`], and the device is persistent (`TUNSETPERSIST`):
/// it stays in the namespace, configured, when the process ends without
/// dropping the returned [`Tap`] (see [`crate::tap`]).
pub fn provision_persistent_tap(netns: &Path, spec: TapSpec) -> Result<Tap, ProvisionError> {
    validate_spec(&spec).map_err(|reason| ProvisionError::InvalidSpec {
        ifname: spec.ifname.clone(),
        reason,
    })?;
    let ns = netns.to_owned();
    run_in_netns(netns, move || {
        let mut tap = provision_inside(ns.clone(), spec.clone())?;
        tap.set_persist(true)
            .map_err(|source| ProvisionError::Tap {
                ifname: spec.ifname,
                netns: ns,
                source,
            })?;
        Ok(tap)
    })?
}

/// Takes back the persistent TAP `spec.ifname` an earlier process left in
/// the namespace at `netns` and enforces `spec`'s MAC, MTU, address and
/// link state on it (each a no-op when already so); when there is no such
/// interface, makes a new persistent one as [`provision_persistent_tap`]
/// does. An interface of that name that is not a free TAP is refused
/// ([`crate::tap::TapError::Reattach`]) and left alone.
pub fn adopt_tap(netns: &Path, spec: TapSpec) -> Result<(Tap, Adopted), ProvisionError> {
    validate_spec(&spec).map_err(|reason| ProvisionError::InvalidSpec {
        ifname: spec.ifname.clone(),
        reason,
    })?;
    let ns = netns.to_owned();
    let exists = link_exists(netns, &spec.ifname)?;
    if !exists {
        return provision_persistent_tap(netns, spec).map(|tap| (tap, Adopted::Created));
    }
    run_in_netns(netns, move || reattach_inside(ns, spec))?
}

/// The body of [`adopt_tap`] for an existing interface.
fn reattach_inside(netns: PathBuf, spec: TapSpec) -> Result<(Tap, Adopted), ProvisionError> {
    let nl_err = |step: ProvisionStep| {
        let ifname = spec.ifname.clone();
        let netns = netns.clone();
        move |source| ProvisionError::Netlink {
            step,
            ifname,
            netns,
            source,
        }
    };
    let mut nl = Netlink::open().map_err(nl_err(ProvisionStep::OpenNetlink))?;
    let mut opts = spec.tap;
    let tap = match Tap::reattach(&spec.ifname, opts) {
        // A single-queue TAP of a weft from before NAPI queues: taken back
        // as it is.
        Err(TapError::Reattach { source, .. })
            if opts.napi && source.raw_os_error() == Some(libc::EINVAL) =>
        {
            opts.napi = false;
            Tap::reattach(&spec.ifname, opts)
        }
        other => other,
    }
    .map_err(|source| ProvisionError::Tap {
        ifname: spec.ifname.clone(),
        netns: netns.clone(),
        source,
    })?;
    let index = nl
        .link_index(tap.name())
        .map_err(nl_err(ProvisionStep::LookupIndex))?
        .ok_or_else(|| ProvisionError::Vanished {
            ifname: spec.ifname.clone(),
            netns: netns.clone(),
        })?;
    nl.set_link_mac(index, spec.mac)
        .map_err(nl_err(ProvisionStep::SetMac))?;
    nl.set_link_mtu(index, spec.mtu)
        .map_err(nl_err(ProvisionStep::SetMtu))?;
    match nl.add_ipv4_address(index, spec.ip, spec.prefix_len) {
        Err(e) if e.kernel_errno() != Some(libc::EEXIST) => {
            return Err(nl_err(ProvisionStep::AddAddress)(e))
        }
        _ => {}
    }
    if opts.napi {
        // A TAP from a weft before this one may still have the kernel's
        // mq and its 256 pfifo_fast qdiscs (see provision_inside).
        nl.set_root_qdisc(index, "pfifo_fast")
            .map_err(nl_err(ProvisionStep::SetQdisc))?;
    }
    nl.set_link_up(index)
        .map_err(nl_err(ProvisionStep::LinkUp))?;
    if let Some(gateway) = spec.default_gateway {
        match nl.add_ipv4_default_route(gateway, index) {
            Err(e) if e.kernel_errno() != Some(libc::EEXIST) => {
                return Err(nl_err(ProvisionStep::AddDefaultRoute)(e))
            }
            _ => {}
        }
    }
    let mut tap = tap;
    set_up_napi(&mut tap, opts);
    Ok((tap, Adopted::Reattached))
}

/// Whether an interface called `ifname` exists in the namespace at `netns`.
pub fn link_exists(netns: &Path, ifname: &str) -> Result<bool, ProvisionError> {
    let ns = netns.to_owned();
    let name = ifname.to_owned();
    run_in_netns(netns, move || {
        let mut nl = Netlink::open()?;
        nl.link_index(&name).map(|i| i.is_some())
    })?
    .map_err(|source| ProvisionError::Netlink {
        step: ProvisionStep::CheckIfname,
        ifname: ifname.to_owned(),
        netns: ns,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tap::{
        VirtioNetHdr, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, VIRTIO_NET_HDR_GSO_NONE,
        VIRTIO_NET_HDR_LEN,
    };
    use crate::testns::{ip_json, ip_text, tc_text, TestNs};
    use std::io;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    const MAC: [u8; 6] = [0x02, 0x57, 0xef, 0x00, 0x00, 0x02];
    const GW_MAC: [u8; 6] = [0x02, 0x57, 0xef, 0x00, 0x00, 0x01];

    fn spec(ifname: &str) -> TapSpec {
        TapSpec {
            ifname: ifname.to_owned(),
            mac: MAC,
            ip: Ipv4Addr::new(10, 77, 0, 2),
            prefix_len: 24,
            mtu: 1400,
            default_gateway: Some(Ipv4Addr::new(10, 77, 0, 1)),
            tap: TapOptions::default(),
            disable_ipv6: false,
        }
    }

    #[test]
    fn provisions_mac_mtu_state_address_and_route() {
        let Some(ns) = TestNs::new("prov-ok") else {
            return;
        };
        assert!(!link_exists(ns.path(), "eth0").unwrap());
        let tap = provision_tap(ns.path(), spec("eth0")).expect("provision_tap");
        assert_eq!(tap.name(), "eth0");
        assert!(link_exists(ns.path(), "eth0").unwrap());
        assert!(!link_exists(ns.path(), "eth1").unwrap());

        let link = &ip_json(&ns, &["link", "show", "dev", "eth0"])[0];
        assert_eq!(link["address"], "02:57:ef:00:00:02", "{link:?}");
        assert_eq!(link["mtu"], 1400u64, "{link:?}");
        assert!(link["flags"].contains_str("UP"), "{link:?}");
        // A TAP with an attached fd has carrier, so the link is fully up
        // (tun never reports an operstate, so that stays UNKNOWN).
        assert!(link["flags"].contains_str("LOWER_UP"), "{link:?}");
        assert!(
            link["operstate"] == "UNKNOWN" || link["operstate"] == "UP",
            "{link:?}"
        );

        let lo = &ip_json(&ns, &["link", "show", "dev", "lo"])[0];
        assert!(lo["flags"].contains_str("UP"), "{lo:?}");

        let addrs = ip_json(&ns, &["-4", "addr", "show", "dev", "eth0"]);
        let info = &addrs[0]["addr_info"][0];
        assert_eq!(info["local"], "10.77.0.2", "{addrs:?}");
        assert_eq!(info["prefixlen"], 24u64, "{addrs:?}");
        assert_eq!(info["broadcast"], "10.77.0.255", "{addrs:?}");

        let routes = ip_text(&ns, &["route"]);
        assert!(
            routes.contains("default via 10.77.0.1 dev eth0 proto static"),
            "{routes}"
        );
        assert!(routes.contains("10.77.0.0/24 dev eth0"), "{routes}");

        drop(tap);
        assert!(ns.wait_link_gone("eth0"), "eth0 still there after drop");
        assert!(!link_exists(ns.path(), "eth0").unwrap());
    }

    /// The lines of `tc qdisc show dev eth0` in `ns`.
    fn qdiscs(ns: &TestNs) -> Vec<String> {
        tc_text(ns, &["qdisc", "show", "dev", "eth0"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn assert_one_root_pfifo_fast(ns: &TestNs) {
        let lines = qdiscs(ns);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("qdisc pfifo_fast") && lines[0].contains(" root "),
            "{lines:?}"
        );
    }

    #[test]
    fn a_tap_with_a_napi_queue_comes_up_with_one_root_qdisc() {
        let Some(ns) = TestNs::new("prov-qdisc") else {
            return;
        };
        let mut wanted = spec("eth0");
        wanted.tap.napi = true;
        let (tap, how) = adopt_tap(ns.path(), wanted.clone()).expect("first adopt");
        assert_eq!(how, Adopted::Created);
        let details = ip_text(&ns, &["-d", "link", "show", "dev", "eth0"]);
        assert!(details.contains("numqueues 2"), "{details}");
        // The kernel's default would be mq with a pfifo_fast for each of
        // 256 possible queues, 6 MiB of memory per endpoint.
        assert_one_root_pfifo_fast(&ns);

        // A TAP made by a weft before this one, taken back.
        tc_text(&ns, &["qdisc", "replace", "dev", "eth0", "root", "mq"]);
        assert!(qdiscs(&ns)[0].starts_with("qdisc mq"));
        drop(tap.into_fd());
        let (tap, how) = adopt_tap(ns.path(), wanted).expect("second adopt");
        assert_eq!(how, Adopted::Reattached);
        assert_one_root_pfifo_fast(&ns);
        drop(tap);
    }

    #[test]
    fn a_persistent_tap_outlives_its_descriptor_and_is_taken_back() {
        let Some(ns) = TestNs::new("prov-persist") else {
            return;
        };
        let mut wanted = spec("eth0");
        wanted.tap.vnet_hdr = true;
        let (tap, how) = adopt_tap(ns.path(), wanted.clone()).expect("first adopt");
        assert_eq!(how, Adopted::Created);
        assert!(tap.is_persistent());
        // What a killed process does: the descriptor closes, no drop runs.
        drop(tap.into_fd());
        std::thread::sleep(Duration::from_millis(50));
        assert!(ns.link_exists("eth0"), "a persistent TAP vanished");
        let link = &ip_json(&ns, &["link", "show", "dev", "eth0"])[0];
        assert_eq!(link["address"], "02:57:ef:00:00:02", "{link:?}");

        let (tap, how) = adopt_tap(ns.path(), wanted.clone()).expect("second adopt");
        assert_eq!(how, Adopted::Reattached);
        let link = &ip_json(&ns, &["link", "show", "dev", "eth0"])[0];
        assert_eq!(link["address"], "02:57:ef:00:00:02", "{link:?}");
        assert_eq!(link["mtu"], 1400u64, "{link:?}");
        let addrs = ip_text(&ns, &["-4", "addr", "show", "dev", "eth0"]);
        assert!(addrs.contains("10.77.0.2/24"), "{addrs}");
        assert!(
            ip_text(&ns, &["route"]).contains("default via 10.77.0.1"),
            "the default route went missing"
        );
        // A second taker is refused while the first holds it.
        let busy = adopt_tap(ns.path(), wanted.clone()).unwrap_err();
        assert!(matches!(busy, ProvisionError::Tap { .. }), "{busy:?}");
        // Dropping it is an explicit removal: the device goes.
        drop(tap);
        assert!(ns.wait_link_gone("eth0"), "eth0 still there after drop");
    }

    #[test]
    fn adopt_refuses_an_interface_that_is_not_a_tap() {
        let Some(ns) = TestNs::new("prov-notap") else {
            return;
        };
        ip_text(
            &ns,
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
            ],
        );
        let e = adopt_tap(ns.path(), spec("eth0")).unwrap_err();
        assert!(matches!(e, ProvisionError::Tap { .. }), "{e:?}");
        assert!(e.to_string().contains("eth0"), "{e}");
        let link = &ip_json(&ns, &["-d", "link", "show", "dev", "eth0"])[0];
        assert_eq!(link["linkinfo"]["info_kind"], "veth", "{link:?}");
    }

    #[test]
    fn ifname_taken_leaves_state_unchanged() {
        let Some(ns) = TestNs::new("prov-taken") else {
            return;
        };
        let first = provision_tap(ns.path(), spec("eth0")).expect("first");
        let before_links = ip_text(&ns, &["link"]);
        let before_addrs = ip_text(&ns, &["addr"]);
        let before_routes = ip_text(&ns, &["route"]);

        let mut second = spec("eth0");
        second.mac = [0x02, 0, 0, 0, 0, 0x99];
        second.ip = Ipv4Addr::new(10, 77, 0, 3);
        let err = provision_tap(ns.path(), second).unwrap_err();
        match &err {
            ProvisionError::IfnameTaken { ifname, netns } => {
                assert_eq!(ifname, "eth0");
                assert_eq!(netns, ns.path());
            }
            other => panic!("expected IfnameTaken, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("eth0") && msg.contains(ns.name()), "{msg}");
        assert!(msg.contains("--ifname"), "{msg}");
        assert_eq!(err.step(), Some(ProvisionStep::CheckIfname));

        assert_eq!(ip_text(&ns, &["link"]), before_links);
        assert_eq!(ip_text(&ns, &["addr"]), before_addrs);
        assert_eq!(ip_text(&ns, &["route"]), before_routes);
        drop(first);
    }

    #[test]
    fn failed_step_removes_the_tap() {
        let Some(ns) = TestNs::new("prov-fail") else {
            return;
        };
        // A gateway outside the subnet cannot be reached: the route step
        // fails after the TAP was created and configured.
        let mut s = spec("eth0");
        s.default_gateway = Some(Ipv4Addr::new(192, 0, 2, 1));
        let err = provision_tap(ns.path(), s).unwrap_err();
        assert_eq!(err.step(), Some(ProvisionStep::AddDefaultRoute), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("default route") && msg.contains("eth0"),
            "{msg}"
        );
        assert!(ns.wait_link_gone("eth0"), "TAP left behind after failure");
    }

    #[test]
    fn rejects_bad_specs_without_touching_the_namespace() {
        let missing = Path::new("/var/run/netns/weft-no-such-ns");
        type Mutation = fn(&mut TapSpec);
        let cases: [(&str, Mutation); 5] = [
            ("name", |s| s.ifname = "much-too-long-name".into()),
            ("prefix", |s| s.prefix_len = 33),
            ("multicast", |s| s.mac = [0x01, 0, 0x5e, 0, 0, 1]),
            ("zero mac", |s| s.mac = [0; 6]),
            ("mtu", |s| s.mtu = 10),
        ];
        for (what, mutate) in cases {
            let mut s = spec("eth0");
            mutate(&mut s);
            let err = provision_tap(missing, s).unwrap_err();
            assert!(
                matches!(err, ProvisionError::InvalidSpec { .. }),
                "{what}: {err:?}"
            );
        }
        let err = provision_tap(missing, spec("eth0")).unwrap_err();
        assert!(
            matches!(err, ProvisionError::Netns(NetnsError::NotFound { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains("ip netns list"));
    }

    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Reads frames (skipping `skip` header bytes) until `want` accepts one
    /// or the deadline passes.
    fn read_until(
        tap: &Tap,
        skip: usize,
        timeout: Duration,
        mut want: impl FnMut(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            match tap.read(&mut buf) {
                Ok(n) => {
                    let frame = &buf[..n];
                    if n >= skip && want(&frame[skip..]) {
                        return Some(frame.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("tap read failed: {e}"),
            }
        }
        None
    }

    fn is_arp_request_for(frame: &[u8], target: Ipv4Addr) -> bool {
        frame.len() >= 42
            && frame[12..14] == [0x08, 0x06]
            && frame[20..22] == [0, 1]
            && frame[38..42] == target.octets()
    }

    fn arp_reply(
        src_mac: [u8; 6],
        src_ip: Ipv4Addr,
        dst_mac: [u8; 6],
        dst_ip: Ipv4Addr,
    ) -> Vec<u8> {
        let mut f = Vec::with_capacity(42);
        f.extend_from_slice(&dst_mac);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x08, 0x06]); // ARP
        f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]); // Ethernet/IPv4, reply
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&src_ip.octets());
        f.extend_from_slice(&dst_mac);
        f.extend_from_slice(&dst_ip.octets());
        f
    }

    /// Full round trip: the namespace pings the gateway, we answer its ARP
    /// request and its ICMP echo request through the TAP, and ping succeeds.
    fn ping_round_trip(ns: &TestNs, tap: &Tap) {
        use etherparse::{Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

        let skip = if tap.vnet_hdr() {
            VIRTIO_NET_HDR_LEN
        } else {
            0
        };
        let gw = Ipv4Addr::new(10, 77, 0, 1);
        let me = Ipv4Addr::new(10, 77, 0, 2);
        tap.set_nonblocking(true).unwrap();
        let mut ping = KillOnDrop(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns.name(),
                    "ping",
                    "-c1",
                    "-W3",
                    "10.77.0.1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ping"),
        );

        let arp = read_until(tap, skip, Duration::from_secs(1), |f| {
            is_arp_request_for(f, gw)
        })
        .expect("no ARP request for the gateway within a second");
        if skip > 0 {
            let hdr = VirtioNetHdr::parse(&arp).unwrap();
            assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_NONE);
        }
        let arp = &arp[skip..];
        assert_eq!(&arp[0..6], &[0xff; 6], "ARP request is broadcast");
        assert_eq!(&arp[6..12], &MAC, "sent from the provisioned MAC");

        let reply = arp_reply(GW_MAC, gw, MAC, me);
        let mut out = vec![0u8; skip];
        out.extend_from_slice(&reply);
        assert_eq!(tap.write(&out).expect("write ARP reply"), out.len());

        let echo = read_until(tap, skip, Duration::from_secs(2), |f| {
            f.len() > 14 && f[0..6] == GW_MAC && f[12..14] == [0x08, 0x00]
        })
        .expect("no ICMP echo request after the ARP reply");
        let pkt = SlicedPacket::from_ethernet(&echo[skip..]).expect("parse echo request");
        let Some(NetSlice::Ipv4(ip)) = &pkt.net else {
            panic!("not IPv4: {pkt:?}")
        };
        assert_eq!(ip.header().source_addr(), me);
        assert_eq!(ip.header().destination_addr(), gw);
        let Some(TransportSlice::Icmpv4(icmp)) = &pkt.transport else {
            panic!("not ICMP: {pkt:?}")
        };
        let Icmpv4Type::EchoRequest(req) = icmp.icmp_type() else {
            panic!("not an echo request: {:?}", icmp.icmp_type())
        };

        let builder = PacketBuilder::ethernet2(GW_MAC, MAC)
            .ipv4(gw.octets(), me.octets(), 64)
            .icmpv4_echo_reply(req.id, req.seq);
        let payload = icmp.payload();
        let mut out = vec![0u8; skip];
        builder.write(&mut out, payload).expect("build echo reply");
        assert_eq!(tap.write(&out).expect("write echo reply"), out.len());

        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = ping.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "ping did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "ping did not get our echo reply");
    }

    #[test]
    fn frames_flow_both_ways() {
        let Some(ns) = TestNs::new("prov-ping") else {
            return;
        };
        let tap = provision_tap(ns.path(), spec("eth0")).expect("provision_tap");
        ping_round_trip(&ns, &tap);
    }

    #[test]
    fn frames_flow_with_vnet_hdr_and_offloads() {
        let Some(ns) = TestNs::new("prov-vnet") else {
            return;
        };
        let mut s = spec("eth0");
        s.tap = TapOptions {
            vnet_hdr: true,
            multi_queue: false,
            napi: false,
        };
        let tap = provision_tap(ns.path(), s).expect("provision_tap");
        assert!(tap.vnet_hdr());
        tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            .expect("set_offload");
        ping_round_trip(&ns, &tap);
    }
}
