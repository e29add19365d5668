//! The TCP side of one flow, with no I/O: sequence numbers, windows and
//! the decisions the socket uplink acts on (RFC 9293 §3.3–3.10), for a
//! connection whose other half is a host TCP socket.
//!
//! weft does not run a TCP stack. The host socket does the real TCP with
//! the far side; towards the endpoint weft only has to be a well-behaved
//! peer:
//!
//! * endpoint → host: a segment at `rcv_nxt` is written to the host socket
//!   and only what the socket accepted is acknowledged; the advertised
//!   window is the socket's free send space, so the endpoint's own
//!   retransmission covers anything the socket refused;
//! * host → endpoint: data is peeked out of the host socket's receive
//!   queue (the queue is the retransmission buffer) in super-frames of up
//!   to 64 KiB, within the endpoint's window; acknowledged bytes are then
//!   discarded from the queue; a timeout or three duplicate ACKs (RFC 5681
//!   §3.2) rewind to the oldest unacknowledged byte.
//!
//! Options: MSS (RFC 9293 §3.7.1) and window scale (RFC 7323 §2) only; no
//! SACK, no timestamps.

use weft_packet::IP_PROTO_TCP;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// The window scale weft offers when the endpoint offers one: windows up
/// to 8 MiB.
pub const OUR_WSCALE: u8 = 7;
/// The MSS weft announces: whatever the endpoint's link carries, it
/// segments; weft's side takes super-frames.
pub const OUR_MSS: u16 = 65495;
/// MSS assumed when the endpoint announces none (RFC 9293 §3.7.1).
pub const DEFAULT_MSS: u16 = 536;
/// Duplicate ACKs that trigger a retransmission (RFC 5681 §3.2).
pub const DUP_ACK_THRESHOLD: u8 = 3;

/// `a < b` in sequence space (RFC 9293 §3.4).
#[inline]
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in sequence space.
#[inline]
pub fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// The fields of a TCP segment weft looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Where the payload starts in the TCP segment.
    pub payload_off: usize,
    pub payload_len: usize,
    /// The MSS option, if present.
    pub mss: Option<u16>,
    /// The window scale option, if present (clamped to 14, RFC 7323 §2.3).
    pub wscale: Option<u8>,
}

/// Why a TCP segment was not parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("TCP segment shorter than its header")]
    Truncated,
    #[error("TCP data offset below 5 words or past the segment")]
    BadOffset,
}

impl Segment {
    /// Parses the TCP header at the start of `tcp` (the whole segment).
    pub fn parse(tcp: &[u8]) -> Result<Segment, SegmentError> {
        if tcp.len() < 20 {
            return Err(SegmentError::Truncated);
        }
        let doff = usize::from(tcp[12] >> 4) * 4;
        if doff < 20 || doff > tcp.len() {
            return Err(SegmentError::BadOffset);
        }
        let be16 = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
        let mut seg = Segment {
            src_port: be16(0),
            dst_port: be16(2),
            seq: be32(4),
            ack: be32(8),
            flags: tcp[13],
            window: be16(14),
            payload_off: doff,
            payload_len: tcp.len() - doff,
            mss: None,
            wscale: None,
        };
        // Options (RFC 9293 §3.1): kind, length, value; 0 ends, 1 pads.
        let opts = &tcp[20..doff];
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                0 => break,
                1 => i += 1,
                kind => {
                    let Some(&len) = opts.get(i + 1) else { break };
                    let len = usize::from(len);
                    if len < 2 || i + len > opts.len() {
                        break;
                    }
                    match (kind, len) {
                        (2, 4) => seg.mss = Some(u16::from_be_bytes([opts[i + 2], opts[i + 3]])),
                        (3, 3) => seg.wscale = Some(opts[i + 2].min(14)),
                        _ => {}
                    }
                    i += len;
                }
            }
        }
        Ok(seg)
    }

    /// Sequence space the segment takes: data, plus one for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        self.payload_len as u32
            + u32::from(self.flags & SYN != 0)
            + u32::from(self.flags & FIN != 0)
    }
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The endpoint's SYN is in; the host socket is connecting.
    Connecting,
    /// weft sent a SYN to the endpoint (a published port's connection) and
    /// waits for its SYN-ACK.
    SynSent,
    /// Data flows.
    Established,
}

/// What to do with a segment from the endpoint, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rx {
    /// Data bytes the endpoint newly acknowledged: discard them from the
    /// host socket's receive queue.
    pub acked: u32,
    /// The endpoint's window grew or data was acknowledged: more may be
    /// sent.
    pub may_send: bool,
    /// Payload bytes to write to the host socket: `payload[skip..]`. Call
    /// [`TcpConn::accepted`] with what the socket took.
    pub write: Option<usize>,
    /// The endpoint's FIN is next once the write is complete: call
    /// [`TcpConn::fin_from_endpoint`] and shut the socket's write side.
    pub fin: bool,
    /// The segment took sequence space (or was out of place): answer with
    /// an ACK.
    pub ack_now: bool,
    /// Rewind the host → endpoint stream to the oldest unacknowledged byte
    /// (fast retransmit): set the peek offset to 0.
    pub rewind: bool,
    /// The endpoint reset the connection: close the socket, forget the flow.
    pub reset: bool,
    /// The endpoint completed a handshake weft started: send an ACK and
    /// start moving data.
    pub established: bool,
    /// The endpoint repeated its SYN: send the SYN-ACK again.
    pub syn_ack: bool,
}

/// One connection's TCP state; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConn {
    pub phase: Phase,
    /// weft's initial sequence number (its SYN's).
    pub iss: u32,
    /// Next sequence number expected from the endpoint.
    pub rcv_nxt: u32,
    /// Oldest byte sent to the endpoint and not acknowledged.
    pub snd_una: u32,
    /// Next sequence number to send to the endpoint.
    pub snd_nxt: u32,
    /// The endpoint's window in bytes, from `snd_una`.
    pub snd_wnd: u32,
    /// Shift for the endpoint's advertised windows.
    pub peer_wscale: u8,
    /// Shift for the windows weft advertises (0 without the option).
    pub our_wscale: u8,
    /// The endpoint's MSS: the segment size of super-frames towards it.
    pub mss: u16,
    /// The endpoint sent FIN (it was written through as a shutdown).
    pub fin_in: bool,
    /// weft sent FIN (the host socket reached end of stream).
    pub fin_out: bool,
    dup_acks: u8,
}

impl TcpConn {
    /// State for an endpoint's SYN (`seg`), weft's initial sequence number
    /// being `iss`.
    pub fn accept_syn(seg: &Segment, iss: u32) -> TcpConn {
        let (peer_wscale, our_wscale) = match seg.wscale {
            Some(s) => (s, OUR_WSCALE),
            None => (0, 0),
        };
        TcpConn {
            phase: Phase::Connecting,
            iss,
            rcv_nxt: seg.seq.wrapping_add(1),
            snd_una: iss,
            snd_nxt: iss,
            // A SYN's window is never scaled (RFC 7323 §2.2).
            snd_wnd: u32::from(seg.window),
            peer_wscale,
            our_wscale,
            mss: seg.mss.unwrap_or(DEFAULT_MSS).max(64),
            fin_in: false,
            fin_out: false,
            dup_acks: 0,
        }
    }

    /// State for a connection weft opens towards the endpoint (a published
    /// port): send [`TcpConn::syn`] with `iss`.
    pub fn connect(iss: u32) -> TcpConn {
        TcpConn {
            phase: Phase::SynSent,
            iss,
            rcv_nxt: 0,
            snd_una: iss,
            snd_nxt: iss.wrapping_add(1),
            snd_wnd: 0,
            peer_wscale: 0,
            our_wscale: OUR_WSCALE,
            mss: DEFAULT_MSS,
            fin_in: false,
            fin_out: false,
            dup_acks: 0,
        }
    }

    /// The host socket connected: answer the endpoint's SYN with SYN-ACK
    /// (sequence number [`TcpConn::syn_seq`]) and be established. The SYN
    /// is taken as acknowledged at once: if it is lost, the endpoint
    /// repeats its SYN and gets it again ([`Rx::syn_ack`]).
    pub fn connected(&mut self) {
        self.phase = Phase::Established;
        self.snd_una = self.iss.wrapping_add(1);
        self.snd_nxt = self.snd_una;
    }

    /// The sequence number of weft's SYN.
    pub fn syn_seq(&self) -> u32 {
        self.iss
    }

    /// The window field to advertise for `free` bytes of room.
    pub fn window_field(&self, free: usize) -> u16 {
        let max = usize::from(u16::MAX) << self.our_wscale;
        (free.min(max) >> self.our_wscale) as u16
    }

    /// Bytes that may be sent to the endpoint now: its window minus what
    /// is in flight. Nothing before the handshake or after FIN.
    pub fn send_room(&self) -> usize {
        if self.phase != Phase::Established || self.fin_out {
            return 0;
        }
        let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
        self.snd_wnd.saturating_sub(in_flight) as usize
    }

    /// Bytes sent and not yet acknowledged (the host socket's peek offset).
    pub fn in_flight(&self) -> u32 {
        self.snd_nxt.wrapping_sub(self.snd_una)
    }

    /// `n` data bytes were sent to the endpoint at `snd_nxt`.
    pub fn sent(&mut self, n: usize) {
        self.snd_nxt = self.snd_nxt.wrapping_add(n as u32);
    }

    /// FIN was sent to the endpoint at `snd_nxt`.
    pub fn sent_fin(&mut self) {
        self.fin_out = true;
        self.snd_nxt = self.snd_nxt.wrapping_add(1);
    }

    /// Send again from the oldest unacknowledged byte (a FIN not yet
    /// acknowledged is resent too, by the data path seeing end of stream).
    pub fn rewind(&mut self) {
        self.snd_nxt = self.snd_una;
        self.fin_out = false;
        self.dup_acks = 0;
    }

    /// The host socket took `n` bytes of the endpoint's data.
    pub fn accepted(&mut self, n: usize) {
        self.rcv_nxt = self.rcv_nxt.wrapping_add(n as u32);
    }

    /// The endpoint's FIN was passed on.
    pub fn fin_from_endpoint(&mut self) {
        self.fin_in = true;
        self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
    }

    /// Both directions are finished and weft's FIN was acknowledged.
    pub fn closed(&self) -> bool {
        self.fin_in && self.fin_out && self.snd_una == self.snd_nxt
    }

    /// Takes a segment from the endpoint; see [`Rx`].
    pub fn on_segment(&mut self, seg: &Segment) -> Rx {
        let mut rx = Rx::default();
        if seg.flags & RST != 0 {
            // RFC 5961 §3.2 would ask for an exact match; the endpoint is
            // ours and local, so any RST in the window closes.
            rx.reset = true;
            return rx;
        }
        match self.phase {
            Phase::Connecting => {
                // A retransmitted SYN while the host connects: nothing yet.
                return rx;
            }
            Phase::SynSent => {
                let want = self.snd_una.wrapping_add(1);
                if seg.flags & (SYN | ACK) != SYN | ACK || seg.ack != want {
                    rx.reset = seg.flags & SYN == 0;
                    return rx;
                }
                self.rcv_nxt = seg.seq.wrapping_add(1);
                self.snd_una = want;
                self.snd_nxt = want;
                match seg.wscale {
                    Some(s) => self.peer_wscale = s,
                    None => self.our_wscale = 0,
                }
                self.snd_wnd = u32::from(seg.window);
                self.mss = seg.mss.unwrap_or(DEFAULT_MSS).max(64);
                self.phase = Phase::Established;
                rx.established = true;
                rx.ack_now = true;
                rx.may_send = true;
                return rx;
            }
            Phase::Established => {}
        }
        if seg.flags & SYN != 0 {
            // Our SYN-ACK was lost: the endpoint repeats its SYN.
            if seg.flags & ACK == 0 && seg.seq.wrapping_add(1) == self.rcv_nxt {
                rx.syn_ack = true;
            } else {
                rx.ack_now = true;
            }
            return rx;
        }
        if seg.flags & ACK != 0 {
            let ack = seg.ack;
            let wnd = u32::from(seg.window) << self.peer_wscale;
            if seq_lt(self.snd_una, ack) && seq_le(ack, self.snd_nxt) {
                let mut n = ack.wrapping_sub(self.snd_una);
                // A FIN takes one number that is no data byte.
                if self.fin_out && ack == self.snd_nxt {
                    n -= 1;
                }
                rx.acked = n;
                self.snd_una = ack;
                self.dup_acks = 0;
                rx.may_send = true;
            } else if ack == self.snd_una
                && seg.payload_len == 0
                && seg.flags & FIN == 0
                && wnd == self.snd_wnd
                && self.snd_nxt != self.snd_una
            {
                self.dup_acks = self.dup_acks.saturating_add(1);
                if self.dup_acks == DUP_ACK_THRESHOLD {
                    rx.rewind = true;
                    self.rewind();
                }
            }
            if wnd > self.snd_wnd {
                rx.may_send = true;
            }
            if seq_le(self.snd_una, ack) {
                self.snd_wnd = wnd;
            }
        }
        let len = seg.payload_len as u32;
        if len > 0 || seg.flags & FIN != 0 {
            rx.ack_now = true;
        }
        if self.fin_in {
            return rx;
        }
        // Where the new data starts within this segment's payload.
        let skip = self.rcv_nxt.wrapping_sub(seg.seq);
        if seq_le(seg.seq, self.rcv_nxt) && skip <= len {
            if skip < len {
                rx.write = Some(skip as usize);
            }
            rx.fin = seg.flags & FIN != 0;
        }
        rx
    }
}

/// Writes a 20-byte TCP header (24 with `mss`, 28 with `mss` and a window
/// scale) at the start of `out`; the checksum field is left zero. Returns
/// the header length.
#[allow(clippy::too_many_arguments)]
pub fn write_header(
    out: &mut [u8],
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    syn_opts: Option<(u16, Option<u8>)>,
) -> usize {
    let len = match syn_opts {
        None => 20,
        Some((_, None)) => 24,
        Some((_, Some(_))) => 28,
    };
    out[0..2].copy_from_slice(&src_port.to_be_bytes());
    out[2..4].copy_from_slice(&dst_port.to_be_bytes());
    out[4..8].copy_from_slice(&seq.to_be_bytes());
    out[8..12].copy_from_slice(&ack.to_be_bytes());
    out[12] = ((len / 4) as u8) << 4;
    out[13] = flags;
    out[14..16].copy_from_slice(&window.to_be_bytes());
    out[16..20].fill(0);
    if let Some((mss, wscale)) = syn_opts {
        out[20] = 2;
        out[21] = 4;
        out[22..24].copy_from_slice(&mss.to_be_bytes());
        if let Some(s) = wscale {
            out[24] = 1;
            out[25] = 3;
            out[26] = 3;
            out[27] = s;
        }
    }
    len
}

/// The IP protocol number this module speaks.
pub const PROTO: u8 = IP_PROTO_TCP;

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(seq: u32) -> Segment {
        Segment {
            src_port: 40000,
            dst_port: 80,
            seq,
            flags: SYN,
            window: 64240,
            mss: Some(1460),
            wscale: Some(7),
            ..Segment::default()
        }
    }

    fn established() -> TcpConn {
        let mut c = TcpConn::accept_syn(&syn(1000), 5000);
        c.connected();
        // The endpoint ACKs the SYN-ACK with a 1 MiB window.
        let rx = c.on_segment(&Segment {
            seq: 1001,
            ack: 5001,
            flags: ACK,
            window: 8192,
            ..Segment::default()
        });
        assert!(!rx.ack_now && rx.write.is_none());
        assert_eq!(rx.acked, 0, "the SYN is no data");
        c
    }

    #[test]
    fn parses_header_and_options() {
        let mut b = [0u8; 40];
        let n = write_header(&mut b, 1, 2, 3, 4, SYN | ACK, 500, Some((1460, Some(7))));
        assert_eq!(n, 28);
        let s = Segment::parse(&b[..n + 12]).unwrap();
        assert_eq!((s.src_port, s.dst_port, s.seq, s.ack), (1, 2, 3, 4));
        assert_eq!(
            (s.flags, s.window, s.mss, s.wscale),
            (SYN | ACK, 500, Some(1460), Some(7))
        );
        assert_eq!((s.payload_off, s.payload_len), (28, 12));
        assert_eq!(s.seq_len(), 13);
        assert_eq!(Segment::parse(&b[..19]), Err(SegmentError::Truncated));
        b[12] = 0x40; // data offset 16 bytes
        assert_eq!(Segment::parse(&b), Err(SegmentError::BadOffset));
        b[12] = 0xf0; // 60 bytes, past a 40-byte segment
        assert_eq!(Segment::parse(&b), Err(SegmentError::BadOffset));
    }

    #[test]
    fn handshake_scales_windows() {
        let c = established();
        assert_eq!(c.phase, Phase::Established);
        assert_eq!(c.snd_wnd, 8192 << 7);
        assert_eq!(c.mss, 1460);
        assert_eq!(c.window_field(1 << 20), ((1u32 << 20) >> OUR_WSCALE) as u16);
        assert_eq!(c.window_field(usize::MAX), u16::MAX);
        let mut plain = syn(1);
        plain.wscale = None;
        let c = TcpConn::accept_syn(&plain, 1);
        assert_eq!(
            c.window_field(1 << 20),
            u16::MAX,
            "no scaling without the option"
        );
    }

    #[test]
    fn writes_in_order_data_and_acks_only_what_was_taken() {
        let mut c = established();
        let seg = Segment {
            seq: 1001,
            ack: 5001,
            flags: ACK | PSH,
            window: 8192,
            payload_len: 3000,
            ..Segment::default()
        };
        let rx = c.on_segment(&seg);
        assert_eq!(rx.write, Some(0));
        assert!(rx.ack_now);
        c.accepted(1000); // the socket took a third
        assert_eq!(c.rcv_nxt, 2001);
        // The endpoint retransmits the whole segment: the tail is new.
        let rx = c.on_segment(&seg);
        assert_eq!(rx.write, Some(1000));
        c.accepted(2000);
        // An old duplicate: nothing to write, but ACK it.
        let rx = c.on_segment(&seg);
        assert_eq!(rx.write, None);
        assert!(rx.ack_now);
        // A segment from the future (a gap): nothing written.
        let rx = c.on_segment(&Segment {
            seq: 9000,
            payload_len: 10,
            ..seg
        });
        assert_eq!(rx.write, None);
        assert!(rx.ack_now);
    }

    #[test]
    fn fin_only_after_all_data() {
        let mut c = established();
        let seg = Segment {
            seq: 1001,
            ack: 5001,
            flags: ACK | FIN,
            window: 8192,
            payload_len: 10,
            ..Segment::default()
        };
        let rx = c.on_segment(&seg);
        assert_eq!((rx.write, rx.fin), (Some(0), true));
        c.accepted(10);
        c.fin_from_endpoint();
        assert_eq!(c.rcv_nxt, 1001 + 11);
        let rx = c.on_segment(&seg);
        assert_eq!((rx.write, rx.fin), (None, false), "FIN taken once");
    }

    #[test]
    fn acks_windows_and_fast_retransmit() {
        let mut c = established();
        assert_eq!(c.send_room(), 8192 << 7);
        c.sent(60000);
        c.sent(60000);
        assert_eq!(c.in_flight(), 120000);
        let ack = |c: &mut TcpConn, ack: u32, window: u16| {
            c.on_segment(&Segment {
                seq: 1001,
                ack,
                flags: ACK,
                window,
                ..Segment::default()
            })
        };
        let rx = ack(&mut c, 5001 + 60000, 8192);
        assert_eq!(rx.acked, 60000);
        assert!(rx.may_send);
        // An ACK beyond what was sent is ignored.
        let rx = ack(&mut c, 5001 + 999_999, 8192);
        assert_eq!(rx.acked, 0);
        // Three duplicates rewind.
        assert!(!ack(&mut c, 5001 + 60000, 8192).rewind);
        assert!(!ack(&mut c, 5001 + 60000, 8192).rewind);
        assert!(ack(&mut c, 5001 + 60000, 8192).rewind);
        assert_eq!(c.in_flight(), 0);
        // A window update is not a duplicate, and opens room.
        c.sent(100);
        let rx = ack(&mut c, 5001 + 60000, 9000);
        assert!(rx.may_send && !rx.rewind);
        assert_eq!(c.snd_wnd, 9000 << 7);
    }

    #[test]
    fn fin_out_and_close() {
        let mut c = established();
        c.sent(10);
        c.sent_fin();
        assert_eq!(c.send_room(), 0);
        let rx = c.on_segment(&Segment {
            seq: 1001,
            ack: 5001 + 11,
            flags: ACK | FIN,
            window: 100,
            ..Segment::default()
        });
        assert_eq!(rx.acked, 10, "the FIN is no data byte");
        assert!(rx.fin);
        c.fin_from_endpoint();
        assert!(c.closed());
    }

    #[test]
    fn active_open_for_published_ports() {
        let mut c = TcpConn::connect(77);
        assert_eq!(c.syn_seq(), 77);
        assert_eq!(c.send_room(), 0);
        // Wrong ACK: reset only if it is no SYN.
        let rx = c.on_segment(&Segment {
            seq: 9,
            ack: 1,
            flags: ACK,
            ..Segment::default()
        });
        assert!(rx.reset);
        let rx = c.on_segment(&Segment {
            seq: 9,
            ack: 78,
            flags: SYN | ACK,
            window: 1000,
            mss: Some(1460),
            wscale: Some(2),
            ..Segment::default()
        });
        assert!(rx.established && rx.ack_now);
        assert_eq!(
            (c.rcv_nxt, c.snd_una, c.snd_wnd, c.mss),
            (10, 78, 1000, 1460)
        );
        assert_eq!(c.peer_wscale, 2);
    }

    #[test]
    fn repeated_syn_gets_the_syn_ack_again() {
        let mut c = established();
        let rx = c.on_segment(&syn(1000));
        assert!(rx.syn_ack && !rx.ack_now);
        assert_eq!(c.syn_seq(), 5000);
    }

    #[test]
    fn reset_closes() {
        let mut c = established();
        assert!(
            c.on_segment(&Segment {
                flags: RST,
                ..Segment::default()
            })
            .reset
        );
    }

    #[test]
    fn sequence_comparisons_wrap() {
        assert!(seq_lt(u32::MAX - 1, 3));
        assert!(!seq_lt(3, u32::MAX - 1));
        assert!(seq_le(5, 5));
    }
}
