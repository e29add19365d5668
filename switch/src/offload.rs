//! TCP segmentation and receive coalescing in userspace: the software
//! fallbacks for the offloads a TAP with `IFF_VNET_HDR` negotiates.
//!
//! A TAP opened with `TUNSETOFFLOAD(CSUM | TSO4 | TSO6)` hands weft TCP
//! super-frames ("GSO frames") of up to 64 KiB, described by a virtio-net
//! header ([`Offload`], virtio 1.x §5.1.6): `gso_type` (TCPv4 or TCPv6,
//! maybe with the ECN bit), `gso_size` (the MSS), `hdr_len`, and
//! `VIRTIO_NET_HDR_F_NEEDS_CSUM` with `csum_start`/`csum_offset`, in which
//! case the checksum field holds the *uncomplemented* pseudo-header sum
//! (virtio 1.x §5.1.6.2, Linux's `CHECKSUM_PARTIAL`). Nothing that leaves the
//! host through a VXLAN tunnel can carry that metadata, so:
//!
//! * [`segment`] cuts a GSO frame into wire-sized TCP segments, as the
//!   kernel's `tcp_gso_segment` would, into one caller-owned buffer laid out
//!   for a single UDP GSO `sendmsg` (every record but the last has the same
//!   length, with room in front of each for a tunnel header);
//! * [`segment_partial`] cuts it the same way but leaves every TCP
//!   checksum partial, for a peer that takes VXLAN remote checksum offload
//!   (draft-herbert-vxlan-rco): the receiver completes it, or needs none;
//! * [`complete_csum`] completes a partial checksum (the
//!   `skb_checksum_help` of the kernel);
//! * [`Coalescer`] does the reverse on the receiving host (like GRO):
//!   consecutive in-order segments of a flow are merged back into one
//!   super-frame, handed to the TAP with a virtio-net header that lets the
//!   kernel take it as one packet ([`Coalescer::push_partial`] merges
//!   segments that arrived with remote checksum offload without summing
//!   them).
//!
//! # Header fields touched
//!
//! * IPv4 (RFC 791 §3.1): *Total Length* is that of each segment; the
//!   *Identification* of segment `i` is the super-frame's plus `i` (modulo
//!   2¹⁶, what Linux does unless the frame is marked "mangle ID"); the
//!   *Header Checksum* is recomputed. Options are copied to every segment.
//! * IPv6 (RFC 8200 §3): *Payload Length* is that of each segment.
//!   Extension headers are not supported (the next header must be TCP).
//! * TCP (RFC 9293 §3.1, formerly RFC 793 §3.1): the *Sequence Number* of a
//!   segment is the super-frame's plus the offset of its payload (modulo
//!   2³²); FIN and PSH are kept on the last segment only, CWR on the first
//!   only (RFC 3168 §6.1.2: CWR is set on the first new data after a window
//!   reduction); the *Checksum* is computed in full over the pseudo-header
//!   (RFC 9293 §3.1, RFC 8200 §8.1), header and payload. Options are copied
//!   to every segment.
//!
//! One 802.1Q or 802.1ad tag (or two, stacked) may precede the IP header.
//! Nothing here allocates except [`Coalescer::new`].

use std::ops::Range;

use thiserror::Error;
use weft_packet::checksum::{checksum, copy_and_sum, fold, sum};

use crate::frame::{is_gso, needs_csum, Offload, MAX_FRAME_LEN};
use weft_os::tap::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};
use weft_packet::ipv4::Ipv4Packet;
use weft_packet::ipv6::{Ipv6Packet, HEADER_LEN as IPV6_HEADER_LEN};
use weft_packet::meta::FrameInfo;
use weft_packet::tcp::{self, MIN_HEADER_LEN as TCP_MIN_HEADER_LEN};
use weft_packet::{
    get_u16, read_u32, write_u16, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPV4_MIN_HEADER_LEN, IP_PROTO_TCP,
};

/// Offset of the checksum in the TCP header, the `csum_offset` of a TCP
/// frame with a partial checksum.
pub const TCP_CSUM_OFFSET: u16 = 16;
/// Largest value of the IPv4 Total Length and IPv6 Payload Length fields.
const MAX_IP_LEN: usize = 0xffff;

/// Why a frame could not be segmented or its checksum completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OffloadError {
    /// The frame carries neither IPv4 nor IPv6.
    #[error("frame is neither IPv4 nor IPv6 (ethertype {ethertype:#06x})")]
    NotIp {
        /// The (innermost) ethertype.
        ethertype: u16,
    },
    /// The IP payload is not TCP (for IPv6: the next header after the fixed
    /// header is not TCP, which includes any extension header).
    #[error("IP protocol {protocol} is not TCP")]
    NotTcp {
        /// The IPv4 protocol or IPv6 next header.
        protocol: u8,
    },
    /// The virtio-net header asks for a segmentation other than TCP (for
    /// example `VIRTIO_NET_HDR_GSO_UDP`).
    #[error("unsupported GSO type {gso_type:#04x}")]
    UnsupportedGsoType {
        /// The `gso_type` field, ECN bit included.
        gso_type: u8,
    },
    /// The frame ends before its headers do, or before the end its IP
    /// length field announces.
    #[error("frame truncated within its headers")]
    Truncated,
    /// The headers are inconsistent.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// A GSO frame with a `gso_size` of 0.
    #[error("GSO frame with gso_size 0")]
    ZeroGsoSize,
    /// The output buffer cannot hold all segments.
    #[error("output buffer too small: {needed} bytes needed, {available} available")]
    OutTooSmall {
        /// Bytes the segments need, prefixes included.
        needed: usize,
        /// Length of the buffer given.
        available: usize,
    },
    /// `csum_start + csum_offset` does not leave room for a 16-bit checksum
    /// inside the frame.
    #[error("checksum at {csum_start}+{csum_offset} does not fit in a {frame_len}-byte frame")]
    BadCsumOffsets {
        /// The header's `csum_start`.
        csum_start: u16,
        /// The header's `csum_offset`.
        csum_offset: u16,
        /// Length of the frame.
        frame_len: usize,
    },
}

/// Where the headers of an Ethernet/IP/TCP frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpFrame {
    /// Start of the IP header.
    l3: usize,
    /// Start of the TCP header.
    l4: usize,
    /// Start of the TCP payload (= length of all headers).
    payload: usize,
    /// End of the IP datagram (bytes after it are link-layer padding).
    end: usize,
    /// IPv6 rather than IPv4.
    v6: bool,
}

/// Finds the headers of an Ethernet (optionally VLAN-tagged) + IPv4/IPv6 +
/// TCP frame, checking every offset against the frame's length and the IP
/// length field.
fn parse_tcp(frame: &[u8]) -> Result<TcpFrame, OffloadError> {
    let FrameInfo { ethertype, l3 } = FrameInfo::parse(frame).ok_or(OffloadError::Truncated)?;
    let (l4, end, v6) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = frame
                .get(l3..l3 + IPV4_MIN_HEADER_LEN)
                .map(Ipv4Packet::new_unchecked)
                .ok_or(OffloadError::Truncated)?;
            if ip.version() != 4 {
                return Err(OffloadError::Malformed("IPv4 version field is not 4"));
            }
            let ihl = ip.header_len();
            if ihl < IPV4_MIN_HEADER_LEN {
                return Err(OffloadError::Malformed("IPv4 header length below 20"));
            }
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err(OffloadError::Malformed("IPv4 fragment"));
            }
            if ip.protocol() != IP_PROTO_TCP {
                return Err(OffloadError::NotTcp {
                    protocol: ip.protocol(),
                });
            }
            let total = usize::from(ip.total_len());
            if total < ihl + TCP_MIN_HEADER_LEN {
                return Err(OffloadError::Malformed(
                    "IPv4 total length shorter than the headers",
                ));
            }
            let end = l3 + total;
            if end > frame.len() {
                return Err(OffloadError::Truncated);
            }
            (l3 + ihl, end, false)
        }
        ETHERTYPE_IPV6 => {
            let ip = frame
                .get(l3..l3 + IPV6_HEADER_LEN)
                .map(Ipv6Packet::new_unchecked)
                .ok_or(OffloadError::Truncated)?;
            if ip.version() != 6 {
                return Err(OffloadError::Malformed("IPv6 version field is not 6"));
            }
            if ip.next_header() != IP_PROTO_TCP {
                return Err(OffloadError::NotTcp {
                    protocol: ip.next_header(),
                });
            }
            let plen = usize::from(ip.payload_len());
            if plen < TCP_MIN_HEADER_LEN {
                return Err(OffloadError::Malformed(
                    "IPv6 payload length shorter than a TCP header (or a jumbogram)",
                ));
            }
            let end = l3 + IPV6_HEADER_LEN + plen;
            if end > frame.len() {
                return Err(OffloadError::Truncated);
            }
            (l3 + IPV6_HEADER_LEN, end, true)
        }
        _ => return Err(OffloadError::NotIp { ethertype }),
    };
    // l4 + 20 <= end <= frame.len() was checked above.
    let doff = usize::from(frame[l4 + tcp::DATA_OFFSET] >> 4) * 4;
    if doff < TCP_MIN_HEADER_LEN {
        return Err(OffloadError::Malformed("TCP data offset below 5"));
    }
    let payload = l4 + doff;
    if payload > end {
        return Err(OffloadError::Truncated);
    }
    Ok(TcpFrame {
        l3,
        l4,
        payload,
        end,
        v6,
    })
}

/// Partial (folded, uncomplemented) sum of the TCP pseudo-header of `h` for
/// a TCP length of `tcp_len` (RFC 9293 §3.1 for IPv4, RFC 8200 §8.1 for
/// IPv6).
fn pseudo_header_sum(frame: &[u8], h: &TcpFrame, tcp_len: usize) -> u32 {
    let addrs = if h.v6 {
        &frame[h.l3 + 8..h.l3 + 40]
    } else {
        &frame[h.l3 + 12..h.l3 + 20]
    };
    // tcp_len < 2^32 always; split into 16-bit words for the sum.
    let len = tcp_len as u32;
    let s = sum(0, addrs) + (len >> 16) + (len & 0xffff) + u32::from(IP_PROTO_TCP);
    u32::from(fold(s))
}

/// What [`segment`] wrote into its output buffer.
///
/// Record `i` starts at `i * stride`: `prefix_len` bytes left untouched
/// for the caller, then the segment's complete Ethernet frame. All records
/// but the last are exactly `stride` bytes long; the last ends at
/// `total_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segmented {
    /// Number of records (at least 1).
    pub count: usize,
    /// Length of every record but the last, prefix included (with a single
    /// record, its length).
    pub stride: usize,
    /// Bytes used at the start of the output buffer.
    pub total_len: usize,
}

impl Segmented {
    /// The byte range of record `i` (prefix included) in the output buffer.
    pub fn record(&self, i: usize) -> Option<Range<usize>> {
        if i >= self.count {
            return None;
        }
        let start = i * self.stride;
        let end = if i + 1 == self.count {
            self.total_len
        } else {
            start + self.stride
        };
        Some(start..end)
    }

    /// The byte ranges of all records, in order.
    pub fn records(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.count).filter_map(move |i| self.record(i))
    }
}

/// Cuts a frame into segments ready for the wire.
///
/// `out` receives back-to-back records, each `prefix_len` bytes the caller
/// fills in afterwards (e.g. an outer VXLAN/UDP header; they are not
/// written) followed by one segment's Ethernet frame; see [`Segmented`].
/// The layout suits one UDP GSO `sendmsg` with a segment size of `stride`.
///
/// * A GSO frame (`gso_type` TCPv4 or TCPv6, optionally with the ECN bit)
///   must be Ethernet + IPv4/IPv6 + TCP and is cut into segments of at most
///   `gso_size` payload bytes with the header fixes described in the
///   [module docs](self). The checksums in the input are ignored (they may
///   be partial) and every segment gets complete, correct ones. Bytes after
///   the end of the IP datagram are dropped. `hdr_len` and the checksum
///   offsets of `offload` are not trusted; the headers are parsed.
/// * Any other frame (no GSO) is copied as a single record, of whatever
///   protocol; if `offload` says `NEEDS_CSUM` its checksum is completed
///   ([`complete_csum`]).
///
/// On error, `out` may have been partly written.
pub fn segment(
    frame: &[u8],
    offload: &Offload,
    prefix_len: usize,
    out: &mut [u8],
) -> Result<Segmented, OffloadError> {
    cut(frame, offload, prefix_len, out, Sums::Full).map(|(s, _)| s)
}

/// Where the partial checksum of every record [`segment_partial`] wrote
/// lies, from the start of the record's frame (virtio's `csum_start` and
/// `csum_offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialCsum {
    /// Start of the checksummed part (the TCP header of a segment).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

/// Like [`segment`], but leaves every checksum partial, for a receiver that
/// completes it or needs none (remote checksum offload,
/// draft-herbert-vxlan-rco): the payload is copied without being summed
/// and each TCP checksum field holds the uncomplemented pseudo-header sum
/// of its segment (what Linux keeps in a `CHECKSUM_PARTIAL` segment). The
/// IPv4 header checksums are still complete. Every other byte is what
/// [`segment`] writes.
///
/// A frame without GSO must say `NEEDS_CSUM` (otherwise there is nothing
/// partial to leave) and is copied as it is. Returns where the checksum of
/// each record lies.
pub fn segment_partial(
    frame: &[u8],
    offload: &Offload,
    prefix_len: usize,
    out: &mut [u8],
) -> Result<(Segmented, PartialCsum), OffloadError> {
    if !is_gso(offload) && !needs_csum(offload) {
        return Err(OffloadError::Malformed(
            "a frame without GSO or NEEDS_CSUM has no partial checksum",
        ));
    }
    cut(frame, offload, prefix_len, out, Sums::Partial)
}

/// Whether [`cut`] completes the TCP checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sums {
    Full,
    Partial,
}

fn cut(
    frame: &[u8],
    offload: &Offload,
    prefix_len: usize,
    out: &mut [u8],
    sums: Sums,
) -> Result<(Segmented, PartialCsum), OffloadError> {
    if !is_gso(offload) {
        let needed = prefix_len.saturating_add(frame.len());
        let available = out.len();
        let dst = out
            .get_mut(prefix_len..needed)
            .ok_or(OffloadError::OutTooSmall { needed, available })?;
        dst.copy_from_slice(frame);
        let csum = PartialCsum {
            csum_start: offload.csum_start,
            csum_offset: offload.csum_offset,
        };
        match sums {
            Sums::Full => complete_csum(dst, offload)?,
            Sums::Partial => check_csum_offsets(dst, offload)?,
        }
        let seg = Segmented {
            count: 1,
            stride: needed,
            total_len: needed,
        };
        return Ok((seg, csum));
    }

    let gso_type = offload.gso_type & !VIRTIO_NET_HDR_GSO_ECN;
    let want_v6 = match gso_type {
        VIRTIO_NET_HDR_GSO_TCPV4 => false,
        VIRTIO_NET_HDR_GSO_TCPV6 => true,
        _ => {
            return Err(OffloadError::UnsupportedGsoType {
                gso_type: offload.gso_type,
            })
        }
    };
    if offload.gso_size == 0 {
        return Err(OffloadError::ZeroGsoSize);
    }
    let h = parse_tcp(frame)?;
    if h.v6 != want_v6 {
        return Err(OffloadError::Malformed(
            "GSO type does not match the IP version",
        ));
    }

    let mss = usize::from(offload.gso_size);
    let hdr_len = h.payload;
    let payload = &frame[h.payload..h.end];
    let count = payload.len().div_ceil(mss).max(1);
    let last_payload = payload.len() - (count - 1) * mss;
    let stride = prefix_len.saturating_add(hdr_len + mss);
    let last_len = prefix_len.saturating_add(hdr_len + last_payload);
    let total_len = if count == 1 {
        last_len
    } else {
        (count - 1).saturating_mul(stride).saturating_add(last_len)
    };
    if total_len > out.len() {
        return Err(OffloadError::OutTooSmall {
            needed: total_len,
            available: out.len(),
        });
    }

    let ip_hdr_len = h.l4 - h.l3;
    let tcp_hdr_len = h.payload - h.l4;
    let id0 = get_u16(frame, h.l3 + 4).unwrap_or(0);
    let seq0 = read_u32(frame, h.l4 + tcp::SEQ);
    let flags0 = frame[h.l4 + tcp::FLAGS];

    for (i, chunk) in payload
        .chunks(mss)
        .chain(payload.is_empty().then_some(&payload[..0]))
        .enumerate()
    {
        let start = i * stride + prefix_len;
        let seg = &mut out[start..start + hdr_len + chunk.len()];
        seg[..hdr_len].copy_from_slice(&frame[..hdr_len]);
        // The payload's sum is taken as it is copied; the TCP header is
        // even-sized, so the two partial sums combine.
        let payload_sum = match sums {
            Sums::Full => copy_and_sum(0, &mut seg[hdr_len..], chunk),
            Sums::Partial => {
                seg[hdr_len..].copy_from_slice(chunk);
                0
            }
        };

        let l3 = h.l3;
        if h.v6 {
            write_u16(seg, l3 + 4, (tcp_hdr_len + chunk.len()) as u16);
        } else {
            write_u16(seg, l3 + 2, (ip_hdr_len + tcp_hdr_len + chunk.len()) as u16);
            write_u16(seg, l3 + 4, id0.wrapping_add(i as u16));
            write_u16(seg, l3 + 10, 0);
            let c = checksum(&seg[l3..h.l4]);
            write_u16(seg, l3 + 10, c);
        }

        let l4 = h.l4;
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[l4 + tcp::SEQ..l4 + tcp::SEQ + 4].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 != count {
            flags &= !(tcp::FLAG_FIN | tcp::FLAG_PSH);
        }
        if i != 0 {
            flags &= !tcp::FLAG_CWR;
        }
        seg[l4 + tcp::FLAGS] = flags;
        write_u16(seg, l4 + tcp::CHECKSUM, 0);
        let tcp_len = tcp_hdr_len + chunk.len();
        let pseudo = pseudo_header_sum(seg, &h, tcp_len);
        let c = match sums {
            Sums::Full => !fold(sum(pseudo, &seg[l4..hdr_len]) + payload_sum),
            Sums::Partial => fold(pseudo),
        };
        write_u16(seg, l4 + tcp::CHECKSUM, c);
    }

    let seg = Segmented {
        count,
        stride: if count == 1 { total_len } else { stride },
        total_len,
    };
    let csum = PartialCsum {
        csum_start: h.l4 as u16,
        csum_offset: TCP_CSUM_OFFSET,
    };
    Ok((seg, csum))
}

/// Checks that the checksum field `offload` points at lies inside `frame`.
fn check_csum_offsets(frame: &[u8], offload: &Offload) -> Result<(), OffloadError> {
    let field = usize::from(offload.csum_start) + usize::from(offload.csum_offset);
    if field + 2 > frame.len() {
        return Err(OffloadError::BadCsumOffsets {
            csum_start: offload.csum_start,
            csum_offset: offload.csum_offset,
            frame_len: frame.len(),
        });
    }
    Ok(())
}

/// Completes the partial checksum of `frame` if `offload` has
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM` (otherwise does nothing).
///
/// As virtio 1.x §5.1.6.2 and Linux's `skb_checksum_help` define it: the
/// ones' complement sum from `csum_start` to the end of the frame (the
/// checksum field holding the pseudo-header sum) is complemented and stored
/// at `csum_start + csum_offset`; a result of 0 is stored as `0xFFFF`
/// (equivalent for TCP, required for UDP, RFC 768). Works for any
/// protocol; nothing but the offsets is checked.
pub fn complete_csum(frame: &mut [u8], offload: &Offload) -> Result<(), OffloadError> {
    if !needs_csum(offload) {
        return Ok(());
    }
    check_csum_offsets(frame, offload)?;
    let start = usize::from(offload.csum_start);
    let field = start + usize::from(offload.csum_offset);
    let c = match checksum(&frame[start..]) {
        0 => 0xffff,
        c => c,
    };
    write_u16(frame, field, c);
    Ok(())
}

/// What [`Coalescer::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// The payload was appended to the flow's pending super-frame.
    Merged,
    /// The frame started a new pending super-frame (after any older one of
    /// the same flow, or the least recently started one if all slots were
    /// busy, was emitted).
    Pending,
    /// The frame cannot be coalesced; the caller forwards it as it is. Any
    /// pending super-frame of the same TCP flow has already been emitted,
    /// so forwarding it now keeps the flow in order.
    NotCoalescable,
}

/// Identity of a TCP flow (one direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    ports: [u8; 4],
}

impl FlowKey {
    fn of(frame: &[u8], h: &TcpFrame) -> FlowKey {
        let mut src = [0; 16];
        let mut dst = [0; 16];
        if h.v6 {
            src.copy_from_slice(&frame[h.l3 + 8..h.l3 + 24]);
            dst.copy_from_slice(&frame[h.l3 + 24..h.l3 + 40]);
        } else {
            src[..4].copy_from_slice(&frame[h.l3 + 12..h.l3 + 16]);
            dst[..4].copy_from_slice(&frame[h.l3 + 16..h.l3 + 20]);
        }
        let mut ports = [0; 4];
        ports.copy_from_slice(&frame[h.l4..h.l4 + 4]);
        FlowKey {
            v6: h.v6,
            src,
            dst,
            ports,
        }
    }
}

/// A pending super-frame.
#[derive(Debug, Clone, Copy)]
struct Flow {
    key: FlowKey,
    /// Header offsets in the slot's buffer; `end` is the end of the data.
    h: TcpFrame,
    /// Sequence number the next segment must have.
    next_seq: u32,
    /// Payload length of the first segment: the MSS of the super-frame.
    gso_size: usize,
    /// Segments merged so far.
    segs: u32,
    /// No more segments may be appended (one was short or had PSH).
    closed: bool,
    /// When the super-frame was started (for eviction).
    started: u64,
}

struct Slot {
    buf: Box<[u8]>,
    flow: Option<Flow>,
}

/// Receive-side TCP coalescing (software GRO).
///
/// The coalescer owns `max_flows` buffers of [`MAX_FRAME_LEN`] bytes, each
/// holding at most one pending super-frame; nothing is allocated after
/// [`Coalescer::new`]. Feed it received segments with [`push`](Self::push)
/// and call [`flush`](Self::flush) at the end of every receive batch; both
/// hand finished super-frames to an `emit` callback as a frame and the
/// virtio-net header to write it to a TAP with.
///
/// # Rules
///
/// A frame is *coalescable* if it is Ethernet (optionally VLAN-tagged) +
/// IPv4 without options and not a fragment, with a valid header checksum,
/// or IPv6 with TCP as next header; + TCP with only ACK and/or PSH among
/// the flags (no SYN, FIN, RST, URG, ECE, CWR, reserved bits), a non-empty
/// payload and a valid TCP checksum (verified here, so a corrupted segment
/// is never merged under a checksum the kernel will not check again).
/// Anything else is [`Push::NotCoalescable`].
///
/// A coalescable segment is appended to its flow's (same addresses and
/// ports) pending super-frame if
///
/// * the super-frame is not closed (a super-frame closes after a segment
///   shorter than its first one, or one with PSH, is appended: such a
///   segment must be the last),
/// * the Ethernet header and all IP header fields but the lengths, the IPv4
///   identification and header checksum are equal,
/// * the TCP headers are equal but for the sequence number, the checksum
///   and PSH (same acknowledgment number, window, options such as
///   timestamps),
/// * its sequence number is the one following the super-frame's data,
/// * its payload is no longer than the first segment's, and
/// * the super-frame's IP length (IPv4 total length, IPv6 payload length)
///   stays within 65535 bytes.
///
/// Otherwise the pending super-frame is emitted and the segment starts a
/// new one. The IPv4 identification of a super-frame is its first
/// segment's; later segments' IDs are not kept (the kernel numbers the
/// segments of a forwarded super-frame from the first ID upward anyway).
///
/// # Emitted frames
///
/// The IPv4 total length and header checksum or the IPv6 payload length
/// are updated; the TCP checksum field holds the pseudo-header sum and the
/// header says `NEEDS_CSUM` with `csum_start` at the TCP header and
/// `csum_offset` 16, as the kernel expects of a `CHECKSUM_PARTIAL` frame.
/// If more than one segment was merged, `gso_type` is TCPv4 or TCPv6 and
/// `gso_size` the first segment's payload length; otherwise `gso_type` is
/// `GSO_NONE` and `gso_size` 0. `hdr_len` is the length of the Ethernet, IP
/// and TCP headers.
pub struct Coalescer {
    slots: Box<[Slot]>,
    clock: u64,
}

impl Coalescer {
    /// A coalescer with room for `max_flows` pending super-frames. With 0,
    /// every frame is [`Push::NotCoalescable`].
    pub fn new(max_flows: usize) -> Self {
        let slots = (0..max_flows)
            .map(|_| Slot {
                buf: vec![0; MAX_FRAME_LEN].into_boxed_slice(),
                flow: None,
            })
            .collect();
        Coalescer { slots, clock: 0 }
    }

    /// How many super-frames it can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many super-frames are pending.
    pub fn pending(&self) -> usize {
        self.slots.iter().filter(|s| s.flow.is_some()).count()
    }

    /// Takes one received, complete segment (see the [rules](Self)).
    ///
    /// `emit` receives the super-frames that must leave before this frame
    /// can be handled: the flow's pending one when the frame does not
    /// continue it (or is not coalescable), or the oldest pending one when
    /// a new flow needs a slot and none is free.
    pub fn push<F: FnMut(&mut [u8], &Offload)>(&mut self, frame: &[u8], emit: F) -> Push {
        self.push_with(frame, None, emit)
    }

    /// Takes one received segment whose TCP checksum was left partial at
    /// `csum` (remote checksum offload: the field holds the pseudo-header
    /// sum and the outer UDP checksum covered the data). It is merged
    /// under the same rules as [`push`](Self::push) without its checksum
    /// being summed, since the super-frame leaves with `NEEDS_CSUM` anyway.
    /// A checksum anywhere but the segment's TCP checksum field makes it
    /// [`Push::NotCoalescable`].
    pub fn push_partial<F: FnMut(&mut [u8], &Offload)>(
        &mut self,
        frame: &[u8],
        csum: PartialCsum,
        emit: F,
    ) -> Push {
        self.push_with(frame, Some(csum), emit)
    }

    fn push_with<F: FnMut(&mut [u8], &Offload)>(
        &mut self,
        frame: &[u8],
        partial: Option<PartialCsum>,
        mut emit: F,
    ) -> Push {
        let Ok(h) = parse_tcp(frame) else {
            return Push::NotCoalescable;
        };
        let key = FlowKey::of(frame, &h);
        let existing = self
            .slots
            .iter()
            .position(|s| s.flow.is_some_and(|f| f.key == key));

        let at_tcp =
            |c: PartialCsum| usize::from(c.csum_start) == h.l4 && c.csum_offset == TCP_CSUM_OFFSET;
        let verify = partial.is_none();
        let psh = match coalescable(frame, &h) {
            Some(psh) if partial.is_none_or(at_tcp) => psh,
            _ => {
                if let Some(i) = existing {
                    self.slots[i].emit(&mut emit);
                }
                return Push::NotCoalescable;
            }
        };

        let i = match existing {
            Some(i) => match self.slots[i].try_append(frame, &h, psh, verify) {
                Append::Appended => return Push::Merged,
                Append::BadChecksum => {
                    // Leave it to the receiving stack to drop, after the
                    // data that came before it.
                    self.slots[i].emit(&mut emit);
                    return Push::NotCoalescable;
                }
                Append::NoFit => {
                    self.slots[i].emit(&mut emit);
                    i
                }
            },
            None => match self.slots.iter().position(|s| s.flow.is_none()) {
                Some(i) => i,
                None => {
                    let Some(i) = self
                        .slots
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.flow.map_or(0, |f| f.started))
                        .map(|(i, _)| i)
                    else {
                        return Push::NotCoalescable;
                    };
                    self.slots[i].emit(&mut emit);
                    i
                }
            },
        };
        self.clock += 1;
        if !self.slots[i].start(frame, &h, key, psh, self.clock, verify) {
            return Push::NotCoalescable;
        }
        Push::Pending
    }

    /// Emits every pending super-frame and empties the coalescer.
    pub fn flush<F: FnMut(&mut [u8], &Offload)>(&mut self, mut emit: F) {
        for slot in self.slots.iter_mut() {
            slot.emit(&mut emit);
        }
    }
}

/// Whether a parsed frame may be coalesced (see [`Coalescer`]); returns
/// whether it has PSH.
fn coalescable(frame: &[u8], h: &TcpFrame) -> Option<bool> {
    if h.end > MAX_FRAME_LEN || h.end == h.payload {
        return None;
    }
    if !h.v6 && (h.l4 - h.l3 != IPV4_MIN_HEADER_LEN || checksum(&frame[h.l3..h.l4]) != 0) {
        return None;
    }
    if frame[h.l4 + tcp::DATA_OFFSET] & 0x0f != 0 {
        return None;
    }
    let flags = frame[h.l4 + tcp::FLAGS];
    if flags & !(tcp::FLAG_ACK | tcp::FLAG_PSH) != 0 {
        return None;
    }
    // The TCP checksum is verified as the segment is copied in
    // (`Slot::start`, `Slot::try_append`), not in a pass of its own.
    Some(flags & tcp::FLAG_PSH != 0)
}

/// What [`Slot::try_append`] did with a segment.
enum Append {
    Appended,
    /// It does not continue the pending super-frame.
    NoFit,
    /// It continues it but its TCP checksum is wrong.
    BadChecksum,
}

impl Slot {
    /// Starts a super-frame with `frame`; false (and the slot stays free)
    /// when its TCP checksum is to be verified and does not.
    fn start(
        &mut self,
        frame: &[u8],
        h: &TcpFrame,
        key: FlowKey,
        psh: bool,
        now: u64,
        verify: bool,
    ) -> bool {
        self.buf[..h.l4].copy_from_slice(&frame[..h.l4]);
        if verify {
            let pseudo = pseudo_header_sum(frame, h, h.end - h.l4);
            let total = copy_and_sum(pseudo, &mut self.buf[h.l4..h.end], &frame[h.l4..h.end]);
            if fold(total) != 0xffff {
                return false;
            }
        } else {
            self.buf[h.l4..h.end].copy_from_slice(&frame[h.l4..h.end]);
        }
        let gso_size = h.end - h.payload;
        self.flow = Some(Flow {
            key,
            h: *h,
            next_seq: read_u32(frame, h.l4 + tcp::SEQ).wrapping_add(gso_size as u32),
            gso_size,
            segs: 1,
            closed: psh,
            started: now,
        });
        true
    }

    /// Appends the segment if it continues the pending super-frame and its
    /// TCP checksum verifies (or is not to be verified).
    fn try_append(&mut self, frame: &[u8], h: &TcpFrame, psh: bool, verify: bool) -> Append {
        let Some(f) = self.flow.as_mut() else {
            return Append::NoFit;
        };
        let plen = h.end - h.payload;
        let ip_len = f.h.end - f.h.l3 - if f.h.v6 { IPV6_HEADER_LEN } else { 0 };
        if f.closed
            || (h.l3, h.l4, h.payload) != (f.h.l3, f.h.l4, f.h.payload)
            || plen > f.gso_size
            || ip_len + plen > MAX_IP_LEN
            || f.h.end + plen > self.buf.len()
            || read_u32(frame, h.l4 + tcp::SEQ) != f.next_seq
        {
            return Append::NoFit;
        }
        let buf = &self.buf;
        let (l3, l4) = (h.l3, h.l4);
        let same = |r: Range<usize>| buf[r.clone()] == frame[r];
        let ip_same = if h.v6 {
            same(l3..l3 + 4) && same(l3 + 6..l3 + IPV6_HEADER_LEN)
        } else {
            same(l3..l3 + 2) && same(l3 + 6..l3 + 10) && same(l3 + 12..l3 + 20)
        };
        let tcp_same = same(l4..l4 + tcp::SEQ)
            && same(l4 + 8..l4 + tcp::FLAGS)
            && (buf[l4 + tcp::FLAGS] ^ frame[l4 + tcp::FLAGS]) & !tcp::FLAG_PSH == 0
            && same(l4 + tcp::WINDOW..l4 + tcp::CHECKSUM)
            && same(l4 + tcp::URGENT..h.payload);
        if !(same(0..l3) && ip_same && tcp_same) {
            return Append::NoFit;
        }
        // Copy the payload past the pending end and verify as it goes; only
        // a good segment moves the end, so a bad one leaves no trace.
        let dst = &mut self.buf[f.h.end..f.h.end + plen];
        let src = &frame[h.payload..h.end];
        if !verify {
            dst.copy_from_slice(src);
        } else {
            let payload_sum = copy_and_sum(0, dst, src);
            let pseudo = pseudo_header_sum(frame, h, h.end - h.l4);
            if fold(sum(pseudo, &frame[h.l4..h.payload]) + payload_sum) != 0xffff {
                return Append::BadChecksum;
            }
        }
        f.h.end += plen;
        f.next_seq = f.next_seq.wrapping_add(plen as u32);
        f.segs += 1;
        if psh {
            self.buf[l4 + tcp::FLAGS] |= tcp::FLAG_PSH;
        }
        f.closed = psh || plen < f.gso_size;
        Append::Appended
    }

    /// Finishes the pending super-frame, if any, hands it to `emit` and
    /// frees the slot.
    fn emit<F: FnMut(&mut [u8], &Offload)>(&mut self, emit: &mut F) {
        let Some(f) = self.flow.take() else {
            return;
        };
        let h = f.h;
        let frame = &mut self.buf[..h.end];
        if h.v6 {
            write_u16(frame, h.l3 + 4, (h.end - h.l4) as u16);
        } else {
            write_u16(frame, h.l3 + 2, (h.end - h.l3) as u16);
            write_u16(frame, h.l3 + 10, 0);
            let c = checksum(&frame[h.l3..h.l4]);
            write_u16(frame, h.l3 + 10, c);
        }
        let partial = fold(pseudo_header_sum(frame, &h, h.end - h.l4));
        write_u16(frame, h.l4 + tcp::CHECKSUM, partial);
        let gso = f.segs > 1;
        let offload = Offload {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: match (gso, h.v6) {
                (false, _) => VIRTIO_NET_HDR_GSO_NONE,
                (true, false) => VIRTIO_NET_HDR_GSO_TCPV4,
                (true, true) => VIRTIO_NET_HDR_GSO_TCPV6,
            },
            hdr_len: h.payload as u16,
            gso_size: if gso { f.gso_size as u16 } else { 0 },
            csum_start: h.l4 as u16,
            csum_offset: TCP_CSUM_OFFSET,
            num_buffers: 0,
        };
        emit(frame, &offload);
    }
}
