//! `ring.idle_wait_us`: an idle worker with no handler task running waits for IO in its backend
//! (`io_uring_enter`, or `epoll_wait` on its own epoll fd) before it sleeps in tokio's reactor.
//!
//! Runs on the backend `FCGI_URING_IO` names (the suite runs once per backend). Shows that a
//! task the application runs outside requests still runs when another thread wakes it during
//! such a wait, that a request after a handler kept the worker busy is answered, and that 0
//! turns the waits off; tests/idle_wait_sleep.rs shows where an idle worker sleeps.

mod common;

use common::*;
use fcgi_uring::{Config, Counter, ServerHandle, service_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// One unpinned worker ([`test_config`]) with this `ring.idle_wait_us`.
fn config(idle_wait_us: u32) -> Config {
    test_config()
        .into_builder()
        .idle_wait_us(idle_wait_us)
        .build()
        .unwrap()
}

fn start(idle_wait_us: u32) -> ServerHandle {
    demo_with(config(idle_wait_us))
}

#[test]
fn zero_turns_the_backend_waits_off() {
    let server = start(0);
    sequential_1000(server.local_addr());
    let stats = server.stats();
    assert_eq!(stats.get(Counter::IdleWaitWoken), 0, "{stats}");
    assert_eq!(stats.get(Counter::IdleWaitExpired), 0, "{stats}");
    server.shutdown();
}

/// A task the application spawned on the worker (outside any request) and woken from another
/// thread runs although no IO comes: the wait in the backend is bounded, and the worker looks
/// at tokio after it.
#[test]
fn a_task_woken_from_another_thread_runs_while_the_worker_waits() {
    let bell = Arc::new(tokio::sync::Notify::new());
    let rang = Arc::new(AtomicU32::new(0));
    // Long waits: a wake that had to wait for the next IO would hang the test.
    let config = config(100_000);
    let (task_bell, task_rang) = (bell.clone(), rang.clone());
    let server = fcgi_uring::Server::new(config)
        .start(move || {
            let (bell, rang) = (task_bell.clone(), task_rang.clone());
            tokio::task::spawn_local(async move {
                loop {
                    bell.notified().await;
                    rang.fetch_add(1, Ordering::SeqCst);
                }
            });
            service_fn(fcgi_uring_cli::demo::app)
        })
        .expect("server starts");
    let addr = server.local_addr().clone();
    let mut client = connect(&addr);
    let mut spec = fcgi_client::RequestSpec::get("/hello");
    spec.keep_conn = true;
    for i in 1..=20 {
        // The answer is out: the worker is on its way to (or in) a wait in the backend.
        let r = client.request(&spec).expect("request");
        assert_eq!(r.status, 200);
        bell.notify_one();
        wait_for("the task to run", HANG_GUARD, || {
            rang.load(Ordering::SeqCst) == i
        });
    }
    assert!(
        server.stats().get(Counter::IdleWaitWoken) + server.stats().get(Counter::IdleWaitExpired)
            > 0
    );
    server.shutdown();
}

/// A handler that keeps the worker's thread for a while lets the idle tick pile up (on
/// io_uring, a completion every `idle_wait`, more than one loop turn reaps): the next request
/// on the connection is still answered, not left behind them while the worker sleeps.
#[test]
fn a_request_after_a_handler_kept_the_worker_busy_is_answered() {
    let server = fcgi_uring::Server::new(config(1000))
        .start(|| {
            service_fn(|req: http::Request<fcgi_uring::RequestBody>| async move {
                if req.uri().path() == "/block" {
                    // The workload under test, not a wait: a handler that keeps its worker's
                    // thread (about 150 ticks come meanwhile, more than a turn reaps).
                    std::thread::sleep(Duration::from_millis(150));
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"ok"),
                )))
            })
        })
        .expect("server starts");
    let mut client = connect(server.local_addr());
    let mut spec = fcgi_client::RequestSpec::get("/hello");
    spec.keep_conn = true;
    // The ticks run from the first wait between requests.
    for _ in 0..3 {
        assert_eq!(client.request(&spec).expect("request").status, 200);
    }
    spec.uri = "/block".into();
    assert_eq!(client.request(&spec).expect("blocked request").status, 200);
    spec.uri = "/hello".into();
    for _ in 0..3 {
        let r = client.request(&spec).expect("a request after the block");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    }
    server.shutdown();
}
