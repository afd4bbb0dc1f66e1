//! Hostile input against the real server: every malformed input gets the spec's answer or a
//! prompt close, limits and timeouts reclaim what a peer leaves hanging, and after each case the
//! same server still answers a normal request. Timeouts are short (configured below); the waits
//! are hang guards, never speed assertions.

mod common;

use bytes::Bytes;
use common::*;
use fcgi_client::{Client, Record, RequestSpec};
use fcgi_proto::nv::encode_pair;
use fcgi_proto::record::{self, ProtocolStatus, RecordType};
use fcgi_uring::{Config, Counter, RequestBody, Server, ServerHandle, Timeouts, service_fn};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The application under attack.

/// Counts guards made (a handler started, a streaming body made) and dropped.
#[derive(Clone, Default)]
struct Drops {
    made: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Drops {
    fn guard(&self) -> Guard {
        self.made.fetch_add(1, Ordering::SeqCst);
        Guard(self.dropped.clone())
    }

    fn count(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until at least `n` guards were dropped.
    fn wait_for(&self, n: usize) {
        wait_for(&format!("{n} guards dropped"), HANG_GUARD, || {
            self.count() >= n
        });
    }

    /// Waits (bounded) until at least `n` handlers (or bodies) started.
    fn wait_for_started(&self, n: usize) {
        wait_for(&format!("{n} handlers started"), HANG_GUARD, || {
            self.made.load(Ordering::SeqCst) >= n
        });
    }
}

struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Response bodies: whole, endless 64 KiB frames, or a first frame and then nothing ever.
enum Out {
    Full(Option<Bytes>),
    Endless(#[allow(dead_code)] Guard),
    HeadThenHang(Option<Bytes>, #[allow(dead_code)] Guard),
}

impl Body for Out {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Out::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Out::Endless(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![7u8; 65536]))))),
            Out::HeadThenHang(first, _) => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            },
        }
    }
}

fn text(s: impl Into<Bytes>) -> Response<Out> {
    Response::new(Out::Full(Some(s.into())))
}

/// Routes: `/hello`; `/count` reads the body as a stream and answers its length and a checksum
/// (`/digest`: one that changes when bytes are reordered, see [`digest`]);
/// `/ignore` answers without reading; `/headers` lists the headers and body length it got;
/// `/panic`; `/forever` never answers; `/endless` streams forever; `/hang` sends a first chunk
/// and never ends.
async fn app(drops: Drops, req: Request<RequestBody>) -> Result<Response<Out>, Infallible> {
    let _guard = drops.guard();
    Ok(match req.uri().path() {
        "/hello" => text("fine"),
        "/count" => {
            let mut body = req.into_body();
            let (mut len, mut sum) = (0u64, 0u64);
            loop {
                match body.frame().await {
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            len += d.len() as u64;
                            sum = d.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
                        }
                    }
                    Some(Err(e)) => return Ok(text(format!("error: {e}"))),
                    None => break,
                }
            }
            text(format!("len={len} sum={sum}"))
        }
        "/digest" => match req.into_body().collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                text(format!("len={} digest={}", body.len(), digest(&body)))
            }
            Err(e) => text(format!("error: {e}")),
        },
        "/ignore" => text("ignored"),
        "/headers" => {
            let mut lines = String::new();
            for (name, value) in req.headers() {
                lines.push_str(&format!("{name}: {value:?}\n"));
            }
            lines.push_str(&format!("query: {:?}\n", req.uri().query()));
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            lines.push_str(&format!("body: {:?}\n", body.map(|b| b.len())));
            text(lines)
        }
        "/panic" => panic!("handler bug"),
        "/forever" => {
            std::future::pending::<()>().await;
            text("never")
        }
        "/endless" => Response::new(Out::Endless(drops.guard())),
        "/hang" => Response::new(Out::HeadThenHang(
            Some(Bytes::from_static(b"partial")),
            drops.guard(),
        )),
        _ => text("not found"),
    })
}

/// A checksum of `bytes` that depends on their order.
fn digest(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |d, b| d.wrapping_mul(31).wrapping_add(u64::from(*b)))
}

fn hostile_config() -> Config {
    test_config()
        .into_builder()
        .max_requests_per_conn(64)
        .max_body_buffer(256 * 1024)
        .max_output_buffer(256 * 1024)
        .timeouts(Timeouts {
            idle: Duration::from_millis(1500),
            params: Duration::from_millis(800),
            body: Duration::from_millis(800),
            handler: Duration::from_millis(1500),
            write: Duration::from_millis(800),
            linger: Duration::from_millis(800),
        })
        .build()
        .unwrap()
}

fn start(config: Config) -> (ServerHandle, Drops) {
    let drops = Drops::default();
    let d = drops.clone();
    let server = Server::new(config)
        .start(move || {
            let d = d.clone();
            service_fn(move |req| app(d.clone(), req))
        })
        .expect("server starts");
    (server, drops)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A normal request on a new connection still gets its answer.
fn alive(server: &ServerHandle) {
    let r = get(server.local_addr(), "/hello");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"fine"[..]));
}

/// One record, every field as given (lengths may lie).
fn raw(version: u8, kind: u8, id: u16, content: &[u8], padding: u8) -> Vec<u8> {
    let len = content.len().min(65535) as u16;
    let mut out = vec![version, kind];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[padding, 0]);
    out.extend_from_slice(content);
    out.extend(std::iter::repeat_n(0u8, usize::from(padding)));
    out
}

/// Reads until the server closes; returns what came before. Fails if it does not close within
/// the IO timeout.
fn read_until_closed(c: &mut Client) -> Vec<Record> {
    let mut got = Vec::new();
    loop {
        match c.read_record() {
            Ok(Some(r)) => got.push(r),
            Ok(None) => return got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("server did not close the connection: {e}")
            }
            // A reset or a close inside a record is a close too.
            Err(_) => return got,
        }
    }
}

/// Sends params and an empty STDIN for a request already begun on `id`.
fn params_and_stdin(spec: &RequestSpec, id: u16, stdin: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut params = Vec::new();
    for (n, v) in spec.params() {
        encode_pair(&mut params, &n, &v);
    }
    record::encode_stream(&mut out, RecordType::Params, id, &params);
    record::encode_stream_end(&mut out, RecordType::Params, id);
    record::encode_stream(&mut out, RecordType::Stdin, id, stdin);
    record::encode_stream_end(&mut out, RecordType::Stdin, id);
    out
}

fn begin(id: u16, keep_conn: bool) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode_begin_request(&mut out, id, 1, keep_conn);
    out
}

fn keep(uri: &str) -> RequestSpec {
    let mut spec = RequestSpec::get(uri);
    spec.keep_conn = true;
    spec
}

fn body_of(c: &Collected) -> String {
    String::from_utf8_lossy(&split_cgi(&c.stdout).1).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Malformed records.

#[test]
fn versions_other_than_1_close_the_connection() {
    let (server, _) = start(hostile_config());
    for version in [0u8, 2, 255] {
        let mut c = connect(server.local_addr());
        c.send_raw(&raw(version, 1, 1, &[0, 1, 1, 0, 0, 0, 0, 0], 0))
            .unwrap();
        assert!(read_until_closed(&mut c).is_empty(), "version {version}");
        alive(&server);
    }
    assert!(server.stats().get(Counter::ProtocolError) >= 3);
}

#[test]
fn lengths_and_padding_at_their_maxima() {
    let (server, _) = start(hostile_config());
    let mut c = connect(server.local_addr());
    // A STDIN record of 65535 bytes with 255 bytes of padding, twice.
    let spec = keep("/count");
    let mut out = begin(1, true);
    let mut params = Vec::new();
    for (n, v) in spec.params() {
        encode_pair(&mut params, &n, &v);
    }
    out.extend(raw(1, 4, 1, &params, 255));
    out.extend(raw(1, 4, 1, &[], 255));
    let chunk = vec![1u8; 65535];
    out.extend(raw(1, 5, 1, &chunk, 255));
    out.extend(raw(1, 5, 1, &chunk, 255));
    out.extend(raw(1, 5, 1, &[], 255));
    // Management records at the maxima: GET_VALUES with a 65535-byte body, an unknown type.
    let mut names = Vec::new();
    encode_pair(&mut names, b"FCGI_MPXS_CONNS", b"");
    names.resize(65535, 0);
    out.extend(raw(1, 9, 0, &names, 255));
    out.extend(raw(1, 255, 0, &vec![0u8; 65535], 255));
    c.send_raw(&out).unwrap();
    let (mut got, mut order) = (Default::default(), Vec::new());
    let mut management = Vec::new();
    while management.len() < 2 || order.is_empty() {
        let r = c.read_record().unwrap().expect("open");
        if r.header.request_id == 0 {
            management.push(r.header.record_type);
        } else {
            record_into(&mut got, &mut order, r);
        }
    }
    assert_eq!(body_of(&got[&1]), "len=131070 sum=131070");
    assert_eq!(management, vec![10, 11]);
    let r = c.request(&keep("/hello")).unwrap();
    assert_eq!(r.body, b"fine");
}

#[test]
fn lengths_that_do_not_fit() {
    let (server, _) = start(hostile_config());
    // A params name announced as 2^31-1 bytes: refused before any allocation.
    let mut c = connect(server.local_addr());
    let mut params = vec![0xFF, 0xFF, 0xFF, 0xFF, 1];
    params.extend_from_slice(b"AB");
    let mut out = begin(1, true);
    out.extend(raw(1, 4, 1, &params, 0));
    c.send_raw(&out).unwrap();
    let (got, _) = collect_until_ended(&mut c, &[1]);
    assert_eq!(
        got[&1].protocol_status,
        Some(ProtocolStatus::Overloaded as u8)
    );
    // A name-value pair cut by the end of the params stream: protocol error, closed.
    let mut out = begin(2, true);
    out.extend(raw(1, 4, 2, &[5, 5, b'A'], 0));
    out.extend(raw(1, 4, 2, &[], 0));
    c.send_raw(&out).unwrap();
    read_until_closed(&mut c);
    // A record announcing 65535 bytes that never come, then the peer closes.
    let mut c = connect(server.local_addr());
    let mut out = raw(1, 9, 0, &[], 0);
    out[4] = 0xFF;
    out[5] = 0xFF;
    out.extend_from_slice(&[0u8; 100]);
    c.send_raw(&out).unwrap();
    c.shutdown_write().unwrap();
    read_until_closed(&mut c);
    // The same without closing: reclaimed by the idle timeout.
    let mut c = connect(server.local_addr());
    c.send_raw(&out).unwrap();
    read_until_closed(&mut c);
    alive(&server);
}

#[test]
fn begin_with_a_wrong_body_length_closes() {
    let (server, _) = start(hostile_config());
    for len in [0usize, 7, 9, 65535] {
        let mut c = connect(server.local_addr());
        c.send_raw(&raw(1, 1, 1, &vec![0u8; len], 0)).unwrap();
        assert!(read_until_closed(&mut c).is_empty(), "length {len}");
    }
    alive(&server);
}

#[test]
fn management_types_on_request_ids_and_records_for_inactive_ids_are_ignored() {
    let (server, _) = start(hostile_config());
    let mut c = connect(server.local_addr());
    let mut out = Vec::new();
    let mut names = Vec::new();
    encode_pair(&mut names, b"FCGI_MAX_CONNS", b"");
    out.extend(raw(1, 9, 5, &names, 0)); // GET_VALUES on id 5
    out.extend(raw(1, 11, 5, &[9; 8], 0)); // UNKNOWN_TYPE on id 5
    out.extend(raw(1, 3, 5, &[0; 8], 0)); // END_REQUEST from the peer
    out.extend(raw(1, 6, 5, b"out", 0)); // STDOUT from the peer
    out.extend(raw(1, 7, 5, b"err", 0)); // STDERR from the peer
    out.extend(raw(1, 200, 5, b"?", 0)); // undefined type
    // Records for ids that were never begun.
    out.extend(raw(1, 4, 9, b"\x01\x01AB", 0));
    out.extend(raw(1, 4, 9, &[], 0));
    out.extend(raw(1, 5, 9, b"body", 0));
    out.extend(raw(1, 5, 9, &[], 0));
    out.extend(raw(1, 8, 9, b"data", 0));
    out.extend(raw(1, 2, 9, &[], 0));
    c.send_raw(&out).unwrap();
    // Nothing comes back for any of them; the connection still serves.
    let r = c.request(&keep("/hello")).unwrap();
    assert_eq!(r.body, b"fine");
    // ...and a record for the id that just ended is ignored too.
    c.send_raw(&raw(1, 5, 1, b"late", 0)).unwrap();
    c.abort(1).unwrap();
    let r = c.request(&keep("/hello")).unwrap();
    assert_eq!(r.body, b"fine");
}

#[test]
fn duplicate_begin_on_an_active_id_closes_and_drops_the_handler() {
    let (server, drops) = start(hostile_config());
    let mut c = connect(server.local_addr());
    c.begin(&keep("/forever"), 1).unwrap();
    drops.wait_for_started(1);
    c.send_raw(&begin(1, true)).unwrap();
    let got = read_until_closed(&mut c);
    assert!(got.iter().all(|r| r.header.record_type != 3));
    drops.wait_for(1);
    alive(&server);
}

#[test]
fn abort_at_every_stage_gives_exactly_one_end_request() {
    let (server, drops) = start(hostile_config());
    let mut c = connect(server.local_addr());
    let spec = keep("/count");
    // 1: after BEGIN. 2: mid-params. 3: dispatched, handler waiting for its body. 4: twice.
    let mut out = begin(1, true);
    out.extend(begin(2, true));
    out.extend(raw(1, 4, 2, b"\x0e\x03REQUEST_METHOD", 0));
    out.extend(begin(3, true));
    let full = params_and_stdin(&spec, 3, b"");
    // Everything of request 3 but its STDIN: params only.
    let params_only = &full[..full.len() - 8];
    out.extend_from_slice(params_only);
    out.extend(begin(4, true));
    out.extend_from_slice(&params_and_stdin(&keep("/forever"), 4, b"")[..]);
    c.send_raw(&out).unwrap();
    // Requests 3 and 4 running: the server read everything before them, 1 and 2 included.
    drops.wait_for_started(2);
    for id in [1, 2, 3, 4, 4] {
        c.abort(id).unwrap();
    }
    let (got, _) = collect_until_ended(&mut c, &[1, 2, 3, 4]);
    // 5: after the response (inactive): ignored.
    let r = c.request(&keep("/hello")).unwrap();
    assert_eq!(r.body, b"fine");
    c.abort(1).unwrap();
    let r = c.request(&keep("/hello")).unwrap();
    assert_eq!(r.body, b"fine");
    for id in [1, 2, 3, 4] {
        assert_eq!(got[&id].end_requests, 1, "request {id}");
    }
    drops.wait_for(2 + 2); // the two aborted handlers and the two /hello
    alive(&server);
}

// ---------------------------------------------------------------------------------------------
// Limits.

#[test]
fn ten_thousand_ids_opened_and_never_finished_are_bounded_and_reclaimed() {
    let (server, _) = start(hostile_config());
    let mut c = connect(server.local_addr());
    let mut out = Vec::new();
    for id in 1..=10_000u16 {
        out.extend(begin(id, true));
        out.extend(raw(1, 4, id, b"\x04\x01HOST", 0)); // params begun, never ended
    }
    let mut writer = c.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.send_raw(&out));
    // 64 stay active (max_requests_per_conn); the others are refused at once.
    let mut overloaded = 0;
    while overloaded < 10_000 - 64 {
        let r = c.read_record().unwrap().expect("open");
        assert_eq!(r.header.record_type, 3);
        assert_eq!(r.content[4], ProtocolStatus::Overloaded as u8);
        overloaded += 1;
    }
    sender.join().unwrap().unwrap();
    // The params timeout closes the connection that holds the rest.
    read_until_closed(&mut c);
    let stats = server.stats();
    assert_eq!(stats.get(Counter::ConnOverloaded), 10_000 - 64);
    assert_eq!(stats.get(Counter::ParamsTimeout), 1);
    alive(&server);
}

#[test]
fn requests_in_flight_per_worker_past_the_limit_get_overloaded() {
    let config = hostile_config()
        .into_builder()
        .max_requests_per_worker(3)
        .build()
        .unwrap();
    let (server, drops) = start(config);
    let mut clients: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = connect(server.local_addr());
            c.begin(&keep("/forever"), 1).unwrap();
            c
        })
        .collect();
    drops.wait_for_started(3);
    let mut c = connect(server.local_addr());
    c.begin(&keep("/hello"), 1).unwrap();
    let (got, _) = collect_until_ended(&mut c, &[1]);
    assert_eq!(
        got[&1].protocol_status,
        Some(ProtocolStatus::Overloaded as u8)
    );
    assert_eq!(server.stats().get(Counter::WorkerOverloaded), 1);
    // The handler deadline frees the slots: 504 each.
    for c in &mut clients {
        let (got, _) = collect_until_ended(c, &[1]);
        assert!(split_cgi(&got[&1].stdout).0.contains("504"));
    }
    drops.wait_for(3);
    alive(&server);
}

// ---------------------------------------------------------------------------------------------
// Bodies.

/// Sends `total` STDIN bytes of value 1 on `id` in 32 KiB records, generated as they go.
fn stream_stdin(c: &mut Client, id: u16, total: usize) -> io::Result<()> {
    let chunk = vec![1u8; 32 * 1024];
    let mut rec = Vec::new();
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        rec.clear();
        record::encode_record(&mut rec, RecordType::Stdin, id, &chunk[..n]);
        c.send_raw(&rec)?;
        sent += n;
    }
    rec.clear();
    record::encode_stream_end(&mut rec, RecordType::Stdin, id);
    c.send_raw(&rec)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_100_mib_body_streams_with_bounded_memory_read_or_not() {
    const TOTAL: usize = 100 * 1024 * 1024;
    // Reading 100 MiB through a debug build takes over the hostile 1.5 s handler timeout on a
    // loaded machine (a 504 was seen): this test is about memory, so the handler gets time.
    let config = hostile_config()
        .into_builder()
        .handler_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (server, _) = start(config);
    let before = rss_kib();
    for (uri, expect) in [
        ("/count", format!("len={TOTAL} sum={TOTAL}")),
        ("/ignore", "ignored".to_owned()),
    ] {
        let addr = server.local_addr().clone();
        let mut c = connect(&addr);
        let mut out = begin(1, true);
        let spec = keep(uri);
        let all = params_and_stdin(&spec, 1, b"");
        out.extend_from_slice(&all[..all.len() - 8]); // no STDIN end yet
        c.send_raw(&out).unwrap();
        // The sender runs on its own connection handle: the server answers /ignore before the
        // body is in, and must go on reading (and discarding) the rest.
        let fd = c.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let mut w = fd;
            stream_stdin(&mut w, 1, TOTAL)
        });
        let mut got = HashMap::new();
        while got.get(&1).is_none_or(|g: &Collected| g.end_requests == 0) {
            match c.read_record().expect("read") {
                Some(rec) => record_into(&mut got, &mut Vec::new(), rec),
                None => panic!("{uri}: closed before END_REQUEST; {}", server.stats()),
            }
        }
        assert_eq!(body_of(&got[&1]), expect, "{uri}");
        sender.join().unwrap().unwrap();
        let r = c.request(&keep("/hello")).unwrap();
        assert_eq!(r.body, b"fine", "{uri}");
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "RSS grew by {grown} KiB for 200 MiB of bodies"
    );
    alive(&server);
}

#[test]
fn content_length_is_advisory_stdin_is_the_authority() {
    let (server, _) = start(hostile_config());
    for cl in [None, Some("-1"), Some("abc"), Some("5"), Some("999999")] {
        let mut c = connect(server.local_addr());
        let mut spec = keep("/headers");
        spec.method = "POST".into();
        let mut params = Vec::new();
        for (n, v) in spec.params() {
            if n != b"CONTENT_LENGTH" {
                encode_pair(&mut params, &n, &v);
            }
        }
        if let Some(cl) = cl {
            encode_pair(&mut params, b"CONTENT_LENGTH", cl.as_bytes());
        }
        let mut out = begin(1, true);
        record::encode_stream(&mut out, RecordType::Params, 1, &params);
        record::encode_stream_end(&mut out, RecordType::Params, 1);
        record::encode_stream(&mut out, RecordType::Stdin, 1, b"0123456789");
        record::encode_stream_end(&mut out, RecordType::Stdin, 1);
        c.send_raw(&out).unwrap();
        let (got, _) = collect_until_ended(&mut c, &[1]);
        let body = body_of(&got[&1]);
        assert!(body.contains("body: Ok(10)"), "{cl:?}: {body}");
        let shown = body.lines().find(|l| l.starts_with("content-length"));
        match cl {
            Some("5") | Some("999999") => assert!(shown.is_some(), "{cl:?}: {body}"),
            _ => assert!(shown.is_none(), "{cl:?}: {body}"),
        }
    }
    alive(&server);
}

/// Uploads cut into one-byte STDIN records, sent with their params in one write: two whose
/// records interleave and one whose records follow one another. Each body arrives whole and in
/// order, on both IO backends (on io_uring the worker receives uploads itself, into one buffer
/// that can hold tens of thousands of such records), and the server goes on answering.
#[test]
fn uploads_in_one_byte_records_arrive_whole() {
    for io in [fcgi_uring::IoMode::Uring, fcgi_uring::IoMode::Epoll] {
        let config = hostile_config().into_builder().io(io).build().unwrap();
        let (server, _) = start(config);
        let len = 20_000;
        let bodies: Vec<Vec<u8>> = (1..=3).map(|seed| patterned(seed, len)).collect();
        let mut spec = keep("/digest");
        spec.method = "POST".into();
        let mut out = Vec::new();
        for id in 1..=3u16 {
            out.extend(begin(id, true));
            let mut params = Vec::new();
            for (n, v) in spec.params() {
                if n != b"CONTENT_LENGTH" {
                    encode_pair(&mut params, &n, &v);
                }
            }
            encode_pair(&mut params, b"CONTENT_LENGTH", len.to_string().as_bytes());
            record::encode_stream(&mut out, RecordType::Params, id, &params);
            record::encode_stream_end(&mut out, RecordType::Params, id);
        }
        let byte = |id: u16, b: u8| raw(1, RecordType::Stdin as u8, id, &[b], 0);
        for (&one, &two) in bodies[0].iter().zip(&bodies[1]) {
            out.extend(byte(1, one));
            out.extend(byte(2, two));
        }
        for &b in &bodies[2] {
            out.extend(byte(3, b));
        }
        for id in 1..=3u16 {
            record::encode_stream_end(&mut out, RecordType::Stdin, id);
        }
        let mut c = connect(server.local_addr());
        c.send_raw(&out).unwrap();
        let (got, _) = collect_until_ended(&mut c, &[1, 2, 3]);
        for (id, body) in (1..=3u16).zip(&bodies) {
            assert_eq!(
                body_of(&got[&id]),
                format!("len={len} digest={}", digest(body)),
                "{io:?}: request {id}"
            );
        }
        alive(&server);
    }
}

#[test]
fn cr_lf_nul_in_params_never_become_headers() {
    let (server, _) = start(hostile_config());
    let mut c = connect(server.local_addr());
    let mut spec = keep("/headers?a=1");
    for (name, value) in [
        ("HTTP_X_INJECT", "a\r\nSet-Cookie: evil=1"),
        ("HTTP_X_LF", "a\nb"),
        ("HTTP_X_NUL", "a\0b"),
        ("HTTP_X_OK", "plain"),
        ("HTTP_X_BAD\r\nNAME", "v"),
    ] {
        spec.extra_params
            .push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
    }
    c.begin(&spec, 1).unwrap();
    let (got, _) = collect_until_ended(&mut c, &[1]);
    let body = body_of(&got[&1]);
    assert!(body.contains("x-ok: \"plain\""), "{body}");
    for bad in ["x-inject", "x-lf", "x-nul", "set-cookie", "evil", "x-bad"] {
        assert!(!body.to_lowercase().contains(bad), "{bad} reached: {body}");
    }
    let (head, _) = split_cgi(&got[&1].stdout);
    assert!(!head.to_lowercase().contains("evil"));
    alive(&server);
}

#[test]
fn duplicate_params_follow_the_documented_policy() {
    let (server, _) = start(hostile_config());
    let mut c = connect(server.local_addr());
    let mut spec = keep("/headers");
    for (name, value) in [
        ("HTTP_COOKIE", "a=1"),
        ("HTTP_COOKIE", "b=2"),
        ("QUERY_STRING", "first=1"),
        ("QUERY_STRING", "last=1"),
    ] {
        spec.extra_params
            .push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
    }
    c.begin(&spec, 1).unwrap();
    let (got, _) = collect_until_ended(&mut c, &[1]);
    let body = body_of(&got[&1]);
    // Header params: all kept, as repeated headers. Others: the last one wins.
    assert!(body.contains("cookie: \"a=1\""), "{body}");
    assert!(body.contains("cookie: \"b=2\""), "{body}");
    assert!(body.contains("query: Some(\"last=1\")"), "{body}");
    alive(&server);
}

// ---------------------------------------------------------------------------------------------
// Garbage, departures, slow peers.

#[test]
fn garbage_on_the_port_is_closed_promptly() {
    let (server, _) = start(hostile_config());
    let mut inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        // The start of a TLS 1.2 ClientHello.
        vec![
            0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x5b, 0x90,
        ],
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..8 {
        let bytes = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        inputs.push(bytes);
    }
    for input in inputs {
        let mut c = connect(server.local_addr());
        // The server may close before it read everything: a failed write is fine.
        let _ = c.send_raw(&input);
        read_until_closed(&mut c);
    }
    alive(&server);
}

#[test]
fn peer_closing_mid_request_and_mid_response_drops_the_handler() {
    let (server, drops) = start(hostile_config());
    // Mid-request: the handler is waiting for its body.
    let mut c = connect(server.local_addr());
    let all = params_and_stdin(&keep("/count"), 1, b"");
    let mut out = begin(1, true);
    out.extend_from_slice(&all[..all.len() - 8]);
    c.send_raw(&out).unwrap();
    drops.wait_for_started(1);
    drop(c);
    drops.wait_for(1);
    // Mid-response: an endless body.
    let mut c = connect(server.local_addr());
    c.begin(&keep("/endless"), 1).unwrap();
    let first = c.read_record().unwrap().expect("open");
    assert_eq!(first.header.record_type, 6);
    drop(c);
    drops.wait_for(1 + 2); // the handler future, then its body
    alive(&server);
}

#[test]
fn a_peer_that_stops_reading_is_closed_by_the_write_timeout() {
    let (server, drops) = start(hostile_config());
    let mut c = connect(server.local_addr());
    c.begin(&keep("/endless"), 1).unwrap();
    // Never read: the body is paused at the output limit, then the write timeout closes.
    drops.wait_for(2);
    assert_eq!(server.stats().get(Counter::WriteTimeout), 1);
    drop(c);
    // Asking for answers without reading them (GET_VALUES) stops at the limit too.
    let mut c = connect(server.local_addr());
    c.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut names = Vec::new();
    encode_pair(&mut names, b"FCGI_MAX_REQS", b"");
    let one = raw(1, 9, 0, &names, 0);
    let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 4096).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.send_raw(&many).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the server never stopped reading"
        );
    }
    assert!(server.stats().get(Counter::OutputFull) >= 1);
    alive(&server);
}

/// A peer that stops reading an answer the kernel took whole (the server's send buffer holds
/// what the peer's closed window refuses): nothing is queued in the server, so its write
/// deadline has nothing to watch; the kernel resets the connection at `timeouts.write`
/// (TCP_USER_TIMEOUT on the listener), rather than it staying open until the idle deadline
/// (off here).
#[test]
fn a_peer_that_stops_reading_an_answer_the_kernel_holds_is_reset() {
    let mut timeouts = *hostile_config().timeouts();
    timeouts.idle = Duration::ZERO;
    let config = hostile_config()
        .into_builder()
        .timeouts(timeouts)
        .build()
        .unwrap();
    let (server, _) = start(config);
    let fcgi_uring::Addr::Tcp(addr) = server.local_addr().clone() else {
        panic!("a TCP server");
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small window: most of the answer stays in the server's send buffer.
    socket.set_recv_buffer_size(1024).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    let ours = stream.local_addr().unwrap().port();
    let mut spec = keep("/headers");
    spec.headers.push(("X-Pad".into(), "x".repeat(12 * 1024)));
    let mut out = Vec::new();
    spec.encode(1, &mut out);
    std::io::Write::write_all(&mut stream, &out).unwrap();
    // Never read. The answer waits in the server's send buffer.
    wait_for("the answer in the kernel", HANG_GUARD, || {
        server_side_send_queue(addr.port(), ours).is_some_and(|q| q > 0)
    });
    wait_for("the server's end reset", HANG_GUARD, || {
        server_side_send_queue(addr.port(), ours).is_none()
    });
    assert_eq!(
        server.stats().get(Counter::WriteTimeout),
        0,
        "not the server's deadline"
    );
    drop(stream);
    alive(&server);
}

/// The send queue of the established TCP connection from local `port` to local `peer` (the
/// server's end), from `ss`; `None` once there is none.
fn server_side_send_queue(port: u16, peer: u16) -> Option<u64> {
    let out = std::process::Command::new("ss")
        .args(["-Htn", "state", "established"])
        .args([
            "sport",
            "=",
            &format!(":{port}"),
            "dport",
            "=",
            &format!(":{peer}"),
        ])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn slow_bodies_params_and_idle_connections_are_reclaimed() {
    let (server, _) = start(hostile_config());
    // Slowloris body: part of the body, then nothing.
    let mut c = connect(server.local_addr());
    let all = params_and_stdin(&keep("/count"), 1, b"abc");
    let mut out = begin(1, true);
    out.extend_from_slice(&all[..all.len() - 8]);
    c.send_raw(&out).unwrap();
    let (got, _) = collect_until_ended(&mut c, &[1]);
    assert!(body_of(&got[&1]).contains("timed out"), "{:?}", got[&1]);
    assert_eq!(server.stats().get(Counter::BodyTimeout), 1);
    // Params that never end.
    let mut c = connect(server.local_addr());
    let mut out = begin(1, true);
    out.extend(raw(1, 4, 1, b"\x04\x01HOST", 0));
    c.send_raw(&out).unwrap();
    read_until_closed(&mut c);
    assert_eq!(server.stats().get(Counter::ParamsTimeout), 1);
    // An idle keep-alive connection.
    let mut c = connect(server.local_addr());
    let r = c.request(&keep("/hello")).unwrap();
    assert_eq!(r.body, b"fine");
    read_until_closed(&mut c);
    assert!(server.stats().get(Counter::IdleTimeout) >= 1);
    // KEEP_CONN=0 and a peer that never closes after our FIN.
    let mut c = connect(server.local_addr());
    let r = c.request(&RequestSpec::get("/hello")).unwrap();
    assert_eq!(r.body, b"fine");
    assert!(c.read_record().unwrap().is_none()); // our FIN
    wait_for("the linger timeout", HANG_GUARD, || {
        server.stats().get(Counter::LingerTimeout) > 0
    });
    drop(c);
    alive(&server);
}

/// A request whose params never end closes its connection at the params deadline even while
/// other requests on that connection complete one after another: their completing does not
/// restart it.
#[test]
fn params_that_never_end_time_out_while_other_requests_complete() {
    let (server, _) = start(hostile_config());
    let mut c = connect(server.local_addr());
    let mut out = begin(7, true);
    out.extend(raw(1, 4, 7, b"\x04\x01HOST", 0));
    c.send_raw(&out).unwrap();
    let started = Instant::now();
    let mut answered = 0;
    while let Ok(r) = c.request(&keep("/hello")) {
        assert_eq!(r.body, b"fine");
        answered += 1;
        assert!(
            started.elapsed() < HANG_GUARD,
            "still open after {answered} requests"
        );
    }
    assert!(answered > 0, "the other requests were answered meanwhile");
    assert_eq!(server.stats().get(Counter::ParamsTimeout), 1);
    alive(&server);
}

#[test]
fn panics_and_handlers_past_their_deadline_affect_only_their_request() {
    let (server, drops) = start(hostile_config());
    let mut c = connect(server.local_addr());
    assert_eq!(c.request(&keep("/panic")).unwrap().status, 500);
    // Never answers: 504.
    let r = c.request(&keep("/forever")).unwrap();
    assert_eq!(r.status, 504);
    // Sent a first chunk, then hangs: cut short, STDOUT ended, one END_REQUEST.
    c.begin(&keep("/hang"), 1).unwrap();
    let (got, _) = collect_until_ended(&mut c, &[1]);
    assert!(got[&1].stdout_ended);
    assert_eq!(got[&1].end_requests, 1);
    assert!(got[&1].stdout.ends_with(b"partial"));
    assert_eq!(server.stats().get(Counter::HandlerTimeout), 2);
    drops.wait_for(1 + 1 + 2);
    let r = c.request(&keep("/hello")).unwrap();
    assert_eq!(r.body, b"fine");
    alive(&server);
}
