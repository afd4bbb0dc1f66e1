//! The admin listener's thread: accepts on TCP or a UNIX socket, serves each connection with
//! hyper's HTTP/1.1 server, routes the few endpoints, and stops when its handle is dropped.

use super::exposition::{self, Format};
use super::sniff::{FirstBytes, Tap};
use super::status::{History, render_status};
use super::{CONN_LIFETIME, HEAD_TIMEOUT, MAX_CONNS, MAX_HEAD, Readiness, Sources};
use bytes::Bytes;
use fcgi_proto::addr::Addr;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

/// What hyper does not send itself: the answer to a client that did not send its head in time.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 40\r\n\r\n\
request head not received in 5 seconds\r\n";

/// A bound admin socket, not yet served.
#[derive(Debug)]
pub(crate) enum Bound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

impl Bound {
    /// Binds `addr` (a stale UNIX socket file is replaced, a live one refused).
    pub fn bind(addr: &Addr) -> io::Result<Bound> {
        match addr {
            Addr::Tcp(sa) => {
                let l = std::net::TcpListener::bind(sa)?;
                l.set_nonblocking(true)?;
                Ok(Bound::Tcp(l))
            }
            Addr::Unix(path) => {
                crate::server::listener::remove_stale_socket(path)?;
                let l = std::os::unix::net::UnixListener::bind(path)?;
                l.set_nonblocking(true)?;
                Ok(Bound::Unix(l, path.clone()))
            }
        }
    }

    /// A listener passed by systemd or a hot upgrade (its UNIX socket file is left in place at
    /// the end: it belongs to whoever passed it).
    pub fn from_passed(l: crate::server::passed::Listener) -> io::Result<Bound> {
        use crate::server::passed::Listener;
        Ok(match l {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Bound::Tcp(l)
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                let addr = l.local_addr()?;
                let path = addr.as_pathname().map(Path::to_path_buf).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "passed admin socket has no path",
                    )
                })?;
                Bound::Unix(l, path)
            }
        })
    }

    /// A duplicate of the socket, to hand over in a hot upgrade.
    pub fn try_clone_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        Ok(match self {
            Bound::Tcp(l) => l.try_clone()?.into(),
            Bound::Unix(l, _) => l.try_clone()?.into(),
        })
    }

    /// The address bound (the real port when port 0 was asked).
    pub fn local_addr(&self) -> io::Result<Addr> {
        Ok(match self {
            Bound::Tcp(l) => Addr::Tcp(l.local_addr()?),
            Bound::Unix(_, path) => Addr::Unix(path.clone()),
        })
    }
}

/// The running admin listener; dropping it stops the thread (connections in progress are cut).
#[derive(Debug)]
pub(crate) struct AdminServer {
    local: Addr,
    /// Remove a UNIX socket's file when stopped (not when the socket was passed or handed over).
    remove_file: bool,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Serves `bound` on a new thread named `fcgi-admin`.
    pub fn start(bound: Bound, sources: Arc<Sources>) -> io::Result<AdminServer> {
        let local = bound.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("fcgi-admin".to_owned())
            .spawn(move || rt.block_on(run(bound, sources, stopped)))?;
        Ok(AdminServer {
            local,
            remove_file: true,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> &Addr {
        &self.local
    }

    /// Leaves a UNIX socket's file in place when stopped.
    pub fn keep_file(&mut self) {
        self.remove_file = false;
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Addr::Unix(path) = &self.local
            && self.remove_file
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn run(bound: Bound, sources: Arc<Sources>, mut stopped: oneshot::Receiver<()>) {
    let history = Arc::new(Mutex::new(History::new(sources.workers.len())));
    let sampler = tokio::spawn(sample_every_second(sources.clone(), history.clone()));
    let ctx = Arc::new(Ctx {
        sources,
        history,
        conns: AtomicUsize::new(0),
        wrong_port_logged: AtomicU64::new(0),
    });
    let result = match bound {
        Bound::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                let accept = || async { l.accept().await.map(|(s, _)| s) };
                accept_loop(accept, ctx, &mut stopped).await
            }
            Err(e) => Err(e),
        },
        Bound::Unix(l, _) => match tokio::net::UnixListener::from_std(l) {
            Ok(l) => {
                let accept = || async { l.accept().await.map(|(s, _)| s) };
                accept_loop(accept, ctx, &mut stopped).await
            }
            Err(e) => Err(e),
        },
    };
    sampler.abort();
    if let Err(e) = result {
        tracing::error!("admin listener stopped: {e}");
    }
}

/// Shared by the admin thread's tasks.
struct Ctx {
    sources: Arc<Sources>,
    history: Arc<Mutex<History>>,
    /// Connections being served.
    conns: AtomicUsize,
    /// When a FastCGI client on this listener was last reported (seconds since start).
    wrong_port_logged: AtomicU64,
}

impl Ctx {
    /// Logs, at most once a minute, that a FastCGI client (a proxy pointed at the wrong port)
    /// connected to the admin listener.
    fn wrong_port_warning(&self) {
        let now = self.sources.started_at.elapsed().as_secs() + 1;
        let last = self.wrong_port_logged.load(Ordering::Relaxed);
        if last != 0 && now < last + 60 {
            return;
        }
        self.wrong_port_logged.store(now, Ordering::Relaxed);
        tracing::warn!(
            "a FastCGI client connected to the admin listener (admin.listen), which speaks HTTP \
             (/metrics, /healthz, /readyz, /status): point the proxy's FastCGI address at \
             server.listen instead"
        );
    }
}

async fn sample_every_second(sources: Arc<Sources>, history: Arc<Mutex<History>>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sources.ask_workers();
        let served: Vec<u64> = sources
            .workers
            .iter()
            .map(|w| w.stats.snapshot().get(crate::Counter::Requests))
            .collect();
        if let Ok(mut h) = history.lock() {
            h.push(&served);
        }
    }
}

async fn accept_loop<S, A, F>(
    mut accept: F,
    ctx: Arc<Ctx>,
    stopped: &mut oneshot::Receiver<()>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + AsFd + Unpin + Send + 'static,
    F: FnMut() -> A,
    A: Future<Output = io::Result<S>>,
{
    loop {
        let conn = tokio::select! {
            _ = &mut *stopped => return Ok(()),
            c = accept() => c,
        };
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: pause instead of spinning.
                tracing::warn!("admin listener: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if ctx.conns.load(Ordering::Relaxed) >= MAX_CONNS {
            continue; // dropped: closed at once
        }
        ctx.conns.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            serve_conn(stream, &ctx).await;
            ctx.conns.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_conn<S>(stream: S, ctx: &Arc<Ctx>)
where
    S: AsyncRead + AsyncWrite + AsFd + Unpin + Send + 'static,
{
    // A second descriptor of the socket, to answer 408 after hyper gave up on the head.
    let spare = stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::fs::File::from);
    let first = Arc::new(FirstBytes::default());
    let stream = Tap {
        inner: stream,
        first: first.clone(),
    };
    let ctx2 = ctx.clone();
    let service = hyper::service::service_fn(move |req| {
        let response = route(&ctx2, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    let Ok(Err(e)) = tokio::time::timeout(CONN_LIFETIME, conn).await else {
        return;
    };
    if first.looks_like_fastcgi() {
        ctx.wrong_port_warning();
    } else if e.is_timeout()
        && let Some(mut spare) = spare
    {
        // The socket is non-blocking: a peer that reads nothing just misses it.
        let _ = spare.write_all(REQUEST_TIMEOUT);
    }
}

/// A text/plain response.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

const ENDPOINTS: &str = "endpoints: /metrics /healthz /readyz /status /status?human\n";

fn route(ctx: &Ctx, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} not allowed: admin endpoints answer GET and HEAD\n",
                req.method()
            ),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if has_body(req) {
        let mut r = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "admin endpoints take no request body\n",
        );
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return r;
    }
    let s = &ctx.sources;
    match req.uri().path() {
        "/metrics" => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let mut r = text(StatusCode::OK, exposition::render(&s.scrape(), format));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(format.content_type()),
            );
            r
        }
        "/healthz" => match s.stalled() {
            None => text(StatusCode::OK, "ok\n"),
            Some((worker, d)) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "stalled: worker {worker} has not turned its loop for {:.1} s (a handler \
                     blocking its thread?)\n",
                    d.as_secs_f64()
                ),
            ),
        },
        "/readyz" => match s.health.get() {
            Readiness::Ready => text(StatusCode::OK, "ready\n"),
            other => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}\n", other.as_str()),
            ),
        },
        "/status" => {
            let human = req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|p| p == "human" || p.starts_with("human="))
            });
            let history = ctx.history.lock().ok().map(|h| h.clone());
            let (body, json) = render_status(s, history.as_ref(), human);
            let mut r = text(StatusCode::OK, body);
            if json {
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
            }
            r
        }
        "/" => text(StatusCode::OK, ENDPOINTS),
        path => text(
            StatusCode::NOT_FOUND,
            format!("not found: {path}; {ENDPOINTS}"),
        ),
    }
}

/// Whether the request says it carries a body.
fn has_body(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}
