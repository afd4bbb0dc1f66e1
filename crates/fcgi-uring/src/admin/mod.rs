//! The admin listener: a small HTTP/1.1 server (hyper) on its own thread, separate from the
//! FastCGI listeners, for operators and their tools.
//!
//! - `GET /metrics`: Prometheus text format, or OpenMetrics when `Accept` asks for it
//!   ([`exposition`]);
//! - `GET /healthz`: 200 while every worker turns its loop, 503 while one has not for
//!   `admin.stall_timeout` (see [`Liveness`]);
//! - `GET /readyz`: 200 when every worker accepts, 503 while starting or draining;
//! - `GET /status`: per-worker live status as JSON, or a table with `?human`.
//!
//! Guarantees: the workers do nothing for it beyond their own per-worker counters (a scrape
//! reads atomics each worker writes; no lock is taken on the request path) and the liveness
//! answer: an atomic load per loop turn, and once a second a wake-up of a sleeping worker
//! (which takes a lock as it goes to sleep). Hostile input costs the FastCGI side nothing and gets a clear HTTP error:
//! an unknown path 404, a method other than GET or HEAD 405, a request head over 8 KiB 431, a
//! request body 413, a client that does not send its head within [`HEAD_TIMEOUT`] 408. At most
//! [`MAX_CONNS`] admin connections are served at once; more are closed at accept.

mod exposition;
mod health;
mod log_writer;
mod process;
mod serve;
mod sniff;
mod status;

pub(crate) use exposition::{Scrape, WorkerScrape};
pub(crate) use health::Liveness;
pub use health::{Health, Readiness};
pub(crate) use log_writer::LogWriter;
pub(crate) use serve::{AdminServer, Bound};

use crate::stats::WorkerStats;
use crate::uring::RingCounters;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a client has to send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest an admin connection is kept (a slow reader of a large page included).
pub const CONN_LIFETIME: Duration = Duration::from_secs(60);

/// Admin connections served at once.
pub const MAX_CONNS: usize = 64;

/// Largest request head accepted (hyper's smallest read buffer).
pub const MAX_HEAD: usize = 8192;

/// What one worker publishes for the admin listener.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSource {
    pub stats: Arc<WorkerStats>,
    pub ring: Arc<RingCounters>,
}

/// Everything the admin listener reads.
#[derive(Debug)]
pub(crate) struct Sources {
    pub workers: Vec<WorkerSource>,
    pub health: Arc<Health>,
    /// `admin.stall_timeout` (zero: workers are not asked).
    pub stall_timeout: std::time::Duration,
    pub started_at: Instant,
    pub io_backend: &'static str,
    /// The access log writer's count of lines it failed to write (none: no access log).
    pub access_log_lost: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl Sources {
    /// The first worker that has left a liveness question unanswered past
    /// `admin.stall_timeout`, and for how long.
    pub fn stalled(&self) -> Option<(usize, std::time::Duration)> {
        if self.stall_timeout.is_zero() {
            return None;
        }
        self.workers.iter().find_map(|w| {
            let d = w.stats.liveness.unanswered_for()?;
            (d > self.stall_timeout).then_some((w.stats.worker, d))
        })
    }

    /// Asks every worker whether it still turns its loop (see [`Liveness`]).
    pub fn ask_workers(&self) {
        if !self.stall_timeout.is_zero() {
            for w in &self.workers {
                w.stats.liveness.ask();
            }
        }
    }

    /// One snapshot of every worker, for one scrape.
    pub fn scrape(&self) -> Scrape {
        Scrape {
            workers: self
                .workers
                .iter()
                .map(|w| WorkerScrape {
                    stats: w.stats.snapshot(),
                    metrics: w.stats.metrics.snapshot(),
                    ring: w.ring.snapshot(),
                })
                .collect(),
            ready: self.health.get() == Readiness::Ready,
            io_backend: self.io_backend,
            access_log_lost_lines: self
                .access_log_lost
                .as_ref()
                .map(|n| n.load(std::sync::atomic::Ordering::Relaxed)),
            process: process::read(),
        }
    }
}
