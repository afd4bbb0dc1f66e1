//! Allocations per request on the worker's request path (bytes in -> connection core ->
//! `http::Request` -> the demo app through `tower::Service` -> records out), counted by a
//! global allocator over recorded requests: deterministic, no socket, no timing.

#[path = "support/request_path.rs"]
mod support;

use bytes::Bytes;
use fcgi_proto::record::{HEADER_LEN, Header, RecordType};
use fcgi_uring::bench::Harness;
use fcgi_uring::{RequestBody, service_fn};
use http::{HeaderMap, HeaderValue, Response, header};
use http_body_util::Full;
use support::{Counting, Workload, allocations, demo_worker, run_rounds};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The STDOUT content of every request in `out`, in order of their ids' first STDOUT record.
fn stdout_bodies(out: &[u8]) -> Vec<Vec<u8>> {
    let mut by_id: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut at = 0;
    while at + HEADER_LEN <= out.len() {
        let header: &[u8; HEADER_LEN] = out[at..at + HEADER_LEN].try_into().expect("header");
        let h = Header::parse(header);
        let content = &out[at + HEADER_LEN..at + HEADER_LEN + usize::from(h.content_length)];
        if h.record_type == RecordType::Stdout as u8 && !content.is_empty() {
            match by_id.iter_mut().find(|(id, _)| *id == h.request_id) {
                Some((_, v)) => v.extend_from_slice(content),
                None => by_id.push((h.request_id, content.to_vec())),
            }
        }
        at += HEADER_LEN + h.body_len();
    }
    by_id.into_iter().map(|(_, v)| v).collect()
}

/// Runs `workload` on the demo app and returns its allocations per request in the steady
/// state, after checking that every request got its answer.
fn allocations_per_request(workload: Workload) -> f64 {
    allocations_per_request_of(workload, demo_worker())
}

/// Like [`allocations_per_request`], for the worker's service.
fn allocations_per_request_of(
    workload: Workload,
    mut worker: Harness<impl fcgi_uring::HttpService>,
) -> f64 {
    let (input, per_round) = workload.input();
    let warm = run_rounds(&mut worker, &input, 64);
    let bodies = stdout_bodies(&warm);
    assert_eq!(bodies.len() as u64, per_round, "one answer per request");
    for body in &bodies {
        let text = String::from_utf8_lossy(body);
        assert!(text.starts_with("Status: 200 OK\r\n"), "{text}");
        assert!(body.ends_with(&workload.answer()), "{text}");
    }
    let rounds = 200;
    let before = allocations();
    let last = run_rounds(&mut worker, &input, rounds);
    let allocs = allocations() - before;
    assert_eq!(stdout_bodies(&last), bodies, "the same answers every round");
    allocs as f64 / (rounds * per_round) as f64
}

/// What `http`'s types allocate for a `GET /hello` through the full surface, none of which the
/// runtime can avoid: the request's one extension, `TrustedParams` (3: the extensions' map,
/// its table, the box). The request's `HeaderMap` is one the worker kept from an earlier
/// response, emptied (a new one allocates twice), and the demo handler answers in the
/// request's map, so that neither allocates. Everything else (params, the request entry, the
/// output) is reused.
const HTTP_TYPES: f64 = 3.0;

#[test]
fn get_hello_allocates_only_what_the_http_types_need() {
    let hello = allocations_per_request(Workload::Hello);
    let hello16 = allocations_per_request(Workload::Hello16);
    println!("allocations per request: GET /hello {hello:.2}, 16 multiplexed {hello16:.2}");
    // The params arena takes a new block now and then (16 requests' params do not fit one).
    assert!(
        hello <= HTTP_TYPES + 0.05,
        "GET /hello: {hello} allocations per request"
    );
    assert!(
        hello16 <= HTTP_TYPES + 0.25,
        "16 x GET /hello: {hello16} allocations per request"
    );
}

/// A 64 KiB body in two STDIN records is received into one buffer sized from CONTENT_LENGTH
/// and handed over as it is: 3 allocations more than `GET /hello` (the body's buffer, and the
/// reference count `bytes` makes when the echoed body is sent as slices of it rather than
/// copied, among them), none per record.
#[test]
fn echo_64k_allocates_one_body_buffer() {
    let echo = allocations_per_request(Workload::Echo64k);
    println!("allocations per request: POST /echo 64 KiB {echo:.2}");
    assert!(
        echo <= HTTP_TYPES + 3.05,
        "POST /echo 64 KiB: {echo} allocations per request"
    );
}

/// `GET /hello` answered with a new `HeaderMap`, as most handlers build their responses.
async fn hello_with_new_headers(
    _req: http::Request<RequestBody>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let mut response = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    *response.headers_mut() = headers;
    Ok(response)
}

/// A handler that builds a new response `HeaderMap` pays its 2 allocations, and no more: the
/// worker keeps that map, emptied, for the next request's headers, so the request's map costs
/// none.
#[test]
fn a_new_response_header_map_is_kept_for_the_next_request() {
    let worker = Harness::new(service_fn(hello_with_new_headers));
    let hello = allocations_per_request_of(Workload::Hello, worker);
    println!("allocations per request: GET /hello answered with a new HeaderMap {hello:.2}");
    assert!(
        hello <= HTTP_TYPES + 2.05,
        "GET /hello with a new response map: {hello} allocations per request"
    );
}
