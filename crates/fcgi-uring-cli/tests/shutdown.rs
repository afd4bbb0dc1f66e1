//! Graceful shutdown of the real binary: SIGTERM under load through nginx, with slow requests in
//! flight. Requests already accepted finish (no 502), and the process exits 0 within the
//! shutdown deadline.

mod common;

use common::KillOnDrop;
use common::http_client::{Upload, request};
use common::proxy;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&backend).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(nginx) = proxy::nginx(&backend) else {
        return;
    };
    let addr = nginx.addr;
    assert_eq!(
        request(addr, "GET", "/hello", &[], Upload::None).status,
        200
    );

    // Background load that runs until the signal (its later requests may fail: not asserted).
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                while !stop.load(Ordering::Relaxed) {
                    if request(addr, "GET", "/hello", &[], Upload::None).status == 200 {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    // Slow requests, in flight when the signal arrives.
    let slow: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || request(addr, "GET", "/sleep?ms=300", &[], Upload::None))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
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
            (200, &b"slept 300"[..]),
            "slow request {i}; nginx log: {}",
            nginx.log()
        );
    }
    let served: usize = load.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    assert!(served > 0);
    // The process exits 0 within the shutdown deadline (plus slack for a loaded machine).
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5 + 5),
            "server still running after the shutdown deadline"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}
