//! In-place address/port rewriting of raw IPv4 packets.
//!
//! Every function takes a packet starting at its IPv4 header and rewrites
//! it in place, patching checksums incrementally (RFC 1624): the IPv4
//! header checksum, the TCP/UDP checksum (whose pseudo-header covers the
//! addresses, RFC 793 §3.1 / RFC 768), and the ICMP checksum (RFC 792).
//! Nothing allocates; work is O(1) in the packet length (one exception:
//! an ICMP echo *reply* whose checksum comes out as `0x0000` is scanned to
//! tell a real zero from the all-zero message, whose checksum must be
//! `0xFFFF`).
//!
//! A [`Rewrite`] says what the packet's source and destination should
//! become; the conntrack table hands one out per packet
//! ([`crate::conntrack::Hit::rewrite`]). [`snat`], [`dnat`],
//! [`reverse_snat`] and [`reverse_dnat`] are shorthands.
//!
//! Special cases:
//!
//! - **UDP checksum 0** means "no checksum" (RFC 768) and stays 0; a
//!   computed checksum of 0 is sent as `0xFFFF`.
//! - **ICMP echo** (RFC 5508 query): the identifier plays the port; the
//!   new identifier is the port of `rewrite.src`, else of `rewrite.dst`.
//! - **ICMP errors** (destination unreachable incl. fragmentation needed,
//!   source quench, time exceeded, parameter problem) quote the offending
//!   packet, which travelled in the *opposite* direction: with a rewrite
//!   meant for this direction, the outer header gets the rewrite's
//!   addresses, and the quoted packet the mirrored rewrite (its source
//!   becomes `rewrite.dst`, its destination `rewrite.src`), as RFC 5508
//!   §4.2 / RFC 5382 REQ-9 ask. The quoted IP header checksum, the quoted
//!   transport checksum (if the quote holds all of it; it cannot be
//!   verified since the datagram is cut short, so it is patched
//!   incrementally regardless) and the ICMP checksum, which covers all the
//!   quoted bytes, are patched. The MTU of "fragmentation needed" is left
//!   alone.
//! - **Non-first fragments** carry no transport header: only the IPv4
//!   addresses are rewritten (the transport checksum, which lives in the
//!   first fragment, already accounts for the pseudo-header change).
//! - **`CHECKSUM_PARTIAL`** ([`TranslateOptions::partial_csum`], virtio's
//!   `VIRTIO_NET_HDR_F_NEEDS_CSUM`): the TCP/UDP checksum field holds the
//!   *uncomplemented* folded pseudo-header sum, which whoever completes
//!   the checksum adds to the sum of the segment. An address change then
//!   adds `new - old` to that sum (not RFC 1624's complemented form), and
//!   a port change does not touch the field at all (ports are summed at
//!   completion). ICMP checksums are never offloaded and are always full;
//!   quoted packets inside ICMP errors are always full.
//!
//! Every function validates the whole packet before writing, so an error
//! leaves the packet untouched.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::flow::{FlowKey, Protocol};
use weft_packet::checksum::fold;

use weft_packet::icmp::{
    is_echo, DEST_UNREACHABLE as ICMP_DEST_UNREACH, ECHO_REPLY as ICMP_ECHO_REPLY,
    HEADER_LEN as ICMP_HDR, PARAMETER_PROBLEM as ICMP_PARAM_PROBLEM,
    SOURCE_QUENCH as ICMP_SOURCE_QUENCH, TIME_EXCEEDED as ICMP_TIME_EXCEEDED,
};
use weft_packet::ipv4::{Ipv4Error, Ipv4Packet, MIN_HEADER_LEN as IPV4_MIN};
use weft_packet::meta::Ipv4Meta;
use weft_packet::tcp::{CHECKSUM as TCP_CSUM, MIN_HEADER_LEN as TCP_MIN};
use weft_packet::udp::{CHECKSUM as UDP_CSUM, HEADER_LEN as UDP_LEN};
use weft_packet::{
    read_ipv4, read_u16, write_u16, IP_PROTO_ICMP as IPPROTO_ICMP, IP_PROTO_TCP as IPPROTO_TCP,
    IP_PROTO_UDP as IPPROTO_UDP,
};

/// How to treat transport checksums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranslateOptions {
    /// The TCP/UDP checksum field holds the uncomplemented pseudo-header
    /// sum (`CHECKSUM_PARTIAL` / virtio `NEEDS_CSUM`) instead of a full
    /// checksum.
    pub partial_csum: bool,
}

/// What a packet's endpoints should become; `None` leaves one alone.
///
/// For ICMP echo the port is the identifier. For ICMP errors the rewrite
/// is the one of the error's own direction; see the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rewrite {
    /// New source address and port.
    pub src: Option<SocketAddrV4>,
    /// New destination address and port.
    pub dst: Option<SocketAddrV4>,
}

impl Rewrite {
    /// The rewrite that turns a packet keyed `from` into one keyed `to`
    /// (protocols are assumed equal); endpoints that already match are
    /// left `None`.
    pub fn between(from: &FlowKey, to: &FlowKey) -> Rewrite {
        Rewrite {
            src: (from.src != to.src).then_some(to.src),
            dst: (from.dst != to.dst).then_some(to.dst),
        }
    }

    /// Whether the rewrite changes nothing.
    pub fn is_identity(&self) -> bool {
        self.src.is_none() && self.dst.is_none()
    }

    /// The rewrite a quoted packet inside an ICMP error gets: source and
    /// destination swapped.
    pub fn mirrored(&self) -> Rewrite {
        Rewrite {
            src: self.dst,
            dst: self.src,
        }
    }

    /// Applies the rewrite to a key.
    pub fn apply_to(&self, key: &FlowKey) -> FlowKey {
        FlowKey {
            proto: key.proto,
            src: self.src.unwrap_or(key.src),
            dst: self.dst.unwrap_or(key.dst),
        }
    }
}

/// Which part of a packet an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The IPv4 header.
    Ipv4,
    /// The TCP header.
    Tcp,
    /// The UDP header.
    Udp,
    /// The ICMP header.
    Icmp,
    /// The IPv4 header quoted in an ICMP error.
    QuotedIpv4,
    /// The transport header quoted in an ICMP error.
    QuotedTransport,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Ipv4 => "IPv4",
            Layer::Tcp => "TCP",
            Layer::Udp => "UDP",
            Layer::Icmp => "ICMP",
            Layer::QuotedIpv4 => "quoted IPv4",
            Layer::QuotedTransport => "quoted transport",
        })
    }
}

/// Why a packet could not be inspected or translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    /// A header is cut short.
    #[error("{layer} header truncated: {len} bytes, need {need}")]
    Truncated {
        /// The header.
        layer: Layer,
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The version field is not 4.
    #[error("{layer}: version field is {version}, not 4")]
    BadVersion {
        /// Outer or quoted header.
        layer: Layer,
        /// The version field.
        version: u8,
    },
    /// IHL below 5.
    #[error("{layer}: invalid header length IHL {ihl} (minimum is 5)")]
    BadHeaderLength {
        /// Outer or quoted header.
        layer: Layer,
        /// The IHL field.
        ihl: u8,
    },
    /// The total length is shorter than the header or longer than the
    /// buffer.
    #[error(
        "invalid IPv4 total length {total}: header is {header_len} bytes, buffer holds {available}"
    )]
    BadTotalLength {
        /// The total length field.
        total: u16,
        /// Header length from the IHL.
        header_len: usize,
        /// Bytes in the buffer.
        available: usize,
    },
    /// Not TCP, UDP or ICMP.
    #[error("{layer}: unsupported IP protocol {proto}")]
    UnsupportedProtocol {
        /// Outer or quoted header.
        layer: Layer,
        /// The protocol number.
        proto: u8,
    },
    /// An ICMP type that is neither echo nor a supported error (or an
    /// error quoting something other than echo).
    #[error("{layer}: unsupported ICMP type {icmp_type}")]
    UnsupportedIcmp {
        /// Outer ICMP or quoted transport.
        layer: Layer,
        /// The ICMP type.
        icmp_type: u8,
    },
    /// A non-first fragment, which has no transport header to key on.
    #[error("non-first IPv4 fragment (offset {offset} bytes) has no transport header")]
    Fragment {
        /// Fragment offset in bytes.
        offset: u16,
    },
}

/// What the data path needs to know about a packet to look it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    /// The key to look up in the conntrack table. For an ICMP error it is
    /// the *reverse* of the quoted packet's key, i.e. the key of a packet
    /// travelling in the error's direction.
    pub key: FlowKey,
    /// `true` for an ICMP error: it is related to the flow of `key` and
    /// should be translated with that flow's rewrite but must neither
    /// create a flow nor refresh one.
    pub icmp_error: bool,
    /// TCP flags (the 13th header byte) for TCP, else 0.
    pub tcp_flags: u8,
    /// The IPv4 total length.
    pub len: usize,
}

/// An accumulated change to a ones' complement sum: `Σ (~old + new)` over
/// the changed 16-bit words.
#[derive(Debug, Clone, Copy, Default)]
struct Delta(u32);

impl Delta {
    fn add16(&mut self, old: u16, new: u16) {
        if old != new {
            self.0 = u32::from(fold(self.0 + u32::from(!old) + u32::from(new)));
        }
    }

    fn add32(&mut self, old: u32, new: u32) {
        self.add16((old >> 16) as u16, (new >> 16) as u16);
        self.add16(old as u16, new as u16);
    }

    fn merge(&mut self, other: Delta) {
        self.0 = u32::from(fold(self.0 + other.0));
    }

    /// RFC 1624 eqn. 3 for all accumulated words: `~(~HC + Σ(~m + m'))`.
    fn apply(self, csum: u16) -> u16 {
        if self.0 == 0 {
            csum
        } else {
            !fold(u32::from(!csum) + self.0)
        }
    }

    /// The same change applied to an uncomplemented partial sum.
    fn apply_partial(self, partial: u16) -> u16 {
        if self.0 == 0 {
            partial
        } else {
            fold(u32::from(partial) + self.0)
        }
    }
}

/// The parsed fixed part of an IPv4 header.
#[derive(Debug, Clone, Copy)]
struct Ip {
    hl: usize,
    /// For the outer header, the validated total length; for a quoted
    /// header, the bytes of it actually present.
    len: usize,
    proto: u8,
    frag_offset: u16,
}

fn parse_ipv4(p: &[u8], layer: Layer) -> Result<Ip, NatError> {
    let view = Ipv4Packet::new_unchecked(p);
    let checked = if layer == Layer::QuotedIpv4 {
        view.check_header()
    } else {
        view.check_len()
    };
    checked.map_err(|e| match e {
        Ipv4Error::Truncated { len } => NatError::Truncated {
            layer,
            len,
            need: IPV4_MIN,
        },
        Ipv4Error::Version(version) => NatError::BadVersion { layer, version },
        Ipv4Error::HeaderLength(ihl) => NatError::BadHeaderLength { layer, ihl },
        Ipv4Error::HeaderTruncated { header_len, len } => NatError::Truncated {
            layer,
            len,
            need: header_len,
        },
        Ipv4Error::TotalLength {
            total,
            header_len,
            len,
        } => NatError::BadTotalLength {
            total,
            header_len,
            available: len,
        },
    })?;
    let hl = view.header_len();
    let len = if layer == Layer::QuotedIpv4 {
        // The quote is cut short; never trust its length past the buffer.
        p.len().min(usize::from(view.total_len()).max(hl))
    } else {
        usize::from(view.total_len())
    };
    Ok(Ip {
        hl,
        len,
        proto: view.protocol(),
        frag_offset: view.frag_offset(),
    })
}

/// The outer header's fields from an already validated [`Ipv4Meta`] of
/// `p`, re-checked cheaply so that a meta from another packet cannot make
/// slicing panic; falls back to a full parse if they do not fit.
#[inline]
fn outer_from_meta(p: &[u8], meta: &Ipv4Meta) -> Result<Ip, NatError> {
    if meta.header_len >= IPV4_MIN && meta.header_len <= meta.total_len && meta.total_len <= p.len()
    {
        Ok(Ip {
            hl: meta.header_len,
            len: meta.total_len,
            proto: meta.proto,
            frag_offset: meta.frag_offset(),
        })
    } else {
        parse_ipv4(p, Layer::Ipv4)
    }
}

fn need(layer: Layer, len: usize, need: usize) -> Result<(), NatError> {
    if len < need {
        Err(NatError::Truncated { layer, len, need })
    } else {
        Ok(())
    }
}

fn is_icmp_error(t: u8) -> bool {
    matches!(
        t,
        ICMP_DEST_UNREACH | ICMP_SOURCE_QUENCH | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM
    )
}

/// Rewrites the addresses of an IPv4 header, patching its checksum;
/// returns the pseudo-header delta and adds every changed word to
/// `outer` (for a quoted header, the enclosing ICMP checksum).
fn rewrite_addrs(
    ip: &mut [u8],
    src: Option<Ipv4Addr>,
    dst: Option<Ipv4Addr>,
    outer: &mut Delta,
) -> Delta {
    let mut d = Delta::default();
    for (at, new) in [(12, src), (16, dst)] {
        if let Some(new) = new {
            let old = u32::from(read_ipv4(ip, at));
            let new = u32::from(new);
            d.add32(old, new);
            outer.add32(old, new);
            ip[at..at + 4].copy_from_slice(&new.to_be_bytes());
        }
    }
    let old = read_u16(ip, 10);
    let new = d.apply(old);
    write_u16(ip, 10, new);
    outer.add16(old, new);
    d
}

/// Writes new ports at offsets 0 and 2 of `l4`; returns their delta and
/// adds it to `outer`.
fn rewrite_ports(l4: &mut [u8], rw: &Rewrite, outer: &mut Delta) -> Delta {
    let mut d = Delta::default();
    for (at, new) in [(0, rw.src), (2, rw.dst)] {
        if let Some(new) = new {
            let old = read_u16(l4, at);
            d.add16(old, new.port());
            write_u16(l4, at, new.port());
        }
    }
    outer.merge(d);
    d
}

/// Patches the TCP/UDP checksum at `at`; returns (old, new).
fn patch_l4_csum(
    l4: &mut [u8],
    at: usize,
    udp: bool,
    pseudo: Delta,
    ports: Delta,
    partial: bool,
) -> (u16, u16) {
    let old = read_u16(l4, at);
    let new = if partial {
        pseudo.apply_partial(old)
    } else if udp && old == 0 {
        0
    } else {
        let mut d = pseudo;
        d.merge(ports);
        match d.apply(old) {
            0 if udp => 0xffff,
            c => c,
        }
    };
    write_u16(l4, at, new);
    (old, new)
}

/// The new echo identifier of a rewrite.
fn echo_id(rw: &Rewrite) -> Option<u16> {
    rw.src.or(rw.dst).map(|a| a.port())
}

/// Rewrites the identifier of an ICMP echo message in `icmp` (which may
/// be a truncated quote: only the first 8 bytes are touched) and patches
/// its checksum; every changed word is added to `outer`. The all-zero
/// check looks at `icmp` in full, so pass the whole message when it is.
fn rewrite_echo(icmp: &mut [u8], id: Option<u16>, outer: &mut Delta) {
    let Some(id) = id else { return };
    let old_id = read_u16(icmp, 4);
    let mut d = Delta::default();
    d.add16(old_id, id);
    write_u16(icmp, 4, id);
    outer.add16(old_id, id);
    let old = read_u16(icmp, 2);
    let mut new = d.apply(old);
    if new == 0 && icmp[0] == ICMP_ECHO_REPLY {
        // RFC 1624 eqn. 3 gives -0 (0x0000) where the sum is +0 only if
        // the message is all zeros, whose checksum must be 0xFFFF.
        let rest_zero = icmp[..2].iter().chain(&icmp[4..]).all(|&b| b == 0);
        if rest_zero {
            new = 0xffff;
        }
    }
    write_u16(icmp, 2, new);
    outer.add16(old, new);
}

/// Rewrites a packet (starting at its IPv4 header) in place.
///
/// See the module docs for ICMP errors, fragments and partial checksums.
/// Bytes past the IPv4 total length are left alone.
pub fn translate(packet: &mut [u8], rw: &Rewrite, opts: TranslateOptions) -> Result<(), NatError> {
    let ip = parse_ipv4(packet, Layer::Ipv4)?;
    translate_ip(packet, ip, rw, opts)
}

/// [`translate`] for a packet whose IPv4 header the caller has already
/// validated into `meta` (e.g. at ingress), which is not parsed again.
pub fn translate_parsed(
    packet: &mut [u8],
    meta: &Ipv4Meta,
    rw: &Rewrite,
    opts: TranslateOptions,
) -> Result<(), NatError> {
    let ip = outer_from_meta(packet, meta)?;
    translate_ip(packet, ip, rw, opts)
}

#[inline]
fn translate_ip(
    packet: &mut [u8],
    ip: Ip,
    rw: &Rewrite,
    opts: TranslateOptions,
) -> Result<(), NatError> {
    let pkt = &mut packet[..ip.len];
    let src_ip = rw.src.map(|a| *a.ip());
    let dst_ip = rw.dst.map(|a| *a.ip());
    let mut none = Delta::default();
    if ip.frag_offset != 0 {
        rewrite_addrs(pkt, src_ip, dst_ip, &mut none);
        return Ok(());
    }
    let l4_len = ip.len - ip.hl;
    match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let (udp, layer, min, csum_at) = if ip.proto == IPPROTO_UDP {
                (true, Layer::Udp, UDP_LEN, UDP_CSUM)
            } else {
                (false, Layer::Tcp, TCP_MIN, TCP_CSUM)
            };
            need(layer, l4_len, min)?;
            let (hdr, l4) = pkt.split_at_mut(ip.hl);
            let pseudo = rewrite_addrs(hdr, src_ip, dst_ip, &mut none);
            let ports = rewrite_ports(l4, rw, &mut none);
            patch_l4_csum(l4, csum_at, udp, pseudo, ports, opts.partial_csum);
            Ok(())
        }
        IPPROTO_ICMP => {
            need(Layer::Icmp, l4_len, ICMP_HDR)?;
            let t = pkt[ip.hl];
            if is_echo(t) {
                let (hdr, l4) = pkt.split_at_mut(ip.hl);
                rewrite_addrs(hdr, src_ip, dst_ip, &mut none);
                rewrite_echo(l4, echo_id(rw), &mut none);
                Ok(())
            } else if is_icmp_error(t) {
                translate_icmp_error(pkt, ip, rw)
            } else {
                Err(NatError::UnsupportedIcmp {
                    layer: Layer::Icmp,
                    icmp_type: t,
                })
            }
        }
        proto => Err(NatError::UnsupportedProtocol {
            layer: Layer::Ipv4,
            proto,
        }),
    }
}

/// What a quoted packet inside an ICMP error holds past its IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoted {
    /// TCP or UDP (`udp`), with its checksum at `csum_at` if quoted.
    Ports { udp: bool, csum_at: Option<usize> },
    /// An ICMP echo message.
    Echo,
    /// A non-first fragment: addresses only.
    NoTransport,
}

/// Validates the quote of an ICMP error (`icmp` is the ICMP message).
fn parse_quote(icmp: &[u8]) -> Result<(Ip, Quoted), NatError> {
    let q = parse_ipv4(&icmp[ICMP_HDR..], Layer::QuotedIpv4)?;
    if q.frag_offset != 0 {
        return Ok((q, Quoted::NoTransport));
    }
    let l4 = &icmp[ICMP_HDR + q.hl..ICMP_HDR + q.len];
    // RFC 792: the quote holds at least 8 bytes of the datagram.
    need(Layer::QuotedTransport, l4.len(), 8)?;
    let kind = match q.proto {
        IPPROTO_TCP => Quoted::Ports {
            udp: false,
            csum_at: (l4.len() >= TCP_CSUM + 2).then_some(TCP_CSUM),
        },
        IPPROTO_UDP => Quoted::Ports {
            udp: true,
            csum_at: Some(UDP_CSUM),
        },
        IPPROTO_ICMP if is_echo(l4[0]) => Quoted::Echo,
        IPPROTO_ICMP => {
            return Err(NatError::UnsupportedIcmp {
                layer: Layer::QuotedTransport,
                icmp_type: l4[0],
            })
        }
        proto => {
            return Err(NatError::UnsupportedProtocol {
                layer: Layer::QuotedIpv4,
                proto,
            })
        }
    };
    Ok((q, kind))
}

fn translate_icmp_error(pkt: &mut [u8], ip: Ip, rw: &Rewrite) -> Result<(), NatError> {
    let (q, kind) = parse_quote(&pkt[ip.hl..])?;
    // Validated: from here on nothing fails.
    let (outer_hdr, icmp) = pkt.split_at_mut(ip.hl);
    let mut none = Delta::default();
    rewrite_addrs(
        outer_hdr,
        rw.src.map(|a| *a.ip()),
        rw.dst.map(|a| *a.ip()),
        &mut none,
    );

    let m = rw.mirrored();
    let mut icmp_delta = Delta::default();
    let quote = &mut icmp[ICMP_HDR..ICMP_HDR + q.len];
    let (qhdr, ql4) = quote.split_at_mut(q.hl);
    let pseudo = rewrite_addrs(
        qhdr,
        m.src.map(|a| *a.ip()),
        m.dst.map(|a| *a.ip()),
        &mut icmp_delta,
    );
    match kind {
        Quoted::Ports { udp, csum_at } => {
            let ports = rewrite_ports(ql4, &m, &mut icmp_delta);
            if let Some(at) = csum_at {
                let (old, new) = patch_l4_csum(ql4, at, udp, pseudo, ports, false);
                icmp_delta.add16(old, new);
            }
        }
        Quoted::Echo => rewrite_echo(ql4, echo_id(&m), &mut icmp_delta),
        Quoted::NoTransport => {}
    }
    let old = read_u16(icmp, 2);
    write_u16(icmp, 2, icmp_delta.apply(old));
    Ok(())
}

/// Rewrites the source of a packet to `new_src` (masquerade / SNAT on the
/// way out). For ICMP echo the port is the new identifier.
pub fn snat(
    packet: &mut [u8],
    new_src: SocketAddrV4,
    opts: TranslateOptions,
) -> Result<(), NatError> {
    translate(
        packet,
        &Rewrite {
            src: Some(new_src),
            dst: None,
        },
        opts,
    )
}

/// Rewrites the destination of a packet to `new_dst` (port forwarding /
/// DNAT on the way in). For ICMP echo the port is the new identifier.
pub fn dnat(
    packet: &mut [u8],
    new_dst: SocketAddrV4,
    opts: TranslateOptions,
) -> Result<(), NatError> {
    translate(
        packet,
        &Rewrite {
            src: None,
            dst: Some(new_dst),
        },
        opts,
    )
}

/// Undoes SNAT on a reply: its destination (the NAT's external address
/// and port) becomes the flow's `original_src`.
pub fn reverse_snat(
    reply: &mut [u8],
    original_src: SocketAddrV4,
    opts: TranslateOptions,
) -> Result<(), NatError> {
    dnat(reply, original_src, opts)
}

/// Undoes DNAT on a reply: its source (the internal server) becomes the
/// flow's `original_dst` (the address the client connected to).
pub fn reverse_dnat(
    reply: &mut [u8],
    original_dst: SocketAddrV4,
    opts: TranslateOptions,
) -> Result<(), NatError> {
    snat(reply, original_dst, opts)
}

/// Parses what the data path needs to look a packet up.
///
/// For TCP, UDP and ICMP echo the key is the packet's own (as
/// [`FlowKey::from_ipv4_packet`]); for ICMP errors it is the reverse of the
/// quoted packet's key and `icmp_error` is set. Non-first fragments (also
/// when quoted) are refused with [`NatError::Fragment`].
pub fn inspect(packet: &[u8]) -> Result<Inspected, NatError> {
    let ip = parse_ipv4(packet, Layer::Ipv4)?;
    inspect_ip(packet, ip)
}

/// [`inspect`] for a packet whose IPv4 header the caller has already
/// validated into `meta`, which is not parsed again.
pub fn inspect_parsed(packet: &[u8], meta: &Ipv4Meta) -> Result<Inspected, NatError> {
    let ip = outer_from_meta(packet, meta)?;
    inspect_ip(packet, ip)
}

#[inline]
fn inspect_ip(packet: &[u8], ip: Ip) -> Result<Inspected, NatError> {
    if ip.frag_offset != 0 {
        return Err(NatError::Fragment {
            offset: ip.frag_offset,
        });
    }
    let pkt = &packet[..ip.len];
    let l4 = &pkt[ip.hl..];
    let src = read_ipv4(pkt, 12);
    let dst = read_ipv4(pkt, 16);
    let (key, icmp_error, tcp_flags) = match ip.proto {
        IPPROTO_TCP => {
            need(Layer::Tcp, l4.len(), TCP_MIN)?;
            let key = FlowKey::new(
                Protocol::Tcp,
                SocketAddrV4::new(src, read_u16(l4, 0)),
                SocketAddrV4::new(dst, read_u16(l4, 2)),
            );
            (key, false, l4[13])
        }
        IPPROTO_UDP => {
            need(Layer::Udp, l4.len(), UDP_LEN)?;
            let key = FlowKey::new(
                Protocol::Udp,
                SocketAddrV4::new(src, read_u16(l4, 0)),
                SocketAddrV4::new(dst, read_u16(l4, 2)),
            );
            (key, false, 0)
        }
        IPPROTO_ICMP => {
            need(Layer::Icmp, l4.len(), ICMP_HDR)?;
            let t = l4[0];
            if is_echo(t) {
                let id = read_u16(l4, 4);
                let key = FlowKey::new(
                    Protocol::Icmp,
                    SocketAddrV4::new(src, id),
                    SocketAddrV4::new(dst, id),
                );
                (key, false, 0)
            } else if is_icmp_error(t) {
                let (q, kind) = parse_quote(l4)?;
                let quote = &l4[ICMP_HDR..ICMP_HDR + q.len];
                let qsrc = read_ipv4(quote, 12);
                let qdst = read_ipv4(quote, 16);
                let ql4 = &quote[q.hl..];
                let (proto, sp, dp) = match kind {
                    Quoted::NoTransport => {
                        return Err(NatError::Fragment {
                            offset: q.frag_offset,
                        })
                    }
                    Quoted::Ports { udp, .. } => (
                        if udp { Protocol::Udp } else { Protocol::Tcp },
                        read_u16(ql4, 0),
                        read_u16(ql4, 2),
                    ),
                    Quoted::Echo => (Protocol::Icmp, read_u16(ql4, 4), read_u16(ql4, 4)),
                };
                let quoted = FlowKey::new(
                    proto,
                    SocketAddrV4::new(qsrc, sp),
                    SocketAddrV4::new(qdst, dp),
                );
                (quoted.reversed(), true, 0)
            } else {
                return Err(NatError::UnsupportedIcmp {
                    layer: Layer::Icmp,
                    icmp_type: t,
                });
            }
        }
        proto => {
            return Err(NatError::UnsupportedProtocol {
                layer: Layer::Ipv4,
                proto,
            })
        }
    };
    Ok(Inspected {
        key,
        icmp_error,
        tcp_flags,
        len: ip.len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use weft_packet::checksum::{checksum, checksum_with, pseudo_header_sum_v4};

    const H: [u8; 4] = [172, 17, 0, 2];
    const E: [u8; 4] = [203, 0, 113, 7];
    const R: [u8; 4] = [198, 51, 100, 20];

    fn sa(ip: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(ip.into(), port)
    }

    fn udp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(sp, dp)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    fn tcp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .tcp(sp, dp, 1, 1000)
            .syn()
            .write(&mut v, b"hello")
            .unwrap();
        v
    }

    /// The meta-taking variants give the same results as parsing, and a
    /// meta that does not fit the packet falls back to parsing.
    #[test]
    fn parsed_variants_match() {
        let rw = Rewrite {
            src: Some(sa(E, 40001)),
            dst: None,
        };
        for pkt in [udp(H, 5000, R, 53, b"query"), tcp(H, 5000, R, 80)] {
            let meta = Ipv4Meta::parse(&pkt).unwrap();
            assert_eq!(inspect_parsed(&pkt, &meta), inspect(&pkt));
            let (mut a, mut b) = (pkt.clone(), pkt.clone());
            translate(&mut a, &rw, TranslateOptions::default()).unwrap();
            translate_parsed(&mut b, &meta, &rw, TranslateOptions::default()).unwrap();
            assert_eq!(a, b);
            let wrong = Ipv4Meta {
                total_len: pkt.len() + 1,
                ..meta
            };
            assert_eq!(inspect_parsed(&pkt, &wrong), inspect(&pkt));
            assert_eq!(inspect_parsed(&pkt[..10], &wrong), inspect(&pkt[..10]));
        }
    }

    #[test]
    fn snat_udp_equals_rebuilt_packet() {
        let mut p = udp(H, 40000, R, 53, b"query");
        snat(&mut p, sa(E, 50000), TranslateOptions::default()).unwrap();
        assert_eq!(p, udp(E, 50000, R, 53, b"query"));
        let mut back = udp(R, 53, E, 50000, b"answer");
        reverse_snat(&mut back, sa(H, 40000), TranslateOptions::default()).unwrap();
        assert_eq!(back, udp(R, 53, H, 40000, b"answer"));
    }

    #[test]
    fn dnat_tcp_equals_rebuilt_packet() {
        let mut p = tcp(R, 55555, E, 8080);
        dnat(&mut p, sa(H, 80), TranslateOptions::default()).unwrap();
        assert_eq!(p, tcp(R, 55555, H, 80));
        let mut back = tcp(H, 80, R, 55555);
        reverse_dnat(&mut back, sa(E, 8080), TranslateOptions::default()).unwrap();
        assert_eq!(back, tcp(E, 8080, R, 55555));
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut p = udp(H, 1, R, 2, b"x");
        p[26..28].fill(0);
        snat(&mut p, sa(E, 3), TranslateOptions::default()).unwrap();
        assert_eq!(&p[26..28], &[0, 0]);
        assert_eq!(checksum(&p[..20]), 0);
    }

    /// Pick a payload so that the translated datagram's checksum computes
    /// to 0: it must be sent as 0xFFFF, and reversing restores the
    /// original bytes.
    #[test]
    fn udp_computed_zero_is_sent_as_ffff() {
        let (src, dst) = (Ipv4Addr::from(E), Ipv4Addr::from(R));
        // The translated datagram with a 2-byte payload word `w`: choose w
        // so that the full sum is 0xFFFF (checksum 0).
        let mut seg = vec![0u8; 10];
        write_u16(&mut seg, 0, 50000);
        write_u16(&mut seg, 2, 53);
        write_u16(&mut seg, 4, 10);
        let partial = fold(weft_packet::checksum::sum(
            pseudo_header_sum_v4(src, dst, 17, 10),
            &seg,
        ));
        let w = !partial;
        let mut p = udp(H, 40000, R, 53, &w.to_be_bytes());
        let orig = p.clone();
        snat(&mut p, sa(E, 50000), TranslateOptions::default()).unwrap();
        assert_eq!(read_u16(&p, 26), 0xffff);
        // Receiver check: checksum over pseudo + segment verifies.
        assert_eq!(
            checksum_with(pseudo_header_sum_v4(src, dst, 17, 10), &p[20..]),
            0
        );
        assert_eq!(p, udp(E, 50000, R, 53, &w.to_be_bytes()));
        snat(&mut p, sa(H, 40000), TranslateOptions::default()).unwrap();
        assert_eq!(p, orig);
    }

    #[test]
    fn echo_identifier_rewrite() {
        let mut p = Vec::new();
        PacketBuilder::ipv4(H, R, 64)
            .icmpv4_echo_request(0x1234, 9)
            .write(&mut p, b"ping")
            .unwrap();
        snat(&mut p, sa(E, 0xbeef), TranslateOptions::default()).unwrap();
        let mut want = Vec::new();
        PacketBuilder::ipv4(E, R, 64)
            .icmpv4_echo_request(0xbeef, 9)
            .write(&mut want, b"ping")
            .unwrap();
        assert_eq!(p, want);
    }

    #[test]
    fn all_zero_echo_reply_gets_ffff() {
        let mut p = Vec::new();
        PacketBuilder::ipv4(R, E, 64)
            .icmpv4_echo_reply(5, 0)
            .write(&mut p, &[0; 4])
            .unwrap();
        dnat(&mut p, sa(H, 0), TranslateOptions::default()).unwrap();
        assert_eq!(read_u16(&p, 22), 0xffff);
        assert_eq!(checksum(&p[20..]), 0);
        let mut want = Vec::new();
        PacketBuilder::ipv4(R, H, 64)
            .icmpv4_echo_reply(0, 0)
            .write(&mut want, &[0; 4])
            .unwrap();
        assert_eq!(p, want);
    }

    #[test]
    fn errors_leave_packet_untouched() {
        let mut p = udp(H, 1, R, 2, b"");
        p[9] = 47;
        let before = p.clone();
        assert_eq!(
            snat(&mut p, sa(E, 3), TranslateOptions::default()),
            Err(NatError::UnsupportedProtocol {
                layer: Layer::Ipv4,
                proto: 47
            })
        );
        assert_eq!(p, before);
        let mut short = udp(H, 1, R, 2, b"")[..24].to_vec();
        short[2..4].copy_from_slice(&24u16.to_be_bytes());
        let before = short.clone();
        assert_eq!(
            snat(&mut short, sa(E, 3), TranslateOptions::default()),
            Err(NatError::Truncated {
                layer: Layer::Udp,
                len: 4,
                need: 8
            })
        );
        assert_eq!(short, before);
        assert!(matches!(
            snat(&mut [0x45u8; 10], sa(E, 3), TranslateOptions::default()),
            Err(NatError::Truncated {
                layer: Layer::Ipv4,
                ..
            })
        ));
        let mut v6 = udp(H, 1, R, 2, b"");
        v6[0] = 0x65;
        assert_eq!(
            inspect(&v6),
            Err(NatError::BadVersion {
                layer: Layer::Ipv4,
                version: 6
            })
        );
    }

    #[test]
    fn unsupported_icmp_and_quotes() {
        // Router advertisement (type 9): not echo, not an error.
        let mut p = Vec::new();
        PacketBuilder::ipv4(R, E, 64)
            .icmpv4_raw(9, 0, [0; 4])
            .write(&mut p, &[])
            .unwrap();
        assert_eq!(
            inspect(&p),
            Err(NatError::UnsupportedIcmp {
                layer: Layer::Icmp,
                icmp_type: 9
            })
        );
        // An error quoting an error.
        let inner = {
            let mut v = Vec::new();
            PacketBuilder::ipv4(E, R, 64)
                .icmpv4_raw(3, 3, [0; 4])
                .write(&mut v, &[0; 28])
                .unwrap();
            v
        };
        let mut p = Vec::new();
        PacketBuilder::ipv4(R, E, 64)
            .icmpv4_raw(11, 0, [0; 4])
            .write(&mut p, &inner)
            .unwrap();
        let before = p.clone();
        assert_eq!(
            translate(
                &mut p,
                &Rewrite {
                    src: None,
                    dst: Some(sa(H, 1))
                },
                TranslateOptions::default()
            ),
            Err(NatError::UnsupportedIcmp {
                layer: Layer::QuotedTransport,
                icmp_type: 3
            })
        );
        assert_eq!(p, before);
        // Quote with fewer than 8 transport bytes.
        let q = udp(E, 1, R, 2, b"");
        let mut p = Vec::new();
        PacketBuilder::ipv4(R, E, 64)
            .icmpv4_raw(3, 3, [0; 4])
            .write(&mut p, &q[..24])
            .unwrap();
        assert_eq!(
            inspect(&p),
            Err(NatError::Truncated {
                layer: Layer::QuotedTransport,
                len: 4,
                need: 8
            })
        );
    }

    #[test]
    fn non_first_fragment_rewrites_addresses_only() {
        let mut p = udp(H, 1000, R, 2000, &[7; 32]);
        p[6..8].copy_from_slice(&10u16.to_be_bytes()); // offset 80
        p[10..12].fill(0);
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let l4 = p[20..].to_vec();
        snat(&mut p, sa(E, 5), TranslateOptions::default()).unwrap();
        assert_eq!(&p[12..16], &E);
        assert_eq!(&p[20..], &l4[..], "payload untouched");
        assert_eq!(checksum(&p[..20]), 0);
        assert_eq!(inspect(&p), Err(NatError::Fragment { offset: 80 }));
    }

    #[test]
    fn inspect_keys() {
        let p = tcp(H, 40000, R, 443);
        let i = inspect(&p).unwrap();
        assert_eq!(i.key, FlowKey::from_ipv4_packet(&p).unwrap());
        assert_eq!(i.tcp_flags, 0x02);
        assert!(!i.icmp_error);
        assert_eq!(i.len, p.len());
        // Port unreachable from R about E:50000 -> R:53.
        let q = udp(E, 50000, R, 53, b"q");
        let mut err = Vec::new();
        PacketBuilder::ipv4(R, E, 64)
            .icmpv4_raw(3, 3, [0; 4])
            .write(&mut err, &q)
            .unwrap();
        let i = inspect(&err).unwrap();
        assert!(i.icmp_error);
        assert_eq!(i.key, FlowKey::new(Protocol::Udp, sa(R, 53), sa(E, 50000)));
    }

    #[test]
    fn rewrite_helpers() {
        let a = FlowKey::new(Protocol::Udp, sa(H, 1), sa(R, 2));
        let b = FlowKey::new(Protocol::Udp, sa(E, 3), sa(R, 2));
        let rw = Rewrite::between(&a, &b);
        assert_eq!(
            rw,
            Rewrite {
                src: Some(sa(E, 3)),
                dst: None
            }
        );
        assert_eq!(rw.apply_to(&a), b);
        assert!(!rw.is_identity());
        assert!(Rewrite::between(&a, &a).is_identity());
        assert_eq!(rw.mirrored().dst, Some(sa(E, 3)));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            NatError::Truncated {
                layer: Layer::QuotedTransport,
                len: 4,
                need: 8
            }
            .to_string(),
            "quoted transport header truncated: 4 bytes, need 8"
        );
        assert_eq!(
            NatError::UnsupportedIcmp {
                layer: Layer::Icmp,
                icmp_type: 9
            }
            .to_string(),
            "ICMP: unsupported ICMP type 9"
        );
    }
}
