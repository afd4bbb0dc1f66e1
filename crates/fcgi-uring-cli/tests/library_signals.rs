//! A server the library serves (`Server::serve`) answers the signals operators send the
//! `fcgi-uring` binary: SIGUSR1 reopens its access log, SIGHUP starts this program again with
//! the listening sockets and drains (left to their defaults, both ended the process with every
//! request in flight). One test in its own binary: it signals its own process, and the
//! process the upgrade starts is this test binary again, which then only serves (it finds the
//! sockets passed to it) until SIGTERM.

mod common;

use axum::Router;
use axum::routing;
use common::proxy::free_port;
use common::*;
use fcgi_uring::{Addr, Config, Server};
use std::path::Path;

fn app() -> Router {
    Router::new().route(
        "/",
        routing::get(|| async { std::process::id().to_string() }),
    )
}

fn config(access_log: &Path) -> Config {
    test_config()
        .into_builder()
        .listen(format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .access_log_path(Some(access_log.to_str().unwrap().to_owned()))
        .build()
        .unwrap()
}

/// The pid of the process that answered, if one did.
fn answered_by(addr: &Addr) -> Option<u32> {
    let mut c = fcgi_client::Client::connect(addr).ok()?;
    let r = c.request(&fcgi_client::RequestSpec::get("/")).ok()?;
    String::from_utf8(r.body).ok()?.parse().ok()
}

fn signal(name: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn a_served_server_reopens_its_log_at_sigusr1_and_hands_over_at_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    if std::env::var_os("LISTEN_FDS").is_some() {
        // The process the upgrade started: serve the sockets passed until SIGTERM.
        Server::new(config(&log)).serve(app()).unwrap();
        return;
    }
    let config = config(&log);
    let addr = config.listen().clone();
    let served = std::thread::spawn(move || Server::new(config).serve(app()));
    let me = std::process::id();
    wait_for("the server to answer", HANG_GUARD, || {
        answered_by(&addr) == Some(me)
    });
    wait_for("a line in the access log", HANG_GUARD, || lines(&log) > 0);

    // SIGUSR1: the log moved away is closed, a new one opened at the path.
    let moved = dir.path().join("access.log.1");
    std::fs::rename(&log, &moved).unwrap();
    signal("USR1", me);
    wait_for("a new access log at the path", HANG_GUARD, || {
        answered_by(&addr);
        lines(&log) > 0
    });
    assert!(lines(&moved) > 0);

    // SIGHUP: another process serves the same socket, this one drains and `serve` returns.
    signal("HUP", me);
    wait_for("serve to return after the upgrade", HANG_GUARD, || {
        served.is_finished()
    });
    served
        .join()
        .unwrap()
        .expect("serve returns Ok after handing over");
    let successor = answered_by(&addr).expect("the upgraded process answers");
    assert_ne!(successor, me);
    signal("TERM", successor);
    wait_for("the upgraded process to stop", HANG_GUARD, || {
        fcgi_client::Client::connect(&addr).is_err()
    });
}
