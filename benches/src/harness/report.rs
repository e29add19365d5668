//! The results: what was measured, the table printed for people,
//! results.json for programs.

use std::fs;

use serde_json::{json, Value};

use super::measure::{Cpu, Metric, Test, TestResult};
use super::spread::{self, Spread};
use super::topology::{Scenario, Switch};

/// How far one switch got.
#[derive(Debug, Clone)]
pub enum Status {
    Ok,
    /// A tool is missing: "not installed (apt install PACKAGE)".
    NotInstalled(String),
    /// The topology could not be built; the measurements were skipped.
    Failed(String),
}

/// One switch's results in one scenario.
#[derive(Debug, Clone)]
pub struct SwitchRun {
    pub switch: Switch,
    pub status: Status,
    /// Per test: the result, or why there is none.
    pub tests: Vec<(Test, Result<TestResult, String>)>,
    /// With more than one round: per metric, every round's figures and
    /// ratios; empty for a single round.
    pub spread: Vec<(Metric, Spread)>,
    /// With more than one round: in how many rounds the switch's worst
    /// test failed (its figures are the other rounds').
    pub failed_rounds: usize,
}

impl SwitchRun {
    /// A switch's run as measured once: no spread over rounds.
    pub fn new(
        switch: Switch,
        status: Status,
        tests: Vec<(Test, Result<TestResult, String>)>,
    ) -> SwitchRun {
        SwitchRun {
            switch,
            status,
            tests,
            spread: Vec::new(),
            failed_rounds: 0,
        }
    }

    pub fn value(&self, metric: Metric) -> Option<f64> {
        self.tests
            .iter()
            .find_map(|(_, r)| r.as_ref().ok()?.value(metric))
    }

    /// Every round's figures for `metric`, with more than one round.
    pub fn spread(&self, metric: Metric) -> Option<&Spread> {
        self.spread
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, s)| s)
    }

    fn test_of(&self, metric: Metric) -> Option<&(Test, Result<TestResult, String>)> {
        self.tests
            .iter()
            .find(|(t, _)| t.metrics().contains(&metric))
    }
}

/// All switches of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    pub scenario: Scenario,
    pub switches: Vec<SwitchRun>,
}

impl ScenarioRun {
    pub(super) fn find(&self, switch: Switch) -> Option<&SwitchRun> {
        self.switches.iter().find(|s| s.switch == switch)
    }

    pub fn baseline(&self) -> Option<&SwitchRun> {
        self.find(self.scenario.baseline())
    }

    /// `run`'s ratio to the baseline for `metric`: `value / baseline
    /// value`, or with rounds the median of the rounds' ratios.
    pub fn ratio(&self, run: &SwitchRun, metric: Metric) -> Option<f64> {
        match run.spread(metric) {
            Some(s) => spread::median(&s.ratios),
            None => self.single_ratio(run, metric),
        }
    }

    /// With rounds, the range of `run`'s ratios to the baseline for
    /// `metric` (none for the baseline itself, 1 in every round).
    pub fn ratio_range(&self, run: &SwitchRun, metric: Metric) -> Option<(f64, f64)> {
        if run.switch == self.scenario.baseline() {
            return None;
        }
        run.spread(metric)
            .filter(|s| s.ratios.len() > 1)
            .and_then(|s| spread::range(&s.ratios))
    }

    /// `value / baseline value` for `metric`, in this one round.
    pub(super) fn single_ratio(&self, run: &SwitchRun, metric: Metric) -> Option<f64> {
        self.ratio_to(self.scenario.baseline(), run, metric)
    }

    /// `value / base's value` for `metric`.
    fn ratio_to(&self, base: Switch, run: &SwitchRun, metric: Metric) -> Option<f64> {
        let base = self.find(base)?.value(metric)?;
        let v = run.value(metric)?;
        (base > 0.0).then(|| v / base)
    }

    /// Whether `weft-baseline` is one of the switches (`--baseline-weft`).
    pub fn has_weft_baseline(&self) -> bool {
        self.find(Switch::WeftBaseline).is_some()
    }

    /// weft's ratio to weft-baseline for `metric`: `weft's value /
    /// weft-baseline's value`, or with rounds the median of the rounds'
    /// ratios.
    pub fn weft_ratio(&self, metric: Metric) -> Option<f64> {
        match self.find(Switch::Weft)?.spread(metric) {
            Some(s) => spread::median(&s.weft_ratios),
            None => self.single_weft_ratio(metric),
        }
    }

    /// With rounds, the range of weft's ratios to weft-baseline for
    /// `metric`.
    pub fn weft_ratio_range(&self, metric: Metric) -> Option<(f64, f64)> {
        self.find(Switch::Weft)?
            .spread(metric)
            .filter(|s| s.weft_ratios.len() > 1)
            .and_then(|s| spread::range(&s.weft_ratios))
    }

    /// `weft's value / weft-baseline's value` for `metric`, in this one
    /// round.
    pub(super) fn single_weft_ratio(&self, metric: Metric) -> Option<f64> {
        self.ratio_to(Switch::WeftBaseline, self.find(Switch::Weft)?, metric)
    }

    /// The metrics of the selected tests, in table order.
    pub fn metrics(&self, tests: &[Test]) -> Vec<Metric> {
        tests
            .iter()
            .flat_map(|t| t.metrics().iter().copied())
            .collect()
    }
}

fn format_value(metric: Metric, v: f64) -> String {
    match metric.unit() {
        "Gbit/s" => format!("{v:.2}"),
        "CPU s/Gbit" => format!("{v:.3}"),
        _ => format!("{v:.1}"),
    }
}

/// The text of one cell.
fn cell(run: &ScenarioRun, sw: &SwitchRun, metric: Metric) -> String {
    match &sw.status {
        Status::NotInstalled(msg) => return msg.clone(),
        Status::Failed(_) => return "failed (see below)".into(),
        Status::Ok => {}
    }
    if metric.needs_switch_process() && !sw.switch.is_userspace() {
        return "(in kernel)".into();
    }
    match sw.test_of(metric) {
        Some((_, Err(msg))) if msg.starts_with("not installed") => return msg.clone(),
        Some((_, Err(_))) => return "failed (see below)".into(),
        None => return "-".into(),
        Some((_, Ok(_))) => {}
    }
    let Some(v) = sw.value(metric) else {
        return "-".into();
    };
    match (run.ratio(sw, metric), run.ratio_range(sw, metric)) {
        (Some(r), Some((lo, hi))) => {
            format!("{} ({r:.2}×, {lo:.2}–{hi:.2})", format_value(metric, v))
        }
        (Some(r), None) => format!("{} ({r:.2}×)", format_value(metric, v)),
        (None, _) => format_value(metric, v),
    }
}

/// The header of the last column with `--baseline-weft`.
const WEFT_RATIO: &str = "weft / weft-baseline";

/// The last column's cell with `--baseline-weft`.
fn weft_ratio_cell(run: &ScenarioRun, metric: Metric) -> String {
    match (run.weft_ratio(metric), run.weft_ratio_range(metric)) {
        (Some(r), Some((lo, hi))) => format!("{r:.2}× ({lo:.2}–{hi:.2})"),
        (Some(r), None) => format!("{r:.2}×"),
        (None, _) => "-".into(),
    }
}

/// The table for people: rows are measurements, columns switches; with
/// `weft-baseline`, a last column gives weft's ratio to it. `rounds` is
/// how many times each figure was measured.
pub fn table(runs: &[ScenarioRun], tests: &[Test], rounds: u32) -> String {
    let mut out = String::new();
    for run in runs {
        let base = run.scenario.baseline().name();
        let have_base = run
            .baseline()
            .is_some_and(|b| matches!(b.status, Status::Ok));
        let weft_col = run.has_weft_baseline();
        out.push_str(&format!(
            "\n{} ({}{})\n",
            run.scenario.name(),
            if have_base {
                format!("ratio to {base} in parentheses")
            } else {
                format!("no ratios: baseline {base} not measured")
            },
            if weft_col {
                format!("; last column: {WEFT_RATIO}")
            } else {
                String::new()
            }
        ));
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut header = vec!["measurement".to_string()];
        header.extend(run.switches.iter().map(|s| s.switch.name().to_string()));
        if weft_col {
            header.push(WEFT_RATIO.into());
        }
        rows.push(header);
        for metric in run.metrics(tests) {
            let arrow = if metric.higher_is_better() {
                "↑"
            } else {
                "↓"
            };
            let mut row = vec![format!("{} ({}) {arrow}", metric.label(), metric.unit())];
            row.extend(run.switches.iter().map(|s| cell(run, s, metric)));
            if weft_col {
                row.push(weft_ratio_cell(run, metric));
            }
            rows.push(row);
        }
        let cols = rows[0].len();
        let widths: Vec<usize> = (0..cols)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for (i, row) in rows.iter().enumerate() {
            let mut line = String::new();
            for (c, text) in row.iter().enumerate() {
                let pad = widths[c] - text.chars().count();
                if c == 0 {
                    line.push_str(text);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str("  ");
                    line.push_str(&" ".repeat(pad));
                    line.push_str(text);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if i == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (cols - 1)));
                out.push('\n');
            }
        }
    }
    out.push_str(
        "\n↑ higher is better, ↓ lower is better. CPU s/Gbit: CPU seconds per gigabit \
                  received (machine: all CPUs busy time; switch: the switch's processes).\n",
    );
    if runs.iter().any(ScenarioRun::has_weft_baseline) {
        out.push_str(&format!(
            "{WEFT_RATIO}: weft's figure over weft-baseline's (--baseline-weft), \
             measured back to back in this run; above 1× is better in ↑ rows, below 1× in ↓ rows.\n"
        ));
    }
    if rounds > 1 {
        out.push_str(&format!(
            "{rounds} rounds, the switches' order reversed every other round: each figure is the \
             median of the rounds' figures, each ratio the median of the ratios taken within \
             each round, followed by their range.\n"
        ));
    }
    let notes = notes(runs, rounds);
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        for n in notes {
            out.push_str(&format!("  {n}\n"));
        }
    }
    out
}

/// Failures worth a line each.
fn notes(runs: &[ScenarioRun], rounds: u32) -> Vec<String> {
    let mut notes = Vec::new();
    for run in runs {
        for sw in &run.switches {
            let who = format!("{}/{}", run.scenario.name(), sw.switch.name());
            if let Status::Failed(msg) = &sw.status {
                notes.push(format!("{who}: {msg}"));
            }
            if sw.failed_rounds > 0 {
                notes.push(format!(
                    "{who}: a test failed in {} of {rounds} rounds; its figures are the other rounds'",
                    sw.failed_rounds
                ));
            }
            for (test, r) in &sw.tests {
                if let Err(msg) = r {
                    if !msg.starts_with("not installed") {
                        notes.push(format!("{who} {}: {msg}", test.name()));
                    }
                }
            }
        }
    }
    notes
}

/// Kernel, CPU count and model of this machine.
pub fn machine() -> Value {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({ "kernel": kernel, "nproc": nproc, "cpu_model": model })
}

fn cpu_json(cpu: &Cpu) -> Value {
    json!({
        "switch_s": cpu.switch_s,
        "machine_s": cpu.machine_s,
        "wall_s": cpu.wall_s,
    })
}

fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// results.json.
pub fn json(runs: &[ScenarioRun], tests: &[Test], header: Value) -> Value {
    let scenarios: Vec<Value> = runs
        .iter()
        .map(|run| {
            let switches: Vec<Value> = run
                .switches
                .iter()
                .map(|sw| {
                    let (status, error) = match &sw.status {
                        Status::Ok => ("ok", None),
                        Status::NotInstalled(m) => ("not_installed", Some(m.clone())),
                        Status::Failed(m) => ("failed", Some(m.clone())),
                    };
                    let measurements: Vec<Value> = run
                        .metrics(tests)
                        .into_iter()
                        .filter(|m| !m.needs_switch_process() || sw.switch.is_userspace())
                        .map(|m| {
                            let test = sw.test_of(m);
                            let weft_ratio = (sw.switch == Switch::Weft && run.has_weft_baseline())
                                .then(|| run.weft_ratio(m).map_or(Value::Null, num));
                            let error = match test {
                                Some((_, Err(e))) => Some(e.clone()),
                                _ => None,
                            };
                            let cpu = match test {
                                Some((_, Ok(r))) => cpu_json(&r.cpu),
                                _ => Value::Null,
                            };
                            let mut doc = json!({
                                "id": m.id(),
                                "label": m.label(),
                                "value": sw.value(m).map_or(Value::Null, num),
                                "unit": m.unit(),
                                "higher_is_better": m.higher_is_better(),
                                "ratio": run.ratio(sw, m).map_or(Value::Null, num),
                                "cpu": cpu,
                                "error": error,
                            });
                            // Only weft's, only with --baseline-weft.
                            if let Some(r) = weft_ratio {
                                doc["ratio_to_weft_baseline"] = r;
                            }
                            // Only with --rounds above 1.
                            if let Some(s) = sw.spread(m) {
                                let nums =
                                    |v: &[f64]| v.iter().map(|x| num(*x)).collect::<Vec<_>>();
                                doc["rounds"] = json!({
                                    "values": nums(&s.values),
                                    "ratios": nums(&s.ratios),
                                });
                                if sw.switch == Switch::Weft && run.has_weft_baseline() {
                                    doc["rounds"]["ratios_to_weft_baseline"] =
                                        json!(nums(&s.weft_ratios));
                                }
                            }
                            doc
                        })
                        .collect();
                    json!({
                        "switch": sw.switch.name(),
                        "status": status,
                        "error": error,
                        "measurements": measurements,
                    })
                })
                .collect();
            json!({
                "scenario": run.scenario.name(),
                "baseline": run.scenario.baseline().name(),
                "switches": switches,
            })
        })
        .collect();
    let mut doc = header;
    doc["scenarios"] = Value::Array(scenarios);
    doc
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// One same-host round of `tcp1` with these switches' figures (the
    /// chart's tests use it too).
    pub(in crate::harness) fn run_with(values: &[(Switch, f64)]) -> ScenarioRun {
        ScenarioRun {
            scenario: Scenario::SameHost,
            switches: values
                .iter()
                .map(|(sw, v)| {
                    SwitchRun::new(
                        *sw,
                        Status::Ok,
                        vec![(
                            Test::Tcp1,
                            Ok(TestResult {
                                values: vec![(Metric::Tcp1Gbps, *v)],
                                cpu: Cpu::default(),
                            }),
                        )],
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn cells_show_value_and_ratio_to_the_baseline() {
        let run = run_with(&[(Switch::Weft, 9.8), (Switch::KernelBridge, 13.8)]);
        assert_eq!(
            cell(&run, &run.switches[0], Metric::Tcp1Gbps),
            "9.80 (0.71×)"
        );
        assert_eq!(
            cell(&run, &run.switches[1], Metric::Tcp1Gbps),
            "13.80 (1.00×)"
        );
        let text = table(&[run], &[Test::Tcp1], 1);
        assert!(text.contains("kernel-bridge"), "{text}");
    }

    #[test]
    fn the_table_without_weft_baseline_is_unchanged() {
        let run = run_with(&[(Switch::Weft, 9.8), (Switch::KernelBridge, 13.8)]);
        let text = table(&[run], &[Test::Tcp1], 1);
        // The format before --baseline-weft existed, byte for byte.
        let expected = [
            "",
            "same-host (ratio to kernel-bridge in parentheses)",
            "measurement                                       weft  kernel-bridge",
            "---------------------------------------------------------------------",
            "TCP 1 stream (Gbit/s) ↑                   9.80 (0.71×)  13.80 (1.00×)",
            "TCP 1 stream, machine CPU (CPU s/Gbit) ↓             -              -",
            "TCP 1 stream, switch CPU (CPU s/Gbit) ↓              -    (in kernel)",
            "",
            "↑ higher is better, ↓ lower is better. CPU s/Gbit: CPU seconds per gigabit \
             received (machine: all CPUs busy time; switch: the switch's processes).",
            "",
        ]
        .join("\n");
        assert_eq!(text, expected);
    }

    #[test]
    fn weft_baseline_adds_a_column_with_weft_s_ratio_to_it() {
        let run = run_with(&[
            (Switch::Weft, 9.8),
            (Switch::WeftBaseline, 9.0),
            (Switch::KernelBridge, 13.8),
        ]);
        // weft-baseline is a switch like the others, with its ratio to the
        // kernel baseline.
        assert_eq!(
            cell(&run, &run.switches[1], Metric::Tcp1Gbps),
            "9.00 (0.65×)"
        );
        assert_eq!(weft_ratio_cell(&run, Metric::Tcp1Gbps), "1.09×");
        assert_eq!(weft_ratio_cell(&run, Metric::Tcp1CpuPerGbit), "-");
        let text = table(std::slice::from_ref(&run), &[Test::Tcp1], 1);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "same-host (ratio to kernel-bridge in parentheses; last column: weft / weft-baseline)"
        );
        assert!(
            lines[2].ends_with("weft  weft-baseline  kernel-bridge  weft / weft-baseline"),
            "{text}"
        );
        assert!(
            lines[4].ends_with("9.80 (0.71×)   9.00 (0.65×)  13.80 (1.00×)                 1.09×"),
            "{text}"
        );
        assert!(
            text.contains("\nweft / weft-baseline: weft's figure over"),
            "{text}"
        );

        let doc = json(&[run], &[Test::Tcp1], json!({}));
        let switches = &doc["scenarios"][0]["switches"];
        assert_eq!(switches[1]["switch"], "weft-baseline");
        let r = switches[0]["measurements"][0]["ratio_to_weft_baseline"]
            .as_f64()
            .unwrap();
        assert!((r - 9.8 / 9.0).abs() < 1e-9, "{doc}");
        assert!(switches[0]["measurements"][1]["ratio_to_weft_baseline"].is_null());
        // Only weft's measurements carry it.
        assert!(switches[1]["measurements"][0]
            .get("ratio_to_weft_baseline")
            .is_none());
    }

    #[test]
    fn without_weft_baseline_json_has_no_ratio_to_it() {
        let run = run_with(&[(Switch::Weft, 9.8), (Switch::KernelBridge, 13.8)]);
        let doc = json(&[run], &[Test::Tcp1], json!({}));
        let m = &doc["scenarios"][0]["switches"][0]["measurements"][0];
        assert!(m.get("ratio_to_weft_baseline").is_none(), "{doc}");
    }

    #[test]
    fn rounds_show_the_median_ratio_and_its_range() {
        // Three rounds, combined: weft 8.0, 4.2, 7.5 against weft-baseline
        // 10.0, 4.0, 7.0 and the bridge 10.0, 5.0, 10.0 (rounds::combine).
        let mut run = run_with(&[
            (Switch::Weft, 7.5),
            (Switch::WeftBaseline, 7.0),
            (Switch::KernelBridge, 10.0),
        ]);
        let spreads = [
            Spread {
                values: vec![8.0, 4.2, 7.5],
                ratios: vec![0.8, 0.84, 0.75],
                weft_ratios: vec![0.8, 1.05, 7.5 / 7.0],
            },
            Spread {
                values: vec![10.0, 4.0, 7.0],
                ratios: vec![1.0, 0.8, 0.7],
                weft_ratios: Vec::new(),
            },
            Spread {
                values: vec![10.0, 5.0, 10.0],
                ratios: vec![1.0, 1.0, 1.0],
                weft_ratios: Vec::new(),
            },
        ];
        for (sw, spread) in run.switches.iter_mut().zip(spreads) {
            sw.spread = vec![(Metric::Tcp1Gbps, spread)];
        }
        // Median figure, median of the three rounds' ratios (0.80, 0.84,
        // 0.75) and their range.
        assert_eq!(
            cell(&run, &run.switches[0], Metric::Tcp1Gbps),
            "7.50 (0.80×, 0.75–0.84)"
        );
        // The baseline's own ratio is 1 in every round: no range.
        assert_eq!(
            cell(&run, &run.switches[2], Metric::Tcp1Gbps),
            "10.00 (1.00×)"
        );
        // weft over weft-baseline: 0.80, 1.05, 1.07.
        assert_eq!(weft_ratio_cell(&run, Metric::Tcp1Gbps), "1.05× (0.80–1.07)");
        let text = table(std::slice::from_ref(&run), &[Test::Tcp1], 3);
        assert!(
            text.contains("\n3 rounds, the switches' order reversed"),
            "{text}"
        );

        let doc = json(&[run], &[Test::Tcp1], json!({}));
        let m = &doc["scenarios"][0]["switches"][0]["measurements"][0];
        assert_eq!(m["value"], 7.5);
        assert_eq!(m["rounds"]["values"], json!([8.0, 4.2, 7.5]));
        assert_eq!(m["rounds"]["ratios"].as_array().unwrap().len(), 3);
        assert_eq!(
            m["rounds"]["ratios_to_weft_baseline"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let r = m["ratio"].as_f64().unwrap();
        assert!((r - 0.8).abs() < 1e-9, "{doc}");
        // A single run's results.json is unchanged.
        let single = json(
            &[run_with(&[
                (Switch::Weft, 8.0),
                (Switch::KernelBridge, 10.0),
            ])],
            &[Test::Tcp1],
            json!({}),
        );
        assert!(single["scenarios"][0]["switches"][0]["measurements"][0]
            .get("rounds")
            .is_none());
    }

    #[test]
    fn no_baseline_means_no_ratio() {
        let run = run_with(&[(Switch::Weft, 9.8)]);
        assert_eq!(cell(&run, &run.switches[0], Metric::Tcp1Gbps), "9.80");
    }
}
