//! `compare`'s output with no IO: the plain-text table and the HTML page (inline SVG, no
//! scripts) over the [`cells`](crate::cells) of a [`Results`].
//!
//! Guarantees: every failed cell (error rate over the threshold, or not run) is marked in every
//! table row and chart it appears in, with its error rate and reason classes, and is never
//! ranked; cells whose spreads overlap are said to tie within noise instead of being ranked.

use std::fmt::Write as _;

use crate::cells::{Cell, Metric, Ranking, Results, Spread, Summary, rank};
use crate::report::{self, Meta, Row, esc};

/// Colours of the three parts of a request's cost.
const PROXY: &str = "#ff7f0e";
const BACKEND: &str = "#1f77b4";
const CLIENT: &str = "#9e9e9e";

/// The distinct scenarios, in order of first appearance.
fn scenarios(results: &Results) -> Vec<&str> {
    report::unique(results.cells.iter().map(|c| c.scenario.as_str()))
}

/// The cells of one scenario with their summaries.
fn of_scenario<'a>(results: &'a Results, scenario: &str) -> Vec<(&'a Cell, Summary)> {
    let limits = results.settings.limits;
    results
        .cells
        .iter()
        .filter(|c| c.scenario == scenario)
        .map(|c| (c, c.summary_or(&limits)))
        .collect()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn med(s: Option<Spread>) -> Option<f64> {
    s.map(|s| s.median)
}

/// `1`, or `=2` for a rank shared with a tie, or `-` when not ranked.
fn rank_text(r: &Ranking, i: usize) -> String {
    match r.rank[i] {
        None => "-".into(),
        Some(n) if r.ties[i].is_empty() => n.to_string(),
        Some(n) => format!("={n}"),
    }
}

/// The names of the cells `i` ties with.
fn ties(r: &Ranking, i: usize, cells: &[(&Cell, Summary)]) -> Vec<String> {
    r.ties[i].iter().map(|&j| cells[j].0.path.clone()).collect()
}

/// What the table's last column says about a cell: failed, saturation, ties.
fn remark(s: &Summary, cost_ties: &[String]) -> String {
    if let Some(f) = &s.failed {
        return format!("FAILED: {f}");
    }
    let mut parts = Vec::new();
    if let Some(b) = &s.busy {
        parts.push(b.verdict());
    }
    if s.errors > 0 {
        parts.push(format!("{} errors", s.errors));
    }
    if !cost_ties.is_empty() {
        parts.push(format!("cpu tie within noise: {}", cost_ties.join(", ")));
    }
    parts.join("; ")
}

/// The plain-text table: one line per cell, then the headlines and the notes.
pub fn table(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<16} {:>6} {:>9} {:>6} {:>8} {:>8} {:>6} | {:>7} {:>7} {:>6} {:>7} {:>7} {:>6} | {:>4} {:>4} {:>4} | {:>4} {:>4} | remark",
        "scenario",
        "path",
        "shape",
        "rps",
        "±%",
        "p50 us",
        "p99 us",
        "err %",
        "proxy",
        "backend",
        "b-sys",
        "client",
        "total",
        "±%",
        "cli%",
        "prx%",
        "bak%",
        "rps#",
        "cpu#",
    );
    for scenario in scenarios(results) {
        let cells = of_scenario(results, scenario);
        let sums: Vec<&Summary> = cells.iter().map(|(_, s)| s).collect();
        let by_rps = rank(&sums, Metric::Rps);
        let by_cpu = rank(&sums, Metric::Cpu);
        for (i, (c, s)) in cells.iter().enumerate() {
            let busy = s.busy;
            let _ = writeln!(
                out,
                "{:<10} {:<16} {:>6} {:>9} {:>6} {:>8} {:>8} {:>6.2} | {:>7} {:>7} {:>6} {:>7} {:>7} {:>6} | {:>4} {:>4} {:>4} | {:>4} {:>4} | {}",
                c.scenario,
                c.path,
                c.shape,
                opt(med(s.rps), 0),
                opt(s.rps.map(|r| r.spread_pct()), 1),
                opt(med(s.p50_us), 0),
                opt(med(s.p99_us), 0),
                s.error_pct,
                opt(med(s.proxy_us), 1),
                opt(med(s.backend_us), 1),
                opt(med(s.backend_system_us), 1),
                opt(med(s.client_us), 1),
                opt(med(s.total_us), 1),
                opt(s.total_us.map(|r| r.spread_pct()), 1),
                opt(busy.map(|b| b.client_pct), 0),
                opt(busy.and_then(|b| b.proxy_pct), 0),
                opt(busy.and_then(|b| b.backend_pct), 0),
                rank_text(&by_rps, i),
                rank_text(&by_cpu, i),
                remark(s, &ties(&by_cpu, i, &cells)),
            );
        }
    }
    let _ = writeln!(
        out,
        "cpu columns: CPU microseconds per successful request (total = proxy + backend + client, \
         median of per-round sums; b-sys = the backend's system time, part of backend); ±% = half the min-max range of the rounds over the median; \
         busy %: client of its cores, proxy and backend of the server CPUs they share; \
         rps# and cpu#: rank in the scenario, =N a tie within noise (ranges overlap), - not ranked; \
         a cell over {}% errors is FAILED.",
        results.settings.limits.max_error_pct
    );
    for scenario in scenarios(results) {
        let _ = writeln!(out, "{}", headline(results, scenario));
    }
    for n in &results.notes {
        let _ = writeln!(out, "{n}");
    }
    out
}

/// One sentence per scenario: the cheapest path by total CPU per request at the rate measured,
/// with the paths that tie with it, and how many cells failed.
pub fn headline(results: &Results, scenario: &str) -> String {
    let cells = of_scenario(results, scenario);
    let sums: Vec<&Summary> = cells.iter().map(|(_, s)| s).collect();
    let by_cpu = rank(&sums, Metric::Cpu);
    let failed = sums.iter().filter(|s| s.failed.is_some()).count();
    let failed = if failed > 0 {
        format!(" {failed} cell(s) FAILED.")
    } else {
        String::new()
    };
    let best = (0..cells.len())
        .filter(|&i| by_cpu.rank[i] == Some(1))
        .min_by(|&a, &b| {
            let m = |i: usize| med(sums[i].total_us).unwrap_or(f64::MAX);
            m(a).total_cmp(&m(b))
        });
    let Some(i) = best else {
        return format!("{scenario}: no cell with a total CPU per request.{failed}");
    };
    let (c, s) = &cells[i];
    let part = |name: &str, v: Option<Spread>| v.map(|v| format!("{name} {:.1}", v.median));
    let parts: Vec<String> = [
        part("proxy", s.proxy_us),
        part("backend", s.backend_us),
        part("client", s.client_us),
    ]
    .into_iter()
    .flatten()
    .collect();
    let tie = ties(&by_cpu, i, &cells);
    format!(
        "{scenario}: cheapest per request {} at {} us of CPU ({}) at {} requests/s ({}){}.{failed}",
        c.path,
        opt(med(s.total_us), 1),
        parts.join(" + "),
        opt(med(s.rps), 0),
        s.busy.map_or(String::new(), |b| b.verdict()),
        if tie.is_empty() {
            String::new()
        } else {
            format!("; tie within noise with {}", tie.join(", "))
        }
    )
}

/// The HTML page: headline per scenario, a cost chart, a throughput chart and a latency
/// chart per scenario, then the table.
pub fn html(results: &Results) -> String {
    let meta = Meta {
        title: results.title.clone(),
        notes: results.notes.clone(),
    };
    let mut out = report::page_head(&meta);
    out.push_str(STYLE);
    for scenario in scenarios(results) {
        let cells = of_scenario(results, scenario);
        let _ = writeln!(out, "<h2>{}</h2>", esc(scenario));
        let _ = writeln!(
            out,
            "<p class=\"headline\">{}</p>",
            esc(&headline(results, scenario))
        );
        out.push_str(&cost_svg(scenario, &cells));
        out.push_str(&throughput_svg(scenario, &cells));
        out.push_str(&latency(scenario, &cells));
    }
    out.push_str("<h2>All cells</h2>\n");
    out.push_str(&html_table(results));
    let _ = writeln!(out, "<pre>{}</pre>", esc(&table(results)));
    out.push_str("</body>\n</html>\n");
    out
}

const STYLE: &str = "<style>table{border-collapse:collapse;font-size:13px}\
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td.l,th.l{text-align:left}\
tr.failed td{background:#fdd}p.headline{font-weight:bold}</style>\n";

/// The SVG pattern drawn for failed cells, with an id unique to its chart.
fn failed_pattern(id: &str) -> String {
    format!(
        "<defs><pattern id=\"{id}\" patternUnits=\"userSpaceOnUse\" width=\"6\" height=\"6\">\
         <rect width=\"6\" height=\"6\" fill=\"#eee\"/><path d=\"M0,6 L6,0\" stroke=\"#c00\" \
         stroke-width=\"1.5\"/></pattern></defs>\n"
    )
}

fn svg_open(class: &str, aria: &str, width: f64, height: f64, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"{}\" width=\"{width:.0}\" \
         height=\"{height:.0}\" role=\"img\" aria-label=\"{}\">\n\
         <text x=\"0\" y=\"14\" font-size=\"13\" font-weight=\"bold\">{}</text>\n",
        esc(class),
        esc(aria),
        esc(title)
    )
}

const LEFT: f64 = 150.0;
const WIDTH: f64 = 500.0;
const BAR: f64 = 22.0;

/// A failed cell's bar: hatched, as long as its value (or a stub), with the reason.
fn failed_bar(out: &mut String, pattern: &str, c: &Cell, y: f64, w: f64, why: &str) {
    let _ = writeln!(
        out,
        "<rect class=\"bar failed\" data-series=\"{}\" x=\"{LEFT}\" y=\"{:.1}\" width=\"{:.1}\" \
         height=\"{:.1}\" fill=\"url(#{pattern})\" stroke=\"#c00\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#c00\">FAILED: {}</text>",
        esc(&c.path),
        y + 2.0,
        w.max(30.0),
        BAR - 4.0,
        LEFT + w.max(30.0) + 4.0,
        y + BAR * 0.65,
        esc(why)
    );
}

fn label(out: &mut String, text: &str, y: f64) {
    let _ = writeln!(
        out,
        "<text x=\"{:.0}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\">{}</text>",
        LEFT - 6.0,
        y + BAR * 0.65,
        esc(text)
    );
}

/// The min-max range of the rounds as a line with end ticks.
fn whisker(out: &mut String, s: &Spread, scale: f64, y: f64) {
    if s.max <= s.min {
        return;
    }
    let (a, b, m) = (LEFT + s.min * scale, LEFT + s.max * scale, y + BAR / 2.0);
    let _ = writeln!(
        out,
        "<path class=\"spread\" d=\"M{a:.1},{m:.1} H{b:.1} M{a:.1},{:.1} V{:.1} M{b:.1},{:.1} V{:.1}\" \
         stroke=\"#000\" fill=\"none\"/>",
        m - 5.0,
        m + 5.0,
        m - 5.0,
        m + 5.0
    );
}

/// Stacked bars per path: CPU per request of the proxy, the backend and the client (medians),
/// a whisker over the range of the per-round totals, the rate and the saturation beside it.
fn cost_svg(scenario: &str, cells: &[(&Cell, Summary)]) -> String {
    let sums: Vec<&Summary> = cells.iter().map(|(_, s)| s).collect();
    let by_cpu = rank(&sums, Metric::Cpu);
    let max = sums
        .iter()
        .filter_map(|s| s.total_us.map(|t| t.max))
        .fold(f64::MIN_POSITIVE, f64::max);
    let scale = WIDTH / max;
    let height = 50.0 + BAR * cells.len() as f64;
    let pattern = format!("failed-cost-{}", slug(scenario));
    let mut out = svg_open(
        "cost",
        &format!("CPU per request, {scenario}"),
        LEFT + WIDTH + 520.0,
        height,
        &format!("CPU microseconds per request: proxy + backend + client ({scenario})"),
    );
    out.push_str(&failed_pattern(&pattern));
    for (i, (name, colour)) in [("proxy", PROXY), ("backend", BACKEND), ("client", CLIENT)]
        .iter()
        .enumerate()
    {
        let x = LEFT + 90.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{x:.0}\" y=\"20\" width=\"12\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{:.0}\" y=\"29\" font-size=\"11\">{name}</text>",
            x + 16.0
        );
    }
    for (i, (c, s)) in cells.iter().enumerate() {
        let y = 36.0 + BAR * i as f64;
        label(&mut out, &c.path, y);
        let total = med(s.total_us);
        if let Some(why) = &s.failed {
            failed_bar(&mut out, &pattern, c, y, total.unwrap_or(0.0) * scale, why);
            continue;
        }
        let mut x = LEFT;
        for (part, colour, v) in [
            ("proxy", PROXY, s.proxy_us),
            ("backend", BACKEND, s.backend_us),
            ("client", CLIENT, s.client_us),
        ] {
            let Some(v) = v else { continue };
            let w = v.median.max(0.0) * scale;
            let _ = writeln!(
                out,
                "<rect class=\"bar {part}\" data-series=\"{}\" x=\"{x:.1}\" y=\"{:.1}\" \
                 width=\"{w:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>",
                esc(&c.path),
                y + 2.0,
                BAR - 4.0
            );
            x += w;
        }
        if let Some(t) = &s.total_us {
            whisker(&mut out, t, scale, y);
        }
        let tie = ties(&by_cpu, i, cells);
        let text = format!(
            "{} us at {} req/s{}; {}{}",
            opt(total, 1),
            opt(med(s.rps), 0),
            if s.errors > 0 {
                format!(" ({:.2}% errors)", s.error_pct)
            } else {
                String::new()
            },
            s.busy.map_or(String::new(), |b| b.verdict()),
            if tie.is_empty() {
                String::new()
            } else {
                format!("; tie within noise: {}", tie.join(", "))
            }
        );
        let end = LEFT + s.total_us.map_or(0.0, |t| t.max.max(t.median)) * scale;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{}</text>",
            end.max(x) + 4.0,
            y + BAR * 0.65,
            esc(&text)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Bars per path: successful requests per second (median), a whisker over the rounds' range,
/// the error rate and the saturation beside it; failed cells hatched.
fn throughput_svg(scenario: &str, cells: &[(&Cell, Summary)]) -> String {
    let sums: Vec<&Summary> = cells.iter().map(|(_, s)| s).collect();
    let by_rps = rank(&sums, Metric::Rps);
    let paths = report::unique(cells.iter().map(|(c, _)| c.path.as_str()));
    let max = sums
        .iter()
        .filter_map(|s| s.rps.map(|t| t.max))
        .fold(f64::MIN_POSITIVE, f64::max);
    let scale = WIDTH / max;
    let height = 30.0 + BAR * cells.len() as f64;
    let pattern = format!("failed-rps-{}", slug(scenario));
    let mut out = svg_open(
        "throughput",
        &format!("throughput, {scenario}"),
        LEFT + WIDTH + 520.0,
        height,
        &format!("successful requests/s ({scenario})"),
    );
    out.push_str(&failed_pattern(&pattern));
    for (i, (c, s)) in cells.iter().enumerate() {
        let y = 22.0 + BAR * i as f64;
        label(&mut out, &c.path, y);
        let rps = med(s.rps);
        if let Some(why) = &s.failed {
            failed_bar(&mut out, &pattern, c, y, rps.unwrap_or(0.0) * scale, why);
            continue;
        }
        let w = rps.unwrap_or(0.0) * scale;
        let _ = writeln!(
            out,
            "<rect class=\"bar\" data-series=\"{}\" x=\"{LEFT}\" y=\"{:.1}\" width=\"{w:.1}\" \
             height=\"{:.1}\" fill=\"{}\"/>",
            esc(&c.path),
            y + 2.0,
            BAR - 4.0,
            report::colour(&paths, &c.path)
        );
        if let Some(r) = &s.rps {
            whisker(&mut out, r, scale, y);
        }
        let tie = ties(&by_rps, i, cells);
        let text = format!(
            "{} ({:.2}% errors); {}{}",
            opt(rps, 0),
            s.error_pct,
            s.busy.map_or(String::new(), |b| b.verdict()),
            if tie.is_empty() {
                String::new()
            } else {
                format!("; tie within noise: {}", tie.join(", "))
            }
        );
        let end = LEFT + s.rps.map_or(0.0, |r| r.max) * scale;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{}</text>",
            end.max(LEFT + w) + 4.0,
            y + BAR * 0.65,
            esc(&text)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The latency curves of each cell's median round; a failed cell's series is named FAILED.
fn latency(scenario: &str, cells: &[(&Cell, Summary)]) -> String {
    let rows: Vec<Row> = cells
        .iter()
        .map(|(c, s)| Row {
            scenario: scenario.to_owned(),
            path: if s.failed.is_some() {
                format!("{} FAILED", c.path)
            } else {
                c.path.clone()
            },
            shape: c.shape.clone(),
            result: c
                .median_round()
                .cloned()
                .ok_or_else(|| s.failed.clone().unwrap_or_default()),
        })
        .collect();
    let refs: Vec<&Row> = rows.iter().collect();
    let paths = report::unique(rows.iter().map(|r| r.path.as_str()));
    report::latency_svg(scenario, &refs, &paths)
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The cells as an HTML table, failed rows highlighted.
fn html_table(results: &Results) -> String {
    let mut out = String::from(
        "<table>\n<tr><th class=\"l\">scenario</th><th class=\"l\">path</th><th>shape</th>\
         <th>rps median</th><th>rps min-max</th><th>p50 us</th><th>p99 us</th><th>p99.9 us</th>\
         <th>error %</th><th>proxy us/req</th><th>backend us/req</th>\
         <th>backend system us/req</th><th>client us/req</th>\
         <th>total us/req</th><th>total min-max</th><th>client busy %</th><th>proxy busy %</th>\
         <th>backend busy %</th><th>server CPUs busy % (all)</th><th>client CPUs busy % (all)</th>\
         <th>rounds</th><th class=\"l\">remark</th></tr>\n",
    );
    let range = |s: Option<Spread>, d: usize| {
        s.map_or("-".into(), |s| format!("{:.d$}-{:.d$}", s.min, s.max))
    };
    for scenario in scenarios(results) {
        let cells = of_scenario(results, scenario);
        let sums: Vec<&Summary> = cells.iter().map(|(_, s)| s).collect();
        let by_cpu = rank(&sums, Metric::Cpu);
        for (i, (c, s)) in cells.iter().enumerate() {
            let b = s.busy;
            let _ = writeln!(
                out,
                "<tr{}><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}/{}</td>\
                 <td class=\"l\">{}</td></tr>",
                if s.failed.is_some() {
                    " class=\"failed\""
                } else {
                    ""
                },
                esc(&c.scenario),
                esc(&c.path),
                esc(&c.shape),
                opt(med(s.rps), 0),
                range(s.rps, 0),
                opt(med(s.p50_us), 0),
                opt(med(s.p99_us), 0),
                opt(med(s.p999_us), 0),
                s.error_pct,
                opt(med(s.proxy_us), 1),
                opt(med(s.backend_us), 1),
                opt(med(s.backend_system_us), 1),
                opt(med(s.client_us), 1),
                opt(med(s.total_us), 1),
                range(s.total_us, 1),
                opt(b.map(|b| b.client_pct), 0),
                opt(b.and_then(|b| b.proxy_pct), 0),
                opt(b.and_then(|b| b.backend_pct), 0),
                opt(b.and_then(|b| b.server_cpus_pct), 0),
                opt(b.and_then(|b| b.client_cpus_pct), 0),
                s.rounds_ok,
                s.rounds,
                esc(&remark(s, &ties(&by_cpu, i, &cells)))
            );
        }
    }
    out.push_str("</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::{Limits, Round, Settings};
    use crate::report::tests::{elements, report};

    fn results() -> Results {
        let round = |rps_base: u64, n: u64, backend: f64| Round {
            report: Some(report(rps_base, n)),
            error: None,
            proxy_cpu_s: Some(0.1),
            backend_cpu_s: Some(backend),
            backend_system_s: Some(backend * 0.75),
        };
        let mut cells = Vec::new();
        for (path, n, proxy) in [
            ("fastcgi", 1000, None),
            ("nginx>fastcgi", 2000, Some("nginx")),
        ] {
            cells.push(Cell {
                scenario: "hello".into(),
                path: path.into(),
                shape: "16x4".into(),
                proxy: proxy.map(Into::into),
                rate: None,
                rounds: vec![
                    round(100, n, 0.05),
                    round(100, n, 0.06),
                    round(100, n, 0.04),
                ],
                summary: None,
            });
        }
        // Failed: the report has many status errors.
        let mut bad = report(100, 5000);
        bad.errors = 500;
        bad.errors_by_kind.status = 500;
        bad.errors_by_kind.status_codes.insert(500, 500);
        cells.push(Cell {
            scenario: "hello".into(),
            path: "haproxy>fastcgi".into(),
            shape: "64x1".into(),
            proxy: Some("haproxy".into()),
            rate: None,
            rounds: vec![Round {
                report: Some(bad),
                error: None,
                proxy_cpu_s: Some(0.2),
                backend_cpu_s: Some(0.1),
                backend_system_s: None,
            }],
            summary: None,
        });
        cells.push(Cell {
            scenario: "hello".into(),
            path: "haproxy>h2c <&>".into(),
            shape: "-".into(),
            proxy: Some("haproxy".into()),
            rate: None,
            rounds: vec![Round::failed("did not start")],
            summary: None,
        });
        let limits = Limits {
            max_error_pct: 0.1,
            server_cpus: 1,
        };
        for c in &mut cells {
            c.summarize(&limits);
        }
        Results {
            format: crate::cells::FORMAT.into(),
            title: "t <x>".into(),
            notes: vec!["note".into()],
            settings: Settings {
                rounds: 3,
                duration_s: 1.0,
                warmup_s: 0.0,
                server_cpus: vec![0],
                client_cpus: vec![1],
                load: "closed loop".into(),
                limits,
            },
            cells,
        }
    }

    #[test]
    fn table_marks_failed_cells_and_ranks_the_rest() {
        let t = table(&results());
        let line = |p: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("hello      {p} ")))
                .unwrap_or_else(|| panic!("{p} in {t}"))
                .to_owned()
        };
        let failed = line("haproxy>fastcgi");
        assert!(
            failed.contains("FAILED: 9.09% errors: proxy 5xx 500 (500 x 500)"),
            "{failed}"
        );
        assert!(line("haproxy>h2c <&>").contains("FAILED: did not run: did not start"));
        // fastcgi: 1000 req/s, backend 40-60 ms -> 50 us/req median, of which system 37.5;
        // nginx>fastcgi 2000 req/s, backend 25 + proxy 50.
        assert!(
            t.lines().next().unwrap().contains(" backend  b-sys "),
            "{t}"
        );
        let f = line("fastcgi");
        assert!(f.contains(" 1000 "), "{f}");
        assert!(f.contains(" 50.0   37.5 "), "{f}");
        let n = line("nginx>fastcgi");
        assert!(n.contains(" 50.0 ") && n.contains(" 25.0 "), "{n}");
        assert!(t.contains("hello: cheapest per request"), "{t}");
        assert!(t.contains("2 cell(s) FAILED."), "{t}");
        assert!(t.ends_with("note\n"));
    }

    #[test]
    fn page_is_well_formed_and_draws_failed_cells_hatched() {
        let page = html(&results());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<script"));
        let names = elements(&page);
        assert_eq!(names.iter().filter(|n| *n == "svg").count(), 3);
        // Both failed cells, in both bar charts.
        assert_eq!(page.matches("class=\"bar failed\"").count(), 4);
        assert!(page.contains("FAILED: 9.09% errors: proxy 5xx 500 (500 x 500)"));
        assert!(page.contains("haproxy&gt;fastcgi FAILED"));
        assert_eq!(page.matches("<tr class=\"failed\">").count(), 2);
        // Stacked cost bars: proxy only for the proxied cell.
        assert_eq!(page.matches("class=\"bar proxy\"").count(), 1);
        assert_eq!(page.matches("class=\"bar backend\"").count(), 2);
        assert!(page.contains("class=\"spread\""));
        assert!(page.contains("haproxy&gt;h2c &lt;&amp;&gt;"));
    }
}
