//! The open loop is honest: a real `fcgi-uring serve` child process is stopped (SIGSTOP) for
//! 1 s under load, and the latency the tool reports shows it. At a fixed rate every request due
//! during the stall counts from its due time, so p99 is about a second; a closed-loop run over
//! the same stall records only the few requests that were in flight, and its p99 hides it.
//! Loopback only, about 8 s in all; the assertions are on reported latency, not on speed.
//!
//! The server is `target/{debug,release}/fcgi-uring` (or `$FCGI_URING`); when it has not been
//! built, this test binary re-executes itself as the server (the same library call as
//! `fcgi-uring serve`).

mod common;

use common::{HANG_GUARD, TCP_ESTABLISHED, process_state, tcp_sockets, wait_for};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fcgi_loadtest::stats::Report;
use fcgi_loadtest::{Config, Protocol, run, sys};

const CHILD_ENV: &str = "FCGI_LOADTEST_STALL_SERVER";
const STALL: Duration = Duration::from_secs(1);

/// The server when this binary runs as the child (see the module doc).
#[test]
fn child_server_entry() {
    let Ok(addr) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config = fcgi_uring::Config::builder()
        .listen(addr.parse().unwrap())
        .workers(1)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let _handle = fcgi_uring::Server::new(config)
        .start(|| fcgi_uring::service_fn(fcgi_uring_cli::demo::app))
        .unwrap();
    // Serves until the parent kills it.
    loop {
        std::thread::park();
    }
}

fn server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FCGI_URING") {
        return Some(PathBuf::from(p));
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("fcgi-uring"))
        .find(|p| p.exists())
}

/// The server child, resumed and killed when dropped (even when an assertion fails).
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Server {
        let port = fcgi_loadtest::child::free_port().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = match server_binary() {
            Some(bin) => {
                let mut c = Command::new(bin);
                c.args(["serve", "--workers", "1", "--no-pin", "--listen"])
                    .arg(addr.to_string());
                c
            }
            None => {
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.args(["--exact", "child_server_entry", "--nocapture"])
                    .env(CHILD_ENV, addr.to_string());
                c
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let child = cmd.spawn().expect("start the server");
        let server = Server { child, addr };
        wait_for(
            &format!("the server listening on {addr}"),
            HANG_GUARD,
            || TcpStream::connect(addr).is_ok(),
        );
        server
    }

    /// Runs `cfg` and stops the server for [`STALL`] from 1 s into the measured window.
    fn run_with_stall(&self, cfg: &Config) -> Report {
        let pid = self.child.id();
        std::thread::scope(|s| {
            let load = s.spawn(|| run(cfg).unwrap());
            let port = self.addr.port();
            wait_for("the load's connections to the server", HANG_GUARD, || {
                let conns = tcp_sockets()
                    .into_iter()
                    .filter(|s| s.remote_port == port && s.state == TCP_ESTABLISHED)
                    .count();
                conns >= cfg.conns
            });
            // Kept: the tool's warmup and measured window are wall-clock, so the stall is placed
            // by time, 1 s into the 3 s window (2 s of slack on a loaded machine).
            std::thread::sleep(cfg.warmup + Duration::from_secs(1));
            sys::signal(pid, libc::SIGSTOP).unwrap();
            wait_for("the server stopped", HANG_GUARD, || {
                process_state(pid) == Some('T')
            });
            // Kept: the stall itself, what the reports must show. The assertions bound latency
            // from below by the stall (a longer one on a loaded machine only adds), and the
            // closed loop's p99 depends on how many requests were in flight, not on its length.
            std::thread::sleep(STALL);
            sys::signal(pid, libc::SIGCONT).unwrap();
            load.join().unwrap()
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = sys::signal(self.child.id(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(addr: SocketAddr) -> Config {
    let mut cfg = Config::new(Protocol::Fastcgi, fcgi_uring::Addr::Tcp(addr), "/hello");
    cfg.conns = 4;
    cfg.warmup = Duration::from_millis(500);
    cfg.duration = Duration::from_secs(3);
    cfg.expect_body = Some("Hello, World!".into());
    cfg
}

#[test]
fn open_loop_reports_a_server_stall_that_closed_loop_hides() {
    let server = Server::start();
    let stall_us = STALL.as_micros() as u64;

    // Open loop, 400 requests/s: ~400 requests are due during the stall, a third of the run.
    let mut open = config(server.addr);
    open.rate = Some(400.0);
    let r = server.run_with_stall(&open);
    assert_eq!(r.errors, 0, "{}", r.to_text());
    assert!(r.requests >= 1000, "{}", r.to_text());
    // The request due as the stall began waited the whole second; the top 1% waited nearly as
    // long (those due in its first ~30 ms).
    assert!(r.max_us >= stall_us * 9 / 10, "{}", r.to_text());
    assert!(r.p99_us >= stall_us * 8 / 10, "{}", r.to_text());
    assert!(r.p90_us >= stall_us / 2, "{}", r.to_text());

    // Closed loop over the same stall: only the 4 requests in flight saw it.
    let closed = config(server.addr);
    let r = server.run_with_stall(&closed);
    assert_eq!(r.errors, 0, "{}", r.to_text());
    assert!(
        r.requests >= 1000,
        "too few requests to judge p99: {}",
        r.to_text()
    );
    assert!(r.max_us >= stall_us * 9 / 10, "{}", r.to_text());
    assert!(r.p99_us < stall_us / 5, "{}", r.to_text());
}
