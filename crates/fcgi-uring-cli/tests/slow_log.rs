//! `slow_log.threshold`: a request slower than the threshold is logged when it ends with its
//! timing breakdown; one still running past it is logged once while it runs.

mod common;

use common::*;
use std::process::{Command, Stdio};

#[test]
fn slow_requests_are_logged_with_their_breakdown_and_running_ones_once() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = common::proxy::free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
            .args(["serve", "--listen", &listen, "--workers", "1", "--no-pin"])
            .args(["--admin-listen", "none", "--slow-log-threshold", "0.2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start fcgi-uring serve"),
    );
    let addr: fcgi_uring::Addr = listen.parse().unwrap();
    wait_for("the server listening", HANG_GUARD, || {
        std::net::TcpStream::connect(&listen).is_ok()
    });
    let logged = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Fast: not logged.
    assert_eq!(get(&addr, "/hello").status, 200);
    // Slow, and still running past the threshold for a while (the scan runs once a second).
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || get(&addr, "/sleep?ms=2500").status)
    };
    wait_for("the running request logged", HANG_GUARD, || {
        logged().contains("slow request still running: GET /sleep?ms=2500")
    });
    assert_eq!(slow.join().unwrap(), 200);
    wait_for("the slow request logged at its end", HANG_GUARD, || {
        logged().contains("slow request: GET /sleep?ms=2500 took")
    });
    let text = logged();
    assert_eq!(
        text.matches("still running: GET /sleep?ms=2500").count(),
        1,
        "logged once while running:\n{text}"
    );
    let line = text
        .lines()
        .find(|l| l.contains("slow request: GET /sleep?ms=2500 took"))
        .unwrap();
    for part in [
        "worker 0",
        "status 200",
        "params complete at 0",
        "handler started",
        "first response byte",
        "last byte",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert!(!text.contains("GET /hello"), "{text}");
    drop(child);
}
