//! `/metrics`: the server's metrics in the Prometheus text format (0.0.4) or in OpenMetrics
//! 1.0 (when the scraper's `Accept` asks for `application/openmetrics-text`).
//!
//! Guarantees: every family is declared once with `# HELP` and `# TYPE`, then its samples;
//! counters end in `_total`, durations are in seconds (`_seconds`), sizes in bytes
//! (`_bytes`); an OpenMetrics page ends with `# EOF`. Each family exists twice: in total
//! (`fcgi_uring_*`, summed over the workers) and per worker (`fcgi_uring_worker_*` with a
//! `worker` label), so that summing the per-worker series gives the total and no query counts
//! a request twice. Values come from one snapshot per worker taken at the start of the scrape.

use super::process::Process;
use crate::stats::metrics::{
    BUCKETS, CloseReason, EndStatus, HistogramSnapshot, MetricsSnapshot, RoleLabel, StatusClass,
};
use crate::stats::{Counter, Stats};
use crate::uring::RingStats;
use std::fmt::{Display, Write};

/// The exposition format of a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `Accept` names it, else the Prometheus text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// One worker's values at the time of the scrape.
#[derive(Debug, Clone, Default)]
pub struct WorkerScrape {
    pub stats: Stats,
    pub metrics: MetricsSnapshot,
    pub ring: RingStats,
}

/// Everything one scrape exports.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub workers: Vec<WorkerScrape>,
    pub ready: bool,
    pub io_backend: &'static str,
    /// Access-log lines the writer failed to write (none: no access log).
    pub access_log_lost_lines: Option<u64>,
    pub process: Process,
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

struct Writer {
    out: String,
    format: Format,
}

impl Writer {
    fn header(&mut self, name: &str, kind: Kind, help: &str) {
        // The text format names a counter's family with its `_total`; OpenMetrics without.
        let suffix = match (kind, self.format) {
            (Kind::Counter, Format::Prometheus) => "_total",
            _ => "",
        };
        let _ = writeln!(self.out, "# HELP {name}{suffix} {help}");
        let _ = writeln!(self.out, "# TYPE {name}{suffix} {}", kind.as_str());
    }

    fn sample(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Values of one family for one worker: `(label value, value)` pairs (label value ignored for
/// a family without a label).
type Values = Vec<(&'static str, u64)>;

/// Writes a family in total and per worker.
fn family(
    w: &mut Writer,
    s: &Scrape,
    kind: Kind,
    name: &str,
    label: Option<&str>,
    help: &str,
    get: impl Fn(&WorkerScrape) -> Values,
) {
    let suffix = match kind {
        Kind::Counter => "_total",
        _ => "",
    };
    let per_worker: Vec<Values> = s.workers.iter().map(&get).collect();
    let mut total: Values = get(&WorkerScrape::default());
    for values in &per_worker {
        for (t, (_, v)) in total.iter_mut().zip(values) {
            t.1 += v;
        }
    }
    let full = format!("fcgi_uring_{name}");
    w.header(&full, kind, help);
    for (l, v) in &total {
        let labels: Vec<(&str, &str)> = label.map(|k| (k, *l)).into_iter().collect();
        w.sample(&full, suffix, &labels, v);
    }
    let full = format!("fcgi_uring_worker_{name}");
    w.header(&full, kind, &format!("{help} Per worker."));
    for (i, values) in per_worker.iter().enumerate() {
        let worker = i.to_string();
        for (l, v) in values {
            let mut labels = vec![("worker", worker.as_str())];
            labels.extend(label.map(|k| (k, *l)));
            w.sample(&full, suffix, &labels, v);
        }
    }
}

fn histogram_samples(w: &mut Writer, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
    let mut cumulative = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        let le = BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        let mut l = labels.to_vec();
        l.push(("le", le.as_str()));
        w.sample(name, "_bucket", &l, cumulative);
    }
    w.sample(name, "_sum", labels, h.sum_nanos as f64 / 1e9);
    w.sample(name, "_count", labels, cumulative);
}

fn histogram(
    w: &mut Writer,
    s: &Scrape,
    name: &str,
    help: &str,
    get: impl Fn(&MetricsSnapshot) -> &HistogramSnapshot,
) {
    let mut total = HistogramSnapshot::default();
    for ws in &s.workers {
        total.add(get(&ws.metrics));
    }
    let full = format!("fcgi_uring_{name}");
    w.header(&full, Kind::Histogram, help);
    histogram_samples(w, &full, &[], &total);
    let full = format!("fcgi_uring_worker_{name}");
    w.header(&full, Kind::Histogram, &format!("{help} Per worker."));
    for (i, ws) in s.workers.iter().enumerate() {
        let worker = i.to_string();
        histogram_samples(w, &full, &[("worker", &worker)], get(&ws.metrics));
    }
}

/// A family of event counters: name, label, help, each counter with its label value.
type EventFamily = (
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static [(Counter, &'static str)],
);

/// Families of the event counters of [`Counter`]: name, label, help, and each counter with its
/// label value. [`Counter::Requests`] and [`Counter::UnknownRole`] are exported as
/// `requests_total{role}` and `end_requests_total{protocol_status}` instead.
const EVENT_FAMILIES: &[EventFamily] = &[
    (
        "connections_accepted",
        None,
        "Connections accepted.",
        &[(Counter::Accepted, "")],
    ),
    (
        "accept_failures",
        None,
        "Failed accepts (EMFILE, ENFILE, ENOMEM...): accepting paused for server.accept_retry.",
        &[(Counter::AcceptFailed, "")],
    ),
    (
        "peers_refused",
        None,
        "Connections closed at accept because the peer is not in server.allowed_peers (or FCGI_WEB_SERVER_ADDRS).",
        &[(Counter::PeerRefused, "")],
    ),
    (
        "limit_hits",
        Some("limit"),
        "Limits hit: connections refused (max_conns_per_worker), requests answered OVERLOADED (max_requests_per_worker, max_requests_per_conn, params), reading paused on a full output queue (max_output_buffer).",
        &[
            (Counter::ConnsRefused, "max_conns_per_worker"),
            (Counter::WorkerOverloaded, "max_requests_per_worker"),
            (Counter::ConnOverloaded, "max_requests_per_conn"),
            (Counter::ParamsLimit, "params"),
            (Counter::OutputFull, "max_output_buffer"),
        ],
    ),
    (
        "timeouts",
        Some("timeout"),
        "Deadlines passed (see timeouts.* settings).",
        &[
            (Counter::IdleTimeout, "idle"),
            (Counter::ParamsTimeout, "params"),
            (Counter::BodyTimeout, "body"),
            (Counter::HandlerTimeout, "handler"),
            (Counter::WriteTimeout, "write"),
            (Counter::LingerTimeout, "linger"),
        ],
    ),
    (
        "protocol_errors",
        None,
        "Connections closed for breaking the FastCGI protocol.",
        &[(Counter::ProtocolError, "")],
    ),
    (
        "bad_requests",
        None,
        "Requests whose params do not form an HTTP request (answered 400).",
        &[(Counter::BadRequest, "")],
    ),
    (
        "handler_failures",
        None,
        "Handlers that returned an error or panicked.",
        &[(Counter::HandlerFailed, "")],
    ),
    (
        "aborted_requests",
        None,
        "Requests the peer cancelled with ABORT_REQUEST.",
        &[(Counter::Aborted, "")],
    ),
    (
        "shutdown_abandoned_requests",
        None,
        "Requests still running when a stop's server.shutdown_timeout ran out, dropped unanswered.",
        &[(Counter::ShutdownAbandoned, "")],
    ),
    (
        "access_log_dropped_lines",
        None,
        "Access-log lines dropped because the log writer fell behind.",
        &[(Counter::AccessLogDropped, "")],
    ),
    (
        "ping_requests",
        None,
        "Requests for ping.path, answered without calling the application.",
        &[(Counter::Pings, "")],
    ),
    (
        "idle_waits",
        Some("ended"),
        "Waits of an idle worker for IO in its backend (io_uring_enter or epoll_wait, ring.idle_wait_us), by how they ended: woken by IO, or expired (the worker then slept in tokio's reactor).",
        &[
            (Counter::IdleWaitWoken, "woken"),
            (Counter::IdleWaitExpired, "expired"),
        ],
    ),
    (
        "shared_request_bodies",
        None,
        "Request bodies of 16 KiB or more that one receive brought whole, handed to their handler as a slice of its buffer rather than copied.",
        &[(Counter::SharedBodies, "")],
    ),
    (
        "wake_yields",
        Some("outcome"),
        "Yields of the CPU right after a wake (ring.yield_after_wake), by outcome: paid (the turn after it found more requests), free (nothing came, and the yield returned at once), costly (nothing came and another task held the CPU: the yields pause).",
        &[
            (Counter::WakeYieldPaid, "paid"),
            (Counter::WakeYieldFree, "free"),
            (Counter::WakeYieldCostly, "costly"),
        ],
    ),
];

/// Ring counters: name, help, value.
type RingField = (&'static str, &'static str, fn(&RingStats) -> u64);

const RING_FIELDS: &[RingField] = &[
    (
        "ring_recv_completions",
        "Receive completions that carried data.",
        |r| r.recv_completions,
    ),
    (
        "ring_recv_buffers",
        "Provided buffers consumed by receives.",
        |r| r.recv_buffers,
    ),
    (
        "ring_multi_buffer_recvs",
        "Receive completions that consumed more than one buffer (bundles).",
        |r| r.multi_buffer_recvs,
    ),
    (
        "ring_recv_buffers_returned",
        "Provided buffers given back to the ring.",
        |r| r.recv_buffers_returned,
    ),
    (
        "ring_recv_pool_dry",
        "Receives that found no provided buffer (re-armed; each widens the published window up to its bound).",
        |r| r.recv_pool_dry,
    ),
    (
        "ring_fixed_sends",
        "Sends from a registered buffer, resends included.",
        |r| r.fixed_sends,
    ),
    (
        "ring_fixed_short_sends",
        "Registered-buffer sends that sent less than asked.",
        |r| r.fixed_short_sends,
    ),
    (
        "ring_sqpoll_wakeups",
        "Submits that had to wake a sleeping SQPOLL thread.",
        |r| r.sqpoll_wakeups,
    ),
    (
        "ring_idle_spin_hits",
        "Idle spins that found work before the worker slept.",
        |r| r.idle_spin_hits,
    ),
    (
        "ring_direct_sends",
        "Answers the worker sent itself with send(2), whole (ring.direct_send).",
        |r| r.direct_sends,
    ),
    (
        "ring_direct_sends_handed_over",
        "Direct sends the socket did not take whole: the rest went through the ring.",
        |r| r.direct_sends_handed_over,
    ),
    (
        "ring_direct_recvs",
        "Receives the worker made itself with recv(2) that returned bytes (ring.direct_recv).",
        |r| r.direct_recvs,
    ),
    (
        "ring_direct_recv_switches",
        "Connections switched to direct receives (an upload-sized ring receive, or one that found the receive buffer pool empty).",
        |r| r.direct_recv_switches,
    ),
    (
        "ring_direct_recv_returns",
        "Connections switched back to provided buffers (a run of small receives).",
        |r| r.direct_recv_returns,
    ),
];

/// The page for `s` in `format`.
pub fn render(s: &Scrape, format: Format) -> String {
    let mut w = Writer {
        out: String::with_capacity(16 * 1024),
        format,
    };
    server_families(&mut w, s);
    request_families(&mut w, s);
    for (name, label, help, counters) in EVENT_FAMILIES {
        family(&mut w, s, Kind::Counter, name, *label, help, |ws| {
            counters
                .iter()
                .map(|(c, l)| (*l, ws.stats.get(*c)))
                .collect()
        });
    }
    for (name, help, get) in RING_FIELDS {
        family(&mut w, s, Kind::Counter, name, None, help, |ws| {
            vec![("", get(&ws.ring))]
        });
    }
    process_families(&mut w, &s.process);
    if format == Format::OpenMetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

fn server_families(w: &mut Writer, s: &Scrape) {
    w.header(
        "fcgi_uring_ready",
        Kind::Gauge,
        "1 when the server takes traffic, 0 while starting or draining.",
    );
    w.sample("fcgi_uring_ready", "", &[], u8::from(s.ready));
    w.header("fcgi_uring_workers", Kind::Gauge, "Worker threads.");
    w.sample("fcgi_uring_workers", "", &[], s.workers.len());
    w.header(
        "fcgi_uring_io_backend",
        Kind::Gauge,
        "The IO backend in use (label io_backend), always 1.",
    );
    w.sample(
        "fcgi_uring_io_backend",
        "",
        &[("io_backend", s.io_backend)],
        1,
    );
    if let Some(lost) = s.access_log_lost_lines {
        w.header(
            "fcgi_uring_access_log_lost_lines",
            Kind::Counter,
            "Access-log lines lost because writing them failed (a full disk, a closed pipe).",
        );
        w.sample("fcgi_uring_access_log_lost_lines", "_total", &[], lost);
    }
}

fn request_families(w: &mut Writer, s: &Scrape) {
    family(
        w,
        s,
        Kind::Counter,
        "requests",
        Some("role"),
        "Requests dispatched, by FastCGI role.",
        |ws| {
            RoleLabel::ALL
                .iter()
                .map(|r| (r.label(), ws.metrics.requests(*r)))
                .collect()
        },
    );
    family(
        w,
        s,
        Kind::Counter,
        "responses",
        Some("code_class"),
        "Responses started, by class of HTTP status.",
        |ws| {
            StatusClass::ALL
                .iter()
                .map(|c| (c.label(), ws.metrics.responses(*c)))
                .collect()
        },
    );
    family(
        w,
        s,
        Kind::Counter,
        "end_requests",
        Some("protocol_status"),
        "END_REQUEST records sent, by protocol status.",
        |ws| {
            EndStatus::ALL
                .iter()
                .map(|e| (e.label(), ws.metrics.end_requests(*e)))
                .collect()
        },
    );
    family(
        w,
        s,
        Kind::Gauge,
        "requests_in_flight",
        None,
        "Requests dispatched and not yet ended.",
        |ws| vec![("", ws.metrics.in_flight)],
    );
    family(
        w,
        s,
        Kind::Gauge,
        "connections_open",
        None,
        "FastCGI connections open.",
        |ws| vec![("", ws.metrics.conns_open)],
    );
    family(
        w,
        s,
        Kind::Counter,
        "connections_closed",
        Some("reason"),
        "FastCGI connections closed, by reason.",
        |ws| {
            CloseReason::ALL
                .iter()
                .map(|c| (c.label(), ws.metrics.closed(*c)))
                .collect()
        },
    );
    family(
        w,
        s,
        Kind::Counter,
        "received_bytes",
        None,
        "Bytes received on FastCGI connections.",
        |ws| vec![("", ws.metrics.bytes_in)],
    );
    family(
        w,
        s,
        Kind::Counter,
        "sent_bytes",
        None,
        "Bytes handed to the kernel on FastCGI connections.",
        |ws| vec![("", ws.metrics.bytes_out)],
    );
    histogram(
        w,
        s,
        "response_duration_seconds",
        "Time from the worker turn that read the end of a request's params to its END_REQUEST queued for the kernel (responses only).",
        |m| &m.response,
    );
    histogram(
        w,
        s,
        "handler_duration_seconds",
        "Time from the handler's dispatch (building the request included) to the end of its response.",
        |m| &m.handler,
    );
}

fn process_families(w: &mut Writer, p: &Process) {
    let gauges: [(&str, &str, Option<f64>); 6] = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes.map(|v| v as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_bytes.map(|v| v as f64),
        ),
        (
            "process_open_fds",
            "Open file descriptors.",
            p.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "Maximum open file descriptors (RLIMIT_NOFILE).",
            p.max_fds.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
            p.start_time_seconds,
        ),
        (
            "process_threads",
            "Threads of the process.",
            p.threads.map(|v| v as f64),
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            w.header(name, Kind::Gauge, help);
            w.sample(name, "", &[], v);
        }
    }
    if let Some(cpu) = p.cpu_seconds {
        w.header(
            "process_cpu_seconds",
            Kind::Counter,
            "User and system CPU time spent in seconds.",
        );
        w.sample("process_cpu_seconds", "_total", &[], cpu);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_counter_is_exported_once_except_those_with_labelled_families() {
        for c in Counter::ALL {
            let n = EVENT_FAMILIES
                .iter()
                .flat_map(|(_, _, _, cs)| cs.iter())
                .filter(|(x, _)| *x == c)
                .count();
            let elsewhere = matches!(c, Counter::Requests | Counter::UnknownRole);
            assert_eq!(n, usize::from(!elsewhere), "{c:?}");
        }
    }

    fn scrape() -> Scrape {
        Scrape {
            workers: vec![WorkerScrape::default(), WorkerScrape::default()],
            ready: true,
            io_backend: "uring",
            access_log_lost_lines: None,
            process: Process::default(),
        }
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let om = render(&scrape(), Format::OpenMetrics);
        assert!(om.contains("# TYPE fcgi_uring_requests counter\n"), "{om}");
        assert!(om.contains("fcgi_uring_requests_total{role=\"responder\"} 0\n"));
        assert!(om.ends_with("# EOF\n"));
        let text = render(&scrape(), Format::Prometheus);
        assert!(text.contains("# TYPE fcgi_uring_requests_total counter\n"));
        assert!(
            text.contains("fcgi_uring_worker_requests_total{worker=\"1\",role=\"filter\"} 0\n")
        );
        assert!(text.contains("fcgi_uring_response_duration_seconds_bucket{le=\"0.00001\"} 0\n"));
        assert!(text.contains("fcgi_uring_response_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn negotiates_openmetrics_only_when_asked() {
        let prom = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
    }
}
