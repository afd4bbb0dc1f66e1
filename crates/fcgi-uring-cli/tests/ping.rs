//! `ping.path`: answered by the runtime without calling the application, 503 while draining;
//! HAProxy's `option httpchk` over FastCGI through it marks the server down and up as the
//! test drains, stops and starts it.

mod common;

use bytes::Bytes;
use common::proxy::{Proxy, find_binary, free_port};
use common::*;
use fcgi_client::RequestSpec;
use fcgi_uring::{Config, Counter, RequestBody, Server, ServerHandle, service_fn};
use http::{Request, Response};
use http_body_util::Full;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Starts a server on `addr` whose application counts its calls in `calls`.
fn start(addr: SocketAddr, calls: Arc<AtomicUsize>) -> ServerHandle {
    let config = Config::builder()
        .listen(fcgi_uring::Addr::Tcp(addr))
        .workers(1)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(2))
        .ping_path(Some("/ping".to_owned()))
        .ping_response("pong from fcgi-uring".to_owned())
        .build()
        .unwrap();
    Server::new(config)
        .start(move || {
            let calls = calls.clone();
            service_fn(move |_req: Request<RequestBody>| {
                calls.fetch_add(1, Ordering::Relaxed);
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("app")))) }
            })
        })
        .unwrap()
}

#[test]
fn the_ping_path_is_answered_without_the_application_and_fails_while_draining() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = start(SocketAddr::from(([127, 0, 0, 1], 0)), calls.clone());
    let r = get(server.local_addr(), "/ping");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"pong from fcgi-uring"[..])
    );
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    let head = connect(server.local_addr())
        .request(&RequestSpec {
            method: "HEAD".to_owned(),
            ..RequestSpec::get("/ping")
        })
        .unwrap();
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(get(server.local_addr(), "/ping/more").body, b"app");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "only /ping/more called the app"
    );
    assert_eq!(server.stats().get(Counter::Pings), 2);
    server.drain();
    let r = get(server.local_addr(), "/ping");
    assert_eq!((r.status, r.body.as_slice()), (503, &b"draining\n"[..]));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

/// HAProxy with an HTTP check through the ping path, over FastCGI, every 100 ms; its stats
/// socket tells the server's state.
fn haproxy(backend: SocketAddr) -> Option<Proxy> {
    let bin = find_binary("haproxy", &["/usr/sbin/haproxy", "/usr/bin/haproxy"])?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let conf = format!(
        r#"global
    log stderr format raw local0 info
    stats socket {d}/stats.sock mode 600 level admin
defaults
    mode http
    log global
    timeout connect 5s
    timeout client 20s
    timeout server 20s
fcgi-app app
    docroot /srv
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    use-fcgi-app app
    option httpchk GET /ping
    http-check expect string pong
    server s1 {backend} proto fcgi check inter 100ms fall 2 rise 2
"#
    );
    let conf_path = dir.path().join("haproxy.cfg");
    std::fs::write(&conf_path, conf).unwrap();
    let log = std::fs::File::create(dir.path().join("error.log")).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-db").arg("-f").arg(&conf_path);
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    Some(Proxy::spawn(
        cmd,
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    ))
}

/// The check status of server s1 as HAProxy's `show stat` reports it (`UP`, `DOWN`, ...).
fn status(proxy: &Proxy) -> String {
    let Ok(mut s) = UnixStream::connect(proxy.dir.path().join("stats.sock")) else {
        return String::new();
    };
    let _ = s.write_all(b"show stat\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let mut lines = out.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = header.iter().position(|h| *h == "status").unwrap_or(17);
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"app") && f.get(1) == Some(&"s1"))
        .and_then(|f| f.get(col).map(|s| s.to_string()))
        .unwrap_or_default()
}

fn wait_status(proxy: &Proxy, want: &str, why: &str) {
    let ok = holds_within(HANG_GUARD, || status(proxy).starts_with(want));
    assert!(
        ok,
        "HAProxy never marked the server {want} ({why}); now {:?}; log:\n{}",
        status(proxy),
        proxy.log()
    );
}

#[test]
fn haproxy_httpchk_through_the_ping_path_marks_the_server_down_and_up() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let calls = Arc::new(AtomicUsize::new(0));
    let server = start(addr, calls.clone());
    let Some(proxy) = haproxy(addr) else {
        return;
    };
    // HAProxy starts a server as up; the checks that keep it up are the pings counted.
    wait_for("two checks through the ping path", HANG_GUARD, || {
        server.stats().get(Counter::Pings) >= 2
    });
    wait_status(&proxy, "UP", "server running");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        0,
        "checks never reach the app"
    );

    // Draining: the ping path answers 503, HAProxy takes the server out while it still runs.
    server.drain();
    wait_status(&proxy, "DOWN", "server draining");
    server.shutdown();

    // Started again on the same address: back up.
    let server = start(addr, calls.clone());
    wait_status(&proxy, "UP", "server started again");
    // Stopped: down.
    server.shutdown();
    wait_status(&proxy, "DOWN", "server stopped");
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}
