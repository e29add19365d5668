//! DNS wire format: parsing queries and building responses.
//!
//! Messages follow RFC 1035 §4.1: a 12-byte header (§4.1.1), then the
//! question (§4.1.2), answer, authority and additional sections (§4.1.3).
//! Domain names may be compressed with pointers (§4.1.4); the parser
//! follows them defensively:
//!
//! - every read is bounds-checked, and a pointer whose target lies past the
//!   end of the message is [`WireError::PointerOutOfBounds`];
//! - the start of a name and every pointer target are remembered, and
//!   jumping to one of them again is [`WireError::PointerLoop`], as is
//!   following more than [`MAX_POINTER_HOPS`] pointers for one name;
//! - the uncompressed name may not exceed 255 bytes (§2.3.4), and the
//!   reserved label types `0b01` and `0b10` are rejected.
//!
//! Malformed input always yields a typed [`WireError`]; the parser never
//! panics (a property test feeds it random bytes).
//!
//! Responses copy the question, echo the ID, opcode, RD and CD bits, set
//! QR and RA, and set AA for answers weft gives from its own table.
//! Answer records name their owner with a compression pointer to the
//! question name at offset 12 (`0xC00C`).
//!
//! # EDNS(0)
//!
//! An OPT pseudo-record (RFC 6891) in the additional section is parsed and
//! validated (at most one, owned by the root name, options well framed).
//! When the query carried one, every response built here echoes a minimal
//! OPT: no options, the DO bit copied from the query (RFC 3225 §3), and an
//! advertised UDP payload size of [`EDNS_UDP_PAYLOAD`] (1232 bytes, the
//! DNS flag day 2020 recommendation). A query with an EDNS version other
//! than 0 gets BADVERS (RFC 6891 §6.1.3). Without EDNS a UDP response is
//! at most [`MAX_UDP_LEN`] (512) bytes (RFC 1035 §4.2.1); with EDNS it is
//! at most the smaller of the client's advertised size (never less than
//! 512) and 1232. When the answers do not all fit, as many whole records
//! as fit are kept and TC is set (RFC 2181 §9), so the client retries over
//! TCP (see [`crate::tcp`]).
//!
//! # TTLs
//!
//! RFC 2181 §8: a TTL is an unsigned 32-bit value whose most significant
//! bit must be zero; larger TTLs given to the builders are clamped to
//! [`MAX_TTL`].

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

/// Length of the fixed DNS header (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;
/// Largest UDP response without EDNS (RFC 1035 §4.2.1).
pub const MAX_UDP_LEN: usize = 512;
/// Largest message over TCP: the 2-byte length prefix (RFC 1035 §4.2.2).
pub const MAX_TCP_LEN: usize = 65535;
/// The UDP payload size this server advertises and honours at most.
pub const EDNS_UDP_PAYLOAD: u16 = 1232;
/// Largest uncompressed name on the wire, including the root label.
pub const MAX_NAME_LEN: usize = 255;
/// Largest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Most compression pointers followed while reading one name.
pub const MAX_POINTER_HOPS: usize = 32;
/// Default TTL of local answers, in seconds (as Docker's embedded DNS).
pub const DEFAULT_TTL: u32 = 600;
/// Largest TTL allowed on the wire (RFC 2181 §8).
pub const MAX_TTL: u32 = i32::MAX as u32;
/// The standard query opcode; the only one answered.
pub const OPCODE_QUERY: u8 = 0;

/// Resource record types used by this crate.
pub mod rtype {
    /// IPv4 host address.
    pub const A: u16 = 1;
    /// Authoritative name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Domain name pointer (reverse lookups).
    pub const PTR: u16 = 12;
    /// Mail exchange.
    pub const MX: u16 = 15;
    /// Text strings.
    pub const TXT: u16 = 16;
    /// IPv6 host address.
    pub const AAAA: u16 = 28;
    /// EDNS(0) pseudo-record (RFC 6891).
    pub const OPT: u16 = 41;
    /// Any type (QTYPE `*`).
    pub const ANY: u16 = 255;
}

/// Classes used by this crate.
pub mod class {
    /// The Internet.
    pub const IN: u16 = 1;
    /// Any class (QCLASS `*`).
    pub const ANY: u16 = 255;
}

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_CD: u16 = 0x0010;
const OPCODE_MASK: u16 = 0x7800;
const OPT_LEN: usize = 11;

/// Why a message could not be parsed or a name could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer than 12 bytes: not even a header.
    #[error("message is {len} bytes, shorter than the 12-byte header")]
    ShortHeader {
        /// Length of the message.
        len: usize,
    },
    /// A field or label runs past the end of the message.
    #[error("message truncated at offset {offset}")]
    Truncated {
        /// Where the missing data should have started.
        offset: usize,
    },
    /// QR is set: the message is a response.
    #[error("message is a response (QR=1), not a query")]
    NotAQuery,
    /// A query must carry exactly one question.
    #[error("expected exactly one question, found {0}")]
    QuestionCount(u16),
    /// A label length byte uses a reserved or extended label type.
    #[error("unsupported label type {bits:#04x} at offset {offset}")]
    BadLabelType {
        /// Offset of the length byte.
        offset: usize,
        /// Its top two bits.
        bits: u8,
    },
    /// A compression pointer targets an offset past the end of the message.
    #[error("compression pointer at offset {offset} targets {target}, past the end")]
    PointerOutOfBounds {
        /// Offset of the pointer.
        offset: usize,
        /// The offset it points to.
        target: usize,
    },
    /// Following compression pointers would loop (or takes too many hops).
    #[error("compression pointer at offset {offset} loops")]
    PointerLoop {
        /// Offset of the offending pointer.
        offset: usize,
    },
    /// The uncompressed name exceeds 255 bytes.
    #[error("name longer than 255 bytes")]
    NameTooLong,
    /// A label in a dotted name exceeds 63 bytes.
    #[error("label longer than 63 bytes")]
    LabelTooLong,
    /// A dotted name has an empty label (`a..b`).
    #[error("empty label in name")]
    EmptyLabel,
    /// More than one OPT record (RFC 6891 §6.1.1).
    #[error("more than one OPT record")]
    DuplicateOpt,
    /// OPT outside the additional section, not owned by the root name, or
    /// with badly framed options.
    #[error("malformed OPT record")]
    BadOpt,
    /// Bytes left over after the records the header counts.
    #[error("{0} trailing bytes after the last record")]
    TrailingBytes(usize),
}

/// Response codes (RFC 1035 §4.1.1, RFC 6891 §9 for BADVERS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rcode {
    /// No error.
    NoError,
    /// The query could not be interpreted.
    FormErr,
    /// The server could not process the query (e.g. upstream failed).
    ServFail,
    /// The name does not exist.
    NxDomain,
    /// The kind of query is not supported.
    NotImp,
    /// The server refuses to answer.
    Refused,
    /// Unsupported EDNS version (extended RCODE 16).
    BadVers,
}

impl Rcode {
    /// The full (possibly extended) numeric code.
    pub fn code(self) -> u16 {
        match self {
            Rcode::NoError => 0,
            Rcode::FormErr => 1,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::NotImp => 4,
            Rcode::Refused => 5,
            Rcode::BadVers => 16,
        }
    }

    /// The code for a 4-bit header RCODE, if it is one of those above.
    pub fn from_header(code: u8) -> Option<Rcode> {
        Some(match code {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            _ => return None,
        })
    }
}

/// The transport a response will travel over, which bounds its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: 512 bytes, or the EDNS size (capped at 1232).
    Udp,
    /// TCP: 65535 bytes.
    Tcp,
}

/// The fixed message header (RFC 1035 §4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Transaction ID.
    pub id: u16,
    /// The flags word: QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE.
    pub flags: u16,
    /// Number of questions.
    pub qdcount: u16,
    /// Number of answer records.
    pub ancount: u16,
    /// Number of authority records.
    pub nscount: u16,
    /// Number of additional records.
    pub arcount: u16,
}

impl Header {
    /// Parses the first 12 bytes of `msg`.
    pub fn parse(msg: &[u8]) -> Result<Header, WireError> {
        if msg.len() < HEADER_LEN {
            return Err(WireError::ShortHeader { len: msg.len() });
        }
        let w = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
        Ok(Header {
            id: w(0),
            flags: w(2),
            qdcount: w(4),
            ancount: w(6),
            nscount: w(8),
            arcount: w(10),
        })
    }

    /// QR: the message is a response.
    pub fn qr(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    /// The 4-bit opcode.
    pub fn opcode(&self) -> u8 {
        ((self.flags & OPCODE_MASK) >> 11) as u8
    }

    /// AA: authoritative answer.
    pub fn aa(&self) -> bool {
        self.flags & FLAG_AA != 0
    }

    /// TC: truncated.
    pub fn tc(&self) -> bool {
        self.flags & FLAG_TC != 0
    }

    /// RD: recursion desired.
    pub fn rd(&self) -> bool {
        self.flags & FLAG_RD != 0
    }

    /// RA: recursion available.
    pub fn ra(&self) -> bool {
        self.flags & FLAG_RA != 0
    }

    /// CD: checking disabled (RFC 4035).
    pub fn cd(&self) -> bool {
        self.flags & FLAG_CD != 0
    }

    /// The 4-bit header RCODE.
    pub fn rcode(&self) -> u8 {
        (self.flags & 0x000f) as u8
    }

    fn write(&self, out: &mut Vec<u8>) {
        for w in [
            self.id,
            self.flags,
            self.qdcount,
            self.ancount,
            self.nscount,
            self.arcount,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
    }
}

/// A domain name in uncompressed wire form, original case preserved.
///
/// Equality and hashing ignore ASCII case (RFC 4343).
#[derive(Clone)]
pub struct Name {
    /// Length-prefixed labels ending with the zero-length root label.
    wire: Vec<u8>,
}

impl Name {
    /// The root name `.`.
    pub fn root() -> Name {
        Name { wire: vec![0] }
    }

    /// Builds a name from dotted text such as `web1.mynet` or `web1.mynet.`
    /// (the trailing dot is optional; `""` and `"."` are the root). No
    /// escapes are interpreted: every byte between dots is label content.
    pub fn from_dotted(text: &str) -> Result<Name, WireError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        let mut wire = Vec::with_capacity(text.len() + 2);
        if !text.is_empty() {
            for label in text.split('.') {
                if label.is_empty() {
                    return Err(WireError::EmptyLabel);
                }
                if label.len() > MAX_LABEL_LEN {
                    return Err(WireError::LabelTooLong);
                }
                wire.push(label.len() as u8);
                wire.extend_from_slice(label.as_bytes());
            }
        }
        wire.push(0);
        if wire.len() > MAX_NAME_LEN {
            return Err(WireError::NameTooLong);
        }
        Ok(Name { wire })
    }

    /// The uncompressed wire form, ending with the root label.
    pub fn as_wire(&self) -> &[u8] {
        &self.wire
    }

    /// The labels, most specific first, without the root label.
    pub fn labels(&self) -> Labels<'_> {
        Labels {
            wire: &self.wire,
            pos: 0,
        }
    }

    /// Number of labels, not counting the root.
    pub fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// Whether this is the root name.
    pub fn is_root(&self) -> bool {
        self.wire.len() == 1
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        // Length bytes are at most 63, below every ASCII letter, so a
        // case-insensitive byte comparison compares labels correctly.
        self.wire.eq_ignore_ascii_case(&other.wire)
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in &self.wire {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl fmt::Display for Name {
    /// Presentation format (RFC 1035 §5.1, RFC 4343 §2.1): labels joined
    /// with dots, a trailing dot, `.` and `\` escaped with a backslash and
    /// other non-printable bytes as `\DDD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        for label in self.labels() {
            for &b in label {
                match b {
                    b'.' | b'\\' => write!(f, "\\{}", b as char)?,
                    0x21..=0x7e => write!(f, "{}", b as char)?,
                    _ => write!(f, "\\{b:03}")?,
                }
            }
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// Iterator over the labels of a [`Name`].
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    wire: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let len = *self.wire.get(self.pos)? as usize;
        if len == 0 {
            return None;
        }
        let label = self.wire.get(self.pos + 1..self.pos + 1 + len)?;
        self.pos += 1 + len;
        Some(label)
    }
}

/// The question section entry (RFC 1035 §4.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Question {
    /// QNAME.
    pub name: Name,
    /// QTYPE (see [`rtype`]).
    pub qtype: u16,
    /// QCLASS (see [`class`]).
    pub qclass: u16,
}

/// What the query's OPT pseudo-record said (RFC 6891 §6.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Edns {
    /// The requestor's UDP payload size.
    pub udp_payload_size: u16,
    /// Upper 8 bits of the extended RCODE.
    pub ext_rcode: u8,
    /// EDNS version.
    pub version: u8,
    /// DO: DNSSEC OK (RFC 3225).
    pub dnssec_ok: bool,
}

/// A parsed query: header, its single question and optional EDNS info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The header as received.
    pub header: Header,
    /// The one question.
    pub question: Question,
    /// The OPT record, if present.
    pub edns: Option<Edns>,
}

impl Query {
    /// The largest response this query may receive over `transport`.
    pub fn max_response_len(&self, transport: Transport) -> usize {
        match (transport, self.edns) {
            (Transport::Tcp, _) => MAX_TCP_LEN,
            (Transport::Udp, None) => MAX_UDP_LEN,
            (Transport::Udp, Some(e)) => {
                (e.udp_payload_size as usize).clamp(MAX_UDP_LEN, EDNS_UDP_PAYLOAD as usize)
            }
        }
    }
}

/// Bounds-checked big-endian reader over a message.
struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.msg.len())
            .ok_or(WireError::Truncated { offset: self.pos })?;
        let s = &self.msg[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn name(&mut self) -> Result<Name, WireError> {
        let (name, end) = read_name(self.msg, self.pos)?;
        self.pos = end;
        Ok(name)
    }
}

/// Reads a possibly compressed name starting at `start`; returns it and
/// the offset just past it in the original byte stream.
fn read_name(msg: &[u8], start: usize) -> Result<(Name, usize), WireError> {
    let mut wire = Vec::with_capacity(32);
    let mut pos = start;
    let mut end = None;
    let mut visited = [0usize; MAX_POINTER_HOPS + 1];
    visited[0] = start;
    let mut hops = 0;
    loop {
        let len = *msg.get(pos).ok_or(WireError::Truncated { offset: pos })?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                wire.push(0);
                return Ok((Name { wire }, end.unwrap_or(pos + 1)));
            }
            0x00 => {
                let l = len as usize;
                let label = msg
                    .get(pos + 1..pos + 1 + l)
                    .ok_or(WireError::Truncated { offset: pos + 1 })?;
                // Room must remain for this label and the root label.
                if wire.len() + 1 + l + 1 > MAX_NAME_LEN {
                    return Err(WireError::NameTooLong);
                }
                wire.push(len);
                wire.extend_from_slice(label);
                pos += 1 + l;
            }
            0xc0 => {
                let low = *msg
                    .get(pos + 1)
                    .ok_or(WireError::Truncated { offset: pos + 1 })?;
                let target = (((len & 0x3f) as usize) << 8) | low as usize;
                if end.is_none() {
                    end = Some(pos + 2);
                }
                if target >= msg.len() {
                    return Err(WireError::PointerOutOfBounds {
                        offset: pos,
                        target,
                    });
                }
                if hops == MAX_POINTER_HOPS || visited[..=hops].contains(&target) {
                    return Err(WireError::PointerLoop { offset: pos });
                }
                hops += 1;
                visited[hops] = target;
                pos = target;
            }
            bits => return Err(WireError::BadLabelType { offset: pos, bits }),
        }
    }
}

fn read_question(r: &mut Reader<'_>) -> Result<Question, WireError> {
    Ok(Question {
        name: r.name()?,
        qtype: r.u16()?,
        qclass: r.u16()?,
    })
}

/// Parses the header and, if QDCOUNT is at least 1, the first question of
/// any message (query or response). Used to match upstream replies.
pub(crate) fn parse_header_and_question(
    msg: &[u8],
) -> Result<(Header, Option<Question>), WireError> {
    let header = Header::parse(msg)?;
    if header.qdcount == 0 {
        return Ok((header, None));
    }
    let mut r = Reader {
        msg,
        pos: HEADER_LEN,
    };
    Ok((header, Some(read_question(&mut r)?)))
}

/// Parses a query message.
///
/// Requires QR=0 and exactly one question; walks the answer, authority
/// and additional sections (queries normally have none, but they must be
/// well formed), picks up a single OPT record from the additional section
/// and rejects trailing bytes. Any opcode is accepted here: the caller
/// answers opcodes other than [`OPCODE_QUERY`] with NOTIMP.
pub fn parse_query(msg: &[u8]) -> Result<Query, WireError> {
    let header = Header::parse(msg)?;
    if header.qr() {
        return Err(WireError::NotAQuery);
    }
    if header.qdcount != 1 {
        return Err(WireError::QuestionCount(header.qdcount));
    }
    let mut r = Reader {
        msg,
        pos: HEADER_LEN,
    };
    let question = read_question(&mut r)?;
    let mut edns = None;
    let records = [header.ancount, header.nscount, header.arcount];
    for (section, &count) in records.iter().enumerate() {
        for _ in 0..count {
            let name = r.name()?;
            let rtype = r.u16()?;
            let rclass = r.u16()?;
            let ttl = r.u32()?;
            let rdlen = r.u16()? as usize;
            let rdata = r.take(rdlen)?;
            if rtype != rtype::OPT {
                continue;
            }
            if section != 2 || !name.is_root() || !options_well_framed(rdata) {
                return Err(WireError::BadOpt);
            }
            if edns.is_some() {
                return Err(WireError::DuplicateOpt);
            }
            edns = Some(Edns {
                udp_payload_size: rclass,
                ext_rcode: (ttl >> 24) as u8,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
            });
        }
    }
    if r.pos != msg.len() {
        return Err(WireError::TrailingBytes(msg.len() - r.pos));
    }
    Ok(Query {
        header,
        question,
        edns,
    })
}

/// Whether OPT RDATA is a sequence of complete {code, length, data} options.
fn options_well_framed(mut rdata: &[u8]) -> bool {
    while !rdata.is_empty() {
        if rdata.len() < 4 {
            return false;
        }
        let len = u16::from_be_bytes([rdata[2], rdata[3]]) as usize;
        match rdata.get(4 + len..) {
            Some(rest) => rdata = rest,
            None => return false,
        }
    }
    true
}

/// Record data of an answer built here.
enum Rdata<'a> {
    A(Ipv4Addr),
    Ptr(&'a Name),
}

impl Rdata<'_> {
    fn rtype(&self) -> u16 {
        match self {
            Rdata::A(_) => rtype::A,
            Rdata::Ptr(_) => rtype::PTR,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Rdata::A(addr) => out.extend_from_slice(&addr.octets()),
            Rdata::Ptr(n) => out.extend_from_slice(n.as_wire()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Rdata::A(_) => 4,
            Rdata::Ptr(n) => n.as_wire().len(),
        }
    }
}

fn response_flags(query: &Query, aa: bool, rcode: Rcode) -> u16 {
    let q = query.header.flags;
    let mut flags = FLAG_QR | FLAG_RA | (q & (OPCODE_MASK | FLAG_RD | FLAG_CD));
    if aa {
        flags |= FLAG_AA;
    }
    flags | (rcode.code() & 0x000f)
}

fn build(
    query: &Query,
    rcode: Rcode,
    aa: bool,
    answers: &[Rdata<'_>],
    ttl: u32,
    max_len: usize,
) -> Vec<u8> {
    // BADVERS needs the OPT record's extended RCODE bits.
    let rcode = if rcode == Rcode::BadVers && query.edns.is_none() {
        Rcode::FormErr
    } else {
        rcode
    };
    let opt_len = if query.edns.is_some() { OPT_LEN } else { 0 };
    let mut header = Header {
        id: query.header.id,
        flags: response_flags(query, aa, rcode),
        qdcount: 1,
        ancount: 0,
        nscount: 0,
        arcount: u16::from(query.edns.is_some()),
    };
    let mut out = Vec::with_capacity(128);
    header.write(&mut out);
    let q = &query.question;
    out.extend_from_slice(q.name.as_wire());
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    let ttl = ttl.min(MAX_TTL);
    for rr in answers {
        let rr_len = 2 + 2 + 2 + 4 + 2 + rr.len();
        if out.len() + rr_len + opt_len > max_len || header.ancount == u16::MAX {
            header.flags |= FLAG_TC;
            break;
        }
        // Owner: compression pointer to the question name at offset 12.
        out.extend_from_slice(&[0xc0, HEADER_LEN as u8]);
        out.extend_from_slice(&rr.rtype().to_be_bytes());
        out.extend_from_slice(&class::IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(rr.len() as u16).to_be_bytes());
        rr.write(&mut out);
        header.ancount += 1;
    }
    if let Some(edns) = query.edns {
        let ext = (rcode.code() >> 4) as u32;
        let do_bit = if edns.dnssec_ok { 0x8000 } else { 0 };
        out.push(0); // root owner
        out.extend_from_slice(&rtype::OPT.to_be_bytes());
        out.extend_from_slice(&EDNS_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&((ext << 24) | do_bit).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
    }
    let mut head = Vec::with_capacity(HEADER_LEN);
    header.write(&mut head);
    out[..HEADER_LEN].copy_from_slice(&head);
    out
}

/// An authoritative answer with one A record per address (NOERROR, AA=1).
///
/// Records that would push the message past `max_len` (see
/// [`Query::max_response_len`]) are left out and TC is set. An empty
/// `addrs` gives an authoritative NODATA response.
pub fn a_response(query: &Query, addrs: &[Ipv4Addr], ttl: u32, max_len: usize) -> Vec<u8> {
    let answers: Vec<Rdata<'_>> = addrs.iter().map(|&a| Rdata::A(a)).collect();
    build(query, Rcode::NoError, true, &answers, ttl, max_len)
}

/// An authoritative answer with one PTR record pointing at `target`
/// (NOERROR, AA=1). The target is written uncompressed.
pub fn ptr_response(query: &Query, target: &Name, ttl: u32, max_len: usize) -> Vec<u8> {
    build(
        query,
        Rcode::NoError,
        true,
        &[Rdata::Ptr(target)],
        ttl,
        max_len,
    )
}

/// A response without answers carrying `rcode`: NXDOMAIN or NODATA
/// (NOERROR) with `authoritative` set for names weft owns; SERVFAIL,
/// REFUSED, FORMERR, NOTIMP or BADVERS otherwise. The question is copied.
/// BADVERS for a query without EDNS degrades to FORMERR.
pub fn rcode_response(query: &Query, rcode: Rcode, authoritative: bool) -> Vec<u8> {
    build(query, rcode, authoritative, &[], 0, MAX_TCP_LEN)
}

/// A header-only response for a message whose question could not be
/// parsed (typically FORMERR, or NOTIMP for an unknown opcode): the ID,
/// opcode, RD and CD are echoed and all counts are zero.
///
/// Returns `None` for messages shorter than a header and for responses
/// (QR=1), which must never be answered.
pub fn header_only_response(msg: &[u8], rcode: Rcode) -> Option<Vec<u8>> {
    let header = Header::parse(msg).ok()?;
    if header.qr() {
        return None;
    }
    let rcode = if rcode == Rcode::BadVers {
        Rcode::FormErr
    } else {
        rcode
    };
    let mut flags = FLAG_QR | FLAG_RA | (header.flags & (OPCODE_MASK | FLAG_RD | FLAG_CD));
    flags |= rcode.code() & 0x000f;
    let mut out = Vec::with_capacity(HEADER_LEN);
    Header {
        id: header.id,
        flags,
        qdcount: 0,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    }
    .write(&mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_display_escapes() {
        let n = Name {
            wire: vec![3, b'a', b'.', 0x01, 2, b'B', b'\\', 0],
        };
        assert_eq!(n.to_string(), "a\\.\\001.B\\\\.");
        assert_eq!(Name::root().to_string(), ".");
    }

    #[test]
    fn name_from_dotted() {
        let n = Name::from_dotted("Web1.mynet.").unwrap();
        assert_eq!(n.as_wire(), b"\x04Web1\x05mynet\x00");
        assert_eq!(n, Name::from_dotted("web1.MYNET").unwrap());
        assert!(Name::from_dotted(".").unwrap().is_root());
        assert_eq!(Name::from_dotted("a..b"), Err(WireError::EmptyLabel));
        let long = "x".repeat(64);
        assert_eq!(Name::from_dotted(&long), Err(WireError::LabelTooLong));
        let too_long = vec!["abcdefg"; 32].join(".");
        assert_eq!(Name::from_dotted(&too_long), Err(WireError::NameTooLong));
    }
}
