//! A real nginx in front of the server: `fastcgi_pass` to an upstream with keepalive and
//! `fastcgi_keep_conn on`, real HTTP requests through it.

mod common;

use common::http_client::{Upload, request};
use common::proxy;
use common::*;

fn through_nginx(backend: &str) {
    let Some(nginx) = proxy::nginx(backend) else {
        return;
    };
    let addr = nginx.addr;

    let r = request(addr, "GET", "/hello", &[], Upload::None);
    assert_eq!(r.status, 200, "log: {}", nginx.log());
    assert_eq!(r.body, b"Hello, World!");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));

    let r = request(addr, "HEAD", "/hello", &[], Upload::None);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    let r = request(addr, "GET", "/nope", &[], Upload::None);
    assert_eq!(r.status, 404);

    let r = request(addr, "GET", "/sleep?ms=30", &[], Upload::None);
    assert_eq!(r.body, b"slept 30");

    for size in [0usize, 1024, 1024 * 1024] {
        let body: Vec<u8> = (0..size).map(|i| (i * 31 % 256) as u8).collect();
        let r = request(
            addr,
            "POST",
            "/echo",
            &[("Content-Type", "application/x-test")],
            Upload::Fixed(&body),
        );
        assert_eq!(r.status, 200, "POST {size} B; log: {}", nginx.log());
        assert_eq!(r.body.len(), size, "POST {size} B");
        assert!(r.body == body, "POST {size} B echoed intact");
        assert_eq!(r.header("content-type"), Some("application/x-test"));
    }

    let body: Vec<u8> = (0..200_000usize).map(|i| (i % 253) as u8).collect();
    let r = request(addr, "POST", "/echo", &[], Upload::Chunked(&body, 7000));
    assert_eq!(r.status, 200, "chunked upload; log: {}", nginx.log());
    assert!(r.body == body, "chunked upload echoed intact");

    // Many requests reuse the kept-alive upstream connections.
    for _ in 0..200 {
        let r = request(addr, "GET", "/hello", &[], Upload::None);
        assert_eq!(r.status, 200);
    }
}

#[test]
fn nginx_over_tcp() {
    let server = demo_tcp();
    through_nginx(&server.local_addr().to_string());
}

#[test]
fn nginx_over_unix_socket() {
    let (server, _dir) = demo_unix();
    through_nginx(&server.local_addr().to_string());
}

/// nginx passes a client's `Proxy:` header on as HTTP_PROXY (an ordinary header here, never
/// trusted), sends SERVER_ADDR, and SERVER_PORT is the port it accepted the client on.
const EXPECT: common::matrix::Expect = common::matrix::Expect {
    passes_proxy_header: true,
    sends_server_addr: true,
    server_port_from_host: false,
    chunked_upload_limit: None,
    location_becomes_302: false,
    internal_errors_when_multiplexing: false,
};

#[test]
fn nginx_matrix_over_tcp() {
    common::matrix::run(common::matrix::Transport::Tcp, proxy::nginx, EXPECT);
}

#[test]
fn nginx_matrix_over_unix_socket() {
    common::matrix::run(common::matrix::Transport::Unix, proxy::nginx, EXPECT);
}
