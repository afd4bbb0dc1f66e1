//! A worker's labelled counters, gauges and latency histograms, as the admin listener exports
//! them (see `crate::admin`).
//!
//! Guarantees: every value is written only by the worker that owns it, with a plain relaxed
//! load and store (no locked read-modify-write, no cache line shared with another worker on
//! the request path); a reader on another thread sees each value at most a few updates behind
//! and never torn. Histograms keep one count per bucket (not cumulative) plus a sum in
//! nanoseconds and a count; the reader makes them cumulative.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Adds `n` to a value only its owning worker writes.
#[inline]
fn bump(v: &AtomicU64, n: u64) {
    v.store(v.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

fn get(v: &AtomicU64) -> u64 {
    v.load(Ordering::Relaxed)
}

/// Declares a closed set of label values: an enum with `ALL`, `label()` and `index()`.
macro_rules! label_set {
    ($(#[$doc:meta])* $name:ident { $( $(#[$vdoc:meta])* $v:ident => $l:literal, )* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $( $(#[$vdoc])* $v, )* }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$( $name::$v, )*];

            /// The label value in the exposition.
            pub fn label(self) -> &'static str {
                match self { $( $name::$v => $l, )* }
            }

            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_set! {
    /// The FastCGI role of a request.
    RoleLabel {
        Responder => "responder",
        Authorizer => "authorizer",
        Filter => "filter",
    }
}

impl From<fcgi_proto::Role> for RoleLabel {
    fn from(r: fcgi_proto::Role) -> RoleLabel {
        match r {
            fcgi_proto::Role::Authorizer => RoleLabel::Authorizer,
            fcgi_proto::Role::Filter => RoleLabel::Filter,
            _ => RoleLabel::Responder,
        }
    }
}

label_set! {
    /// The class of an HTTP status sent to the proxy.
    StatusClass {
        Informational => "1xx",
        Success => "2xx",
        Redirection => "3xx",
        ClientError => "4xx",
        ServerError => "5xx",
    }
}

impl StatusClass {
    pub fn of(status: http::StatusCode) -> StatusClass {
        match status.as_u16() {
            0..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

label_set! {
    /// The protocol status of an END_REQUEST record sent.
    EndStatus {
        RequestComplete => "request_complete",
        CantMpxConn => "cant_mpx_conn",
        Overloaded => "overloaded",
        UnknownRole => "unknown_role",
    }
}

label_set! {
    /// Why a connection was closed.
    CloseReason {
        /// The peer closed it (EOF or reset) while it was open.
        Peer => "peer",
        /// A request without KEEP_CONN ended and the connection drained.
        KeepConnOff => "keep_conn_off",
        /// The peer broke the protocol.
        ProtocolError => "protocol_error",
        /// A deadline passed (idle, params, write, linger).
        Timeout => "timeout",
        /// A send failed: the peer is gone.
        SendFailed => "send_failed",
        /// The server drained (shutdown or hot upgrade) and closed it between requests.
        Drain => "drain",
    }
}

/// Upper bounds of the latency buckets, in seconds: 10 microseconds to 10 seconds.
pub const BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A duration in nanoseconds and the bucket it lands in.
#[derive(Debug, Clone, Copy)]
struct Sample {
    bucket: usize,
    nanos: u64,
}

impl Sample {
    #[inline]
    fn of(d: Duration) -> Sample {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS
            .iter()
            .position(|&b| nanos <= b)
            .unwrap_or(BUCKETS.len());
        Sample { bucket, nanos }
    }
}

/// Calls `observe(sample, n)` for each run of `n` equal starts, with the sample of
/// `now - start`.
#[inline]
fn for_each_run(now: Instant, starts: &[Instant], mut observe: impl FnMut(Sample, u64)) {
    if let [only] = starts {
        return observe(Sample::of(now.saturating_duration_since(*only)), 1);
    }
    let mut rest = starts;
    while let Some((&first, tail)) = rest.split_first() {
        let same = tail.iter().take_while(|&&s| s == first).count();
        observe(
            Sample::of(now.saturating_duration_since(first)),
            1 + same as u64,
        );
        rest = tail.get(same..).unwrap_or_default();
    }
}

const BUCKET_NANOS: [u64; 19] = {
    let mut out = [0u64; 19];
    let micros: [u64; 19] = [
        10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
        500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
    ];
    let mut i = 0;
    while i < 19 {
        out[i] = micros[i] * 1000;
        i += 1;
    }
    out
};

/// A latency histogram written by one worker.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket; the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// A snapshot of a [`Histogram`] (or a sum of several).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    pub buckets: [u64; BUCKETS.len() + 1],
    pub sum_nanos: u64,
    pub count: u64,
}

impl Histogram {
    #[cfg(test)]
    pub fn observe(&self, d: Duration) {
        self.record(Sample::of(d), 1);
    }

    /// `n` observations of a sample whose bucket is already found.
    #[inline]
    fn record(&self, sample: Sample, n: u64) {
        bump(&self.buckets[sample.bucket], n);
        bump(&self.sum_nanos, sample.nanos.wrapping_mul(n));
        bump(&self.count, n);
    }

    /// Observes `now - start` for each start, once per run of equal starts (the requests of
    /// one loop turn share its clock reading, so a batch is usually one run).
    #[inline]
    pub fn observe_since(&self, now: Instant, starts: &[Instant]) {
        for_each_run(now, starts, |sample, n| self.record(sample, n));
    }

    /// [`Histogram::observe_since`] on both `a` and `b`, for two latencies that started
    /// together: each run's duration and bucket are found once for both.
    #[inline]
    pub fn observe_since_in_both(a: &Histogram, b: &Histogram, now: Instant, starts: &[Instant]) {
        for_each_run(now, starts, |sample, n| {
            a.record(sample, n);
            b.record(sample, n);
        });
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot {
            sum_nanos: get(&self.sum_nanos),
            ..HistogramSnapshot::default()
        };
        for (out, b) in s.buckets.iter_mut().zip(&self.buckets) {
            *out = get(b);
        }
        // Read last, so that the count never exceeds the buckets' total by more than the
        // observations racing with this read.
        s.count = s.buckets.iter().sum();
        s
    }
}

impl HistogramSnapshot {
    pub fn add(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_nanos += other.sum_nanos;
        self.count += other.count;
    }
}

/// One worker's labelled metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; 3],
    responses: [AtomicU64; 5],
    end_requests: [AtomicU64; 4],
    closed: [AtomicU64; 6],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Gauges, published once per loop turn.
    in_flight: AtomicU64,
    conns_open: AtomicU64,
    /// From the end of the params to the END_REQUEST queued for the kernel.
    pub response: Histogram,
    /// From the handler's call to the end of its response.
    pub handler: Histogram,
}

/// A snapshot of [`Metrics`] (or the sum over workers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub requests: [u64; 3],
    pub responses: [u64; 5],
    pub end_requests: [u64; 4],
    pub closed: [u64; 6],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub in_flight: u64,
    pub conns_open: u64,
    pub response: HistogramSnapshot,
    pub handler: HistogramSnapshot,
}

impl Metrics {
    pub fn request(&self, role: RoleLabel) {
        bump(&self.requests[role.index()], 1);
    }

    pub fn response(&self, status: http::StatusCode) {
        bump(&self.responses[StatusClass::of(status).index()], 1);
    }

    pub fn end_request(&self, status: EndStatus) {
        bump(&self.end_requests[status.index()], 1);
    }

    pub fn closed(&self, why: CloseReason) {
        bump(&self.closed[why.index()], 1);
    }

    pub fn received(&self, n: usize) {
        bump(&self.bytes_in, n as u64);
    }

    pub fn sent(&self, n: usize) {
        bump(&self.bytes_out, n as u64);
    }

    /// Publishes the gauges (only when they changed: no store on an unchanged line).
    pub fn set_gauges(&self, in_flight: usize, conns_open: usize) {
        for (g, v) in [(&self.in_flight, in_flight), (&self.conns_open, conns_open)] {
            if get(g) != v as u64 {
                g.store(v as u64, Ordering::Relaxed);
            }
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let all = |a: &[AtomicU64]| -> Vec<u64> { a.iter().map(get).collect() };
        let mut s = MetricsSnapshot {
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            in_flight: get(&self.in_flight),
            conns_open: get(&self.conns_open),
            response: self.response.snapshot(),
            handler: self.handler.snapshot(),
            ..MetricsSnapshot::default()
        };
        s.requests.copy_from_slice(&all(&self.requests));
        s.responses.copy_from_slice(&all(&self.responses));
        s.end_requests.copy_from_slice(&all(&self.end_requests));
        s.closed.copy_from_slice(&all(&self.closed));
        s
    }
}

impl MetricsSnapshot {
    pub fn requests(&self, role: RoleLabel) -> u64 {
        self.requests[role.index()]
    }

    pub fn responses(&self, class: StatusClass) -> u64 {
        self.responses[class.index()]
    }

    pub fn end_requests(&self, status: EndStatus) -> u64 {
        self.end_requests[status.index()]
    }

    pub fn closed(&self, why: CloseReason) -> u64 {
        self.closed[why.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_their_nanoseconds_and_observations_land_in_the_first_that_holds_them() {
        for (s, n) in BUCKETS.iter().zip(BUCKET_NANOS) {
            assert_eq!((s * 1e9).round() as u64, n);
        }
        let h = Histogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(11));
        h.observe(Duration::from_secs(11));
        let s = h.snapshot();
        assert_eq!((s.buckets[0], s.buckets[1], s.buckets[19]), (1, 1, 1));
        assert_eq!(s.count, 3);
        assert_eq!(s.sum_nanos, 11_000_021_000);
    }

    #[test]
    fn observing_runs_of_equal_starts_counts_each_one() {
        let now = Instant::now();
        let at = |us: u64| now - Duration::from_micros(us);
        let starts = [at(20), at(20), at(20), at(300), at(20), at(300), at(300)];
        let grouped = Histogram::default();
        grouped.observe_since(now, &starts);
        let one_by_one = Histogram::default();
        for start in starts {
            one_by_one.observe(now.saturating_duration_since(start));
        }
        assert_eq!(grouped.snapshot(), one_by_one.snapshot());
        assert_eq!(grouped.snapshot().count, 7);
        assert_eq!(
            (grouped.snapshot().buckets[1], grouped.snapshot().buckets[5]),
            (4, 3)
        );
        grouped.observe_since(now, &[]);
        assert_eq!(grouped.snapshot().count, 7);
    }

    #[test]
    fn observing_in_both_is_observing_in_each() {
        let now = Instant::now();
        let at = |us: u64| now - Duration::from_micros(us);
        let starts = [at(20), at(20), at(300), at(7_000_000)];
        let (a, b) = (Histogram::default(), Histogram::default());
        Histogram::observe_since_in_both(&a, &b, now, &starts);
        let each = Histogram::default();
        each.observe_since(now, &starts);
        assert_eq!(a.snapshot(), each.snapshot());
        assert_eq!(b.snapshot(), each.snapshot());
        Histogram::observe_since_in_both(&a, &b, now, &starts[..1]);
        each.observe_since(now, &starts[..1]);
        assert_eq!(
            (a.snapshot(), b.snapshot()),
            (each.snapshot(), each.snapshot())
        );
    }

    #[test]
    fn label_sets_index_their_arrays() {
        assert_eq!(RoleLabel::ALL.len(), 3);
        assert_eq!(StatusClass::ALL.len(), 5);
        assert_eq!(EndStatus::ALL.len(), 4);
        assert_eq!(CloseReason::ALL.len(), 6);
        assert_eq!(
            StatusClass::of(http::StatusCode::NOT_FOUND),
            StatusClass::ClientError
        );
    }
}
