//! The read-only requests: status, listings, `network inspect`, the
//! forwarding database and the counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use weft_api::{
    EndpointInfo, FdbEntry, KernelPortStats, NetworkDetail, NetworkInfo, RouteInfo, Stats,
    StatusInfo, TapCounters, API_VERSION,
};

use crate::error::{datapath_error, ApiResult};
use crate::ports::{Datapath, Netns, Provisioner};
use crate::state::{port_stats, Control, Network};

/// One port's counters as the metrics exporter reads them.
#[derive(Debug, Clone)]
pub struct PortSource {
    /// The network (`-` for the uplink).
    pub network: String,
    /// The endpoint (`uplink:IF` for the uplink).
    pub endpoint: String,
    pub port: u32,
    pub counters: std::sync::Arc<weft_switch::counters::PortCounters>,
    /// Where the endpoint's TAP is, to read the kernel's counters of it
    /// (`None` for the uplink).
    pub tap: Option<TapLocation>,
}

/// An endpoint's TAP device: its namespace (the path it was attached by and
/// the namespace's identity) and its name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapLocation {
    pub netns: Netns,
    pub ifname: String,
}

/// What the metrics exporter reads, copied out under the control plane's
/// lock: the counters are shared atomics, read after it is released.
#[derive(Debug, Clone, Default)]
pub struct MetricsSources {
    /// Every port: the endpoints and the uplink.
    pub ports: Vec<PortSource>,
    /// The overlay's peers and their traffic.
    pub peers: Vec<weft_api::PeerInfo>,
    /// The socket uplink's own counters, when that is the uplink.
    pub socket_uplink: Option<std::sync::Arc<weft_hostnet::Counters>>,
}

/// An ARP reply (RFC 826) from `sha`/`spa` to `tha`/`tpa`, in an Ethernet
/// frame addressed to `tha`.
fn arp_reply(
    sha: weft_packet::MacAddr,
    spa: std::net::Ipv4Addr,
    tha: weft_packet::MacAddr,
    tpa: std::net::Ipv4Addr,
) -> Vec<u8> {
    use weft_packet::{arp, ethernet, write_ipv4, write_u16, ETH_HEADER_LEN};
    let mut f = vec![0u8; ETH_HEADER_LEN + arp::LEN];
    tha.write(&mut f, ethernet::DST);
    sha.write(&mut f, ethernet::SRC);
    write_u16(&mut f, ethernet::ETHERTYPE, weft_packet::ETHERTYPE_ARP);
    let a = &mut f[ETH_HEADER_LEN..];
    write_u16(a, arp::HTYPE, arp::HTYPE_ETHERNET);
    write_u16(a, arp::PTYPE, weft_packet::ETHERTYPE_IPV4);
    a[arp::HLEN] = 6;
    a[arp::PLEN] = 4;
    write_u16(a, arp::OPER, arp::OP_REPLY);
    sha.write(a, arp::SHA);
    write_ipv4(a, arp::SPA, spa);
    tha.write(a, arp::THA);
    write_ipv4(a, arp::TPA, tpa);
    f
}

impl<D: Datapath, P: Provisioner> Control<D, P> {
    /// Every port's counters (shared, so they can be read after the
    /// control plane's lock is released), the peers' traffic and the socket
    /// uplink's counters.
    pub fn metrics_sources(&self) -> MetricsSources {
        let mut ports = Vec::new();
        for net in self.networks.values() {
            for ep in net.endpoints.values() {
                ports.push(PortSource {
                    network: net.name.clone(),
                    endpoint: ep.name.clone(),
                    port: ep.port.0,
                    counters: std::sync::Arc::clone(&ep.counters),
                    tap: Some(TapLocation {
                        netns: Netns {
                            path: ep.netns.clone(),
                            id: ep.netns_id,
                        },
                        ifname: ep.ifname.clone(),
                    }),
                });
            }
        }
        if let Some(u) = &self.nat.uplink {
            ports.push(PortSource {
                network: "-".into(),
                endpoint: format!("uplink:{}", u.interface),
                port: u.port.0,
                counters: std::sync::Arc::clone(&u.counters),
                tap: None,
            });
        }
        MetricsSources {
            ports,
            peers: self.peer_list(),
            socket_uplink: self
                .nat
                .uplink
                .as_ref()
                .and_then(|u| u.socket_counters.clone()),
        }
    }

    /// `capture`: the port of endpoint `endpoint` (of `network`, needed
    /// when several networks have an endpoint of that name).
    pub fn capture_target(
        &self,
        network: Option<&str>,
        endpoint: &str,
    ) -> ApiResult<weft_api::CaptureInfo> {
        let found: Vec<(&Network, &crate::state::Endpoint)> = self
            .networks
            .values()
            .filter(|n| network.is_none_or(|want| n.name == want))
            .filter_map(|n| n.endpoints.get(endpoint).map(|e| (n, e)))
            .collect();
        match found.as_slice() {
            [(n, e)] => Ok(weft_api::CaptureInfo {
                network: n.name.clone(),
                endpoint: e.name.clone(),
                port: e.port.0,
                ifname: e.ifname.clone(),
            }),
            [] => match network {
                Some(net) => {
                    self.network(net)?;
                    Err(crate::state::no_endpoint(net, endpoint))
                }
                None => Err(crate::error::err(
                    weft_api::ErrorKind::NotFound,
                    format!("no endpoint named `{endpoint}`: see `weft endpoints`"),
                )),
            },
            several => Err(crate::error::err(
                weft_api::ErrorKind::InvalidArgument,
                format!(
                    "endpoints named `{endpoint}` are in networks {}: pass --network",
                    several
                        .iter()
                        .map(|(n, _)| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// ARP replies that tell each endpoint, once more, the MACs of its
    /// gateway and of the other endpoints of its network: sent after a
    /// restart, they resolve at once the neighbor entries the workloads'
    /// kernels left incomplete while the TAPs had no carrier (a kernel only
    /// updates entries it already has, so nothing new is learned from
    /// them). One frame per (port, neighbor).
    pub fn neighbor_announcements(&self) -> Vec<(weft_switch::PortId, Vec<u8>)> {
        let mut frames = Vec::new();
        for net in self.networks.values() {
            let neighbors: Vec<(std::net::Ipv4Addr, weft_packet::MacAddr)> =
                std::iter::once((net.gateway, net.gateway_mac))
                    .chain(net.endpoints.values().map(|e| (e.ip, e.mac)))
                    .collect();
            for ep in net.endpoints.values() {
                for &(ip, mac) in &neighbors {
                    if ip != ep.ip {
                        frames.push((ep.port, arp_reply(mac, ip, ep.mac, ep.ip)));
                    }
                }
            }
        }
        frames
    }

    /// `status`: version, API version and what the daemon holds.
    pub fn status(&self) -> StatusInfo {
        StatusInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: API_VERSION,
            pid: std::process::id(),
            networks: self.networks.len(),
            endpoints: self.networks.values().map(|n| n.endpoints.len()).sum(),
            vxlan_listen: self.overlay.bound,
            vtep_ip: self.overlay.vtep_ip(),
            store: self.store_status(),
            worker_following_cpu: self.datapath.counters().worker_following_cpu(),
            receive_threaded_ports: self
                .datapath
                .counters()
                .receive_threaded
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// `network ls`.
    pub fn network_list(&self) -> Vec<NetworkInfo> {
        self.networks.values().map(Network::info).collect()
    }

    /// `network inspect`: a network with its endpoints and routes.
    pub fn network_inspect(&self, name: &str) -> ApiResult<NetworkDetail> {
        let net = self.network(name)?;
        Ok(NetworkDetail {
            network: net.info(),
            attached: net
                .endpoints
                .values()
                .map(|e| net.endpoint_info(e))
                .collect(),
            routes_to: self.routes_of(name),
        })
    }

    /// `route ls`.
    pub fn route_list(&self) -> Vec<RouteInfo> {
        self.routes
            .iter()
            .map(|(a, b)| RouteInfo {
                a: a.clone(),
                b: b.clone(),
            })
            .collect()
    }

    /// `endpoints`: of one network, or of all.
    pub fn endpoint_list(&self, network: Option<&str>) -> ApiResult<Vec<EndpointInfo>> {
        let nets: Vec<&Network> = match network {
            Some(name) => vec![self.network(name)?],
            None => self.networks.values().collect(),
        };
        Ok(nets
            .iter()
            .flat_map(|n| n.endpoints.values().map(|e| n.endpoint_info(e)))
            .collect())
    }

    /// `fdb`: the MAC addresses the switch knows, of one network or all.
    pub fn fdb(&self, network: Option<&str>) -> ApiResult<Vec<FdbEntry>> {
        let id = match network {
            Some(name) => Some(self.network(name)?.id),
            None => None,
        };
        let learned = self.datapath.fdb(id).map_err(datapath_error)?;
        let mut rows = Vec::with_capacity(learned.len());
        for (net_id, entry) in learned {
            let Some(net) = self.network_by_id(net_id) else {
                continue;
            };
            let endpoint = net
                .endpoints
                .values()
                .find(|e| e.port == entry.port)
                .map(|e| e.name.clone());
            let vtep = net
                .tunnels
                .iter()
                .find(|(_, &p)| p == entry.port)
                .map(|(ip, _)| ip.to_string());
            rows.push(FdbEntry {
                network: net.name.clone(),
                mac: entry.mac.to_string(),
                port: entry.port.0,
                endpoint,
                age_secs: (entry.age.as_secs_f64() * 10.0).round() / 10.0,
                vtep,
                r#static: entry.is_static,
            });
        }
        Ok(rows)
    }

    /// `stats`: per-port and switch-wide counters, and the kernel's
    /// counters of each endpoint's TAP (one short request per endpoint; a
    /// port whose counters cannot be read says why and the others are
    /// unaffected). A daemon serving many endpoints should read those off
    /// its lock instead: [`stats_without_kernel`](Self::stats_without_kernel).
    pub fn stats(&self) -> Stats {
        let (mut stats, taps) = self.stats_without_kernel();
        for tap in &taps {
            let read = self
                .provisioner
                .tap_counters(&tap.tap.netns, &tap.tap.ifname);
            tap.fill(&mut stats, read);
        }
        stats
    }

    /// `stats` without the TAPs' kernel counters, and the TAPs to read
    /// them from ([`TapToRead::fill`]): everything that needs the control
    /// plane, so that the slow part (entering each endpoint's namespace)
    /// can run after the caller lets go of it.
    pub fn stats_without_kernel(&self) -> (Stats, Vec<TapToRead>) {
        let mut ports = Vec::new();
        let mut taps = Vec::new();
        for net in self.networks.values() {
            for ep in net.endpoints.values() {
                ports.push(port_stats(ep.port, &net.name, &ep.name, &ep.counters));
                taps.push(TapToRead {
                    port: ep.port.0,
                    tap: TapLocation {
                        netns: Netns {
                            path: ep.netns.clone(),
                            id: ep.netns_id,
                        },
                        ifname: ep.ifname.clone(),
                    },
                });
            }
        }
        if let Some(u) = &self.nat.uplink {
            let name = format!("uplink:{}", u.interface);
            ports.push(port_stats(u.port, "-", &name, &u.counters));
        }
        ports.sort_by_key(|p| p.port);
        let c = self.datapath.counters();
        let nonzero = |pairs: &[(&str, &AtomicU64)]| -> BTreeMap<String, u64> {
            pairs
                .iter()
                .map(|(name, v)| (name.to_string(), v.load(Ordering::Relaxed)))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        let switch_drops = nonzero(&c.drops());
        let mut counters = nonzero(&[
            ("arp_suppressed", &c.arp_suppressed),
            ("icmp_errors_sent", &c.icmp_errors_sent),
            ("conntrack_early_evicted", &c.conntrack_early_evicted),
            ("neighbor_queued", &c.neighbor_queued),
            ("vxlan_rco_rx", &c.vxlan_rco_rx),
            ("vxlan_rco_tx", &c.vxlan_rco_tx),
        ]);
        if let Some(s) = self
            .nat
            .uplink
            .as_ref()
            .and_then(|u| u.socket_counters.as_ref())
        {
            // The socket uplink's own: `sockets_ping_refused` and the like.
            for (name, v) in nonzero(&s.all()) {
                counters.insert(format!("sockets_{name}"), v);
            }
        }
        let stats = Stats {
            ports,
            switch_drops,
            counters,
            peers: self.peer_list(),
        };
        (stats, taps)
    }
}

/// An endpoint's TAP whose kernel counters a `stats` reply still needs
/// ([`Control::stats_without_kernel`]).
#[derive(Debug, Clone)]
pub struct TapToRead {
    /// The endpoint's switch port.
    pub port: u32,
    pub tap: TapLocation,
}

impl TapToRead {
    /// Puts what reading the TAP's counters gave into its port's row.
    pub fn fill(&self, stats: &mut Stats, read: ApiResult<TapCounters>) {
        if let Some(row) = stats.ports.iter_mut().find(|p| p.port == self.port) {
            row.kernel = Some(match read {
                Ok(c) => KernelPortStats::Counters(c),
                Err(e) => KernelPortStats::Unavailable(e.message),
            });
        }
    }
}
