//! What a server serves and how it waits for the end: an [`App`] (one service cloned onto each
//! worker, or a factory run on each worker), the per-request adaptation the runtime applies to
//! it, and the [`serve`] future with its graceful shutdown.
//!
//! Guarantees:
//! - Each worker gets its own service, built on the worker's thread **inside the worker's tokio
//!   runtime and local task set**, before the worker reports ready: layers that spawn a task when
//!   built (tower's `Buffer`) work in a factory, and a factory that panics stops the start with
//!   [`StartError::App`] instead of failing requests later. A clone of a service is
//!   made the same way, so state behind an `Arc` in it is shared by every worker, while state a
//!   factory creates is one per worker.
//! - Nothing here builds a tokio runtime on the caller's thread: [`Server::serve`] may be called
//!   from inside `#[tokio::main]`, and the [`serve`] future runs on the caller's runtime.
//! - [`Server::serve`] and [`serve`] (without [`Serve::with_graceful_shutdown`]) answer the
//!   signals operators send the `fcgi-uring` binary: SIGINT and SIGTERM shut down gracefully,
//!   SIGUSR1 reopens the access log ([`ServerHandle::reopen_logs`]), SIGUSR2 and SIGHUP start this
//!   program again with its arguments and hand it the listening sockets
//!   ([`ServerHandle::upgrade`]; this process then drains and `serve` returns), with the
//!   [`Signals`](super::Signals) the binary uses. Left to their
//!   default, the last three would end the process with every request in flight. They are
//!   listened for before the first worker starts, so a signal that comes during startup is
//!   acted on once the server has started.

use super::signals::{Action, SignalStreams, upgrade_on_signal};
use super::{Server, ServerHandle, StartError};
use crate::cgi::TrustedParams;
use crate::service::{HttpService, Request};
use std::future::{Future, IntoFuture};
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

/// What [`Server::start`], [`Server::serve`] and [`serve`] accept: a service (an axum `Router`,
/// any `Clone` tower service), cloned once for each worker, or a factory `Fn() -> service`,
/// called once on each worker.
///
/// State inside a cloned service (an axum `State` holding an `Arc`) is shared by all workers;
/// state a factory creates is **per worker** (one per core), which is what a thread-per-core
/// server is for: no locks between cores. Either way the service is built on its worker, inside
/// the worker's tokio runtime.
///
/// `M` only tells the two kinds apart; it is inferred.
pub trait App<M>: Send + 'static {
    /// The service each worker runs.
    type Service: HttpService;

    /// The function each worker calls once to get its service.
    #[doc(hidden)]
    fn into_factory(self) -> Box<dyn Fn() -> Self::Service + Send + Sync>;
}

/// Marks an [`App`] that is a factory `Fn() -> service`.
#[doc(hidden)]
#[derive(Debug)]
pub enum ByFactory {}

/// Marks an [`App`] that is a service cloned for each worker.
#[doc(hidden)]
#[derive(Debug)]
pub enum ByClone {}

impl<F, S> App<(ByFactory, S)> for F
where
    F: Fn() -> S + Send + Sync + 'static,
    S: HttpService,
{
    type Service = S;

    fn into_factory(self) -> Box<dyn Fn() -> S + Send + Sync> {
        Box::new(self)
    }
}

impl<S> App<ByClone> for S
where
    S: HttpService + Clone + Send,
{
    type Service = S;

    fn into_factory(self) -> Box<dyn Fn() -> S + Send + Sync> {
        // Locked once per worker as it starts; `Mutex` makes a `Send` service `Sync`.
        let service = Mutex::new(self);
        Box::new(move || {
            service
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }
}

/// The factory the workers call: each call builds the app's own service (on the worker,
/// inside its runtime: see [`build_on_worker`]) wrapped in the per-request adaptations.
pub(crate) fn factory<M, A: App<M>>(
    app: A,
    config: &crate::Config,
) -> impl Fn() -> AppService<A::Service> + Send + Sync + 'static {
    let make = app.into_factory();
    let strip_script_name = config.strip_script_name();
    move || AppService {
        service: make(),
        strip_script_name,
    }
}

/// Calls a worker's service factory inside the worker's runtime and local task set (so that
/// `tokio::spawn` and `spawn_local` work in it; the tasks run once the worker loop does). A panic
/// in the factory is caught and returned as [`StartError::App`] naming the worker.
pub(crate) fn build_on_worker<F, S>(
    make: &F,
    rt: &tokio::runtime::Runtime,
    local: &tokio::task::LocalSet,
    worker: usize,
) -> Result<S, StartError>
where
    F: Fn() -> S,
{
    let _rt = rt.enter();
    let _local = local.enter();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(make)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        StartError::App { worker, message }
    })
}

/// A worker's service: the app's own, with the runtime's per-request adaptations (SCRIPT_NAME
/// stripped when asked; axum's `ConnectInfo` with feature `axum`).
pub(crate) struct AppService<S> {
    service: S,
    strip_script_name: bool,
}

impl<S: HttpService> AppService<S> {
    /// Adapts the request where it lies (it is a few hundred bytes to move).
    fn adapt(&self, request: &mut Request) {
        #[cfg(feature = "axum")]
        insert_connect_info(request);
        if self.strip_script_name {
            strip_script_name(request);
        }
    }
}

impl<S: HttpService> tower_service::Service<Request> for AppService<S> {
    type Response = http::Response<S::ResBody>;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> S::Future {
        self.adapt(&mut request);
        self.service.call(request)
    }
}

/// Removes SCRIPT_NAME from the start of the path (see [`crate::cgi::mount`]); with feature
/// `axum`, the URI before the change is kept as axum's `OriginalUri`.
fn strip_script_name(request: &mut Request) {
    let stripped = request
        .extensions()
        .get::<TrustedParams>()
        .and_then(|t| t.script_name())
        .and_then(|script| crate::cgi::mount::strip_script_name(request.uri(), script));
    let Some(uri) = stripped else {
        return;
    };
    let _original = std::mem::replace(request.uri_mut(), uri);
    #[cfg(feature = "axum")]
    request
        .extensions_mut()
        .insert(axum::extract::OriginalUri(_original));
}

/// axum's `ConnectInfo<SocketAddr>` from REMOTE_ADDR and REMOTE_PORT (port 0 when the proxy
/// sent none); nothing when REMOTE_ADDR is not an IP address (a UNIX-socket client).
#[cfg(feature = "axum")]
fn insert_connect_info(request: &mut Request) {
    let Some(trusted) = request.extensions().get::<TrustedParams>() else {
        return;
    };
    let Some(ip) = trusted.remote_addr() else {
        return;
    };
    let addr = std::net::SocketAddr::new(ip, trusted.remote_port().unwrap_or(0));
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
}

/// Where [`serve`] listens: an address (`"127.0.0.1:9000"`, `"unix:/run/app.sock"`), or a
/// configured [`Server`].
pub trait IntoServer {
    /// The server, or why the address is not one.
    fn into_server(self) -> io::Result<Server>;
}

impl IntoServer for &str {
    fn into_server(self) -> io::Result<Server> {
        Ok(Server::bind(self)?)
    }
}

impl IntoServer for String {
    fn into_server(self) -> io::Result<Server> {
        self.as_str().into_server()
    }
}

impl IntoServer for Server {
    fn into_server(self) -> io::Result<Server> {
        Ok(self)
    }
}

impl IntoServer for crate::Config {
    fn into_server(self) -> io::Result<Server> {
        Ok(Server::new(self))
    }
}

/// Serves `app` on `listen` until SIGINT or SIGTERM (or the signal given to
/// [`Serve::with_graceful_shutdown`]), then shuts down gracefully: the FastCGI counterpart of
/// `axum::serve(listener, app)`, to be awaited on any tokio runtime. SIGUSR1 reopens the access
/// log and SIGUSR2 or SIGHUP hot-upgrades, as for the `fcgi-uring` binary (see the module doc).
///
/// ```no_run
/// # async fn run(app: axum::Router) -> std::io::Result<()> {
/// fcgi_uring::serve("127.0.0.1:9000", app).await?;
/// # Ok(()) }
/// ```
///
/// The workers run on their own pinned threads with their own runtimes; the caller's runtime
/// only waits. Output: the start error (as an `io::Error`, kind `AddrInUse` for a port already
/// served), or `Ok` after the shutdown.
pub fn serve<M, A: App<M>>(listen: impl IntoServer, app: A) -> Serve<M, A> {
    Serve {
        server: listen.into_server(),
        app,
        shutdown: None,
        _kind: PhantomData,
    }
}

/// The future of [`serve`] (start it with `.await`).
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve<M, A> {
    server: io::Result<Server>,
    app: A,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    _kind: PhantomData<fn() -> M>,
}

impl<M, A> std::fmt::Debug for Serve<M, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl<M, A: App<M>> Serve<M, A> {
    /// Shuts down when `signal` completes instead of at SIGINT/SIGTERM, as
    /// `axum::serve(..).with_graceful_shutdown(signal)`: accepting stops, requests in flight
    /// finish (up to `server.shutdown_timeout`), then the future completes. Every signal is then
    /// left to the application: SIGUSR1, SIGUSR2 and SIGHUP end the process unless it handles
    /// them ([`Server::start`] gives the [`ServerHandle`] whose `reopen_logs` and `upgrade` the
    /// binary calls for them).
    pub fn with_graceful_shutdown<G>(mut self, signal: G) -> Serve<M, A>
    where
        G: Future<Output = ()> + Send + 'static,
    {
        self.shutdown = Some(Box::pin(signal));
        self
    }
}

impl<M, A: App<M>> IntoFuture for Serve<M, A> {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        let Serve {
            server,
            app,
            shutdown,
            _kind,
        } = self;
        Box::pin(async move {
            let server = server?;
            let mut signals = match shutdown {
                None => Some(SignalStreams::listen()?),
                Some(_) => None,
            };
            let exe = super::signals::current_exe();
            // Starting blocks until every worker accepts: not on the caller's runtime thread.
            let mut handle = tokio::task::spawn_blocking(move || server.start(app))
                .await
                .map_err(io::Error::other)??;
            match (shutdown, signals.as_mut()) {
                (Some(signal), _) => signal.await,
                (None, Some(signals)) => loop {
                    match signals.recv().await {
                        Action::Stop => break,
                        Action::ReopenLogs => handle.reopen_logs(),
                        Action::Upgrade(name) => {
                            let exe = exe.clone();
                            let (h, upgraded) = tokio::task::spawn_blocking(move || {
                                let upgraded =
                                    upgrade_on_signal(&mut handle, &exe, name, &mut |_| {});
                                (handle, upgraded)
                            })
                            .await
                            .map_err(io::Error::other)?;
                            handle = h;
                            if upgraded {
                                break;
                            }
                        }
                    }
                },
                (None, None) => {}
            }
            shut_down(handle).await
        })
    }
}

/// Shuts the server down without blocking the caller's runtime thread.
async fn shut_down(handle: ServerHandle) -> io::Result<()> {
    tokio::task::spawn_blocking(move || handle.shutdown())
        .await
        .map_err(io::Error::other)
}

/// Why a server could not start, as an `io::Error` of the same kind where there is one
/// (`AddrInUse` for a port already served), so that `main() -> io::Result<()>` can use `?`.
impl From<StartError> for io::Error {
    fn from(e: StartError) -> io::Error {
        let kind = match &e {
            StartError::Listen(inner) | StartError::Thread(inner) => inner.kind(),
            _ => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, e)
    }
}
