//! Bounded memory in both directions: a slow handler pauses reading, a slow proxy pauses the
//! response body.

mod common;

use bytes::Bytes;
use common::*;
use fcgi_client::RequestSpec;
use fcgi_uring::{RequestBody, Server, service_fn};
use http::{Request, Response};
use http_body::{Body, Frame};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

#[test]
fn a_slow_body_reader_pauses_the_connection_and_loses_nothing() {
    let config = test_config()
        .into_builder()
        .max_body_buffer(16 * 1024)
        .build()
        .unwrap();
    let server = slow_reader_server(config);
    let body: Vec<u8> = (0..(1024 * 1024u32)).map(|i| (i % 241) as u8).collect();
    let mut spec = RequestSpec::post("/slow-reader", body.clone());
    spec.stdin_chunk = 4096;
    let r = connect(server.local_addr()).request(&spec).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == body, "body intact after pauses");
}

/// An endless body that counts the bytes it produced and notes the thread that polls it (the
/// worker's).
struct Endless(Arc<Production>);

#[derive(Default)]
struct Production {
    bytes: AtomicUsize,
    worker_tid: AtomicU64,
}

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.worker_tid.store(current_tid(), Ordering::SeqCst);
        self.0.bytes.fetch_add(64 * 1024, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))))
    }
}

#[test]
fn a_proxy_that_stops_reading_pauses_the_response_body() {
    let production = Arc::new(Production::default());
    let p = production.clone();
    let config = test_config()
        .into_builder()
        .max_output_buffer(256 * 1024)
        .build()
        .unwrap();
    let server = Server::new(config)
        .start(move || {
            let p = p.clone();
            service_fn(move |_req: Request<RequestBody>| {
                let p = p.clone();
                async move { Ok::<_, Infallible>(Response::new(Endless(p))) }
            })
        })
        .unwrap();
    let produced = || production.bytes.load(Ordering::SeqCst);
    let mut c = connect(server.local_addr());
    c.begin(&RequestSpec::get("/endless"), 1).unwrap();
    // The client reads nothing. A body that is always ready keeps an unpaused worker busy
    // forever, so the worker asleep in the kernel, with the count the same before and after
    // that look, is the fact that production stopped.
    wait_for("the worker asleep with the body paused", HANG_GUARD, || {
        let before = produced();
        let tid = production.worker_tid.load(Ordering::SeqCst);
        let asleep = before > 0 && thread_state(tid) == Some('S');
        asleep && produced() == before
    });
    let paused_at = produced();
    // Bounded: the output limit plus what the kernel's socket buffers absorb.
    assert!(
        paused_at < 64 * 1024 * 1024,
        "bounded: {paused_at} bytes produced"
    );
    // Reading resumes production.
    for _ in 0..200 {
        c.read_record().unwrap();
    }
    wait_for("production to resume after reading", HANG_GUARD, || {
        produced() > paused_at
    });
}

#[test]
fn unix_socket_file_mode_is_applied() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mode.sock");
    let config = test_config()
        .into_builder()
        .listen(fcgi_uring::Addr::Unix(path.clone()))
        .unix_mode(Some(0o660))
        .build()
        .unwrap();
    let server = Server::new(config)
        .start(|| service_fn(fcgi_uring_cli::demo::app))
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert_eq!(get(server.local_addr(), "/hello").status, 200);
    drop(server);
    assert!(!path.exists(), "socket file removed at shutdown");
}
