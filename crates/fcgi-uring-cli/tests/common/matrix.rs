//! The checks every front end runs (tests/nginx.rs, apache.rs, haproxy.rs, caddy.rs,
//! lighttpd.rs), against the app of tests/common/app.rs, over TCP and over a UNIX socket.
//!
//! What differs between proxies is stated in an [`Expect`], each field with the reason, so no
//! proxy gets a weaker check silently.
#![allow(dead_code)]

use super::app::{self, BIG_LEN, ParamsSeen, big_byte};
use super::http_client::{HttpResponse, Upload, request};
use super::proxy::Proxy;
use fcgi_uring::ServerHandle;
use std::io::Write;
use std::net::TcpStream;

/// What one proxy does where proxies legitimately differ (observed, and read in their source).
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// The proxy passes a client's `Proxy:` header on as `HTTP_PROXY` (so the app sees an
    /// ordinary `proxy` header); httpoxy-hardened proxies drop it. Either way it must never be
    /// trusted.
    pub passes_proxy_header: bool,
    /// The proxy sends SERVER_ADDR (the address it accepted the client on).
    pub sends_server_addr: bool,
    /// SERVER_PORT is taken from the client's Host header (80 when it names no port) rather
    /// than from the port the proxy accepted the client on: then it is not a trusted fact.
    pub server_port_from_host: bool,
    /// Largest chunked (length-unknown) upload the proxy forwards, when it has a limit: it
    /// must state CONTENT_LENGTH (CGI), and a proxy that buffers only one buffer's worth
    /// refuses bigger ones with 400.
    pub chunked_upload_limit: Option<usize>,
    /// The proxy turns any status that comes with a `Location` header into 302 (CGI's "client
    /// redirect" rule applied even though the response states its status): HAProxy up to the
    /// fix of haproxy/haproxy#2865 (Debian 12 ships 2.6.12, which has it).
    pub location_becomes_302: bool,
    /// Under 100 concurrent clients multiplexed on few connections, the proxy answers a few
    /// requests with its own 500 (HAProxy 2.6.12: termination state `IH`, an internal error
    /// while waiting for the response head). HAProxy's own bug, not the backend's: the same
    /// config in front of Go's net/http/fcgi fails the same way (docs/deploy/README.md): a
    /// PARAMS record that does not fit in the shared output buffer fails the request
    /// (haproxy/haproxy#3346, fixed by 57faf0971). Tolerated only as a 500 that the proxy's log
    /// shows it made.
    pub internal_errors_when_multiplexing: bool,
}

/// Which backend transport a matrix run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Unix,
}

/// One named check of the matrix.
type Check<'a> = (&'static str, &'a dyn Fn(&Proxy));

/// A proxy in front of the app (dropped in this order: proxy, server, socket directory).
pub struct Running {
    pub proxy: Proxy,
    pub server: ServerHandle,
    _dir: Option<tempfile::TempDir>,
}

/// Starts the app on `transport` and a proxy in front of it with `start_proxy(backend)`
/// (`None`: the proxy is not installed, skip).
pub fn start(
    transport: Transport,
    start_proxy: impl FnOnce(&str) -> Option<Proxy>,
) -> Option<Running> {
    let (server, dir) = match transport {
        Transport::Tcp => (app::start_tcp(), None),
        Transport::Unix => {
            let (s, d) = app::start_unix();
            (s, Some(d))
        }
    };
    let proxy = start_proxy(&server.local_addr().to_string())?;
    Some(Running {
        proxy,
        server,
        _dir: dir,
    })
}

/// Starts the app and the proxy and runs every check. Returns early (skipping) when the proxy
/// is not installed outside CI.
pub fn run(
    transport: Transport,
    start_proxy: impl FnOnce(&str) -> Option<Proxy>,
    expect: Expect,
) -> Option<Running> {
    let running = start(transport, start_proxy)?;
    let p = &running.proxy;
    let checks: [Check<'_>; 10] = [
        ("GET and HEAD", &get_and_head),
        ("POST bodies", &posts),
        ("chunked upload", &|p| chunked_upload(p, expect)),
        ("status codes", &|p| status_codes(p, expect)),
        ("Set-Cookie", &set_cookies),
        ("10 MiB response", &big_response),
        ("slow response", &slow_response),
        ("client disconnects", &client_disconnects_mid_response),
        ("100 concurrent clients", &|p| concurrent_clients(p, expect)),
        ("trusted params", &|p| {
            trusted_params(p, expect);
        }),
    ];
    for (name, check) in checks {
        let started = std::time::Instant::now();
        check(p);
        eprintln!("ok: {name} ({:?})", started.elapsed());
    }
    Some(running)
}

fn ok(p: &Proxy, r: &HttpResponse, what: &str) {
    assert_eq!(
        r.status,
        200,
        "{what}: body {:?}; proxy log:\n{}",
        String::from_utf8_lossy(&r.body),
        p.log()
    );
}

pub fn get_and_head(p: &Proxy) {
    let r = request(p.addr, "GET", "/status/200", &[], Upload::None);
    ok(p, &r, "GET");
    assert_eq!(r.body, b"status 200", "{r:?}");

    let r = request(p.addr, "HEAD", "/status/200", &[], Upload::None);
    ok(p, &r, "HEAD");
    assert_eq!(r.raw_body_len, 0, "HEAD has no body");
}

pub fn posts(p: &Proxy) {
    for size in [0usize, 1024, 1024 * 1024] {
        let body: Vec<u8> = (0..size).map(|i| (i * 31 % 256) as u8).collect();
        let r = request(p.addr, "POST", "/echo", &[], Upload::Fixed(&body));
        ok(p, &r, &format!("POST {size} B"));
        assert_eq!(r.header("x-body-len"), Some(size.to_string().as_str()));
        assert_eq!(r.body.len(), size, "POST {size} B");
        assert!(r.body == body, "POST {size} B echoed intact");
    }
}

pub fn chunked_upload(p: &Proxy, expect: Expect) {
    let size = expect.chunked_upload_limit.unwrap_or(300_000);
    let body: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let r = request(p.addr, "POST", "/echo", &[], Upload::Chunked(&body, 7000));
    ok(p, &r, "chunked upload");
    assert_eq!(r.header("x-body-len"), Some(size.to_string().as_str()));
    assert!(r.body == body, "chunked upload echoed intact");
    if let Some(limit) = expect.chunked_upload_limit {
        let body = vec![b'x'; limit * 2];
        let r = request(p.addr, "POST", "/echo", &[], Upload::Chunked(&body, 7000));
        assert_eq!(
            r.status, 400,
            "the proxy refuses a chunked upload over its limit"
        );
    }
}

pub fn status_codes(p: &Proxy, expect: Expect) {
    for code in [200u16, 204, 301, 304, 404, 500] {
        let r = request(p.addr, "GET", &format!("/status/{code}"), &[], Upload::None);
        if code == 301 && expect.location_becomes_302 && r.status == 302 {
            eprintln!("the proxy turned 301 + Location into 302 (haproxy/haproxy#2865)");
        } else {
            assert_eq!(r.status, code, "status {code}; log:\n{}", p.log());
        }
        match code {
            204 | 304 => {
                assert_eq!(r.raw_body_len, 0, "{code} carries no body: {r:?}");
                assert!(r.header("transfer-encoding").is_none(), "{code}: {r:?}");
            }
            _ => assert_eq!(r.body, format!("status {code}").as_bytes(), "{code}"),
        }
        if code == 301 {
            let location = r.header("location").expect("301 has a Location");
            // Relative or made absolute by the proxy, it must name the same path.
            assert!(
                location == "/moved-here" || location.ends_with("/moved-here"),
                "Location: {location}"
            );
        }
        if code == 304 {
            assert_eq!(r.header("etag"), Some("\"v1\""));
        }
    }
}

pub fn set_cookies(p: &Proxy) {
    let r = request(p.addr, "GET", "/cookies", &[], Upload::None);
    ok(p, &r, "cookies");
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        cookies,
        ["a=1; Path=/", "b=2; HttpOnly", "c=3; Max-Age=60"],
        "every Set-Cookie arrives, separately and in order"
    );
}

fn expected_big() -> Vec<u8> {
    (0..BIG_LEN).map(big_byte).collect()
}

pub fn big_response(p: &Proxy) {
    let r = request(p.addr, "GET", "/big", &[], Upload::None);
    ok(p, &r, "10 MiB");
    assert_eq!(r.body.len(), BIG_LEN);
    assert!(r.body == expected_big(), "10 MiB response intact");
}

pub fn slow_response(p: &Proxy) {
    let r = request(p.addr, "GET", "/slow?ms=300", &[], Upload::None);
    ok(p, &r, "slow");
    assert_eq!(r.body, b"slept 300");
}

/// The client goes away after the first 256 KiB of the 10 MiB response; the server must go on
/// serving (through the same proxy) afterwards.
pub fn client_disconnects_mid_response(p: &Proxy) {
    for _ in 0..3 {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(super::IO_TIMEOUT)).unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < 256 * 1024 {
            let n = super::read_some(&mut s, &mut buf).expect("read part of the response");
            assert!(n > 0, "response ended early");
            got += n;
        }
        drop(s);
    }
    let r = request(p.addr, "GET", "/status/200", &[], Upload::None);
    ok(p, &r, "after a client disconnected");
    big_response(p);
}

/// 100 clients at once, each doing a few requests with its own body. Every answer must be
/// right; the only failure tolerated is the one `expect` names (see
/// [`Expect::internal_errors_when_multiplexing`]), and each must show in the proxy's log.
pub fn concurrent_clients(p: &Proxy, expect: Expect) {
    let addr = p.addr;
    let threads: Vec<_> = (0..100u32)
        .map(|t| {
            std::thread::spawn(move || {
                let mut internal_errors = 0;
                for i in 0..3u32 {
                    let r = request(addr, "GET", "/status/200", &[], Upload::None);
                    if r.status == 500 && expect.internal_errors_when_multiplexing {
                        internal_errors += 1;
                    } else {
                        assert_eq!((r.status, r.body.as_slice()), (200, &b"status 200"[..]));
                    }
                    let body = format!("client {t} request {i}").repeat(50);
                    let r = request(addr, "POST", "/echo", &[], Upload::Fixed(body.as_bytes()));
                    if r.status == 500 && expect.internal_errors_when_multiplexing {
                        internal_errors += 1;
                    } else {
                        assert_eq!(r.status, 200);
                        assert_eq!(r.body, body.as_bytes(), "client {t} request {i}");
                    }
                }
                internal_errors
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        failed,
        0,
        "{failed} of 100 clients failed; log:\n{}",
        p.log()
    );
    let internal_errors: usize = results.into_iter().map(|r| r.unwrap_or(0)).sum();
    if internal_errors > 0 {
        // The proxy made those 500s itself: its log says so (HAProxy: termination state IH,
        // an internal error while waiting for the response head).
        // The proxy writes its log line after the answer: wait for it.
        super::wait_for(
            "the proxy to log its internal errors",
            super::HANG_GUARD,
            || p.log().matches("IH--").count() >= internal_errors,
        );
        let logged = p.log().matches(" 500 ").count();
        let ih = p.log().matches("IH--").count();
        eprintln!("proxy internal errors: {internal_errors} (log: {logged} 500s, {ih} IH)");
        assert!(
            ih >= internal_errors,
            "500s not made by the proxy; log:\n{}",
            p.log()
        );
        // The server goes on serving.
        let r = request(addr, "GET", "/status/200", &[], Upload::None);
        assert_eq!(r.status, 200);
    }
}

/// REMOTE_ADDR, REMOTE_PORT, SERVER_* and HTTPS arrive as trusted params; a client's `Proxy:`
/// and `X-Real-IP:` headers never do. Returns what the app saw (for the docs' list).
pub fn trusted_params(p: &Proxy, expect: Expect) -> ParamsSeen {
    let port = p.addr.port().to_string();
    let host = format!("localhost:{port}");
    let r = request(
        p.addr,
        "GET",
        "/params",
        &[
            ("Host", &host),
            ("Proxy", "http://evil.example:8080"),
            ("X-Real-IP", "6.6.6.6"),
        ],
        Upload::None,
    );
    ok(p, &r, "params");
    let seen = ParamsSeen::parse(&r.body);
    eprintln!("trusted params seen: {seen:#?}");
    assert_eq!(seen.remote_addr, "127.0.0.1", "{seen:?}");
    assert_eq!(seen.remote_port, r.local_port.to_string(), "{seen:?}");
    assert!(!seen.https, "plain HTTP is not HTTPS: {seen:?}");
    assert_eq!(seen.server_port, port, "{seen:?}");
    assert!(!seen.server_name.is_empty(), "{seen:?}");
    if expect.sends_server_addr {
        assert_eq!(seen.server_addr, "127.0.0.1", "{seen:?}");
    } else {
        assert_eq!(seen.server_addr, "", "{seen:?}");
    }
    assert!(
        seen.trusted_leaks.is_empty(),
        "client headers trusted: {seen:?}"
    );
    assert_eq!(
        seen.header_x_real_ip, "6.6.6.6",
        "X-Real-IP is only a header"
    );
    let proxy_header = if expect.passes_proxy_header {
        "http://evil.example:8080"
    } else {
        ""
    };
    assert_eq!(seen.header_proxy, proxy_header, "{seen:?}");

    // A Host header without a port: SERVER_PORT tells whether it comes from the connection or
    // from what the client wrote.
    let r = request(
        p.addr,
        "GET",
        "/params",
        &[("Host", "localhost")],
        Upload::None,
    );
    ok(p, &r, "params, Host without a port");
    let without_port = ParamsSeen::parse(&r.body);
    let expected_port = if expect.server_port_from_host {
        "80"
    } else {
        port.as_str()
    };
    assert_eq!(without_port.server_port, expected_port, "{without_port:?}");
    seen
}
