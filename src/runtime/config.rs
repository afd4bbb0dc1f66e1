//! Server configuration: every limit and size, with safe defaults.

use crate::addr::Addr;
use crate::protocol::Limits;
use crate::uring::RingConfig;
use std::time::Duration;

/// Everything a server needs to start. `Config::default()` listens on 127.0.0.1:9000 with one
/// worker per core.
#[derive(Debug, Clone)]
pub struct Config {
    /// What clients speak: FastCGI (io_uring), or HTTP/1.1 or h2c (hyper on tokio, for
    /// comparisons; see `runtime::http_serve`).
    pub protocol: super::Protocol,
    /// Where to listen: TCP (one SO_REUSEPORT listener per worker) or a UNIX socket (one listener
    /// shared by all workers).
    pub listen: Addr,
    /// Worker threads; `0` means one per available core.
    pub workers: usize,
    /// Pin worker `i` to the i-th available core.
    pub pin_workers: bool,
    /// listen(2) backlog.
    pub backlog: i32,
    /// File mode of a UNIX socket (e.g. 0o660); `None` keeps the umask's.
    pub unix_mode: Option<u32>,
    /// Ring and receive-buffer sizes.
    pub ring: RingConfig,
    /// Protocol limits (params sizes, requests per connection, advertised values).
    pub limits: Limits,
    /// Unread request-body bytes buffered per request before the connection stops reading.
    pub max_body_buffer: usize,
    /// Response bytes queued per connection before streaming handlers are paused.
    pub max_output_buffer: usize,
    /// Connections per worker; past it new connections are closed at once.
    pub max_conns_per_worker: usize,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Completions handled per loop turn before the answers are submitted: smaller sends
    /// responses sooner (better overlap with the peer), larger amortises each `io_uring_enter`.
    pub completions_per_turn: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            protocol: super::Protocol::FastCgi,
            listen: Addr::Tcp(([127, 0, 0, 1], 9000).into()),
            workers: 0,
            pin_workers: true,
            backlog: 4096,
            unix_mode: None,
            ring: RingConfig::default(),
            limits: Limits::default(),
            max_body_buffer: 1024 * 1024,
            max_output_buffer: 1024 * 1024,
            max_conns_per_worker: 65_536,
            shutdown_timeout: Duration::from_secs(30),
            completions_per_turn: 32,
        }
    }
}

impl Config {
    /// Worker count after resolving `0` to the number of available cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}
