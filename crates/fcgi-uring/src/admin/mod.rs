//! The admin listener: a small HTTP/1.1 server (hyper) on its own thread, separate from the
//! FastCGI listeners, for operators and their tools.
//!
//! - `GET /metrics`: Prometheus text format, or OpenMetrics when `Accept` asks for it
//!   ([`exposition`]);
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when every worker accepts, 503 while starting or draining;
//! - `GET /status`: per-worker live status as JSON, or a table with `?human`.
//!
//! Guarantees: the workers do nothing for it beyond their own per-worker counters (a scrape
//! reads atomics each worker writes; nothing is sent to a worker, no lock is taken on the
//! request path). Hostile input costs the FastCGI side nothing and gets a clear HTTP error:
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
    pub started_at: Instant,
    pub io_backend: &'static str,
}

impl Sources {
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
            process: process::read(),
        }
    }
}
