//! A minimal synchronous rtnetlink client.
//!
//! [`Netlink`] wraps a `NETLINK_ROUTE` socket bound in the network namespace
//! of the thread that called [`Netlink::open`] (combine with
//! [`run_in_netns`](crate::netns::run_in_netns) to configure another
//! namespace). It implements only what weft needs to set up a TAP port: look
//! up a link by name, set its MAC address, MTU and up state, add an IPv4
//! address and an IPv4 default route, and delete a link; and to watch one:
//! read a link's packet and drop counters ([`LinkStats`]).
//!
//! Messages are built and parsed with `netlink-packet-route` (on
//! `netlink-packet-core`) and sent over a plain blocking `netlink-sys`
//! socket, one request at a time, the way netavark does. Every request is
//! sent with `NLM_F_REQUEST | NLM_F_ACK` and waits for the kernel's
//! acknowledgement; a negative errno in the ack becomes
//! [`NetlinkError::Kernel`], together with the kernel's extended-ack message
//! when it sends one.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    DecodeError, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use thiserror::Error;

use crate::tap::validate_ifname;

/// Length of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// `NLMSGERR_ATTR_MSG`: the extended-ack attribute holding the error string.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Large enough for any reply to the requests made here (a `RTM_NEWLINK`
/// with all its statistics is a few KiB).
const RECV_BUF_LEN: usize = 64 * 1024;

/// Errors from [`Netlink`].
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The `NETLINK_ROUTE` socket could not be created.
    #[error("failed to open a NETLINK_ROUTE socket")]
    Open {
        /// The error from `socket(2)` or `bind(2)`.
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
    /// A reply for this request could not be decoded.
    #[error("failed to decode netlink reply to {op} for {target}")]
    Decode {
        /// What the request does.
        op: &'static str,
        /// The object it is about.
        target: String,
        /// What the decoder rejected.
        #[source]
        source: DecodeError,
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

/// Rounds `len` up to the netlink alignment of 4 bytes (`NLMSG_ALIGN`).
const fn nl_align(len: usize) -> usize {
    (len + 3) & !3
}

/// `RTM_GETLINK` for the interface called `name`.
fn getlink_by_name(name: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    RouteNetlinkMessage::GetLink(msg)
}

/// A link's packet and drop counters as the kernel keeps them
/// (`IFLA_STATS64`, the `struct rtnl_link_stats64` of `ip -s link`), from
/// the link's own point of view: `rx` is what the kernel took in through it,
/// `tx` what it sent out through it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

impl LinkStats {
    /// The counters of an `RTM_NEWLINK` message: its 64-bit statistics, or
    /// the 32-bit ones of a kernel that sends only those; `None` when it
    /// carries neither.
    fn of_link(link: &LinkMessage) -> Option<LinkStats> {
        let mut found = None;
        for attr in &link.attributes {
            match attr {
                LinkAttribute::Stats64(s) => {
                    return Some(LinkStats {
                        rx_packets: s.rx_packets,
                        rx_dropped: s.rx_dropped,
                        tx_packets: s.tx_packets,
                        tx_dropped: s.tx_dropped,
                    })
                }
                LinkAttribute::Stats(s) => {
                    found = Some(LinkStats {
                        rx_packets: s.rx_packets.into(),
                        rx_dropped: s.rx_dropped.into(),
                        tx_packets: s.tx_packets.into(),
                        tx_dropped: s.tx_dropped.into(),
                    })
                }
                _ => {}
            }
        }
        found
    }
}

/// `RTM_NEWLINK` changing interface `index` (no attributes yet).
fn link_change(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

/// `RTM_NEWADDR` for `ip/prefix_len` on interface `index`. Like iproute2,
/// loopback addresses get host scope (the kernel insists) and everything
/// else global scope; the broadcast address is set except for /31 and /32.
fn newaddr_v4(index: u32, ip: Ipv4Addr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.scope = if ip.is_loopback() {
        AddressScope::Host
    } else {
        AddressScope::Universe
    };
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V4(ip)));
    if let Some(brd) = ipv4_broadcast(ip, prefix_len) {
        msg.attributes.push(AddressAttribute::Broadcast(brd));
    }
    RouteNetlinkMessage::NewAddress(msg)
}

/// `RTM_NEWROUTE` for `default via gateway dev oif proto static` in the
/// main table.
fn newroute_default_v4(gateway: Ipv4Addr, oif: u32) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 0;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    msg.attributes.push(RouteAttribute::Oif(oif));
    RouteNetlinkMessage::NewRoute(msg)
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

/// Encodes `msg` as one request with sequence number `seq`.
fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// Where a request stands after one reply datagram.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// No ack yet: keep reading.
    Pending,
    /// The kernel acknowledged the request.
    Acked,
    /// The kernel refused the request with `errno`.
    Refused { errno: i32, extack: Option<String> },
}

/// Why a reply datagram could not be read.
#[derive(Debug)]
enum ReplyError {
    Malformed(&'static str),
    Decode(DecodeError),
}

/// Reads the messages of one reply datagram that answer request `seq`,
/// appending any that are not the ack to `replies` (e.g. `RTM_NEWLINK` for
/// a get). Messages with another sequence number (late replies to an
/// earlier request) are skipped without being decoded.
fn read_datagram(
    mut datagram: &[u8],
    seq: u32,
    replies: &mut Vec<RouteNetlinkMessage>,
) -> Result<Outcome, ReplyError> {
    while datagram.len() >= NLMSG_HDRLEN {
        let buf = NetlinkBuffer::new_checked(datagram)
            .map_err(|_| ReplyError::Malformed("message length out of bounds"))?;
        let len = buf.length() as usize;
        let (msg_seq, flags) = (buf.sequence_number(), buf.flags());
        let this = &datagram[..len];
        datagram = &datagram[nl_align(len).min(datagram.len())..];
        if msg_seq != seq {
            continue;
        }
        let msg =
            NetlinkMessage::<RouteNetlinkMessage>::deserialize(this).map_err(ReplyError::Decode)?;
        match msg.payload {
            NetlinkPayload::Error(err) => {
                return Ok(match err.code {
                    None => Outcome::Acked,
                    Some(code) => Outcome::Refused {
                        // i32::MIN has no positive twin; no kernel sends
                        // it, but a reply must never crash the daemon.
                        errno: code.get().saturating_neg(),
                        extack: extack_message(&err.header, flags),
                    },
                });
            }
            NetlinkPayload::Done(_) => return Ok(Outcome::Acked),
            NetlinkPayload::InnerMessage(inner) => replies.push(inner),
            NetlinkPayload::Overrun(_) => return Err(ReplyError::Malformed("NLMSG_OVERRUN")),
            _ => {} // NLMSG_NOOP
        }
    }
    Ok(Outcome::Pending)
}

/// Decodes one reply datagram to request `seq` exactly as the socket does:
/// `Ok(Some(errno))` when it ends the request (0: acknowledged), `Ok(None)`
/// when more is to come, `Err` naming what was malformed. Public so that
/// the `netlink_reply` fuzz target can reach the decoder without a socket.
pub fn decode_reply_datagram(datagram: &[u8], seq: u32) -> Result<Option<i32>, String> {
    let mut replies = Vec::new();
    match read_datagram(datagram, seq, &mut replies) {
        Ok(Outcome::Pending) => Ok(None),
        Ok(Outcome::Acked) => Ok(Some(0)),
        Ok(Outcome::Refused { errno, .. }) => Ok(Some(errno)),
        Err(ReplyError::Malformed(what)) => Err(what.to_owned()),
        Err(ReplyError::Decode(e)) => Err(e.to_string()),
    }
}

/// The extended-ack error string of an `NLMSG_ERROR` message, given what
/// follows its error code (the echoed request, then the TLVs).
fn extack_message(after_code: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = after_code.get(..4)?;
        u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize
    };
    let attrs = after_code.get(nl_align(echoed)..)?;
    NlasIterator::new(attrs)
        .map_while(Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let text = nla.value().split(|&c| c == 0).next().unwrap_or(&[]);
            String::from_utf8_lossy(text).into_owned()
        })
}

/// A synchronous rtnetlink socket in the namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network
    /// namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let open_err = |source| NetlinkError::Open { source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(open_err)?;
        let kernel = SocketAddr::new(0, 0);
        socket.bind(&kernel).map_err(open_err)?;
        socket.connect(&kernel).map_err(open_err)?;
        // Best effort: ask for error strings and for acks without the echoed
        // request. Both are optional (older kernels lack them).
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        // Distinct starting points make replies to an earlier socket's
        // requests easy to tell apart when debugging.
        let seq = std::process::id().wrapping_mul(0x10000) | 1;
        Ok(Netlink {
            socket,
            seq,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// Sends `msg`, waits for the ack and returns any other replies to it
    /// (e.g. `RTM_NEWLINK` for a get).
    fn request(
        &mut self,
        op: &'static str,
        target: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = encode(msg, flags, seq);
        if let Err(source) = self.socket.send(&bytes, 0) {
            return Err(NetlinkError::Send {
                op,
                target: target(),
                source,
            });
        }
        let mut replies = Vec::new();
        loop {
            // MSG_TRUNC makes recv return the real datagram length.
            let n = match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(NetlinkError::Recv {
                        op,
                        target: target(),
                        source,
                    })
                }
            };
            if n > self.buf.len() {
                return Err(NetlinkError::Malformed {
                    op,
                    target: target(),
                    reason: "reply larger than the receive buffer",
                });
            }
            match read_datagram(&self.buf[..n], seq, &mut replies) {
                Ok(Outcome::Pending) => {}
                Ok(Outcome::Acked) => return Ok(replies),
                Ok(Outcome::Refused { errno, extack }) => {
                    return Err(NetlinkError::Kernel {
                        op,
                        target: target(),
                        extack,
                        source: io::Error::from_raw_os_error(errno),
                    })
                }
                Err(ReplyError::Malformed(reason)) => {
                    return Err(NetlinkError::Malformed {
                        op,
                        target: target(),
                        reason,
                    })
                }
                Err(ReplyError::Decode(source)) => {
                    return Err(NetlinkError::Decode {
                        op,
                        target: target(),
                        source,
                    })
                }
            }
        }
    }

    fn link_request(
        &mut self,
        op: &'static str,
        index: u32,
        msg: RouteNetlinkMessage,
    ) -> Result<(), NetlinkError> {
        self.request(op, || format!("interface index {index}"), msg, 0)
            .map(drop)
    }

    /// The index of the interface called `name`, or `None` if there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        Ok(self
            .link_by_name("look up interface", name)?
            .map(|link| link.header.index))
    }

    /// The packet and drop counters of the interface called `name`, or
    /// `None` if there is none. One `RTM_GETLINK`: the kernel sums its
    /// per-CPU counters when asked, so reading them costs the link nothing.
    pub fn link_stats(&mut self, name: &str) -> Result<Option<LinkStats>, NetlinkError> {
        const OP: &str = "read the counters of interface";
        let Some(link) = self.link_by_name(OP, name)? else {
            return Ok(None);
        };
        LinkStats::of_link(&link)
            .map(Some)
            .ok_or_else(|| NetlinkError::Malformed {
                op: OP,
                target: format!("interface {name:?}"),
                reason: "the link has no IFLA_STATS64 or IFLA_STATS",
            })
    }

    /// The kernel's description of the interface called `name`
    /// (`RTM_GETLINK`), or `None` if there is none; `op` names the caller's
    /// operation in errors.
    fn link_by_name(
        &mut self,
        op: &'static str,
        name: &str,
    ) -> Result<Option<LinkMessage>, NetlinkError> {
        validate_ifname(name).map_err(|reason| NetlinkError::InvalidArgument {
            op,
            reason: format!("interface name {name:?}: {reason}"),
        })?;
        let target = || format!("interface {name:?}");
        let replies = match self.request(op, target, getlink_by_name(name), 0) {
            Ok(r) => r,
            Err(e) if e.kernel_errno() == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        for reply in replies {
            if let RouteNetlinkMessage::NewLink(link) = reply {
                return Ok(Some(link));
            }
        }
        Err(NetlinkError::Malformed {
            op,
            target: target(),
            reason: "no RTM_NEWLINK in the reply",
        })
    }

    /// Sets the MAC address of interface `index`.
    pub fn set_link_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let mut msg = link_change(index);
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.link_request(
            "set the MAC address",
            index,
            RouteNetlinkMessage::NewLink(msg),
        )
    }

    /// Sets the MTU of interface `index`.
    pub fn set_link_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let mut msg = link_change(index);
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.link_request("set the MTU", index, RouteNetlinkMessage::NewLink(msg))
    }

    /// Brings interface `index` up (a no-op if it already is).
    pub fn set_link_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut msg = link_change(index);
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.link_request(
            "bring the link up",
            index,
            RouteNetlinkMessage::NewLink(msg),
        )
    }

    /// Makes a qdisc of `kind` (`pfifo_fast`, say) the root qdisc of
    /// interface `index`, replacing any (`tc qdisc replace dev IF root
    /// KIND`). On a link that is down this also keeps the kernel from
    /// attaching its defaults when it comes up: on a multi-queue device
    /// that is one qdisc per possible transmit queue, 256 for a TAP.
    pub fn set_root_qdisc(&mut self, index: u32, kind: &str) -> Result<(), NetlinkError> {
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.parent = TcHandle::ROOT;
        msg.attributes.push(TcAttribute::Kind(kind.to_owned()));
        self.request(
            "set the root qdisc",
            || format!("{kind} on interface index {index}"),
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Brings interface `index` down.
    pub fn set_link_down(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut msg = link_change(index);
        msg.header.change_mask = LinkFlags::Up;
        self.link_request(
            "bring the link down",
            index,
            RouteNetlinkMessage::NewLink(msg),
        )
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
        self.request(
            OP,
            || format!("{ip}/{prefix_len} on interface index {index}"),
            newaddr_v4(index, ip, prefix_len),
            NLM_F_CREATE | NLM_F_EXCL,
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
        self.request(
            "add the IPv4 default route",
            || format!("gateway {gateway} on interface index {oif}"),
            newroute_default_v4(gateway, oif),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Deletes interface `index`.
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::DelLink(link_change(index));
        self.link_request("delete the link", index, msg)
    }
}

impl AsRawFd for Netlink {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::run_in_netns;
    use crate::testns::{ip_json, ip_text, TestNs};

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_ne_bytes([b[i], b[i + 1]])
    }

    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    const RTM_NEWLINK: u16 = 16;
    const RTM_GETLINK: u16 = 18;
    const IFLA_IFNAME: u16 = 3;
    const NLMSG_ERROR: u16 = 2;

    #[test]
    fn an_error_code_of_i32_min_is_refused_not_a_panic() {
        // Found by the netlink_reply fuzz target: negating i32::MIN
        // overflowed.
        let mut msg = Vec::new();
        msg.extend_from_slice(&36u32.to_ne_bytes()); // header (16), code (4), echoed header (16)
        msg.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&7u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&i32::MIN.to_ne_bytes());
        msg.extend_from_slice(&[0u8; 16]);
        assert_eq!(decode_reply_datagram(&msg, 7), Ok(Some(i32::MAX)));
        msg[16..20].copy_from_slice(&(-17i32).to_ne_bytes());
        assert_eq!(decode_reply_datagram(&msg, 7), Ok(Some(17)));
        msg[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(decode_reply_datagram(&msg, 7), Ok(Some(0)));
        assert_eq!(
            decode_reply_datagram(&msg, 8),
            Ok(None),
            "another request's"
        );
    }

    #[test]
    fn getlink_encoding_pads_the_name_attribute() {
        let bytes = encode(getlink_by_name("eth0"), 0, 7);
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
    fn request_headers() {
        let mut up = link_change(5);
        up.header.flags = LinkFlags::Up;
        up.header.change_mask = LinkFlags::Up;
        let link = encode(RouteNetlinkMessage::NewLink(up), 0, 1);
        assert_eq!(u16_at(&link, 4), RTM_NEWLINK);
        assert_eq!(u32_at(&link, 16 + 4), 5);
        assert_eq!(u32_at(&link, 16 + 8), libc::IFF_UP as u32);
        assert_eq!(u32_at(&link, 16 + 12), libc::IFF_UP as u32);

        let addr = encode(
            newaddr_v4(9, Ipv4Addr::new(10, 0, 0, 1), 24),
            NLM_F_CREATE | NLM_F_EXCL,
            1,
        );
        assert_eq!(
            u16_at(&addr, 6),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(addr[16], libc::AF_INET as u8);
        assert_eq!(addr[17], 24);
        assert_eq!(addr[19], libc::RT_SCOPE_UNIVERSE);
        assert_eq!(u32_at(&addr, 20), 9);
        // IFA_LOCAL, IFA_ADDRESS, IFA_BROADCAST: 8 bytes each.
        assert_eq!(addr.len(), 16 + 8 + 3 * 8);
        let lo = encode(newaddr_v4(1, Ipv4Addr::LOCALHOST, 8), 0, 1);
        assert_eq!(lo[19], libc::RT_SCOPE_HOST);
        let p32 = encode(newaddr_v4(1, Ipv4Addr::new(10, 0, 0, 1), 32), 0, 1);
        assert_eq!(p32.len(), 16 + 8 + 2 * 8, "no broadcast for /32");

        let rt = encode(newroute_default_v4(Ipv4Addr::new(10, 0, 0, 1), 3), 0, 1);
        assert_eq!(rt[16], libc::AF_INET as u8);
        assert_eq!(rt[17], 0, "default route");
        assert_eq!(rt[16 + 4], libc::RT_TABLE_MAIN);
        assert_eq!(rt[16 + 5], libc::RTPROT_STATIC);
        assert_eq!(rt[16 + 6], libc::RT_SCOPE_UNIVERSE);
        assert_eq!(rt[16 + 7], libc::RTN_UNICAST);
    }

    #[test]
    fn link_counters_prefer_the_64_bit_statistics() {
        use netlink_packet_route::link::{Stats, Stats64};
        let mut link = LinkMessage::default();
        assert_eq!(LinkStats::of_link(&link), None);
        let mut s = Stats::default();
        (s.rx_packets, s.rx_dropped, s.tx_packets, s.tx_dropped) = (1, 2, 3, 4);
        link.attributes.push(LinkAttribute::Stats(s));
        let narrow = LinkStats {
            rx_packets: 1,
            rx_dropped: 2,
            tx_packets: 3,
            tx_dropped: 4,
        };
        assert_eq!(LinkStats::of_link(&link), Some(narrow));
        let mut s = Stats64::default();
        (s.rx_packets, s.rx_dropped, s.tx_packets, s.tx_dropped) = (1 << 40, 20, 30, 40);
        link.attributes.push(LinkAttribute::Stats64(s));
        let wide = LinkStats {
            rx_packets: 1 << 40,
            rx_dropped: 20,
            tx_packets: 30,
            tx_dropped: 40,
        };
        assert_eq!(LinkStats::of_link(&link), Some(wide));
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

    /// An `NLMSG_ERROR` for request `seq` as the kernel sends it with
    /// `NETLINK_CAP_ACK` (only the request's header echoed) and, if given,
    /// an extended-ack message.
    fn fake_ack(error: i32, seq: u32, extack: Option<&str>) -> Vec<u8> {
        let mut payload = error.to_ne_bytes().to_vec();
        payload.extend_from_slice(&20u32.to_ne_bytes());
        payload.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        payload.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        payload.extend_from_slice(&seq.to_ne_bytes());
        payload.extend_from_slice(&0u32.to_ne_bytes());
        let mut flags = NLM_F_CAPPED;
        if let Some(text) = extack {
            flags |= NLM_F_ACK_TLVS;
            let len = 4 + text.len() + 1;
            payload.extend_from_slice(&(len as u16).to_ne_bytes());
            payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
            payload.extend_from_slice(text.as_bytes());
            payload.push(0);
            payload.resize(nl_align(payload.len()), 0);
        }
        let mut bytes = ((16 + payload.len()) as u32).to_ne_bytes().to_vec();
        bytes.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend(payload);
        bytes
    }

    #[test]
    fn reads_acks_with_extack() {
        let mut datagram = fake_ack(-libc::EBUSY, 2, None); // a stale reply
        datagram.extend(fake_ack(0, 3, None));
        datagram.extend(fake_ack(-libc::EEXIST, 4, Some("File exists, odd")));
        let mut replies = Vec::new();
        assert_eq!(
            read_datagram(&datagram, 3, &mut replies).unwrap(),
            Outcome::Acked
        );
        assert_eq!(
            read_datagram(&datagram, 4, &mut replies).unwrap(),
            Outcome::Refused {
                errno: libc::EEXIST,
                extack: Some("File exists, odd".to_owned())
            }
        );
        assert_eq!(
            read_datagram(&datagram, 5, &mut replies).unwrap(),
            Outcome::Pending
        );
        assert!(replies.is_empty());
        assert!(matches!(
            read_datagram(&datagram[..datagram.len() - 1], 5, &mut replies),
            Err(ReplyError::Malformed(_))
        ));
        let short = fake_ack(0, 6, None);
        assert!(matches!(
            read_datagram(&short[..16 + 2], 6, &mut replies),
            Err(ReplyError::Malformed(_))
        ));
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
        // The kernel explains itself in an extended ack, which is decoded.
        assert!(
            matches!(&bad_mtu, NetlinkError::Kernel { extack: Some(m), .. } if m.contains("mtu")),
            "{bad_mtu}"
        );
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
