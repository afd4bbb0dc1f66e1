//! Chart and page primitives with no IO, shared by `compare` ([`cell_report`](crate::cell_report))
//! and `tune`: the page head, horizontal bar charts and latency percentile curves from the
//! HdrHistograms, as hand-written inline SVG. No scripts, no external resources.

use std::fmt::Write as _;

use crate::stats::Report;

/// One cell of the comparison: a scenario run through one path.
#[derive(Debug, Clone)]
pub struct Row {
    /// e.g. `hello`, `echo-1k`.
    pub scenario: String,
    /// e.g. `fastcgi`, `nginx>fastcgi`.
    pub path: String,
    /// The client's shape, e.g. `64x1` (connections x in flight per connection).
    pub shape: String,
    /// The run's report, or why it failed.
    pub result: Result<Report, String>,
}

/// The settings printed under the table and at the top of the page.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub title: String,
    /// Free text: pinning, duration, versions, command line.
    pub notes: Vec<String>,
}

/// Series colours, one per path (in order of first appearance).
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// The start of an HTML page: head, style, the title as `<h1>` and the notes as paragraphs.
/// Close it with `</body>\n</html>\n`.
pub fn page_head(meta: &Meta) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{}</title>\n\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto}}\
         pre{{background:#f6f6f6;padding:.5em;overflow-x:auto}}svg{{display:block;margin:.5em 0 1.5em}}\
         </style>\n</head>\n<body>\n<h1>{}</h1>\n",
        esc(&meta.title),
        esc(&meta.title)
    );
    for n in &meta.notes {
        let _ = writeln!(out, "<p>{}</p>", esc(n));
    }
    out
}

/// The distinct items, in order of first appearance.
pub fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for i in items {
        if !seen.contains(&i) {
            seen.push(i);
        }
    }
    seen
}

/// The colour of series `path` among `paths`.
pub fn colour(paths: &[&str], path: &str) -> &'static str {
    let i = paths.iter().position(|p| *p == path).unwrap_or(0);
    COLOURS[i % COLOURS.len()]
}

/// One bar of a [`bar_chart`].
#[derive(Debug, Clone)]
pub struct Bar {
    /// Shown left of the bar.
    pub label: String,
    /// The bar's length; `None`: no bar, `text` in red (a failed run).
    pub value: Option<f64>,
    /// Shown right of the bar.
    pub text: String,
    /// The `data-series` attribute.
    pub series: String,
    pub colour: &'static str,
}

/// A chart of horizontal bars scaled to the largest value, titled `title`, with the SVG class
/// `class` and the accessible label `aria`.
pub fn bar_chart(class: &str, title: &str, aria: &str, bars: &[Bar]) -> String {
    const LEFT: f64 = 150.0;
    const WIDTH: f64 = 560.0;
    const BAR: f64 = 22.0;
    let left = LEFT.max(7.0 * bars.iter().map(|b| b.label.len()).max().unwrap_or(0) as f64);
    let max = bars
        .iter()
        .filter_map(|b| b.value)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let height = 30.0 + BAR * bars.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"{}\" width=\"{}\" height=\"{height}\" \
         role=\"img\" aria-label=\"{}\">",
        esc(class),
        left + WIDTH + 90.0,
        esc(aria)
    );
    let _ = writeln!(
        out,
        "<text x=\"0\" y=\"14\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = 22.0 + BAR * i as f64;
        let _ = writeln!(
            out,
            "<text x=\"{:.0}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y + BAR * 0.65,
            esc(&b.label)
        );
        match b.value {
            Some(v) => {
                let w = WIDTH * v.max(0.0) / max;
                let _ = writeln!(
                    out,
                    "<rect class=\"bar\" data-series=\"{}\" x=\"{left}\" y=\"{:.1}\" width=\"{w:.1}\" \
                     height=\"{:.1}\" fill=\"{}\"/>",
                    esc(&b.series),
                    y + 2.0,
                    BAR - 4.0,
                    b.colour
                );
                let _ = writeln!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{}</text>",
                    left + w + 4.0,
                    y + BAR * 0.65,
                    esc(&b.text)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "<text x=\"{left}\" y=\"{:.1}\" font-size=\"12\" fill=\"#a00\">{}</text>",
                    y + BAR * 0.65,
                    esc(&b.text)
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Latency (log scale) against percentile (log scale of 1/(1-p), as HdrHistogram plots), one
/// polyline per row, coloured by its path's place in `paths`.
pub fn latency_svg(scenario: &str, rows: &[&Row], paths: &[&str]) -> String {
    const LEFT: f64 = 60.0;
    const TOP: f64 = 24.0;
    const W: f64 = 620.0;
    const H: f64 = 260.0;
    // x: log10(1 / (1 - p)), p in [0, 99.999]: 0..=5; the maximum is drawn at 5.25.
    let x_of = |pct: f64| {
        let v = if pct >= 100.0 {
            5.25
        } else {
            (1.0 / (1.0 - pct / 100.0)).log10().min(5.0)
        };
        LEFT + W * v / 5.25
    };
    let curves: Vec<(&Row, &Vec<[f64; 2]>)> = rows
        .iter()
        .filter_map(|r| match &r.result {
            Ok(rep) if !rep.latency_curve.is_empty() => Some((*r, &rep.latency_curve)),
            _ => None,
        })
        .collect();
    let (mut lo, mut hi) = (f64::MAX, 1.0f64);
    for (_, c) in &curves {
        for p in c.iter() {
            lo = lo.min(p[1].max(1.0));
            hi = hi.max(p[1]);
        }
    }
    if lo > hi {
        lo = 1.0;
    }
    let (lo_d, hi_d) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let y_of = |us: f64| TOP + H - H * (us.max(1.0).log10() - lo_d) / (hi_d - lo_d);
    let legend_h = 16.0 * curves.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"latency\" width=\"{}\" height=\"{}\" \
         role=\"img\" aria-label=\"latency percentiles, {}\">",
        LEFT + W + 190.0,
        (TOP + H + 40.0).max(TOP + legend_h + 10.0),
        esc(scenario)
    );
    let _ = writeln!(
        out,
        "<text x=\"0\" y=\"14\" font-size=\"13\" font-weight=\"bold\">latency by percentile ({})</text>",
        esc(scenario)
    );
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{W}\" height=\"{H}\" fill=\"none\" stroke=\"#999\"/>"
    );
    for d in (lo_d as i32)..=(hi_d as i32) {
        let y = y_of(10f64.powi(d));
        let label = match d {
            ..=2 => format!("{} us", 10u64.pow(d.max(0) as u32)),
            3..=5 => format!("{} ms", 10u64.pow(d as u32 - 3)),
            _ => format!("{} s", 10u64.pow(d as u32 - 6)),
        };
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{label}</text>",
            LEFT + W,
            LEFT - 4.0,
            y + 4.0
        );
    }
    for (pct, label) in [
        (0.0, "0"),
        (90.0, "90"),
        (99.0, "99"),
        (99.9, "99.9"),
        (99.99, "99.99"),
        (99.999, "99.999"),
        (100.0, "max"),
    ] {
        let x = x_of(pct);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{label}</text>",
            TOP + H,
            TOP + H + 14.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">percentile</text>",
        LEFT + W / 2.0,
        TOP + H + 30.0
    );
    for (i, (row, curve)) in curves.iter().enumerate() {
        let c = colour(paths, &row.path);
        let points: Vec<String> = curve
            .iter()
            .map(|p| format!("{:.1},{:.1}", x_of(p[0]), y_of(p[1])))
            .collect();
        let _ = writeln!(
            out,
            "<polyline class=\"curve\" data-series=\"{}\" fill=\"none\" stroke=\"{c}\" \
             stroke-width=\"2\" points=\"{}\"/>",
            esc(&row.path),
            points.join(" ")
        );
        let y = TOP + 16.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"12\" height=\"10\" fill=\"{c}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{}</text>",
            LEFT + W + 10.0,
            LEFT + W + 26.0,
            y + 9.0,
            esc(&row.path)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Escapes text for HTML and SVG (XML) content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::{RunInfo, ThreadStats};
    use std::time::Duration;

    pub(crate) fn report(base_us: u64, n: u64) -> Report {
        let mut s = ThreadStats::new();
        for i in 0..n {
            s.record_ok((base_us + i % 100) * 1000);
        }
        let info = RunInfo {
            protocol: "http1".into(),
            addr: "127.0.0.1:1".into(),
            path: "/hello".into(),
            conns: 64,
            depth: 1,
            threads: 1,
            keep_conn: true,
            rate: None,
        };
        Report::new(info, &s, Duration::from_secs(1), None)
    }

    fn rows() -> Vec<Row> {
        let mut rows = Vec::new();
        for s in ["hello", "echo-1k"] {
            for (i, p) in ["fastcgi", "h2c", "nginx>fastcgi"].iter().enumerate() {
                rows.push(Row {
                    scenario: s.into(),
                    path: (*p).into(),
                    shape: "64x1".into(),
                    result: Ok(report(100 * (i as u64 + 1), 1000 * (i as u64 + 1))),
                });
            }
        }
        rows.push(Row {
            scenario: "echo-1k".into(),
            path: "haproxy>h2c <&>".into(),
            shape: "64x1".into(),
            result: Err("did not start".into()),
        });
        rows
    }

    /// Checks that every element is closed in order (a small XML well-formedness check:
    /// enough for what this writer emits) and returns the element names in document order.
    pub(crate) fn elements(doc: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = doc;
        while let Some(at) = rest.find('<') {
            let end = rest[at..].find('>').expect("unclosed tag") + at;
            let tag = &rest[at + 1..end];
            rest = &rest[end + 1..];
            assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
            if tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
                continue;
            }
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{tag}>"
            );
            seen.push(name.clone());
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed elements: {stack:?}");
        seen
    }

    #[test]
    fn charts_are_well_formed_with_one_series_per_path() {
        let rows = rows();
        let refs: Vec<&Row> = rows.iter().filter(|r| r.scenario == "echo-1k").collect();
        let paths = unique(rows.iter().map(|r| r.path.as_str()));
        let page = latency_svg("echo-1k", &refs, &paths);
        let names = elements(&page);
        assert_eq!(names.iter().filter(|n| *n == "svg").count(), 1);
        // A curve per successful row.
        assert_eq!(page.matches("<polyline class=\"curve\"").count(), 3);
        for p in ["fastcgi", "h2c", "nginx&gt;fastcgi"] {
            let series = format!("data-series=\"{p}\"");
            assert_eq!(page.matches(&series).count(), 1, "{p}");
        }
        let bars: Vec<Bar> = refs
            .iter()
            .map(|r| Bar {
                label: r.path.clone(),
                value: r.result.as_ref().ok().map(|rep| rep.rps),
                text: "t".into(),
                series: r.path.clone(),
                colour: colour(&paths, &r.path),
            })
            .collect();
        let chart = bar_chart("throughput", "a < b", "aria", &bars);
        elements(&chart);
        assert_eq!(chart.matches("<rect class=\"bar\"").count(), 3);
        assert!(chart.contains("haproxy&gt;h2c &lt;&amp;&gt;"));
        // Curves rise left to right: latency grows with the percentile, y shrinks.
        let curve = page
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let pts: Vec<(f64, f64)> = curve
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(pts.len(), 22);
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 >= w[1].1));
    }
}
