//! The comparison's cells (a scenario through one path) with no IO: what each round measured,
//! and what the rounds come to: medians and spreads, CPU per request of the proxy, the backend
//! and the client and their sum, the error rate with its reason classes, saturation, and a
//! ranking that never ranks two cells whose spreads overlap.
//!
//! Guarantees: a cell whose error rate is over the threshold, or none of whose rounds ran, is
//! `failed` and never ranked; a summary is a pure function of the rounds and the settings, so
//! `diff` recomputes exactly what `compare` printed.

use serde::{Deserialize, Serialize};

use crate::stats::{Report, SATURATED_PCT};

/// Error rate (percent of answered and failed requests) above which a cell is failed, unless
/// `--max-error-pct` says otherwise.
pub const DEFAULT_MAX_ERROR_PCT: f64 = 0.1;

/// The `format` of a `results.json` written by this version.
pub const FORMAT: &str = "fcgi-loadtest compare 2";

/// Everything `compare` measured: `DIR/results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub format: String,
    pub title: String,
    /// Pinning, load mode, rounds, scenarios: printed under the table and atop the page.
    pub notes: Vec<String>,
    pub settings: Settings,
    pub cells: Vec<Cell>,
}

/// The settings of a comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub rounds: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub server_cpus: Vec<usize>,
    pub client_cpus: Vec<usize>,
    /// e.g. `closed loop`, `open loop at 50% of each cell's peak`.
    pub load: String,
    pub limits: Limits,
}

/// A `results.json` that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cell of the first `results.json` format (a list of these, one round each, no proxy CPU).
#[derive(Deserialize)]
struct OldRow {
    scenario: String,
    path: String,
    shape: String,
    report: Option<Report>,
    error: Option<String>,
}

impl Results {
    /// Parses a `results.json` of this format, or of the first one (one round per cell, the
    /// backend's CPU only); summaries missing from the file are computed.
    pub fn from_json(text: &str) -> Result<Results, FormatError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| FormatError(format!("not JSON: {e}")))?;
        let mut results = if value.is_array() {
            let rows: Vec<OldRow> = serde_json::from_value(value)
                .map_err(|e| FormatError(format!("not a compare results.json: {e}")))?;
            Results::from_old(rows)
        } else {
            serde_json::from_value::<Results>(value)
                .map_err(|e| FormatError(format!("not a compare results.json: {e}")))?
        };
        let limits = results.settings.limits;
        for c in &mut results.cells {
            if c.summary.is_none() {
                c.summarize(&limits);
            }
        }
        Ok(results)
    }

    fn from_old(rows: Vec<OldRow>) -> Results {
        let cells = rows
            .into_iter()
            .map(|r| Cell {
                proxy: r.path.split_once('>').map(|(p, _)| p.to_owned()),
                rate: r.report.as_ref().and_then(|rep| rep.rate),
                rounds: vec![Round {
                    backend_cpu_s: r.report.as_ref().and_then(|rep| rep.server_cpu_s),
                    backend_system_s: r.report.as_ref().and_then(|rep| rep.server_system_s),
                    proxy_cpu_s: None,
                    report: r.report,
                    error: r.error,
                }],
                scenario: r.scenario,
                path: r.path,
                shape: r.shape,
                summary: None,
            })
            .collect();
        Results {
            format: "fcgi-loadtest compare 1".into(),
            title: "fcgi-loadtest compare".into(),
            notes: vec![
                "first results.json format: one round, the proxy's CPU not measured".into(),
            ],
            settings: Settings {
                rounds: 1,
                duration_s: 0.0,
                warmup_s: 0.0,
                server_cpus: vec![0],
                client_cpus: vec![1],
                load: "closed loop".into(),
                limits: Limits {
                    max_error_pct: DEFAULT_MAX_ERROR_PCT,
                    server_cpus: 1,
                },
            },
            cells,
        }
    }
}

/// One round of one cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Round {
    /// The client's report (`None`: the run did not happen, see `error`).
    pub report: Option<Report>,
    pub error: Option<String>,
    /// The proxy's CPU seconds over the window (its master and workers); `None` on a direct
    /// path.
    pub proxy_cpu_s: Option<f64>,
    /// The backend's CPU seconds over the window (`fcgi-uring serve` and any children).
    pub backend_cpu_s: Option<f64>,
    /// The system (kernel) part of `backend_cpu_s`.
    #[serde(default)]
    pub backend_system_s: Option<f64>,
}

impl Round {
    /// A round that could not run.
    pub fn failed(error: impl Into<String>) -> Round {
        Round {
            report: None,
            error: Some(error.into()),
            proxy_cpu_s: None,
            backend_cpu_s: None,
            backend_system_s: None,
        }
    }
}

/// One cell: a scenario through one path, over every round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub scenario: String,
    pub path: String,
    /// connections x in flight per connection, e.g. `64x1`.
    pub shape: String,
    /// The proxy's name (`nginx`, `haproxy`), `None` when the client talks to the backend.
    pub proxy: Option<String>,
    /// Open loop: the rate asked for (requests/s); `None`: closed loop.
    pub rate: Option<f64>,
    pub rounds: Vec<Round>,
    /// What the rounds come to (recomputed by [`Cell::summarize`]).
    #[serde(default)]
    pub summary: Option<Summary>,
}

/// Settings a summary depends on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    /// Error rate in percent above which a cell is failed.
    pub max_error_pct: f64,
    /// CPUs the backend and the proxy share.
    pub server_cpus: usize,
}

/// The median of the rounds and their range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` when there are no values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// Whether the two ranges share a value: the difference is within the noise.
    pub fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// Half the range as a percentage of the median (0 with one round).
    pub fn spread_pct(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            50.0 * (self.max - self.min) / self.median.abs()
        }
    }
}

/// Why requests failed, in the classes the report names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// An answer with a status other than 200 from the backend (on a direct path: any; through
    /// a proxy: not 5xx).
    HttpStatus,
    /// A 5xx answer through a proxy: the proxy's own error, or the backend's passed on.
    Proxy5xx,
    /// 504 or 408, or no answer within 1 s.
    Timeout,
    /// The connection was refused, reset or closed with requests in flight.
    Reset,
    /// A malformed answer, or a body other than the expected one.
    BadAnswer,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::HttpStatus => "HTTP status",
            Reason::Proxy5xx => "proxy 5xx",
            Reason::Timeout => "timeout",
            Reason::Reset => "reset",
            Reason::BadAnswer => "bad answer",
        }
    }
}

/// Failed requests of one reason class, over all rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: Reason,
    pub count: u64,
    /// The status codes seen, e.g. `500 x 2437`.
    pub detail: String,
}

/// What saturated in a cell (median over the rounds of each side's CPU use).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Busy {
    /// Client CPU, percent of its threads' cores.
    pub client_pct: f64,
    /// Proxy CPU, percent of the server CPUs.
    pub proxy_pct: Option<f64>,
    /// Backend CPU, percent of the server CPUs.
    pub backend_pct: Option<f64>,
    /// How busy the server CPUs were, all processes (ours and others'), percent.
    #[serde(default)]
    pub server_cpus_pct: Option<f64>,
    /// How busy the client CPUs were, all processes, percent.
    #[serde(default)]
    pub client_cpus_pct: Option<f64>,
}

impl Busy {
    pub fn client_saturated(&self) -> bool {
        self.client_pct > SATURATED_PCT
    }

    /// Proxy and backend together keep the server CPUs (which they share) busy.
    pub fn server_saturated(&self) -> bool {
        self.proxy_pct.unwrap_or(0.0) + self.backend_pct.unwrap_or(0.0) > SATURATED_PCT
    }

    /// The server CPUs were over 90 % busy, but not with our processes alone.
    pub fn server_contended(&self) -> bool {
        !self.server_saturated() && self.server_cpus_pct.is_some_and(|p| p > SATURATED_PCT)
    }

    /// The client CPUs were over 90 % busy, but not with the client alone.
    pub fn client_contended(&self) -> bool {
        !self.client_saturated() && self.client_cpus_pct.is_some_and(|p| p > SATURATED_PCT)
    }

    /// Per side: `client-bound` / `server-bound` when our processes kept its CPUs over 90 %
    /// busy; else `client CPUs full (97% busy, 40% ours)` when they were over 90 % busy with
    /// other work too (other processes, interrupts); `neither side saturated` when neither.
    pub fn verdict(&self) -> String {
        let ours = self.proxy_pct.unwrap_or(0.0) + self.backend_pct.unwrap_or(0.0);
        let side = |name: &str, bound: bool, full: bool, all: Option<f64>, ours: f64| {
            if bound {
                Some(format!("{name}-bound"))
            } else {
                all.filter(|_| full)
                    .map(|all| format!("{name} CPUs full ({all:.0}% busy, {ours:.0}% ours)"))
            }
        };
        let parts: Vec<String> = [
            side(
                "client",
                self.client_saturated(),
                self.client_contended(),
                self.client_cpus_pct,
                self.client_pct,
            ),
            side(
                "server",
                self.server_saturated(),
                self.server_contended(),
                self.server_cpus_pct,
                ours,
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "neither side saturated".into()
        } else {
            parts.join("; ")
        }
    }
}

/// What a cell's rounds come to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Rounds that ran (a report) out of all rounds.
    pub rounds_ok: usize,
    pub rounds: usize,
    /// Successful requests per second.
    pub rps: Option<Spread>,
    pub p50_us: Option<Spread>,
    pub p99_us: Option<Spread>,
    pub p999_us: Option<Spread>,
    /// CPU microseconds per successful request.
    pub proxy_us: Option<Spread>,
    pub backend_us: Option<Spread>,
    /// The backend's system (kernel) CPU microseconds per successful request.
    #[serde(default)]
    pub backend_system_us: Option<Spread>,
    pub client_us: Option<Spread>,
    /// proxy + backend + client, summed per round.
    pub total_us: Option<Spread>,
    pub busy: Option<Busy>,
    /// Successful requests and failed requests over all rounds.
    pub requests: u64,
    pub errors: u64,
    /// errors / (requests + errors), percent.
    pub error_pct: f64,
    pub reasons: Vec<ReasonCount>,
    /// Why the cell counts as failed (error rate over the threshold, or no round ran).
    pub failed: Option<String>,
}

/// A named metric of a summary, for ranking and `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Successful requests per second: higher is better.
    Rps,
    /// Total CPU (proxy + backend + client) per request: lower is better.
    Cpu,
    /// 99th percentile latency: lower is better.
    P99,
}

impl Metric {
    pub fn of(self, s: &Summary) -> Option<Spread> {
        match self {
            Metric::Rps => s.rps,
            Metric::Cpu => s.total_us,
            Metric::P99 => s.p99_us,
        }
    }

    pub fn higher_is_better(self) -> bool {
        self == Metric::Rps
    }

    pub fn label(self) -> &'static str {
        match self {
            Metric::Rps => "requests/s",
            Metric::Cpu => "total CPU us/request",
            Metric::P99 => "p99 us",
        }
    }
}

impl Cell {
    /// Computes and stores the summary.
    pub fn summarize(&mut self, limits: &Limits) -> &Summary {
        let s = summarize(self, limits);
        self.summary.insert(s)
    }

    /// The summary (computed with `limits` if it was not stored).
    pub fn summary_or(&self, limits: &Limits) -> Summary {
        self.summary
            .clone()
            .unwrap_or_else(|| summarize(self, limits))
    }

    /// The round whose throughput is the median one (for the latency curve).
    pub fn median_round(&self) -> Option<&Report> {
        let mut reports: Vec<&Report> = self
            .rounds
            .iter()
            .filter_map(|r| r.report.as_ref())
            .collect();
        reports.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        reports.get(reports.len() / 2).copied()
    }
}

/// The mean busy share of the server CPUs (`server`), or of the client CPUs: `compare` watches
/// the `server_cpus` server CPUs first, then the client's.
fn mean_busy(rep: &Report, server_cpus: usize, server: bool) -> Option<f64> {
    let split = server_cpus.min(rep.cpu_busy.len());
    let (srv, cli) = rep.cpu_busy.split_at(split);
    let mine = if server { srv } else { cli };
    (!mine.is_empty()).then(|| mine.iter().map(|c| c.busy_pct).sum::<f64>() / mine.len() as f64)
}

fn per_req(cpu_s: Option<f64>, requests: u64) -> Option<f64> {
    cpu_s
        .filter(|_| requests > 0)
        .map(|s| s * 1e6 / requests as f64)
}

fn summarize(cell: &Cell, limits: &Limits) -> Summary {
    let ok: Vec<(&Round, &Report)> = cell
        .rounds
        .iter()
        .filter_map(|r| r.report.as_ref().map(|rep| (r, rep)))
        .collect();
    let col = |f: &dyn Fn(&Round, &Report) -> Option<f64>| {
        let v: Vec<f64> = ok.iter().filter_map(|(r, rep)| f(r, rep)).collect();
        Spread::of(&v)
    };
    let window_cpus =
        |rep: &Report| rep.window_s.max(1e-9) * limits.server_cpus.max(1) as f64 / 100.0;
    let requests: u64 = ok.iter().map(|(_, r)| r.requests).sum();
    let errors: u64 = ok.iter().map(|(_, r)| r.errors).sum();
    let error_pct = if requests + errors == 0 {
        0.0
    } else {
        100.0 * errors as f64 / (requests + errors) as f64
    };
    let proxied = cell.proxy.is_some();
    let reasons = reasons(&ok, proxied);
    let failed = if ok.is_empty() {
        Some(format!(
            "did not run: {}",
            cell.rounds
                .iter()
                .find_map(|r| r.error.clone())
                .unwrap_or_else(|| "no rounds".into())
        ))
    } else if requests == 0 || error_pct > limits.max_error_pct {
        let why: Vec<String> = reasons
            .iter()
            .map(|r| {
                if r.detail.is_empty() {
                    format!("{} {}", r.reason.label(), r.count)
                } else {
                    format!("{} {} ({})", r.reason.label(), r.count, r.detail)
                }
            })
            .collect();
        Some(format!(
            "{error_pct:.2}% errors: {}",
            if why.is_empty() {
                "no successful request".into()
            } else {
                why.join(", ")
            }
        ))
    } else {
        None
    };
    let total = col(&|r, rep| {
        let client = per_req(Some(rep.client_cpu_s), rep.requests)?;
        let backend = per_req(r.backend_cpu_s, rep.requests)?;
        // A proxied cell without the proxy's CPU (the first format) has no total.
        let proxy = if proxied {
            per_req(r.proxy_cpu_s, rep.requests)?
        } else {
            0.0
        };
        Some(client + backend + proxy)
    });
    let busy = (!ok.is_empty()).then(|| Busy {
        client_pct: col(&|_, rep| Some(rep.client_cpu_pct)).map_or(0.0, |s| s.median),
        proxy_pct: col(&|r, rep| {
            r.proxy_cpu_s
                .filter(|_| proxied)
                .map(|c| c / window_cpus(rep))
        })
        .map(|s| s.median),
        backend_pct: col(&|r, rep| r.backend_cpu_s.map(|c| c / window_cpus(rep))).map(|s| s.median),
        server_cpus_pct: col(&|_, rep| mean_busy(rep, limits.server_cpus, true)).map(|s| s.median),
        client_cpus_pct: col(&|_, rep| mean_busy(rep, limits.server_cpus, false)).map(|s| s.median),
    });
    Summary {
        rounds_ok: ok.len(),
        rounds: cell.rounds.len(),
        rps: col(&|_, rep| Some(rep.rps)),
        p50_us: col(&|_, rep| (rep.requests > 0).then_some(rep.p50_us as f64)),
        p99_us: col(&|_, rep| (rep.requests > 0).then_some(rep.p99_us as f64)),
        p999_us: col(&|_, rep| (rep.requests > 0).then_some(rep.p999_us as f64)),
        proxy_us: col(&|r, rep| per_req(r.proxy_cpu_s.filter(|_| proxied), rep.requests)),
        backend_us: col(&|r, rep| per_req(r.backend_cpu_s, rep.requests)),
        backend_system_us: col(&|r, rep| per_req(r.backend_system_s, rep.requests)),
        client_us: col(&|_, rep| per_req(Some(rep.client_cpu_s), rep.requests)),
        total_us: total,
        busy,
        requests,
        errors,
        error_pct,
        reasons,
        failed,
    }
}

/// The failed requests of all rounds by reason class.
fn reasons(ok: &[(&Round, &Report)], proxied: bool) -> Vec<ReasonCount> {
    use std::collections::BTreeMap;
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    let (mut reset, mut bad, mut timeout) = (0, 0, 0);
    for (_, rep) in ok {
        let e = &rep.errors_by_kind;
        reset += e.connect + e.io;
        bad += e.protocol + e.body;
        timeout += e.timeout;
        for (code, n) in &e.status_codes {
            *codes.entry(*code).or_default() += n;
        }
        // Reports written before status codes were counted: the codes are unknown.
        let counted: u64 = e.status_codes.values().sum();
        if e.status > counted {
            *codes.entry(0).or_default() += e.status - counted;
        }
    }
    let class = |code: u16| match code {
        408 | 504 => Reason::Timeout,
        500..=599 if proxied => Reason::Proxy5xx,
        _ => Reason::HttpStatus,
    };
    let mut out: Vec<ReasonCount> = Vec::new();
    for reason in [
        Reason::HttpStatus,
        Reason::Proxy5xx,
        Reason::Timeout,
        Reason::Reset,
        Reason::BadAnswer,
    ] {
        let mine: Vec<(u16, u64)> = codes
            .iter()
            .filter(|(c, _)| class(**c) == reason)
            .map(|(c, n)| (*c, *n))
            .collect();
        let extra = match reason {
            Reason::Timeout => timeout,
            Reason::Reset => reset,
            Reason::BadAnswer => bad,
            _ => 0,
        };
        let count = extra + mine.iter().map(|(_, n)| n).sum::<u64>();
        if count == 0 {
            continue;
        }
        let mut detail: Vec<String> = mine
            .iter()
            .map(|(c, n)| match c {
                0 => format!("status ? x {n}"),
                c => format!("{c} x {n}"),
            })
            .collect();
        if reason == Reason::Timeout && timeout > 0 {
            detail.push(format!("unanswered x {timeout}"));
        }
        out.push(ReasonCount {
            reason,
            count,
            detail: detail.join(", "),
        });
    }
    out
}

/// Ranks of cells on `metric` (1 = best); `None` for a failed cell or one without the metric.
/// A cell is behind another only when their spreads do not overlap; cells that overlap share
/// a rank (a tie within noise), and `ties[i]` lists the indices cell `i` ties with.
pub struct Ranking {
    pub rank: Vec<Option<usize>>,
    pub ties: Vec<Vec<usize>>,
}

pub fn rank(summaries: &[&Summary], metric: Metric) -> Ranking {
    let values: Vec<Option<Spread>> = summaries
        .iter()
        .map(|s| {
            if s.failed.is_some() {
                None
            } else {
                metric.of(s)
            }
        })
        .collect();
    let better = |a: &Spread, b: &Spread| {
        !a.overlaps(b)
            && if metric.higher_is_better() {
                a.median > b.median
            } else {
                a.median < b.median
            }
    };
    let mut rank = Vec::new();
    let mut ties = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let Some(v) = v else {
            rank.push(None);
            ties.push(Vec::new());
            continue;
        };
        let ahead = values.iter().flatten().filter(|o| better(o, v)).count();
        rank.push(Some(ahead + 1));
        ties.push(
            values
                .iter()
                .enumerate()
                .filter(|(j, o)| *j != i && o.is_some_and(|o| o.overlaps(v)))
                .map(|(j, _)| j)
                .collect(),
        );
    }
    Ranking { rank, ties }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::Failure;
    use crate::stats::{RunInfo, ThreadStats};
    use std::time::Duration;

    fn report(ok: u64, fails: &[Failure], client_cpu_ms: u64) -> Report {
        let mut s = ThreadStats::new();
        for _ in 0..ok {
            s.record_ok(100_000);
        }
        for f in fails {
            s.errors.count(*f);
        }
        s.cpu = Duration::from_millis(client_cpu_ms);
        let info = RunInfo {
            protocol: "http1".into(),
            addr: "a".into(),
            path: "/".into(),
            conns: 1,
            depth: 1,
            threads: 1,
            keep_conn: true,
            rate: None,
        };
        Report::new(info, &s, Duration::from_secs(1), None)
    }

    fn cell(proxy: bool, rounds: Vec<Round>) -> Cell {
        Cell {
            scenario: "hello".into(),
            path: if proxy { "nginx>fastcgi" } else { "fastcgi" }.into(),
            shape: "1x1".into(),
            proxy: proxy.then(|| "nginx".into()),
            rate: None,
            rounds,
            summary: None,
        }
    }

    const LIMITS: Limits = Limits {
        max_error_pct: DEFAULT_MAX_ERROR_PCT,
        server_cpus: 1,
    };

    #[test]
    fn results_of_both_formats_read_back() {
        let mut c = cell(
            true,
            vec![Round {
                report: Some(report(1000, &[], 10)),
                error: None,
                proxy_cpu_s: Some(0.01),
                backend_cpu_s: Some(0.02),
                backend_system_s: Some(0.015),
            }],
        );
        c.summarize(&LIMITS);
        let results = Results {
            format: FORMAT.into(),
            title: "t".into(),
            notes: vec![],
            settings: Settings {
                rounds: 1,
                duration_s: 1.0,
                warmup_s: 0.0,
                server_cpus: vec![0],
                client_cpus: vec![1],
                load: "closed loop".into(),
                limits: LIMITS,
            },
            cells: vec![c],
        };
        let back = Results::from_json(&serde_json::to_string(&results).unwrap()).unwrap();
        assert_eq!(back.cells[0].summary, results.cells[0].summary);
        assert_eq!(
            back.cells[0]
                .summary
                .as_ref()
                .unwrap()
                .total_us
                .unwrap()
                .median,
            40.0
        );
        // The first format: a list of rows, the backend's CPU in the report, no proxy CPU.
        let mut rep = report(1000, &[], 10);
        rep.server_cpu_s = Some(0.02);
        let old = serde_json::json!([
            {"scenario": "hello", "path": "fastcgi", "shape": "16x4", "report": rep, "error": null},
            {"scenario": "hello", "path": "nginx>fastcgi", "shape": "64x1", "report": rep, "error": null},
            {"scenario": "hello", "path": "h2c", "shape": "-", "report": null, "error": "refused"},
        ]);
        let back = Results::from_json(&old.to_string()).unwrap();
        let sum = |i: usize| back.cells[i].summary.clone().unwrap();
        assert_eq!(sum(0).total_us.unwrap().median, 30.0);
        assert_eq!(back.cells[1].proxy.as_deref(), Some("nginx"));
        assert_eq!(sum(1).total_us, None);
        assert_eq!(sum(2).failed.as_deref(), Some("did not run: refused"));
        assert!(Results::from_json("{}").is_err());
        assert!(Results::from_json("nope").is_err());
    }

    #[test]
    fn spreads() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[1.0, 3.0]).unwrap().median, 2.0);
        assert!(Spread::of(&[]).is_none());
        assert!(s.overlaps(&Spread::of(&[3.0, 4.0]).unwrap()));
        assert!(!s.overlaps(&Spread::of(&[3.5, 4.0]).unwrap()));
    }

    #[test]
    fn cpu_per_request_adds_up_and_saturation_is_named() {
        // 1000 requests in 1 s; client 20 ms, proxy 950 ms... of one server CPU.
        let round = |p: f64, b: f64| Round {
            report: Some(report(1000, &[], 20)),
            error: None,
            proxy_cpu_s: Some(p),
            backend_cpu_s: Some(b),
            backend_system_s: Some(b / 3.0),
        };
        let mut c = cell(
            true,
            vec![round(0.5, 0.45), round(0.6, 0.45), round(0.4, 0.3)],
        );
        let s = c.summarize(&LIMITS).clone();
        assert_eq!(s.proxy_us.unwrap().median, 500.0);
        assert_eq!(s.backend_us.unwrap().median, 450.0);
        assert_eq!(s.backend_system_us.unwrap().median, 150.0);
        assert_eq!(s.client_us.unwrap().median, 20.0);
        // Summed per round: 970, 1070, 720.
        assert_eq!(
            s.total_us.unwrap(),
            Spread {
                median: 970.0,
                min: 720.0,
                max: 1070.0
            }
        );
        let busy = s.busy.unwrap();
        assert_eq!(busy.verdict(), "server-bound");
        let contended = Busy {
            client_pct: 20.0,
            proxy_pct: Some(10.0),
            backend_pct: Some(5.0),
            server_cpus_pct: Some(98.0),
            client_cpus_pct: Some(30.0),
        };
        assert_eq!(contended.verdict(), "server CPUs full (98% busy, 15% ours)");
        let both = Busy {
            client_pct: 95.0,
            ..contended
        };
        assert_eq!(
            both.verdict(),
            "client-bound; server CPUs full (98% busy, 15% ours)"
        );
        assert!(!busy.client_saturated());
        assert!(s.failed.is_none());
    }

    #[test]
    fn failures_over_the_threshold_fail_the_cell_with_their_classes() {
        let fails = [
            Failure::Status(500),
            Failure::Status(500),
            Failure::Status(404),
            Failure::Status(504),
            Failure::Io,
            Failure::Timeout,
        ];
        let r = Round {
            report: Some(report(994, &fails, 1)),
            error: None,
            proxy_cpu_s: Some(0.1),
            backend_cpu_s: Some(0.1),
            backend_system_s: None,
        };
        let s = cell(true, vec![r.clone()]).summarize(&LIMITS).clone();
        let why = s.failed.unwrap();
        assert!(why.starts_with("0.60% errors"), "{why}");
        assert!(why.contains("proxy 5xx 2 (500 x 2)"), "{why}");
        assert!(why.contains("HTTP status 1 (404 x 1)"), "{why}");
        assert!(why.contains("timeout 2 (504 x 1, unanswered x 1)"), "{why}");
        assert!(why.contains("reset 1"), "{why}");
        // Direct, a 500 is the backend's HTTP status.
        let s = cell(false, vec![r]).summarize(&LIMITS).clone();
        assert!(
            s.failed
                .unwrap()
                .contains("HTTP status 3 (404 x 1, 500 x 2)")
        );
        // Under the threshold: not failed, the errors still counted.
        let few = Round {
            report: Some(report(10_000, &[Failure::Status(500)], 1)),
            ..Round::failed("")
        };
        let s = cell(false, vec![few]).summarize(&LIMITS).clone();
        assert_eq!((s.failed, s.errors), (None, 1));
        let s = cell(false, vec![Round::failed("refused")])
            .summarize(&LIMITS)
            .clone();
        assert_eq!(s.failed.as_deref(), Some("did not run: refused"));
    }

    #[test]
    fn overlapping_spreads_tie_and_failed_cells_are_not_ranked() {
        let sum = |rps: &[f64], failed: bool| Summary {
            rounds_ok: rps.len(),
            rounds: rps.len(),
            rps: Spread::of(rps),
            p50_us: None,
            p99_us: None,
            p999_us: None,
            proxy_us: None,
            backend_us: None,
            backend_system_us: None,
            client_us: None,
            total_us: None,
            busy: None,
            requests: 1,
            errors: 0,
            error_pct: 0.0,
            reasons: vec![],
            failed: failed.then(|| "x".into()),
        };
        let a = sum(&[100.0, 110.0, 120.0], false);
        let b = sum(&[115.0, 125.0, 130.0], false);
        let c = sum(&[200.0, 210.0, 205.0], false);
        let d = sum(&[999.0], true);
        let r = rank(&[&a, &b, &c, &d], Metric::Rps);
        assert_eq!(r.rank, vec![Some(2), Some(2), Some(1), None]);
        assert_eq!(r.ties[0], vec![1]);
        assert_eq!(r.ties[1], vec![0]);
        assert!(r.ties[2].is_empty());
    }
}
