//! A real HAProxy (`fcgi-app` with `option mpxs-conns`) in front of the server: the checks of
//! tests/common/matrix.rs over TCP and over a UNIX socket, and proof that HAProxy really
//! multiplexes requests on one connection.

mod common;

use common::http_client::{Upload, request};
use common::matrix::{self, Expect, Transport};
use common::proxy;

/// HAProxy (2.6) drops a client's `Proxy:` header, sends no SERVER_ADDR, sends the port it
/// accepted the client on as SERVER_PORT (and the Host header, port included, as SERVER_NAME).
/// A chunked upload (length unknown) is forwarded only when the whole body fits in one HAProxy
/// buffer (tune.bufsize, 16 KiB by default), since FastCGI needs CONTENT_LENGTH: a bigger one
/// gets 400 from HAProxy and never reaches the server. A 301 with Location arrives as 302
/// (haproxy/haproxy#2865, fixed after 2.6).
const EXPECT: Expect = Expect {
    passes_proxy_header: false,
    sends_server_addr: false,
    server_port_from_host: false,
    chunked_upload_limit: Some(15_000),
    location_becomes_302: true,
    internal_errors_when_multiplexing: true,
};

#[test]
fn haproxy_over_tcp() {
    matrix::run(Transport::Tcp, proxy::haproxy, EXPECT);
}

#[test]
fn haproxy_over_unix_socket() {
    matrix::run(Transport::Unix, proxy::haproxy, EXPECT);
}

/// With `option mpxs-conns` (and our GET_VALUES answer FCGI_MPXS_CONNS=1) HAProxy sends
/// concurrent requests on one connection: the server sees several request ids in flight at
/// once.
fn multiplexes(transport: Transport) {
    let Some(running) = matrix::start(transport, proxy::haproxy) else {
        return;
    };
    let addr = running.proxy.addr;
    // One request first, so HAProxy has an idle multiplexing connection to reuse.
    assert_eq!(
        request(addr, "GET", "/status/200", &[], Upload::None).status,
        200
    );
    let threads: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let r = request(addr, "GET", "/slow?ms=1000", &[], Upload::None);
                assert_eq!((r.status, r.body.as_slice()), (200, &b"slept 1000"[..]));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("slow request through HAProxy");
    }
    let most = running.server.max_requests_in_flight_per_conn();
    assert!(
        most > 1,
        "HAProxy never had two requests in flight on one connection (max {most}); log:\n{}",
        running.proxy.log()
    );
    eprintln!("most requests in flight on one connection: {most}");
}

#[test]
fn haproxy_multiplexes_requests_over_tcp() {
    multiplexes(Transport::Tcp);
}

#[test]
fn haproxy_multiplexes_requests_over_unix_socket() {
    multiplexes(Transport::Unix);
}
