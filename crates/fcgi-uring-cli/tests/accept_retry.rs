//! A worker out of file descriptors (EMFILE at accept) pauses accepting for
//! `server.accept_retry` instead of retrying in a busy loop, logs the cause a bounded number of
//! times, and serves again once descriptors are free.
//!
//! The real binary runs under `ulimit -n 64`, and the test holds 100 connections open: the first
//! few dozen are accepted, the rest wait in the listen backlog while accept fails.

mod common;

use common::KillOnDrop;
use fcgi_client::RequestSpec;
use fcgi_uring::Addr;
use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn emfile_at_accept_pauses_then_recovers() {
    let port = common::proxy::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = KillOnDrop(
        Command::new("sh")
            .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
            .arg(env!("CARGO_BIN_EXE_fcgi-uring"))
            .args(["serve", "--listen", &listen, "--workers", "1"])
            .args(["--pin-workers", "false", "--accept-retry", "0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fcgi-uring serve under ulimit -n 64"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = Vec::new();
    while held.is_empty() {
        match TcpStream::connect(&listen) {
            Ok(s) => held.push(s),
            Err(_) => {
                assert!(Instant::now() < deadline, "server did not listen");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // 100 connections: more than the server has descriptors for. The kernel completes each
    // handshake; the ones the server cannot accept wait in the backlog.
    while held.len() < 100 {
        held.push(TcpStream::connect(&listen).expect("connect (backlog)"));
    }
    // Out of descriptors for a second: a busy loop would fail accept ~10^5 times here.
    std::thread::sleep(Duration::from_secs(1));

    // Free descriptors: the server sees EOF on the accepted ones and closes them; the backlog
    // drains after the next retry, and a new connection is served.
    drop(held);
    let addr: Addr = listen.parse().unwrap();
    let started = Instant::now();
    let response = loop {
        let attempt = fcgi_client::Client::connect(&addr).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            c.request(&RequestSpec::get("/hello"))
        });
        match attempt {
            Ok(r) => break r,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "no answer after the descriptors were freed: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"Hello, World!");

    let killed = Command::new("kill")
        .args(["-INT", &server.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = server.0.wait().expect("wait for the server");
    let mut out = String::new();
    let mut err = String::new();
    server
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let log = format!("{out}{err}");
    assert!(status.success(), "server exit {status}; log:\n{log}");

    let failed: u64 = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("accept_failed="))
        .unwrap_or_else(|| panic!("no accept_failed in the summary:\n{log}"))
        .parse()
        .unwrap();
    // At least one failure (the limit was hit), and about one per 100 ms retry while it
    // lasted, not a spin.
    assert!((1..=100).contains(&failed), "accept_failed={failed}");
    let lines = log.matches("accept failed: ").count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} 'accept failed' log lines (rate-limited to one per 10 s):\n{log}"
    );
    assert!(log.contains("Too many open files"), "{log}");
}
