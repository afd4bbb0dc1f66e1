//! The sweep's outputs, with no IO: the text table, the HTML page with charts, and the
//! recommended `fcgi-uring.toml` commented with the measured ratios.

use std::fmt::Write as _;

use super::decide::Verdict;
use super::knobs::{self, Entry};
use super::{Results, Row};
use crate::report::{self, Bar, Meta, esc};

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}%", 100.0 * x)
    } else {
        "n/a".to_owned()
    }
}

fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("x{x:.3}")
    } else {
        "-".to_owned()
    }
}

/// The settings of the sweep, one sentence each.
fn settings(r: &Results) -> Vec<String> {
    let names: Vec<&str> = r.workloads.iter().map(|w| w.name.as_str()).collect();
    vec![
        format!(
            "server {} with 1 worker pinned to CPU {}; client (1 thread) pinned to CPU {}; \
             {} round(s); per trial a closed-loop run (peak) and an open-loop run at {:.0}% of \
             the default configuration's peak, each {:.1} s measured after {:.1} s warmup{}.",
            r.server,
            r.server_cpu,
            r.client_cpu,
            r.rounds,
            100.0 * r.fraction,
            r.duration_s,
            r.warmup_s,
            if r.quick { " (--quick)" } else { "" }
        ),
        format!("workloads: {}.", names.join(", ")),
        format!(
            "x = ratio to the default runs just before and after (median over rounds); \
             a value is better when its peak or CPU/request beats the default by more than \
             the largest difference between two default runs (noise) and at least {}, \
             and p99 at the fixed rate grew by less than max(noise, {}).",
            pct(r.rule.min_gain),
            pct(r.rule.p99_tolerance)
        ),
    ]
}

fn row_line(out: &mut String, r: &Row, width: usize) {
    let _ = write!(out, "{:<14} {:<width$} ", r.workload, r.setting);
    let Some(m) = &r.ratios.median else {
        let _ = writeln!(out, "failed ({} run(s))", r.ratios.failed);
        return;
    };
    let _ = write!(
        out,
        "{:>9.0} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7.2} {:>7} {:>4}  ",
        m.rps,
        ratio(r.ratios.rps),
        m.p50_us,
        m.p99_us,
        m.p999_us,
        ratio(r.ratios.p99),
        m.cpu_us_per_req,
        ratio(r.ratios.cpu),
        r.ratios.runs
    );
    match r.verdict {
        Some(v) => {
            let _ = write!(out, "{}", v.name());
        }
        None => {
            let _ = write!(
                out,
                "noise: rps {}, p99 {}, cpu {} ({} pairs)",
                pct(r.noise.rps),
                pct(r.noise.p99),
                pct(r.noise.cpu),
                r.noise.pairs
            );
        }
    }
    if r.ratios.errors > 0 {
        let _ = write!(out, " ({} errors)", r.ratios.errors);
    }
    if r.ratios.failed > 0 {
        let _ = write!(out, " ({} run(s) failed)", r.ratios.failed);
    }
    if r.ratios.client_saturated {
        let _ = write!(out, " (client saturated)");
    }
    out.push('\n');
}

fn header(out: &mut String, width: usize) {
    let _ = writeln!(
        out,
        "{:<14} {:<width$} {:>9} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>4}  verdict",
        "workload",
        "setting",
        "peak rps",
        "x",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "x p99",
        "cpu/req",
        "x cpu",
        "runs"
    );
}

/// The table: every setting in every workload against the default, the decision per knob, the
/// winners together, the notes.
pub fn table(r: &Results) -> String {
    let combined = r.combination.iter().flat_map(|c| c.rows.iter());
    let width = r
        .rows
        .iter()
        .chain(combined)
        .map(|x| x.setting.len())
        .max()
        .unwrap_or(0)
        .max(24);
    let mut out = String::new();
    header(&mut out, width);
    for row in &r.rows {
        row_line(&mut out, row, width);
    }
    let rates: Vec<String> = r
        .workloads
        .iter()
        .map(|w| match w.rate {
            Some(rate) => format!(
                "{} {rate:.0}/s (peaks {})",
                w.name,
                w.calibration
                    .iter()
                    .map(|p| format!("{p:.0}"))
                    .collect::<Vec<_>>()
                    .join("/")
            ),
            None => format!("{} (not run)", w.name),
        })
        .collect();
    let _ = writeln!(
        out,
        "\nopen-loop rates ({:.0} % of the median of the default's calibration peaks): {}",
        100.0 * r.fraction,
        rates.join(", ")
    );
    let _ = writeln!(out, "\ndecisions:");
    for d in &r.decisions {
        let judged: Vec<String> = d
            .judged
            .iter()
            .map(|(label, j)| {
                let v: Vec<&str> = j.verdicts.iter().map(|v| v.name()).collect();
                format!("{label}: {} (score {})", v.join("/"), ratio(j.score))
            })
            .collect();
        let _ = writeln!(
            out,
            "  {} (default {}) -> {}{}: {}",
            d.knob,
            d.default,
            d.value,
            if d.changed { " CHANGED" } else { "" },
            judged.join("; ")
        );
    }
    if let Some(c) = &r.combination {
        let _ = writeln!(
            out,
            "\nwinners together: {} ({})",
            c.label,
            if c.accepted { "accepted" } else { "refused" }
        );
        header(&mut out, width);
        for row in c.default_rows.iter().chain(&c.rows) {
            row_line(&mut out, row, width);
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out, "\nnotes:");
        for n in &r.notes {
            let _ = writeln!(out, "  {n}");
        }
    }
    let _ = writeln!(out);
    for s in settings(r) {
        let _ = writeln!(out, "{s}");
    }
    out
}

fn verdict_colour(v: Option<Verdict>) -> &'static str {
    match v {
        None => "#7f7f7f",
        Some(Verdict::Better) => "#2ca02c",
        Some(Verdict::Same) => "#1f77b4",
        Some(Verdict::Worse | Verdict::P99Worse) => "#d62728",
        Some(Verdict::Failed) => "#a00000",
    }
}

/// Three bar charts (peak rps, p99 at the fixed rate, CPU per request) over `rows`.
fn charts(out: &mut String, title: &str, rows: &[&Row]) {
    type Metric = (&'static str, &'static str, fn(&Row) -> Option<(f64, f64)>);
    let metrics: [Metric; 3] = [
        ("throughput", "peak requests/s", |r| {
            r.ratios.median.map(|m| (m.rps, r.ratios.rps))
        }),
        ("p99", "p99 us at the fixed rate (lower is better)", |r| {
            r.ratios.median.map(|m| (m.p99_us as f64, r.ratios.p99))
        }),
        ("cpu", "server CPU us per request (lower is better)", |r| {
            r.ratios.median.map(|m| (m.cpu_us_per_req, r.ratios.cpu))
        }),
    ];
    for (class, what, metric) in metrics {
        let bars: Vec<Bar> = rows
            .iter()
            .map(|r| {
                let m = metric(r);
                Bar {
                    label: r.setting.clone(),
                    value: m.map(|(v, _)| v),
                    text: match m {
                        Some((v, x)) if v >= 100.0 => format!("{v:.0} ({})", ratio(x)),
                        Some((v, x)) => format!("{v:.2} ({})", ratio(x)),
                        None => "failed".to_owned(),
                    },
                    series: r.setting.clone(),
                    colour: verdict_colour(r.verdict),
                }
            })
            .collect();
        out.push_str(&report::bar_chart(
            class,
            &format!("{what} ({title})"),
            &format!("{what}, {title}"),
            &bars,
        ));
    }
}

/// The page: settings, the table, then per workload and knob the three charts and the latency
/// curves of the open-loop runs (first round), then the winners together.
pub fn html(r: &Results) -> String {
    let meta = Meta {
        title: "fcgi-uring tune".into(),
        notes: settings(r),
    };
    let mut out = report::page_head(&meta);
    let _ = writeln!(
        out,
        "<p>Bar colours: grey default, green better, blue within the noise, red worse.</p>"
    );
    let _ = writeln!(out, "<pre>{}</pre>", esc(&table(r)));
    for w in &r.workloads {
        let _ = writeln!(out, "<h2>{}</h2>", esc(&w.name));
        let default: Vec<&Row> = r
            .rows
            .iter()
            .filter(|x| x.workload == w.name && x.knob.is_none())
            .collect();
        for k in &r.knobs {
            let mut rows = default.clone();
            rows.extend(
                r.rows
                    .iter()
                    .filter(|x| x.workload == w.name && x.knob.as_deref() == Some(&k.name)),
            );
            if rows.len() <= default.len() {
                continue;
            }
            let _ = writeln!(
                out,
                "<h3>{} (default {}): {}</h3>",
                esc(&k.name),
                k.default,
                esc(k.description)
            );
            let title = format!("{}, {}", w.name, k.name);
            charts(&mut out, &title, &rows);
            out.push_str(&latency(r, &w.name, &rows, &title));
        }
    }
    if let Some(c) = &r.combination {
        let _ = writeln!(out, "<h2>Winners together: {}</h2>", esc(&c.label));
        for row in &c.rows {
            let default = c.default_rows.iter().find(|x| x.workload == row.workload);
            let rows: Vec<&Row> = default.into_iter().chain([row]).collect();
            charts(&mut out, &format!("{}, together", row.workload), &rows);
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Latency curves of the first successful open-loop run of each setting in `rows`.
fn latency(r: &Results, workload: &str, rows: &[&Row], title: &str) -> String {
    let curves: Vec<report::Row> = rows
        .iter()
        .filter_map(|row| {
            let t = r.trials.iter().find(|t| {
                t.phase == "sweep"
                    && t.workload == workload
                    && t.setting == row.setting
                    && t.open.is_some()
            })?;
            Some(report::Row {
                scenario: workload.to_owned(),
                path: row.setting.clone(),
                shape: String::new(),
                result: Ok(t.open.clone()?),
            })
        })
        .collect();
    if curves.is_empty() {
        return String::new();
    }
    let refs: Vec<&report::Row> = curves.iter().collect();
    let paths: Vec<&str> = curves.iter().map(|c| c.path.as_str()).collect();
    report::latency_svg(&format!("{title}, open loop"), &refs, &paths)
}

/// One comment line per candidate of `knob`: its ratios in every workload.
fn candidate_lines(r: &Results, knob: &str) -> Vec<String> {
    let Some(plan) = r.knobs.iter().find(|k| k.name == knob) else {
        return Vec::new();
    };
    plan.candidates
        .iter()
        .map(|c| {
            let per: Vec<String> = r
                .rows
                .iter()
                .filter(|x| x.knob.as_deref() == Some(knob) && x.setting == c.label)
                .map(ratios_line)
                .collect();
            format!("  {}: {}", c.label, per.join("; "))
        })
        .collect()
}

/// One row's ratios to the default and its verdict, for the TOML comments.
fn ratios_line(x: &Row) -> String {
    format!(
        "{} rps {} p99 {} cpu {} {}",
        x.workload,
        ratio(x.ratios.rps),
        ratio(x.ratios.p99),
        ratio(x.ratios.cpu),
        x.verdict.map_or("", Verdict::name)
    )
}

/// The recommended configuration file: every swept knob at its recommended value (the default
/// where nothing beat it), the keys rules require, each commented with what was measured.
/// `fcgi-uring serve --config` accepts it as it is.
pub fn recommendation_toml(r: &Results) -> String {
    let names: Vec<&str> = r.workloads.iter().map(|w| w.name.as_str()).collect();
    let mut head = vec![
        "fcgi-uring.toml recommended by `fcgi-uring tune` (fcgi-loadtest tune).".to_owned(),
        format!(
            "Measured with {} (1 worker pinned to CPU {}, client on CPU {}), {} round(s) of {:.1} s \
             (+{:.1} s warmup) per run, open loop at {:.0}% of the default's median peak; workloads: {}.",
            r.server,
            r.server_cpu,
            r.client_cpu,
            r.rounds,
            r.duration_s,
            r.warmup_s,
            100.0 * r.fraction,
            names.join(", ")
        ),
        format!(
            "A value differs from the default only where it beat the default by more than the noise \
             between default runs of the same sweep (and at least {}), with no workload worse and \
             p99 at the fixed rate no worse by more than max(noise, {}).",
            pct(r.rule.min_gain),
            pct(r.rule.p99_tolerance)
        ),
    ];
    match &r.combination {
        Some(c) => {
            let per: Vec<String> = c.rows.iter().map(ratios_line).collect();
            head.push(format!(
                "Winners together ({}) vs the default: {}{}.",
                c.label,
                per.join("; "),
                if c.accepted {
                    ""
                } else {
                    " -- refused: see the values below"
                }
            ));
        }
        None => head.push("No value beat the default: these are the defaults.".into()),
    }
    head.push(
        "[server] workers / pin_workers were 1 / true (one server CPU) and are left at their defaults here."
            .into(),
    );
    let mut entries = Vec::new();
    for (key, value) in &r.recommendation.overrides {
        let mut e = Entry::new(key, value.literal());
        let short = key.split_once('.').map_or(key.as_str(), |(_, k)| k);
        match r.decisions.iter().find(|d| d.knob == *key) {
            Some(d) if d.changed && d.value == *value => {
                e.comments
                    .push(format!("{short}: {value} (default {}): chosen", d.default));
            }
            Some(d) if d.changed => e.comments.push(format!(
                "{short}: default {} kept (won alone with {}, refused together)",
                d.default, d.value
            )),
            Some(d) => e
                .comments
                .push(format!("{short}: default {} kept", d.default)),
            None => {}
        }
        e.comments.extend(candidate_lines(r, key));
        entries.push(e);
    }
    for i in &r.recommendation.implied {
        let mut e = Entry::new(&i.key, i.value.literal());
        e.comments.push(format!("required: {}", i.why));
        entries.push(e);
    }
    knobs::toml_file(&head, &entries)
}

#[cfg(test)]
mod tests {
    use super::super::decide::{Judged, Noise, Ratios, Rule, Sample};
    use super::super::knobs::{Setting, Value};
    use super::super::{
        Candidate, Combination, Decision, KnobPlan, Results, Row, Trial, WorkloadInfo, knob,
    };
    use super::*;
    use crate::report::tests::elements;

    fn sample(rps: f64) -> Sample {
        Sample {
            rps,
            p50_us: 50,
            p99_us: 200,
            p999_us: 400,
            cpu_us_per_req: 6.5,
            errors: 0,
            client_saturated: false,
        }
    }

    fn ratios(x: f64, runs: usize) -> Ratios {
        Ratios {
            rps: x,
            p99: 1.0 / x,
            cpu: 1.0 / x,
            rps_runs: vec![x; runs],
            median: (runs > 0).then(|| sample(100_000.0 * x)),
            runs,
            failed: usize::from(runs == 0),
            errors: 0,
            client_saturated: false,
        }
    }

    fn noise() -> Noise {
        Noise {
            rps: 0.03,
            p99: 0.1,
            cpu: 0.02,
            pairs: 2,
        }
    }

    fn row(w: &str, knob: Option<&str>, setting: &str, x: f64, v: Option<Verdict>) -> Row {
        Row {
            workload: w.into(),
            knob: knob.map(Into::into),
            setting: setting.into(),
            ratios: ratios(x, if v == Some(Verdict::Failed) { 0 } else { 2 }),
            verdict: v,
            noise: noise(),
        }
    }

    /// Two workloads, completions_per_turn (8 worse, 128 better: chosen) and coop_taskrun
    /// (false failed in one workload: default kept), the winners together accepted.
    pub(crate) fn results() -> Results {
        let defaults = knobs::parse_defaults(&fcgi_uring_cli::config_file::to_toml(
            &fcgi_uring::Config::default(),
        ))
        .unwrap();
        let cand = |k: &str, v: Value| {
            let setting = Setting::new(vec![(k.into(), v)], &defaults);
            Candidate {
                value: v,
                label: setting.label(),
                setting,
            }
        };
        let cpt = "ring.completions_per_turn";
        let dt = "ring.coop_taskrun";
        let knobs = vec![
            KnobPlan {
                name: cpt.into(),
                description: knob(cpt).description,
                default: Value::Int(32),
                candidates: vec![cand(cpt, Value::Int(8)), cand(cpt, Value::Int(128))],
            },
            KnobPlan {
                name: dt.into(),
                description: knob(dt).description,
                default: Value::Bool(true),
                candidates: vec![cand(dt, Value::Bool(false))],
            },
        ];
        use Verdict::*;
        let mut rows = Vec::new();
        for w in ["keepconn-tcp", "mux16-tcp"] {
            rows.push(row(w, None, "default", 1.0, None));
            rows.push(row(
                w,
                Some(cpt),
                "completions_per_turn=8",
                0.9,
                Some(Worse),
            ));
            rows.push(row(
                w,
                Some(cpt),
                "completions_per_turn=128",
                1.1,
                Some(Better),
            ));
        }
        rows.push(row(
            "keepconn-tcp",
            Some(dt),
            "coop_taskrun=false",
            1.0,
            Some(Same),
        ));
        rows.push(row(
            "mux16-tcp",
            Some(dt),
            "coop_taskrun=false",
            1.0,
            Some(Failed),
        ));
        let j = |v: Vec<Verdict>, score: f64| Judged { verdicts: v, score };
        let decisions = vec![
            Decision {
                knob: cpt.into(),
                default: Value::Int(32),
                value: Value::Int(128),
                changed: true,
                judged: vec![
                    ("completions_per_turn=8".into(), j(vec![Worse, Worse], 0.8)),
                    (
                        "completions_per_turn=128".into(),
                        j(vec![Better, Better], 1.2),
                    ),
                ],
            },
            Decision {
                knob: dt.into(),
                default: Value::Bool(true),
                value: Value::Bool(true),
                changed: false,
                judged: vec![("coop_taskrun=false".into(), j(vec![Same, Failed], 1.0))],
            },
        ];
        let best = Setting::new(vec![(cpt.into(), Value::Int(128))], &defaults);
        let recommendation = Setting::new(
            vec![
                (cpt.into(), Value::Int(128)),
                (dt.into(), Value::Bool(true)),
            ],
            &defaults,
        );
        let trial = |w: &str, setting: &str| Trial {
            step: 1,
            phase: "sweep",
            round: 1,
            workload: w.into(),
            setting: setting.into(),
            keys: Vec::new(),
            rate: Some(70_000.0),
            sample: Some(sample(100_000.0)),
            error: None,
            closed: None,
            open: Some(crate::report::tests::report(100, 1000)),
            config: String::new(),
            log: String::new(),
        };
        Results {
            server: "/x/fcgi-uring".into(),
            server_cpu: 0,
            client_cpu: 1,
            duration_s: 1.0,
            warmup_s: 0.3,
            rounds: 1,
            fraction: 0.7,
            rule: Rule::default(),
            quick: true,
            started_unix: 0,
            wall_s: 60.0,
            notes: vec!["ring.sqpoll: skipped, this server does not have it".into()],
            workloads: vec![
                WorkloadInfo {
                    name: "keepconn-tcp".into(),
                    description: "d".into(),
                    rate: Some(70_000.0),
                    calibration: vec![99_000.0, 100_000.0, 101_000.0],
                },
                WorkloadInfo {
                    name: "mux16-tcp".into(),
                    description: "d".into(),
                    rate: Some(200_000.0),
                    calibration: vec![285_000.0, 286_000.0, 290_000.0],
                },
            ],
            knobs,
            combination: Some(Combination {
                label: best.label(),
                setting: best,
                default_rows: vec![
                    row("keepconn-tcp", None, "default", 1.0, None),
                    row("mux16-tcp", None, "default", 1.0, None),
                ],
                rows: vec![
                    row(
                        "keepconn-tcp",
                        None,
                        "completions_per_turn=128",
                        1.08,
                        Some(Better),
                    ),
                    row(
                        "mux16-tcp",
                        None,
                        "completions_per_turn=128",
                        1.01,
                        Some(Same),
                    ),
                ],
                accepted: true,
            }),
            rows,
            decisions,
            recommendation,
            trials: vec![
                trial("keepconn-tcp", "default"),
                trial("keepconn-tcp", "completions_per_turn=128"),
            ],
        }
    }

    #[test]
    fn table_has_a_row_per_setting_and_workload_with_ratios() {
        let t = table(&results());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("workload") && lines[0].contains("x p99"));
        let row = |w: &str, s: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(w) && l.contains(&format!(" {s} ")))
                .unwrap_or_else(|| panic!("no row {w} {s}:\n{t}"))
                .to_string()
        };
        assert!(row("keepconn-tcp", "default").contains("noise: rps 3.0%"));
        assert!(row("keepconn-tcp", "completions_per_turn=128").contains("x1.100"));
        assert!(
            row("mux16-tcp", "completions_per_turn=8")
                .trim_end()
                .ends_with("worse")
        );
        assert!(row("mux16-tcp", "coop_taskrun=false").contains("failed"));
        // Four in the sweep, the default and the winners in the confirmation.
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("keepconn-tcp"))
                .count(),
            6
        );
        assert!(t.contains("ring.completions_per_turn (default 32) -> 128 CHANGED"));
        assert!(t.contains("ring.coop_taskrun (default true) -> true:"));
        let together = t.split("winners together: completions_per_turn=128 (accepted)\n");
        let together: Vec<&str> = together.last().unwrap().lines().take(5).collect();
        assert!(together[0].starts_with("workload"), "{t}");
        assert!(together[1].starts_with("keepconn-tcp") && together[1].contains(" default "));
        assert!(together[4].starts_with("mux16-tcp") && together[4].ends_with("same"));
        assert!(t.contains(
            "open-loop rates (70 % of the median of the default's calibration peaks): \
             keepconn-tcp 70000/s (peaks 99000/100000/101000)"
        ));
        assert!(t.contains("sqpoll: skipped"));
    }

    #[test]
    fn html_has_the_charts_and_is_well_formed() {
        let page = html(&results());
        let names = elements(&page);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<script"));
        // Per workload and knob: rps, p99, cpu, latency; then rps, p99, cpu per workload for
        // the winners together.
        let svgs = names.iter().filter(|n| *n == "svg").count();
        let latency = page.matches("class=\"latency\"").count();
        assert_eq!(page.matches("class=\"throughput\"").count(), 2 * 2 + 2);
        assert_eq!(page.matches("class=\"p99\"").count(), 2 * 2 + 2);
        assert_eq!(page.matches("class=\"cpu\"").count(), 2 * 2 + 2);
        assert_eq!(
            latency, 2,
            "curves only where the trials carried open-loop reports"
        );
        assert_eq!(svgs, 18 + latency);
        // The failed row is drawn without a bar.
        assert!(page.contains("fill=\"#a00\">failed</text>"));
    }

    #[test]
    fn recommendation_is_a_valid_config_file_with_the_ratios() {
        let text = recommendation_toml(&results());
        let file =
            fcgi_uring_cli::config_file::ConfigFile::parse(&text, "fcgi-uring.toml").unwrap();
        assert_eq!(file.ring.completions_per_turn, Some(128));
        assert_eq!(file.ring.coop_taskrun, Some(true));
        assert_eq!(file.server, Default::default(), "no [server] key");
        assert!(text.contains("# completions_per_turn: 128 (default 32): chosen"));
        assert!(text.contains("#   completions_per_turn=8: keepconn-tcp rps x0.900"));
        assert!(text.contains("# coop_taskrun: default true kept"));
        assert!(text.contains(
            "Winners together (completions_per_turn=128) vs the default: keepconn-tcp rps x1.080"
        ));
        let mut none = results();
        none.combination = None;
        assert!(recommendation_toml(&none).contains("No value beat the default"));
    }
}
