//! `--rounds N`: the whole plan measured N times, and one set of results
//! made of them.
//!
//! These machines are shared and noisy: one run's figure for a row near
//! its line lands on either side of it from one run to the next. With
//! rounds, every switch of a scenario is measured once per round, the
//! switches' order reversed every other round (A B C, C B A, A B C, …) so
//! that a drift over the run (another job starting, the CPU's clock)
//! weighs on each alike. A ratio is only ever taken inside one round,
//! against the baseline measured beside it; the results show the median
//! of the rounds' figures, the median of their ratios, and the ratios'
//! range.

use super::measure::{Cpu, Metric, TestResult};
use super::report::{ScenarioRun, Status, SwitchRun};
use super::spread::{median, Spread};
use super::topology::Switch;

/// The order to measure `switches` in, in round `round` (from 0): as
/// planned in even rounds, reversed in odd ones.
pub fn order<T: Copy>(switches: &[T], round: u32) -> Vec<T> {
    let mut v = switches.to_vec();
    if round % 2 == 1 {
        v.reverse();
    }
    v
}

/// One scenario's results from every round (each with the same switches
/// in the same order) as one: per switch and metric the median of the
/// rounds' figures, with every round's figures and ratios in the
/// switch's spread. A test that failed in some rounds keeps the figures
/// of the others; one that failed in every round keeps its first error.
pub fn combine(rounds: &[ScenarioRun]) -> ScenarioRun {
    let first = &rounds[0];
    let switches = first
        .switches
        .iter()
        .map(|sw| combine_switch(rounds, sw.switch))
        .collect();
    ScenarioRun {
        scenario: first.scenario,
        switches,
    }
}

fn combine_switch(rounds: &[ScenarioRun], switch: Switch) -> SwitchRun {
    let runs: Vec<(&ScenarioRun, &SwitchRun)> = rounds
        .iter()
        .filter_map(|r| Some((r, r.find(switch)?)))
        .collect();
    let ok: Vec<&SwitchRun> = runs
        .iter()
        .map(|(_, s)| *s)
        .filter(|s| matches!(s.status, Status::Ok))
        .collect();
    let Some(template) = ok.first() else {
        // Not installed, or failed in every round: as the first round saw it.
        return runs[0].1.clone();
    };
    let mut failed_rounds = 0;
    let tests = template
        .tests
        .iter()
        .map(|(test, first_result)| {
            let results: Vec<&TestResult> = ok
                .iter()
                .filter_map(|s| s.tests.iter().find(|(t, _)| t == test))
                .filter_map(|(_, r)| r.as_ref().ok())
                .collect();
            if results.is_empty() {
                return (*test, first_result.clone());
            }
            failed_rounds = failed_rounds.max(runs.len() - results.len());
            let values = test
                .metrics()
                .iter()
                .filter_map(|m| {
                    let v: Vec<f64> = results.iter().filter_map(|r| r.value(*m)).collect();
                    Some((*m, median(&v)?))
                })
                .collect();
            let cpu = Cpu {
                switch_s: median(
                    &results
                        .iter()
                        .filter_map(|r| r.cpu.switch_s)
                        .collect::<Vec<_>>(),
                ),
                machine_s: median(&results.iter().map(|r| r.cpu.machine_s).collect::<Vec<_>>())
                    .unwrap_or(0.0),
                wall_s: median(&results.iter().map(|r| r.cpu.wall_s).collect::<Vec<_>>())
                    .unwrap_or(0.0),
            };
            (*test, Ok(TestResult { values, cpu }))
        })
        .collect();
    let metrics: Vec<Metric> = template
        .tests
        .iter()
        .flat_map(|(t, _)| t.metrics().iter().copied())
        .collect();
    let spread = metrics
        .into_iter()
        .map(|m| {
            let mut s = Spread::default();
            for (round, sw) in &runs {
                if let Some(v) = sw.value(m) {
                    s.values.push(v);
                }
                if let Some(r) = round.single_ratio(sw, m) {
                    s.ratios.push(r);
                }
                if switch == Switch::Weft {
                    if let Some(r) = round.single_weft_ratio(m) {
                        s.weft_ratios.push(r);
                    }
                }
            }
            (m, s)
        })
        .collect();
    SwitchRun {
        spread,
        failed_rounds,
        ..SwitchRun::new(switch, Status::Ok, tests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::measure::Test;
    use crate::harness::topology::Scenario;

    fn round(values: &[(Switch, Option<f64>)]) -> ScenarioRun {
        ScenarioRun {
            scenario: Scenario::SameHost,
            switches: values
                .iter()
                .map(|(sw, v)| {
                    let result = match v {
                        Some(v) => Ok(TestResult {
                            values: vec![(Metric::Tcp1Gbps, *v)],
                            cpu: Cpu {
                                switch_s: None,
                                machine_s: *v,
                                wall_s: 1.0,
                            },
                        }),
                        None => Err("iperf3 failed".into()),
                    };
                    SwitchRun::new(*sw, Status::Ok, vec![(Test::Tcp1, result)])
                })
                .collect(),
        }
    }

    #[test]
    fn every_other_round_measures_the_switches_in_reverse() {
        let planned = [Switch::Weft, Switch::WeftBaseline, Switch::KernelBridge];
        assert_eq!(order(&planned, 0), planned);
        assert_eq!(
            order(&planned, 1),
            [Switch::KernelBridge, Switch::WeftBaseline, Switch::Weft]
        );
        assert_eq!(order(&planned, 2), planned);
    }

    #[test]
    fn ratios_are_taken_inside_each_round_and_their_median_shown() {
        // The machine slows down in the second round: the figures halve,
        // but weft's ratio to the bridge stays near 0.8 in each round.
        let rounds = [
            round(&[
                (Switch::Weft, Some(8.0)),
                (Switch::KernelBridge, Some(10.0)),
            ]),
            round(&[(Switch::Weft, Some(4.2)), (Switch::KernelBridge, Some(5.0))]),
            round(&[
                (Switch::Weft, Some(7.5)),
                (Switch::KernelBridge, Some(10.0)),
            ]),
        ];
        let run = combine(&rounds);
        let weft = &run.switches[0];
        assert_eq!(weft.value(Metric::Tcp1Gbps), Some(7.5));
        assert_eq!(run.switches[1].value(Metric::Tcp1Gbps), Some(10.0));
        let spread = weft.spread(Metric::Tcp1Gbps).unwrap();
        assert_eq!(spread.values, [8.0, 4.2, 7.5]);
        assert_eq!(spread.ratios.len(), 3);
        // The median of the rounds' ratios (0.8, 0.84, 0.75), not the
        // ratio of the medians (7.5 / 10 = 0.75).
        let r = run.ratio(weft, Metric::Tcp1Gbps).unwrap();
        assert!((r - 0.8).abs() < 1e-9, "{r}");
        assert_eq!(weft.failed_rounds, 0);
    }

    #[test]
    fn a_round_that_failed_leaves_the_others_figures() {
        let rounds = [
            round(&[
                (Switch::Weft, Some(8.0)),
                (Switch::KernelBridge, Some(10.0)),
            ]),
            round(&[(Switch::Weft, None), (Switch::KernelBridge, Some(10.0))]),
        ];
        let run = combine(&rounds);
        let weft = &run.switches[0];
        assert_eq!(weft.value(Metric::Tcp1Gbps), Some(8.0));
        assert_eq!(weft.failed_rounds, 1);
        assert_eq!(weft.spread(Metric::Tcp1Gbps).unwrap().ratios, [0.8]);

        let all_failed = [
            round(&[(Switch::Weft, None), (Switch::KernelBridge, Some(10.0))]),
            round(&[(Switch::Weft, None), (Switch::KernelBridge, Some(9.0))]),
        ];
        let run = combine(&all_failed);
        assert!(matches!(
            &run.switches[0].tests[0].1,
            Err(msg) if msg == "iperf3 failed"
        ));
    }

    #[test]
    fn weft_s_ratio_to_weft_baseline_is_also_taken_per_round() {
        let rounds = [
            round(&[
                (Switch::Weft, Some(9.0)),
                (Switch::WeftBaseline, Some(10.0)),
                (Switch::KernelBridge, Some(10.0)),
            ]),
            round(&[
                (Switch::Weft, Some(6.0)),
                (Switch::WeftBaseline, Some(5.0)),
                (Switch::KernelBridge, Some(10.0)),
            ]),
        ];
        let run = combine(&rounds);
        let spread = run.switches[0].spread(Metric::Tcp1Gbps).unwrap();
        assert_eq!(spread.weft_ratios, [0.9, 1.2]);
        let r = run.weft_ratio(Metric::Tcp1Gbps).unwrap();
        assert!((r - 1.05).abs() < 1e-9, "{r}");
        // Only weft's spread carries them.
        assert!(run.switches[1]
            .spread(Metric::Tcp1Gbps)
            .unwrap()
            .weft_ratios
            .is_empty());
    }
}
