//! The default limits never refuse what a stock-configured front end forwards (docs/limits.md).
//!
//! For each proxy (nginx, Apache httpd, HAProxy, lighttpd, Caddy, each with its packaged
//! defaults for request headers) and each of its header limits (longest header line, longest
//! header name, most header fields, largest header block), the test finds the proxy's own
//! boundary by bisection over real requests, then checks that:
//! - the largest request the proxy accepts is forwarded and answered 200 by the server with
//!   its default [`fcgi_uring::Config`], every test header intact (the handler echoes their
//!   count, bytes and a digest);
//! - one byte or one field more is refused by the proxy itself with a 4xx (so the test sits
//!   at the proxy's real boundary, not below it);
//! - the boundary is the figure docs/limits.md states.
//!
//! A refusal by the server (END_REQUEST OVERLOADED) would show as a 5xx from the proxy below
//! its own boundary, and fail the test.

mod common;

use bytes::Bytes;
use common::proxy::{self, Proxy};
use fcgi_uring::{Counter, RequestBody, ServerHandle, service_fn};
use http::{Request, Response};
use http_body_util::Full;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Test headers are the ones whose name starts with this letter (no standard header does, so
/// what a proxy adds is left out).
const MARK: char = 'q';

/// What the handler saw of the test headers: `count=N bytes=B digest=D`; `GET /slow` first
/// waits at [`SLOW_GATE`].
async fn echo(req: Request<RequestBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/slow" {
        SLOW_GATE.pass().await;
    }
    let seen = Seen::of(
        req.headers()
            .iter()
            .filter(|(name, _)| name.as_str().starts_with(MARK))
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
    );
    Ok(Response::new(Full::new(Bytes::from(seen.to_string()))))
}

/// Count, name + value bytes and an order-independent digest of a set of headers.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    count: usize,
    bytes: usize,
    digest: u64,
}

impl Seen {
    fn of<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Seen {
        let mut seen = Seen::default();
        for (name, value) in headers {
            seen.count += 1;
            seen.bytes += name.len() + value.len();
            let hash = fnv1a(fnv1a(fnv1a(FNV_OFFSET, name), b":"), value);
            seen.digest = seen.digest.wrapping_add(hash);
        }
        seen
    }

    /// What the handler should see of `headers` as the client sent them.
    fn sent(headers: &[(String, String)]) -> Seen {
        let lower: Vec<(String, &str)> = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
            .collect();
        Seen::of(lower.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "count={} bytes={} digest={:016x}",
            self.count, self.bytes, self.digest
        )
    }
}

/// Where `GET /slow` waits: closed by [`haproxy_keeps_to_the_fcgi_max_reqs_answered`] until
/// every one of its concurrent requests has reached the server (or been answered by HAProxy
/// itself), so that they are all in flight at once.
static SLOW_GATE: std::sync::LazyLock<Gate> = std::sync::LazyLock::new(Gate::default);

/// A gate for handlers: counts those that reached it since it closed, and lets them through
/// when it opens.
#[derive(Default)]
struct Gate {
    closed: AtomicBool,
    reached: AtomicUsize,
    opened: tokio::sync::Notify,
}

impl Gate {
    fn close(&self) {
        self.reached.store(0, Ordering::SeqCst);
        self.closed.store(true, Ordering::SeqCst);
    }

    fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    fn reached(&self) -> usize {
        self.reached.load(Ordering::SeqCst)
    }

    async fn pass(&self) {
        self.reached.fetch_add(1, Ordering::SeqCst);
        loop {
            // Made before the check: an `open` after it still wakes this one.
            let opened = self.opened.notified();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            opened.await;
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The server with its default limits (one worker, TCP on an ephemeral port).
fn server() -> ServerHandle {
    fcgi_uring::Server::new(common::test_config())
        .start(|| service_fn(echo))
        .expect("server starts")
}

/// The request head: request line, `Host`, `Connection: close`, `headers`, blank line.
fn head(headers: &[(String, String)]) -> Vec<u8> {
    let mut head = format!("{}Host: localhost\r\nConnection: close\r\n", REQUEST_LINE);
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

const REQUEST_LINE: &str = "GET /limits HTTP/1.1\r\n";
/// Bytes of [`head`] without test headers.
const FIXED_HEAD: usize = REQUEST_LINE.len() + "Host: localhost\r\nConnection: close\r\n\r\n".len();

/// Which header limit a probe tests, and its size: the header line (`name: value`, without
/// CRLF), the header name, the number of test header fields (as short as can be, or each as
/// long as Apache allows), or the whole request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Line,
    Name,
    Fields,
    WideFields,
    Head,
}

/// Apache's longest header line (`LimitRequestFieldSize 8190`; the test finds 8191 without
/// CRLF).
const APACHE_LINE: usize = 8191;

impl Probe {
    /// The test headers of a request of size `n`.
    fn headers(self, n: usize) -> Vec<(String, String)> {
        let mark = MARK.to_string();
        match self {
            Probe::Line => vec![(mark, "v".repeat(n.saturating_sub(3)))],
            Probe::Name => vec![(mark + &"n".repeat(n.saturating_sub(1)), "v".into())],
            Probe::Fields => (0..n).map(|i| (short_name(i), "1".into())).collect(),
            Probe::WideFields => (0..n)
                .map(|i| {
                    let name = format!("{MARK}{i:03}");
                    let value = "v".repeat(APACHE_LINE - name.len() - 2);
                    (name, value)
                })
                .collect(),
            Probe::Head => filled_head(n),
        }
    }
}

/// The `i`-th of the names `q0`..`qz`, `q00`..`qzz`, ... (shortest first).
fn short_name(mut i: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut name = MARK.to_string();
    let mut width = 1;
    while i >= DIGITS.len().pow(width) {
        i -= DIGITS.len().pow(width);
        width += 1;
    }
    for _ in 0..width {
        name.push(char::from(DIGITS[i % DIGITS.len()]));
        i /= DIGITS.len();
    }
    name
}

/// Longest line [`filled_head`] uses: under every proxy's limit for one line.
const FILL_LINE: usize = 4000;

/// Test headers that make the request head exactly `n` bytes: lines of about [`FILL_LINE`]
/// bytes, `qNNN: vvv...`.
fn filled_head(n: usize) -> Vec<(String, String)> {
    let room = n.saturating_sub(FIXED_HEAD);
    let lines = room.div_ceil(FILL_LINE + 2).max(1);
    (0..lines)
        .map(|i| {
            // Each line takes its share of `room`, CRLF included.
            let size = room / lines + usize::from(i < room % lines);
            let name = format!("{MARK}{i:03}");
            let value = "v".repeat(size.saturating_sub(name.len() + 4));
            (name, value)
        })
        .collect()
}

/// What came back for one request.
struct Reply {
    status: Option<u16>,
    body: String,
}

/// Sends `head` on a new connection (written by another thread, so a proxy that answers
/// before reading everything cannot block the test) and reads the reply until the proxy
/// closes. A connection reset after the answer keeps what was read.
fn send(addr: SocketAddr, head: Vec<u8>) -> Reply {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to proxy");
    stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&head);
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match common::read_some(&mut stream, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    sending.join().expect("writer thread");
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok());
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply { status, body }
}

/// The content of a chunked body (chunk extensions and trailers ignored).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(size @ 1..) = usize::from_str_radix(size, 16) else {
            break;
        };
        out.push_str(rest.get(..size).unwrap_or(rest));
        body = rest.get(size + 2..).unwrap_or_default();
    }
    out
}

/// One header limit of one proxy: where to look for its boundary and the figure expected.
struct Limit {
    probe: Probe,
    /// A size the proxy forwards, and one past its boundary.
    between: (usize, usize),
    /// The largest size the proxy forwards intact (docs/limits.md).
    expect: usize,
    /// What the proxy does past its boundary.
    past: Outcome,
    /// Set where the handler can see only some of the test headers sent: then only their
    /// number is checked, against this bound (see [`HEADER_MAP_NAMES`]).
    seen_at_most: Option<usize>,
}

/// Distinct header names an `http::HeaderMap` holds (3/4 of its 32,768 slots). The server
/// accepts every params pair within its limits, but when building the request's `HeaderMap`
/// it drops the `HTTP_*` params past this many distinct names (docs/limits.md): only Caddy
/// forwards that many.
const HEADER_MAP_NAMES: usize = 24_576;

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 200, every test header seen by the handler as sent.
    Forwarded,
    /// A 4xx made by the proxy: the request never reached the server.
    Refused,
    /// 200, but the handler saw the test headers changed: only expected where a proxy is
    /// known to cut what it forwards (Caddy cuts a pair to fit 65,500 bytes).
    Altered,
}

/// A running proxy in front of a running server.
struct Setup {
    name: &'static str,
    proxy: Proxy,
    server: ServerHandle,
}

impl Setup {
    fn start(name: &'static str, start: fn(&str) -> Option<Proxy>) -> Option<Setup> {
        let server = server();
        let proxy = start(&server.local_addr().to_string())?;
        let setup = Setup {
            name,
            proxy,
            server,
        };
        setup.warm_up();
        Some(setup)
    }

    /// Sends small requests until one is answered 200 (at most ten): Apache just started has
    /// been seen closing its first connections with no answer, whether or not it passed the
    /// request on, and a request it passed on late would be counted during a later probe.
    fn warm_up(&self) {
        let headers = Probe::Line.headers(100);
        for _ in 0..10 {
            if send(self.proxy.addr, head(&headers)).status == Some(200) {
                return;
            }
            eprintln!(
                "{}: no answer to a warm-up request, sending another",
                self.name
            );
        }
        panic!("{} answered none of ten small requests", self.name);
    }

    fn requests_seen(&self) -> u64 {
        self.server.stats().get(Counter::Requests)
    }

    /// Sends a request of size `n` and tells what became of it; any other answer (a 5xx, a
    /// 4xx from the server, no answer) fails the test.
    fn ask(&self, limit: &Limit, n: usize) -> Outcome {
        let probe = limit.probe;
        let headers = probe.headers(n);
        let expect = Seen::sent(&headers).to_string();
        let some_seen = |body: &str| {
            let count = body
                .strip_prefix("count=")
                .and_then(|rest| rest.split(' ').next()?.parse::<usize>().ok());
            // The proxy's own headers (Host, X-Forwarded-*) may take a few of the names.
            matches!((limit.seen_at_most, count), (Some(most), Some(count))
                if headers.len() > most && (most - 8..=most).contains(&count))
        };
        // A connection the proxy closes with no answer is asked again (at most twice): Apache,
        // nginx and lighttpd have each been seen doing that now and then, also with code from
        // before the current changes (a limit is refused with a 4xx answer, not silence). A
        // proxy that keeps doing it still fails below.
        let mut attempts = 0;
        let (reply, reached_server) = loop {
            let before = self.requests_seen();
            let reply = send(self.proxy.addr, head(&headers));
            let reached_server = self.requests_seen() > before;
            if reply.status.is_none() && attempts < 2 {
                eprintln!("{} {probe:?} at {n}: no answer, asking again", self.name);
                attempts += 1;
                continue;
            }
            break (reply, reached_server);
        };
        match reply.status {
            Some(200) if reply.body == expect || some_seen(&reply.body) => Outcome::Forwarded,
            Some(200) => {
                eprintln!(
                    "{} {probe:?} at {n}: {} arrived as {}",
                    self.name, expect, reply.body
                );
                Outcome::Altered
            }
            Some(400..=499) if !reached_server => Outcome::Refused,
            other => panic!(
                "{} {probe:?} at {n}: status {other:?} (reached the server: {reached_server}); \
                 body {:?}; proxy log:\n{}",
                self.name,
                reply.body,
                self.proxy.log()
            ),
        }
    }

    /// Finds the largest size the proxy forwards intact, by bisection, and checks it and the
    /// size after it against `limit`.
    fn check(&self, limit: &Limit) {
        let name = self.name;
        let probe = limit.probe;
        let (mut ok, mut past) = limit.between;
        assert_eq!(
            self.ask(limit, ok),
            Outcome::Forwarded,
            "{name} {probe:?} at {ok}"
        );
        while past - ok > 1 {
            let mid = ok + (past - ok) / 2;
            match self.ask(limit, mid) {
                Outcome::Forwarded => ok = mid,
                outcome if outcome == limit.past => past = mid,
                outcome => panic!("{name} {probe:?} at {mid}: {outcome:?}"),
            }
        }
        let after = self.ask(limit, ok + 1);
        eprintln!("{name} {probe:?}: {ok} forwarded, {} {after:?}", ok + 1);
        assert_eq!(after, limit.past, "{name} {probe:?} at {}", ok + 1);
        assert_eq!(
            ok, limit.expect,
            "{name} {probe:?}: the proxy's boundary moved"
        );
    }

    /// No request was refused or failed by the server, whatever the proxy sent.
    fn server_refused_nothing(&self) {
        let stats = self.server.stats();
        for counter in [
            Counter::ParamsLimit,
            Counter::ConnOverloaded,
            Counter::WorkerOverloaded,
            Counter::ProtocolError,
            Counter::BadRequest,
        ] {
            assert_eq!(stats.get(counter), 0, "{}: {counter:?}", self.name);
        }
    }
}

fn run(name: &'static str, start: fn(&str) -> Option<Proxy>, limits: &[Limit]) {
    let Some(setup) = Setup::start(name, start) else {
        return;
    };
    for limit in limits {
        setup.check(limit);
    }
    setup.server_refused_nothing();
}

/// A limit the proxy enforces by refusing (4xx): its largest size is `expect`.
fn refused_past(probe: Probe, between: (usize, usize), expect: usize) -> Limit {
    Limit {
        probe,
        between,
        expect,
        past: Outcome::Refused,
        seen_at_most: None,
    }
}

/// nginx 1.22 as Debian ships it: `large_client_header_buffers 4 8k` (a line fits one 8 KiB
/// buffer, CRLF included; the head fits them and the 1 KiB `client_header_buffer_size` one),
/// and `max_headers 1000` (backported by Debian; upstream since 1.27.x): 998 test fields
/// plus Host and Connection. Its params go in one record of at most 64 KiB.
#[test]
fn nginx_forwards_up_to_its_own_limits() {
    run(
        "nginx",
        proxy::nginx,
        &[
            refused_past(Probe::Line, (100, 9000), 8190),
            refused_past(Probe::Name, (100, 9000), 8187),
            refused_past(Probe::Fields, (10, 20_000), 998),
            refused_past(Probe::Head, (1000, 40_000), 32_076),
        ],
    );
}

/// Apache httpd 2.4: `LimitRequestFieldSize 8190`, `LimitRequestFields 100` (98 test fields
/// plus Host and Connection), no limit on the whole head: 100 fields of 8 KiB each, about
/// 800 KB, which mod_proxy_fcgi sends as params (in records of at most 16 KiB; it would skip,
/// not send, a pair over 16 KiB).
#[test]
fn apache_forwards_up_to_its_own_limits() {
    run(
        "apache",
        proxy::apache,
        &[
            refused_past(Probe::Line, (100, 20_000), APACHE_LINE),
            refused_past(Probe::Name, (100, 20_000), 8188),
            refused_past(Probe::Fields, (10, 2000), 98),
            refused_past(Probe::WideFields, (1, 200), 98),
        ],
    );
}

/// HAProxy 2.6: `tune.bufsize 16384` less `tune.maxrewrite 1024` for the whole head,
/// `tune.http.maxhdr 101` fields (99 test fields plus Host and Connection), and header names
/// of at most 255 bytes (HTX stores a name's length in one byte).
#[test]
fn haproxy_forwards_up_to_its_own_limits() {
    run(
        "haproxy",
        proxy::haproxy,
        &[
            refused_past(Probe::Line, (100, 40_000), 15_230),
            refused_past(Probe::Name, (100, 40_000), 255),
            refused_past(Probe::Fields, (10, 2000), 99),
            refused_past(Probe::Head, (1000, 40_000), 15_280),
        ],
    );
}

/// lighttpd 1.4.69: `server.max-request-field-size 8192` for the whole head (request line and
/// every field), answered 431 past it; fields are limited only by that size.
#[test]
fn lighttpd_forwards_up_to_its_own_limits() {
    run(
        "lighttpd",
        proxy::lighttpd,
        &[
            refused_past(Probe::Line, (100, 20_000), 8130),
            refused_past(Probe::Name, (100, 20_000), 8127),
            refused_past(Probe::Fields, (10, 20_000), 1021),
            refused_past(Probe::Head, (1000, 40_000), 8192),
        ],
    );
}

/// Caddy 2.6 (Go 1.19 net/http): `MaxHeaderBytes` 1 MiB plus Go's 4 KiB read slack for the
/// whole head, answered 431 past it; no limit of its own on a line, a name or the number of
/// fields. Its FastCGI client cuts a pair to fit 65,500 bytes (`maxWrite`): a longer header
/// arrives cut short, by Caddy (so past that size the test expects an altered header, not a
/// refusal), and a name too long for that panics in Caddy. Fields beyond what an
/// `http::HeaderMap` holds reach the server but not the handler ([`HEADER_MAP_NAMES`]).
#[test]
fn caddy_forwards_up_to_its_own_limits() {
    let cut_by_caddy = |probe, between, expect| Limit {
        past: Outcome::Altered,
        ..refused_past(probe, between, expect)
    };
    run(
        "caddy",
        proxy::caddy,
        &[
            cut_by_caddy(Probe::Line, (100, 65_500), 65_489),
            cut_by_caddy(Probe::Name, (100, 65_488), 65_486),
            Limit {
                seen_at_most: Some(HEADER_MAP_NAMES),
                ..refused_past(Probe::Fields, (10, 300_000), 110_196)
            },
            refused_past(Probe::Head, (1000, 2_000_000), 1_052_672),
        ],
    );
}

/// HAProxy with `option get-values` takes FCGI_MAX_REQS as the number of requests it may have
/// in flight on one connection (overriding `option max-reqs 100`): the default answer is
/// `max_requests_per_conn` (256), so 700 concurrent requests, more than one connection may
/// carry, are all answered 200 and none is refused with OVERLOADED.
#[test]
fn haproxy_keeps_to_the_fcgi_max_reqs_answered() {
    const CLIENTS: usize = 700;
    let Some(setup) = Setup::start("haproxy", proxy::haproxy) else {
        return;
    };
    let addr = setup.proxy.addr;
    let request = move || {
        let head = "GET /slow HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        send(addr, head.as_bytes().to_vec())
    };
    // One request first, so that HAProxy has asked GET_VALUES on a connection it reuses.
    assert_eq!(request().status, Some(200));
    SLOW_GATE.close();
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let answered = answered.clone();
            std::thread::spawn(move || {
                let status = request().status;
                answered.fetch_add(1, Ordering::SeqCst);
                status
            })
        })
        .collect();
    // While the gate is closed, a request is either held at the server or was answered by
    // HAProxy itself (its internal errors, below).
    common::wait_for(
        "every request held at the server or answered",
        common::HANG_GUARD,
        || SLOW_GATE.reached() + answered.load(Ordering::SeqCst) >= CLIENTS,
    );
    SLOW_GATE.open();
    let statuses: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    let most = setup.server.max_requests_in_flight_per_conn();
    eprintln!("most requests in flight on one connection: {most}");
    // HAProxy 2.6.12 answers a few multiplexed requests with its own 500 (termination state
    // IH, an internal error; tests/common/matrix.rs `internal_errors_when_multiplexing`):
    // tolerated only as many as its log shows it made. A refusal by the server would be
    // counted below.
    let failed: Vec<_> = statuses.iter().filter(|s| **s != Some(200)).collect();
    let log = setup.proxy.log();
    let internal_errors = log
        .lines()
        .filter(|l| l.contains(" 500 ") && l.contains(" IH"))
        .count();
    assert!(
        failed.iter().all(|s| **s == Some(500)) && failed.len() == internal_errors,
        "{} of {CLIENTS} failed: {failed:?}; server {:?}; log:\n{log}",
        failed.len(),
        setup.server.stats(),
    );
    eprintln!("HAProxy's own internal errors: {internal_errors}");
    let limits = fcgi_uring::Limits::default();
    assert!(
        most > 100,
        "HAProxy kept to its own max-reqs 100 (most {most})"
    );
    assert!(most <= limits.max_requests_per_conn, "most {most}");
    setup.server_refused_nothing();
}
