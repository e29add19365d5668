//! `weft bench`: its command line. The harness itself is
//! [`weft_benches::harness`].

use std::io::Write as _;
use std::path::{Path, PathBuf};

use weft_benches::harness::{self, Options, Reporter, Scenario, Switch, Test};

/// Exit status when interrupted (128 + SIGINT).
const EXIT_INTERRUPTED: i32 = 130;

const AFTER_HELP: &str = "\
Every topology lives in network namespaces of its own (weft-b<pid>-...), with
a private weft daemon, Open vSwitch or VDE instance; all of it is removed when
the run ends, fails or is interrupted. Peers that are not installed are shown
as such and skipped.

Examples:
  sudo weft bench
  sudo weft bench --scenario same-host --against kernel-bridge --duration 5
  sudo weft bench --tests tcp1,rr --out /tmp/results
  sudo weft bench --scenario convergence --hosts 50 --endpoints 100
  sudo weft bench --scenario same-host --against kernel-bridge \\
      --baseline-weft /tmp/weft-previous
  sudo weft bench --against kernel-bridge,kernel-vxlan --rounds 3 --duration 5
  sudo weft bench --scenario rootless --duration 10
  sudo weft bench --scenario storm --duration 5";

/// `weft bench` options.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Which topologies to measure
    #[arg(long, value_enum, default_value = "all")]
    scenario: ScenarioArg,
    /// The switches to compare weft with (comma-separated)
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        value_name = "SWITCH,...",
        default_value = "kernel-bridge,kernel-vxlan,ovs,ovs-tso,vde"
    )]
    against: Vec<Switch>,
    /// Also measure another weft binary (e.g. the previous commit's) as
    /// `weft-baseline`, in weft's own topologies, and show weft's ratio to
    /// it
    #[arg(long, value_name = "PATH")]
    baseline_weft: Option<PathBuf>,
    /// Seconds each measurement runs
    #[arg(
        long,
        value_name = "S",
        default_value = "10",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    duration: u64,
    /// Where to write results.json and chart.svg [default:
    /// ./weft-bench-<timestamp>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The measurements to make (comma-separated)
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        value_name = "TEST,...",
        default_value = "tcp1,tcp4,udp64,rr"
    )]
    tests: Vec<Test>,
    /// Measure everything this many times, the switches' order reversed
    /// every other round, and show each figure's median and each ratio's
    /// median and range over the rounds (same-host, overlay and all)
    #[arg(
        long,
        value_name = "N",
        default_value = "1",
        value_parser = clap::value_parser!(u32).range(1..=20)
    )]
    rounds: u32,
    /// With --scenario rootless: the paths to measure (comma-separated)
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        value_name = "PATH,...",
        default_value = "weft,slirp4netns,pasta,veth"
    )]
    paths: Vec<RootlessPath>,
    /// Hosts of the convergence scenario
    #[arg(long, value_name = "N", default_value = "10", value_parser = clap::value_parser!(u16).range(2..=200))]
    hosts: u16,
    /// Endpoints the convergence scenario attaches, one at a time
    #[arg(long, value_name = "N", default_value = "30", value_parser = clap::value_parser!(u16).range(1..=1000))]
    endpoints: u16,
}

/// A way out of a namespace, for --scenario rootless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RootlessPath {
    /// weft's socket uplink
    Weft,
    Slirp4netns,
    Pasta,
    /// A veth pair made as root, for reference
    Veth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScenarioArg {
    /// Two namespaces on one host
    SameHost,
    /// Two hosts joined by a VXLAN overlay
    Overlay,
    /// Same-host and overlay
    All,
    /// A namespace reaching the host and reached from it: weft's socket
    /// uplink against slirp4netns, pasta and a root veth, MTU 1500 and
    /// 65520, both directions
    Rootless,
    /// --hosts daemons joined through one etcd (--store): how long a new
    /// endpoint takes to be reachable from every other host
    Convergence,
    /// One pair's TCP throughput quiet and while a third endpoint floods
    /// broadcast ARP requests, with storm control on (the defaults) and off,
    /// and the same on a Linux bridge for reference
    Storm,
}

/// Progress and warnings on stderr, the table on stdout.
struct Terminal;

impl Reporter for Terminal {
    fn status(&self, line: &str) {
        eprintln!("{line}");
    }

    fn warning(&self, message: &str) {
        eprintln!("warning: {message}");
    }

    fn table(&self, table: &str) {
        print!("{table}");
        let _ = std::io::stdout().flush();
    }
}

/// Runs the benchmark. `exe` is the weft binary to start daemons from.
/// Exits with status 130 when interrupted.
pub fn run(exe: &Path, args: BenchArgs) -> anyhow::Result<()> {
    if args.rounds > 1
        && !matches!(
            args.scenario,
            ScenarioArg::SameHost | ScenarioArg::Overlay | ScenarioArg::All
        )
    {
        anyhow::bail!(
            "--rounds applies to --scenario same-host, overlay and all; \
             run the rootless, convergence and storm scenarios once each, without --rounds"
        );
    }
    let scenarios = match args.scenario {
        ScenarioArg::SameHost => vec![Scenario::SameHost],
        ScenarioArg::Overlay => vec![Scenario::Overlay],
        ScenarioArg::All => vec![Scenario::SameHost, Scenario::Overlay],
        ScenarioArg::Rootless => return run_rootless(exe, args),
        ScenarioArg::Storm => return run_storm(exe, args),
        ScenarioArg::Convergence => {
            let opts = harness::ConvergenceOptions {
                exe: exe.to_path_buf(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                hosts: usize::from(args.hosts),
                endpoints: usize::from(args.endpoints),
                out: args
                    .out
                    .unwrap_or_else(|| PathBuf::from("weft-bench-convergence")),
            };
            return match harness::run_convergence(&opts, &Terminal) {
                Err(e) if e.is_interrupted() => {
                    eprintln!("weft bench: interrupted; everything it created has been removed");
                    std::process::exit(EXIT_INTERRUPTED);
                }
                result => Ok(result?),
            };
        }
    };
    let opts = Options {
        exe: exe.to_path_buf(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        scenarios,
        against: args.against,
        baseline_weft: args.baseline_weft,
        duration: args.duration,
        out: args.out,
        tests: args.tests,
        rounds: args.rounds,
    };
    match harness::run(&opts, &Terminal) {
        Err(e) if e.is_interrupted() => {
            eprintln!("weft bench: interrupted; everything it created has been removed");
            std::process::exit(EXIT_INTERRUPTED);
        }
        result => Ok(result?),
    }
}

/// `weft bench --scenario rootless`.
fn run_rootless(exe: &Path, args: BenchArgs) -> anyhow::Result<()> {
    use weft_benches::harness::rootless::{self, RootlessOptions, Way, MTUS};
    if !weft_api::client::is_privileged() {
        anyhow::bail!(
            "`weft bench --scenario rootless` needs root to build its reference veth and namespaces; run it as `sudo {} bench --scenario rootless`",
            exe.display()
        );
    }
    let out = args.out.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("weft-bench-rootless-{secs}"))
    });
    let opts = RootlessOptions {
        exe: exe.to_path_buf(),
        duration: args.duration,
        out,
        ways: args
            .paths
            .iter()
            .map(|p| match p {
                RootlessPath::Weft => Way::Weft,
                RootlessPath::Slirp4netns => Way::Slirp4netns,
                RootlessPath::Pasta => Way::Pasta,
                RootlessPath::Veth => Way::Veth,
            })
            .collect(),
        mtus: MTUS.to_vec(),
    };
    match rootless::run(&opts, &Terminal) {
        Err(e) if e.is_interrupted() => {
            eprintln!("weft bench: interrupted; everything it created has been removed");
            std::process::exit(EXIT_INTERRUPTED);
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// `weft bench --scenario storm`.
fn run_storm(exe: &Path, args: BenchArgs) -> anyhow::Result<()> {
    use weft_benches::harness::storm::{self, StormOptions};
    let out = args.out.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("weft-bench-storm-{secs}"))
    });
    let opts = StormOptions {
        exe: exe.to_path_buf(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        duration: args.duration,
        out,
    };
    match storm::run(&opts, &Terminal) {
        Err(e) if e.is_interrupted() => {
            eprintln!("weft bench: interrupted; everything it created has been removed");
            std::process::exit(EXIT_INTERRUPTED);
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}
