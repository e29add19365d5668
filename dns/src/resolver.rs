//! Answering one query for one network.
//!
//! [`Resolver::resolve`] takes the raw query bytes and the network's
//! [`NameTable`] and decides, without any I/O:
//!
//! 1. Messages shorter than a header, and responses (QR=1), are dropped.
//! 2. Unparsable queries get a header-only FORMERR (NOTIMP if the opcode
//!    is not QUERY); a parsed query with another opcode gets NOTIMP; an
//!    EDNS version other than 0 gets BADVERS.
//! 3. Classes other than IN and ANY are REFUSED.
//! 4. Reverse names `d.c.b.a.in-addr.arpa` (RFC 1034 §3.5) of registered
//!    addresses are answered with a PTR record (other types: NODATA);
//!    unregistered addresses inside the network's subnet get NXDOMAIN.
//! 5. Registered names are answered authoritatively: A (or ANY) with
//!    their addresses, any other type (AAAA, MX, ...) with NODATA so that
//!    stub resolvers do not wait on upstream for them. Unregistered names
//!    inside the table's domain get NXDOMAIN.
//! 6. Everything else is [`Outcome::Forward`]: the caller relays the query
//!    upstream, e.g. with [`crate::forward::Forwarder`]. When forwarding is
//!    disabled (no upstream servers), such queries get SERVFAIL.
//!
//! Negative answers carry no SOA record, so clients do not cache them
//! (RFC 2308 §5); names come and go with endpoints anyway.

use std::net::Ipv4Addr;

use crate::names::{Lookup, NameTable};
use crate::wire::{
    a_response, class, header_only_response, parse_query, ptr_response, rcode_response, rtype,
    Header, Name, Query, Rcode, Transport, DEFAULT_TTL, OPCODE_QUERY,
};

/// Resolver settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverConfig {
    /// TTL of local answers in seconds (default 600, clamped to 2^31 - 1).
    pub ttl: u32,
    /// Whether non-local names are forwarded; if not they get SERVFAIL.
    pub forward: bool,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            ttl: DEFAULT_TTL,
            forward: true,
        }
    }
}

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back to the client.
    Reply(Vec<u8>),
    /// Not weft's name: relay the raw query upstream and send back what
    /// comes back (or SERVFAIL; see [`crate::forward::Forwarder::forward`]).
    Forward(Query),
    /// Send nothing (not a query, or too short to answer).
    Drop,
}

/// Answers queries for one network from its [`NameTable`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resolver {
    config: ResolverConfig,
}

impl Resolver {
    /// A resolver with `config`.
    pub fn new(config: ResolverConfig) -> Resolver {
        Resolver { config }
    }

    /// The settings.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// Decides how to answer the raw query `msg`, which arrived over
    /// `transport` (bounding the response size).
    pub fn resolve(&self, table: &NameTable, msg: &[u8], transport: Transport) -> Outcome {
        let Ok(header) = Header::parse(msg) else {
            return Outcome::Drop;
        };
        if header.qr() {
            return Outcome::Drop;
        }
        let query = match parse_query(msg) {
            Ok(q) => q,
            Err(_) => {
                let rcode = if header.opcode() == OPCODE_QUERY {
                    Rcode::FormErr
                } else {
                    Rcode::NotImp
                };
                return header_only_response(msg, rcode).map_or(Outcome::Drop, Outcome::Reply);
            }
        };
        if query.header.opcode() != OPCODE_QUERY {
            return Outcome::Reply(rcode_response(&query, Rcode::NotImp, false));
        }
        if query.edns.is_some_and(|e| e.version != 0) {
            return Outcome::Reply(rcode_response(&query, Rcode::BadVers, false));
        }
        let q = &query.question;
        if q.qclass != class::IN && q.qclass != class::ANY {
            return Outcome::Reply(rcode_response(&query, Rcode::Refused, false));
        }
        let max_len = query.max_response_len(transport);
        let ttl = self.config.ttl;
        let wants = |t: u16| q.qtype == t || q.qtype == rtype::ANY;

        if let Some(addr) = reverse_v4(&q.name) {
            if let Some(target) = table.lookup_ptr(addr) {
                let reply = match Name::from_dotted(&target) {
                    Ok(target) if wants(rtype::PTR) => ptr_response(&query, &target, ttl, max_len),
                    _ => rcode_response(&query, Rcode::NoError, true),
                };
                return Outcome::Reply(reply);
            }
            if table.in_subnet(addr) {
                return Outcome::Reply(rcode_response(&query, Rcode::NxDomain, true));
            }
            return self.forward(query);
        }

        match table.lookup_name(&q.name) {
            Lookup::Found(addrs) if wants(rtype::A) => {
                Outcome::Reply(a_response(&query, &addrs, ttl, max_len))
            }
            Lookup::Found(_) => Outcome::Reply(rcode_response(&query, Rcode::NoError, true)),
            Lookup::NxDomain => Outcome::Reply(rcode_response(&query, Rcode::NxDomain, true)),
            Lookup::NotLocal => self.forward(query),
        }
    }

    fn forward(&self, query: Query) -> Outcome {
        if self.config.forward {
            Outcome::Forward(query)
        } else {
            Outcome::Reply(rcode_response(&query, Rcode::ServFail, false))
        }
    }
}

/// The address named by `d.c.b.a.in-addr.arpa` (RFC 1034 §3.5), if `name`
/// is exactly such a name with four decimal octets (no leading zeros).
pub fn reverse_v4(name: &Name) -> Option<Ipv4Addr> {
    let labels: Vec<&[u8]> = name.labels().collect();
    let [d, c, b, a, inaddr, arpa] = labels[..] else {
        return None;
    };
    if !inaddr.eq_ignore_ascii_case(b"in-addr") || !arpa.eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let octet = |l: &[u8]| -> Option<u8> {
        if l.is_empty()
            || l.len() > 3
            || (l.len() > 1 && l[0] == b'0')
            || !l.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        std::str::from_utf8(l).ok()?.parse().ok()
    };
    Some(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        let n = |s: &str| Name::from_dotted(s).unwrap();
        assert_eq!(
            reverse_v4(&n("4.3.2.10.IN-ADDR.arpa.")),
            Some(Ipv4Addr::new(10, 2, 3, 4))
        );
        assert_eq!(reverse_v4(&n("3.2.10.in-addr.arpa")), None);
        assert_eq!(reverse_v4(&n("04.3.2.10.in-addr.arpa")), None);
        assert_eq!(reverse_v4(&n("256.3.2.10.in-addr.arpa")), None);
        assert_eq!(reverse_v4(&n("+4.3.2.10.in-addr.arpa")), None);
        assert_eq!(reverse_v4(&n("4.3.2.10.ip6.arpa")), None);
    }
}
