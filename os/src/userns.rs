//! The rootless helper: provisioning a TAP inside a network namespace that
//! belongs to a user namespace the daemon's user owns.
//!
//! An unprivileged daemon cannot `setns(CLONE_NEWNET)` into a namespace made
//! with `unshare --user --map-root-user --net`: that needs `CAP_SYS_ADMIN`
//! over the user namespace owning the network namespace. The owner of a
//! user namespace gets every capability in it by entering it, but
//! `setns(CLONE_NEWUSER)` is refused to a multithreaded process, and the
//! daemon has threads. So the daemon starts a fresh copy of its own binary
//! (`/proc/self/exe` [`HELPER_ARG`] FD), single-threaded, which:
//!
//! 1. reads one request from the socket FD (one end of a `SOCK_SEQPACKET`
//!    socketpair): what to check or create, and in which namespace;
//! 2. opens the network namespace, asks the kernel for its owning user
//!    namespace (`NS_GET_USERNS`), and enters that, then the network
//!    namespace;
//! 3. does what [`crate::provision`] does on a thread for a privileged
//!    daemon, with the same functions: creates the TAP with the virtio-net
//!    header, sets its MAC, address, MTU, brings it up, adds the default
//!    route, turns IPv6 off, and attaches the TAP's NAPI queue with its
//!    NAPI threaded ([`crate::napi`]);
//! 4. sends back the TAP's two descriptors (`SCM_RIGHTS`) and its name,
//!    or an
//!    error ([`HelperErrorKind`] and a message that says what to do), and
//!    exits. The TAP lives on in the daemon, which holds the descriptor.
//!
//! The same helper answers two questions about a link in such a
//! namespace: whether it exists, and its kernel counters (for `weft stats`
//! and the metrics exporter).
//!
//! [`provision_tap_via_helper`], [`link_exists_via_helper`] and
//! [`link_stats_via_helper`] are the daemon's side; [`helper_main`] is the child's, called by the binary's
//! `main` before anything else runs when its first argument is
//! [`HELPER_ARG`].
//!
//! Wire format: fields separated by NUL (no path or name can hold one).
//! Request `create NETNS IFNAME MAC IP PREFIX MTU GATEWAY|- VNET MQ NAPI
//! NOV6`, `exists NETNS IFNAME` or `stats NETNS IFNAME`; reply `ok NAME -`
//! (with the descriptors of the TAP's two queues) or `ok NAME WHY` (the
//! plain queue's alone, and why not the NAPI queue's), `yes`, `no`, `stats RX_PACKETS RX_DROPPED TX_PACKETS
//! TX_DROPPED`, or `err KIND MESSAGE`.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::time::TimeVal;

use crate::napi::NapiQueue;
use crate::netlink::{LinkStats, Netlink, NetlinkError};
use crate::netns::{open_ns, NetnsError};
use crate::provision::{provision_inside, validate_spec, ProvisionError, TapSpec};
use crate::tap::{Tap, TapError, TapOptions, TUN_DEVICE};

/// The hidden first argument that makes the weft binary run
/// [`helper_main`].
pub const HELPER_ARG: &str = "__tap-helper";

/// The third field of an `ok` reply when the TAP's NAPI queue follows its
/// plain queue.
const NO_ERROR: &str = "-";

/// How long the daemon waits for the helper's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest request or reply.
const MSG_MAX: usize = 8192;

/// `NS_GET_USERNS` from `<linux/nsfs.h>`: `_IO(0xb7, 0x1)`.
const NS_GET_USERNS: libc::Ioctl = 0xb701;

/// What kind of failure the helper reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperErrorKind {
    /// The namespace (or the process holding it) is gone.
    NotFound,
    /// The daemon's user does not own the namespace.
    Permission,
    /// `/dev/net/tun` cannot be opened by this user.
    TunAccess,
    /// The interface name is taken in the namespace.
    IfnameTaken,
    /// The request was malformed.
    Invalid,
    /// Anything else, including the helper failing to start or reply.
    System,
}

impl HelperErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            HelperErrorKind::NotFound => "not-found",
            HelperErrorKind::Permission => "permission",
            HelperErrorKind::TunAccess => "tun-access",
            HelperErrorKind::IfnameTaken => "ifname-taken",
            HelperErrorKind::Invalid => "invalid",
            HelperErrorKind::System => "system",
        }
    }

    fn parse(s: &str) -> HelperErrorKind {
        match s {
            "not-found" => HelperErrorKind::NotFound,
            "permission" => HelperErrorKind::Permission,
            "tun-access" => HelperErrorKind::TunAccess,
            "ifname-taken" => HelperErrorKind::IfnameTaken,
            "invalid" => HelperErrorKind::Invalid,
            _ => HelperErrorKind::System,
        }
    }
}

fn helper_err(kind: HelperErrorKind, message: impl Into<String>) -> ProvisionError {
    ProvisionError::Helper {
        kind,
        message: message.into(),
    }
}

/// Creates and configures a TAP in the network namespace at `netns`
/// through the helper (see the [module docs](self)); the same result as
/// [`crate::provision::provision_tap`].
pub fn provision_tap_via_helper(netns: &Path, spec: TapSpec) -> Result<Tap, ProvisionError> {
    validate_spec(&spec).map_err(|reason| ProvisionError::InvalidSpec {
        ifname: spec.ifname.clone(),
        reason,
    })?;
    let request = encode_create(netns, &spec);
    let (fields, fds) = call_helper(&request)?;
    let mut fds = fds.into_iter();
    match (fields.first().map(String::as_str), fds.next()) {
        (Some("ok"), Some(fd)) => {
            let name = fields.get(1).cloned().unwrap_or(spec.ifname);
            let mut tap = Tap::from_parts(fd, name, spec.tap.vnet_hdr);
            if spec.tap.napi {
                // The NAPI queue's descriptor follows the plain queue's;
                // without it the third field says why.
                let napi = match (fields.get(2).map(String::as_str), fds.next()) {
                    (Some(NO_ERROR), Some(queue)) => Ok(NapiQueue::new(queue)),
                    (Some(why), _) if why != NO_ERROR => Err(why.to_owned()),
                    _ => Err("the rootless helper sent no NAPI queue".to_owned()),
                };
                tap.set_napi(napi);
            }
            Ok(tap)
        }
        _ => Err(helper_err(
            HelperErrorKind::System,
            format!("the rootless helper sent an unexpected reply: {fields:?}"),
        )),
    }
}

/// Whether `ifname` exists in the namespace at `netns`, asked through the
/// helper.
pub fn link_exists_via_helper(netns: &Path, ifname: &str) -> Result<bool, ProvisionError> {
    let request = join(&["exists", &path_str(netns)?, ifname]);
    let (fields, _) = call_helper(&request)?;
    match fields.first().map(String::as_str) {
        Some("yes") => Ok(true),
        Some("no") => Ok(false),
        _ => Err(helper_err(
            HelperErrorKind::System,
            format!("the rootless helper sent an unexpected reply: {fields:?}"),
        )),
    }
}

/// The kernel's counters of link `ifname` in the namespace at `netns`
/// (`None`: no such link), read through the helper.
pub fn link_stats_via_helper(
    netns: &Path,
    ifname: &str,
) -> Result<Option<LinkStats>, ProvisionError> {
    let request = join(&["stats", &path_str(netns)?, ifname]);
    let (fields, _) = call_helper(&request)?;
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    match fields.as_slice() {
        ["no"] => Ok(None),
        ["stats", numbers @ ..] => decode_stats(numbers).map(Some).ok_or_else(|| {
            helper_err(
                HelperErrorKind::System,
                format!("the rootless helper sent unreadable counters: {fields:?}"),
            )
        }),
        _ => Err(helper_err(
            HelperErrorKind::System,
            format!("the rootless helper sent an unexpected reply: {fields:?}"),
        )),
    }
}

fn encode_stats(s: &LinkStats) -> Vec<String> {
    [s.rx_packets, s.rx_dropped, s.tx_packets, s.tx_dropped]
        .iter()
        .map(u64::to_string)
        .collect()
}

fn decode_stats(fields: &[&str]) -> Option<LinkStats> {
    let [rx_packets, rx_dropped, tx_packets, tx_dropped] = fields else {
        return None;
    };
    Some(LinkStats {
        rx_packets: rx_packets.parse().ok()?,
        rx_dropped: rx_dropped.parse().ok()?,
        tx_packets: tx_packets.parse().ok()?,
        tx_dropped: tx_dropped.parse().ok()?,
    })
}

fn path_str(path: &Path) -> Result<String, ProvisionError> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        helper_err(
            HelperErrorKind::Invalid,
            format!("namespace path {} is not UTF-8", path.display()),
        )
    })
}

fn join(fields: &[&str]) -> Vec<u8> {
    fields.join("\0").into_bytes()
}

fn encode_create(netns: &Path, spec: &TapSpec) -> Vec<u8> {
    let mac = spec
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let gw = spec
        .default_gateway
        .map_or_else(|| "-".to_owned(), |g| g.to_string());
    let flag = |b: bool| if b { "1" } else { "0" };
    join(&[
        "create",
        &netns.to_string_lossy(),
        &spec.ifname,
        &mac,
        &spec.ip.to_string(),
        &spec.prefix_len.to_string(),
        &spec.mtu.to_string(),
        &gw,
        flag(spec.tap.vnet_hdr),
        flag(spec.tap.multi_queue),
        flag(spec.tap.napi),
        flag(spec.disable_ipv6),
    ])
}

fn decode_create(fields: &[&str]) -> Option<(PathBuf, TapSpec)> {
    let [netns, ifname, mac, ip, prefix, mtu, gw, vnet, mq, napi, nov6] = fields else {
        return None;
    };
    let mut m = [0u8; 6];
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    for (dst, p) in m.iter_mut().zip(parts) {
        *dst = u8::from_str_radix(p, 16).ok()?;
    }
    let spec = TapSpec {
        ifname: (*ifname).to_owned(),
        mac: m,
        ip: ip.parse().ok()?,
        prefix_len: prefix.parse().ok()?,
        mtu: mtu.parse().ok()?,
        default_gateway: match *gw {
            "-" => None,
            g => Some(g.parse::<Ipv4Addr>().ok()?),
        },
        tap: TapOptions {
            vnet_hdr: *vnet == "1",
            multi_queue: *mq == "1",
            napi: *napi == "1",
        },
        disable_ipv6: *nov6 == "1",
    };
    Some((PathBuf::from(netns), spec))
}

/// Starts the helper, sends `request`, and returns the reply's fields and
/// the descriptor that came with it. An `err` reply becomes the error.
fn call_helper(request: &[u8]) -> Result<(Vec<String>, Vec<OwnedFd>), ProvisionError> {
    let sys = |what: &str, e: &dyn std::fmt::Display| {
        helper_err(
            HelperErrorKind::System,
            format!("rootless helper: failed to {what}: {e}"),
        )
    };
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| sys("create a socketpair", &e))?;
    let child_fd: RawFd = theirs.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(HELPER_ARG)
        .arg(child_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only
    // calls fcntl, which is async-signal-safe, on a descriptor number that
    // is open in the child (inherited from the parent, which keeps
    // `theirs` open until after spawn).
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(child_fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| sys("start /proc/self/exe", &e))?;
    drop(theirs);
    let reply = exchange(&ours, request);
    drop(ours);
    if reply.is_err() {
        // No reply in time (or a broken exchange): never wait on a helper
        // that may be stuck, since every other request waits behind this one.
        let _ = child.kill();
    }
    let status = child.wait();
    let (bytes, fds) = match reply {
        Ok(r) => r,
        Err(e) => {
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| format!("unknown status ({e})"));
            return Err(helper_err(
                HelperErrorKind::System,
                format!("the rootless helper did not reply ({e}); it exited with {status}"),
            ));
        }
    };
    let fields: Vec<String> = String::from_utf8_lossy(&bytes)
        .split('\0')
        .map(str::to_owned)
        .collect();
    if fields.first().map(String::as_str) == Some("err") {
        let kind = HelperErrorKind::parse(fields.get(1).map_or("", String::as_str));
        let message = fields.get(2).cloned().unwrap_or_default();
        return Err(helper_err(kind, message));
    }
    Ok((fields, fds))
}

fn exchange(sock: &OwnedFd, request: &[u8]) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    setsockopt(
        sock,
        sockopt::ReceiveTimeout,
        &TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0),
    )?;
    send(sock, request, &[])?;
    let (bytes, fds) = recv(sock)?;
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed",
        ));
    }
    Ok((bytes, fds))
}

fn send(sock: &OwnedFd, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(msg)];
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

fn recv(sock: &OwnedFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MSG_MAX];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raws) = c {
            for raw in raws {
                // SAFETY: SCM_RIGHTS just installed `raw` in this process;
                // nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    let n = msg.bytes;
    buf.truncate(n);
    Ok((buf, fds))
}

/// The helper process's `main`: call it first thing (before any thread
/// starts) when the first argument is [`HELPER_ARG`], with the arguments
/// after it, and exit with the returned status.
pub fn helper_main(args: &[String]) -> i32 {
    let Some(fd) = args.first().and_then(|a| a.parse::<RawFd>().ok()) else {
        return 2;
    };
    if fd < 3 {
        return 2;
    }
    // SAFETY: the daemon passed this descriptor number, open and without
    // close-on-exec, for this process alone; nothing else here owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let reply = match recv(&sock) {
        Ok((req, _)) => serve(&req),
        Err(_) => return 1,
    };
    let sent = match reply {
        Ok(Reply::Tap(tap)) => match tap.napi() {
            Ok(napi) => send(
                &sock,
                &join(&["ok", tap.name(), NO_ERROR]),
                &[tap.as_fd().as_raw_fd(), napi.as_fd().as_raw_fd()],
            ),
            Err(why) => send(
                &sock,
                &join(&["ok", tap.name(), why]),
                &[tap.as_fd().as_raw_fd()],
            ),
        },
        Ok(Reply::Exists(yes)) => send(&sock, if yes { b"yes" } else { b"no" }, &[]),
        Ok(Reply::Stats(None)) => send(&sock, b"no", &[]),
        Ok(Reply::Stats(Some(stats))) => {
            let mut fields = vec!["stats".to_owned()];
            fields.extend(encode_stats(&stats));
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            send(&sock, &join(&fields), &[])
        }
        Err((kind, message)) => send(&sock, &join(&["err", kind.as_str(), &message]), &[]),
    };
    i32::from(sent.is_err())
}

enum Reply {
    Tap(Tap),
    Exists(bool),
    Stats(Option<LinkStats>),
}

type HelperResult<T> = Result<T, (HelperErrorKind, String)>;

fn serve(request: &[u8]) -> HelperResult<Reply> {
    let text = String::from_utf8_lossy(request);
    let fields: Vec<&str> = text.split('\0').collect();
    let invalid = || {
        (
            HelperErrorKind::Invalid,
            "the rootless helper got a malformed request".to_owned(),
        )
    };
    match fields.as_slice() {
        ["exists", netns, ifname] => {
            let index = ask_netlink(netns, &format!("look up {ifname}"), |nl| {
                nl.link_index(ifname)
            })?;
            Ok(Reply::Exists(index.is_some()))
        }
        ["stats", netns, ifname] => {
            let what = format!("read the counters of {ifname}");
            ask_netlink(netns, &what, |nl| nl.link_stats(ifname)).map(Reply::Stats)
        }
        ["create", rest @ ..] => {
            let (netns, spec) = decode_create(rest).ok_or_else(invalid)?;
            enter(&netns)?;
            provision_inside(netns, spec)
                .map(Reply::Tap)
                .map_err(describe_provision_error)
        }
        _ => Err(invalid()),
    }
}

/// Enters the network namespace at `netns` and asks its rtnetlink `ask`;
/// `what` says what was asked, for the error.
fn ask_netlink<T>(
    netns: &str,
    what: &str,
    ask: impl FnOnce(&mut Netlink) -> Result<T, NetlinkError>,
) -> HelperResult<T> {
    let netns = PathBuf::from(netns);
    enter(&netns)?;
    Netlink::open()
        .and_then(|mut nl| ask(&mut nl))
        .map_err(|e| {
            (
                HelperErrorKind::System,
                format!(
                    "failed to {what} in network namespace {}: {e}",
                    netns.display()
                ),
            )
        })
}

fn describe_provision_error(e: ProvisionError) -> (HelperErrorKind, String) {
    match &e {
        ProvisionError::IfnameTaken { .. } => (HelperErrorKind::IfnameTaken, e.to_string()),
        ProvisionError::Tap {
            source: TapError::Open { source, .. },
            ..
        } if matches!(
            source.raw_os_error(),
            Some(libc::EACCES) | Some(libc::EPERM)
        ) =>
        {
            (HelperErrorKind::TunAccess, tun_access_message())
        }
        _ => (HelperErrorKind::System, crate::error_chain(&e)),
    }
}

/// What to say when `/dev/net/tun` cannot be opened.
fn tun_access_message() -> String {
    let mode = std::fs::metadata(TUN_DEVICE)
        .map(|m| format!("mode {:04o}", m.mode() & 0o7777))
        .unwrap_or_else(|e| format!("not accessible ({e})"));
    format!(
        "{TUN_DEVICE} is {mode} here, so this user cannot create TAP devices; as root run \
         `chmod 0666 {TUN_DEVICE}`, as most distributions ship it"
    )
}

/// Enters the user namespace owning the network namespace at `netns` (if
/// it is not this process's own), then the network namespace.
fn enter(netns: &Path) -> HelperResult<()> {
    let net = open_ns(netns).map_err(|e| match e {
        NetnsError::NotFound { .. } => (
            HelperErrorKind::NotFound,
            format!(
                "network namespace {} is gone (has its process exited?): check the PID or path",
                netns.display()
            ),
        ),
        NetnsError::Permission { .. } => (HelperErrorKind::Permission, not_owned(netns)),
        other => (HelperErrorKind::System, crate::error_chain(&other)),
    })?;
    // SAFETY: NS_GET_USERNS takes no argument; it returns a new descriptor
    // (or -1) for the namespace file `net`, which is open during the call.
    let rc = unsafe { libc::ioctl(net.as_raw_fd(), NS_GET_USERNS) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            // The owner is outside this process's user namespace: the
            // host's, when the daemon is unprivileged.
            Some(libc::EPERM) => (HelperErrorKind::Permission, not_owned(netns)),
            _ => (
                HelperErrorKind::System,
                format!(
                    "cannot find the user namespace owning {}: {e}",
                    netns.display()
                ),
            ),
        });
    }
    // SAFETY: the ioctl succeeded, so `rc` is a new descriptor we own.
    let user = unsafe { File::from_raw_fd(rc) };
    let own = std::fs::metadata("/proc/self/ns/user").map(|m| (m.dev(), m.ino()));
    let target = user.metadata().map(|m| (m.dev(), m.ino()));
    let same = matches!((own, target), (Ok(a), Ok(b)) if a == b);
    if !same {
        setns(&user, libc::CLONE_NEWUSER).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) => (HelperErrorKind::Permission, not_owned(netns)),
            _ => (
                HelperErrorKind::System,
                format!(
                    "cannot enter the user namespace owning {}: {e}",
                    netns.display()
                ),
            ),
        })?;
    }
    setns(&net, libc::CLONE_NEWNET).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => (HelperErrorKind::Permission, not_owned(netns)),
        _ => (
            HelperErrorKind::System,
            format!("cannot enter network namespace {}: {e}", netns.display()),
        ),
    })
}

fn not_owned(netns: &Path) -> String {
    format!(
        "this user does not own network namespace {} (nor the user namespace it belongs to): \
         attach a namespace you created yourself (for example with \
         `unshare --user --map-root-user --net CMD`), or run the daemon as root",
        netns.display()
    )
}

fn setns(file: &impl AsFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: the descriptor is open for the duration of the call; setns
    // changes only this (single-threaded helper) process's namespaces.
    let rc = unsafe { libc::setns(file.as_fd().as_raw_fd(), nstype) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_reply_roundtrip() {
        let stats = LinkStats {
            rx_packets: 1,
            rx_dropped: 2,
            tx_packets: u64::MAX,
            tx_dropped: 0,
        };
        let text = encode_stats(&stats);
        let fields: Vec<&str> = text.iter().map(String::as_str).collect();
        assert_eq!(decode_stats(&fields), Some(stats));
        assert_eq!(decode_stats(&["1", "2", "3"]), None);
        assert_eq!(decode_stats(&["1", "2", "3", "x"]), None);
    }

    #[test]
    fn create_request_roundtrip() {
        let spec = TapSpec {
            ifname: "eth0".to_owned(),
            mac: [0x02, 0x57, 0xef, 0, 0, 0x0a],
            ip: Ipv4Addr::new(10, 1, 0, 2),
            prefix_len: 24,
            mtu: 1400,
            default_gateway: Some(Ipv4Addr::new(10, 1, 0, 1)),
            tap: TapOptions {
                vnet_hdr: true,
                multi_queue: false,
                napi: true,
            },
            disable_ipv6: true,
        };
        let bytes = encode_create(Path::new("/proc/42/ns/net"), &spec);
        let text = String::from_utf8(bytes).unwrap();
        let fields: Vec<&str> = text.split('\0').collect();
        assert_eq!(fields[0], "create");
        let (ns, back) = decode_create(&fields[1..]).unwrap();
        assert_eq!(ns, Path::new("/proc/42/ns/net"));
        assert_eq!(back, spec);
        let no_gw = TapSpec {
            default_gateway: None,
            ..spec
        };
        let text = String::from_utf8(encode_create(Path::new("/x"), &no_gw)).unwrap();
        let fields: Vec<&str> = text.split('\0').collect();
        assert_eq!(decode_create(&fields[1..]).unwrap().1, no_gw);
        assert!(decode_create(&fields[2..]).is_none());
    }

    #[test]
    fn error_kinds_roundtrip() {
        for k in [
            HelperErrorKind::NotFound,
            HelperErrorKind::Permission,
            HelperErrorKind::TunAccess,
            HelperErrorKind::IfnameTaken,
            HelperErrorKind::Invalid,
            HelperErrorKind::System,
        ] {
            assert_eq!(HelperErrorKind::parse(k.as_str()), k);
        }
    }
}
