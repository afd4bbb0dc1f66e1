//! Per-thread counters and latency histograms, merged into one [`Report`] printed as a table or
//! as one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::response::Failure;
use crate::sys::CpuTime;

/// Highest latency tracked: 100 s in nanoseconds (more is clamped). Latencies are kept in
/// nanoseconds to three significant digits, so that loopback latencies of 10-20 us are told
/// apart to a few nanoseconds rather than to a whole microsecond (6 % of 16 us).
const MAX_LATENCY_NS: u64 = 100_000_000_000;
/// Client CPU use above which the client, not the server, is what was measured.
pub const SATURATED_PCT: f64 = 90.0;

/// Failed requests by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorCounts {
    pub connect: u64,
    pub io: u64,
    pub protocol: u64,
    /// Answers with a status other than 200, all codes (`status_codes` splits them).
    pub status: u64,
    pub body: u64,
    /// Requests still unanswered at the end of the run, sent more than
    /// [`TIMEOUT_NS`](crate::engine::TIMEOUT_NS) before it.
    #[serde(default)]
    pub timeout: u64,
    /// `status` by code (0: a status that could not be read).
    #[serde(default)]
    pub status_codes: BTreeMap<u16, u64>,
}

impl ErrorCounts {
    pub fn count(&mut self, failure: Failure) {
        match failure {
            Failure::Connect => self.connect += 1,
            Failure::Io => self.io += 1,
            Failure::Protocol => self.protocol += 1,
            Failure::Status(code) => {
                self.status += 1;
                *self.status_codes.entry(code).or_default() += 1;
            }
            Failure::Body => self.body += 1,
            Failure::Timeout => self.timeout += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.connect + self.io + self.protocol + self.status + self.body + self.timeout
    }

    fn add(&mut self, other: &ErrorCounts) {
        self.connect += other.connect;
        self.io += other.io;
        self.protocol += other.protocol;
        self.status += other.status;
        self.body += other.body;
        self.timeout += other.timeout;
        for (code, n) in &other.status_codes {
            *self.status_codes.entry(*code).or_default() += n;
        }
    }
}

/// What one worker thread measured in the measured window.
#[derive(Debug, Clone)]
pub struct ThreadStats {
    /// Latency of successful requests, in nanoseconds.
    pub latency_ns: Histogram<u64>,
    pub errors: ErrorCounts,
    /// The thread's CPU time (user + system) during the window.
    pub cpu: Duration,
}

impl Default for ThreadStats {
    fn default() -> ThreadStats {
        ThreadStats::new()
    }
}

impl ThreadStats {
    pub fn new() -> ThreadStats {
        ThreadStats {
            latency_ns: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("valid histogram bounds"),
            errors: ErrorCounts::default(),
            cpu: Duration::ZERO,
        }
    }

    /// A successful request that took `latency_ns`.
    pub fn record_ok(&mut self, latency_ns: u64) {
        self.latency_ns
            .saturating_record(latency_ns.clamp(1, MAX_LATENCY_NS));
    }

    pub fn merge(&mut self, other: &ThreadStats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_ns.add(&other.latency_ns);
        self.errors.add(&other.errors);
        self.cpu += other.cpu;
    }
}

/// Everything a run reports. Field names are the JSON keys scripts rely on.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub protocol: String,
    pub addr: String,
    pub path: String,
    pub conns: usize,
    pub depth: usize,
    pub threads: usize,
    pub keep_conn: bool,
    /// Target rate of an open-loop run; `null` for closed loop.
    pub rate: Option<f64>,
    /// Length of the measured window (warmup excluded), seconds.
    pub window_s: f64,
    /// Successful requests completed in the window.
    pub requests: u64,
    /// Failed requests in the window, all kinds.
    pub errors: u64,
    pub errors_by_kind: ErrorCounts,
    /// Successful requests per second.
    pub rps: f64,
    pub mean_us: f64,
    /// The percentiles in whole microseconds (rounded down, at least 1 when anything
    /// succeeded); the `_ns` fields give them to three significant digits.
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    #[serde(default)]
    pub p50_ns: u64,
    #[serde(default)]
    pub p90_ns: u64,
    #[serde(default)]
    pub p99_ns: u64,
    #[serde(default)]
    pub p999_ns: u64,
    #[serde(default)]
    pub max_ns: u64,
    /// The client's CPU time in the window, all worker threads.
    pub client_cpu_s: f64,
    /// That time as a share of the client's threads (100 = every thread always busy).
    pub client_cpu_pct: f64,
    /// Client CPU microseconds per successful request.
    pub client_cpu_us_per_req: Option<f64>,
    pub client_saturated: bool,
    pub server_pid: Option<u32>,
    /// The server's CPU time in the window (user + system), all threads.
    pub server_cpu_s: Option<f64>,
    /// Server CPU microseconds per successful request.
    pub server_cpu_us_per_req: Option<f64>,
    /// The part of `server_cpu_s` spent in the kernel on the server's behalf (stime): system
    /// calls, the network stack, context switches.
    #[serde(default)]
    pub server_system_s: Option<f64>,
    /// Server system-time microseconds per successful request.
    #[serde(default)]
    pub server_system_us_per_req: Option<f64>,
    /// The latency distribution as `[percentile, us]` points (microseconds with their
    /// fraction) from the HdrHistogram: 0 (the minimum), then 1 - 10^(-k/4) for k = 1..=20
    /// (50, 68.4, 82.2, 90, ..., 99.999), then 100 (the maximum). Empty when nothing
    /// succeeded.
    pub latency_curve: Vec<[f64; 2]>,
    /// CPU time of the process trees named in [`Config::cpu_trees`](crate::run::Config), over
    /// the window.
    #[serde(default)]
    pub tree_cpu: Vec<TreeCpu>,
    /// How busy the CPUs named in [`Config::watch_cpus`](crate::run::Config) were over the
    /// window, all processes (ours and others').
    #[serde(default)]
    pub cpu_busy: Vec<CpuBusy>,
}

/// A CPU's busy time over the measured window as a percentage, all processes.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CpuBusy {
    pub cpu: usize,
    pub busy_pct: f64,
}

/// The CPU time a process tree (a root and its descendants) used over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TreeCpu {
    /// The root.
    pub pid: u32,
    /// The tree's processes at the window's end, root first.
    pub pids: Vec<u32>,
    /// User + system.
    pub cpu_s: f64,
    /// The system (kernel) part of `cpu_s`.
    #[serde(default)]
    pub system_s: f64,
}

/// The latency curve of a histogram (see [`Report::latency_curve`]).
fn latency_curve(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    let mut points = vec![[0.0, us(h.min())]];
    for k in 1..=20 {
        let q = 1.0 - 10f64.powf(-(k as f64) / 4.0);
        points.push([q * 100.0, us(h.value_at_quantile(q))]);
    }
    points.push([100.0, us(h.max())]);
    points
}

/// The run's settings that the report repeats.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub protocol: String,
    pub addr: String,
    pub path: String,
    pub conns: usize,
    pub depth: usize,
    pub threads: usize,
    pub keep_conn: bool,
    pub rate: Option<f64>,
}

impl Report {
    /// The report for merged `stats` over `window`, with the server's CPU time if measured.
    pub fn new(
        info: RunInfo,
        stats: &ThreadStats,
        window: Duration,
        server: Option<(u32, CpuTime)>,
    ) -> Report {
        let h = &stats.latency_ns;
        let secs = window.as_secs_f64().max(1e-9);
        let requests = h.len();
        let client_cpu_s = stats.cpu.as_secs_f64();
        let client_cpu_pct = 100.0 * client_cpu_s / (secs * info.threads.max(1) as f64);
        let server_cpu_s = server.map(|(_, cpu)| cpu.total().as_secs_f64());
        let server_system_s = server.map(|(_, cpu)| cpu.system.as_secs_f64());
        let per_request = |s: Option<f64>| {
            s.filter(|_| requests > 0)
                .map(|s| s * 1e6 / requests as f64)
        };
        let q = |q: f64| {
            if requests == 0 {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        let max_ns = if requests == 0 { 0 } else { h.max() };
        // Whole microseconds, as the `_us` fields have always been: at least 1 once anything
        // succeeded.
        let us = |ns: u64| if requests == 0 { 0 } else { (ns / 1000).max(1) };
        Report {
            protocol: info.protocol,
            addr: info.addr,
            path: info.path,
            conns: info.conns,
            depth: info.depth,
            threads: info.threads,
            keep_conn: info.keep_conn,
            rate: info.rate,
            window_s: secs,
            requests,
            errors: stats.errors.total(),
            errors_by_kind: stats.errors.clone(),
            rps: requests as f64 / secs,
            mean_us: if requests == 0 {
                0.0
            } else {
                h.mean() / 1000.0
            },
            p50_us: us(q(0.5)),
            p90_us: us(q(0.9)),
            p99_us: us(q(0.99)),
            p999_us: us(q(0.999)),
            max_us: us(max_ns),
            p50_ns: q(0.5),
            p90_ns: q(0.9),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns,
            client_cpu_s,
            client_cpu_pct,
            client_cpu_us_per_req: (requests > 0).then(|| client_cpu_s * 1e6 / requests as f64),
            client_saturated: client_cpu_pct > SATURATED_PCT,
            server_pid: server.map(|(pid, _)| pid),
            server_cpu_s,
            server_cpu_us_per_req: per_request(server_cpu_s),
            server_system_s,
            server_system_us_per_req: per_request(server_system_s),
            latency_curve: latency_curve(h),
            tree_cpu: Vec::new(),
            cpu_busy: Vec::new(),
        }
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// A plain-text table, with the saturation warning first when it applies.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(w) = self.saturation_warning() {
            let _ = writeln!(out, "{w}");
        }
        let mode = match self.rate {
            Some(r) => format!("open loop at {r:.0} req/s"),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(
            out,
            "{} {}{} | {} conns x depth {} | {} threads | keep-conn {} | {mode} | {:.1} s measured",
            self.protocol,
            self.addr,
            self.path,
            self.conns,
            self.depth,
            self.threads,
            self.keep_conn,
            self.window_s
        );
        let rows: [(&str, String); 12] = [
            ("rps", format!("{:.0}", self.rps)),
            ("p50", us(self.p50_ns)),
            ("p90", us(self.p90_ns)),
            ("p99", us(self.p99_ns)),
            ("p99.9", us(self.p999_ns)),
            ("max", us(self.max_ns)),
            ("mean", format!("{:.1} us", self.mean_us)),
            ("requests", self.requests.to_string()),
            ("errors", self.errors_text()),
            (
                "client cpu",
                format!(
                    "{:.2} s, {:.0}% of {} core(s), {} us/req",
                    self.client_cpu_s,
                    self.client_cpu_pct,
                    self.threads,
                    self.client_cpu_us_per_req
                        .map_or("-".to_owned(), |u| format!("{u:.2}"))
                ),
            ),
            (
                "server cpu",
                self.server_cpu_s
                    .map_or("not measured (--server-pid)".to_owned(), |s| {
                        format!("{s:.2} s")
                    }),
            ),
            ("server cpu/req", self.server_per_request_text()),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "  {name:<15} {value}");
        }
        out
    }

    /// `9.14 us (system 7.10 us)`, or `-` when not measured.
    fn server_per_request_text(&self) -> String {
        match (self.server_cpu_us_per_req, self.server_system_us_per_req) {
            (Some(all), Some(system)) => format!("{all:.2} us (system {system:.2} us)"),
            (Some(all), None) => format!("{all:.2} us"),
            _ => "-".to_owned(),
        }
    }

    fn errors_text(&self) -> String {
        let e = &self.errors_by_kind;
        format!(
            "{} (connect {}, io {}, protocol {}, status {}, body {}, timeout {})",
            self.errors, e.connect, e.io, e.protocol, e.status, e.body, e.timeout
        )
    }

    /// The warning line for a saturated client, if it was.
    pub fn saturation_warning(&self) -> Option<String> {
        self.client_saturated.then(|| {
            format!(
                "client saturated: its cores were {:.0}% busy — the numbers measure the client",
                self.client_cpu_pct
            )
        })
    }
}

/// Nanoseconds in microseconds, with a tenth below 1 ms (`16.4 us`, `2304 us`).
fn us(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.1} us", ns as f64 / 1000.0)
    } else {
        format!("{} us", ns / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            protocol: "fastcgi".into(),
            addr: "127.0.0.1:9000".into(),
            path: "/hello".into(),
            conns: 4,
            depth: 2,
            threads: 1,
            keep_conn: true,
            rate: None,
        }
    }

    #[test]
    fn json_has_the_keys_scripts_use() {
        let mut a = ThreadStats::new();
        let mut b = ThreadStats::new();
        for i in 1..=1000 {
            a.record_ok(i * 1000);
        }
        b.errors.count(Failure::Status(503));
        b.cpu = Duration::from_millis(950);
        a.merge(&b);
        let r = Report::new(
            info(),
            &a,
            Duration::from_secs(1),
            Some((
                42,
                CpuTime {
                    user: Duration::from_millis(3),
                    system: Duration::from_millis(7),
                },
            )),
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        for key in [
            "rps",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "p50_ns",
            "p99_ns",
            "max_ns",
            "requests",
            "errors",
            "client_cpu_pct",
            "conns",
            "depth",
            "protocol",
            "server_cpu_us_per_req",
            "server_system_us_per_req",
            "client_cpu_us_per_req",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["requests"], 1000);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["errors_by_kind"]["status"], 1);
        assert_eq!(v["errors_by_kind"]["status_codes"]["503"], 1);
        assert_eq!(v["protocol"], "fastcgi");
        let p50 = v["p50_us"].as_u64().unwrap();
        assert!((495..=505).contains(&p50), "{p50}");
        assert!((v["server_cpu_us_per_req"].as_f64().unwrap() - 10.0).abs() < 1e-6);
        assert!((v["server_system_us_per_req"].as_f64().unwrap() - 7.0).abs() < 1e-6);
        assert!(r.client_saturated);
        let text = r.to_text();
        assert!(text.starts_with("client saturated: its cores were 95% busy"));
        assert!(
            text.contains("server cpu/req  10.00 us (system 7.00 us)"),
            "{text}"
        );
        assert!(text.contains("rps"));
        let curve = &r.latency_curve;
        assert_eq!(curve.len(), 22);
        assert_eq!(curve[0], [0.0, 1.0]);
        assert!((curve[4][0] - 90.0).abs() < 1e-9);
        assert_eq!(curve[21][0], 100.0);
        assert!(
            curve
                .windows(2)
                .all(|w| w[0][0] < w[1][0] && w[0][1] <= w[1][1])
        );
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back.requests, 1000);
    }

    #[test]
    fn latencies_a_fraction_of_a_microsecond_apart_are_told_apart() {
        let mut s = ThreadStats::new();
        for _ in 0..980 {
            s.record_ok(16_200);
        }
        for _ in 0..20 {
            s.record_ok(17_600);
        }
        let r = Report::new(info(), &s, Duration::from_secs(1), None);
        // Three significant digits: within 16 ns of the recorded value at this magnitude.
        assert!((16_200..16_216).contains(&r.p50_ns), "{}", r.p50_ns);
        assert!((17_600..17_616).contains(&r.p99_ns), "{}", r.p99_ns);
        assert_eq!((r.p50_us, r.p99_us, r.max_us), (16, 17, 17));
        assert!((r.mean_us - 16.228).abs() < 0.02, "{}", r.mean_us);
        let text = r.to_text();
        assert!(text.contains("p50             16.2 us"), "{text}");
        assert!(text.contains("p99             17.6 us"), "{text}");
    }

    #[test]
    fn a_latency_under_a_microsecond_counts_as_one_in_the_whole_microsecond_fields() {
        let mut s = ThreadStats::new();
        s.record_ok(400);
        let r = Report::new(info(), &s, Duration::from_secs(1), None);
        assert_eq!((r.p50_us, r.max_us), (1, 1));
        assert!((400..401).contains(&r.p50_ns), "{}", r.p50_ns);
    }

    #[test]
    fn empty_run_reports_zeros() {
        let r = Report::new(info(), &ThreadStats::new(), Duration::from_secs(1), None);
        assert_eq!((r.requests, r.p99_us, r.max_us), (0, 0, 0));
        assert_eq!(r.server_cpu_us_per_req, None);
        assert!(!r.client_saturated);
    }
}
