//! Server configuration: every limit and size, with safe defaults.

use crate::uring::RingConfig;
use fcgi_proto::Limits;
use fcgi_proto::addr::Addr;
use std::time::Duration;

/// Everything a server needs to start. `Config::default()` listens on 127.0.0.1:9000 with one
/// worker per core.
#[derive(Debug, Clone)]
pub struct Config {
    /// What clients speak: FastCGI (io_uring), or HTTP/1.1 or h2c (hyper on tokio, for
    /// comparisons; see `runtime::http_serve`).
    pub protocol: Protocol,
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
    /// Requests in flight per worker (all connections); past it a request whose params are
    /// complete is answered END_REQUEST(OVERLOADED) without running its handler.
    pub max_requests_per_worker: usize,
    /// Deadlines that reclaim connections and requests a peer leaves hanging.
    pub timeouts: Timeouts,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// After accept fails (EMFILE when RLIMIT_NOFILE is reached, ENFILE, ENOMEM...), how long a
    /// worker waits before accepting again. Meanwhile new connections wait in the listen
    /// backlog; retrying at once would spin at full CPU while the failure lasts.
    pub accept_retry: Duration,
    /// Completions handled per loop turn before the answers are submitted: smaller sends
    /// responses sooner (better overlap with the peer), larger amortises each `io_uring_enter`.
    pub completions_per_turn: usize,
    /// Microseconds a worker with nothing to do keeps looking for new completions and handler
    /// output before it sleeps (0: sleep at once). Each look enters the kernel without waiting
    /// (with DEFER_TASKRUN, completions appear only then) and yields to the worker's tokio
    /// tasks in between; a shutdown request ends the spin. Trades CPU for wake-up latency.
    pub idle_spin_us: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            protocol: Protocol::FastCgi,
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
            max_requests_per_worker: 16_384,
            timeouts: Timeouts::default(),
            shutdown_timeout: Duration::from_secs(30),
            accept_retry: Duration::from_millis(100),
            completions_per_turn: 32,
            idle_spin_us: 0,
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

/// Deadlines, checked by one coarse timer wheel per worker (resolution
/// [`Timeouts::RESOLUTION`]). `Duration::ZERO` turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection with no request in flight and nothing queued, on which nothing was
    /// received for this long, is closed.
    pub idle: Duration,
    /// A request whose PARAMS stream has not ended this long after its BEGIN_REQUEST closes
    /// its connection (the peer and we cannot agree on that request any more).
    pub params: Duration,
    /// A request body (STDIN or DATA) that is still open while no byte arrived on its
    /// connection for this long fails with [`crate::BodyError::TimedOut`] (slowloris).
    pub body: Duration,
    /// A handler still running this long after dispatch is cancelled: 504 if nothing was
    /// sent yet, else its response is cut short. Off by default.
    pub handler: Duration,
    /// Output queued while the peer has not taken a byte for this long: the connection is
    /// closed (a peer that stopped reading).
    pub write: Duration,
    /// After our FIN on a KEEP_CONN=0 connection, how long we keep reading until the peer
    /// closes too.
    pub linger: Duration,
}

impl Timeouts {
    /// Granularity of every deadline.
    pub const RESOLUTION: Duration = Duration::from_millis(50);
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            idle: Duration::from_secs(300),
            params: Duration::from_secs(30),
            body: Duration::from_secs(60),
            handler: Duration::ZERO,
            write: Duration::from_secs(60),
            linger: Duration::from_secs(5),
        }
    }
}

/// The protocol the server speaks to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// FastCGI over io_uring (the point of this crate).
    #[default]
    FastCgi,
    /// HTTP/1.1 with hyper on tokio (feature `http-compare`).
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c, no upgrade) with hyper on tokio (feature `http-compare`).
    H2c,
}

impl Protocol {
    /// The name the configuration file and `--protocol` use: `fastcgi`, `http1` or `h2c`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::FastCgi => "fastcgi",
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "fastcgi" => Ok(Protocol::FastCgi),
            "http1" => Ok(Protocol::Http1),
            "h2c" => Ok(Protocol::H2c),
            _ => Err(format!(
                "unknown protocol {s:?}: expected fastcgi, http1 or h2c"
            )),
        }
    }
}
