//! chart.svg: a grouped bar chart of every switch's ratio to the
//! scenario's kernel baseline, one panel per scenario, written by hand.
//! With `--rounds`, each bar is the median of the rounds' ratios and a
//! whisker spans their range.

use std::fmt::Write as _;

use super::measure::Test;
use super::report::{ScenarioRun, Status};
use super::topology::Switch;

/// Tall enough for the rotated labels of the longest row names under the plot.
const PANEL_H: f64 = 520.0;
const PLOT_H: f64 = 200.0;
const LEFT: f64 = 130.0;
const BAR_W: f64 = 16.0;
const GROUP_GAP: f64 = 26.0;
const TOP: f64 = 60.0;

fn color(sw: Switch) -> &'static str {
    match sw {
        Switch::Weft => "#d95f02",
        // A lighter shade of weft's: the same switch, another binary.
        Switch::WeftBaseline => "#fdae6b",
        Switch::KernelBridge | Switch::KernelVxlan => "#7570b3",
        Switch::Ovs => "#1b9e77",
        Switch::OvsTso => "#66a61e",
        Switch::Vde => "#e7298a",
    }
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG document.
pub fn svg(runs: &[ScenarioRun], tests: &[Test]) -> String {
    let widest = runs
        .iter()
        .map(|r| {
            let bars = r.switches.len() as f64;
            let groups = r.metrics(tests).len() as f64; // an upper bound
            groups * (bars * BAR_W + GROUP_GAP)
        })
        .fold(400.0, f64::max);
    let width = LEFT + widest + 40.0;
    let height = PANEL_H * runs.len().max(1) as f64 + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r##"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="#ffffff"/>"##
    );
    for (i, run) in runs.iter().enumerate() {
        panel(&mut s, run, tests, PANEL_H * i as f64);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, run: &ScenarioRun, tests: &[Test], y0: f64) {
    // Rows without any ratio (the switch processes' CPU, which the kernel
    // baseline has no figure for) would be empty groups.
    let metrics: Vec<_> = run
        .metrics(tests)
        .into_iter()
        .filter(|m| run.switches.iter().any(|sw| run.ratio(sw, *m).is_some()))
        .collect();
    let base = run.scenario.baseline().name();
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{:.0}" font-size="14" font-weight="bold">{}: ratio to {} (1.0 = baseline; ↑ higher is better, ↓ lower is better)</text>"#,
        y0 + 20.0,
        esc(run.scenario.name()),
        esc(base)
    );
    // Legend.
    let mut lx = LEFT;
    for sw in &run.switches {
        let mut name = sw.switch.name().to_string();
        if !matches!(sw.status, Status::Ok) {
            name.push_str(" (not measured)");
        }
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.0}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{:.0}">{}</text>"#,
            y0 + 30.0,
            color(sw.switch),
            lx + 16.0,
            y0 + 40.0,
            esc(&name)
        );
        lx += 30.0 + 7.0 * name.len() as f64;
    }
    let ratios: Vec<Vec<Option<f64>>> = metrics
        .iter()
        .map(|m| run.switches.iter().map(|sw| run.ratio(sw, *m)).collect())
        .collect();
    // With rounds: the range of each bar's ratios.
    let ranges: Vec<Vec<Option<(f64, f64)>>> = metrics
        .iter()
        .map(|m| {
            run.switches
                .iter()
                .map(|sw| run.ratio_range(sw, *m))
                .collect()
        })
        .collect();
    // A log scale: 2× and 0.5× are as far from the baseline, and outliers
    // (tail latencies hundreds of times the baseline) do not flatten the
    // rest.
    if ranges.iter().flatten().any(Option::is_some) {
        let _ = writeln!(
            s,
            r#"<text x="{lx:.0}" y="{:.0}">whiskers: the ratios' range over the rounds; bars: their median</text>"#,
            y0 + 40.0
        );
    }
    let extremes = ranges
        .iter()
        .flatten()
        .flatten()
        .flat_map(|(a, b)| [*a, *b]);
    let (lo, hi) = ratios
        .iter()
        .flatten()
        .flatten()
        .copied()
        .chain(extremes)
        .filter(|r| *r > 0.0)
        .fold((1.0_f64, 1.0_f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
    let ticks = ticks(lo, hi);
    let (lo, hi) = (
        ticks.first().map_or(0.5, |t| t.0),
        ticks.last().map_or(2.0, |t| t.0),
    );
    let plot_top = y0 + TOP;
    let plot_bottom = plot_top + PLOT_H;
    let span = hi.log10() - lo.log10();
    let y_of = |r: f64| {
        let r = r.clamp(lo, hi);
        plot_bottom - (r.log10() - lo.log10()) / span * PLOT_H
    };
    let group_w = run.switches.len() as f64 * BAR_W + GROUP_GAP;
    let plot_right = LEFT + group_w * metrics.len() as f64;
    for (t, label) in &ticks {
        let y = y_of(*t);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{plot_right:.1}" y2="{y:.1}" stroke="#e6e6e6"/><text x="{:.0}" y="{:.1}" text-anchor="end">{label}×</text>"##,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let one = y_of(1.0);
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{plot_top:.1}" x2="{LEFT}" y2="{plot_bottom:.1}" stroke="#333"/><line x1="{LEFT}" y1="{plot_bottom:.1}" x2="{plot_right:.1}" y2="{plot_bottom:.1}" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(24 {:.0}) rotate(-90)" text-anchor="middle">ratio to {} (log scale)</text>"#,
        (plot_top + plot_bottom) / 2.0,
        esc(base)
    );
    for (g, metric) in metrics.iter().enumerate() {
        let gx = LEFT + GROUP_GAP / 2.0 + g as f64 * group_w;
        for (b, sw) in run.switches.iter().enumerate() {
            let x = gx + b as f64 * BAR_W;
            match ratios[g][b] {
                Some(r) => {
                    let y = y_of(r);
                    let (top, h) = (y.min(one), (y - one).abs().max(1.0));
                    let range = ranges[g][b]
                        .map(|(a, b)| format!(" ({a:.2}–{b:.2} over the rounds)"))
                        .unwrap_or_default();
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{} {}: {r:.2}×{range}</title></rect>"#,
                        BAR_W - 2.0,
                        color(sw.switch),
                        esc(sw.switch.name()),
                        esc(metric.label())
                    );
                    if let Some((a, b)) = ranges[g][b] {
                        let cx = x + (BAR_W - 2.0) / 2.0;
                        let (y1, y2) = (y_of(a), y_of(b));
                        let _ = writeln!(
                            s,
                            r##"<path class="range" d="M{:.1} {y1:.1}H{:.1}M{cx:.1} {y1:.1}V{y2:.1}M{:.1} {y2:.1}H{:.1}" stroke="#222" fill="none"/>"##,
                            cx - 3.0,
                            cx + 3.0,
                            cx - 3.0,
                            cx + 3.0
                        );
                    }
                }
                None => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#999">–</text>"##,
                        x + BAR_W / 2.0,
                        plot_bottom - 4.0
                    );
                }
            }
        }
        let arrow = if metric.higher_is_better() {
            "↑"
        } else {
            "↓"
        };
        let lx = gx + run.switches.len() as f64 * BAR_W / 2.0;
        let _ = writeln!(
            s,
            r#"<text transform="translate({lx:.1} {:.1}) rotate(-45)" text-anchor="end">{} {arrow}</text>"#,
            plot_bottom + 14.0,
            esc(metric.label())
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{one:.1}" x2="{plot_right:.1}" y2="{one:.1}" stroke="#333" stroke-dasharray="4 3"/>"##
    );
}

/// Gridlines of a log axis covering `lo..=hi` and 1: 1-2-5 steps, or
/// powers of ten when that would be too many; each with its label.
fn ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let lo_e = lo.min(1.0).log10().floor() as i32;
    let hi_e = hi.max(1.0).log10().ceil() as i32;
    let steps: &[f64] = if hi_e - lo_e > 3 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut all = Vec::new();
    for e in lo_e..=hi_e {
        for m in steps {
            let t = m * 10f64.powi(e);
            let decimals = usize::try_from(-e).unwrap_or(0);
            all.push((t, format!("{t:.decimals$}")));
        }
    }
    // Keep one tick below the lowest and one above the highest value.
    let first = all
        .iter()
        .rposition(|(t, _)| *t <= lo.min(1.0) * 1.0001)
        .unwrap_or(0);
    let last = all
        .iter()
        .position(|(t, _)| *t >= hi.max(1.0) * 0.9999)
        .unwrap_or(all.len() - 1);
    let mut kept: Vec<(f64, String)> = all[first..=last].to_vec();
    if kept.len() < 2 {
        kept = vec![(0.5, "0.5".into()), (1.0, "1".into()), (2.0, "2".into())];
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_cover_the_values_and_one() {
        let t: Vec<String> = ticks(0.3, 1.6).into_iter().map(|t| t.1).collect();
        assert_eq!(t, ["0.2", "0.5", "1", "2"]);
        let t: Vec<String> = ticks(0.06, 416.0).into_iter().map(|t| t.1).collect();
        assert_eq!(t, ["0.01", "0.1", "1", "10", "100", "1000"]);
        let t = ticks(1.0, 1.0);
        assert!(t.len() >= 2);
    }

    #[test]
    fn rounds_draw_a_whisker_over_each_bar_s_range() {
        use crate::harness::measure::Metric;
        use crate::harness::report::tests::run_with;
        use crate::harness::spread::Spread;

        let round = |weft: f64, bridge: f64| {
            run_with(&[(Switch::Weft, weft), (Switch::KernelBridge, bridge)])
        };
        let one = svg(&[round(8.0, 10.0)], &[Test::Tcp1]);
        assert!(!one.contains("class=\"range\""), "{one}");
        // Three rounds: weft 8.0, 2.0 and 9.0 against the bridge's 10.0.
        let mut run = round(8.0, 10.0);
        for (sw, ratios) in run.switches.iter_mut().zip([[0.8, 0.2, 0.9], [1.0; 3]]) {
            sw.spread = vec![(
                Metric::Tcp1Gbps,
                Spread {
                    values: ratios.iter().map(|r| r * 10.0).collect(),
                    ratios: ratios.to_vec(),
                    weft_ratios: Vec::new(),
                },
            )];
        }
        let text = svg(&[run], &[Test::Tcp1]);
        // weft's bar has one; the baseline's ratio is 1 in every round.
        assert_eq!(text.matches("class=\"range\"").count(), 1, "{text}");
        assert!(
            text.contains("<title>weft TCP 1 stream: 0.80× (0.20–0.90 over the rounds)</title>"),
            "{text}"
        );
        // The axis reaches down to the lowest round.
        assert!(text.contains(">0.2×</text>"), "{text}");
    }
}
