//! The HTTP/1.1 and h2c modes of the server (`Config.protocol`): the demo routes through the
//! same per-core workers, and a handler error answered with a 500.

mod common;

use bytes::Bytes;
use common::http_client::{self, Upload};
use fcgi_uring::{Addr, Protocol, Server, ServerHandle, service_fn};
use std::net::SocketAddr;
use std::time::Duration;

fn start(protocol: Protocol) -> ServerHandle {
    let config = common::test_config()
        .into_builder()
        .protocol(protocol)
        .workers(2)
        .build()
        .unwrap();
    Server::new(config)
        .start(|| service_fn(fcgi_uring_cli::demo::app))
        .expect("server starts")
}

fn tcp(handle: &ServerHandle) -> SocketAddr {
    match handle.local_addr() {
        Addr::Tcp(sa) => *sa,
        other => panic!("not TCP: {other}"),
    }
}

fn body_100k() -> Vec<u8> {
    (0..100_000u32).map(|i| (i % 251) as u8).collect()
}

#[test]
fn demo_routes_over_http1() {
    let server = start(Protocol::Http1);
    let addr = tcp(&server);
    let get = |path| http_client::request(addr, "GET", path, &[], Upload::None);
    let r = get("/hello");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(get("/json").status, 200);
    let r = get("/sleep?ms=20");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"slept 20"[..]));
    assert_eq!(get("/nope").status, 404);
    let body = body_100k();
    let r = http_client::request(addr, "POST", "/echo", &[], Upload::Fixed(&body));
    assert_eq!((r.status, r.body == body), (200, true));
    let r = http_client::request(addr, "POST", "/echo", &[], Upload::Chunked(&body, 7000));
    assert_eq!((r.status, r.body == body), (200, true));
    server.shutdown();
}

/// One h2c connection (prior knowledge) and requests on it, concurrently.
async fn h2_requests(
    addr: SocketAddr,
    reqs: Vec<(&'static str, &'static str, Bytes)>,
) -> Vec<(u16, Bytes)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut tasks = Vec::new();
    for (method, path, body) in reqs {
        let mut client = client.clone().ready().await.unwrap();
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, body.is_empty()).unwrap();
        if !body.is_empty() {
            send.reserve_capacity(body.len());
            send.send_data(body, true).unwrap();
        }
        tasks.push(tokio::spawn(async move {
            let resp = resp.await.unwrap();
            let status = resp.status().as_u16();
            let mut recv = resp.into_body();
            let mut out = Vec::new();
            while let Some(chunk) = recv.data().await {
                let chunk = chunk.unwrap();
                recv.flow_control().release_capacity(chunk.len()).unwrap();
                out.extend_from_slice(&chunk);
            }
            (status, Bytes::from(out))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[test]
fn demo_routes_over_h2c_on_one_connection() {
    let server = start(Protocol::H2c);
    let addr = tcp(&server);
    let body = Bytes::from(body_100k());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        tokio::time::timeout(
            common::IO_TIMEOUT,
            h2_requests(
                addr,
                vec![
                    ("GET", "/sleep?ms=50", Bytes::new()),
                    ("GET", "/hello", Bytes::new()),
                    ("GET", "/json", Bytes::new()),
                    ("GET", "/nope", Bytes::new()),
                    ("POST", "/echo", body.clone()),
                ],
            ),
        )
        .await
    });
    let got = got.expect("answers in time");
    assert_eq!(got[0], (200, Bytes::from_static(b"slept 50")));
    assert_eq!(got[1], (200, Bytes::from_static(b"Hello, World!")));
    assert_eq!(got[2].0, 200);
    assert_eq!(got[3].0, 404);
    assert_eq!(got[4], (200, body));
    server.shutdown();
}

#[test]
fn handler_error_is_a_500_and_the_connection_goes_on() {
    let config = common::test_config()
        .into_builder()
        .protocol(Protocol::Http1)
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let server = Server::new(config)
        .start(|| {
            service_fn(|req: fcgi_uring::Request| async move {
                if req.uri().path() == "/fail" {
                    return Err(std::io::Error::other("boom"));
                }
                Ok(http::Response::new(http_body_util::Full::new(
                    Bytes::from_static(b"ok"),
                )))
            })
        })
        .unwrap();
    let addr = tcp(&server);
    let r = http_client::request(addr, "GET", "/fail", &[], Upload::None);
    assert_eq!(r.status, 500);
    let r = http_client::request(addr, "GET", "/", &[], Upload::None);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
}
