//! The UDP responder: answers each query from the asker's network table
//! or forwards it upstream. Forwarding blocks, so each forwarded query gets
//! a short-lived thread of its own (bounded in number). TCP segments for
//! port 53 are passed on to the TCP responder.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::names::NameTables;
use super::DnsCounters;

use crossbeam_channel::{Receiver, Sender};
use weft_datapath::DnsQuery;
use weft_datapath::Injector;
use weft_dns::{Forwarder, NameTable, Outcome, Resolver, ResolverConfig, Transport};
use weft_packet::checksum::{checksum, checksum_with, pseudo_header_sum_v4};
use weft_packet::{ethernet, ipv4, write_ipv4, write_u16, ETHERTYPE_IPV4, ETH_HEADER_LEN};
use weft_switch::switch::DNS_PORT;

/// Forwarded queries in flight at once.
const MAX_FORWARDS: usize = 64;

pub(super) fn serve(
    queries: Receiver<DnsQuery>,
    tcp: Sender<DnsQuery>,
    tables: NameTables,
    forwarder: Arc<Forwarder>,
    injector: Injector,
    counters: &Arc<DnsCounters>,
) {
    let resolver = Resolver::new(ResolverConfig::default());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let bump = |c: &AtomicU64| {
        c.fetch_add(1, Ordering::Relaxed);
    };
    for query in queries {
        if query.tcp {
            // DNS over TCP (RFC 7766): a segment for the TCP responder,
            // dropped when its queue is full (TCP retransmits it).
            bump(&counters.tcp_segments);
            if tcp.try_send(query).is_err() {
                bump(&counters.dropped);
            }
            continue;
        }
        bump(&counters.udp_queries);
        let outcome = {
            let tables = tables.lock().unwrap_or_else(|e| e.into_inner());
            let empty = NameTable::new();
            let table = tables.get(&query.network).unwrap_or(&empty);
            resolver.resolve(table, &query.message, Transport::Udp)
        };
        match outcome {
            Outcome::Reply(answer) => {
                bump(&counters.local_answers);
                answer_with(&injector, &query, &answer)
            }
            Outcome::Drop => bump(&counters.dropped),
            Outcome::Forward(parsed) => {
                bump(&counters.forwarded);
                if in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_FORWARDS {
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let answer = forwarder_busy(&parsed);
                    bump(&counters.servfail);
                    answer_with(&injector, &query, &answer);
                    continue;
                }
                let (fwd, inj, count, stats) = (
                    Arc::clone(&forwarder),
                    injector.clone(),
                    Arc::clone(&in_flight),
                    Arc::clone(counters),
                );
                let spawned = std::thread::Builder::new()
                    .name("weft-dns-fwd".into())
                    .spawn(move || {
                        let answer = fwd.forward(&parsed, &query.message);
                        if is_servfail(&answer) {
                            stats.servfail.fetch_add(1, Ordering::Relaxed);
                        }
                        answer_with(&inj, &query, &answer);
                        count.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    bump(&counters.dropped);
                }
            }
        }
    }
}

/// Whether a DNS message's RCODE (RFC 1035 §4.1.1, the low four bits of
/// the fourth byte) is SERVFAIL (2).
fn is_servfail(message: &[u8]) -> bool {
    message.get(3).is_some_and(|b| b & 0x0f == 2)
}

/// SERVFAIL when too many forwards are in flight.
fn forwarder_busy(query: &weft_dns::Query) -> Vec<u8> {
    weft_dns::wire::rcode_response(query, weft_dns::Rcode::ServFail, false)
}

/// Sends `answer` back to the asker as a UDP datagram from the gateway.
fn answer_with(injector: &Injector, query: &DnsQuery, answer: &[u8]) {
    let frame = udp_frame(query, answer);
    injector.send(query.port, frame);
}

/// Builds Ethernet + IPv4 + UDP around a DNS answer (RFC 768 checksum
/// included).
fn udp_frame(query: &DnsQuery, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = vec![0u8; ETH_HEADER_LEN + ip_len];
    query.client_mac.write(&mut f, ethernet::DST);
    query.gateway_mac.write(&mut f, ethernet::SRC);
    write_u16(&mut f, ethernet::ETHERTYPE, ETHERTYPE_IPV4);
    let ip = &mut f[ETH_HEADER_LEN..];
    ip[ipv4::VER_IHL] = 0x45;
    write_u16(ip, ipv4::TOTAL_LEN, ip_len as u16);
    ip[ipv4::TTL] = 64;
    ip[ipv4::PROTO] = 17;
    write_ipv4(ip, ipv4::SRC, query.gateway);
    write_ipv4(ip, ipv4::DST, *query.client.ip());
    let sum = checksum(&ip[..20]);
    write_u16(ip, ipv4::CHECKSUM, sum);
    let udp = &mut ip[20..];
    write_u16(udp, 0, DNS_PORT);
    write_u16(udp, 2, query.client.port());
    write_u16(udp, 4, udp_len as u16);
    udp[8..].copy_from_slice(payload);
    let pseudo = pseudo_header_sum_v4(query.gateway, *query.client.ip(), 17, udp_len as u16);
    let mut sum = checksum_with(pseudo, udp);
    if sum == 0 {
        sum = 0xffff;
    }
    write_u16(udp, 6, sum);
    f
}
