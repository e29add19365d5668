//! The results: what was measured, the table printed for people,
//! results.json for programs.

use std::fs;

use serde_json::{json, Value};

use super::measure::{Cpu, Metric, Test, TestResult};
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
}

impl SwitchRun {
    pub fn value(&self, metric: Metric) -> Option<f64> {
        self.tests.iter().find_map(|(_, r)| {
            r.as_ref()
                .ok()?
                .values
                .iter()
                .find(|(m, _)| *m == metric)
                .map(|(_, v)| *v)
                .filter(|v| v.is_finite())
        })
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
    pub fn baseline(&self) -> Option<&SwitchRun> {
        let b = self.scenario.baseline();
        self.switches.iter().find(|s| s.switch == b)
    }

    /// `value / baseline value` for `metric`.
    pub fn ratio(&self, run: &SwitchRun, metric: Metric) -> Option<f64> {
        let base = self.baseline()?.value(metric)?;
        let v = run.value(metric)?;
        (base > 0.0).then(|| v / base)
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
    match run.ratio(sw, metric) {
        Some(r) => format!("{} ({r:.2}×)", format_value(metric, v)),
        None => format_value(metric, v),
    }
}

/// The table for people: rows are measurements, columns switches.
pub fn table(runs: &[ScenarioRun], tests: &[Test]) -> String {
    let mut out = String::new();
    for run in runs {
        let base = run.scenario.baseline().name();
        let have_base = run
            .baseline()
            .is_some_and(|b| matches!(b.status, Status::Ok));
        out.push_str(&format!(
            "\n{} ({})\n",
            run.scenario.name(),
            if have_base {
                format!("ratio to {base} in parentheses")
            } else {
                format!("no ratios: baseline {base} not measured")
            }
        ));
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut header = vec!["measurement".to_string()];
        header.extend(run.switches.iter().map(|s| s.switch.name().to_string()));
        rows.push(header);
        for metric in run.metrics(tests) {
            let arrow = if metric.higher_is_better() {
                "↑"
            } else {
                "↓"
            };
            let mut row = vec![format!("{} ({}) {arrow}", metric.label(), metric.unit())];
            row.extend(run.switches.iter().map(|s| cell(run, s, metric)));
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
    let notes = notes(runs);
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        for n in notes {
            out.push_str(&format!("  {n}\n"));
        }
    }
    out
}

/// Failures worth a line each.
fn notes(runs: &[ScenarioRun]) -> Vec<String> {
    let mut notes = Vec::new();
    for run in runs {
        for sw in &run.switches {
            let who = format!("{}/{}", run.scenario.name(), sw.switch.name());
            if let Status::Failed(msg) = &sw.status {
                notes.push(format!("{who}: {msg}"));
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
                            let error = match test {
                                Some((_, Err(e))) => Some(e.clone()),
                                _ => None,
                            };
                            let cpu = match test {
                                Some((_, Ok(r))) => cpu_json(&r.cpu),
                                _ => Value::Null,
                            };
                            json!({
                                "id": m.id(),
                                "label": m.label(),
                                "value": sw.value(m).map_or(Value::Null, num),
                                "unit": m.unit(),
                                "higher_is_better": m.higher_is_better(),
                                "ratio": run.ratio(sw, m).map_or(Value::Null, num),
                                "cpu": cpu,
                                "error": error,
                            })
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
mod tests {
    use super::*;

    fn run_with(values: &[(Switch, f64)]) -> ScenarioRun {
        ScenarioRun {
            scenario: Scenario::SameHost,
            switches: values
                .iter()
                .map(|(sw, v)| SwitchRun {
                    switch: *sw,
                    status: Status::Ok,
                    tests: vec![(
                        Test::Tcp1,
                        Ok(TestResult {
                            values: vec![(Metric::Tcp1Gbps, *v)],
                            cpu: Cpu::default(),
                        }),
                    )],
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
        let text = table(&[run], &[Test::Tcp1]);
        assert!(text.contains("kernel-bridge"), "{text}");
    }

    #[test]
    fn the_table_without_weft_baseline_is_unchanged() {
        let run = run_with(&[(Switch::Weft, 9.8), (Switch::KernelBridge, 13.8)]);
        let text = table(&[run], &[Test::Tcp1]);
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
    fn no_baseline_means_no_ratio() {
        let run = run_with(&[(Switch::Weft, 9.8)]);
        assert_eq!(cell(&run, &run.switches[0], Metric::Tcp1Gbps), "9.80");
    }
}
