//! One request through every layer above the socket: the bytes nginx sends for `GET /hello`
//! -> protocol events -> `http::Request` (cgi) -> the demo handler (polled inline, as the runtime
//! does) -> CGI head + STDOUT + END_REQUEST bytes. No IO: this is the user-space CPU the
//! runtime spends per request besides the ring and the kernel's TCP work.

use criterion::{Criterion, criterion_group, criterion_main};
use fcgi_client::nginx_params;
use fcgi_proto::nv::encode_pair;
use fcgi_proto::record::{self, RecordType};
use fcgi_proto::{Connection, Event, Limits};
use fcgi_uring::RequestBody;
use fcgi_uring::bench as cgi;
use http_body::Body;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

#[global_allocator]
static GLOBAL: fcgi_uring::alloc::MiMalloc = fcgi_uring::alloc::MiMalloc;

fn nginx_request(uri: &str) -> Vec<u8> {
    let headers = vec![
        ("Host".to_owned(), "localhost:8080".to_owned()),
        (
            "User-Agent".to_owned(),
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".to_owned(),
        ),
        (
            "Accept".to_owned(),
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8".to_owned(),
        ),
        ("Accept-Language".to_owned(), "en-US,en;q=0.5".to_owned()),
        (
            "Accept-Encoding".to_owned(),
            "gzip, deflate, br, zstd".to_owned(),
        ),
        ("Connection".to_owned(), "keep-alive".to_owned()),
    ];
    let mut params = Vec::new();
    for (n, v) in nginx_params("GET", uri, &headers, None) {
        encode_pair(&mut params, &n, &v);
    }
    let mut out = Vec::new();
    record::encode_begin_request(&mut out, 1, 1, true);
    record::encode_stream(&mut out, RecordType::Params, 1, &params);
    record::encode_stream_end(&mut out, RecordType::Params, 1);
    record::encode_stream_end(&mut out, RecordType::Stdin, 1);
    out
}

/// Handles one request the way a worker does; returns the output length.
fn handle(conn: &mut Connection, input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut request = None;
    conn.receive(input, out, &mut |event| {
        if let Event::Request {
            id, role, params, ..
        } = event
        {
            request = Some((id, role, params));
        }
    })
    .expect("valid request");
    let (id, role, params) = request.expect("one request");
    let req = cgi::build_request(params, role, RequestBody::empty()).expect("valid params");
    let mut cx = Context::from_waker(Waker::noop());
    let fut = pin!(fcgi_uring_cli::demo::app(req));
    let Poll::Ready(Ok(resp)) = fut.poll(&mut cx) else {
        panic!("the demo /hello answers on its first poll");
    };
    let (parts, body) = resp.into_parts();
    let mut head = Vec::with_capacity(128);
    cgi::encode_head(&parts, body.size_hint().exact(), &mut head);
    let mut body = pin!(body);
    let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
        panic!("one data frame");
    };
    let data = frame.into_data().unwrap_or_default();
    let mut content = head;
    content.extend_from_slice(&data);
    record::encode_stream(out, RecordType::Stdout, id, &content);
    record::encode_stream_end(out, RecordType::Stdout, id);
    conn.end_request(id, 0, out);
    out.len()
}

fn bench(c: &mut Criterion) {
    let input = nginx_request("/hello");
    let mut conn = Connection::new(Limits::default());
    let mut out = Vec::with_capacity(4096);
    c.bench_function("nginx GET /hello: bytes in -> handler -> bytes out", |b| {
        b.iter(|| {
            out.clear();
            black_box(handle(&mut conn, black_box(&input), &mut out))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
