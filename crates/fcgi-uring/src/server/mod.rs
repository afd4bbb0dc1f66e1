//! The server: listeners, one pinned worker thread per core ([`crate::worker`]), startup and
//! shutdown, and the handle that reads the workers' statistics.
//!
//! Each worker owns its ring (or epoll instance: [`backend`] chooses), its connections and its
//! in-flight requests; nothing on the request path is shared between workers (no locks; the
//! one shared atomic, a per-worker statistic, is written only when it grows). TCP listeners
//! are one per worker with SO_REUSEPORT; a UNIX listener is shared (the kernel refuses
//! SO_REUSEPORT on AF_UNIX), each worker accepting on it.

mod admin_start;
pub(crate) mod backend;
pub(crate) mod listener;
pub(crate) mod serve;

use crate::config::{Backend, Config, Protocol};
use crate::service::HttpService;
use crate::stats::{self, Stats};
use crate::uring::{Features, RingCounters, RingStats, SetupError};
use crate::worker::{self, WorkerError, WorkerSpec};
use fcgi_proto::addr::{Addr, AddrParseError};
pub use serve::{App, IntoServer, Serve, serve};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

/// Builds and starts a FastCGI server.
#[derive(Debug, Clone, Default)]
pub struct Server {
    config: Config,
}

/// Why the server could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// Binding or configuring the listening socket failed.
    Listen(io::Error),
    /// io_uring is unavailable (the message names the cause and the fix).
    Ring(SetupError),
    /// A worker thread or its runtime could not be created.
    Thread(io::Error),
    /// `Config::protocol` asks for HTTP, and this build has no `http-compare` feature.
    ProtocolUnavailable(Protocol),
    /// `FCGI_WEB_SERVER_ADDRS` is set to something that is not a list of IP addresses and
    /// networks.
    WebServerAddrs {
        /// The variable's value.
        value: String,
        /// What is wrong with it.
        error: crate::config::PeerListError,
    },
    /// The application's service factory (or its `Clone`) panicked on a worker.
    App {
        /// The worker whose service could not be built.
        worker: usize,
        /// The panic's message.
        message: String,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Listen(e) => write!(f, "cannot listen: {e}"),
            StartError::Ring(e) => write!(f, "{e}"),
            StartError::Thread(e) => write!(f, "cannot start a worker: {e}"),
            StartError::ProtocolUnavailable(p) => write!(
                f,
                "protocol {p:?} needs fcgi-uring built with the `http-compare` feature"
            ),
            StartError::WebServerAddrs { value, error } => write!(
                f,
                "FCGI_WEB_SERVER_ADDRS={value:?} is not a list of peers: {error} (unset it, or \
                 set server.allowed_peers, which takes precedence)"
            ),
            StartError::App { worker, message } => write!(
                f,
                "the application's service could not be built on worker {worker}: it panicked: \
                 {message}"
            ),
        }
    }
}

impl std::error::Error for StartError {}

impl Server {
    /// A server with this configuration.
    pub fn new(config: Config) -> Server {
        Server { config }
    }

    /// A server listening on `addr` (`host:port` or `unix:/path`) with default settings.
    pub fn bind(addr: &str) -> Result<Server, AddrParseError> {
        Ok(Server::new(Config {
            listen: addr.parse()?,
            ..Config::default()
        }))
    }

    /// Sets the worker count (0: one per core).
    pub fn workers(mut self, n: usize) -> Server {
        self.config.workers = n;
        self
    }

    /// The configuration it will start with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts the workers and returns once every one is accepting. `app` is a service cloned
    /// for each worker (an axum `Router`) or a factory called once on each worker; either way
    /// the service is built on the worker, inside its runtime (see [`App`]).
    pub fn start<M, A: App<M>>(self, app: A) -> Result<ServerHandle, StartError> {
        let make = serve::factory(app, &self.config);
        let cfg = self.config;
        if cfg.protocol != Protocol::FastCgi {
            #[cfg(feature = "http-compare")]
            return crate::http_compare::start(cfg, make);
            #[cfg(not(feature = "http-compare"))]
            return Err(StartError::ProtocolUnavailable(cfg.protocol));
        }
        let workers = cfg.worker_count();
        let listeners = listener::bind(
            &cfg.listen,
            workers,
            cfg.backlog,
            cfg.unix_mode,
            cfg.share_port,
        )
        .map_err(StartError::Listen)?;
        let ops = admin_start::Ops::bind(&cfg)?;
        let cores = pin_cores(cfg.pin_workers);
        let make = Arc::new(make);
        let settings = crate::conn::Settings {
            limits: cfg.limits,
            max_body_buffer: cfg.max_body_buffer,
            max_output_buffer: cfg.max_output_buffer,
            max_conns: cfg.max_conns_per_worker,
            max_requests: cfg.max_requests_per_worker,
            timeouts: cfg.timeouts,
            ping: ops.ping(&cfg),
            logs: ops.logs(),
            allowed_peers: listener::allowed_peers(&cfg)?,
        };
        let mut handle = ServerHandle::starting(listeners.local.clone());
        handle.ops = ops;
        let mut io = backend::choose(cfg.io, &cfg.ring);
        loop {
            let started =
                Server::start_workers(&mut handle, &cfg, &listeners, &settings, &cores, &make, io);
            match started {
                // `auto`, and a worker's ring could not be set up after the probe passed (the
                // locked memory of several workers' rings): every worker starts again on epoll.
                Err(StartError::Ring(e)) if backend::falls_back_after_probe(cfg.io, io, &e) => {
                    handle.stop_workers();
                    io = Backend::Epoll;
                }
                Err(e) => return Err(e),
                Ok(()) => break,
            }
        }
        handle.ops.start(&handle.stats, &handle.ring_counters, io)?;
        Ok(handle)
    }

    /// Starts the workers on `io` into `handle`; returns once every one is accepting.
    fn start_workers<F, S>(
        handle: &mut ServerHandle,
        cfg: &Config,
        listeners: &listener::Listeners,
        settings: &crate::conn::Settings,
        cores: &[core_affinity::CoreId],
        make: &Arc<F>,
        io: Backend,
    ) -> Result<(), StartError>
    where
        F: Fn() -> S + Send + Sync + 'static,
        S: HttpService,
    {
        handle.backend = Some(io);
        for i in 0..cfg.worker_count() {
            let (ready_tx, ready_rx) = mpsc::channel();
            let stop = Arc::new(worker::Stop::default());
            let max_in_flight = Arc::new(AtomicUsize::new(0));
            let stats = Arc::new(stats::WorkerStats::new(i));
            handle.stats.push(stats.clone());
            let ring_counters = Arc::new(RingCounters::default());
            handle.ring_counters.push(ring_counters.clone());
            let spec = WorkerSpec {
                core_id: core_for(cores, i),
                listener: listeners.for_worker(i),
                is_tcp: listeners.is_tcp,
                backend: io,
                ring: cfg.ring.clone(),
                settings: settings.clone(),
                shutdown_timeout: cfg.shutdown_timeout,
                accept_retry: cfg.accept_retry,
                completions_per_turn: cfg.completions_per_turn,
                idle_spin: std::time::Duration::from_micros(cfg.idle_spin_us.into()),
                ring_counters,
                make: make.clone(),
                stats,
                stop: stop.clone(),
                ready: ready_tx,
                max_in_flight: max_in_flight.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("fcgi-worker-{i}"))
                .spawn(move || worker::run(spec))
                .map_err(StartError::Thread)?;
            handle.threads.push(thread);
            handle.stops.push(stop);
            handle.max_in_flight.push(max_in_flight);
            match ready_rx.recv() {
                Ok(Ok(features)) => {
                    if handle.features.is_none() {
                        handle.features = features;
                    }
                }
                Ok(Err(WorkerError::Ring(e))) => return Err(StartError::Ring(e)),
                Ok(Err(WorkerError::Runtime(e))) => return Err(StartError::Thread(e)),
                Ok(Err(WorkerError::Start(e))) => return Err(e),
                Err(_) => return Err(worker_vanished()),
            }
        }
        Ok(())
    }

    /// Starts the server and serves until SIGINT or SIGTERM, then shuts down gracefully.
    /// Blocks the calling thread (from inside `#[tokio::main]` too; there,
    /// [`serve`](crate::serve()) can be awaited instead).
    pub fn serve<M, A: App<M>>(self, app: A) -> Result<(), StartError> {
        let signals = serve::SignalThread::spawn().map_err(StartError::Thread)?;
        let handle = self.start(app)?;
        signals.wait();
        handle.shutdown();
        Ok(())
    }
}

/// The cores worker `i` is pinned to (`core_for`), empty when workers are not pinned.
pub(crate) fn pin_cores(pin: bool) -> Vec<core_affinity::CoreId> {
    if pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    }
}

pub(crate) fn core_for(cores: &[core_affinity::CoreId], i: usize) -> Option<core_affinity::CoreId> {
    (!cores.is_empty()).then(|| cores[i % cores.len()])
}

/// Pins the calling worker thread to `core` (if any); a refusal is logged, not fatal.
pub(crate) fn pin_current_thread(core: Option<core_affinity::CoreId>) {
    if let Some(id) = core
        && !core_affinity::set_for_current(id)
    {
        tracing::warn!("could not pin worker to core {}", id.id);
    }
}

/// A worker's thread ended before saying whether it started.
pub(crate) fn worker_vanished() -> StartError {
    StartError::Thread(io::Error::other("worker thread exited during startup"))
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local: Addr,
    /// The IO backend of the FastCGI workers (`None` for `--protocol http1|h2c`).
    backend: Option<Backend>,
    features: Option<Features>,
    pub(crate) threads: Vec<JoinHandle<()>>,
    pub(crate) stops: Vec<Arc<worker::Stop>>,
    /// Per worker: most requests seen in flight at once on one connection.
    max_in_flight: Vec<Arc<AtomicUsize>>,
    stats: Vec<Arc<stats::WorkerStats>>,
    ring_counters: Vec<Arc<RingCounters>>,
    /// Readiness and the admin listener.
    ops: admin_start::Ops,
}

impl ServerHandle {
    /// A handle with no worker yet, filled in as workers start.
    pub(crate) fn starting(local: Addr) -> ServerHandle {
        ServerHandle {
            local,
            backend: None,
            features: None,
            threads: Vec::new(),
            stops: Vec::new(),
            max_in_flight: Vec::new(),
            stats: Vec::new(),
            ring_counters: Vec::new(),
            ops: admin_start::Ops::default(),
        }
    }

    /// Where the admin listener listens (`admin.listen`; the real port when port 0 was asked).
    pub fn admin_addr(&self) -> Option<&Addr> {
        self.ops.admin_addr()
    }

    /// Starting, ready or draining, as `/readyz` reports it.
    pub fn readiness(&self) -> crate::Readiness {
        self.ops.readiness()
    }

    /// Reopens the access log file, losing no line: lines handed over before go to the file
    /// open until now (renamed by logrotate, say), later ones to a new file at
    /// `access_log.path`. The `fcgi-uring` binary calls it on SIGUSR1.
    pub fn reopen_logs(&self) {
        self.ops.reopen_logs();
    }

    /// Starts a graceful shutdown's drain: `/readyz` and the ping path answer 503 from now on;
    /// waits `admin.drain_delay` (while still accepting) the first time. [`ServerHandle::shutdown`]
    /// does this first too.
    pub fn drain(&self) {
        self.ops.drain();
    }

    /// The address bound (with the real port when port 0 was asked).
    pub fn local_addr(&self) -> &Addr {
        &self.local
    }

    /// The IO backend the workers run on (`None` for `--protocol http1|h2c`).
    pub fn backend(&self) -> Option<Backend> {
        self.backend
    }

    /// io_uring features in use (as detected by the first worker; `None` on epoll).
    pub fn features(&self) -> Option<&Features> {
        self.features.as_ref()
    }

    /// Limits hit, timeouts and other counters, summed over the workers.
    pub fn stats(&self) -> Stats {
        Stats::sum(self.stats.iter().map(|s| &**s)).with_backend(self.backend)
    }

    /// What the workers' rings did (receive buffers and bundles, registered sends, SQPOLL
    /// wakeups, idle spins), summed over the workers. All zero on epoll and for
    /// `--protocol http1|h2c`.
    pub fn ring_stats(&self) -> RingStats {
        RingStats::sum(self.ring_counters.iter().map(|c| &**c))
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// The most requests seen in flight at once on any one connection since start (over 1 only
    /// when a peer multiplexed, e.g. HAProxy with `option mpxs-conns`). Each worker publishes
    /// its maximum only when it grows, so reading this costs the request path nothing.
    pub fn max_requests_in_flight_per_conn(&self) -> usize {
        self.max_in_flight
            .iter()
            .map(|m| m.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Stops accepting, lets in-flight requests finish (up to the shutdown timeout), and waits
    /// for the workers to exit.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.ops.drain();
        for stop in &self.stops {
            stop.request();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Addr::Unix(path) = &self.local {
            let _ = std::fs::remove_file(path);
        }
        self.ops.stop();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
