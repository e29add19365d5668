//! Human-readable output: aligned tables and `key: value` blocks.
//!
//! Every formatter takes the API types and returns the text to print, so it
//! can be tested without a daemon. `--json` bypasses this module entirely.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use serde::de::DeserializeOwned;

use crate::api::{
    EndpointInfo, FdbEntry, FlowEntry, KernelPortStats, NeighborEntry, NetworkDetail, NetworkInfo,
    PeerInfo, PublishInfo, RouteInfo, ServiceInfo, Stats, StatusInfo, API_VERSION,
};

/// Decodes a reply's `result` into the type the request promises.
pub fn decode<T: DeserializeOwned>(value: serde_json::Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(value).with_context(|| {
        format!("the daemon's reply to `{what}` has an unexpected shape (is it a different weft version?)")
    })
}

/// Pretty JSON for `--json`.
pub fn json(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table whose columns are padded to their widest cell and separated by
/// two spaces. Lines carry no trailing whitespace.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with left-aligned columns.
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            align: vec![Align::Left; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the given columns (for numbers).
    pub fn right(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            self.align[c] = Align::Right;
        }
        self
    }

    /// Appends a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - width(cell);
                match self.align[i] {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let key_width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        let _ = writeln!(out, "{label:<key_width$} {value}");
    }
    out
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// Drop counters as `reason=count` pairs, `-` when there are none.
fn drops(map: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = map
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(",")
    }
}

/// Seconds as a short age: `4.2s`, `75s`, `12m`, `3h`.
fn age(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        "-".to_string()
    } else if secs < 10.0 {
        format!("{secs:.1}s")
    } else if secs < 120.0 {
        format!("{secs:.0}s")
    } else if secs < 2.0 * 3600.0 {
        format!("{:.0}m", secs / 60.0)
    } else {
        format!("{:.0}h", secs / 3600.0)
    }
}

/// `weft network ls`.
pub fn networks(list: &[NetworkInfo]) -> String {
    let mut t =
        Table::new(&["NAME", "SUBNET", "GATEWAY", "MTU", "INTERNAL", "ENDPOINTS"]).right(&[3, 5]);
    for n in list {
        t.row(vec![
            n.name.clone(),
            n.subnet.to_string(),
            n.gateway.to_string(),
            n.mtu.to_string(),
            yes_no(n.internal),
            n.endpoints.to_string(),
        ]);
    }
    t.render()
}

/// `weft endpoints`.
pub fn endpoints(list: &[EndpointInfo]) -> String {
    let mut t =
        Table::new(&["NAME", "NETWORK", "NETNS", "IFNAME", "IP", "MAC", "PORT"]).right(&[6]);
    for e in list {
        t.row(vec![
            e.name.clone(),
            e.network.clone(),
            or_dash(&e.netns),
            e.ifname.clone(),
            e.ip.to_string(),
            e.mac.clone(),
            e.port.to_string(),
        ]);
    }
    t.render()
}

/// `weft fdb`.
pub fn fdb(list: &[FdbEntry]) -> String {
    let mut t = Table::new(&["NETWORK", "MAC", "PORT", "ENDPOINT", "VTEP", "AGE"]).right(&[2, 5]);
    for f in list {
        t.row(vec![
            f.network.clone(),
            f.mac.clone(),
            f.port.to_string(),
            f.endpoint
                .as_deref()
                .map_or_else(|| "-".to_string(), or_dash),
            f.vtep.as_deref().map_or_else(|| "-".to_string(), or_dash),
            if f.r#static {
                "static".to_string()
            } else {
                age(f.age_secs)
            },
        ]);
    }
    t.render()
}

/// `weft peer ls`.
pub fn peers(list: &[PeerInfo]) -> String {
    let mut t = Table::new(&[
        "PEER",
        "RCO",
        "RX_PACKETS",
        "RX_BYTES",
        "TX_PACKETS",
        "TX_BYTES",
        "DROPS",
    ])
    .right(&[2, 3, 4, 5]);
    for p in list {
        t.row(vec![
            p.addr.clone(),
            if p.remote_csum { "yes" } else { "no" }.to_string(),
            p.rx_packets.to_string(),
            p.rx_bytes.to_string(),
            p.tx_packets.to_string(),
            p.tx_bytes.to_string(),
            drops(&p.drops),
        ]);
    }
    t.render()
}

/// `weft uplink show`.
pub fn uplink(u: &crate::api::UplinkInfo) -> String {
    key_values(&[
        (
            "interface",
            if u.sockets {
                "(host sockets)".to_string()
            } else {
                u.interface.clone()
            },
        ),
        ("ip", u.ip.to_string()),
        ("mac", u.mac.clone()),
        (
            "gateway",
            u.gateway.map_or_else(|| "-".into(), |g| g.to_string()),
        ),
        ("mtu", u.mtu.to_string()),
        ("port", u.port.to_string()),
    ])
}

/// `weft publish ls`.
pub fn published(list: &[PublishInfo]) -> String {
    let mut t = Table::new(&["NETWORK", "ENDPOINT", "HOST_PORT", "PROTO", "TARGET"]).right(&[2]);
    for p in list {
        t.row(vec![
            p.network.clone(),
            p.endpoint.clone(),
            p.host_port.to_string(),
            p.proto.clone(),
            p.target.to_string(),
        ]);
    }
    t.render()
}

/// `weft service ls`.
pub fn services(list: &[ServiceInfo]) -> String {
    let mut t = Table::new(&["NAME", "NETWORK", "VIP", "PORT", "LB", "BACKENDS"]);
    for s in list {
        t.row(vec![
            s.name.clone(),
            s.network.clone(),
            s.vip.to_string(),
            format!("{}/{}", s.port, s.proto),
            s.lb.clone(),
            if s.backends.is_empty() {
                "-".to_string()
            } else {
                s.backends.join(",")
            },
        ]);
    }
    t.render()
}

/// `weft conntrack`.
pub fn flows(list: &[FlowEntry]) -> String {
    let mut t = Table::new(&[
        "PROTO", "ORIGINAL", "REPLY", "STATE", "AGE", "EXPIRES", "PACKETS", "BYTES",
    ])
    .right(&[4, 5, 6, 7]);
    for f in list {
        t.row(vec![
            f.proto.clone(),
            f.original.clone(),
            f.reply.clone(),
            f.state.clone(),
            age(f.age_secs),
            age(f.expires_secs),
            format!("{}/{}", f.orig_packets, f.reply_packets),
            format!("{}/{}", f.orig_bytes, f.reply_bytes),
        ]);
    }
    t.render()
}

/// `weft neighbor ls`.
pub fn neighbors(list: &[NeighborEntry]) -> String {
    let mut t = Table::new(&["NETWORK", "IP", "MAC", "AGE"]).right(&[3]);
    for n in list {
        t.row(vec![
            n.network.clone(),
            n.ip.to_string(),
            n.mac.clone(),
            if n.r#static {
                "static".to_string()
            } else {
                age(n.age_secs)
            },
        ]);
    }
    t.render()
}

/// `weft route ls`.
pub fn routes(list: &[RouteInfo]) -> String {
    let mut t = Table::new(&["NETWORK_A", "NETWORK_B"]);
    for r in list {
        t.row(vec![r.a.clone(), r.b.clone()]);
    }
    t.render()
}

/// `weft stats`: one row per port, then drops not tied to a port.
pub fn stats(stats: &Stats) -> String {
    let mut t = Table::new(&[
        "PORT",
        "NETWORK",
        "ENDPOINT",
        "RX_PACKETS",
        "RX_BYTES",
        "TX_PACKETS",
        "TX_BYTES",
        "DROPS",
    ])
    .right(&[0, 3, 4, 5, 6]);
    for p in &stats.ports {
        t.row(vec![
            p.port.to_string(),
            or_dash(&p.network),
            or_dash(&p.endpoint),
            p.rx_packets.to_string(),
            p.rx_bytes.to_string(),
            p.tx_packets.to_string(),
            p.tx_bytes.to_string(),
            drops(&p.drops),
        ]);
    }
    let mut out = t.render();
    out.push_str(&kernel_stats(stats));
    let _ = writeln!(out, "\nswitch drops: {}", drops(&stats.switch_drops));
    if !stats.counters.is_empty() {
        let _ = writeln!(out, "switch counters: {}", drops(&stats.counters));
    }
    if !stats.peers.is_empty() {
        let _ = writeln!(out, "\n{}", peers(&stats.peers));
    }
    out
}

/// The kernel's side of each endpoint's TAP, below the ports' table: what
/// the endpoint sent and weft read (or the kernel dropped, unread), what
/// weft wrote and the kernel took (or dropped); then, one per line, the
/// ports whose counters could not be read and why. Empty when no port has
/// a TAP.
fn kernel_stats(stats: &Stats) -> String {
    let mut t = Table::new(&[
        "PORT",
        "ENDPOINT",
        "FROM_ENDPOINT",
        "DROPPED_UNREAD",
        "TO_ENDPOINT",
        "DROPPED_BY_KERNEL",
    ])
    .right(&[0, 2, 3, 4, 5]);
    let mut unavailable = String::new();
    for p in &stats.ports {
        match &p.kernel {
            Some(KernelPortStats::Counters(c)) => t.row(vec![
                p.port.to_string(),
                or_dash(&p.endpoint),
                c.from_endpoint_packets.to_string(),
                c.from_endpoint_dropped.to_string(),
                c.to_endpoint_packets.to_string(),
                c.to_endpoint_dropped.to_string(),
            ]),
            Some(KernelPortStats::Unavailable(why)) => {
                let _ = writeln!(
                    unavailable,
                    "port {} ({}): unavailable: {why}",
                    p.port,
                    or_dash(&p.endpoint)
                );
            }
            None => {}
        }
    }
    if t.rows.is_empty() && unavailable.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nTAP counters in the endpoints' namespaces (kernel):\n");
    if !t.rows.is_empty() {
        out.push_str(&t.render());
    }
    out.push_str(&unavailable);
    out
}

/// `weft network inspect`: the network's fields, then its endpoints.
pub fn inspect(detail: &NetworkDetail) -> String {
    let n = &detail.network;
    let routes = if detail.routes_to.is_empty() {
        "- (isolated)".to_string()
    } else {
        detail.routes_to.join(", ")
    };
    let mut out = key_values(&[
        ("name", n.name.clone()),
        ("subnet", n.subnet.to_string()),
        ("gateway", n.gateway.to_string()),
        ("gateway mac", n.gateway_mac.clone()),
        ("mtu", n.mtu.to_string()),
        ("internal", yes_no(n.internal)),
        ("nat filtering", n.nat.filtering.as_str().to_string()),
        (
            "nat limits",
            format!(
                "{} flows, {} ports per endpoint",
                n.nat.max_flows, n.nat.max_ports
            ),
        ),
        ("endpoints", n.endpoints.to_string()),
        ("free addresses", n.free_addresses.to_string()),
        ("routes to", routes),
    ]);
    out.push('\n');
    out.push_str(&endpoints(&detail.attached));
    out
}

/// `weft attach`: the new endpoint, one field per line.
pub fn attached(e: &EndpointInfo) -> String {
    key_values(&[
        ("name", e.name.clone()),
        ("interface", e.ifname.clone()),
        ("ip", e.ip.to_string()),
        ("mac", e.mac.clone()),
    ])
}

/// `weft network create`.
pub fn created(n: &NetworkInfo) -> String {
    format!(
        "created network {} (subnet {}, gateway {}, mtu {}{})\n",
        n.name,
        n.subnet,
        n.gateway,
        n.mtu,
        if n.internal { ", internal" } else { "" }
    )
}

/// `weft status`.
pub fn status(s: &StatusInfo, socket: &std::path::Path) -> String {
    let mut rows = vec![
        ("daemon", format!("running (pid {})", s.pid)),
        ("socket", socket.display().to_string()),
        ("version", s.version.clone()),
        ("api version", s.api_version.to_string()),
        ("networks", s.networks.to_string()),
        ("endpoints", s.endpoints.to_string()),
    ];
    if let Some(vtep) = s.vtep_ip {
        rows.push(("vtep", vtep.to_string()));
    }
    if let Some(cpu) = s.worker_following_cpu {
        rows.push(("datapath", format!("next to its endpoints on CPU {cpu}")));
    }
    if s.receive_threaded_ports > 0 {
        rows.push((
            "receive threads",
            format!(
                "a flood is received in a kernel thread on {} TAP(s)",
                s.receive_threaded_ports
            ),
        ));
    }
    if let Some(store) = &s.store {
        let state = if store.connected {
            "connected".to_string()
        } else {
            format!(
                "DISCONNECTED ({}), forwarding on the last known state",
                store.last_error.as_deref().unwrap_or("reconnecting")
            )
        };
        rows.push(("store", format!("{} ({})", store.url, store.prefix)));
        rows.push(("store state", state));
        rows.push(("store revision", store.revision.to_string()));
        rows.push(("hosts", store.hosts.to_string()));
        rows.push(("remote endpoints", store.remote_endpoints.to_string()));
    }
    let mut out = key_values(&rows);
    if s.api_version != API_VERSION {
        let _ = writeln!(
            out,
            "warning: this weft speaks API version {API_VERSION}, the daemon speaks {}",
            s.api_version
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PortStats;

    #[test]
    fn table_pads_columns_and_trims_lines() {
        let mut t = Table::new(&["NAME", "N"]).right(&[1]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["longer-name".into(), "100".into()]);
        assert_eq!(
            t.render(),
            "NAME           N\n\
             a              1\n\
             longer-name  100\n"
        );
    }

    #[test]
    fn table_left_columns_have_no_trailing_spaces() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["xyz".into(), "".into()]);
        t.row(vec!["q".into()]);
        let text = t.render();
        assert_eq!(text, "A    B\nxyz\nq\n");
        assert!(text.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn empty_table_is_just_the_header() {
        assert_eq!(routes(&[]), "NETWORK_A  NETWORK_B\n");
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let mut t = Table::new(&["X", "Y"]);
        t.row(vec!["é".into(), "1".into()]);
        assert_eq!(t.render(), "X  Y\né  1\n");
    }

    fn net(name: &str, endpoints: usize) -> NetworkInfo {
        NetworkInfo {
            name: name.into(),
            subnet: "10.1.0.0/24".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            gateway_mac: "02:00:00:00:00:01".into(),
            mtu: 1500,
            internal: false,
            vni: None,
            ip_range: None,
            endpoints,
            free_addresses: 250,
            nat: Default::default(),
        }
    }

    fn ep(name: &str, port: u32) -> EndpointInfo {
        EndpointInfo {
            name: name.into(),
            network: "front".into(),
            netns: "/var/run/netns/a".into(),
            ifname: "eth0".into(),
            ip: "10.1.0.2/24".parse().unwrap(),
            mac: "02:42:0a:01:00:02".into(),
            port,
            owner: None,
        }
    }

    #[test]
    fn network_table() {
        let text = networks(&[net("front", 3), net("b", 12)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME   SUBNET       GATEWAY    MTU  INTERNAL  ENDPOINTS",
                "front  10.1.0.0/24  10.1.0.1  1500  no                3",
                "b      10.1.0.0/24  10.1.0.1  1500  no               12",
            ]
        );
    }

    #[test]
    fn endpoint_table() {
        let text = endpoints(&[ep("a", 1), ep("bb", 10)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME  NETWORK  NETNS             IFNAME  IP           MAC                PORT"
        );
        assert_eq!(
            lines[1],
            "a     front    /var/run/netns/a  eth0    10.1.0.2/24  02:42:0a:01:00:02     1"
        );
        assert_eq!(
            lines[2],
            "bb    front    /var/run/netns/a  eth0    10.1.0.2/24  02:42:0a:01:00:02    10"
        );
    }

    #[test]
    fn fdb_table() {
        let text = fdb(&[
            FdbEntry {
                network: "front".into(),
                mac: "02:42:0a:01:00:02".into(),
                port: 1,
                endpoint: Some("a".into()),
                age_secs: 1.25,
                vtep: None,
                r#static: false,
            },
            FdbEntry {
                network: "front".into(),
                mac: "02:42:0a:01:00:03".into(),
                port: 2,
                endpoint: None,
                age_secs: 600.0,
                vtep: Some("192.0.2.7".into()),
                r#static: false,
            },
        ]);
        assert_eq!(
            text,
            "NETWORK  MAC                PORT  ENDPOINT  VTEP        AGE\n\
             front    02:42:0a:01:00:02     1  a         -          1.2s\n\
             front    02:42:0a:01:00:03     2  -         192.0.2.7   10m\n"
        );
    }

    #[test]
    fn stats_table_shows_drops_by_reason() {
        let mut drops_a = BTreeMap::new();
        drops_a.insert("spoofed_source".to_string(), 3);
        drops_a.insert("no_route".to_string(), 1);
        drops_a.insert("zero".to_string(), 0);
        let s = Stats {
            ports: vec![PortStats {
                port: 1,
                network: "front".into(),
                endpoint: "a".into(),
                rx_packets: 10,
                rx_bytes: 980,
                tx_packets: 9,
                tx_bytes: 882,
                storm_pauses: 0,
                drops: drops_a,
                kernel: None,
            }],
            switch_drops: BTreeMap::new(),
            counters: BTreeMap::new(),
            peers: Vec::new(),
        };
        assert_eq!(
            stats(&s),
            "PORT  NETWORK  ENDPOINT  RX_PACKETS  RX_BYTES  TX_PACKETS  TX_BYTES  DROPS\n   \
             1  front    a                 10       980           9       882  no_route=1,spoofed_source=3\n\
             \n\
             switch drops: -\n"
        );
    }

    #[test]
    fn stats_show_the_kernel_side_of_each_tap() {
        let port = |n: u32, endpoint: &str, kernel| PortStats {
            port: n,
            network: "front".into(),
            endpoint: endpoint.into(),
            rx_packets: 100,
            rx_bytes: 6400,
            tx_packets: 90,
            tx_bytes: 5760,
            storm_pauses: 0,
            drops: BTreeMap::new(),
            kernel,
        };
        let read = crate::api::TapCounters {
            from_endpoint_packets: 100,
            from_endpoint_dropped: 4000,
            to_endpoint_packets: 90,
            to_endpoint_dropped: 2,
        };
        let s = Stats {
            ports: vec![
                port(1, "a", Some(KernelPortStats::Counters(read))),
                port(
                    2,
                    "b",
                    Some(KernelPortStats::Unavailable(
                        "namespace /run/netns/b is gone".into(),
                    )),
                ),
                port(3, "uplink:eth0", None),
            ],
            ..Stats::default()
        };
        assert_eq!(
            stats(&s),
            "PORT  NETWORK  ENDPOINT     RX_PACKETS  RX_BYTES  TX_PACKETS  TX_BYTES  DROPS\n   \
             1  front    a                   100      6400          90      5760  -\n   \
             2  front    b                   100      6400          90      5760  -\n   \
             3  front    uplink:eth0         100      6400          90      5760  -\n\
             \n\
             TAP counters in the endpoints' namespaces (kernel):\n\
             PORT  ENDPOINT  FROM_ENDPOINT  DROPPED_UNREAD  TO_ENDPOINT  DROPPED_BY_KERNEL\n   \
             1  a                   100            4000           90                  2\n\
             port 2 (b): unavailable: namespace /run/netns/b is gone\n\
             \n\
             switch drops: -\n"
        );
        // Only the unavailable: no table, just the reason.
        let s = Stats {
            ports: vec![port(
                2,
                "b",
                Some(KernelPortStats::Unavailable("gone".into())),
            )],
            ..Stats::default()
        };
        assert!(
            stats(&s).contains("(kernel):\nport 2 (b): unavailable: gone\n"),
            "{}",
            stats(&s)
        );
    }

    #[test]
    fn attach_prints_one_field_per_line() {
        assert_eq!(
            attached(&ep("a", 1)),
            "name:      a\n\
             interface: eth0\n\
             ip:        10.1.0.2/24\n\
             mac:       02:42:0a:01:00:02\n"
        );
    }

    #[test]
    fn inspect_lists_fields_then_endpoints() {
        let detail = NetworkDetail {
            network: net("front", 1),
            attached: vec![ep("a", 1)],
            routes_to: vec!["back".into()],
        };
        let text = inspect(&detail);
        assert!(text.starts_with("name:           front\nsubnet:         10.1.0.0/24\n"));
        assert!(text.contains("routes to:      back\n"));
        assert!(text.contains("\n\nNAME  NETWORK"));
    }

    #[test]
    fn ages() {
        assert_eq!(age(0.04), "0.0s");
        assert_eq!(age(42.4), "42s");
        assert_eq!(age(300.0), "5m");
        assert_eq!(age(3.0 * 3600.0), "3h");
    }

    #[test]
    fn decode_reports_shape_errors() {
        let err =
            decode::<Vec<NetworkInfo>>(serde_json::json!({"x": 1}), "network ls").unwrap_err();
        assert!(err.to_string().contains("network ls"));
    }
}
