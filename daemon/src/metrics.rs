//! `weft daemon --metrics ADDR:PORT`: the counters in the Prometheus text
//! exposition format (version 0.0.4) at `GET /metrics`.
//!
//! A tiny HTTP/1.1 server on one thread of its own, off the datapath: each
//! scrape takes the control-plane lock only to copy the list of ports (their
//! counters are shared atomics, read after the lock is released), reads the
//! switch's and the DNS service's atomics, reads the kernel's counters of
//! each endpoint's TAP (one rtnetlink request per endpoint, made inside its
//! namespace by a short-lived thread), and answers with
//! `Connection: close`. Every counter family is written with its `# HELP`
//! and `# TYPE` lines; drop reasons are written for every reason, zeros
//! included, so that `rate()` sees a series from its start.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_api::TapCounters;
use weft_control::dns::DnsCounters;
use weft_control::{MetricsSources, PortSource};
use weft_switch::counters::{DropReason, SwitchCounters};

use crate::DaemonControl;

/// Longest request head read, in bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a scraper may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a scrape reads.
pub(crate) struct Sources {
    pub control: Arc<Mutex<Option<DaemonControl>>>,
    pub switch: Arc<SwitchCounters>,
    pub dns: Arc<DnsCounters>,
    pub conntrack_max: usize,
}

/// Binds `addr` and serves scrapes on a thread of its own.
pub(crate) fn start(addr: SocketAddr, sources: Sources) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("weft-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = serve(stream, &sources) {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    Ok(bound)
}

/// Answers one request.
fn serve(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(sources),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "weft serves its metrics at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics is served\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

/// The exposition text.
pub(crate) fn render(sources: &Sources) -> String {
    let (read, networks, endpoints) = {
        let guard = sources.control.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(c) => {
                let status = c.status();
                (c.metrics_sources(), status.networks, status.endpoints)
            }
            None => (MetricsSources::default(), 0, 0),
        }
    };
    let mut out = Exposition::default();
    out.family(
        "weft_build_info",
        "gauge",
        "The running weft: version and API version.",
    );
    out.sample(
        "weft_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("api_version", &weft_api::API_VERSION.to_string()),
        ],
        1,
    );
    out.gauge("weft_networks", "Networks.", networks as u64);
    out.gauge("weft_endpoints", "Attached endpoints.", endpoints as u64);
    port_families(&mut out, &read.ports);
    // One short rtnetlink request per endpoint, off the control plane's
    // lock and off the datapath.
    let kernel: Vec<_> = read
        .ports
        .iter()
        .filter_map(|p| {
            let tap = p.tap.as_ref()?;
            let counters = crate::provisioner::tap_counters(&tap.netns, &tap.ifname).ok();
            Some((p, counters))
        })
        .collect();
    kernel_families(&mut out, &kernel);
    switch_families(&mut out, &sources.switch, sources.conntrack_max);
    peer_families(&mut out, &read.peers);
    dns_families(&mut out, &sources.dns);
    if let Some(uplink) = &read.socket_uplink {
        socket_uplink_families(&mut out, uplink);
    }
    out.text
}

fn port_families(out: &mut Exposition, ports: &[PortSource]) {
    type Field = fn(&weft_switch::counters::PortCounters) -> &AtomicU64;
    let families: [(&str, &str, Field); 5] = [
        (
            "weft_port_rx_packets_total",
            "Frames received from the port's device.",
            |c| &c.rx_packets,
        ),
        (
            "weft_port_rx_bytes_total",
            "Bytes received from the port's device.",
            |c| &c.rx_bytes,
        ),
        (
            "weft_port_tx_packets_total",
            "Frames sent to the port's device.",
            |c| &c.tx_packets,
        ),
        (
            "weft_port_tx_bytes_total",
            "Bytes sent to the port's device.",
            |c| &c.tx_bytes,
        ),
        (
            "weft_port_storm_pauses_total",
            "Times the port was not read because a storm spent its storm-control budget.",
            |c| &c.storm_pauses,
        ),
    ];
    for (name, help, field) in families {
        out.family(name, "counter", help);
        for p in ports {
            let value = field(&p.counters).load(Ordering::Relaxed);
            out.sample(name, &port_labels(p), value);
        }
    }
    let name = "weft_port_drops_total";
    out.family(
        name,
        "counter",
        "Frames from or to the port dropped, by reason.",
    );
    for p in ports {
        let port = p.port.to_string();
        for reason in DropReason::ALL {
            out.sample(
                name,
                &[
                    ("network", p.network.as_str()),
                    ("endpoint", p.endpoint.as_str()),
                    ("port", port.as_str()),
                    ("reason", reason.name()),
                ],
                p.counters.drops(reason),
            );
        }
    }
}

/// The kernel's counters of the endpoints' TAPs, by direction; a port
/// whose counters could not be read this time (its namespace is gone) has
/// `weft_port_kernel_counters_up` 0 and no other sample.
fn kernel_families(out: &mut Exposition, ports: &[(&PortSource, Option<TapCounters>)]) {
    let up = "weft_port_kernel_counters_up";
    out.family(
        up,
        "gauge",
        "Whether the kernel's counters of the endpoint's TAP could be read (0: its namespace is gone).",
    );
    for (p, c) in ports {
        out.sample(up, &port_labels(p), u64::from(c.is_some()));
    }
    type Field = fn(&TapCounters) -> u64;
    let families: [(&str, &str, Field, Field); 2] = [
        (
            "weft_port_kernel_packets_total",
            "Frames the kernel counted on the endpoint's TAP: from_endpoint, sent by the endpoint and read by weft; to_endpoint, written by weft.",
            |c| c.from_endpoint_packets,
            |c| c.to_endpoint_packets,
        ),
        (
            "weft_port_kernel_drops_total",
            "Frames the kernel dropped at the endpoint's TAP: from_endpoint, sent while tun's queue was full because weft had not read it; to_endpoint, written by weft and dropped by the kernel.",
            |c| c.from_endpoint_dropped,
            |c| c.to_endpoint_dropped,
        ),
    ];
    for (name, help, from, to) in families {
        out.family(name, "counter", help);
        for (p, c) in ports {
            let Some(c) = c else { continue };
            let port = p.port.to_string();
            for (direction, value) in [("from_endpoint", from(c)), ("to_endpoint", to(c))] {
                out.sample(
                    name,
                    &[
                        ("network", p.network.as_str()),
                        ("endpoint", p.endpoint.as_str()),
                        ("port", port.as_str()),
                        ("direction", direction),
                    ],
                    value,
                );
            }
        }
    }
}

fn port_labels(p: &PortSource) -> [(&'static str, String); 3] {
    [
        ("network", p.network.clone()),
        ("endpoint", p.endpoint.clone()),
        ("port", p.port.to_string()),
    ]
}

fn switch_families(out: &mut Exposition, c: &SwitchCounters, conntrack_max: usize) {
    let name = "weft_switch_drops_total";
    out.family(
        name,
        "counter",
        "Frames dropped that belong to no port, by reason.",
    );
    for (reason, v) in c.drops() {
        out.sample(name, &[("reason", reason)], v.load(Ordering::Relaxed));
    }
    out.counter(
        "weft_arp_suppressed_total",
        "ARP requests the switch answered instead of flooding them.",
        c.arp_suppressed.load(Ordering::Relaxed),
    );
    out.counter(
        "weft_icmp_errors_sent_total",
        "ICMP errors the gateways sent.",
        c.icmp_errors_sent.load(Ordering::Relaxed),
    );
    out.counter(
        "weft_conntrack_early_evicted_total",
        "Unanswered connections evicted early to make room for new ones.",
        c.conntrack_early_evicted.load(Ordering::Relaxed),
    );
    out.counter(
        "weft_neighbor_queued_total",
        "Frames held while their next hop's MAC was being resolved.",
        c.neighbor_queued.load(Ordering::Relaxed),
    );
    out.counter(
        "weft_vxlan_rco_rx_total",
        "VXLAN datagrams received with remote checksum offload (inner checksum left partial).",
        c.vxlan_rco_rx.load(Ordering::Relaxed),
    );
    out.counter(
        "weft_vxlan_rco_tx_total",
        "VXLAN datagrams sent with remote checksum offload (inner checksum left partial).",
        c.vxlan_rco_tx.load(Ordering::Relaxed),
    );
    out.gauge(
        "weft_conntrack_entries",
        "Connections tracked (as of the datapath's last expiry pass, at most 0.5 s old).",
        c.conntrack_entries.load(Ordering::Relaxed),
    );
    out.gauge(
        "weft_conntrack_max",
        "Most connections tracked at once (--conntrack-max).",
        conntrack_max as u64,
    );
    out.counter(
        "weft_busy_poll_spins_total",
        "Busy-poll windows the datapath started after running out of work.",
        c.busy_poll_spins.load(Ordering::Relaxed),
    );
    out.counter(
        "weft_busy_poll_hits_total",
        "Busy-poll windows that ended with a packet (a wake-up saved).",
        c.busy_poll_hits.load(Ordering::Relaxed),
    );
    out.counter(
        "weft_busy_poll_misses_total",
        "Busy-poll windows that ran out without a packet.",
        c.busy_poll_misses.load(Ordering::Relaxed),
    );
    out.gauge(
        "weft_busy_poll_held",
        "1 while the datapath does not busy-poll because the traffic is bulk, or a flood it does not forward beside the sender, else 0.",
        c.busy_poll_held.load(Ordering::Relaxed),
    );
    out.gauge(
        "weft_receive_threaded_ports",
        "TAPs whose receive processing runs in a kernel thread of its own because a flood is written to them (threaded NAPI).",
        c.receive_threaded.load(Ordering::Relaxed),
    );
    out.counter(
        "weft_worker_moves_total",
        "Times the datapath worker moved next to its endpoints or back (--worker-cpu follow).",
        c.worker_moves.load(Ordering::Relaxed),
    );
    if let Some(cpu) = c.worker_following_cpu() {
        out.gauge(
            "weft_worker_following_cpu",
            "The CPU the datapath worker runs on next to its endpoints (absent while it runs where the scheduler puts it).",
            cpu as u64,
        );
    }
    out.counter(
        "weft_conntrack_refused_total",
        "New connections refused because the tracking table was full.",
        c.conntrack_full.load(Ordering::Relaxed),
    );
}

fn peer_families(out: &mut Exposition, peers: &[weft_api::PeerInfo]) {
    type Field = fn(&weft_api::PeerInfo) -> u64;
    let families: [(&str, &str, Field); 4] = [
        (
            "weft_peer_rx_packets_total",
            "Frames received from the peer VTEP.",
            |p| p.rx_packets,
        ),
        (
            "weft_peer_rx_bytes_total",
            "Bytes received from the peer VTEP.",
            |p| p.rx_bytes,
        ),
        (
            "weft_peer_tx_packets_total",
            "Frames sent to the peer VTEP.",
            |p| p.tx_packets,
        ),
        (
            "weft_peer_tx_bytes_total",
            "Bytes sent to the peer VTEP.",
            |p| p.tx_bytes,
        ),
    ];
    for (name, help, field) in families {
        out.family(name, "counter", help);
        for p in peers {
            out.sample(name, &[("peer", &p.addr)], field(p));
        }
    }
    let name = "weft_peer_drops_total";
    out.family(
        name,
        "counter",
        "Frames to or from the peer dropped, by reason.",
    );
    for p in peers {
        for (reason, n) in &p.drops {
            out.sample(name, &[("peer", &p.addr), ("reason", reason)], *n);
        }
    }
}

fn dns_families(out: &mut Exposition, d: &DnsCounters) {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let name = "weft_dns_queries_total";
    out.family(
        name,
        "counter",
        "DNS queries to the gateways (TCP: segments to port 53).",
    );
    out.sample(name, &[("transport", "udp")], load(&d.udp_queries));
    out.sample(name, &[("transport", "tcp")], load(&d.tcp_segments));
    out.counter(
        "weft_dns_local_answers_total",
        "DNS queries answered from the network's own names.",
        load(&d.local_answers),
    );
    out.counter(
        "weft_dns_forwarded_total",
        "DNS queries forwarded upstream.",
        load(&d.forwarded),
    );
    let name = "weft_dns_failures_total";
    out.family(name, "counter", "DNS queries that failed, by how.");
    out.sample(name, &[("reason", "servfail")], load(&d.servfail));
    out.sample(name, &[("reason", "dropped")], load(&d.dropped));
}

/// The socket uplink's own counters (rootless egress through host sockets),
/// one series per event, zeros included; written only while that is the
/// uplink.
fn socket_uplink_families(out: &mut Exposition, c: &weft_hostnet::Counters) {
    let name = "weft_socket_uplink_events_total";
    out.family(
        name,
        "counter",
        "Socket uplink events: flows opened, published connections accepted, and refusals and errors by kind.",
    );
    for (event, v) in c.all() {
        out.sample(name, &[("event", event)], v.load(Ordering::Relaxed));
    }
}

/// Prometheus text format writer.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample<K: AsRef<str>, V: AsRef<str>>(&mut self, name: &str, labels: &[(K, V)], value: u64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{}=\"", k.as_ref());
                escape_into(&mut self.text, v.as_ref());
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample::<&str, &str>(name, &[], value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample::<&str, &str>(name, &[], value);
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_counters_by_direction_and_ports_without_them() {
        let port = |n: u32, endpoint: &str| PortSource {
            network: "front".into(),
            endpoint: endpoint.into(),
            port: n,
            counters: Arc::default(),
            tap: None,
        };
        let (a, b) = (port(1, "a"), port(2, "b"));
        let read = TapCounters {
            from_endpoint_packets: 10,
            from_endpoint_dropped: 3,
            to_endpoint_packets: 7,
            to_endpoint_dropped: 1,
        };
        let mut out = Exposition::default();
        kernel_families(&mut out, &[(&a, Some(read)), (&b, None)]);
        let samples: Vec<&str> = out.text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                r#"weft_port_kernel_counters_up{network="front",endpoint="a",port="1"} 1"#,
                r#"weft_port_kernel_counters_up{network="front",endpoint="b",port="2"} 0"#,
                r#"weft_port_kernel_packets_total{network="front",endpoint="a",port="1",direction="from_endpoint"} 10"#,
                r#"weft_port_kernel_packets_total{network="front",endpoint="a",port="1",direction="to_endpoint"} 7"#,
                r#"weft_port_kernel_drops_total{network="front",endpoint="a",port="1",direction="from_endpoint"} 3"#,
                r#"weft_port_kernel_drops_total{network="front",endpoint="a",port="1",direction="to_endpoint"} 1"#,
            ]
        );
        assert!(out
            .text
            .contains("# TYPE weft_port_kernel_drops_total counter\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.sample("m", &[("a", "x\"y\\z\nw")], 3);
        assert_eq!(out.text, "m{a=\"x\\\"y\\\\z\\nw\"} 3\n");
    }
}
