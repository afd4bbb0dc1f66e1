//! Switching a real axum app from `axum::serve` to fcgi-uring: what an app expects of its
//! server holds (issue 18, items 2-7 and 9; item 1 is in `axum_tokio_main.rs`, item 8 in
//! `axum_mount.rs`).

mod common;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::routing;
use common::proxy::free_port;
use common::*;
use fcgi_client::RequestSpec;
use fcgi_uring::{Config, Server, ServerHandle};
use std::future::IntoFuture;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

fn config(workers: usize) -> Config {
    test_config()
        .into_builder()
        .workers(workers)
        .build()
        .unwrap()
}

fn counter_app(hits: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/count",
            routing::get(|State(hits): State<Arc<AtomicUsize>>| async move {
                (hits.fetch_add(1, Ordering::SeqCst) + 1).to_string()
            }),
        )
        .with_state(hits)
}

/// Item 6: `.start(router)` takes the Router itself, cloned per worker, so state behind an
/// `Arc` is one state for the whole server: 16 requests on 16 connections spread over two
/// workers count 1..=16, with no number seen twice.
#[test]
fn a_router_is_served_as_is_and_its_state_is_shared_by_every_worker() {
    let hits = Arc::new(AtomicUsize::new(0));
    let server = Server::new(config(2))
        .start(counter_app(hits.clone()))
        .unwrap();
    let mut seen: Vec<usize> = (0..16)
        .map(|_| {
            let r = get(server.local_addr(), "/count");
            assert_eq!(r.status, 200);
            String::from_utf8(r.body).unwrap().parse().unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=16).collect::<Vec<_>>());
    assert_eq!(hits.load(Ordering::SeqCst), 16);
}

/// Item 6, the other kind: a factory is called once on each worker, so what it creates is per
/// worker. Two workers: both services are built before `start` returns, and requests never
/// build another.
#[test]
fn a_factory_is_called_once_per_worker() {
    let calls = Arc::new(AtomicUsize::new(0));
    let made = calls.clone();
    let server = Server::new(config(2))
        .start(move || {
            made.fetch_add(1, Ordering::SeqCst);
            counter_app(Arc::new(AtomicUsize::new(0)))
        })
        .unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "built before start returned"
    );
    let addr = server.local_addr().clone();
    for _ in 0..8 {
        assert_eq!(get(&addr, "/count").status, 200);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A factory that panics stops the start with an error naming the worker and the panic; no
/// worker is left serving 500s.
#[test]
fn a_panicking_factory_is_a_start_error() {
    let err = Server::new(config(2))
        .start(|| -> Router { panic!("no database configured") })
        .expect_err("a panicking factory cannot start");
    match &err {
        fcgi_uring::StartError::App { worker, message } => {
            assert_eq!(*worker, 0);
            assert_eq!(message, "no database configured");
        }
        other => panic!("expected StartError::App, got {other:?}"),
    }
    assert!(err.to_string().contains("no database configured"), "{err}");
}

/// Item 2: the factory runs inside the worker's runtime, so axum's documented rate limiting
/// (`BufferLayer` spawns its worker task when built) can be built in it.
#[test]
fn a_factory_runs_inside_the_worker_runtime() {
    let in_runtime = Arc::new(AtomicBool::new(false));
    let seen = in_runtime.clone();
    let server = Server::new(config(1))
        .start(move || {
            seen.store(
                tokio::runtime::Handle::try_current().is_ok(),
                Ordering::SeqCst,
            );
            let limits = tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|e: tower::BoxError| async move {
                    (StatusCode::TOO_MANY_REQUESTS, e.to_string())
                }))
                .layer(tower::buffer::BufferLayer::new(1024))
                .layer(tower::limit::RateLimitLayer::new(
                    1000,
                    Duration::from_secs(1),
                ));
            Router::new()
                .route("/", routing::get(|| async { "limited" }))
                .layer(limits)
        })
        .expect("a factory that spawns when built starts");
    let r = get(server.local_addr(), "/");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"limited"[..]));
    assert!(in_runtime.load(Ordering::SeqCst));
}

fn framing_app() -> Router {
    Router::new()
        .route(
            "/stream",
            routing::get(|| async {
                let chunks = (0..4).map(|i| Ok::<_, io::Error>(vec![b'a' + i; 1024]));
                Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route(
            "/no-content",
            routing::get(|| async { (StatusCode::NO_CONTENT, "must not be sent") }),
        )
        .route(
            "/not-modified",
            routing::get(|| async { (StatusCode::NOT_MODIFIED, [(header::ETAG, "\"v1\"")]) }),
        )
        .route(
            "/not-modified-with-body",
            routing::get(|| async { (StatusCode::NOT_MODIFIED, "must not be sent") }),
        )
        .route(
            "/early-hints",
            routing::get(|| async {
                (
                    StatusCode::from_u16(103).unwrap(),
                    [(header::LINK, "</a.css>; rel=preload")],
                    "never final",
                )
            }),
        )
}

fn header<'a>(r: &'a fcgi_client::Response, name: &str) -> Option<&'a str> {
    r.header(name)
}

/// Item 3: no `Content-Length: 0` is invented and no body is sent where HTTP forbids one: a
/// HEAD of a streamed body, a 204, a 304.
#[test]
fn no_length_or_body_is_sent_where_http_has_none() {
    let server = Server::new(config(1)).start(framing_app()).unwrap();
    let addr = server.local_addr();

    let streamed = get(addr, "/stream");
    assert_eq!((streamed.status, streamed.body.len()), (200, 4096));
    assert_eq!(header(&streamed, "content-length"), None);

    let mut head = RequestSpec::get("/stream");
    head.method = "HEAD".into();
    let r = connect(addr).request(&head).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "content-length"), None, "{:?}", r.headers);
    assert!(r.body.is_empty());

    for (path, status) in [("/no-content", 204), ("/not-modified", 304)] {
        let r = get(addr, path);
        assert_eq!(r.status, status);
        assert_eq!(
            header(&r, "content-length"),
            None,
            "{path}: {:?}",
            r.headers
        );
        assert!(r.body.is_empty(), "{path}: body {:?}", r.body);
    }
    assert_eq!(header(&get(addr, "/not-modified"), "etag"), Some("\"v1\""));
    // A 304 whose handler gave a body: the length axum set stays (as hyper keeps it), the body
    // is not sent.
    let r = get(addr, "/not-modified-with-body");
    assert_eq!(r.status, 304);
    assert_eq!(header(&r, "content-length"), Some("16"));
    assert!(r.body.is_empty());
}

/// Item 4: a 1xx status cannot end a response: it becomes a bare 500, as hyper makes it.
#[test]
fn an_informational_final_status_becomes_a_bare_500() {
    let server = Server::new(config(1)).start(framing_app()).unwrap();
    let r = get(server.local_addr(), "/early-hints");
    assert_eq!(r.status, 500);
    assert_eq!(
        r.headers,
        [("Content-Length".to_owned(), "0".to_owned())],
        "no header of the 103 survives"
    );
    assert!(r.body.is_empty());
}

/// Starts `app` as `main() -> io::Result<()>` would, with `?` on every step (item 9).
fn start_on(listen: &str, share_port: bool) -> io::Result<ServerHandle> {
    let server = Server::bind(listen)?;
    let config = server
        .config()
        .clone()
        .into_builder()
        .workers(1)
        .pin_workers(false)
        .share_port(share_port)
        .build()
        .map_err(io::Error::other)?;
    let handle = Server::new(config).start(framing_app())?;
    Ok(handle)
}

/// Item 5 (and 9): a second server on a port already served is refused with `AddrInUse`,
/// through `?` into `io::Error`; `share_port` lets it share the port on purpose.
#[test]
fn a_port_already_served_is_refused_unless_shared() {
    let first = start_on("127.0.0.1:0", false).unwrap();
    let port = match first.local_addr() {
        fcgi_uring::Addr::Tcp(sa) => sa.port(),
        other => panic!("{other}"),
    };
    let listen = format!("127.0.0.1:{port}");
    let refused = start_on(&listen, false).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::AddrInUse, "{refused}");
    assert!(refused.to_string().contains("share_port"), "{refused}");
    let shared = start_on(&listen, true).expect("an explicit share starts");
    drop(shared);
    // The first server still answers, and its port is free again once it stops.
    assert_eq!(get(first.local_addr(), "/stream").status, 200);
    first.shutdown();
    start_on(&listen, false).expect("a port no one serves any more is free");
}

/// Item 9: a bad address is an `io::Error` too (kind `InvalidInput`).
#[test]
fn a_bad_address_converts_into_an_io_error() {
    let e = start_on("not an address", false).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
}

/// Item 7: `ConnectInfo<SocketAddr>` is the client's address as the proxy states it
/// (REMOTE_ADDR, REMOTE_PORT), never a client header.
#[test]
fn connect_info_is_the_address_the_proxy_states() {
    let app = Router::new().route(
        "/whoami",
        routing::get(|ConnectInfo(addr): ConnectInfo<SocketAddr>| async move { addr.to_string() }),
    );
    let server = Server::new(config(1)).start(app).unwrap();
    let r = get(server.local_addr(), "/whoami");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"127.0.0.1:50000"[..])
    );
    let mut spec = RequestSpec::get("/whoami").header("X-Real-IP", "10.6.6.6");
    spec.extra_params = vec![
        (b"REMOTE_ADDR".to_vec(), b"2001:db8::7".to_vec()),
        (b"REMOTE_PORT".to_vec(), b"4711".to_vec()),
    ];
    let r = connect(server.local_addr()).request(&spec).unwrap();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"[2001:db8::7]:4711"[..])
    );
}

/// Item 7: `serve(..).with_graceful_shutdown(signal)` as with axum: once the signal fires, the
/// request in flight still gets its whole answer, then the future completes.
#[test]
fn graceful_shutdown_lets_the_request_in_flight_finish() {
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (entered_h, release_h) = (entered.clone(), release.clone());
    let app = Router::new().route(
        "/slow",
        routing::get(move || {
            let (entered, release) = (entered_h.clone(), release_h.clone());
            async move {
                entered.notify_one();
                release.notified().await;
                "finished"
            }
        }),
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let config = config(1)
        .into_builder()
        .listen(listen.parse().unwrap())
        .shutdown_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let addr = config.listen().clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = rt.spawn(
        fcgi_uring::serve(config, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    wait_for("the server to accept", HANG_GUARD, || {
        fcgi_client::Client::connect(&addr).is_ok()
    });
    let client_addr = addr.clone();
    let in_flight =
        std::thread::spawn(move || connect(&client_addr).request(&RequestSpec::get("/slow")));
    rt.block_on(entered.notified());
    stop_tx.send(()).unwrap();
    // The shutdown waits for the request in flight (up to shutdown_timeout, 30 s here).
    assert!(
        !holds_within(Duration::from_millis(200), || served.is_finished()),
        "serve ended while a request was in flight"
    );
    release.notify_one();
    let r = in_flight.join().unwrap().expect("the answer arrives whole");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"finished"[..]));
    rt.block_on(served)
        .unwrap()
        .expect("serve completes without error");
}

/// The handler of an unknown route still gets axum's own 404 (the switch changes nothing).
#[test]
fn unknown_routes_are_axums_404() {
    let server = Server::new(config(1)).start(framing_app()).unwrap();
    let r = get(server.local_addr(), "/nope");
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
}

/// Workers run handlers on current-thread runtimes: `block_in_place` panics there (the
/// request gets a 500, the worker goes on); `spawn_blocking` is the way (docs/axum.md).
#[test]
fn block_in_place_panics_and_spawn_blocking_works() {
    let app = Router::new()
        .route(
            "/block-in-place",
            routing::get(|| async { tokio::task::block_in_place(|| "never") }),
        )
        .route(
            "/spawn-blocking",
            routing::get(|| async {
                tokio::task::spawn_blocking(|| "blocking work done")
                    .await
                    .unwrap_or("join failed")
            }),
        );
    let server = Server::new(config(1)).start(app).unwrap();
    assert_eq!(get(server.local_addr(), "/block-in-place").status, 500);
    let r = get(server.local_addr(), "/spawn-blocking");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"blocking work done"[..])
    );
}

/// The README shows the axum example as it is, so the one-line switch it shows compiles (the
/// example is built with the tests).
#[test]
fn the_readme_shows_the_axum_example_as_it_is() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("crates/fcgi-uring/examples/axum.rs")).unwrap();
    let code: String = example
        .lines()
        .filter(|l| !l.starts_with("//!"))
        .map(|l| format!("{l}\n"))
        .collect();
    let shown = format!(
        "<!-- example: axum -->\n```rust\n{}```\n",
        code.trim_start()
    );
    assert!(
        readme.contains(&shown),
        "README.md's axum block differs from examples/axum.rs"
    );
    // The switch is one line: `axum::serve(..)` becomes `fcgi_uring::serve(..)`.
    assert!(code.contains("    // Before: axum::serve("));
    assert!(code.contains("    fcgi_uring::serve(\"127.0.0.1:9000\", app).await?;"));
}
