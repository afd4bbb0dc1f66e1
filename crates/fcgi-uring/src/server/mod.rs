//! The server: listeners, one pinned worker thread per core ([`crate::worker`]), startup and
//! shutdown, and the handle that reads the workers' statistics.
//!
//! Each worker owns its ring (or epoll instance: [`backend`] chooses), its connections and its
//! in-flight requests; nothing on the request path is shared between workers (no locks; the
//! one shared atomic, a per-worker statistic, is written only when it grows). TCP listeners
//! are one per worker with SO_REUSEPORT; a UNIX listener is shared (the kernel refuses
//! SO_REUSEPORT on AF_UNIX), each worker accepting on it. Sockets passed by systemd socket
//! activation or by a hot upgrade ([`passed`]) are served instead of binding, and a running
//! server can hand its sockets to a new process ([`ServerHandle::upgrade`], [`upgrade`]).

mod admin_start;
pub(crate) mod backend;
pub(crate) mod listener;
pub(crate) mod passed;
pub(crate) mod serve;
pub(crate) mod signals;
pub(crate) mod systemd;
pub(crate) mod upgrade;

use crate::config::{Backend, Config, Protocol};
use crate::service::HttpService;
use crate::stats::{self, Stats};
use crate::uring::{Features, RingCounters, RingStats, SetupError};
use crate::worker::{self, WorkerError, WorkerSpec};
use fcgi_proto::addr::{Addr, AddrParseError};
pub use serve::{App, IntoServer, Serve, serve};
pub use signals::{Signals, UpgradeOutcome};
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
pub use upgrade::UpgradeError;

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
    /// `FCGI_URING_IO` names no IO backend.
    IoEnv {
        /// The variable's value.
        value: String,
    },
    /// `access_log.path` could not be opened for appending.
    AccessLog {
        /// The path as configured.
        path: String,
        error: io::Error,
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
            StartError::IoEnv { value } => write!(
                f,
                "FCGI_URING_IO={value:?} is not an IO backend: it takes uring, epoll or auto \
                 (unset it to follow server.io)"
            ),
            StartError::AccessLog { path, error } => write!(
                f,
                "cannot open the access log access_log.path = {path:?} for appending: {error}"
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
        backend::env_override()?;
        let passed = passed::peek()
            .map_err(StartError::Listen)?
            .unwrap_or_default();
        let listeners =
            match listener::Listeners::from_passed(passed.listeners).map_err(StartError::Listen)? {
                Some(l) => {
                    tracing::info!(
                        "serving {} passed socket(s) on {} (from {}) instead of server.listen",
                        l.sockets.len(),
                        l.local,
                        if passed.from_upgrade {
                            "the process upgraded"
                        } else {
                            "LISTEN_FDS"
                        }
                    );
                    if passed.from_upgrade && !same_place(&cfg.listen, &l.local) {
                        kept_over_config("server.listen", &cfg.listen, &l.local);
                    }
                    l
                }
                None => listener::bind(
                    &cfg.listen,
                    cfg.worker_count(),
                    cfg.backlog,
                    cfg.unix_mode,
                    cfg.share_port,
                )
                .map_err(StartError::Listen)?,
            };
        if listeners.is_tcp {
            listener::bound_unacknowledged_output(&listeners.sockets, cfg.timeouts.write);
        }
        let workers = listeners.workers(cfg.worker_count());
        if workers != cfg.worker_count() {
            kept_over_config(
                "server.workers",
                cfg.worker_count(),
                format_args!("{workers} (one per socket passed)"),
            );
        }
        let ops = admin_start::Ops::bind(&cfg, passed.admin)?;
        let cores = pin_cores(cfg.pin_workers);
        let make = Arc::new(make);
        let settings = crate::conn::Settings {
            limits: Arc::new(cfg.limits),
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
        handle.listeners = listeners.sockets.clone();
        // A socket made by this server or an earlier process of it (hot upgrade) is its own;
        // systemd's is the socket unit's, whichever process it was passed on to.
        handle.owns_listeners = !listeners.passed || passed.ours;
        handle.upgrade_timeout = cfg.upgrade_timeout;
        handle.shutdown_timeout = cfg.shutdown_timeout;
        let watchdog = systemd::watchdog_period();
        let mut io = backend::choose(cfg.io, &cfg.ring);
        loop {
            let started = Server::start_workers(
                &mut handle,
                &cfg,
                (&listeners, workers),
                &settings,
                &cores,
                &make,
                (io, watchdog),
            );
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
        passed::consumed();
        handle.report_ready(passed.ready, watchdog)?;
        Ok(handle)
    }

    /// Starts the workers on `io` into `handle`; returns once every one is accepting.
    /// `watchdog`: the systemd watchdog's period, when the workers are to stamp heartbeats.
    fn start_workers<F, S>(
        handle: &mut ServerHandle,
        cfg: &Config,
        (listeners, workers): (&listener::Listeners, usize),
        settings: &crate::conn::Settings,
        cores: &[core_affinity::CoreId],
        make: &Arc<F>,
        (io, watchdog): (Backend, Option<std::time::Duration>),
    ) -> Result<(), StartError>
    where
        F: Fn() -> S + Send + Sync + 'static,
        S: HttpService,
    {
        handle.backend = Some(io);
        for i in 0..workers {
            let heartbeat = watchdog.map(|period| {
                let h = Arc::new(systemd::Heartbeat::default());
                h.beat();
                handle.heartbeats.push(h.clone());
                (h, period / 4)
            });
            let (ready_tx, ready_rx) = mpsc::channel();
            let stop = Arc::new(worker::Stop::default());
            let max_in_flight = Arc::new(AtomicUsize::new(0));
            let stats = Arc::new(stats::WorkerStats::new(i));
            if !cfg.ops.stall_timeout.is_zero() {
                stats.liveness.watch();
            }
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
                idle_wait: std::time::Duration::from_micros(cfg.idle_wait_us.into()),
                yield_after_wake: cfg.yield_after_wake,
                ring_counters,
                make: make.clone(),
                stats,
                stop: stop.clone(),
                ready: ready_tx,
                max_in_flight: max_in_flight.clone(),
                heartbeat,
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
                        if features.as_ref().is_some_and(|f| f.defer_taskrun) {
                            warn_defer_taskrun();
                        }
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

    /// Starts the server and serves until SIGINT or SIGTERM, then shuts down gracefully;
    /// SIGUSR1 reopens the access log, SIGUSR2 and SIGHUP hand the sockets to this program
    /// started again (a hot upgrade, after which this one drains and `serve` returns), as the
    /// `fcgi-uring` binary does. Blocks the calling thread (from inside `#[tokio::main]` too;
    /// there, [`serve`](crate::serve()) can be awaited instead).
    pub fn serve<M, A: App<M>>(self, app: A) -> Result<(), StartError> {
        let signals = Signals::listen().map_err(StartError::Thread)?;
        let mut handle = self.start(app)?;
        signals.answer(&mut handle, |_| {});
        handle.shutdown();
        Ok(())
    }
}

/// Whether a socket bound at `actual` is where `configured` asks (any port for port 0).
pub(crate) fn same_place(configured: &Addr, actual: &Addr) -> bool {
    match (configured, actual) {
        (Addr::Tcp(c), Addr::Tcp(a)) => c.ip() == a.ip() && (c.port() == 0 || c.port() == a.port()),
        (Addr::Unix(c), Addr::Unix(a)) => c == a,
        _ => false,
    }
}

/// `ring.defer_taskrun` is on and the kernel took it: what that costs, once per start.
fn warn_defer_taskrun() {
    tracing::warn!(
        "ring.defer_taskrun is on: a worker that went idle (a tick period with no IO) is woken \
         late for the next request, 9-16 ms on Linux 6.18; keep it off unless your kernel \
         measures otherwise (docs/tuning.md, defer_taskrun and coop_taskrun)"
    );
}

/// A setting the configuration changes but passed sockets keep (a hot upgrade reads the
/// configuration anew, and would otherwise drop the change without a word).
pub(crate) fn kept_over_config(
    key: &str,
    configured: impl std::fmt::Display,
    kept: impl std::fmt::Display,
) {
    tracing::warn!(
        "{key} is {configured} in the configuration, but the sockets passed to this process keep \
         {kept}: the new value needs a restart (stop, then start), not a reload"
    );
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
    /// The FastCGI listeners (what a hot upgrade hands over).
    listeners: Vec<Arc<OwnedFd>>,
    /// The listeners were made here or by an earlier process of this server (not systemd's):
    /// at a shutdown (unless handed over) they stop listening once the workers took what
    /// waits in their queues, and a UNIX socket's file is removed.
    owns_listeners: bool,
    /// A hot upgrade handed the sockets to a new process.
    handed_over: AtomicBool,
    upgrade_timeout: std::time::Duration,
    shutdown_timeout: std::time::Duration,
    /// Per worker, for the systemd watchdog.
    heartbeats: Vec<Arc<systemd::Heartbeat>>,
    watchdog: Option<systemd::Watchdog>,
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
            listeners: Vec::new(),
            owns_listeners: true,
            handed_over: AtomicBool::new(false),
            upgrade_timeout: std::time::Duration::from_secs(30),
            shutdown_timeout: std::time::Duration::from_secs(30),
            heartbeats: Vec::new(),
            watchdog: None,
        }
    }

    /// Every worker accepts: tells the process that started this one by a hot upgrade
    /// (`READY` on the passed stream) and systemd (`READY=1`), and starts the watchdog pings.
    fn report_ready(
        &mut self,
        ready: Option<std::os::unix::net::UnixStream>,
        watchdog: Option<std::time::Duration>,
    ) -> Result<(), StartError> {
        if let Some(mut stream) = ready {
            use std::io::Write;
            // The old process may have given up already (timeout): it keeps serving, and so
            // does this one, on the same sockets.
            if let Err(e) = stream.write_all(upgrade::READY) {
                tracing::warn!("could not report ready to the process upgraded: {e}");
            }
        }
        systemd::notify(&[sd_notify::NotifyState::Ready]);
        if let Some(period) = watchdog {
            self.watchdog = Some(
                systemd::Watchdog::start(period, self.heartbeats.clone())
                    .map_err(StartError::Thread)?,
            );
        }
        Ok(())
    }

    /// Hot upgrade: starts `command` (typically this binary, from its path, with the same
    /// arguments) with this server's listening sockets (FastCGI and admin) passed as in systemd
    /// socket activation, and waits up to `server.upgrade_timeout` for it to report ready.
    /// Returns its pid; this server then goes on accepting until [`ServerHandle::shutdown`],
    /// which stops accepting without closing the sockets the new process serves, finishes the
    /// requests in flight and closes each connection between requests. On an error, the new
    /// process is gone and this server serves on, untouched. How the handover works:
    /// docs/deploy/restarts.md.
    pub fn upgrade(&mut self, command: std::process::Command) -> Result<u32, UpgradeError> {
        if self.handed_over.load(Ordering::Acquire) {
            return Err(UpgradeError::AlreadyHandedOver);
        }
        let listeners = self
            .listeners
            .iter()
            .map(|fd| fd.try_clone())
            .collect::<io::Result<Vec<_>>>()
            .map_err(UpgradeError::Spawn)?;
        let admin = self.ops.admin_fd().map_err(UpgradeError::Spawn)?;
        let pid = upgrade::start(
            command,
            upgrade::Handover {
                listeners,
                admin,
                ours: self.owns_listeners,
            },
            self.upgrade_timeout,
            self.shutdown_timeout,
        )?;
        self.handed_over.store(true, Ordering::Release);
        self.ops.hand_over();
        systemd::notify(&[sd_notify::NotifyState::MainPid(pid)]);
        Ok(pid)
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
        let handed_over = self.handed_over.load(Ordering::Acquire);
        if !handed_over {
            if !self.threads.is_empty() {
                systemd::notify(&[sd_notify::NotifyState::Stopping]);
            }
            // After a hot upgrade the new process answers `/readyz` and the ping path: this
            // one's drain is not the service's.
            self.ops.drain();
        }
        // New connections are refused once the workers took what waits in the queues (rather
        // than queued for no one until the process exits, then reset), so a proxy tries
        // another backend at once.
        let refuse_new = self.owns_listeners && !handed_over;
        for stop in &self.stops {
            if refuse_new {
                stop.request_refusing_new();
            } else {
                stop.request();
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.watchdog = None;
        if let Addr::Unix(path) = &self.local
            && self.owns_listeners
            && !handed_over
        {
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
