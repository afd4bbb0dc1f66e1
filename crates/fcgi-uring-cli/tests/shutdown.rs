//! Graceful shutdown of the real binary: SIGTERM under load through nginx, with slow requests in
//! flight. Requests already accepted finish (no 502), and the process exits 0 within the
//! shutdown deadline.

mod common;

use common::http_client::{Upload, request};
use common::proxy;
use common::{HANG_GUARD, KillOnDrop, connections_read, wait_for};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[test]
fn sigterm_under_load_finishes_accepted_requests_and_exits_zero() {
    let port = proxy::free_port();
    let backend = format!("127.0.0.1:{port}");
    // Killed if an assertion fails before it exits by itself.
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
            .args(["serve", "--listen", &backend, "--workers", "2", "--no-pin"])
            .args(["--shutdown-timeout", "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start fcgi-uring serve"),
    );
    wait_for("the server listening", HANG_GUARD, || {
        TcpStream::connect(&backend).is_ok()
    });
    let Some(nginx) = proxy::nginx(&backend) else {
        return;
    };
    let addr = nginx.addr;

    // Slow requests, in flight when the signal arrives: the fact is that the server has read
    // all 16 (nothing else talks to it yet). Their 2 s is the demo's slow handler, long enough
    // to outlast the steps below; were one to end before the signal, the test would only be
    // weaker, never wrong.
    let slow: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || request(addr, "GET", "/sleep?ms=2000", &[], Upload::None))
        })
        .collect();
    wait_for(
        "the server to read the 16 slow requests",
        HANG_GUARD,
        || connections_read(port) >= 16,
    );
    // Background load that runs until the signal (its later requests may fail: not asserted).
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, served) = (stop.clone(), served.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if request(addr, "GET", "/hello", &[], Upload::None).status == 200 {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    wait_for("the load served through nginx", HANG_GUARD, || {
        served.load(Ordering::SeqCst) >= 4
    });
    stop.store(true, Ordering::Relaxed);
    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());

    for (i, t) in slow.into_iter().enumerate() {
        let r = t.join().expect("slow request thread");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"slept 2000"[..]),
            "slow request {i}; nginx log: {}",
            nginx.log()
        );
    }
    for t in load {
        t.join().expect("load thread");
    }
    // The process exits 0 within the shutdown deadline (plus slack for a loaded machine).
    let mut status = None;
    wait_for("the server to exit", HANG_GUARD, || {
        status = server.0.try_wait().expect("wait");
        status.is_some()
    });
    let exited_after = signalled.elapsed();
    assert!(
        exited_after < Duration::from_secs(5 + 5),
        "server still running {exited_after:?} after the signal (shutdown deadline 5 s)"
    );
    let status = status.expect("exited");
    assert!(status.success(), "exit status {status}");
}

/// While a stopped server drains, a new connection is refused at once (a proxy then tries
/// another backend), not completed into a listening queue nobody accepts from any more and
/// reset when the process exits; the request in flight still gets its answer. On TCP (one
/// SO_REUSEPORT listener per worker) and on a UNIX socket (one shared listener).
#[test]
fn a_draining_server_refuses_new_connections_and_finishes_the_old() {
    let port = proxy::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("fcgi.sock");
    for listen in [
        format!("127.0.0.1:{port}"),
        format!("unix:{}", sock.display()),
    ] {
        let addr: fcgi_uring::Addr = listen.parse().expect("addr");
        let mut server = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
                .args(["serve", "--listen", &listen, "--workers", "2", "--no-pin"])
                .args(["--shutdown-timeout", "20", "--admin-listen", "none"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start fcgi-uring serve"),
        );
        wait_for("the server listening", HANG_GUARD, || {
            fcgi_client::Client::connect(&addr).is_ok()
        });
        let mut slow = common::connect(&addr);
        let mut spec = fcgi_client::RequestSpec::get("/sleep?ms=3000");
        spec.keep_conn = true;
        slow.begin(&spec, 1).expect("send the slow request");
        let slow_answer = std::thread::spawn(move || {
            let mut responses = fcgi_client::Responses::new();
            slow.collect(&mut responses, &[1]).map(|_| responses)
        });
        wait_for("the slow request in flight", HANG_GUARD, || {
            common::get(&addr, "/hello").status == 200
        });
        common::restarts::signal(server.0.id(), "TERM");
        wait_for("a new connection refused", HANG_GUARD, || {
            matches!(
                fcgi_client::Client::connect(&addr),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
        });
        assert!(
            !slow_answer.is_finished(),
            "{listen}: refused only once the slow request had ended"
        );
        let responses = slow_answer
            .join()
            .expect("slow request thread")
            .expect("the slow request answered");
        let r = responses
            .get(1)
            .expect("request 1")
            .response()
            .expect("response 1");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"slept 3000"[..]));
        wait_for("the server to exit", HANG_GUARD, || {
            server.0.try_wait().expect("wait").is_some()
        });
    }
}

/// A request still running when `server.shutdown_timeout` runs out is dropped unanswered, and
/// the server says so (it used to leave no trace: no log line, no counter).
#[test]
fn requests_abandoned_at_the_shutdown_timeout_are_logged() {
    let port = proxy::free_port();
    let backend = format!("127.0.0.1:{port}");
    let mut server = common::serve_with_stderr(&[
        "--listen",
        &backend,
        "--workers",
        "1",
        "--no-pin",
        "--shutdown-timeout",
        "0.3",
        "--admin-listen",
        "none",
    ]);
    wait_for("the server listening", HANG_GUARD, || {
        TcpStream::connect(&backend).is_ok()
    });
    let addr: fcgi_uring::Addr = backend.parse().unwrap();
    let slow = std::thread::spawn(move || {
        let mut c = fcgi_client::Client::connect(&addr).unwrap();
        c.request(&fcgi_client::RequestSpec::get("/sleep?ms=30000"))
    });
    wait_for("the server to read the slow request", HANG_GUARD, || {
        connections_read(port) >= 1
    });
    // Read until the server exits (its end closes the pipe).
    let stderr = common::stop_and_read_stderr(&mut server);
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        slow.join().unwrap().is_err(),
        "the request was not answered"
    );
    assert!(
        stderr.contains("ran out with 1 request(s) still running"),
        "{stderr}"
    );
}
