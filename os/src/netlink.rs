//! A minimal synchronous rtnetlink client.
//!
//! [`Netlink`] wraps a `NETLINK_ROUTE` socket bound in the network namespace
//! of the thread that called [`Netlink::open`] (combine with
//! [`run_in_netns`](super::netns::run_in_netns) to configure another
//! namespace). It implements only what weft needs to set up a TAP port: look
//! up a link by name, set its MAC address, MTU and up state, add an IPv4
//! address and an IPv4 default route, and delete a link.
//!
//! Every request is sent with `NLM_F_REQUEST | NLM_F_ACK` and waits for the
//! kernel's acknowledgement; a negative errno in the ack becomes
//! [`NetlinkError::Kernel`], together with the kernel's extended-ack message
//! when it sends one. Messages are encoded by hand: a 16-byte `nlmsghdr`, the
//! family header (`ifinfomsg`, `ifaddrmsg` or `rtmsg`), then `rtattr`
//! attributes, each padded to 4 bytes (`NLMSG_ALIGN` / `RTA_ALIGN`).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use thiserror::Error;

use super::tap::validate_ifname;

// Message types and flags from <linux/netlink.h> and <linux/rtnetlink.h>.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// In an ack: the original request's payload was not echoed.
const NLM_F_CAPPED: u16 = 0x100;
/// In an ack: extended-ack TLVs follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_HOST: u8 = 254;
const RTN_UNICAST: u8 = 1;

const IFF_UP: u32 = 0x1;

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const RECV_BUF_LEN: usize = 64 * 1024;

/// Rounds `len` up to the netlink alignment of 4 bytes (`NLMSG_ALIGN`,
/// `RTA_ALIGN`).
pub const fn nl_align(len: usize) -> usize {
    (len + 3) & !3
}

/// Errors from [`Netlink`].
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The `NETLINK_ROUTE` socket could not be created.
    #[error("failed to open a NETLINK_ROUTE socket")]
    Open {
        /// The error from `socket(2)`.
        #[source]
        source: io::Error,
    },
    /// Sending a request failed.
    #[error("failed to send netlink request to {op} for {target}")]
    Send {
        /// What the request does.
        op: &'static str,
        /// The object it is about ("interface index 3", ...).
        target: String,
        /// The error from `send(2)`.
        #[source]
        source: io::Error,
    },
    /// Receiving the reply failed.
    #[error("failed to receive netlink reply to {op} for {target}")]
    Recv {
        /// What the request does.
        op: &'static str,
        /// The object it is about.
        target: String,
        /// The error from `recv(2)`.
        #[source]
        source: io::Error,
    },
    /// The kernel answered the request with an error.
    #[error("kernel refused to {op} for {target}{}", extack_suffix(.extack))]
    Kernel {
        /// What the request does.
        op: &'static str,
        /// The object it is about.
        target: String,
        /// The kernel's extended-ack message, if any.
        extack: Option<String>,
        /// The errno from the ack.
        #[source]
        source: io::Error,
    },
    /// The reply could not be parsed.
    #[error("malformed netlink reply to {op} for {target}: {reason}")]
    Malformed {
        /// What the request does.
        op: &'static str,
        /// The object it is about.
        target: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// An argument was rejected before anything was sent.
    #[error("invalid argument to {op}: {reason}")]
    InvalidArgument {
        /// What the request would have done.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
}

fn extack_suffix(extack: &Option<String>) -> String {
    match extack {
        Some(msg) => format!(" ({msg})"),
        None => String::new(),
    }
}

impl NetlinkError {
    /// The errno the kernel returned, for [`NetlinkError::Kernel`].
    pub fn kernel_errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A netlink message being built: header, family header and attributes.
#[derive(Debug, Clone)]
struct MsgBuilder {
    buf: Vec<u8>,
}

impl MsgBuilder {
    fn new(msg_type: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set in finish
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq, set in finish
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: kernel assigns
        MsgBuilder { buf }
    }

    fn pad(&mut self) {
        self.buf.resize(nl_align(self.buf.len()), 0);
    }

    /// Appends the family header (padded).
    fn header(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    /// Appends an `rtattr` with `payload` (padded).
    fn attr(mut self, rta_type: u16, payload: &[u8]) -> Self {
        let len = u16::try_from(4 + payload.len()).expect("netlink attribute too long");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&rta_type.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// `struct ifinfomsg`.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut b = [0u8; IFINFOMSG_LEN];
    b[0] = libc::AF_UNSPEC as u8; // ifi_family; b[1] pad; b[2..4] ifi_type
    b[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// `struct ifaddrmsg` for `ip`. Like iproute2, loopback addresses get host
/// scope (the kernel insists) and everything else global scope.
fn ifaddrmsg(ip: Ipv4Addr, prefix_len: u8, index: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = libc::AF_INET as u8;
    b[1] = prefix_len;
    b[2] = 0; // ifa_flags
    b[3] = if ip.is_loopback() {
        RT_SCOPE_HOST
    } else {
        RT_SCOPE_UNIVERSE
    };
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b
}

/// `struct rtmsg` for an IPv4 default route in the main table.
fn rtmsg_default_v4() -> [u8; 12] {
    [
        libc::AF_INET as u8, // rtm_family
        0,                   // rtm_dst_len: default route
        0,                   // rtm_src_len
        0,                   // rtm_tos
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
        0, // rtm_flags (u32)
        0,
        0,
        0,
    ]
}

/// The directed broadcast address of `ip/prefix_len`, or `None` for /31 and
/// /32 (which have none).
fn ipv4_broadcast(ip: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    if prefix_len >= 31 {
        return None;
    }
    let host_mask = u32::MAX >> prefix_len;
    Some(Ipv4Addr::from(u32::from(ip) | host_mask))
}

/// One message from a reply datagram.
#[derive(Debug, PartialEq, Eq)]
struct RawMsg<'a> {
    msg_type: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_ne_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Splits a received datagram into messages.
fn split_messages(mut buf: &[u8]) -> Result<Vec<RawMsg<'_>>, &'static str> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_at(buf, 0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err("message length out of bounds");
        }
        out.push(RawMsg {
            msg_type: u16_at(buf, 4),
            flags: u16_at(buf, 6),
            seq: u32_at(buf, 8),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[nl_align(len).min(buf.len())..];
    }
    Ok(out)
}

/// Parses an `NLMSG_ERROR` payload: the (non-positive) error code and the
/// extended-ack message, if present.
fn parse_ack(payload: &[u8], flags: u16) -> Result<(i32, Option<String>), &'static str> {
    if payload.len() < 4 + NLMSG_HDRLEN {
        return Err("short NLMSG_ERROR message");
    }
    let error = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    if flags & NLM_F_ACK_TLVS == 0 {
        return Ok((error, None));
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        u32_at(payload, 4) as usize
    };
    let mut attrs = payload.get(nl_align(4 + echoed)..).unwrap_or(&[]);
    let mut msg = None;
    while attrs.len() >= 4 {
        let len = u16_at(attrs, 0) as usize;
        if len < 4 || len > attrs.len() {
            break;
        }
        if u16_at(attrs, 2) == NLMSGERR_ATTR_MSG {
            let text = &attrs[4..len];
            let text = text.split(|&c| c == 0).next().unwrap_or(&[]);
            msg = Some(String::from_utf8_lossy(text).into_owned());
        }
        attrs = &attrs[nl_align(len).min(attrs.len())..];
    }
    Ok((error, msg))
}

/// A synchronous rtnetlink socket in the namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network
    /// namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        // SAFETY: plain socket(2) call with constant arguments; no pointers.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(NetlinkError::Open {
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Best effort: ask for error strings and for acks without the echoed
        // request. Both are optional (older kernels lack them).
        for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
            let one: libc::c_int = 1;
            // SAFETY: the option value points to a live c_int and its size
            // is passed correctly.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        // Distinct starting points make replies to an earlier socket's
        // requests easy to tell apart when debugging.
        let seq = std::process::id().wrapping_mul(0x10000) | 1;
        Ok(Netlink {
            fd,
            seq,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// Sends `msg`, waits for the ack and returns the payloads of any other
    /// replies with the same sequence number (e.g. `RTM_NEWLINK` for a get).
    fn request(
        &mut self,
        op: &'static str,
        target: impl Fn() -> String,
        msg: MsgBuilder,
    ) -> Result<Vec<(u16, Vec<u8>)>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // SAFETY: `bytes` is a valid buffer of `bytes.len()` bytes; an
        // unconnected netlink socket sends to the kernel (port 0).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(NetlinkError::Send {
                op,
                target: target(),
                source: io::Error::last_os_error(),
            });
        }
        let mut replies = Vec::new();
        loop {
            // SAFETY: `self.buf` is a valid writable buffer of its length.
            // MSG_TRUNC makes recv return the real datagram length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let source = io::Error::last_os_error();
                if source.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Recv {
                    op,
                    target: target(),
                    source,
                });
            }
            let n = n as usize;
            let malformed = |reason| NetlinkError::Malformed {
                op,
                target: target(),
                reason,
            };
            if n > self.buf.len() {
                return Err(malformed("reply larger than the receive buffer"));
            }
            for m in split_messages(&self.buf[..n]).map_err(malformed)? {
                if m.seq != seq {
                    continue; // a late reply to an earlier request
                }
                match m.msg_type {
                    NLMSG_ERROR => {
                        let (error, extack) = parse_ack(m.payload, m.flags).map_err(malformed)?;
                        if error == 0 {
                            return Ok(replies);
                        }
                        return Err(NetlinkError::Kernel {
                            op,
                            target: target(),
                            extack,
                            source: io::Error::from_raw_os_error(-error),
                        });
                    }
                    NLMSG_DONE => return Ok(replies),
                    t => replies.push((t, m.payload.to_vec())),
                }
            }
        }
    }

    fn link_request(
        &mut self,
        op: &'static str,
        index: u32,
        msg: MsgBuilder,
    ) -> Result<(), NetlinkError> {
        self.request(op, || format!("interface index {index}"), msg)
            .map(drop)
    }

    /// The index of the interface called `name`, or `None` if there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        const OP: &str = "look up interface";
        validate_ifname(name).map_err(|reason| NetlinkError::InvalidArgument {
            op: OP,
            reason: format!("interface name {name:?}: {reason}"),
        })?;
        let mut ifname = name.as_bytes().to_vec();
        ifname.push(0);
        let msg = MsgBuilder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK)
            .header(&ifinfomsg(0, 0, 0))
            .attr(IFLA_IFNAME, &ifname);
        let replies = match self.request(OP, || format!("interface {name:?}"), msg) {
            Ok(r) => r,
            Err(e) if e.kernel_errno() == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        for (msg_type, payload) in replies {
            if msg_type == RTM_NEWLINK && payload.len() >= IFINFOMSG_LEN {
                return Ok(Some(u32_at(&payload, 4)));
            }
        }
        Err(NetlinkError::Malformed {
            op: OP,
            target: format!("interface {name:?}"),
            reason: "no RTM_NEWLINK in the reply",
        })
    }

    /// Sets the MAC address of interface `index`.
    pub fn set_link_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let msg = MsgBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
            .header(&ifinfomsg(index, 0, 0))
            .attr(IFLA_ADDRESS, &mac);
        self.link_request("set the MAC address", index, msg)
    }

    /// Sets the MTU of interface `index`.
    pub fn set_link_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let msg = MsgBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
            .header(&ifinfomsg(index, 0, 0))
            .attr(IFLA_MTU, &mtu.to_ne_bytes());
        self.link_request("set the MTU", index, msg)
    }

    /// Brings interface `index` up (a no-op if it already is).
    pub fn set_link_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let msg = MsgBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
            .header(&ifinfomsg(index, IFF_UP, IFF_UP));
        self.link_request("bring the link up", index, msg)
    }

    /// Brings interface `index` down.
    pub fn set_link_down(&mut self, index: u32) -> Result<(), NetlinkError> {
        let msg = MsgBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
            .header(&ifinfomsg(index, 0, IFF_UP));
        self.link_request("bring the link down", index, msg)
    }

    /// Brings the loopback interface `lo` up (a no-op if it already is).
    pub fn set_loopback_up(&mut self) -> Result<(), NetlinkError> {
        match self.link_index("lo")? {
            Some(index) => self.set_link_up(index),
            None => Err(NetlinkError::Kernel {
                op: "look up interface",
                target: "interface \"lo\"".to_owned(),
                extack: None,
                source: io::Error::from_raw_os_error(libc::ENODEV),
            }),
        }
    }

    /// Adds `ip/prefix_len` to interface `index`, with the matching broadcast
    /// address (none for /31 and /32). Fails with `EEXIST` if the address is
    /// already configured.
    pub fn add_ipv4_address(
        &mut self,
        index: u32,
        ip: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        const OP: &str = "add an IPv4 address";
        if prefix_len > 32 {
            return Err(NetlinkError::InvalidArgument {
                op: OP,
                reason: format!("prefix length /{prefix_len} is longer than 32"),
            });
        }
        let mut msg = MsgBuilder::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .header(&ifaddrmsg(ip, prefix_len, index))
        .attr(IFA_LOCAL, &ip.octets())
        .attr(IFA_ADDRESS, &ip.octets());
        if let Some(brd) = ipv4_broadcast(ip, prefix_len) {
            msg = msg.attr(IFA_BROADCAST, &brd.octets());
        }
        self.request(
            OP,
            || format!("{ip}/{prefix_len} on interface index {index}"),
            msg,
        )
        .map(drop)
    }

    /// Adds `default via gateway dev oif` to the main table
    /// (`proto static`). Fails with `EEXIST` if there already is a default
    /// route.
    pub fn add_ipv4_default_route(
        &mut self,
        gateway: Ipv4Addr,
        oif: u32,
    ) -> Result<(), NetlinkError> {
        let msg = MsgBuilder::new(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .header(&rtmsg_default_v4())
        .attr(RTA_GATEWAY, &gateway.octets())
        .attr(RTA_OIF, &oif.to_ne_bytes());
        self.request(
            "add the IPv4 default route",
            || format!("gateway {gateway} on interface index {oif}"),
            msg,
        )
        .map(drop)
    }

    /// Deletes interface `index`.
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetlinkError> {
        let msg =
            MsgBuilder::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK).header(&ifinfomsg(index, 0, 0));
        self.link_request("delete the link", index, msg)
    }
}

impl AsRawFd for Netlink {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::run_in_netns;
    use crate::testns::{ip_json, ip_text, TestNs};

    #[test]
    fn alignment() {
        assert_eq!(nl_align(0), 0);
        assert_eq!(nl_align(1), 4);
        assert_eq!(nl_align(4), 4);
        assert_eq!(nl_align(5), 8);
        assert_eq!(nl_align(9), 12);
    }

    #[test]
    fn getlink_encoding_pads_the_name_attribute() {
        let bytes = MsgBuilder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK)
            .header(&ifinfomsg(0, 0, 0))
            .attr(IFLA_IFNAME, b"eth0\0")
            .finish(7);
        // 16 header + 16 ifinfomsg + rtattr(4 + 5 = 9, padded to 12)
        assert_eq!(bytes.len(), 44);
        assert_eq!(u32_at(&bytes, 0), 44);
        assert_eq!(u16_at(&bytes, 4), RTM_GETLINK);
        assert_eq!(u16_at(&bytes, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&bytes, 8), 7);
        assert_eq!(u32_at(&bytes, 12), 0);
        assert_eq!(&bytes[16..32], &[0u8; 16]);
        assert_eq!(u16_at(&bytes, 32), 9, "rta_len excludes padding");
        assert_eq!(u16_at(&bytes, 34), IFLA_IFNAME);
        assert_eq!(&bytes[36..41], b"eth0\0");
        assert_eq!(&bytes[41..44], &[0, 0, 0], "padding is zeroed");
    }

    #[test]
    fn attributes_after_odd_lengths_stay_aligned() {
        let bytes = MsgBuilder::new(RTM_NEWLINK, NLM_F_REQUEST)
            .header(&[1, 2, 3]) // odd-length family header is padded too
            .attr(IFLA_ADDRESS, &[0x02, 0, 0, 0, 0, 1])
            .attr(IFLA_MTU, &1400u32.to_ne_bytes())
            .finish(1);
        assert_eq!(&bytes[16..20], &[1, 2, 3, 0]);
        // IFLA_ADDRESS: len 10, padded to 12
        assert_eq!(u16_at(&bytes, 20), 10);
        assert_eq!(u16_at(&bytes, 22), IFLA_ADDRESS);
        assert_eq!(&bytes[24..30], &[0x02, 0, 0, 0, 0, 1]);
        assert_eq!(&bytes[30..32], &[0, 0]);
        // IFLA_MTU starts on the next 4-byte boundary
        assert_eq!(u16_at(&bytes, 32), 8);
        assert_eq!(u16_at(&bytes, 34), IFLA_MTU);
        assert_eq!(u32_at(&bytes, 36), 1400);
        assert_eq!(bytes.len(), 40);
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn family_headers() {
        let link = ifinfomsg(5, IFF_UP, IFF_UP);
        assert_eq!(u32_at(&link, 4), 5);
        assert_eq!(u32_at(&link, 8), IFF_UP);
        assert_eq!(u32_at(&link, 12), IFF_UP);
        let addr = ifaddrmsg(Ipv4Addr::new(10, 0, 0, 1), 24, 9);
        assert_eq!(addr[0], libc::AF_INET as u8);
        assert_eq!(addr[1], 24);
        assert_eq!(addr[3], RT_SCOPE_UNIVERSE);
        assert_eq!(u32_at(&addr, 4), 9);
        assert_eq!(ifaddrmsg(Ipv4Addr::LOCALHOST, 8, 1)[3], RT_SCOPE_HOST);
        let rt = rtmsg_default_v4();
        assert_eq!(rt[4], RT_TABLE_MAIN);
        assert_eq!(rt[5], RTPROT_STATIC);
        assert_eq!(rt[7], RTN_UNICAST);
    }

    #[test]
    fn broadcast_addresses() {
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(ipv4_broadcast(ip, 24), Some(Ipv4Addr::new(10, 1, 2, 255)));
        assert_eq!(
            ipv4_broadcast(ip, 8),
            Some(Ipv4Addr::new(10, 255, 255, 255))
        );
        assert_eq!(ipv4_broadcast(ip, 0), Some(Ipv4Addr::BROADCAST));
        assert_eq!(ipv4_broadcast(ip, 30), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(ipv4_broadcast(ip, 31), None);
        assert_eq!(ipv4_broadcast(ip, 32), None);
    }

    fn fake_ack(error: i32, seq: u32, extack: Option<&str>) -> Vec<u8> {
        let mut payload = error.to_ne_bytes().to_vec();
        // echoed request header only (capped)
        payload.extend_from_slice(&20u32.to_ne_bytes());
        payload.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        payload.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        payload.extend_from_slice(&seq.to_ne_bytes());
        payload.extend_from_slice(&0u32.to_ne_bytes());
        let mut flags = NLM_F_CAPPED;
        let mut msg = MsgBuilder::new(NLMSG_ERROR, 0).header(&payload);
        if let Some(text) = extack {
            flags |= NLM_F_ACK_TLVS;
            let mut t = text.as_bytes().to_vec();
            t.push(0);
            msg = msg.attr(NLMSGERR_ATTR_MSG, &t);
        }
        let mut bytes = msg.finish(seq);
        bytes[6..8].copy_from_slice(&flags.to_ne_bytes());
        bytes
    }

    #[test]
    fn parses_acks_with_extack() {
        let mut datagram = fake_ack(0, 3, None);
        datagram.extend(fake_ack(-libc::EEXIST, 4, Some("File exists, odd")));
        let msgs = split_messages(&datagram).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].seq, 3);
        assert_eq!(parse_ack(msgs[0].payload, msgs[0].flags), Ok((0, None)));
        assert_eq!(msgs[1].msg_type, NLMSG_ERROR);
        assert_eq!(
            parse_ack(msgs[1].payload, msgs[1].flags),
            Ok((-libc::EEXIST, Some("File exists, odd".to_owned())))
        );
        assert!(split_messages(&datagram[..datagram.len() - 1]).is_err());
        assert!(parse_ack(&[0; 8], 0).is_err());
    }

    #[test]
    fn kernel_error_message_names_the_target() {
        let err = NetlinkError::Kernel {
            op: "set the MTU",
            target: "interface index 4".into(),
            extack: Some("mtu less than device minimum".into()),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert_eq!(
            err.to_string(),
            "kernel refused to set the MTU for interface index 4 (mtu less than device minimum)"
        );
        assert_eq!(err.kernel_errno(), Some(libc::EINVAL));
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn configures_a_dummy_free_namespace() {
        let Some(ns) = TestNs::new("nl-cfg") else {
            return;
        };
        let result = run_in_netns(ns.path(), || -> Result<_, NetlinkError> {
            let mut nl = Netlink::open()?;
            let lo = nl.link_index("lo")?.expect("lo exists");
            let missing = nl.link_index("weft-nope0")?;
            nl.set_loopback_up()?;
            nl.set_loopback_up()?; // idempotent
            nl.add_ipv4_address(lo, Ipv4Addr::new(127, 0, 0, 9), 8)
                .map(|_| ())
                .or_else(|e| {
                    if e.kernel_errno() == Some(libc::EEXIST) {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
            let bad_mtu = nl.set_link_mtu(lo, u32::MAX).unwrap_err();
            let bad_delete = nl.delete_link(999_999).unwrap_err();
            Ok((lo, missing, bad_mtu, bad_delete))
        })
        .expect("run_in_netns")
        .expect("netlink");
        let (lo, missing, bad_mtu, bad_delete) = result;
        assert_eq!(lo, 1);
        assert_eq!(missing, None);
        assert_eq!(bad_mtu.kernel_errno(), Some(libc::EINVAL), "{bad_mtu}");
        assert!(
            bad_mtu.to_string().contains("interface index 1"),
            "{bad_mtu}"
        );
        assert_eq!(bad_delete.kernel_errno(), Some(libc::ENODEV));
        let links = ip_json(&ns, &["link", "show", "dev", "lo"]);
        assert!(links[0]["flags"].contains_str("UP"), "{links:?}");
        let addrs = ip_text(&ns, &["-4", "addr", "show", "dev", "lo"]);
        assert!(addrs.contains("127.0.0.9/8"), "{addrs}");
    }
}
