//! The protocol layer on the hot path: decoding a typical nginx request (BEGIN, one PARAMS
//! record padded to 8, empty PARAMS, empty STDIN, in one input slice) and encoding the
//! record-level `/hello` response (STDOUT with a CGI head and body, STDOUT end, END_REQUEST).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fcgi_proto::nv::encode_pair;
use fcgi_proto::record::{
    RecordType, encode_begin_request, encode_record, encode_stream, encode_stream_end,
};
use fcgi_proto::{Connection, Event, Limits};
use std::hint::black_box;

/// The params nginx sends with its stock `fastcgi_params`, then the request's headers.
const NGINX_PARAMS: &[(&str, &str)] = &[
    ("QUERY_STRING", ""),
    ("REQUEST_METHOD", "GET"),
    ("CONTENT_TYPE", ""),
    ("CONTENT_LENGTH", ""),
    ("SCRIPT_NAME", "/hello"),
    ("REQUEST_URI", "/hello"),
    ("DOCUMENT_URI", "/hello"),
    ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("REQUEST_SCHEME", "http"),
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("SERVER_SOFTWARE", "nginx/1.22.1"),
    ("REMOTE_ADDR", "127.0.0.1"),
    ("REMOTE_PORT", "52814"),
    ("SERVER_ADDR", "127.0.0.1"),
    ("SERVER_PORT", "8080"),
    ("SERVER_NAME", "localhost"),
    ("REDIRECT_STATUS", "200"),
    ("HTTP_HOST", "localhost:8080"),
    (
        "HTTP_USER_AGENT",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    (
        "HTTP_ACCEPT",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"),
    ("HTTP_ACCEPT_ENCODING", "gzip, deflate, br, zstd"),
    ("HTTP_CONNECTION", "keep-alive"),
    ("HTTP_UPGRADE_INSECURE_REQUESTS", "1"),
];

const HEAD: &[u8] = b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n";
const BODY: &[u8] = b"Hello, World!";

/// The bytes nginx sends for one request on id 1 (KEEP_CONN set, as with keepalive upstreams).
fn nginx_request() -> Vec<u8> {
    let mut params = Vec::new();
    for (name, value) in NGINX_PARAMS {
        encode_pair(&mut params, name.as_bytes(), value.as_bytes());
    }
    let padding = (8 - params.len() % 8) % 8;
    let mut out = Vec::new();
    encode_begin_request(&mut out, 1, 1, true);
    encode_record(&mut out, RecordType::Params, 1, &params);
    // nginx pads to 8: set the padding length in the header just written.
    let header_at = out.len() - params.len() - 8;
    out[header_at + 6] = padding as u8;
    out.extend(std::iter::repeat_n(0, padding));
    encode_stream_end(&mut out, RecordType::Params, 1);
    encode_stream_end(&mut out, RecordType::Stdin, 1);
    out
}

/// Feeds one request; returns the params count (so the work is not optimised away).
fn decode(conn: &mut Connection, input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut pairs = 0;
    let mut ended = false;
    conn.receive(input, out, &mut |event| match event {
        Event::Request { params, .. } => pairs = black_box(params).len(),
        Event::StdinEnd { .. } => ended = true,
        _ => {}
    })
    .expect("valid request");
    assert!(ended);
    pairs
}

fn bench_decode(c: &mut Criterion) {
    let input = nginx_request();
    println!(
        "nginx request: {} bytes on the wire, {} params",
        input.len(),
        NGINX_PARAMS.len()
    );
    let mut group = c.benchmark_group("decode_nginx_request");
    group.bench_function("fresh_connection", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            let mut conn = Connection::new(Limits::default());
            decode(&mut conn, black_box(&input), &mut out)
        })
    });
    group.bench_function("keepalive_connection", |b| {
        let mut conn = Connection::new(Limits::default());
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            let n = decode(&mut conn, black_box(&input), &mut out);
            conn.end_request(1, 0, &mut out);
            out.clear();
            n
        })
    });
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let input = nginx_request();
    c.bench_function("encode_hello_response", |b| {
        b.iter_batched_ref(
            || {
                let mut conn = Connection::new(Limits::default());
                let mut out = Vec::with_capacity(256);
                decode(&mut conn, &input, &mut out);
                (conn, out)
            },
            |(conn, out)| {
                encode_stream(out, RecordType::Stdout, 1, black_box(HEAD));
                encode_stream(out, RecordType::Stdout, 1, black_box(BODY));
                encode_stream_end(out, RecordType::Stdout, 1);
                assert!(conn.end_request(1, 0, out));
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
