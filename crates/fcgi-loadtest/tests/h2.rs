//! The HTTP/2 client against a tiny in-test h2c server (hyper, HTTP/2 only, prior knowledge):
//! streams per connection, bodies, status and body checks, open loop (each run about a second).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fcgi_loadtest::{Config, Protocol, run};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Streams in flight now, and the most seen at once, over all connections; and a gate: no
/// handler answers before `gate` streams were in flight at once (0: no gate).
#[derive(Default)]
struct Gauge {
    gate: usize,
    open: AtomicBool,
    /// Wakes the handlers waiting at the gate when it opens.
    opened: tokio::sync::Notify,
    now: AtomicUsize,
    max: AtomicUsize,
    conns: AtomicUsize,
}

async fn handle(
    req: http::Request<Incoming>,
    gauge: Arc<Gauge>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let n = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
    gauge.max.fetch_max(n, Ordering::SeqCst);
    if n >= gauge.gate {
        gauge.open.store(true, Ordering::SeqCst);
        gauge.opened.notify_waiters();
    }
    // Waits for the gate (a fact the other streams make true). A `Notified` made before the
    // check is woken by a `notify_waiters` that comes after it.
    loop {
        let opened = gauge.opened.notified();
        if gauge.open.load(Ordering::SeqCst) {
            break;
        }
        opened.await;
    }
    // Kept: a latency floor the reports must show (p50 >= 2 ms); a loaded machine only adds.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    gauge.now.fetch_sub(1, Ordering::SeqCst);
    let (status, body) = match path.as_str() {
        "/hello" => (200, Bytes::from_static(b"Hello, World!")),
        "/echo" => (200, body),
        "/wrong" => (200, Bytes::from_static(b"Goodbye")),
        _ => (500, Bytes::from_static(b"oops")),
    };
    let mut r = http::Response::new(Full::new(body));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    Ok(r)
}

/// An h2c server on 127.0.0.1 in a background thread.
fn h2c_server() -> (SocketAddr, Arc<Gauge>) {
    h2c_server_gated(0)
}

/// An h2c server whose handlers wait until `gate` streams are in flight at once.
fn h2c_server_gated(gate: usize) -> (SocketAddr, Arc<Gauge>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let gauge = Arc::new(Gauge {
        gate,
        ..Gauge::default()
    });
    let g = gauge.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (s, _) = listener.accept().await.unwrap();
                g.conns.fetch_add(1, Ordering::SeqCst);
                let g = g.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |r| handle(r, g.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    (addr, gauge)
}

fn config(addr: SocketAddr, path: &str) -> Config {
    let mut cfg = Config::new(Protocol::H2, fcgi_uring::Addr::Tcp(addr), path);
    cfg.duration = Duration::from_secs(1);
    cfg.warmup = Duration::from_millis(200);
    cfg
}

#[test]
fn streams_per_connection_and_checks() {
    // Every slot of the client in flight at once, whatever the scheduling: the handlers wait
    // for all 16.
    let (addr, gauge) = h2c_server_gated(2 * 8);
    let mut cfg = config(addr, "/hello");
    cfg.conns = 2;
    cfg.depth = 8;
    cfg.expect_body = Some("Hello, World!".into());
    let r = run(&cfg).unwrap();
    assert!(r.requests > 100, "{}", r.to_text());
    assert_eq!(r.errors, 0, "{}", r.to_text());
    assert!(r.p50_us >= 2000 && r.p50_us <= r.p99_us, "{}", r.to_text());
    assert_eq!(gauge.conns.load(Ordering::SeqCst), 2);
    // 2 connections x 8 streams, never more.
    assert_eq!(gauge.max.load(Ordering::SeqCst), 16);
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["protocol"], "h2");
    assert_eq!(json["depth"], 8);
}

#[test]
fn post_bodies_larger_than_the_window() {
    let (addr, _) = h2c_server();
    let mut cfg = config(addr, "/echo");
    cfg.conns = 1;
    cfg.depth = 4;
    cfg.body_bytes = 100_000; // > the 65535-byte initial flow-control window
    cfg.expect_body = Some("x".repeat(100_000));
    let r = run(&cfg).unwrap();
    assert!(r.requests > 10, "{}", r.to_text());
    assert_eq!(r.errors, 0, "{}", r.to_text());
}

#[test]
fn bad_status_and_body_are_errors() {
    let (addr, _) = h2c_server();
    let mut cfg = config(addr, "/fail");
    cfg.expect_body = Some("Hello, World!".into());
    let r = run(&cfg).unwrap();
    assert_eq!(r.requests, 0);
    assert!(r.errors_by_kind.status > 0, "{}", r.to_text());
    cfg.path = "/wrong".into();
    let r = run(&cfg).unwrap();
    assert!(
        r.errors_by_kind.body > 0 && r.requests == 0,
        "{}",
        r.to_text()
    );
}

#[test]
fn open_loop_keeps_the_rate() {
    let (addr, _) = h2c_server();
    let mut cfg = config(addr, "/hello");
    cfg.conns = 2;
    cfg.depth = 4;
    cfg.rate = Some(500.0);
    let r = run(&cfg).unwrap();
    assert_eq!(r.errors, 0);
    assert!((450..=550).contains(&r.requests), "{}", r.to_text());
}

#[test]
fn connect_failures_are_counted() {
    // A port nothing listens on, below the ephemeral range so no other test's bind(:0) takes it.
    let port =
        std::net::SocketAddr::from(([127, 0, 0, 1], fcgi_loadtest::child::free_port().unwrap()));
    let r = run(&config(port, "/hello")).unwrap();
    assert_eq!(r.requests, 0);
    assert!(r.errors_by_kind.connect > 0, "{}", r.to_text());
}
