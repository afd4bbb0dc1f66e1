//! Handlers written by users: panics, cancellation, tokio libraries, streaming bodies, axum.

mod common;

use bytes::Bytes;
use common::*;
use fcgi_client::RequestSpec;
use fcgi_proto::record;
use fcgi_uring::{Counter, RequestBody, Server, TrustedParams, service_fn};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::Full;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

fn ok(body: impl Into<Bytes>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(body.into())))
}

#[test]
fn a_panicking_handler_gets_a_500_and_the_connection_goes_on() {
    let server = Server::new(test_config())
        .start(|| {
            service_fn(|req: Request<RequestBody>| async move {
                if req.uri().path() == "/panic" {
                    panic!("handler bug");
                }
                ok("fine")
            })
        })
        .unwrap();
    let mut c = connect(server.local_addr());
    let mut spec = RequestSpec::get("/panic");
    spec.keep_conn = true;
    assert_eq!(c.request(&spec).unwrap().status, 500);
    spec.uri = "/other".into();
    let r = c.request(&spec).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"fine"[..]));
}

struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn abort_request_cancels_the_handler() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (d, f) = (dropped.clone(), finished.clone());
    let server = Server::new(test_config())
        .start(move || {
            let (d, f) = (d.clone(), f.clone());
            service_fn(move |_req: Request<RequestBody>| {
                let guard = DropCounter(d.clone());
                let f = f.clone();
                async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                    f.fetch_add(1, Ordering::SeqCst);
                    ok("late")
                }
            })
        })
        .unwrap();
    let mut c = connect(server.local_addr());
    let mut spec = RequestSpec::get("/slow");
    spec.keep_conn = true;
    c.begin(&spec, 1).unwrap();
    wait_for("the handler dispatched", HANG_GUARD, || {
        server.stats().get(Counter::Requests) == 1
    });
    let mut abort = Vec::new();
    record::encode_abort_request(&mut abort, 1);
    c.send_raw(&abort).unwrap();
    let (got, _) = collect_until_ended(&mut c, &[1]);
    assert_eq!(got[&1].end_requests, 1);
    wait_for("the handler future dropped", HANG_GUARD, || {
        dropped.load(Ordering::SeqCst) > 0
    });
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "handler future dropped");
    assert_eq!(finished.load(Ordering::SeqCst), 0, "handler never finished");
}

#[test]
fn handlers_can_sleep_and_use_tokio_sockets() {
    // A tokio-based upstream the handler talks to.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in upstream.incoming().take(2) {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf.to_ascii_uppercase()).unwrap();
        }
    });
    let server = Server::new(test_config())
        .start(move || {
            service_fn(move |_req: Request<RequestBody>| async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                // Kept: a tokio timer in a handler is what is tested; the answer does not
                // depend on how long it really slept.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut s = tokio::net::TcpStream::connect(up_addr).await.unwrap();
                s.write_all(b"hello").await.unwrap();
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).await.unwrap();
                ok(buf.to_vec())
            })
        })
        .unwrap();
    for _ in 0..2 {
        let r = get(server.local_addr(), "/x");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"HELLO"[..]));
    }
}

/// A body of `chunks` frames of `size` bytes, produced synchronously.
struct Chunks {
    left: usize,
    size: usize,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        let byte = (self.left % 251) as u8;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![byte; self.size])))))
    }
}

#[test]
fn a_10_mib_streamed_response_arrives_intact() {
    let server = Server::new(test_config())
        .start(|| {
            service_fn(|_req: Request<RequestBody>| async {
                Ok::<_, Infallible>(Response::new(Chunks {
                    left: 160,
                    size: 64 * 1024,
                }))
            })
        })
        .unwrap();
    let r = get(server.local_addr(), "/big");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 10 * 1024 * 1024);
    // Frames arrive in order: frame k carries byte (159 - k) % 251.
    for (k, chunk) in r.body.chunks(64 * 1024).enumerate() {
        assert!(
            chunk.iter().all(|b| *b == ((159 - k) % 251) as u8),
            "frame {k}"
        );
    }
}

#[test]
fn trusted_params_are_apart_from_client_headers() {
    let server = Server::new(test_config())
        .start(|| {
            service_fn(|req: Request<RequestBody>| async move {
                let t = req.extensions().get::<TrustedParams>().cloned();
                let remote = t.as_ref().and_then(|t| t.remote_addr());
                let proxy_trusted = t
                    .as_ref()
                    .and_then(|t| t.get("HTTP_PROXY").map(str::to_owned));
                let x_real_ip = req
                    .headers()
                    .get("x-real-ip")
                    .map(|v| v.to_str().unwrap().to_owned());
                ok(format!("{remote:?} {proxy_trusted:?} {x_real_ip:?}"))
            })
        })
        .unwrap();
    let mut spec = RequestSpec::get("/who");
    spec.headers = vec![
        ("Proxy".into(), "http://evil:8080".into()),
        ("X-Real-IP".into(), "6.6.6.6".into()),
    ];
    let r = connect(server.local_addr()).request(&spec).unwrap();
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"Some(127.0.0.1) None Some("6.6.6.6")"#
    );
}
