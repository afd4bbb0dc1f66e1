//! The HTTP/2 client (h2c with prior knowledge): per worker thread, one current-thread tokio
//! runtime running the `h2` crate (hyper's HTTP/2) over N connections with S concurrent
//! streams each (`--depth`), closed or open loop, with the same checks and statistics as the
//! epoll engine.
//!
//! Each stream slot is a local task that sends a request, waits for the whole response, checks
//! it and starts the next one. Open loop: the slots of a connection share its [`Pacer`]; a free
//! slot claims the next due time, waits for it (if it is still ahead) and counts the latency
//! from it, so a stall shows in every request due during it. Tokio's timer has a 1 ms
//! granularity: a paced request may leave up to 1 ms after its due time, and that lateness is
//! counted in its latency (it is the client's, and it errs on the side of worse numbers).

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fcgi_uring::Addr;
use h2::client::SendRequest;

use crate::engine::Progress;
use crate::response::{Expect, Failure};
use crate::schedule::Pacer;
use crate::stats::ThreadStats;
use crate::sys;

/// Wait before retrying a connection that could not be made.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// Stream and connection flow-control windows the client advertises: 2^30 - 1, as h2load's
/// defaults (`-w 30 -W 30`), so that the server never waits for a WINDOW_UPDATE and the
/// client sends almost none.
const WINDOW: u32 = (1 << 30) - 1;

/// What all connections of an HTTP/2 run share.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: Addr,
    pub method: http::Method,
    /// `http://HOST/PATH`: h2 sends it as :scheme, :authority and :path.
    pub uri: http::Uri,
    pub body: Bytes,
    pub expect: Expect,
    /// Concurrent streams per connection.
    pub depth: usize,
    /// Start of the measured window, ns since `base`.
    pub window_start: u64,
    /// End of the run and of the measured window, ns since `base`.
    pub window_end: u64,
}

impl Plan {
    fn request(&self) -> http::Request<()> {
        let mut req = http::Request::new(());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("fcgi-loadtest"),
        );
        h.insert(http::header::ACCEPT, http::HeaderValue::from_static("*/*"));
        if !self.body.is_empty() || self.method == http::Method::POST {
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(http::header::CONTENT_LENGTH, self.body.len().into());
        }
        req
    }
}

/// The state the tasks of one worker share (one thread: no locks).
struct Shared {
    plan: Arc<Plan>,
    base: Instant,
    stats: RefCell<ThreadStats>,
    completed: Cell<u64>,
}

impl Shared {
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn in_window(&self, now: u64) -> bool {
        now >= self.plan.window_start && now < self.plan.window_end
    }

    fn finish(&self, due: u64, result: Result<(), Failure>) {
        let now = self.now();
        self.completed.set(self.completed.get() + 1);
        if !self.in_window(now) {
            return;
        }
        let mut stats = self.stats.borrow_mut();
        match result {
            Ok(()) => stats.record_ok(now.saturating_sub(due)),
            Err(f) => stats.errors.count(f),
        }
    }

    fn fail(&self, failure: Failure) {
        if self.in_window(self.now()) {
            self.stats.borrow_mut().errors.count(failure);
        }
    }
}

/// Runs one worker's connections (`pacers.len()` of them; `None`: closed loop) until the end of
/// the window, on the calling thread, and returns what was measured in the window.
pub fn run_worker(
    plan: Arc<Plan>,
    base: Instant,
    pacers: Vec<Option<Pacer>>,
    progress: &Progress,
) -> io::Result<ThreadStats> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let shared = Rc::new(Shared {
        plan: plan.clone(),
        base,
        stats: RefCell::new(ThreadStats::new()),
        completed: Cell::new(0),
    });
    let at = |ns: u64| tokio::time::Instant::from_std(base + Duration::from_nanos(ns));
    let cpu = local.block_on(&rt, async {
        for pacer in pacers {
            let pacer = pacer.map(|p| Rc::new(RefCell::new(p)));
            tokio::task::spawn_local(connection(shared.clone(), pacer));
        }
        // Progress every 100 ms; the client's CPU time over the window.
        let mut cpu_at_start = None;
        loop {
            let now = shared.now();
            if cpu_at_start.is_none() && now >= plan.window_start {
                cpu_at_start = Some(sys::thread_cpu_time());
            }
            progress
                .completed
                .store(shared.completed.get(), Ordering::Relaxed);
            if now >= plan.window_end {
                break;
            }
            let mut next = plan.window_end.min(now + 100_000_000);
            if cpu_at_start.is_none() {
                next = next.min(plan.window_start);
            }
            tokio::time::sleep_until(at(next)).await;
        }
        cpu_at_start.map_or(Duration::ZERO, |c| sys::thread_cpu_time().saturating_sub(c))
    });
    // Ends every task (their connections close with them).
    drop(local);
    let mut stats = shared.stats.replace(ThreadStats::new());
    stats.cpu = cpu;
    Ok(stats)
}

/// One connection, reconnected whenever it fails, with `depth` stream slots.
async fn connection(shared: Rc<Shared>, pacer: Option<Rc<RefCell<Pacer>>>) {
    loop {
        let client = match handshake(&shared.plan.addr).await {
            Ok(c) => c,
            Err(_) => {
                shared.fail(Failure::Connect);
                tokio::time::sleep(CONNECT_BACKOFF).await;
                continue;
            }
        };
        let slots: Vec<_> = (0..shared.plan.depth)
            .map(|_| tokio::task::spawn_local(slot(shared.clone(), client.clone(), pacer.clone())))
            .collect();
        drop(client);
        for s in slots {
            let _ = s.await;
        }
        // Every slot ended: the connection is gone.
    }
}

async fn handshake(addr: &Addr) -> Result<SendRequest<Bytes>, Box<dyn std::error::Error>> {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .enable_push(false);
    let (client, conn) = match addr {
        Addr::Tcp(sa) => {
            let s = tokio::net::TcpStream::connect(sa).await?;
            s.set_nodelay(true)?;
            let (client, conn) = builder.handshake(s).await?;
            (client, Box::pin(conn) as ConnFuture)
        }
        Addr::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path).await?;
            let (client, conn) = builder.handshake(s).await?;
            (client, Box::pin(conn) as ConnFuture)
        }
    };
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(client)
}

type ConnFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), h2::Error>>>>;

/// One stream slot: requests one after the other until the connection fails.
async fn slot(
    shared: Rc<Shared>,
    mut client: SendRequest<Bytes>,
    pacer: Option<Rc<RefCell<Pacer>>>,
) {
    let plan = shared.plan.clone();
    // Built once: each request sends a clone of it (no header map to fill per request).
    let head = plan.request();
    // The response body, when one is expected, collected in a buffer reused across requests.
    let mut got = Vec::new();
    loop {
        let due = match &pacer {
            Some(p) => {
                let due = p.borrow_mut().claim();
                if due > shared.now() {
                    let at = shared.base + Duration::from_nanos(due);
                    tokio::time::sleep_until(at.into()).await;
                }
                due
            }
            None => shared.now(),
        };
        match exchange(&plan, &head, &mut client, &mut got).await {
            Ok(result) => shared.finish(due, result),
            Err(failure) => {
                // The stream or the connection failed: count it, drop the connection.
                shared.finish(due, Err(failure));
                return;
            }
        }
    }
}

/// One request and its whole response: `Ok(check result)`, or `Err` when the stream or the
/// connection failed (the connection is then replaced).
async fn exchange(
    plan: &Plan,
    head: &http::Request<()>,
    client: &mut SendRequest<Bytes>,
    got: &mut Vec<u8>,
) -> Result<Result<(), Failure>, Failure> {
    std::future::poll_fn(|cx| client.poll_ready(cx))
        .await
        .map_err(failure)?;
    let end = plan.body.is_empty();
    let (response, mut send) = client.send_request(head.clone(), end).map_err(failure)?;
    if !end {
        send.send_data(plan.body.clone(), true).map_err(failure)?;
    }
    let response = response.await.map_err(failure)?;
    let status = response.status();
    let mut body = response.into_body();
    got.clear();
    // `is_end_stream`: the stream's END_STREAM has arrived and its data has all been taken;
    // checking it spares the last poll of the body (one more lock of the connection state).
    while !body.is_end_stream() {
        let Some(chunk) = body.data().await else {
            break;
        };
        let chunk = chunk.map_err(failure)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if plan.expect.body.is_some() {
            got.extend_from_slice(&chunk);
        }
    }
    if status != http::StatusCode::OK {
        return Ok(Err(Failure::Status(status.as_u16())));
    }
    Ok(plan.expect.check_body(got, false))
}

fn failure(e: h2::Error) -> Failure {
    if e.is_io() || e.is_go_away() {
        Failure::Io
    } else {
        Failure::Protocol
    }
}
