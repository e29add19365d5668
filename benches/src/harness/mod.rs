//! The `weft bench` harness: measures weft against other switches on this
//! machine.
//!
//! For every scenario (same-host, overlay) and switch it builds a topology
//! of network namespaces of its own (`weft-b<pid>-...`), measures TCP
//! throughput, 64-byte UDP packet rate, UDP round trips and the CPU they
//! cost, tears the topology down, and finally reports a table with each
//! figure's ratio to the kernel baseline and writes results.json and
//! chart.svg. With [`Options::baseline_weft`] it also measures
//! `weft-baseline`, weft's own topologies with daemons started from another
//! weft binary, right after weft, and reports weft's ratio to it. With
//! [`Options::rounds`] above 1 it measures the whole plan that many times
//! and reports medians, ratios taken within each round and their range
//! (`rounds`). Everything it creates is removed on success, failure and
//! Ctrl-C (SIGINT and SIGTERM set a flag checked between steps and while
//! waiting; guards do the work when dropped).
//!
//! [`run`] takes the [`Options`] the command line chose and a [`Reporter`]
//! that shows progress: the library prints nothing itself.
//!
//! - `topology`: builds and tears down each switch's namespaces.
//! - `convergence`: the multi-host scenario on etcd ([`run_convergence`]).
//! - `neigh`: the machine-wide ARP table's limits, raised while the
//!   convergence scenario's many host namespaces share it.
//! - `measure`: the measurements (iperf3, sockperf) and their CPU cost.
//! - `report`: the results, the table and results.json.
//! - `rounds`: `--rounds N`, the plan measured N times and combined.
//! - `spread`: one metric's figures over the rounds, their median and
//!   range.
//! - `chart`: chart.svg.
//! - `sys`: processes, namespaces, commands and interruption.
//! - `error`: [`Error`].
//! - [`rootless`]: the rootless scenario (weft's socket uplink against
//!   slirp4netns, pasta and a root veth).
//! - [`storm`]: the storm scenario (one pair's throughput while another
//!   endpoint floods broadcasts, with storm control on and off).

mod chart;
mod convergence;
mod error;
mod measure;
mod neigh;
mod report;
pub mod rootless;
mod rounds;
mod spread;
pub mod storm;
mod sys;
mod topology;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use error::Context as _;
use report::{ScenarioRun, Status, SwitchRun};
use topology::Ctx;
use weft_api::client;

pub use convergence::ConvergenceOptions;
pub use error::{Error, Result};
pub use measure::Test;
pub use topology::{Scenario, Switch};

/// What `weft bench` measures and where it writes the results.
#[derive(Debug, Clone)]
pub struct Options {
    /// The weft binary to start daemons from.
    pub exe: PathBuf,
    /// The version recorded in results.json.
    pub version: String,
    /// The topologies to measure, in order.
    pub scenarios: Vec<Scenario>,
    /// The switches to compare weft with.
    pub against: Vec<Switch>,
    /// Another weft binary (e.g. the previous commit's) to measure as
    /// `weft-baseline`, in the same topologies as weft.
    pub baseline_weft: Option<PathBuf>,
    /// Seconds each measurement runs.
    pub duration: u64,
    /// Where to write results.json and chart.svg; `./weft-bench-<timestamp>`
    /// when `None`.
    pub out: Option<PathBuf>,
    /// The measurements to make.
    pub tests: Vec<Test>,
    /// How many times to measure the whole plan (at least 1); see
    /// `rounds`.
    pub rounds: u32,
}

/// Where the harness's output goes: the caller decides how to show it
/// (`weft bench` prints progress and warnings on stderr, the table on
/// stdout).
pub trait Reporter {
    /// A progress or status line, e.g. `weft bench [ 5%, about 1:02 left]
    /// same-host/weft: tcp1, 10 s`.
    fn status(&self, line: &str);
    /// Something cleanup could not remove (without a `warning: ` prefix).
    fn warning(&self, message: &str);
    /// The results table, once everything is measured (before
    /// results.json and chart.svg are written).
    fn table(&self, table: &str);
}

/// Runs the benchmark, reporting progress to `report`.
///
/// Fails with [`Error::Interrupted`] on Ctrl-C or SIGTERM, once everything
/// the run created has been removed.
pub fn run(opts: &Options, report: &dyn Reporter) -> Result<()> {
    let baseline = opts
        .baseline_weft
        .as_deref()
        .map(check_weft_binary)
        .transpose()?;
    if !client::is_privileged() {
        return Err(Error::NotRoot {
            exe: opts.exe.clone(),
        });
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("ss", "iproute2"),
    ] {
        if sys::find_in_path(tool).is_none() {
            return Err(Error::MissingTool { tool, package });
        }
    }
    sys::catch_interrupts()?;
    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("weft-bench-{}", timestamp())));
    let result = bench(opts, baseline.as_ref(), &out_dir, report);
    if result.is_err() {
        // Created by this run and still empty: no reason to keep it.
        // Every guard has been dropped by now: nothing else is left behind.
        let _ = fs::remove_dir(&out_dir);
    }
    result
}

/// Runs the convergence scenario (`--scenario convergence`): N daemons
/// joined through one etcd; see the `convergence` module.
pub fn run_convergence(opts: &ConvergenceOptions, report: &dyn Reporter) -> Result<()> {
    if !client::is_privileged() {
        return Err(Error::NotRoot {
            exe: opts.exe.clone(),
        });
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("etcdctl", "etcd-client"),
    ] {
        if sys::find_in_path(tool).is_none() {
            return Err(Error::MissingTool { tool, package });
        }
    }
    sys::catch_interrupts()?;
    convergence::run_convergence(opts, report)
}

/// A weft binary to start `weft-baseline`'s daemons from: its absolute
/// path and the version it reports.
#[derive(Debug, Clone)]
struct Baseline {
    exe: PathBuf,
    version: String,
}

/// Checks that `path` is an executable weft binary (it answers `--version`
/// with `weft ...`).
fn check_weft_binary(path: &Path) -> Result<Baseline> {
    use std::os::unix::fs::PermissionsExt as _;

    let bad = |reason: String| Error::BadBaseline {
        path: path.to_path_buf(),
        reason,
    };
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("no such file: give the path of a weft binary, \
                e.g. one built from the previous commit"
            .into()),
        _ => bad(format!("cannot read it: {e}")),
    })?;
    if !meta.is_file() {
        return Err(bad("not a file: give the path of a weft binary".into()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(bad(format!("not executable (chmod +x {})", path.display())));
    }
    let exe = fs::canonicalize(path).map_err(|e| bad(format!("cannot resolve it: {e}")))?;
    let out = sys::run_bounded(
        &[exe.as_os_str(), "--version".as_ref()],
        &[],
        Duration::from_secs(10),
    )
    .map_err(|e| bad(format!("cannot run it: {}", e.message())))?;
    let first = out.stdout.lines().next().unwrap_or("").trim();
    match first.strip_prefix("weft ") {
        Some(version) if out.status.success() => Ok(Baseline {
            version: version.trim().to_string(),
            exe,
        }),
        _ => Err(bad(format!(
            "not a weft binary: `--version` printed {:?} ({})",
            first, out.status
        ))),
    }
}

/// Estimated seconds for building and tearing down a topology.
fn setup_estimate(switch: Switch) -> f64 {
    match switch {
        Switch::Ovs | Switch::OvsTso => 5.0,
        Switch::KernelBridge | Switch::KernelVxlan => 1.5,
        Switch::Weft | Switch::WeftBaseline | Switch::Vde => 3.0,
    }
}

/// Progress and estimated time left, as status lines.
struct Progress<'r> {
    start: Instant,
    total: f64,
    done: f64,
    report: &'r dyn Reporter,
}

impl Progress<'_> {
    fn show(&self, what: &str) {
        let elapsed = self.start.elapsed().as_secs_f64();
        // Scale the plan by how fast it has gone so far.
        let pace = if self.done > 5.0 {
            (elapsed / self.done).clamp(0.5, 3.0)
        } else {
            1.0
        };
        let left = ((self.total - self.done).max(0.0) * pace).round() as u64;
        let pct = if self.total > 0.0 {
            (100.0 * self.done / self.total).min(99.0) as u32
        } else {
            0
        };
        self.report.status(&format!(
            "weft bench [{pct:>2}%, about {}:{:02} left] {what}",
            left / 60,
            left % 60
        ));
    }

    fn advance(&mut self, secs: f64) {
        self.done += secs;
    }
}

fn not_installed(package: &str) -> String {
    format!("not installed (apt install {package})")
}

fn bench(
    args: &Options,
    baseline: Option<&Baseline>,
    out_dir: &Path,
    report: &dyn Reporter,
) -> Result<()> {
    let scenarios = &args.scenarios;
    let mut tests: Vec<Test> = Vec::new();
    for t in &args.tests {
        if !tests.contains(t) {
            tests.push(*t);
        }
    }
    let secs = args.duration;
    fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;

    let pid = std::process::id();
    let mut top = sys::Guard::new(report);
    let tmp = std::env::temp_dir().join(format!("weft-b{pid}"));
    top.add_dir(&tmp)?;
    let ctx = Ctx {
        exe: &args.exe,
        baseline_exe: baseline.map(|b| b.exe.as_path()),
        prefix: format!("weft-b{pid}"),
        tmp,
        report,
    };

    // The plan, for the time estimate.
    let plan: Vec<(Scenario, Vec<Switch>)> = scenarios
        .iter()
        .map(|s| {
            let switches = s
                .switches()
                .iter()
                .copied()
                .filter(|sw| match sw {
                    Switch::Weft => true,
                    Switch::WeftBaseline => baseline.is_some(),
                    _ => args.against.contains(sw),
                })
                .collect();
            (*s, switches)
        })
        .collect();
    let test_cost = |t: Test| f64::from(t.runs()) * (secs as f64 + 1.5);
    let runnable = |t: &Test| sys::find_in_path(t.tool().0).is_some();
    let per_topology: f64 = tests
        .iter()
        .filter(|t| runnable(t))
        .map(|t| test_cost(*t))
        .sum();
    let total = plan
        .iter()
        .flat_map(|(_, sws)| sws.iter())
        .filter(|sw| sw.missing().is_none())
        .map(|sw| setup_estimate(*sw) + per_topology)
        .sum();
    let mut progress = Progress {
        start: Instant::now(),
        total,
        done: 0.0,
        report,
    };
    report.status(&format!(
        "weft bench: {} per measurement, tests {}, results in {}",
        format_args!("{secs} s"),
        tests.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
        out_dir.display()
    ));
    if let Some(b) = baseline {
        report.status(&format!(
            "weft bench: weft-baseline runs {} (weft {})",
            b.exe.display(),
            b.version
        ));
    }

    let rounds = args.rounds.max(1);
    progress.total *= f64::from(rounds);
    let mut measured: Vec<Vec<ScenarioRun>> = Vec::new();
    for round in 0..rounds {
        let label = if rounds > 1 {
            format!("round {}/{rounds} ", round + 1)
        } else {
            String::new()
        };
        measured.push(measure_round(
            &ctx,
            &plan,
            &tests,
            secs,
            round,
            &label,
            &mut progress,
        )?);
    }
    let runs: Vec<ScenarioRun> = if rounds > 1 {
        (0..plan.len())
            .map(|i| {
                let of_scenario: Vec<ScenarioRun> = measured.iter().map(|r| r[i].clone()).collect();
                rounds::combine(&of_scenario)
            })
            .collect()
    } else {
        measured.pop().unwrap_or_default()
    };
    sys::check_interrupted()?;
    drop(top);

    report.table(&report::table(&runs, &tests, rounds));
    let mut header = json!({
        "weft_version": args.version,
        "started_unix": SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(progress.start.elapsed().as_secs()),
        "duration_s": secs,
        "rounds": rounds,
        "tests": tests.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "machine": report::machine(),
    });
    if let Some(b) = baseline {
        // Only with --baseline-weft: results.json is otherwise unchanged.
        header["weft_baseline"] = json!({
            "path": b.exe.display().to_string(),
            "version": b.version,
        });
    }
    let doc = report::json(&runs, &tests, header);
    let results = out_dir.join("results.json");
    fs::write(
        &results,
        serde_json::to_string_pretty(&doc).context("encoding results")? + "\n",
    )
    .with_context(|| format!("cannot write {}", results.display()))?;
    let chart = out_dir.join("chart.svg");
    fs::write(&chart, chart::svg(&runs, &tests))
        .with_context(|| format!("cannot write {}", chart.display()))?;
    report.status(&format!(
        "weft bench: done in {} s; wrote {} and {}",
        progress.start.elapsed().as_secs(),
        results.display(),
        chart.display()
    ));
    let weft_failed: Vec<&str> = runs
        .iter()
        .filter(|r| {
            r.switches
                .iter()
                .any(|s| s.switch == Switch::Weft && matches!(s.status, Status::Failed(_)))
        })
        .map(|r| r.scenario.name())
        .collect();
    if !weft_failed.is_empty() {
        return Err(Error::WeftFailed {
            scenarios: weft_failed.join(", "),
        });
    }
    Ok(())
}

/// Measures every scenario of `plan` once, the switches in round
/// `round`'s order ([`rounds::order`]); returns them in the plan's order.
fn measure_round(
    ctx: &Ctx,
    plan: &[(Scenario, Vec<Switch>)],
    tests: &[Test],
    secs: u64,
    round: u32,
    label: &str,
    progress: &mut Progress,
) -> Result<Vec<ScenarioRun>> {
    let report = progress.report;
    let mut runs = Vec::new();
    for (scenario, switches) in plan {
        let mut run = ScenarioRun {
            scenario: *scenario,
            switches: Vec::new(),
        };
        for switch in rounds::order(switches, round) {
            sys::check_interrupted()?;
            let who = format!("{label}{}/{}", scenario.name(), switch.name());
            if let Some((tool, package)) = switch.missing() {
                report.status(&format!(
                    "weft bench: {who}: `{tool}` {}",
                    not_installed(package)
                ));
                run.switches.push(SwitchRun::new(
                    switch,
                    Status::NotInstalled(not_installed(package)),
                    Vec::new(),
                ));
                continue;
            }
            progress.show(&format!("{who}: building the topology"));
            let result = measure_switch(ctx, *scenario, switch, tests, secs, progress, &who);
            progress.advance(setup_estimate(switch));
            match result {
                Ok(sw_run) => run.switches.push(sw_run),
                Err(e) if e.is_interrupted() => return Err(e),
                Err(e) => {
                    report.status(&format!("weft bench: {who} failed: {}", e.message()));
                    run.switches.push(SwitchRun::new(
                        switch,
                        Status::Failed(e.message()),
                        Vec::new(),
                    ));
                }
            }
        }
        // The table's columns keep the plan's order.
        run.switches
            .sort_by_key(|sw| switches.iter().position(|s| *s == sw.switch));
        runs.push(run);
    }
    Ok(runs)
}

/// Builds one topology, runs the tests on it and tears it down.
fn measure_switch(
    ctx: &Ctx,
    scenario: Scenario,
    switch: Switch,
    tests: &[Test],
    secs: u64,
    progress: &mut Progress,
    who: &str,
) -> Result<SwitchRun> {
    let topo = topology::build(ctx, scenario, switch)?;
    let mut servers = measure::start_servers(&topo, tests)?;
    let mut results = Vec::new();
    for test in tests {
        sys::check_interrupted()?;
        let (tool, package) = test.tool();
        if sys::find_in_path(tool).is_none() {
            results.push((*test, Err(not_installed(package))));
            continue;
        }
        let cost_per_run = secs as f64 + 1.5;
        let mut first = true;
        let mut on_run = |what: &str| {
            if !first {
                progress.advance(cost_per_run);
            }
            first = false;
            progress.show(&format!("{who}: {what}, {secs} s"));
        };
        let result = measure::run_test(&topo, &mut servers, *test, secs, &mut on_run);
        progress.advance(cost_per_run);
        match result {
            Ok(r) => results.push((*test, Ok(r))),
            Err(e) if e.is_interrupted() => return Err(e),
            Err(e) => {
                progress.report.status(&format!(
                    "weft bench: {who} {} failed: {}",
                    test.name(),
                    e.message()
                ));
                results.push((*test, Err(e.message())));
            }
        }
    }
    progress.show(&format!("{who}: tearing down"));
    drop(servers);
    drop(topo);
    Ok(SwitchRun::new(switch, Status::Ok, results))
}

/// `YYYYmmdd-HHMMSS` in UTC.
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    format_utc(secs)
}

fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_binaries_are_checked() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = std::env::temp_dir().join(format!("weft-bench-check-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let reason = |path: &Path| match check_weft_binary(path) {
            Err(Error::BadBaseline { reason, .. }) => reason,
            other => panic!("{}: {other:?}", path.display()),
        };
        assert!(reason(&dir.join("missing")).starts_with("no such file"));
        assert!(reason(&dir).starts_with("not a file"));
        let script = dir.join("fake-weft");
        fs::write(&script, "#!/bin/sh\necho \"weft 9.9.9\"\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(reason(&script).starts_with("not executable (chmod +x "));
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let ok = check_weft_binary(&script);
        let not_weft = dir.join("not-weft");
        fs::write(&not_weft, "#!/bin/sh\necho \"ls (GNU coreutils) 9.1\"\n").unwrap();
        fs::set_permissions(&not_weft, fs::Permissions::from_mode(0o755)).unwrap();
        let not_weft = check_weft_binary(&not_weft);
        let _ = fs::remove_dir_all(&dir);
        let ok = ok.unwrap();
        assert_eq!(ok.version, "9.9.9");
        assert!(ok.exe.is_absolute());
        match not_weft {
            Err(Error::BadBaseline { reason, .. }) => {
                assert!(reason.starts_with("not a weft binary"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(format_utc(0), "19700101-000000");
        assert_eq!(format_utc(951_782_400), "20000229-000000");
        assert_eq!(format_utc(1_700_000_000), "20231114-221320");
    }
}
