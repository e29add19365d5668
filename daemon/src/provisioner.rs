//! The real [`Provisioner`]: network namespaces, TAP devices configured over
//! rtnetlink, the AF_PACKET uplink, the VXLAN socket and the resolver files
//! `ip netns exec` bind-mounts, with every OS error turned into an API
//! error that says what to do.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use weft_api::{ApiError, ErrorKind, TapCounters};
use weft_control::{Netns, NetnsTarget, Provisioner, SocketUplinkConfig, TapRequest, UplinkDevice};
use weft_datapath::port::HostListener;
use weft_datapath::port::{Port, TapPort};
use weft_datapath::sockets::SocketUplinkPort;
use weft_datapath::uplink::UplinkPort;
use weft_hostnet::SocketUplink;
use weft_os::linkstats::{link_stats_in, LinkStatsError};
use weft_os::netns::{check_netns, netns_path_for_name, netns_path_for_pid, NetnsError};
use weft_os::privilege::Privilege;
use weft_os::provision::{
    adopt_tap, link_exists, provision_persistent_tap, HelperErrorKind, ProvisionError, TapSpec,
};
use weft_os::tap::TapOptions;
use weft_os::udp::VxlanSocket;
use weft_os::userns::{link_exists_via_helper, provision_tap_via_helper};

/// Send sockets in the VTEP's pool, so outer source ports vary by flow.
const VTEP_SEND_SOCKETS: usize = 8;
/// First line of every resolv.conf weft writes: how weft recognises its own.
const RESOLV_CONF_MARK: &str = "# written by weft";

/// Makes devices in the operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsProvisioner;

impl Provisioner for OsProvisioner {
    fn open_netns(&self, target: &NetnsTarget) -> Result<Netns, ApiError> {
        let path = match target {
            NetnsTarget::Name(name) => netns_path_for_name(name)
                .map_err(|e| ApiError::new(ErrorKind::InvalidArgument, e.to_string()))?,
            NetnsTarget::Pid(pid) => netns_path_for_pid(*pid),
            NetnsTarget::Path(path) => path.clone(),
        };
        check_netns(&path).map_err(|e| netns_error(e, target))?;
        let id = self.netns_id(&path)?;
        Ok(Netns { path, id })
    }

    /// One `stat`: the path was checked to be a namespace when the
    /// endpoint was attached, and a namespace's device (nsfs) and inode
    /// are nobody else's.
    fn netns_id(&self, path: &Path) -> Result<(u64, u64), ApiError> {
        std::fs::metadata(path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| {
                let kind = if e.kind() == std::io::ErrorKind::NotFound {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::System
                };
                ApiError::new(kind, format!("{}: {e}", path.display()))
            })
    }

    fn link_exists(&self, netns: &Path, ifname: &str) -> Result<bool, ApiError> {
        let result = if needs_helper() {
            link_exists_via_helper(netns, ifname)
        } else {
            match link_exists(netns, ifname) {
                Err(e) if cannot_enter(&e) => link_exists_via_helper(netns, ifname),
                other => other,
            }
        };
        result.map_err(|e| provision_error(e, netns))
    }

    /// A TAP made directly is persistent, so it outlives the daemon (see
    /// `weft_os::tap`); one made by the rootless helper is not.
    fn create_tap(&self, netns: &Path, tap: &TapRequest) -> Result<Box<dyn Port>, ApiError> {
        let spec = tap_spec(tap);
        let device = if needs_helper() {
            provision_tap_via_helper(netns, spec)
        } else {
            match provision_persistent_tap(netns, spec.clone()) {
                Err(e) if cannot_enter(&e) => provision_tap_via_helper(netns, spec),
                other => other,
            }
        }
        .map_err(|e| provision_error(e, netns))?;
        tap_port(device)
    }

    fn adopt_tap(&self, netns: &Path, tap: &TapRequest) -> Result<Box<dyn Port>, ApiError> {
        let spec = tap_spec(tap);
        let device = if needs_helper() {
            // The helper's TAPs die with the daemon: make it again.
            provision_tap_via_helper(netns, spec)
        } else {
            match adopt_tap(netns, spec.clone()) {
                Ok((device, how)) => {
                    tracing::debug!(ifname = %tap.ifname, netns = %netns.display(), ?how, "TAP adopted");
                    Ok(device)
                }
                Err(e) if cannot_enter(&e) => provision_tap_via_helper(netns, spec),
                Err(e) => Err(e),
            }
        }
        .map_err(|e| provision_error(e, netns))?;
        tap_port(device)
    }

    fn open_uplink(&self, interface: &str) -> Result<UplinkDevice, ApiError> {
        let port = UplinkPort::open(interface).map_err(|e| {
            ApiError::new(
                ErrorKind::NotFound,
                format!("cannot use {interface} as the uplink: {e}"),
            )
        })?;
        let mtu = port.socket().mtu().unwrap_or(1500);
        Ok(UplinkDevice {
            port: Box::new(port),
            mtu,
            socket_counters: None,
        })
    }

    fn open_socket_uplink(&self, cfg: SocketUplinkConfig) -> Result<UplinkDevice, ApiError> {
        let uplink = SocketUplink::new(cfg).map_err(|e| {
            ApiError::new(
                ErrorKind::System,
                format!(
                    "cannot make the socket uplink: {}",
                    weft_os::error_chain(&e)
                ),
            )
        })?;
        let socket_counters = Some(uplink.counters());
        Ok(UplinkDevice {
            port: Box::new(SocketUplinkPort::new(uplink)),
            // No link below: the switch never needs to cut anything for it.
            mtu: u32::from(u16::MAX),
            socket_counters,
        })
    }

    fn listen_host(&self, tcp: bool, addr: SocketAddrV4) -> Result<HostListener, ApiError> {
        let proto = if tcp { "tcp" } else { "udp" };
        HostListener::bind(tcp, addr).map_err(|e| {
            let port = addr.port();
            let (kind, hint) = match e.kind() {
                std::io::ErrorKind::PermissionDenied => (
                    ErrorKind::System,
                    format!("port {port} is privileged (below net.ipv4.ip_unprivileged_port_start, 1024 by default) and this daemon has no CAP_NET_BIND_SERVICE: publish a host port of 1024 or more, e.g. {}:PORT", 8000 + port),
                ),
                std::io::ErrorKind::AddrInUse => (
                    ErrorKind::AlreadyExists,
                    format!("something on this host already uses {addr}/{proto}: pick another host port"),
                ),
                std::io::ErrorKind::AddrNotAvailable => (
                    ErrorKind::InvalidArgument,
                    format!("{} is not an address of this host: pass one of its addresses to --host-ip, or leave it out", addr.ip()),
                ),
                _ => (ErrorKind::System, "check the address and port".to_string()),
            };
            ApiError::new(
                kind,
                format!("cannot listen on host port {addr}/{proto}: {e}; {hint}"),
            )
        })
    }

    fn tap_counters(&self, netns: &Netns, ifname: &str) -> Result<TapCounters, ApiError> {
        tap_counters(netns, ifname)
    }

    fn bind_vtep(&self, listen: SocketAddrV4) -> Result<VxlanSocket, ApiError> {
        VxlanSocket::bind(listen, VTEP_SEND_SOCKETS).map_err(|e| {
            ApiError::new(
                ErrorKind::System,
                format!(
                    "cannot serve VXLAN on {listen}: {e} ({}); another VTEP may hold the port: pass `weft daemon --vxlan-listen ADDR:PORT`",
                    e.io_error()
                ),
            )
        })
    }

    /// Writes `/etc/netns/NAME/resolv.conf` (which `ip netns exec`
    /// bind-mounts) unless the file exists and is not weft's.
    fn write_resolv_conf(&self, netns_name: &str, gateway: Ipv4Addr) -> Option<PathBuf> {
        let dir = PathBuf::from("/etc/netns").join(netns_name);
        let path = dir.join("resolv.conf");
        if let Ok(existing) = std::fs::read_to_string(&path) {
            if !existing.starts_with(RESOLV_CONF_MARK) {
                return None;
            }
        }
        let text = format!(
            "{RESOLV_CONF_MARK}: the gateway answers for this network's names (remove this file or attach with --no-resolv-conf to manage it yourself)\nnameserver {gateway}\noptions ndots:0\n"
        );
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(&path, text).ok()?;
        Some(path)
    }

    /// Removes a resolv.conf weft wrote, and its directory if left empty.
    fn remove_resolv_conf(&self, path: &Path) {
        let ours = std::fs::read_to_string(path).is_ok_and(|t| t.starts_with(RESOLV_CONF_MARK));
        if ours {
            let _ = std::fs::remove_file(path);
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// The kernel's counters of TAP `ifname` in `netns`, named by direction:
/// for `weft stats` (through [`Provisioner::tap_counters`]) and for the
/// metrics exporter, which reads them off the control plane's lock.
pub(crate) fn tap_counters(netns: &Netns, ifname: &str) -> Result<TapCounters, ApiError> {
    if needs_helper() {
        // A daemon without privilege enters the endpoint's namespace
        // through the rootless helper, as it does to make the TAP.
        return match weft_os::userns::link_stats_via_helper(&netns.path, ifname) {
            Ok(Some(s)) => Ok(tap_counters_of(s)),
            Ok(None) => Err(ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "no interface {ifname} in network namespace {}",
                    netns.path.display()
                ),
            )),
            Err(e) => Err(ApiError::new(ErrorKind::System, weft_os::error_chain(&e))),
        };
    }
    match link_stats_in(&netns.path, Some(netns.id), ifname) {
        Ok(s) => Ok(tap_counters_of(s)),
        Err(e) => {
            let kind = match e {
                LinkStatsError::NamespaceGone { .. }
                | LinkStatsError::NamespaceReplaced { .. }
                | LinkStatsError::NoLink { .. } => ErrorKind::NotFound,
                _ => ErrorKind::System,
            };
            Err(ApiError::new(kind, weft_os::error_chain(&e)))
        }
    }
}

fn tap_counters_of(s: weft_os::LinkStats) -> TapCounters {
    TapCounters {
        // The TAP's own view: it transmits what the endpoint sends (to
        // weft) and receives what weft writes (to the endpoint).
        from_endpoint_packets: s.tx_packets,
        from_endpoint_dropped: s.tx_dropped,
        to_endpoint_packets: s.rx_packets,
        to_endpoint_dropped: s.rx_dropped,
    }
}

fn tap_spec(tap: &TapRequest) -> TapSpec {
    TapSpec {
        ifname: tap.ifname.clone(),
        mac: tap.mac.0,
        ip: tap.ip,
        prefix_len: tap.prefix_len,
        mtu: tap.mtu,
        default_gateway: tap.default_gateway,
        tap: TapOptions {
            vnet_hdr: true,
            multi_queue: false,
            napi: true,
        },
        disable_ipv6: true,
    }
}

fn tap_port(device: weft_os::tap::Tap) -> Result<Box<dyn Port>, ApiError> {
    let port = TapPort::new(device).map_err(|e| {
        ApiError::new(
            ErrorKind::System,
            format!("could not make the TAP non-blocking: {e}"),
        )
    })?;
    Ok(Box::new(port))
}

/// Whether this daemon lacks the capabilities to enter any namespace
/// directly (CAP_SYS_ADMIN and CAP_NET_ADMIN over the host), so TAPs are
/// made by the rootless helper (`weft_os::userns`) in namespaces its user
/// owns. Read once: a process's capabilities do not grow.
fn needs_helper() -> bool {
    static NEEDS: OnceLock<bool> = OnceLock::new();
    *NEEDS.get_or_init(|| !Privilege::current().can_enter_any_netns())
}

/// Whether the direct path failed only because `setns` was refused, so the
/// helper, entering the namespace's user namespace first, may succeed.
fn cannot_enter(e: &ProvisionError) -> bool {
    matches!(
        e,
        ProvisionError::Netns(NetnsError::Permission { op: "enter", .. })
    )
}

fn netns_error(e: NetnsError, target: &NetnsTarget) -> ApiError {
    match (&e, target) {
        (NetnsError::NotFound { .. }, NetnsTarget::Pid(pid)) => ApiError::new(
            ErrorKind::NotFound,
            format!("no process with PID {pid} (or its network namespace is gone): check the PID"),
        ),
        (NetnsError::NotFound { .. }, NetnsTarget::Name(name)) => ApiError::new(
            ErrorKind::NotFound,
            format!(
                "network namespace `{name}` not found: create it with `ip netns add {name}` or check `ip netns list`"
            ),
        ),
        (NetnsError::NotFound { .. }, NetnsTarget::Path(path)) => ApiError::new(
            ErrorKind::NotFound,
            format!(
                "network namespace {} not found: check the path (is the container still running?)",
                path.display()
            ),
        ),
        (NetnsError::Permission { .. }, _) => ApiError::new(ErrorKind::System, e.to_string()),
        _ => ApiError::new(ErrorKind::InvalidArgument, e.to_string()),
    }
}

fn provision_error(e: ProvisionError, netns: &Path) -> ApiError {
    match e {
        ProvisionError::IfnameTaken { .. } => {
            ApiError::new(ErrorKind::AlreadyExists, e.to_string())
        }
        ProvisionError::InvalidSpec { .. } => {
            ApiError::new(ErrorKind::InvalidArgument, e.to_string())
        }
        ProvisionError::Netns(inner) => {
            let kind = match inner {
                NetnsError::NotFound { .. } => ErrorKind::NotFound,
                NetnsError::Permission { .. } => ErrorKind::System,
                _ => ErrorKind::InvalidArgument,
            };
            ApiError::new(kind, format!("{}: {inner}", netns.display()))
        }
        ProvisionError::Helper { kind, message } => {
            let kind = match kind {
                HelperErrorKind::NotFound => ErrorKind::NotFound,
                HelperErrorKind::IfnameTaken => ErrorKind::AlreadyExists,
                HelperErrorKind::Invalid => ErrorKind::InvalidArgument,
                HelperErrorKind::Permission
                | HelperErrorKind::TunAccess
                | HelperErrorKind::System => ErrorKind::System,
            };
            ApiError::new(kind, message)
        }
        other => ApiError::new(ErrorKind::System, weft_os::error_chain(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_path_keeps_its_identity_and_a_missing_one_is_not_found() {
        let own = Path::new("/proc/self/ns/net");
        let id = OsProvisioner.netns_id(own).unwrap();
        let opened = OsProvisioner
            .open_netns(&NetnsTarget::Path(own.to_owned()))
            .unwrap();
        assert_eq!(id, opened.id);

        let missing = std::env::temp_dir().join(format!("weft-t-gone-{}", std::process::id()));
        let err = OsProvisioner.netns_id(&missing).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound, "{err:?}");

        // What an unmounted bind mount leaves: a plain file, another id.
        std::fs::write(&missing, b"").unwrap();
        let other = OsProvisioner.netns_id(&missing);
        std::fs::remove_file(&missing).unwrap();
        assert_ne!(other.unwrap(), id);
    }
}
