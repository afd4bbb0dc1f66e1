//! The real server, over TCP and a UNIX socket, driven by the FastCGI client.

mod common;

use common::*;
use fcgi_client::RequestSpec;
use fcgi_proto::record::{self, ProtocolStatus, RecordType};
use fcgi_uring::{Addr, Counter, RequestBody, Server, ServerHandle, service_fn};
use http::{Request, Response};
use http_body_util::Full;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// A server whose `/gated` requests each wait for a permit the test adds, and whose other
/// requests answer "fast" at once: a test decides when a slow request ends, instead of racing a
/// timer against the scheduler.
fn gated_server() -> (ServerHandle, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let server = Server::new(test_config())
        .start(move || {
            let g = g.clone();
            service_fn(move |req: Request<RequestBody>| {
                let g = g.clone();
                async move {
                    if req.uri().path() == "/gated" {
                        g.acquire().await.expect("gate open").forget();
                        return Ok::<_, Infallible>(Response::new(Full::new(&b"gated"[..])));
                    }
                    Ok(Response::new(Full::new(&b"fast"[..])))
                }
            })
        })
        .expect("server starts");
    (server, gate)
}

fn routes(addr: &Addr) {
    let r = get(addr, "/hello");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Hello, World!");
    assert!(
        r.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("content-type") && v.starts_with("text/plain"))
    );

    let r = get(addr, "/json");
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(b"{"));

    let r = get(addr, "/sleep?ms=20");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"slept 20"[..]));

    let r = get(addr, "/nope");
    assert_eq!(r.status, 404);

    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let r = connect(addr)
        .request(&RequestSpec::post("/echo", body.clone()))
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);

    let r = connect(addr)
        .request(&RequestSpec::post("/echo", Vec::new()))
        .unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
}

#[test]
fn every_route_over_tcp() {
    let server = demo_tcp();
    routes(server.local_addr());
}

#[test]
fn every_route_over_unix_socket() {
    let (server, _dir) = demo_unix();
    routes(server.local_addr());
}

#[test]
fn keep_conn_serves_1000_sequential_requests_on_one_connection() {
    let server = demo_tcp();
    sequential_1000(server.local_addr());
}

#[test]
fn without_keep_conn_the_server_closes_gracefully() {
    let server = demo_tcp();
    let mut c = connect(server.local_addr());
    let mut spec = RequestSpec::get("/hello");
    spec.keep_conn = false;
    let r = c.request(&spec).unwrap();
    assert_eq!(r.body, b"Hello, World!");
    // Clean EOF (FIN), not a reset.
    match c.read_record() {
        Ok(None) => {}
        other => panic!("expected a clean close, got {other:?}"),
    }
}

#[test]
fn unix_socket_without_keep_conn_closes_cleanly() {
    let (server, _dir) = demo_unix();
    let mut c = connect(server.local_addr());
    let mut spec = RequestSpec::get("/hello");
    spec.keep_conn = false;
    assert_eq!(c.request(&spec).unwrap().status, 200);
    assert!(matches!(c.read_record(), Ok(None)));
}

#[test]
fn a_slow_request_does_not_hold_up_fast_ones_on_the_same_connection() {
    let (server, gate) = gated_server();
    let mut c = connect(server.local_addr());
    let mut slow = RequestSpec::get("/gated");
    slow.keep_conn = true;
    c.begin(&slow, 1).unwrap();
    let mut fast_ids = Vec::new();
    for id in 2..=50u16 {
        let mut fast = RequestSpec::get("/hello");
        fast.keep_conn = true;
        c.begin(&fast, id).unwrap();
        fast_ids.push(id);
    }
    // Every fast request ends while the slow one is still held.
    let (got, order) = collect_until_ended(&mut c, &fast_ids);
    assert_eq!(order.len(), 49, "{order:?}");
    assert!(!got.contains_key(&1), "the slow request answered early");
    for id in 2..=50u16 {
        let (_, body) = split_cgi(&got[&id].stdout);
        assert_eq!(body, b"fast", "id {id}");
        assert_eq!(got[&id].end_requests, 1);
    }
    gate.add_permits(1);
    let (got, _) = collect_until_ended(&mut c, &[1]);
    let (_, body) = split_cgi(&got[&1].stdout);
    assert_eq!(body, b"gated");
}

#[test]
fn abort_request_gets_exactly_one_end_request() {
    let server = demo_tcp();
    let mut c = connect(server.local_addr());
    // The demo's slow route: it still runs when the abort comes (were it to end first, the
    // assertions below would hold all the same).
    let mut slow = RequestSpec::get("/sleep?ms=5000");
    slow.keep_conn = true;
    c.begin(&slow, 7).unwrap();
    // Aborted while its handler runs (not before it was dispatched).
    wait_for("request 7 dispatched", HANG_GUARD, || {
        server.stats().get(Counter::Requests) == 1
    });
    let mut abort = Vec::new();
    record::encode_abort_request(&mut abort, 7);
    c.send_raw(&abort).unwrap();
    // Then an ordinary request on the same connection: its END_REQUEST arrives after id 7's,
    // and no second END_REQUEST for 7 may appear before it.
    let mut fast = RequestSpec::get("/hello");
    fast.keep_conn = true;
    c.begin(&fast, 8).unwrap();
    let (got, order) = collect_until_ended(&mut c, &[7, 8]);
    assert_eq!(got[&7].end_requests, 1);
    assert_eq!(
        got[&7].protocol_status,
        Some(ProtocolStatus::RequestComplete as u8)
    );
    assert_eq!(order, vec![7, 8]);
    // A second abort for the now inactive id is ignored; the connection keeps working.
    c.send_raw(&abort).unwrap();
    let r = c.request(&fast).unwrap();
    assert_eq!(r.body, b"Hello, World!");
}

#[test]
fn get_values_answers_exactly_the_known_names_asked() {
    let server = demo_tcp();
    let mut c = connect(server.local_addr());
    let values = c
        .get_values(&["FCGI_MPXS_CONNS", "FCGI_MAX_REQS", "NOT_A_NAME"])
        .unwrap();
    let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["FCGI_MPXS_CONNS", "FCGI_MAX_REQS"]);
    assert_eq!(values[0].1, "1");
    assert!(values[1].1.parse::<u32>().unwrap() > 0);
}

#[test]
fn unknown_role_and_unknown_management_type() {
    let server = demo_tcp();
    let mut c = connect(server.local_addr());
    let mut bytes = Vec::new();
    record::encode_begin_request(&mut bytes, 3, 99, true);
    record::encode_record(&mut bytes, RecordType::GetValues, 0, &[]);
    // An undefined management record type (spec 4.2).
    bytes.extend_from_slice(
        &record::Header {
            version: 1,
            record_type: 42,
            request_id: 0,
            content_length: 0,
            padding_length: 0,
        }
        .encode(),
    );
    c.send_raw(&bytes).unwrap();
    let mut seen_unknown_role = false;
    let mut seen_unknown_type = false;
    while !(seen_unknown_role && seen_unknown_type) {
        let rec = c.read_record().unwrap().expect("open");
        match RecordType::from_u8(rec.header.record_type) {
            Some(RecordType::EndRequest) => {
                assert_eq!(rec.header.request_id, 3);
                assert_eq!(rec.content[4], ProtocolStatus::UnknownRole as u8);
                seen_unknown_role = true;
            }
            Some(RecordType::UnknownType) => {
                assert_eq!(rec.content[0], 42);
                seen_unknown_type = true;
            }
            Some(RecordType::GetValuesResult) => assert!(rec.content.is_empty()),
            other => panic!("unexpected record {other:?}"),
        }
    }
}

#[test]
fn large_streamed_request_body_is_echoed_intact() {
    let server = demo_tcp();
    let body: Vec<u8> = (0..(3 * 1024 * 1024u32))
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    let mut spec = RequestSpec::post("/echo", body.clone());
    spec.stdin_chunk = 8 * 1024;
    let r = connect(server.local_addr()).request(&spec).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body);
}

#[test]
fn without_keep_conn_an_unread_body_is_drained_before_a_clean_close() {
    let server = demo_tcp();
    let mut c = connect(server.local_addr());
    // /nope answers 404 without reading its body; the server must still read the rest of STDIN
    // and close with a FIN (an RST would cost the proxy the response).
    let mut spec = RequestSpec::post("/nope", vec![7u8; 2 * 1024 * 1024]);
    spec.keep_conn = false;
    spec.stdin_chunk = 16 * 1024;
    let r = c.request(&spec).unwrap();
    assert_eq!(r.status, 404);
    match c.read_record() {
        Ok(None) => {}
        other => panic!("expected a clean close after the drained body, got {other:?}"),
    }
}

#[test]
fn max_requests_in_flight_per_conn_counts_multiplexed_requests() {
    let (server, gate) = gated_server();
    assert_eq!(server.max_requests_in_flight_per_conn(), 0);
    let mut c = connect(server.local_addr());
    for _ in 0..3 {
        let mut spec = RequestSpec::get("/hello");
        spec.keep_conn = true;
        assert_eq!(c.request(&spec).unwrap().status, 200);
    }
    assert_eq!(
        server.max_requests_in_flight_per_conn(),
        1,
        "sequential requests are never in flight together"
    );
    let ids = [1u16, 3, 5, 7];
    for &id in &ids {
        let mut slow = RequestSpec::get("/gated");
        slow.keep_conn = true;
        c.begin(&slow, id).unwrap();
    }
    // All four held at once: the gate opens only once they were all dispatched.
    wait_for("the four gated requests dispatched", HANG_GUARD, || {
        server.stats().get(Counter::Requests) == 3 + 4
    });
    gate.add_permits(4);
    let (got, _) = collect_until_ended(&mut c, &ids);
    assert!(got.values().all(|g| g.end_requests == 1));
    assert_eq!(server.max_requests_in_flight_per_conn(), 4);
}

/// RFC 3875 4.3.3: the script must not send a body for HEAD (HAProxy answers 502 when one
/// comes); the head, with the Content-Length a GET would get, is sent as usual.
#[test]
fn head_gets_the_head_without_a_body() {
    let server = demo_tcp();
    let mut spec = RequestSpec::get("/hello");
    spec.method = "HEAD".to_owned();
    let r = connect(server.local_addr()).request(&spec).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("13"));
    assert!(r.body.is_empty(), "HEAD body: {:?}", r.body);
    let r = get(server.local_addr(), "/hello");
    assert_eq!(r.body, b"Hello, World!");
}

/// `fcgi-uring serve` on `addr`, one worker, no admin listener, `extra` flags, its log piped.
fn one_worker_logging(addr: &str, extra: &[&str]) -> common::KillOnDrop {
    let base = [
        "--listen",
        addr,
        "--workers",
        "1",
        "--no-pin",
        "--admin-listen",
        "none",
    ];
    common::serve_with_stderr(&[&base[..], extra].concat())
}

/// The server's log lines on a pipe (a file, journald) carry no colour escapes: they used to,
/// whatever stderr was.
#[test]
fn log_lines_on_a_pipe_are_plain_text() {
    use std::io::{Read, Write};
    let addr = format!("127.0.0.1:{}", common::proxy::free_port());
    let mut server = one_worker_logging(&addr, &[]);
    // An HTTP request on the FastCGI port: a protocol error, logged as a warning.
    common::wait_for("the server listening", common::HANG_GUARD, || {
        std::net::TcpStream::connect(&addr).is_ok_and(|mut s| {
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").is_ok() && s.read(&mut [0u8; 16]).is_ok()
        })
    });
    let stderr = common::stop_and_read_stderr(&mut server);
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    // And the warning says what the bytes looked like.
    assert!(
        stderr.contains("an HTTP request? this port speaks FastCGI"),
        "{stderr}"
    );
}

/// An idle connection closed at `timeouts.idle` is ordinary (a proxy's pooled connections):
/// counted, not logged as a warning (one warning per pooled connection every idle period).
#[test]
fn idle_connections_closed_are_not_warnings() {
    use std::io::Read;
    let addr = format!("127.0.0.1:{}", common::proxy::free_port());
    let mut server = one_worker_logging(&addr, &["--idle-timeout", "0.2"]);
    let mut idle = None;
    common::wait_for("the server listening", common::HANG_GUARD, || {
        idle = std::net::TcpStream::connect(&addr).ok();
        idle.is_some()
    });
    let mut idle = idle.unwrap();
    idle.set_read_timeout(Some(common::HANG_GUARD)).unwrap();
    assert_eq!(idle.read(&mut [0u8; 8]).unwrap(), 0, "closed by the server");
    let stderr = common::stop_and_read_stderr(&mut server);
    assert!(stderr.contains("idle_timeout=1"), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
}
