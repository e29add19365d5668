//! One entry point for every API request: [`Control::handle`] matches the
//! request to its typed operation and wraps the result in a [`Response`].

use std::path::PathBuf;

use weft_api::{Request, Response};

use crate::endpoint::AttachSpec;
use crate::error::ApiResult;
use crate::network::NetworkSpec;
use crate::ports::{Datapath, Provisioner};
use crate::state::Control;

impl<D: Datapath, P: Provisioner> Control<D, P> {
    /// Applies one request: its result, or why it was refused (and then
    /// nothing changed).
    ///
    /// A request that changes what is saved (endpoints, published ports,
    /// the uplink, services) is saved once it is made; when saving fails,
    /// what it added is taken away again (an attached endpoint, a published
    /// port, a service or backend) and the request is refused. A removal
    /// that cannot be saved stays made, and the error says so. The
    /// operations on networks, routes and peers save (and undo) themselves.
    pub fn handle(&mut self, request: Request) -> ApiResult<Response> {
        self.handle_pinned(request, None)
    }

    /// [`Control::handle`], with an `attach` made through `pinned_netns`
    /// (see [`AttachSpec::pinned_netns`]); other requests ignore it.
    pub fn handle_pinned(
        &mut self,
        request: Request,
        pinned_netns: Option<PathBuf>,
    ) -> ApiResult<Response> {
        let saves_after = matches!(
            request,
            Request::Attach { .. }
                | Request::Detach { .. }
                | Request::UplinkSet { .. }
                | Request::UplinkRemove
                | Request::PublishAdd { .. }
                | Request::PublishRemove { .. }
                | Request::ServiceCreate { .. }
                | Request::ServiceRemove { .. }
                | Request::ServiceBackendAdd { .. }
                | Request::ServiceBackendRemove { .. }
        );
        let undo = if saves_after {
            Some(request.clone())
        } else {
            None
        };
        let response = self.apply_request(request, pinned_netns)?;
        if let Some(request) = undo {
            if let Err(e) = self.save() {
                if self.undo_addition(&request, &response) {
                    return Err(e);
                }
                self.save_made()?;
            }
        }
        Ok(response)
    }

    /// Takes back what `request` added; `false` when it added nothing that
    /// can be taken back (a removal, the uplink).
    fn undo_addition(&mut self, request: &Request, response: &Response) -> bool {
        let undone = match (request, response) {
            (Request::Attach { network, .. }, Response::Endpoint(ep)) => {
                self.detach(network, &ep.name).map(drop)
            }
            (Request::PublishAdd { .. }, Response::Publish(p)) => self
                .publish_remove(
                    &p.network,
                    &p.endpoint,
                    &format!("{}/{}", p.host_port, p.proto),
                )
                .map(drop),
            (Request::ServiceCreate { name, .. }, _) => self.service_remove(name).map(drop),
            (Request::ServiceBackendAdd { name, endpoint }, _) => {
                self.service_backend(name, endpoint, false).map(drop)
            }
            _ => return false,
        };
        if let Err(e) = &undone {
            tracing::error!(error = %e.message, "could not undo a change that was not saved");
        }
        undone.is_ok()
    }

    fn apply_request(
        &mut self,
        request: Request,
        pinned_netns: Option<PathBuf>,
    ) -> ApiResult<Response> {
        Ok(match request {
            Request::Status => Response::Status(self.status()),
            Request::NetworkCreate {
                name,
                subnet,
                gateway,
                mtu,
                internal,
                vni,
                ip_range,
                nat_filtering,
                nat_max_flows,
                nat_max_ports,
            } => Response::Network(self.network_create(NetworkSpec {
                name,
                subnet,
                gateway,
                mtu,
                internal,
                vni,
                ip_range,
                nat_filtering,
                nat_max_flows,
                nat_max_ports,
            })?),
            Request::NetworkList => Response::Networks(self.network_list()),
            Request::NetworkInspect { name } => {
                Response::NetworkDetail(self.network_inspect(&name)?)
            }
            Request::NetworkRemove { name } => Response::Network(self.network_remove(&name)?),
            Request::Attach {
                network,
                netns,
                pid,
                name,
                ip,
                mac,
                ifname,
                publish,
                aliases,
                no_resolv_conf,
                owner,
            } => Response::Endpoint(self.attach(AttachSpec {
                network,
                netns,
                pid,
                name,
                ip,
                mac,
                ifname,
                publish,
                aliases,
                no_resolv_conf,
                owner,
                pinned_netns,
            })?),
            Request::Detach { network, endpoint } => {
                Response::Endpoint(self.detach(&network, &endpoint)?)
            }
            Request::RouteAllow { a, b } => Response::Route(self.route_set(&a, &b, true)?),
            Request::RouteDeny { a, b } => Response::Route(self.route_set(&a, &b, false)?),
            Request::RouteList => Response::Routes(self.route_list()),
            Request::Endpoints { network } => {
                Response::Endpoints(self.endpoint_list(network.as_deref())?)
            }
            Request::Fdb { network } => Response::Fdb(self.fdb(network.as_deref())?),
            Request::Stats => Response::Stats(self.stats()),
            Request::PeerAdd { addr, remote_csum } => {
                Response::Peer(self.peer_add(&addr, remote_csum)?)
            }
            Request::PeerList => Response::Peers(self.peer_list()),
            Request::PeerRemove { ip } => Response::Peer(self.peer_remove(&ip)?),
            Request::FdbAdd { network, mac, vtep } => {
                Response::StaticMac(self.fdb_add(&network, &mac, &vtep)?)
            }
            Request::NeighborAdd { network, ip, mac } => {
                Response::StaticNeighbor(self.neighbor_add(&network, &ip, &mac)?)
            }
            Request::Neighbors { network } => {
                Response::Neighbors(self.neighbor_list(network.as_deref())?)
            }
            Request::UplinkSet {
                interface,
                ip,
                gateway,
                sockets,
            } => Response::Uplink(self.uplink_set_kind(
                &interface,
                &ip,
                gateway.as_deref(),
                sockets,
            )?),
            Request::UplinkShow => Response::Uplink(self.uplink_show()?),
            Request::UplinkRemove => Response::Uplink(self.uplink_remove()?),
            Request::PublishAdd {
                network,
                endpoint,
                spec,
                host_ip,
            } => Response::Publish(self.publish_add_on(
                &network,
                &endpoint,
                &spec,
                host_ip.as_deref(),
            )?),
            Request::PublishList => Response::Publishes(self.publish_list()),
            Request::PublishRemove {
                network,
                endpoint,
                spec,
            } => Response::Publish(self.publish_remove(&network, &endpoint, &spec)?),
            Request::ServiceCreate {
                name,
                network,
                vip,
                port,
                backends,
                lb,
            } => Response::Service(self.service_create(
                &name,
                &network,
                &vip,
                &port,
                &backends,
                lb.as_deref(),
            )?),
            Request::ServiceList => Response::Services(self.service_list()),
            Request::ServiceRemove { name } => Response::Service(self.service_remove(&name)?),
            Request::ServiceBackendAdd { name, endpoint } => {
                Response::Service(self.service_backend(&name, &endpoint, true)?)
            }
            Request::ServiceBackendRemove { name, endpoint } => {
                Response::Service(self.service_backend(&name, &endpoint, false)?)
            }
            Request::Conntrack => Response::Flows(self.conntrack_list()?),
            Request::ConntrackFlush => Response::Flushed(self.conntrack_flush()?),
            Request::Reset => Response::Reset(self.reset()?),
            // The daemon streams the frames; here only the port is found.
            Request::Capture {
                network, endpoint, ..
            } => Response::Capture(self.capture_target(network.as_deref(), &endpoint)?),
        })
    }
}
