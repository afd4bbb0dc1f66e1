//! The admin listener: counters that add up exactly after requests of known kinds, per-worker
//! series that sum to the totals, readiness, and clear HTTP errors for bad input that cost the
//! FastCGI side nothing.

mod common;

use bytes::Bytes;
use common::http_client::{Upload, request};
use common::metrics::{Page, admin_addr, get, scrape};
use common::*;
use fcgi_client::RequestSpec;
use fcgi_proto::nv;
use fcgi_proto::record::{self, RecordType};
use fcgi_uring::{Config, Readiness, RequestBody, Role, Server, ServerHandle, service_fn};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `/code/NNN` answers status NNN, `/slow` never answers, anything else 200.
async fn app(req: Request<RequestBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/slow" {
        std::future::pending::<()>().await;
    }
    let status = path
        .strip_prefix("/code/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
    *r.status_mut() = status;
    Ok(r)
}

fn start(workers: usize) -> ServerHandle {
    let config = Config::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .workers(workers)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(2))
        .admin_listen(Some("127.0.0.1:0".parse().unwrap()))
        .max_requests_per_conn(2)
        .max_value_len(1000)
        .params_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    Server::new(config).start(|| service_fn(app)).unwrap()
}

/// BEGIN_REQUEST, PARAMS and empty STDIN (and DATA, for a FILTER) of `spec` as request `id`.
fn raw_request(spec: &RequestSpec, id: u16, keep_conn: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    record::encode_begin_request(&mut bytes, id, spec.role, keep_conn);
    let mut params = Vec::new();
    for (n, v) in spec.params() {
        nv::encode_pair(&mut params, &n, &v);
    }
    record::encode_stream(&mut bytes, RecordType::Params, id, &params);
    record::encode_stream_end(&mut bytes, RecordType::Params, id);
    record::encode_stream_end(&mut bytes, RecordType::Stdin, id);
    if spec.role == Role::Filter as u16 {
        record::encode_stream_end(&mut bytes, RecordType::Data, id);
    }
    bytes
}

/// Sends `spec` alone on a new connection and returns the END_REQUEST's protocol status.
fn one(server: &ServerHandle, spec: &RequestSpec) -> u8 {
    let mut c = connect(server.local_addr());
    c.send_raw(&raw_request(spec, 1, false)).unwrap();
    let (got, _) = collect_until_ended(&mut c, &[1]);
    got[&1].protocol_status.expect("END_REQUEST")
}

#[test]
fn counters_add_up_after_known_requests_and_workers_sum_to_the_total() {
    let server = start(2);
    let admin = admin_addr(&server);
    let addr = server.local_addr().clone();
    let sent = [(200, 7), (404, 3), (503, 2), (302, 1)];
    for (code, n) in sent {
        for _ in 0..n {
            let r = get_fcgi(&addr, &format!("/code/{code}"));
            assert_eq!(r.status, code);
        }
    }
    let mut authorizer = RequestSpec::get("/auth");
    authorizer.role = Role::Authorizer as u16;
    for _ in 0..2 {
        assert_eq!(one(&server, &authorizer), 0);
    }
    let mut filter = RequestSpec::get("/file");
    filter.role = Role::Filter as u16;
    assert_eq!(one(&server, &filter), 0);
    // Refused before dispatch: unknown role (UNKNOWN_ROLE), a params value over
    // max_value_len (OVERLOADED).
    let mut unknown = RequestSpec::get("/x");
    unknown.role = 9;
    assert_eq!(one(&server, &unknown), 3);
    let mut big = RequestSpec::get("/x");
    big.extra_params
        .push((b"HTTP_X_BIG".to_vec(), vec![b'a'; 2000]));
    assert_eq!(one(&server, &big), 2);
    // Two requests in flight on one connection (max_requests_per_conn = 2), a third refused
    // OVERLOADED; then both aborted by the peer.
    let mut c = connect(&addr);
    let slow = RequestSpec::get("/slow");
    for id in 1..=3 {
        c.send_raw(&raw_request(&slow, id, true)).unwrap();
    }
    let (got, _) = collect_until_ended(&mut c, &[3]);
    assert_eq!(got[&3].protocol_status, Some(2));
    wait_for("two requests in flight", HANG_GUARD, || {
        scrape(admin).n("fcgi_uring_requests_in_flight") == 2
    });
    c.abort(1).unwrap();
    c.abort(2).unwrap();
    let (got, _) = collect_until_ended(&mut c, &[1, 2]);
    assert!(got.values().all(|g| g.protocol_status == Some(0)));
    drop(c);
    // A connection that never completes its params: closed at timeouts.params.
    let mut stuck = TcpStream::connect(match &addr {
        fcgi_uring::Addr::Tcp(sa) => *sa,
        _ => unreachable!(),
    })
    .unwrap();
    stuck.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let begin = raw_request(&slow, 1, true);
    stuck.write_all(&begin[..20]).unwrap();
    assert_eq!(
        read_some(&mut stuck, &mut [0; 16]).unwrap(),
        0,
        "closed by the server"
    );

    // One connection each: 13 by status, 2 authorizers, 1 filter, 2 refused; then the one of
    // the aborted requests and the stuck one. 16 requests answered.
    let connections = 13 + 2 + 1 + 2 + 1 + 1;
    wait_for("every connection closed", HANG_GUARD, || {
        let p = scrape(admin);
        p.n("fcgi_uring_connections_open") == 0
            && p.n("fcgi_uring_connections_accepted_total") == connections
    });
    let p = scrape(admin);
    let expect = [
        ("fcgi_uring_requests_total{role=\"responder\"}", 13 + 2),
        ("fcgi_uring_requests_total{role=\"authorizer\"}", 2),
        ("fcgi_uring_requests_total{role=\"filter\"}", 1),
        ("fcgi_uring_responses_total{code_class=\"2xx\"}", 7 + 2 + 1),
        ("fcgi_uring_responses_total{code_class=\"3xx\"}", 1),
        ("fcgi_uring_responses_total{code_class=\"4xx\"}", 3),
        ("fcgi_uring_responses_total{code_class=\"5xx\"}", 2),
        ("fcgi_uring_responses_total{code_class=\"1xx\"}", 0),
        (
            "fcgi_uring_end_requests_total{protocol_status=\"request_complete\"}",
            16 + 2,
        ),
        (
            "fcgi_uring_end_requests_total{protocol_status=\"overloaded\"}",
            2,
        ),
        (
            "fcgi_uring_end_requests_total{protocol_status=\"unknown_role\"}",
            1,
        ),
        ("fcgi_uring_limit_hits_total{limit=\"params\"}", 1),
        (
            "fcgi_uring_limit_hits_total{limit=\"max_requests_per_conn\"}",
            1,
        ),
        (
            "fcgi_uring_limit_hits_total{limit=\"max_requests_per_worker\"}",
            0,
        ),
        ("fcgi_uring_timeouts_total{timeout=\"params\"}", 1),
        ("fcgi_uring_timeouts_total{timeout=\"idle\"}", 0),
        ("fcgi_uring_aborted_requests_total", 2),
        ("fcgi_uring_requests_in_flight", 0),
        ("fcgi_uring_connections_closed_total{reason=\"timeout\"}", 1),
        // The 16 answered and the two refused before dispatch: we close after their
        // END_REQUEST (KEEP_CONN=0). The aborted ones' connection: the peer closed first.
        (
            "fcgi_uring_connections_closed_total{reason=\"keep_conn_off\"}",
            18,
        ),
        ("fcgi_uring_connections_closed_total{reason=\"peer\"}", 1),
        ("fcgi_uring_response_duration_seconds_count", 16),
        ("fcgi_uring_handler_duration_seconds_count", 16),
        (
            "fcgi_uring_response_duration_seconds_bucket{le=\"+Inf\"}",
            16,
        ),
        ("fcgi_uring_protocol_errors_total", 0),
        ("fcgi_uring_ready", 1),
        ("fcgi_uring_workers", 2),
    ];
    // The backend the server reports (and runs on) is the one it chose.
    let backend = server.backend().expect("FastCGI workers run on a backend");
    let label = format!("fcgi_uring_io_backend{{io_backend=\"{backend}\"}}");
    assert_eq!(p.n(&label), 1, "{label}");
    let mut wrong = Vec::new();
    for (series, want) in expect {
        let got = p.n(series);
        if got != want {
            wrong.push(format!("{series} = {got}, expected {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}\n{}", wrong.join("\n"), p.text);
    assert!(p.get("fcgi_uring_received_bytes_total") > 0.0);
    assert!(p.get("fcgi_uring_sent_bytes_total") > 0.0);
    assert!(p.get("process_resident_memory_bytes") > 0.0);
    assert!(p.get("process_open_fds") > 0.0);
    p.check_worker_sums();
    // Both workers took connections (SO_REUSEPORT spreads them), so the sum is not trivial.
    let per_worker: Vec<u64> = (0..2)
        .map(|w| {
            p.n(&format!(
                "fcgi_uring_worker_connections_accepted_total{{worker=\"{w}\"}}"
            ))
        })
        .collect();
    assert_eq!(
        per_worker.iter().sum::<u64>(),
        connections,
        "{per_worker:?}"
    );
}

fn get_fcgi(addr: &fcgi_uring::Addr, uri: &str) -> fcgi_client::Response {
    common::get(addr, uri)
}

/// The whole exchange with the admin listener of raw `bytes`, until it closes.
fn raw_admin(admin: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn bad_admin_requests_get_clear_http_errors_and_cost_the_fastcgi_side_nothing() {
    let server = start(1);
    let admin = admin_addr(&server);
    let r = get(admin, "/nope", &[]);
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("/metrics"));
    let r = request(admin, "POST", "/metrics", &[], Upload::Fixed(b"x"));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = request(admin, "GET", "/metrics", &[], Upload::Fixed(b"0123456789"));
    assert_eq!(r.status, 413);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = raw_admin(admin, huge.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    // A client that sends half a head and stops: 408 once HEAD_TIMEOUT passed. Meanwhile the
    // FastCGI side answers as usual.
    let mut slow = TcpStream::connect(admin).unwrap();
    slow.set_read_timeout(Some(HANG_GUARD)).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
    assert_eq!(get_fcgi(server.local_addr(), "/hello").status, 200);
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    // None of it reached a worker.
    let p = scrape(admin);
    assert_eq!(p.n("fcgi_uring_connections_accepted_total"), 1);
    assert_eq!(p.n("fcgi_uring_protocol_errors_total"), 0);
    // HEAD gets the head only, /healthz and /readyz answer.
    let r = request(admin, "HEAD", "/metrics", &[], Upload::None);
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(get(admin, "/healthz", &[]).status, 200);
    let r = get(admin, "/readyz", &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ready\n"[..]));
    assert_eq!(server.readiness(), Readiness::Ready);
}

#[test]
fn openmetrics_when_asked_ending_in_eof() {
    let server = start(1);
    let admin = admin_addr(&server);
    let r = get(
        admin,
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE fcgi_uring_requests counter\n"));
    let page = Page::parse(&text);
    assert_eq!(page.n("fcgi_uring_ready"), 1);
}

#[test]
fn status_reports_each_worker_as_json_and_as_a_table() {
    let server = start(2);
    let admin = admin_addr(&server);
    for _ in 0..5 {
        assert_eq!(get_fcgi(server.local_addr(), "/hello").status, 200);
    }
    let r = get(admin, "/status", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json["state"], "ready");
    let backend = server.backend().expect("FastCGI workers run on a backend");
    assert_eq!(json["io_backend"], backend.to_string());
    let workers = json["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let served: u64 = workers.iter().map(|w| w["served"].as_u64().unwrap()).sum();
    assert_eq!(served, 5);
    let r = get(admin, "/status?human", &[]);
    let table = String::from_utf8(r.body).unwrap();
    assert!(
        table.contains("worker") && table.contains("rate_10s"),
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.trim_start().starts_with('1'))
            .count(),
        1
    );
}

/// The real binary: at SIGTERM `/readyz` turns 503 (and `fcgi_uring_ready` 0) while the
/// FastCGI listener still accepts and serves new connections (`admin.drain_delay`), and
/// `/healthz` stays 200.
#[test]
fn readyz_turns_503_at_sigterm_before_the_listeners_stop_accepting() {
    let port = common::proxy::free_port();
    let admin_port = common::proxy::free_port();
    let listen = format!("127.0.0.1:{port}");
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
        .args(["serve", "--listen", &listen, "--workers", "2", "--no-pin"])
        .args(["--admin-listen", &admin.to_string(), "--drain-delay", "120"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start fcgi-uring serve");
    let pid = child.id();
    let _server = KillOnDrop(child);
    wait_for("/readyz 200", HANG_GUARD, || {
        TcpStream::connect(admin).is_ok() && get(admin, "/readyz", &[]).status == 200
    });
    let fcgi: fcgi_uring::Addr = listen.parse().unwrap();
    assert_eq!(get_fcgi(&fcgi, "/hello").status, 200);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for("/readyz 503 after SIGTERM", HANG_GUARD, || {
        get(admin, "/readyz", &[]).status == 503
    });
    assert_eq!(get(admin, "/readyz", &[]).body, b"draining\n");
    assert_eq!(scrape(admin).n("fcgi_uring_ready"), 0);
    assert_eq!(get(admin, "/healthz", &[]).status, 200);
    // Still accepting: a new connection is served.
    for _ in 0..4 {
        assert_eq!(get_fcgi(&fcgi, "/hello").status, 200);
    }
}

/// `/healthz` answers 503, naming the worker, while a handler blocks its worker's thread past
/// `admin.stall_timeout`, and 200 again once the worker turns its loop. An idle worker (asleep
/// in the kernel) is woken for the question and is not taken for a stalled one.
#[test]
fn healthz_fails_while_a_handler_blocks_its_workers_thread() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let entered = Arc::new(AtomicBool::new(false));
    let (r, e) = (released.clone(), entered.clone());
    let config = Config::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .workers(1)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(2))
        .admin_listen(Some("127.0.0.1:0".parse().unwrap()))
        .stall_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let server = Server::new(config)
        .start(move || {
            let (r, e) = (r.clone(), e.clone());
            service_fn(move |req: Request<RequestBody>| {
                let (r, e) = (r.clone(), e.clone());
                async move {
                    if req.uri().path() == "/block" {
                        // The bug under test: a synchronous wait on the worker's thread, until
                        // the test releases it (bounded by a hang guard).
                        e.store(true, Ordering::SeqCst);
                        if let Ok(released) = r.lock() {
                            let _ = released.recv_timeout(HANG_GUARD);
                        }
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            })
        })
        .unwrap();
    let admin = admin_addr(&server);
    // Idle for longer than the stall timeout: asked and woken each second, never stalled.
    let asked_since = std::time::Instant::now();
    wait_for("two seconds of idle questions", HANG_GUARD, || {
        assert_eq!(
            get(admin, "/healthz", &[]).status,
            200,
            "an idle worker is alive"
        );
        asked_since.elapsed() > Duration::from_secs(2)
    });
    let addr = server.local_addr().clone();
    let blocked = std::thread::spawn(move || get_fcgi(&addr, "/block"));
    wait_for("the handler blocking", HANG_GUARD, || {
        entered.load(Ordering::SeqCst)
    });
    wait_for(
        "/healthz 503 while the worker is blocked",
        HANG_GUARD,
        || get(admin, "/healthz", &[]).status == 503,
    );
    let body = String::from_utf8(get(admin, "/healthz", &[]).body).unwrap();
    assert!(
        body.contains("stalled: worker 0 has not turned its loop"),
        "{body}"
    );
    // /status says so too (its figures are the worker's last turn's).
    let status = String::from_utf8(get(admin, "/status?human", &[]).body).unwrap();
    assert!(status.contains("0 has not turned its loop for"), "{status}");
    let json = String::from_utf8(get(admin, "/status", &[]).body).unwrap();
    assert!(!json.contains("\"stalled_seconds\":null"), "{json}");
    release.send(()).unwrap();
    assert_eq!(blocked.join().unwrap().status, 200);
    wait_for(
        "/healthz 200 once the worker turns again",
        HANG_GUARD,
        || get(admin, "/healthz", &[]).status == 200,
    );
}

/// `/status` names each worker's oldest request in flight (sampled about once a second), and
/// `fcgi-uring status` prints the table.
#[test]
fn status_shows_the_oldest_request_in_flight_and_the_cli_prints_it() {
    let server = start(1);
    let admin = admin_addr(&server);
    let mut c = connect(server.local_addr());
    c.send_raw(&raw_request(&RequestSpec::get("/slow?x=1"), 1, true))
        .unwrap();
    let oldest = || {
        let r = get(admin, "/status", &[]);
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        json["workers"][0]["oldest_in_flight"].clone()
    };
    wait_for("the slow request in /status", HANG_GUARD, || {
        oldest()["uri"] == "/slow?x=1"
    });
    let o = oldest();
    assert_eq!(o["method"], "GET");
    assert!(o["age_seconds"].as_f64().unwrap() >= 0.0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("GET /slow?x=1"), "{table}");
    assert!(table.starts_with("fcgi-uring: ready"), "{table}");
    c.abort(1).unwrap();
    wait_for("nothing in flight", HANG_GUARD, || oldest().is_null());
    // No server there: a clear error, exit status 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
        .args(["status", "--admin", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"));
}

/// The admin listener on a UNIX socket, read by `fcgi-uring status`; the socket file goes
/// with the server.
#[test]
fn admin_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let config = Config::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .workers(1)
        .pin_workers(false)
        .admin_listen(Some(fcgi_uring::Addr::Unix(sock.clone())))
        .build()
        .unwrap();
    let server = Server::new(config).start(|| service_fn(app)).unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("ok\n"),
        "{answer}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
        .args(["status", "--admin", &format!("unix:{}", sock.display())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    server.shutdown();
    assert!(!sock.exists(), "the socket file is removed at shutdown");
}
