//! HTTP/1.1 and HTTP/2 (h2c, prior knowledge) from the same per-core workers as FastCGI, for
//! comparing the protocols on equal terms: the same pinning, one current-thread tokio runtime
//! per worker, the same service built by the same factory on each worker thread.
//!
//! Each worker accepts on its own SO_REUSEPORT TCP listener (a UNIX listener is shared) with
//! tokio and serves every connection with hyper in a local task. Requests reach the service as
//! `http::Request<RequestBody>` (hyper's body streamed through, no copy, no channel); a service
//! error becomes a 500. A panicking handler ends its connection's task, not the worker.
//! Shutdown stops accepting, asks every connection to close gracefully and waits up to the
//! shutdown timeout.

use crate::body::RequestBody;
use crate::config::{Config, Protocol};
use crate::server::{ServerHandle, StartError, core_for, listener, pin_cores, worker_vanished};
use crate::service::BoxError;
use crate::service::HttpService;
use crate::worker::Stop;
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};
use std::time::Duration;

/// Starts the HTTP workers (`cfg.protocol` is `Http1` or `H2c`).
pub(super) fn start<F, S>(cfg: Config, make: F) -> Result<ServerHandle, StartError>
where
    F: Fn() -> S + Send + Sync + 'static,
    S: HttpService,
{
    let workers = cfg.worker_count();
    let listeners = listener::bind(
        &cfg.listen,
        workers,
        cfg.backlog,
        cfg.unix_mode,
        cfg.share_port,
    )
    .map_err(StartError::Listen)?;
    let cores = pin_cores(cfg.pin_workers);
    let make = Arc::new(make);
    // The FastCGI runtime's statistics do not apply to the HTTP workers: they stay empty.
    let mut handle = ServerHandle::starting(listeners.local.clone());
    for i in 0..workers {
        let listener = listeners
            .for_worker(i)
            .try_clone()
            .map_err(StartError::Listen)?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = Arc::new(Stop::default());
        let spec = Spec {
            core_id: core_for(&cores, i),
            listener,
            is_tcp: listeners.is_tcp,
            protocol: cfg.protocol,
            shutdown_timeout: cfg.shutdown_timeout,
            accept_retry: cfg.accept_retry,
            make: make.clone(),
            stop: stop.clone(),
            ready: ready_tx,
            worker: i,
        };
        let thread = std::thread::Builder::new()
            .name(format!("http-worker-{i}"))
            .spawn(move || run(spec))
            .map_err(StartError::Thread)?;
        handle.threads.push(thread);
        handle.stops.push(stop);
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(worker_vanished()),
        }
    }
    Ok(handle)
}

struct Spec<F> {
    core_id: Option<core_affinity::CoreId>,
    listener: OwnedFd,
    is_tcp: bool,
    protocol: Protocol,
    shutdown_timeout: Duration,
    accept_retry: Duration,
    make: Arc<F>,
    stop: Arc<Stop>,
    ready: mpsc::Sender<Result<(), StartError>>,
    worker: usize,
}

/// A listener of either family, registered with this worker's runtime.
enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    fn new(fd: OwnedFd, is_tcp: bool) -> io::Result<Listener> {
        Ok(if is_tcp {
            Listener::Tcp(tokio::net::TcpListener::from_std(fd.into())?)
        } else {
            Listener::Unix(tokio::net::UnixListener::from_std(fd.into())?)
        })
    }
}

fn run<F, S>(spec: Spec<F>)
where
    F: Fn() -> S + Send + Sync + 'static,
    S: HttpService,
{
    crate::server::pin_current_thread(spec.core_id);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = spec.ready.send(Err(StartError::Thread(e)));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    let listener = match rt.block_on(async { Listener::new(spec.listener, spec.is_tcp) }) {
        Ok(l) => l,
        Err(e) => {
            let _ = spec.ready.send(Err(StartError::Listen(e)));
            return;
        }
    };
    let service = match crate::server::serve::build_on_worker(&*spec.make, &rt, &local, spec.worker)
    {
        Ok(service) => service,
        Err(e) => {
            let _ = spec.ready.send(Err(e));
            return;
        }
    };
    let service = Adapter {
        service: Rc::new(RefCell::new(service)),
    };
    let _ = spec.ready.send(Ok(()));
    let serve = serve(
        listener,
        service,
        spec.protocol,
        spec.stop,
        spec.shutdown_timeout,
        spec.accept_retry,
    );
    local.block_on(&rt, serve);
}

async fn serve<S>(
    listener: Listener,
    service: Adapter<S>,
    protocol: Protocol,
    stop: Arc<Stop>,
    shutdown_timeout: Duration,
    accept_retry: Duration,
) where
    S: HttpService,
{
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            r = accept(&listener) => r,
            _ = stop.wait() => break,
        };
        match accepted {
            Ok(Accepted::Tcp(s)) => {
                let _ = s.set_nodelay(true);
                spawn_conn(&graceful, TokioIo::new(s), service.clone(), protocol);
            }
            Ok(Accepted::Unix(s)) => {
                spawn_conn(&graceful, TokioIo::new(s), service.clone(), protocol)
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(
                    "accept failed: {e}; accepting again in {} ms",
                    accept_retry.as_millis()
                );
                tokio::time::sleep(accept_retry).await;
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout: closing the remaining HTTP connections");
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Accepted::Tcp(s)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

fn spawn_conn<I, S>(graceful: &GracefulShutdown, io: TokioIo<I>, svc: Adapter<S>, p: Protocol)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
    S: HttpService,
{
    let done = |r: Result<(), hyper::Error>| {
        if let Err(e) = r {
            tracing::debug!("HTTP connection ended: {e}");
        }
    };
    if p == Protocol::H2c {
        let conn = http2::Builder::new(LocalExec).serve_connection(io, svc);
        let conn = graceful.watch(conn);
        tokio::task::spawn_local(async move { done(conn.await) });
    } else {
        let conn = http1::Builder::new().serve_connection(io, svc);
        let conn = graceful.watch(conn);
        tokio::task::spawn_local(async move { done(conn.await) });
    }
}

/// Runs hyper's HTTP/2 stream tasks on this worker (they are not `Send`).
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// hyper's service trait over the crate's: the request body adapted, errors answered with 500.
struct Adapter<S> {
    service: Rc<RefCell<S>>,
}

impl<S> Clone for Adapter<S> {
    fn clone(&self) -> Self {
        Adapter {
            service: self.service.clone(),
        }
    }
}

impl<S> hyper::service::Service<http::Request<Incoming>> for Adapter<S>
where
    S: HttpService,
{
    type Response = http::Response<Reply<S::ResBody>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>>>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let req = req.map(RequestBody::from_incoming);
        let service = self.service.clone();
        Box::pin(async move {
            let result = match poll_fn(|cx| service.borrow_mut().poll_ready(cx)).await {
                Ok(()) => {
                    let call = service.borrow_mut().call(req);
                    call.await
                }
                Err(e) => Err(e),
            };
            Ok(match result {
                Ok(response) => response.map(|body| Reply::Handler { body }),
                Err(e) => {
                    let e: BoxError = e.into();
                    tracing::error!("handler error: {e}");
                    let mut r = http::Response::new(Reply::Error {
                        text: Some(Bytes::from_static(b"Internal Server Error")),
                    });
                    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    r
                }
            })
        })
    }
}

pin_project_lite::pin_project! {
    /// The response body hyper sends: the handler's (its chunks as `Bytes`, free for `Bytes`
    /// chunks), or the text of a 500.
    #[project = ReplyProj]
    enum Reply<B> {
        Handler { #[pin] body: B },
        Error { text: Option<Bytes> },
    }
}

impl<B> Body for Reply<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ReplyProj::Handler { body } => body.poll_frame(cx).map(|f| {
                f.map(|f| {
                    f.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                        .map_err(Into::into)
                })
            }),
            ReplyProj::Error { text } => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Handler { body } => body.is_end_stream(),
            Reply::Error { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Handler { body } => body.size_hint(),
            Reply::Error { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}
