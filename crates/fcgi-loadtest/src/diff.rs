//! `fcgi-loadtest diff OLD/results.json NEW/results.json`: two `compare` runs (before and after
//! a change) cell by cell: for requests/s, total CPU per request and p99, the change of the
//! median with both spreads, and whether it is beyond the noise. A text table on stdout, an HTML
//! page, and an exit status for CI.
//!
//! Guarantees: a change counts as a regression only when it is in the worse direction, the two
//! min-max ranges of the rounds do not overlap, and the medians differ by at least the
//! threshold; a cell that failed in NEW but not in OLD is a regression whatever the metric. The
//! exit status is 1 when the chosen metric regressed in any cell, 2 when a file cannot be read,
//! 0 otherwise.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cells::{Metric, Results, Spread, Summary};
use crate::report::{self, Meta, esc};

/// `fcgi-loadtest diff` arguments.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// results.json of the old build (the baseline).
    pub old: PathBuf,
    /// results.json of the new build.
    pub new: PathBuf,
    /// The metric whose regression fails the exit status.
    #[arg(long, value_enum, default_value = "rps")]
    pub metric: Metric,
    /// Smallest change of the median, in percent, that counts (the ranges must not overlap
    /// either).
    #[arg(long, default_value_t = 5.0)]
    pub threshold: f64,
    /// Where to write the HTML page (default: diff.html in NEW's directory).
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// What happened to one metric of one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Worse, beyond the noise and the threshold.
    Regressed,
    /// Better, beyond the noise and the threshold.
    Improved,
    /// The ranges overlap or the change is under the threshold.
    WithinNoise,
    /// Not measured on one side.
    Unknown,
}

/// One metric of one cell, old against new.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub old: Option<Spread>,
    pub new: Option<Spread>,
    /// (new median / old median - 1) in percent.
    pub pct: Option<f64>,
    pub verdict: Verdict,
}

/// One cell of the diff.
#[derive(Debug, Clone)]
pub struct CellDiff {
    pub scenario: String,
    pub path: String,
    /// `None`: the cell is missing on that side.
    pub old_failed: Option<Option<String>>,
    pub new_failed: Option<Option<String>>,
    /// rps, cpu, p99, in that order.
    pub changes: [(Metric, Change); 3],
}

impl CellDiff {
    /// The cell failed in NEW and did not in OLD.
    pub fn newly_failed(&self) -> bool {
        matches!(
            (&self.old_failed, &self.new_failed),
            (Some(None), Some(Some(_)))
        )
    }

    pub fn change(&self, metric: Metric) -> Change {
        self.changes
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, c)| *c)
            .unwrap_or(Change {
                old: None,
                new: None,
                pct: None,
                verdict: Verdict::Unknown,
            })
    }

    /// Whether this cell fails the diff on `metric`.
    pub fn regressed(&self, metric: Metric) -> bool {
        self.newly_failed() || self.change(metric).verdict == Verdict::Regressed
    }
}

/// Compares one metric.
pub fn change(metric: Metric, old: Option<Spread>, new: Option<Spread>, threshold: f64) -> Change {
    let (Some(o), Some(n)) = (old, new) else {
        return Change {
            old,
            new,
            pct: None,
            verdict: Verdict::Unknown,
        };
    };
    let pct = (o.median != 0.0).then(|| 100.0 * (n.median / o.median - 1.0));
    let beyond = !o.overlaps(&n) && pct.is_some_and(|p| p.abs() >= threshold);
    let worse = if metric.higher_is_better() {
        n.median < o.median
    } else {
        n.median > o.median
    };
    let verdict = match (beyond, worse) {
        (false, _) => Verdict::WithinNoise,
        (true, true) => Verdict::Regressed,
        (true, false) => Verdict::Improved,
    };
    Change {
        old,
        new,
        pct,
        verdict,
    }
}

/// Every cell of either side, in NEW's order then OLD's leftovers.
pub fn diff(old: &Results, new: &Results, threshold: f64) -> Vec<CellDiff> {
    let sums = |r: &Results| -> Vec<(String, String, Summary)> {
        let limits = r.settings.limits;
        r.cells
            .iter()
            .map(|c| (c.scenario.clone(), c.path.clone(), c.summary_or(&limits)))
            .collect()
    };
    let (olds, news) = (sums(old), sums(new));
    let mut keys: Vec<(String, String)> = news
        .iter()
        .map(|(s, p, _)| (s.clone(), p.clone()))
        .collect();
    for (s, p, _) in &olds {
        if !keys.iter().any(|(ks, kp)| ks == s && kp == p) {
            keys.push((s.clone(), p.clone()));
        }
    }
    let find = |list: &[(String, String, Summary)], s: &str, p: &str| {
        list.iter()
            .find(|(ls, lp, _)| ls == s && lp == p)
            .map(|(_, _, sum)| sum.clone())
    };
    keys.into_iter()
        .map(|(s, p)| {
            let o = find(&olds, &s, &p);
            let n = find(&news, &s, &p);
            let metric = |m: Metric| {
                let get = |x: &Option<Summary>| {
                    x.as_ref()
                        .filter(|x| x.failed.is_none())
                        .and_then(|x| m.of(x))
                };
                (m, change(m, get(&o), get(&n), threshold))
            };
            CellDiff {
                old_failed: o.as_ref().map(|x| x.failed.clone()),
                new_failed: n.as_ref().map(|x| x.failed.clone()),
                changes: [
                    metric(Metric::Rps),
                    metric(Metric::Cpu),
                    metric(Metric::P99),
                ],
                scenario: s,
                path: p,
            }
        })
        .collect()
}

fn spread_text(s: Option<Spread>, digits: usize) -> String {
    s.map_or("-".into(), |s| {
        format!(
            "{:.digits$} [{:.digits$}-{:.digits$}]",
            s.median, s.min, s.max
        )
    })
}

fn verdict_text(c: &Change) -> String {
    let pct = c.pct.map_or("-".into(), |p| format!("{p:+.1}%"));
    match c.verdict {
        Verdict::Regressed => format!("{pct} WORSE"),
        Verdict::Improved => format!("{pct} better"),
        Verdict::WithinNoise => format!("{pct} ~"),
        Verdict::Unknown => "-".into(),
    }
}

fn state(failed: &Option<Option<String>>) -> &'static str {
    match failed {
        None => "missing",
        Some(Some(_)) => "FAILED",
        Some(None) => "ok",
    }
}

/// The text table: per cell, each metric old [min-max] -> new [min-max] with the change.
pub fn table(cells: &[CellDiff], metric: Metric, threshold: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<16} {:>7} {:>7} | {:>26} {:>26} {:>13} | {:>22} {:>22} {:>13} | {:>22} {:>22} {:>13}",
        "scenario",
        "path",
        "old",
        "new",
        "rps old [min-max]",
        "rps new [min-max]",
        "rps change",
        "cpu us old",
        "cpu us new",
        "cpu change",
        "p99 us old",
        "p99 us new",
        "p99 change",
    );
    for c in cells {
        let [(_, rps), (_, cpu), (_, p99)] = &c.changes;
        let _ = writeln!(
            out,
            "{:<10} {:<16} {:>7} {:>7} | {:>26} {:>26} {:>13} | {:>22} {:>22} {:>13} | {:>22} {:>22} {:>13}{}",
            c.scenario,
            c.path,
            state(&c.old_failed),
            state(&c.new_failed),
            spread_text(rps.old, 0),
            spread_text(rps.new, 0),
            verdict_text(rps),
            spread_text(cpu.old, 1),
            spread_text(cpu.new, 1),
            verdict_text(cpu),
            spread_text(p99.old, 0),
            spread_text(p99.new, 0),
            verdict_text(p99),
            if c.regressed(metric) {
                "  <- REGRESSION"
            } else {
                ""
            }
        );
    }
    let n = cells.iter().filter(|c| c.regressed(metric)).count();
    let _ = writeln!(
        out,
        "rule: a change is beyond the noise when the rounds' min-max ranges do not overlap and the \
         medians differ by at least {threshold}%; a cell that fails only in NEW is a regression. \
         {} on {}: {n} cell(s).",
        if n > 0 { "REGRESSED" } else { "no regression" },
        metric.label()
    );
    out
}

/// The HTML page: per scenario a chart of the chosen metric (old and new bars with their
/// ranges, regressions in red), then the table.
pub fn html(cells: &[CellDiff], metric: Metric, threshold: f64, notes: Vec<String>) -> String {
    let meta = Meta {
        title: format!("fcgi-loadtest diff: {}", metric.label()),
        notes,
    };
    let mut out = report::page_head(&meta);
    let scenarios = report::unique(cells.iter().map(|c| c.scenario.as_str()));
    for s in scenarios {
        let mine: Vec<&CellDiff> = cells.iter().filter(|c| c.scenario == s).collect();
        let _ = writeln!(out, "<h2>{}</h2>", esc(s));
        out.push_str(&chart(s, &mine, metric));
    }
    let _ = writeln!(out, "<pre>{}</pre>", esc(&table(cells, metric, threshold)));
    out.push_str("</body>\n</html>\n");
    out
}

fn chart(scenario: &str, cells: &[&CellDiff], metric: Metric) -> String {
    const LEFT: f64 = 150.0;
    const WIDTH: f64 = 460.0;
    const ROW: f64 = 34.0;
    let max = cells
        .iter()
        .flat_map(|c| {
            let ch = c.change(metric);
            [ch.old, ch.new]
        })
        .flatten()
        .map(|s| s.max)
        .fold(f64::MIN_POSITIVE, f64::max);
    let scale = WIDTH / max;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"diff\" width=\"{:.0}\" height=\"{:.0}\" \
         role=\"img\" aria-label=\"{} old and new, {}\">\n\
         <text x=\"0\" y=\"14\" font-size=\"13\" font-weight=\"bold\">{} ({}): old grey, new \
         coloured, lines = min-max of the rounds</text>",
        LEFT + WIDTH + 260.0,
        30.0 + ROW * cells.len() as f64,
        esc(metric.label()),
        esc(scenario),
        esc(metric.label()),
        esc(scenario)
    );
    for (i, c) in cells.iter().enumerate() {
        let y = 24.0 + ROW * i as f64;
        let ch = c.change(metric);
        let _ = writeln!(
            out,
            "<text x=\"{:.0}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y + 18.0,
            esc(&c.path)
        );
        let bad = c.regressed(metric);
        for (k, (side, s)) in [("old", ch.old), ("new", ch.new)].into_iter().enumerate() {
            let Some(s) = s else { continue };
            let yy = y + 2.0 + 15.0 * k as f64;
            let fill = match (k, bad, ch.verdict) {
                (0, _, _) => "#bbb",
                (_, true, _) => "#d62728",
                (_, _, Verdict::Improved) => "#2ca02c",
                _ => "#1f77b4",
            };
            let _ = writeln!(
                out,
                "<rect class=\"bar {side}\" data-series=\"{}\" x=\"{LEFT}\" y=\"{yy:.1}\" \
                 width=\"{:.1}\" height=\"13\" fill=\"{fill}\"/>",
                esc(&c.path),
                s.median.max(0.0) * scale
            );
            if s.max > s.min {
                let (a, b, m) = (LEFT + s.min * scale, LEFT + s.max * scale, yy + 6.5);
                let _ = writeln!(
                    out,
                    "<path class=\"spread\" d=\"M{a:.1},{m:.1} H{b:.1}\" stroke=\"#000\"/>"
                );
            }
        }
        let text = match (&c.old_failed, &c.new_failed) {
            (Some(None), Some(Some(_))) => "FAILED in new".to_owned(),
            (Some(Some(_)), Some(Some(_))) => "FAILED in old and new".to_owned(),
            (Some(Some(_)), Some(None)) => "failed in old, ok in new".to_owned(),
            (None, _) => "new cell".to_owned(),
            (_, None) => "missing in new".to_owned(),
            _ => verdict_text(&ch),
        };
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\"{}>{}</text>",
            LEFT + WIDTH + 8.0,
            y + 18.0,
            if bad { " fill=\"#c00\"" } else { "" },
            esc(&text)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn read(path: &Path) -> Result<Results, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Results::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `fcgi-loadtest diff`: prints the table, writes the page, and returns 0 (no regression),
/// 1 (the metric regressed) or 2 (bad input).
pub fn main(a: DiffArgs) -> ExitCode {
    if !(a.threshold >= 0.0 && a.threshold.is_finite()) {
        eprintln!("fcgi-loadtest diff: --threshold must be a percentage >= 0");
        return ExitCode::from(2);
    }
    let (old, new) = match (read(&a.old), read(&a.new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("fcgi-loadtest diff: {e}");
            return ExitCode::from(2);
        }
    };
    let cells = diff(&old, &new, a.threshold);
    print!("{}", table(&cells, a.metric, a.threshold));
    let notes = vec![
        format!(
            "old: {} ({}, {} round(s))",
            a.old.display(),
            old.settings.load,
            old.settings.rounds
        ),
        format!(
            "new: {} ({}, {} round(s))",
            a.new.display(),
            new.settings.load,
            new.settings.rounds
        ),
    ];
    let page = html(&cells, a.metric, a.threshold, notes);
    let out = a
        .html
        .unwrap_or_else(|| a.new.parent().unwrap_or(Path::new(".")).join("diff.html"));
    match std::fs::write(&out, page) {
        Ok(()) => println!("report: {}", out.display()),
        Err(e) => eprintln!("fcgi-loadtest diff: {}: {e}", out.display()),
    }
    if cells.iter().any(|c| c.regressed(a.metric)) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[f64]) -> Option<Spread> {
        Spread::of(v)
    }

    #[test]
    fn a_change_counts_only_beyond_the_noise_and_the_threshold() {
        // Throughput down 20%, ranges apart: regressed.
        let c = change(
            Metric::Rps,
            s(&[100.0, 98.0, 102.0]),
            s(&[80.0, 79.0, 82.0]),
            5.0,
        );
        assert_eq!(c.verdict, Verdict::Regressed);
        assert!((c.pct.unwrap() + 20.0).abs() < 1e-9);
        // Down 20% but the ranges overlap: noise.
        let c = change(
            Metric::Rps,
            s(&[100.0, 70.0, 102.0]),
            s(&[80.0, 79.0, 82.0]),
            5.0,
        );
        assert_eq!(c.verdict, Verdict::WithinNoise);
        // Apart but under the threshold: noise.
        let c = change(Metric::Rps, s(&[100.0]), s(&[97.0]), 5.0);
        assert_eq!(c.verdict, Verdict::WithinNoise);
        // CPU per request up: worse; down: better.
        let c = change(Metric::Cpu, s(&[10.0, 11.0]), s(&[30.0, 31.0]), 5.0);
        assert_eq!(c.verdict, Verdict::Regressed);
        let c = change(Metric::P99, s(&[30.0, 31.0]), s(&[10.0, 11.0]), 5.0);
        assert_eq!(c.verdict, Verdict::Improved);
        assert_eq!(
            change(Metric::P99, None, s(&[1.0]), 5.0).verdict,
            Verdict::Unknown
        );
    }
}
