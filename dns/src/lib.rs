//! Embedded DNS for weft networks.
//!
//! Each weft network has a gateway address inside weft that answers DNS
//! the way Docker's embedded `127.0.0.11` resolver does: names of
//! endpoints on the network (and their aliases and services) resolve
//! locally, everything else is forwarded to the host's upstream servers.
//!
//! - [`wire`]: the message format (RFC 1035 §4.1), parsing queries with
//!   defensive handling of name compression (RFC 1035 §4.1.4) and building
//!   A, PTR, NXDOMAIN, NODATA, SERVFAIL, REFUSED, FORMERR and NOTIMP
//!   responses, EDNS(0) aware (RFC 6891), TTLs per RFC 2181 §8.
//! - [`names`]: [`NameTable`], one network's names and addresses, case
//!   insensitive (RFC 4343), with reverse entries for PTR.
//! - [`resolver`]: [`Resolver`], which answers one query from a table or
//!   says to forward it; reverse names per RFC 1034 §3.5.
//! - [`forward`]: [`Forwarder`], a blocking UDP relay to upstream servers
//!   with an overall deadline, after which the client gets SERVFAIL
//!   (RFC 8906) rather than silence; upstreams come from resolv.conf.
//! - [`tcp`]: the 2-byte length prefix of DNS over TCP (RFC 1035 §4.2.2).
//!
//! Only [`forward`] does I/O; everything else works on byte slices.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use weft_dns::{Entry, Forwarder, NameTable, Outcome, Resolver, Transport};
//!
//! let mut table = NameTable::with_domain("mynet").unwrap();
//! table
//!     .insert(1, Entry::new(&["web1", "frontend"], &[Ipv4Addr::new(10, 0, 0, 2)]))
//!     .unwrap();
//!
//! /// What the gateway's UDP listener does with one datagram.
//! fn handle(resolver: &Resolver, table: &NameTable, fwd: &Forwarder, msg: &[u8]) -> Option<Vec<u8>> {
//!     match resolver.resolve(table, msg, Transport::Udp) {
//!         Outcome::Reply(reply) => Some(reply),
//!         // Blocks for at most the forwarder's deadline (2 s by default).
//!         Outcome::Forward(query) => Some(fwd.forward(&query, msg)),
//!         Outcome::Drop => None,
//!     }
//! }
//!
//! // A query for "WEB1.mynet A", ID 0x0102, RD set.
//! let mut query = vec![0x01, 0x02, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
//! query.extend_from_slice(b"\x04WEB1\x05mynet\x00\x00\x01\x00\x01");
//!
//! let fwd = Forwarder::from_resolv_conf("nameserver 127.0.0.53\n");
//! let reply = handle(&Resolver::default(), &table, &fwd, &query).unwrap();
//! assert_eq!(&reply[..2], &[0x01, 0x02]);
//! assert_eq!(&reply[reply.len() - 4..], &[10, 0, 0, 2]);
//! //! ```

#![forbid(unsafe_code)]

pub mod forward;
pub mod names;
pub mod resolver;
pub mod tcp;
pub mod wire;

pub use forward::{parse_resolv_conf, ForwardError, Forwarder, Upstream};
pub use names::{Entry, Lookup, NameError, NameTable, OwnerId};
pub use resolver::{Outcome, Resolver, ResolverConfig};
pub use tcp::{decode_frame, encode_frame, FrameDecoder, FrameError};
pub use wire::{parse_query, Edns, Header, Name, Query, Question, Rcode, Transport, WireError};
