//! Item 1 of issue 18: serving from inside `#[tokio::main]`, the way nearly every axum app is
//! written, and stopping at SIGTERM. One test in its own binary: it signals its own process.

mod common;

use axum::Router;
use axum::routing;
use common::proxy::free_port;
use common::*;
use fcgi_uring::{Config, Server};

fn app() -> Router {
    Router::new().route("/", routing::get(|| async { "up" }))
}

fn config() -> Config {
    test_config()
        .into_builder()
        .listen(format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .build()
        .unwrap()
}

/// Waits until the server at `config` answers, then sends SIGTERM to this process.
fn terminate_once_up(config: &Config) -> std::thread::JoinHandle<()> {
    let addr = config.listen().clone();
    std::thread::spawn(move || {
        wait_for("the server to answer", HANG_GUARD, || {
            fcgi_client::Client::connect(&addr)
                .and_then(|mut c| c.request(&fcgi_client::RequestSpec::get("/")))
                .is_ok_and(|r| r.status == 200)
        });
        // The server listens for signals before it accepts: SIGTERM is caught, not fatal.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    })
}

#[test]
fn serve_works_inside_a_tokio_runtime_and_stops_at_sigterm() {
    // What `#[tokio::main] async fn main()` expands to: a multi-thread runtime's block_on.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // The blocking form, called on a runtime thread.
    let blocking = config();
    let killer = terminate_once_up(&blocking);
    let served = rt.block_on(async { Server::new(blocking).serve(app()) });
    killer.join().unwrap();
    served.expect("Server::serve starts inside a runtime and returns at SIGTERM");

    // The async form, awaited as `axum::serve` is.
    let awaited = config();
    let killer = terminate_once_up(&awaited);
    let served = rt.block_on(async {
        tokio::time::timeout(HANG_GUARD, fcgi_uring::serve(awaited, app())).await
    });
    killer.join().unwrap();
    served
        .expect("serve ends at SIGTERM")
        .expect("fcgi_uring::serve(..).await starts and returns Ok at SIGTERM");
}
