//! `weft`: a userspace virtual switch and router for network namespaces.
//!
//! `weft daemon` runs the switch and serves the control API on a Unix socket;
//! every other command is a client of that API (see `docs/api.md`).

mod bench;
mod demo;
mod output;
mod probe;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgGroup, Args, Parser, Subcommand};

pub(crate) use weft_api as api;
pub(crate) use weft_api::client;

use crate::api::Request;
use crate::client::ClientError;
use weft_daemon::WorkerCpu;

/// Exit status when the daemon refused a request (and for other failures).
const EXIT_FAILURE: u8 = 1;
/// Exit status when no daemon listens on the socket.
const EXIT_NOT_RUNNING: u8 = 3;
/// Exit status when `weft demo` was interrupted (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

const ABOUT: &str = "A userspace virtual switch and router for network namespaces";

const LONG_ABOUT: &str = "\
A userspace virtual switch and router for network namespaces.

`weft daemon` runs one process that switches and routes Ethernet frames between
TAP devices it places inside network namespaces. Every other command talks to
that daemon over its control socket.";

const MAIN_AFTER_HELP: &str = "\
The control socket is /run/weft/weft.sock as root and
$XDG_RUNTIME_DIR/weft/weft.sock otherwise; --socket or WEFT_SOCKET overrides it
for every command, the daemon included.

Exit status: 0 success, 1 the daemon refused the request (or another failure),
2 usage error, 3 no daemon is listening on the socket.

Quick look (as root): weft demo";

const NETWORK_CREATE_AFTER_HELP: &str = "\
Examples:
  weft network create front --subnet 10.1.0.0/24
  weft network create back --subnet 10.2.0.0/24 --gateway 10.2.0.254 --mtu 9000
  weft network create db --subnet 10.3.0.0/24 --internal";

const CAPTURE_AFTER_HELP: &str = "\
Examples:
  weft capture web1 | tcpdump -n -r -
  weft capture web1 --network front -w web1.pcap -c 100";

const ATTACH_AFTER_HELP: &str = "\
Examples:
  ip netns add web1
  weft attach front --netns web1
  weft attach front --netns web1 --name web1 --ip 10.1.0.10 --ifname eth1
  weft attach front --pid \"$(podman inspect -f '{{.State.Pid}}' web)\" --json";

#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = MAIN_AFTER_HELP,
    propagate_version = true
)]
struct Cli {
    /// The daemon's control socket [default: /run/weft/weft.sock as root,
    /// $XDG_RUNTIME_DIR/weft/weft.sock otherwise]
    #[arg(long, global = true, env = "WEFT_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, inspect and remove networks
    #[command(subcommand)]
    Network(NetworkCommand),

    /// Put a TAP device into a network namespace and connect it to a network
    ///
    /// The namespace is named (`ip netns add NAME`), given by its path
    /// (`/run/netns/X`, `/proc/PID/ns/net`, a bind mount), or by the PID of
    /// a process inside it. The daemon picks a free address from the network's
    /// subnet unless --ip is given, configures the interface (plus a default
    /// route via the gateway for the namespace's first network), and prints
    /// the endpoint's name, interface, IP/prefix and MAC.
    #[command(
        after_help = ATTACH_AFTER_HELP,
        group(ArgGroup::new("namespace").required(true).args(["netns", "pid"]))
    )]
    Attach(AttachArgs),

    /// Disconnect an endpoint from a network and delete its TAP device
    Detach {
        /// The network the endpoint is attached to
        network: String,
        /// The endpoint's name (see `weft endpoints`)
        #[arg(value_name = "EP")]
        endpoint: String,
    },

    /// Allow or deny routing between networks (isolated by default)
    #[command(subcommand)]
    Route(RouteCommand),

    /// List attached endpoints
    Endpoints {
        /// Only endpoints of this network
        network: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },

    /// List learned MAC addresses (the forwarding database), or feed it
    #[command(args_conflicts_with_subcommands = true)]
    Fdb {
        #[command(subcommand)]
        add: Option<FdbCommand>,
        /// Only addresses learned on this network
        network: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },

    /// Manage the remote VTEPs (other hosts) of overlay networks
    #[command(subcommand)]
    Peer(PeerCommand),

    /// List or feed remote IP → MAC bindings (ARP suppression, routing)
    #[command(subcommand)]
    Neighbor(NeighborCommand),

    /// Set, show or remove the uplink weft reaches the world through
    #[command(subcommand)]
    Uplink(UplinkCommand),

    /// Publish an endpoint's port on the uplink address, or list/remove
    #[command(args_conflicts_with_subcommands = true)]
    Publish {
        #[command(subcommand)]
        cmd: Option<PublishCommand>,
        /// The endpoint's network
        network: Option<String>,
        /// The endpoint
        #[arg(value_name = "EP")]
        endpoint: Option<String>,
        /// HOSTPORT:PORT[/tcp|/udp]
        #[arg(value_name = "HOSTPORT:PORT[/PROTO]")]
        spec: Option<String>,
        /// With the socket uplink: the host address to listen on (default:
        /// every address)
        #[arg(long, value_name = "IP")]
        host_ip: Option<String>,
    },

    /// Service VIPs load-balanced over endpoints
    #[command(subcommand)]
    Service(ServiceCommand),

    /// List tracked connections (NAT), or flush them
    #[command(args_conflicts_with_subcommands = true)]
    Conntrack {
        #[command(subcommand)]
        cmd: Option<ConntrackCommand>,
        #[command(flatten)]
        json: JsonFlag,
    },

    /// Show per-port packet and byte counters and drops by reason
    Stats {
        #[command(flatten)]
        json: JsonFlag,
    },

    /// Check that the daemon is running and show its version
    Status {
        #[command(flatten)]
        json: JsonFlag,
    },

    /// Capture an endpoint's frames, both directions, as pcap
    ///
    /// Writes to FILE with -w, else to standard output (for `| tcpdump -r -`
    /// or Wireshark). Runs until COUNT frames were written or it is
    /// interrupted; frames the daemon could not queue while the writer fell
    /// behind are left out. An offloaded TCP super-frame (up to 64 KiB)
    /// appears as one frame, as on the TAP itself.
    #[command(after_help = CAPTURE_AFTER_HELP)]
    Capture {
        /// The endpoint (see `weft endpoints`)
        endpoint: String,
        /// Its network, when endpoints of several networks have that name
        #[arg(long, value_name = "NET")]
        network: Option<String>,
        /// Write the pcap to FILE instead of standard output
        #[arg(short = 'w', value_name = "FILE")]
        write: Option<PathBuf>,
        /// Stop after COUNT frames
        #[arg(short = 'c', value_name = "COUNT")]
        count: Option<u64>,
    },

    /// Print a shell completion script for bash, zsh, fish, elvish or
    /// powershell
    ///
    /// bash: `weft completions bash > /etc/bash_completion.d/weft`;
    /// zsh: `weft completions zsh > "${fpath[1]}/_weft"`;
    /// fish: `weft completions fish > ~/.config/fish/completions/weft.fish`.
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },

    /// Write man pages: weft(1) and one page per command (weft-attach(1),
    /// weft-network-create(1), ...)
    ///
    /// With DIR, every page is written there (e.g. `weft man
    /// /usr/local/share/man/man1`); without, weft(1) goes to standard output.
    Man {
        /// Where to write the pages
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },

    /// Remove everything weft made: services, endpoints and their TAP
    /// devices, the uplink, networks, routes and peers
    ///
    /// Stopping the daemon removes nothing (a restarted daemon takes its
    /// endpoints back); this does.
    Reset {
        #[command(flatten)]
        json: JsonFlag,
    },

    /// Run the switch and serve the control API in the foreground
    ///
    /// Stops on SIGINT or SIGTERM, leaving every endpoint in place: a daemon
    /// started again on the same --state-dir takes everything back (`weft
    /// reset` removes it all). Needs CAP_NET_ADMIN to create TAP devices and
    /// enter network namespaces. The socket is created with mode 0660.
    Daemon(Box<DaemonArgs>),

    /// Show weft working: namespaces, two networks, pings, routing (needs root)
    ///
    /// Starts a private daemon, creates four network namespaces and two
    /// networks, attaches them, and demonstrates switching, isolation and
    /// routing with ping. Everything it creates is removed when it finishes,
    /// fails or is interrupted with Ctrl-C.
    Demo,

    /// Benchmark weft against other switches: throughput, packet rate,
    /// latency and CPU (needs root)
    ///
    /// Builds each topology (same host, VXLAN overlay) in network namespaces
    /// of its own, with weft and with the switches of --against (Linux
    /// bridge and vxlan, Open vSwitch userspace, VDE), measures them with
    /// iperf3 and sockperf, prints a table with ratios to the kernel
    /// baseline and writes results.json and chart.svg. Everything it
    /// creates is removed when it finishes, fails or is interrupted.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum NetworkCommand {
    /// Create a network: a subnet with a gateway address inside weft
    #[command(after_help = NETWORK_CREATE_AFTER_HELP)]
    Create {
        /// The network's name
        name: String,
        /// The network's IPv4 subnet, e.g. 10.1.0.0/24
        #[arg(long, value_name = "CIDR")]
        subnet: String,
        /// The gateway address inside the subnet [default: its first host address]
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
        /// MTU of the endpoints' interfaces, 68 to 65521 [default: 1500]
        #[arg(long, value_name = "N")]
        mtu: Option<u32>,
        /// Make the network internal: nothing leaves it through its gateway
        /// (no routes to other networks, no uplink)
        #[arg(long)]
        internal: bool,
        /// Make it an overlay network spanning the daemon's peers, with this
        /// VXLAN network identifier (1 to 16777215); its MTU defaults to the
        /// underlay MTU minus 50
        #[arg(long, value_name = "N")]
        vni: Option<u32>,
        /// The part of the subnet this host hands out, so that hosts sharing
        /// an overlay subnet never pick the same address
        #[arg(long, value_name = "CIDR")]
        ip_range: Option<String>,
        /// Which inbound packets an endpoint's NAT mapping admits:
        /// `address-dependent` (from addresses it sent to) or
        /// `endpoint-independent` (from anyone; best for peer-to-peer)
        /// [default: address-dependent]
        #[arg(long, value_name = "MODE")]
        nat_filtering: Option<weft_api::NatFiltering>,
        /// Most connections one endpoint may have tracked at once
        /// [default: 16384]
        #[arg(long, value_name = "N")]
        nat_max_flows: Option<u32>,
        /// Most NAT mappings (external ports) one endpoint may hold at
        /// once [default: 8192]
        #[arg(long, value_name = "N")]
        nat_max_ports: Option<u32>,
        #[command(flatten)]
        json: JsonFlag,
    },

    /// List networks
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        json: JsonFlag,
    },

    /// Show a network's settings, routes and endpoints
    Inspect {
        /// The network's name
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },

    /// Remove a network (it must have no endpoints left)
    #[command(visible_alias = "remove")]
    Rm {
        /// The network's name
        name: String,
    },
}

#[derive(Debug, Args)]
struct AttachArgs {
    /// The network to connect to
    network: String,
    /// A named network namespace (as made by `ip netns add NAME`), or the
    /// path of any network namespace file when it starts with `/`
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// A process whose network namespace to use (e.g. a container's PID)
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// The endpoint's name, unique in the network [default: the namespace
    /// name, or pid-PID]
    #[arg(long, value_name = "EP")]
    name: Option<String>,
    /// The address to use [default: the lowest free address of the subnet]
    #[arg(long, value_name = "IP")]
    ip: Option<String>,
    /// The MAC address to use [default: derived from the network and
    /// endpoint names]
    #[arg(long, value_name = "MAC")]
    mac: Option<String>,
    /// The interface name inside the namespace [default: the first free ethN]
    #[arg(long, value_name = "IF")]
    ifname: Option<String>,
    /// Publish a port on the uplink address: HOSTPORT:PORT[/tcp|/udp]
    /// (repeatable)
    #[arg(long, value_name = "HOSTPORT:PORT[/PROTO]")]
    publish: Vec<String>,
    /// Another DNS name for the endpoint in its network (repeatable)
    #[arg(long, value_name = "NAME")]
    alias: Vec<String>,
    /// Do not write /etc/netns/NAME/resolv.conf pointing at the gateway
    #[arg(long)]
    no_resolv_conf: bool,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Debug, Subcommand)]
enum UplinkCommand {
    /// Use an interface of the daemon's namespace as the uplink, with an
    /// address (and MAC) of weft's own on that link; or, with --sockets,
    /// the daemon's own host sockets (no privilege needed)
    Set {
        /// The interface (weft reads and writes it with AF_PACKET; needs
        /// CAP_NET_RAW)
        #[arg(
            long,
            value_name = "IF",
            required_unless_present = "sockets",
            conflicts_with = "sockets"
        )]
        interface: Option<String>,
        /// Reach the world through the daemon's own TCP, UDP and ping
        /// sockets: works unprivileged; published ports listen on the host
        #[arg(long)]
        sockets: bool,
        /// weft's address on the link, IP/PREFIX (with --sockets: its side
        /// of the virtual link, default 10.0.2.15/24)
        #[arg(long, value_name = "IP/PREFIX", required_unless_present = "sockets")]
        ip: Option<String>,
        /// The next hop for everything off the link (with --sockets: the
        /// host's side, which also stands for the host's loopback; default
        /// 10.0.2.2)
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
    },
    /// Show the uplink
    Show {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Stop using the uplink
    #[command(visible_alias = "remove")]
    Rm,
}

#[derive(Debug, Subcommand)]
enum PublishCommand {
    /// List published ports
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Stop publishing a port: NETWORK EP HOSTPORT[/proto]
    #[command(visible_alias = "remove")]
    Rm {
        network: String,
        #[arg(value_name = "EP")]
        endpoint: String,
        #[arg(value_name = "HOSTPORT[/PROTO]")]
        spec: String,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Create a VIP in a network whose connections are spread over backends
    Create {
        name: String,
        #[arg(long, value_name = "NET")]
        network: String,
        /// The service address, a free address of the network
        #[arg(long, value_name = "IP")]
        vip: String,
        /// PORT[/tcp|/udp]
        #[arg(long, value_name = "PORT[/PROTO]")]
        port: String,
        /// A backend endpoint of the network (repeatable)
        #[arg(long, value_name = "EP")]
        backend: Vec<String>,
        /// rr (round robin) or hash (of the 5-tuple)
        #[arg(long, value_name = "rr|hash", default_value = "rr")]
        lb: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List services
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a service (open connections finish)
    #[command(visible_alias = "remove")]
    Rm { name: String },
    /// Add or remove backends
    #[command(subcommand)]
    Backend(BackendCommand),
}

#[derive(Debug, Subcommand)]
enum BackendCommand {
    /// Add a backend to a service
    Add {
        name: String,
        #[arg(value_name = "EP")]
        endpoint: String,
    },
    /// Remove a backend: it gets no new connections, open ones finish
    #[command(visible_alias = "remove")]
    Rm {
        name: String,
        #[arg(value_name = "EP")]
        endpoint: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConntrackCommand {
    /// Forget every tracked connection
    Flush,
}

#[derive(Debug, Subcommand)]
enum FdbCommand {
    /// Tell the switch that MAC sits behind a peer VTEP (never ages)
    Add {
        /// The overlay network
        network: String,
        /// The remote MAC address
        mac: String,
        /// The peer it sits behind
        #[arg(long, value_name = "IP")]
        vtep: String,
    },
}

#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Add a remote VTEP: IP or IP:PORT (default port 4789)
    Add {
        #[arg(value_name = "IP[:PORT]")]
        addr: String,
        /// Send with remote checksum offload (draft-herbert-vxlan-rco): the
        /// inner TCP checksums are left for the peer, the outer UDP
        /// checksum covers the data. Only for a peer that takes it: weft, or
        /// a Linux vxlan device with `remcsumrx` (any other drops them).
        #[arg(long)]
        remote_csum: bool,
    },
    /// List peers with their traffic and drops
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a peer and its tunnels
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(value_name = "IP")]
        ip: String,
    },
}

#[derive(Debug, Subcommand)]
enum NeighborCommand {
    /// Tell the switch that IP is at MAC in an overlay network
    Add {
        network: String,
        ip: String,
        mac: String,
    },
    /// List remote IP → MAC bindings, learned or fed
    #[command(visible_alias = "list")]
    Ls {
        /// Only bindings of this network
        network: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Let two networks route to each other through their gateways
    Allow {
        #[arg(value_name = "NET_A")]
        a: String,
        #[arg(value_name = "NET_B")]
        b: String,
    },
    /// Stop routing between two networks (the default)
    Deny {
        #[arg(value_name = "NET_A")]
        a: String,
        #[arg(value_name = "NET_B")]
        b: String,
    },
    /// List pairs of networks allowed to route to each other
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// Where networks and routes are kept across restarts [default:
    /// /var/lib/weft as root, $XDG_STATE_HOME/weft or ~/.local/state/weft
    /// otherwise]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Seconds a learned MAC address lives without being seen (fractions
    /// allowed, must be > 0)
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_mac_aging)]
    mac_aging: Duration,
    /// Where to receive VXLAN from peers: ADDR or ADDR:PORT (bound when the
    /// first overlay network or peer is created)
    #[arg(long, value_name = "ADDR[:PORT]", default_value = "0.0.0.0:4789", value_parser = parse_listen)]
    vxlan_listen: SocketAddrV4,
    /// The address peers reach this host at [default: the listen address
    /// when it is not 0.0.0.0, else that of the interface holding the
    /// default route]
    #[arg(long, value_name = "IP")]
    vtep_ip: Option<Ipv4Addr>,
    /// MTU of the underlay network the tunnels cross
    #[arg(long, value_name = "N", default_value = "1500")]
    underlay_mtu: u32,
    /// Most connections NAT tracks at once; new ones are refused beyond it
    #[arg(long, value_name = "N", default_value = "65536")]
    conntrack_max: usize,
    /// Microseconds the datapath keeps polling, without sleeping, after it
    /// runs out of work: the longest adaptive busy-poll window (0 turns it
    /// off; at most 1000). It saves a wake-up per hop on request/response
    /// traffic, and never spins while no traffic flows, nor under bulk
    /// traffic or a flood it does not forward beside the sender
    #[arg(long, value_name = "USECS", default_value = "50", value_parser = parse_busy_poll)]
    busy_poll: Duration,
    /// Where the datapath worker thread runs: `follow` moves it next to
    /// endpoints that wait on each other (request/response traffic) or
    /// beside the sender of a flood of small frames, and back under a bulk
    /// transfer (needs CAP_BPF; otherwise as `any`), `any` leaves it to
    /// the scheduler, a CPU number pins it there
    #[arg(long, value_name = "follow|any|CPU", default_value = "follow", value_parser = parse_worker_cpu)]
    worker_cpu: WorkerCpu,
    /// Source ports masquerade hands out, FIRST-LAST; when given, only
    /// these [default: 32768-60999, and a free source port outside it is
    /// kept]
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_port_range)]
    snat_ports: Option<(u16, u16)>,
    /// Apply the RFC minimum NAT timeouts where Linux's are shorter: UDP
    /// 120 s even without a reply (RFC 4787 REQ-5), transitory TCP states
    /// 240 s (RFC 5382 REQ-5), ICMP query 60 s (RFC 5508 REQ-1). Explicit
    /// --nat-*-timeout flags still win
    #[arg(long)]
    nat_strict: bool,
    /// Seconds a UDP flow lives without packets once answered [default:
    /// 120]
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    nat_udp_timeout: Option<Duration>,
    /// Seconds a UDP flow that never got an answer lives [default: 30, 120
    /// with --nat-strict]
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    nat_udp_unreplied_timeout: Option<Duration>,
    /// Seconds an established TCP connection lives idle [default: 7440]
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    nat_tcp_established_timeout: Option<Duration>,
    /// Seconds a TCP connection lives idle while opening or closing
    /// (SYN_SENT, SYN_RECV, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT)
    /// [default: Linux's 30 to 120 per state, 240 with --nat-strict]
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    nat_tcp_transitory_timeout: Option<Duration>,
    /// Seconds an ICMP echo session lives idle [default: 30, 60 with
    /// --nat-strict]
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    nat_icmp_timeout: Option<Duration>,
    /// DNS server for names outside weft's networks, IP[:PORT] (repeatable)
    /// [default: the nameservers of /etc/resolv.conf]
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_upstream)]
    dns_upstream: Vec<std::net::SocketAddr>,
    /// Seconds a DNS-over-TCP connection to a gateway may sit idle before
    /// the gateway closes it [default: 10]
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    dns_tcp_idle_timeout: Option<Duration>,
    /// Storm control: broadcast frames per second each endpoint may send,
    /// with a burst of one second's worth; beyond it they are dropped and
    /// counted (`storm_broadcast`). 0 turns the limit off
    #[arg(long, value_name = "PPS", default_value = "1000")]
    storm_broadcast: u32,
    /// Storm control: multicast frames per second each endpoint may send
    /// (`storm_multicast`; 0: no limit)
    #[arg(long, value_name = "PPS", default_value = "5000")]
    storm_multicast: u32,
    /// Storm control: frames per second to unknown unicast addresses (which
    /// are flooded) each port may send (`storm_unknown_unicast`; 0: no
    /// limit)
    #[arg(long, value_name = "PPS", default_value = "10000")]
    storm_unknown_unicast: u32,
    /// What to log: error, warn, info, debug, trace, or a filter such as
    /// `info,weft_control=debug` [default: RUST_LOG, else info]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// How to write log lines: `text` for people, `json` for collectors
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: weft_daemon::LogFormat,
    /// Join a cluster of hosts sharing an etcd store,
    /// etcd://HOST:PORT[,HOST:PORT...] (etcds:// for TLS): overlay
    /// networks, address blocks, hosts and endpoints then come from the
    /// store [default: this host alone]
    #[arg(long, value_name = "URL", env = "WEFT_STORE")]
    store: Option<String>,
    /// Key prefix of weft's records in the store
    #[arg(long, value_name = "PREFIX", default_value = weft_cluster::DEFAULT_PREFIX, requires = "store")]
    store_prefix: String,
    /// etcd user, when etcd has authentication on (the password comes from
    /// --store-password or WEFT_STORE_PASSWORD)
    #[arg(long, value_name = "USER", requires = "store")]
    store_user: Option<String>,
    /// Password of --store-user
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "WEFT_STORE_PASSWORD",
        hide_env_values = true,
        requires = "store_user"
    )]
    store_password: Option<String>,
    /// CA bundle (PEM) that signed etcd's certificate, for an etcds://
    /// store [default: /etc/ssl/certs/ca-certificates.crt]
    #[arg(long, value_name = "FILE", requires = "store")]
    store_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present to an etcds:// store that checks
    /// them (etcd's --client-cert-auth); needs --store-key
    #[arg(long, value_name = "FILE", requires = "store")]
    store_cert: Option<PathBuf>,
    /// Private key (PEM) of --store-cert
    #[arg(long, value_name = "FILE", requires = "store")]
    store_key: Option<PathBuf>,
    /// Remote checksum offload with the other weft hosts of the --store
    /// cluster: `on` asks them for it in this host's record and sends with
    /// it to hosts that ask; `off` does neither (for a path that zeroes or
    /// drops UDP checksums). Peers added by hand use `peer add
    /// --remote-csum`
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set, requires = "store")]
    remote_csum: bool,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (e.g.
    /// 127.0.0.1:9477) [default: none]
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_metrics_addr)]
    metrics: Option<std::net::SocketAddr>,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 1e7) {
        return Err(format!(
            "`{text}` is out of range: give more than 0 and at most 10000000 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("`{text}` is neither `on` nor `off`")),
    }
}

fn parse_metrics_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not ADDR:PORT, e.g. 127.0.0.1:9477 or [::1]:9477"))
}

fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{text}` is not FIRST-LAST, e.g. 32768-60999");
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let first: u16 = a.trim().parse().map_err(|_| bad())?;
    let last: u16 = b.trim().parse().map_err(|_| bad())?;
    if first == 0 || first > last {
        return Err(bad());
    }
    Ok((first, last))
}

fn parse_upstream(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{text}` is not IP or IP:PORT"))
}

fn parse_listen(text: &str) -> Result<SocketAddrV4, String> {
    if let Ok(addr) = text.parse::<SocketAddrV4>() {
        return Ok(addr);
    }
    text.parse::<Ipv4Addr>()
        .map(|ip| SocketAddrV4::new(ip, 4789))
        .map_err(|_| format!("`{text}` is not ADDR or ADDR:PORT (IPv4), e.g. 0.0.0.0:4789"))
}

#[derive(Debug, Args, Clone, Copy)]
struct JsonFlag {
    /// Print the reply's result as JSON, for programs
    #[arg(long)]
    json: bool,
}

fn parse_worker_cpu(text: &str) -> Result<WorkerCpu, String> {
    match text {
        "follow" => Ok(WorkerCpu::Follow),
        "any" => Ok(WorkerCpu::Scheduler),
        n => n.parse().map(WorkerCpu::Pin).map_err(|_| {
            format!("{text:?} is not a placement: give `follow`, `any` or a CPU number such as 0")
        }),
    }
}

fn parse_busy_poll(text: &str) -> Result<Duration, String> {
    let max = weft_daemon::MAX_BUSY_POLL.as_micros();
    let us: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of microseconds"))?;
    if u128::from(us) > max {
        return Err(format!("{us} µs is too long: use 0 (off) to {max}"));
    }
    Ok(Duration::from_micros(us))
}

fn parse_mac_aging(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("must be more than 0 seconds, got `{text}`"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{text}`: {e}"))
}

/// `/var/lib/weft` when privileged (`CAP_NET_ADMIN` over the host, see
/// [`client::is_privileged`]), `$XDG_STATE_HOME/weft` or
/// `~/.local/state/weft` otherwise.
fn default_state_dir() -> PathBuf {
    if client::is_privileged() {
        return PathBuf::from("/var/lib/weft");
    }
    if let Some(dir) = client::env_dir("XDG_STATE_HOME") {
        return dir.join("weft");
    }
    match client::env_dir("HOME") {
        Some(home) => home.join(".local/state/weft"),
        None => PathBuf::from("/var/lib/weft"),
    }
}

fn main() -> ExitCode {
    // The rootless helper (weft_os::userns) must stay single-threaded to
    // enter a user namespace: dispatch before anything else runs.
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(weft_os::userns::HELPER_ARG) {
        let rest: Vec<String> = args.collect();
        let code = weft_os::userns::helper_main(&rest);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = report(&err);
            ExitCode::from(code)
        }
    }
}

/// Prints `err` to stderr and picks the exit status for it.
fn report(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(client_err) = cause.downcast_ref::<ClientError>() {
            match client_err {
                // Exactly the daemon's message: it says what to do.
                ClientError::Refused(api_err) => {
                    eprintln!("error: {}", api_err.message);
                    return EXIT_FAILURE;
                }
                ClientError::NotRunning { .. } => {
                    eprintln!("error: {client_err}");
                    return EXIT_NOT_RUNNING;
                }
                _ => {}
            }
        }
        if cause.downcast_ref::<demo::Interrupted>().is_some() {
            eprintln!("weft demo: interrupted");
            return EXIT_INTERRUPTED;
        }
    }
    eprintln!("error: {err:#}");
    EXIT_FAILURE
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let socket = cli.socket.unwrap_or_else(client::default_socket_path);
    match cli.command {
        Command::Daemon(args) => {
            let user = match (args.store_user, args.store_password) {
                (Some(user), Some(password)) => Some((user, password)),
                (Some(user), None) => anyhow::bail!(
                    "--store-user {user} needs a password: pass --store-password or set WEFT_STORE_PASSWORD"
                ),
                _ => None,
            };
            let store = match &args.store {
                Some(url) => Some(weft_cluster::StoreConfig::parse(
                    url,
                    &args.store_prefix,
                    user,
                    &weft_cluster::TlsFiles {
                        ca: args.store_ca,
                        cert: args.store_cert,
                        key: args.store_key,
                    },
                )?),
                None => None,
            };
            Ok(weft_daemon::run(weft_daemon::DaemonOptions {
                socket,
                state_dir: args.state_dir.unwrap_or_else(default_state_dir),
                mac_aging: args.mac_aging,
                vxlan_listen: args.vxlan_listen,
                vtep_ip: args.vtep_ip,
                underlay_mtu: args.underlay_mtu,
                conntrack_max: args.conntrack_max,
                busy_poll: args.busy_poll,
                worker_cpu: args.worker_cpu,
                snat_ports: args.snat_ports,
                nat_timeouts: weft_daemon::NatTimeoutOptions {
                    strict: args.nat_strict,
                    udp: args.nat_udp_timeout,
                    udp_unreplied: args.nat_udp_unreplied_timeout,
                    tcp_established: args.nat_tcp_established_timeout,
                    tcp_transitory: args.nat_tcp_transitory_timeout,
                    icmp: args.nat_icmp_timeout,
                },
                dns_upstreams: args.dns_upstream,
                dns_tcp_idle_timeout: args.dns_tcp_idle_timeout,
                storm: weft_daemon::StormLimits {
                    broadcast: weft_daemon::StormRate::per_sec(args.storm_broadcast),
                    multicast: weft_daemon::StormRate::per_sec(args.storm_multicast),
                    unknown_unicast: weft_daemon::StormRate::per_sec(args.storm_unknown_unicast),
                },
                log_level: args.log_level,
                log_format: args.log_format,
                store,
                metrics: args.metrics,
                remote_csum: args.remote_csum,
            })?)
        }
        Command::Demo => {
            let exe = std::env::current_exe().context("cannot find the weft executable")?;
            demo::run(&exe)
        }
        Command::Bench(args) => {
            let exe = std::env::current_exe().context("cannot find the weft executable")?;
            bench::run(&exe, args)
        }
        Command::Network(cmd) => network(&socket, cmd),
        Command::Attach(args) => {
            let json = args.json.json;
            let result = request(
                &socket,
                Request::Attach {
                    network: args.network,
                    netns: args.netns,
                    pid: args.pid,
                    name: args.name,
                    ip: args.ip,
                    mac: args.mac,
                    ifname: args.ifname,
                    publish: args.publish,
                    aliases: args.alias,
                    no_resolv_conf: args.no_resolv_conf,
                    owner: None,
                },
                "attach",
            )?;
            print_result(json, result, "attach", |e| output::attached(&e))
        }
        Command::Detach { network, endpoint } => {
            request(
                &socket,
                Request::Detach {
                    network: network.clone(),
                    endpoint: endpoint.clone(),
                },
                "detach",
            )?;
            println!("detached {endpoint} from {network}");
            Ok(())
        }
        Command::Route(RouteCommand::Allow { a, b }) => {
            request(
                &socket,
                Request::RouteAllow {
                    a: a.clone(),
                    b: b.clone(),
                },
                "route allow",
            )?;
            println!("{a} and {b} may now route to each other");
            Ok(())
        }
        Command::Route(RouteCommand::Deny { a, b }) => {
            request(
                &socket,
                Request::RouteDeny {
                    a: a.clone(),
                    b: b.clone(),
                },
                "route deny",
            )?;
            println!("{a} and {b} are isolated from each other");
            Ok(())
        }
        Command::Route(RouteCommand::Ls { json }) => {
            let result = request(&socket, Request::RouteList, "route ls")?;
            print_result(json.json, result, "route ls", |r: Vec<_>| {
                output::routes(&r)
            })
        }
        Command::Endpoints { network, json } => {
            let result = request(&socket, Request::Endpoints { network }, "endpoints")?;
            print_result(json.json, result, "endpoints", |e: Vec<_>| {
                output::endpoints(&e)
            })
        }
        Command::Fdb {
            add: Some(FdbCommand::Add { network, mac, vtep }),
            ..
        } => {
            request(
                &socket,
                Request::FdbAdd {
                    network: network.clone(),
                    mac: mac.clone(),
                    vtep: vtep.clone(),
                },
                "fdb add",
            )?;
            println!("{mac} in {network} is behind VTEP {vtep}");
            Ok(())
        }
        Command::Fdb {
            add: None,
            network,
            json,
        } => {
            let result = request(&socket, Request::Fdb { network }, "fdb")?;
            print_result(json.json, result, "fdb", |f: Vec<_>| output::fdb(&f))
        }
        Command::Peer(PeerCommand::Add { addr, remote_csum }) => {
            let result = request(&socket, Request::PeerAdd { addr, remote_csum }, "peer add")?;
            let info: api::PeerInfo =
                serde_json::from_value(result).context("reading the daemon's reply")?;
            if info.remote_csum {
                println!("added peer {} (remote checksum offload)", info.addr);
            } else {
                println!("added peer {}", info.addr);
            }
            Ok(())
        }
        Command::Peer(PeerCommand::Ls { json }) => {
            let result = request(&socket, Request::PeerList, "peer ls")?;
            print_result(json.json, result, "peer ls", |p: Vec<_>| output::peers(&p))
        }
        Command::Peer(PeerCommand::Rm { ip }) => {
            request(&socket, Request::PeerRemove { ip: ip.clone() }, "peer rm")?;
            println!("removed peer {ip}");
            Ok(())
        }
        Command::Neighbor(NeighborCommand::Add { network, ip, mac }) => {
            request(
                &socket,
                Request::NeighborAdd {
                    network: network.clone(),
                    ip: ip.clone(),
                    mac: mac.clone(),
                },
                "neighbor add",
            )?;
            println!("{ip} in {network} is at {mac}");
            Ok(())
        }
        Command::Uplink(UplinkCommand::Set {
            interface,
            sockets,
            ip,
            gateway,
        }) => {
            let result = request(
                &socket,
                Request::UplinkSet {
                    interface: interface.unwrap_or_default(),
                    ip: ip.unwrap_or_default(),
                    gateway,
                    sockets,
                },
                "uplink set",
            )?;
            print_result(false, result, "uplink set", |u: api::UplinkInfo| {
                output::uplink(&u)
            })
        }
        Command::Uplink(UplinkCommand::Show { json }) => {
            let result = request(&socket, Request::UplinkShow, "uplink show")?;
            print_result(json.json, result, "uplink show", |u: api::UplinkInfo| {
                output::uplink(&u)
            })
        }
        Command::Uplink(UplinkCommand::Rm) => {
            request(&socket, Request::UplinkRemove, "uplink rm")?;
            println!("removed the uplink");
            Ok(())
        }
        Command::Publish {
            cmd: Some(PublishCommand::Ls { json }),
            ..
        } => {
            let result = request(&socket, Request::PublishList, "publish ls")?;
            print_result(
                json.json,
                result,
                "publish ls",
                |p: Vec<api::PublishInfo>| output::published(&p),
            )
        }
        Command::Publish {
            cmd:
                Some(PublishCommand::Rm {
                    network,
                    endpoint,
                    spec,
                }),
            ..
        } => {
            request(
                &socket,
                Request::PublishRemove {
                    network,
                    endpoint,
                    spec: spec.clone(),
                },
                "publish rm",
            )?;
            println!("unpublished {spec}");
            Ok(())
        }
        Command::Publish {
            cmd: None,
            network: Some(network),
            endpoint: Some(endpoint),
            spec: Some(spec),
            host_ip,
        } => {
            let result = request(
                &socket,
                Request::PublishAdd {
                    network,
                    endpoint,
                    spec,
                    host_ip,
                },
                "publish",
            )?;
            let p: api::PublishInfo =
                serde_json::from_value(result).context("reading the daemon's reply")?;
            println!(
                "published {}/{} -> {} ({} in {})",
                p.host_port, p.proto, p.target, p.endpoint, p.network
            );
            Ok(())
        }
        Command::Publish { .. } => {
            anyhow::bail!("usage: weft publish NETWORK EP HOSTPORT:PORT[/tcp|/udp] (or `weft publish ls`, `weft publish rm NETWORK EP HOSTPORT[/proto]`)")
        }
        Command::Service(ServiceCommand::Create {
            name,
            network,
            vip,
            port,
            backend,
            lb,
            json,
        }) => {
            let result = request(
                &socket,
                Request::ServiceCreate {
                    name,
                    network,
                    vip,
                    port,
                    backends: backend,
                    lb: Some(lb),
                },
                "service create",
            )?;
            print_result(
                json.json,
                result,
                "service create",
                |s: api::ServiceInfo| output::services(std::slice::from_ref(&s)),
            )
        }
        Command::Service(ServiceCommand::Ls { json }) => {
            let result = request(&socket, Request::ServiceList, "service ls")?;
            print_result(
                json.json,
                result,
                "service ls",
                |s: Vec<api::ServiceInfo>| output::services(&s),
            )
        }
        Command::Service(ServiceCommand::Rm { name }) => {
            request(
                &socket,
                Request::ServiceRemove { name: name.clone() },
                "service rm",
            )?;
            println!("removed service {name}");
            Ok(())
        }
        Command::Service(ServiceCommand::Backend(BackendCommand::Add { name, endpoint })) => {
            request(
                &socket,
                Request::ServiceBackendAdd {
                    name: name.clone(),
                    endpoint: endpoint.clone(),
                },
                "service backend add",
            )?;
            println!("{endpoint} now backs {name}");
            Ok(())
        }
        Command::Service(ServiceCommand::Backend(BackendCommand::Rm { name, endpoint })) => {
            request(
                &socket,
                Request::ServiceBackendRemove {
                    name: name.clone(),
                    endpoint: endpoint.clone(),
                },
                "service backend rm",
            )?;
            println!("{endpoint} no longer backs {name} (open connections finish)");
            Ok(())
        }
        Command::Conntrack {
            cmd: Some(ConntrackCommand::Flush),
            ..
        } => {
            let result = request(&socket, Request::ConntrackFlush, "conntrack flush")?;
            println!(
                "flushed {} connections",
                result.get("flushed").and_then(|v| v.as_u64()).unwrap_or(0)
            );
            Ok(())
        }
        Command::Conntrack { cmd: None, json } => {
            let result = request(&socket, Request::Conntrack, "conntrack")?;
            print_result(json.json, result, "conntrack", |f: Vec<api::FlowEntry>| {
                output::flows(&f)
            })
        }
        Command::Neighbor(NeighborCommand::Ls { network, json }) => {
            let result = request(&socket, Request::Neighbors { network }, "neighbor ls")?;
            print_result(json.json, result, "neighbor ls", |n: Vec<_>| {
                output::neighbors(&n)
            })
        }
        Command::Capture {
            endpoint,
            network,
            write,
            count,
        } => capture(&socket, endpoint, network, write, count),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "weft", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(e).context("writing the completion script")
                }
                _ => Ok(()),
            }
        }
        Command::Man { dir } => man_pages(dir.as_deref()),
        Command::Reset { json } => {
            let result = request(&socket, Request::Reset, "reset")?;
            print_result(json.json, result, "reset", |r: api::ResetInfo| {
                format!(
                    "removed {} services, {} endpoints, {} uplink, {} networks, {} peers\n",
                    r.services,
                    r.endpoints,
                    u8::from(r.uplink),
                    r.networks,
                    r.peers
                )
            })
        }
        Command::Stats { json } => {
            let result = request(&socket, Request::Stats, "stats")?;
            print_result(json.json, result, "stats", |s| output::stats(&s))
        }
        Command::Status { json } => {
            let result = request(&socket, Request::Status, "status")?;
            print_result(json.json, result, "status", |s| output::status(&s, &socket))
        }
    }
}

/// `weft man`: weft(1) to standard output, or every page into `dir`.
fn man_pages(dir: Option<&Path>) -> anyhow::Result<()> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    let Some(dir) = dir else {
        let mut out = std::io::stdout().lock();
        return clap_mangen::Man::new(cmd)
            .render(&mut out)
            .context("writing the man page");
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = 0;
    write_pages(&cmd, "weft", dir, &mut written)?;
    eprintln!("wrote {written} man pages to {}", dir.display());
    Ok(())
}

/// Writes `NAME.1` for `cmd` and, recursively, `NAME-SUB.1` for each of its
/// subcommands.
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut usize,
) -> anyhow::Result<()> {
    let page = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    let path = dir.join(format!("{name}.1"));
    let mut file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    clap_mangen::Man::new(page)
        .render(&mut file)
        .with_context(|| format!("writing {}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// `weft capture`: asks the daemon for the port's pcap stream and copies it
/// to the file or standard output until the daemon ends it.
fn capture(
    socket: &Path,
    endpoint: String,
    network: Option<String>,
    write: Option<PathBuf>,
    count: Option<u64>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    if count == Some(0) {
        anyhow::bail!("-c 0 captures nothing: give a count of at least 1, or leave -c out");
    }
    // Opened first, so a bad path is refused before the capture starts.
    let mut out: Box<dyn std::io::Write> = match &write {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let req = Request::Capture {
        network,
        endpoint,
        count,
    };
    let (info, mut stream) =
        client::call_streaming(socket, &req).context("`weft capture` failed")?;
    let info: api::CaptureInfo = output::decode(info, "capture")?;
    eprintln!(
        "capturing {} of network {} ({} in its namespace, port {}){}",
        info.endpoint,
        info.network,
        info.ifname,
        info.port,
        write
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    );
    // Copied as it comes, so a reader of a pipe sees each frame at once.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = std::io::Read::read(&mut stream, &mut buf).context("reading the capture")?;
        if n == 0 {
            break;
        }
        match out.write_all(&buf[..n]).and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader (`| tcpdump -c N`, `| head`) has had enough.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(e).context("writing the capture"),
        }
    }
    Ok(())
}

fn network(socket: &Path, cmd: NetworkCommand) -> anyhow::Result<()> {
    match cmd {
        NetworkCommand::Create {
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
            json,
        } => {
            let result = request(
                socket,
                Request::NetworkCreate {
                    name: name.clone(),
                    subnet,
                    gateway,
                    mtu,
                    internal,
                    vni,
                    ip_range,
                    nat_filtering,
                    nat_max_flows,
                    nat_max_ports,
                },
                "network create",
            )?;
            if json.json {
                print!("{}", output::json(&result));
                return Ok(());
            }
            // The network exists now; a reply we cannot render is no error.
            match serde_json::from_value(result) {
                Ok(info) => print!("{}", output::created(&info)),
                Err(_) => println!("created network {name}"),
            }
            Ok(())
        }
        NetworkCommand::Ls { json } => {
            let result = request(socket, Request::NetworkList, "network ls")?;
            print_result(json.json, result, "network ls", |n: Vec<_>| {
                output::networks(&n)
            })
        }
        NetworkCommand::Inspect { name, json } => {
            let result = request(socket, Request::NetworkInspect { name }, "network inspect")?;
            print_result(json.json, result, "network inspect", |d| {
                output::inspect(&d)
            })
        }
        NetworkCommand::Rm { name } => {
            request(
                socket,
                Request::NetworkRemove { name: name.clone() },
                "network rm",
            )?;
            println!("removed network {name}");
            Ok(())
        }
    }
}

/// Sends one request; `what` names the command in error messages.
fn request(socket: &Path, req: Request, what: &str) -> anyhow::Result<serde_json::Value> {
    client::call(socket, &req).with_context(|| format!("`weft {what}` failed"))
}

/// Prints `result` as JSON or, decoded as `T`, through `human`.
fn print_result<T, F>(
    json: bool,
    result: serde_json::Value,
    what: &str,
    human: F,
) -> anyhow::Result<()>
where
    T: serde::de::DeserializeOwned,
    F: FnOnce(T) -> String,
{
    if json {
        print!("{}", output::json(&result));
    } else {
        let value: T = output::decode(result, what)?;
        print!("{}", human(value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn attach_needs_exactly_one_namespace() {
        let err = Cli::try_parse_from(["weft", "attach", "front"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["weft", "attach", "front", "--netns", "a", "--pid", "1"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(Cli::try_parse_from(["weft", "attach", "front", "--pid", "1"]).is_ok());
    }

    #[test]
    fn socket_is_global() {
        let cli =
            Cli::try_parse_from(["weft", "network", "ls", "--socket", "/tmp/x.sock"]).unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/x.sock")));
        let cli = Cli::try_parse_from(["weft", "daemon", "--socket", "/tmp/y.sock"]).unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/y.sock")));
    }

    #[test]
    fn worker_cpu_is_follow_any_or_a_number() {
        assert_eq!(parse_worker_cpu("follow"), Ok(WorkerCpu::Follow));
        assert_eq!(parse_worker_cpu("any"), Ok(WorkerCpu::Scheduler));
        assert_eq!(parse_worker_cpu("3"), Ok(WorkerCpu::Pin(3)));
        assert!(parse_worker_cpu("-1")
            .unwrap_err()
            .contains("`follow`, `any` or a CPU"));
        assert!(parse_worker_cpu("first").is_err());
        match Cli::try_parse_from(["weft", "daemon"]).unwrap().command {
            Command::Daemon(args) => assert_eq!(args.worker_cpu, WorkerCpu::Follow),
            _ => unreachable!(),
        }
    }

    #[test]
    fn busy_poll_is_microseconds_up_to_a_millisecond() {
        assert_eq!(parse_busy_poll("0"), Ok(Duration::ZERO));
        assert_eq!(parse_busy_poll("50"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_busy_poll("1000"), Ok(Duration::from_millis(1)));
        assert!(parse_busy_poll("1001").unwrap_err().contains("too long"));
        assert!(parse_busy_poll("-1").is_err());
        assert!(parse_busy_poll("0.5").is_err());
        let cli = Cli::try_parse_from(["weft", "daemon"]).unwrap();
        match cli.command {
            Command::Daemon(args) => assert_eq!(args.busy_poll, Duration::from_micros(50)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn mac_aging_accepts_fractions_and_rejects_nonpositive() {
        assert_eq!(parse_mac_aging("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_mac_aging("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_mac_aging("0").is_err());
        assert!(parse_mac_aging("-1").is_err());
        assert!(parse_mac_aging("inf").is_err());
        assert!(parse_mac_aging("NaN").is_err());
        assert!(parse_mac_aging("soon").is_err());
        let cli = Cli::try_parse_from(["weft", "daemon"]).unwrap();
        match cli.command {
            Command::Daemon(args) => assert_eq!(args.mac_aging, Duration::from_secs(300)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
