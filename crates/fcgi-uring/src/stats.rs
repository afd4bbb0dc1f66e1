//! Per-worker counters of limits hit and timeouts, and their rate-limited log lines.
//!
//! Each worker owns one [`WorkerStats`] (written only by that worker, relaxed atomics so that
//! [`crate::ServerHandle::stats`] can read it from another thread). A cause is logged at most
//! once per [`LOG_INTERVAL`] per worker, with the count of occurrences not logged since, so
//! hostile traffic cannot flood the log.

pub(crate) mod metrics;

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one log line per cause and worker in this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Counter {
    /// Connections accepted.
    Accepted,
    /// Connections closed at accept: `max_conns_per_worker` reached.
    ConnsRefused,
    /// accept failed (EMFILE, ENFILE, ENOMEM...): the worker paused accepting for
    /// `accept_retry`.
    AcceptFailed,
    /// Requests dispatched to a handler.
    Requests,
    /// END_REQUEST(OVERLOADED): `max_requests_per_worker` reached.
    WorkerOverloaded,
    /// END_REQUEST(OVERLOADED): `max_requests_per_conn` reached.
    ConnOverloaded,
    /// END_REQUEST(OVERLOADED): a params limit (bytes, pairs, name or value length).
    ParamsLimit,
    /// END_REQUEST(UNKNOWN_ROLE).
    UnknownRole,
    /// A protocol error closed the connection (bad version, bad lengths, duplicate BEGIN...).
    ProtocolError,
    /// Params that do not make an HTTP request (bad method, URI...): answered 400.
    BadRequest,
    /// Reading paused because the connection's queued output passed `max_output_buffer`.
    OutputFull,
    /// A handler returned an error or panicked.
    HandlerFailed,
    /// Idle connection closed.
    IdleTimeout,
    /// Connection closed: params not complete in time.
    ParamsTimeout,
    /// Request body failed: no body bytes in time.
    BodyTimeout,
    /// Handler cancelled at its deadline.
    HandlerTimeout,
    /// Connection closed: the peer stopped reading.
    WriteTimeout,
    /// Connection closed: the peer did not close after our FIN.
    LingerTimeout,
    /// Requests the peer cancelled (ABORT_REQUEST).
    Aborted,
    /// Requests still running when a stop's `server.shutdown_timeout` ran out: dropped
    /// unanswered with their connections.
    ShutdownAbandoned,
    /// Requests for `ping.path`, answered without calling the application.
    Pings,
    /// Access-log lines dropped because the log writer fell behind.
    AccessLogDropped,
    /// Connections closed at accept: the peer is not in `server.allowed_peers`.
    PeerRefused,
    /// Waits of an idle worker in its IO backend (`ring.idle_wait_us`) that IO ended.
    IdleWaitWoken,
    /// Such waits that ran to their limit with no IO (the worker then slept in tokio).
    IdleWaitExpired,
    /// Request bodies handed to their handler as a slice of the buffer a receive brought
    /// them in, uncopied (see `Core::on_bytes_owned`).
    SharedBodies,
    /// Yields after a wake (`ring.yield_after_wake`) that brought more requests.
    WakeYieldPaid,
    /// Such yields that brought nothing, quickly (nothing else wanted the CPU).
    WakeYieldFree,
    /// Such yields that brought nothing and took long: the yields paused.
    WakeYieldCostly,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 29] = [
        Counter::Accepted,
        Counter::ConnsRefused,
        Counter::AcceptFailed,
        Counter::Requests,
        Counter::WorkerOverloaded,
        Counter::ConnOverloaded,
        Counter::ParamsLimit,
        Counter::UnknownRole,
        Counter::ProtocolError,
        Counter::BadRequest,
        Counter::OutputFull,
        Counter::HandlerFailed,
        Counter::IdleTimeout,
        Counter::ParamsTimeout,
        Counter::BodyTimeout,
        Counter::HandlerTimeout,
        Counter::WriteTimeout,
        Counter::LingerTimeout,
        Counter::Aborted,
        Counter::ShutdownAbandoned,
        Counter::Pings,
        Counter::AccessLogDropped,
        Counter::PeerRefused,
        Counter::IdleWaitWoken,
        Counter::IdleWaitExpired,
        Counter::SharedBodies,
        Counter::WakeYieldPaid,
        Counter::WakeYieldFree,
        Counter::WakeYieldCostly,
    ];

    /// Its name in logs and in [`Stats`]'s `Display`.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Accepted => "accepted",
            Counter::ConnsRefused => "conns_refused",
            Counter::AcceptFailed => "accept_failed",
            Counter::Requests => "requests",
            Counter::WorkerOverloaded => "worker_overloaded",
            Counter::ConnOverloaded => "conn_overloaded",
            Counter::ParamsLimit => "params_limit",
            Counter::UnknownRole => "unknown_role",
            Counter::ProtocolError => "protocol_error",
            Counter::BadRequest => "bad_request",
            Counter::OutputFull => "output_full",
            Counter::HandlerFailed => "handler_failed",
            Counter::IdleTimeout => "idle_timeout",
            Counter::ParamsTimeout => "params_timeout",
            Counter::BodyTimeout => "body_timeout",
            Counter::HandlerTimeout => "handler_timeout",
            Counter::WriteTimeout => "write_timeout",
            Counter::LingerTimeout => "linger_timeout",
            Counter::Aborted => "aborted",
            Counter::ShutdownAbandoned => "shutdown_abandoned",
            Counter::Pings => "pings",
            Counter::AccessLogDropped => "access_log_dropped",
            Counter::PeerRefused => "peer_refused",
            Counter::IdleWaitWoken => "idle_wait_woken",
            Counter::IdleWaitExpired => "idle_wait_expired",
            Counter::SharedBodies => "shared_bodies",
            Counter::WakeYieldPaid => "wake_yield_paid",
            Counter::WakeYieldFree => "wake_yield_free",
            Counter::WakeYieldCostly => "wake_yield_costly",
        }
    }

    /// Its slot: the declaration order, which is [`Counter::ALL`]'s (a test checks it).
    fn index(self) -> usize {
        self as usize
    }
}

const N: usize = Counter::ALL.len();

/// One worker's counters (shared with the server handle).
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    /// The worker's index (the `worker` label of its metrics and log lines).
    pub worker: usize,
    counts: [AtomicU64; N],
    /// Labelled counters, gauges and latency histograms (exported by the admin listener).
    pub metrics: metrics::Metrics,
    /// The oldest request in flight, published about once a second when the admin listener
    /// is on (a lock taken once a second by the worker, never on the request path).
    pub oldest_in_flight: std::sync::Mutex<Option<crate::conn::InFlight>>,
    /// The worker's answers to the admin listener's liveness questions (`/healthz`).
    pub liveness: crate::admin::Liveness,
}

impl WorkerStats {
    /// Only the owning worker writes, so a plain load and store suffice (no locked
    /// read-modify-write on the request path); readers see a value at most one behind.
    fn add(&self, c: Counter) {
        self.add_n(c, 1);
    }

    fn add_n(&self, c: Counter, k: u64) {
        let n = &self.counts[c.index()];
        n.store(n.load(Ordering::Relaxed) + k, Ordering::Relaxed);
    }
}

impl WorkerStats {
    pub fn new(worker: usize) -> WorkerStats {
        WorkerStats {
            worker,
            ..WorkerStats::default()
        }
    }

    /// A snapshot of this worker's counters alone.
    pub fn snapshot(&self) -> Stats {
        Stats::sum([self])
    }
}

/// A snapshot of the counters, summed over workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    counts: [u64; N],
    backend: Option<crate::config::Backend>,
}

impl Stats {
    pub(crate) fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerStats>) -> Stats {
        let mut s = Stats::default();
        for w in workers {
            for (total, c) in s.counts.iter_mut().zip(&w.counts) {
                *total += c.load(Ordering::Relaxed);
            }
        }
        s
    }

    /// The count of `c`.
    pub fn get(&self, c: Counter) -> u64 {
        self.counts[c.index()]
    }

    /// The IO backend the counting workers run on (`None` for `--protocol http1|h2c`).
    pub fn backend(&self) -> Option<crate::config::Backend> {
        self.backend
    }

    pub(crate) fn with_backend(mut self, backend: Option<crate::config::Backend>) -> Stats {
        self.backend = backend;
        self
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for c in Counter::ALL {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{}={}", c.name(), self.get(c))?;
        }
        Ok(())
    }
}

/// Counting and rate-limited logging for one worker (single-threaded).
#[derive(Debug)]
pub(crate) struct Recorder {
    pub shared: std::sync::Arc<WorkerStats>,
    last_log: [Cell<Option<Instant>>; N],
    suppressed: [Cell<u64>; N],
}

impl Recorder {
    pub fn new(shared: std::sync::Arc<WorkerStats>) -> Recorder {
        Recorder {
            shared,
            last_log: Default::default(),
            suppressed: Default::default(),
        }
    }

    /// Counts `n` of `c` without logging.
    pub fn add(&self, c: Counter, n: u64) {
        self.shared.add_n(c, n);
    }

    /// Counts `c` without logging.
    pub fn count(&self, c: Counter) {
        self.shared.add(c);
    }

    /// Counts `c` and logs `what` unless this cause was logged less than [`LOG_INTERVAL`] ago.
    pub fn hit(&self, c: Counter, now: Instant, what: fmt::Arguments<'_>) {
        self.shared.add(c);
        let i = c.index();
        let due = self.last_log[i]
            .get()
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_INTERVAL);
        if !due {
            self.suppressed[i].set(self.suppressed[i].get() + 1);
            return;
        }
        self.last_log[i].set(Some(now));
        let more = self.suppressed[i].replace(0);
        if more > 0 {
            tracing::warn!("{what} [{}; {more} more not logged]", c.name());
        } else {
            tracing::warn!("{what} [{}]", c.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_every_hit_and_logs_at_most_once_per_interval() {
        let r = Recorder::new(Arc::new(WorkerStats::default()));
        let t0 = Instant::now();
        for _ in 0..1000 {
            r.hit(Counter::IdleTimeout, t0, format_args!("idle"));
        }
        assert_eq!(r.suppressed[Counter::IdleTimeout.index()].get(), 999);
        r.hit(
            Counter::IdleTimeout,
            t0 + LOG_INTERVAL,
            format_args!("idle"),
        );
        assert_eq!(r.suppressed[Counter::IdleTimeout.index()].get(), 0);
        let s = Stats::sum([&*r.shared]);
        assert_eq!(s.get(Counter::IdleTimeout), 1001);
        assert_eq!(s.get(Counter::Accepted), 0);
        assert!(s.to_string().contains("idle_timeout=1001"));
    }

    #[test]
    fn every_counter_has_its_own_index() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
