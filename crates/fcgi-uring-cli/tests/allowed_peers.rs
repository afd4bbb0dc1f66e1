//! `server.allowed_peers` and FastCGI's `FCGI_WEB_SERVER_ADDRS`: a peer not on the list has its
//! connection closed at accept, before anything it sent is read, and is counted; a listed peer
//! is served. Over loopback (127.0.0.2 is a different peer from 127.0.0.1), through the real
//! binary's environment and file, and between hosts of a namespace lab (`common::lab`).

mod common;

use common::lab::Lab;
use common::proxy::free_port;
use common::{HANG_GUARD, IO_TIMEOUT, KillOnDrop, test_config, wait_for};
use fcgi_client::{Client, RequestSpec};
use fcgi_uring::config::PeerList;
use fcgi_uring::{Addr, Counter, Server, ServerHandle, service_fn};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-uring");

fn serve_allowing(list: &str) -> ServerHandle {
    let config = test_config()
        .into_builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .allowed_peers(Some(list.parse::<PeerList>().unwrap()))
        .build()
        .unwrap();
    Server::new(config)
        .start(|| service_fn(fcgi_uring_cli::demo::app))
        .expect("server starts")
}

/// A TCP connection to `to` from the source address `from`.
fn connect_from(from: IpAddr, to: SocketAddr) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let client = Client::from_tcp(socket.into()).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client
}

/// What a refused peer sees: its connection ends (EOF or reset) with no record for it.
fn assert_closed_unanswered(client: &mut Client) {
    // The request may or may not be written before the close is noticed; either is fine.
    let _ = client.begin(&RequestSpec::get("/hello"), 1);
    match client.read_record() {
        Ok(None) | Err(_) => {}
        Ok(Some(record)) => panic!("a refused peer got a record: {record:?}"),
    }
}

fn tcp_addr(server: &ServerHandle) -> SocketAddr {
    match server.local_addr() {
        Addr::Tcp(sa) => *sa,
        other => panic!("TCP expected, got {other}"),
    }
}

#[test]
fn a_peer_off_the_list_is_closed_unanswered_and_counted() {
    let server = serve_allowing("127.0.0.2, 10.0.0.0/8");
    let addr = tcp_addr(&server);
    for _ in 0..3 {
        assert_closed_unanswered(&mut connect_from([127, 0, 0, 1].into(), addr));
    }
    wait_for("three refusals counted", HANG_GUARD, || {
        server.stats().get(Counter::PeerRefused) == 3
    });
    for _ in 0..3 {
        let r = connect_from([127, 0, 0, 2].into(), addr)
            .request(&RequestSpec::get("/hello"))
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    }
    let stats = server.stats();
    assert_eq!(stats.get(Counter::PeerRefused), 3);
    assert_eq!(
        stats.get(Counter::Accepted),
        3,
        "refused peers are not accepted"
    );
    assert_eq!(stats.get(Counter::Requests), 3);
}

/// Reads a child's pipe to its end (so that the child never writes to a closed pipe), sending
/// each line on `tx`.
fn forward_lines(pipe: impl Read, tx: std::sync::mpsc::Sender<String>) {
    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
        let _ = tx.send(line);
    }
}

/// The real binary honours FCGI_WEB_SERVER_ADDRS when server.allowed_peers is unset, and
/// refuses to start with an invalid one (rather than letting everyone in).
#[test]
fn fcgi_web_server_addrs_is_honoured_and_checked() {
    let bad = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .env("FCGI_WEB_SERVER_ADDRS", "127.0.0.2,proxy.example")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("FCGI_WEB_SERVER_ADDRS") && stderr.contains("\"proxy.example\""),
        "{stderr}"
    );

    let port = free_port();
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args([
                "serve",
                "--workers",
                "1",
                "--no-pin",
                "--admin-listen",
                "none",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("FCGI_WEB_SERVER_ADDRS", "127.0.0.2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || forward_lines(stderr, tx));
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("accepting connections only from 127.0.0.2/32"))
    {
        match rx.recv_timeout(HANG_GUARD) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("the allow-list is not logged ({e}); saw {seen:?}"),
        }
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let allowed: IpAddr = [127, 0, 0, 2].into();
    wait_for("the server to listen", HANG_GUARD, || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::new(allowed, 0).into()).unwrap();
        socket.connect(&addr.into()).is_ok()
    });
    assert_closed_unanswered(&mut connect_from([127, 0, 0, 1].into(), addr));
    let refusal = "connection from 127.0.0.1 closed: not in server.allowed_peers";
    while !seen.iter().any(|l| l.contains(refusal)) {
        match rx.recv_timeout(HANG_GUARD) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("the refusal is not logged ({e}); saw {seen:?}"),
        }
    }
    let r = connect_from(allowed, addr)
        .request(&RequestSpec::get("/hello"))
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the server still runs"
    );
}

/// From namespaces the test creates: a backend host allows only the proxy host; a third host
/// on the same network is closed unanswered and counted, the proxy is served, and the backend's
/// admin listener (on its own loopback) reports the refusals.
#[test]
fn a_host_off_the_list_cannot_talk_to_the_backend() {
    let Some(lab) = Lab::new(&["backend", "proxy", "stranger"]) else {
        return;
    };
    let (backend, proxy, stranger) = (lab.host("backend"), lab.host("proxy"), lab.host("stranger"));
    let mut server = KillOnDrop(
        lab.command(backend, BIN)
            .args([
                "serve",
                "--workers",
                "2",
                "--no-pin",
                "--listen",
                "0.0.0.0:9000",
            ])
            .args(["--admin-listen", "127.0.0.1:9100"])
            .args(["--allowed-peers", &proxy.ip.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let to = SocketAddr::new(backend.addr(), 9000);
    lab.inside(proxy, || {
        wait_for("the backend to listen", HANG_GUARD, || {
            TcpStream::connect(to).is_ok()
        });
    });
    lab.inside(stranger, || {
        for _ in 0..5 {
            assert_closed_unanswered(&mut connect_from(stranger.addr(), to));
        }
    });
    lab.inside(proxy, || {
        for _ in 0..5 {
            let r = connect_from(proxy.addr(), to)
                .request(&RequestSpec::get("/hello"))
                .unwrap();
            assert_eq!(r.status, 200);
        }
    });
    let refused = lab.inside(backend, || {
        let mut refused = 0.0;
        wait_for("five refusals in the metrics", HANG_GUARD, || {
            refused = common::metrics::scrape("127.0.0.1:9100".parse().unwrap())
                .get("fcgi_uring_peers_refused_total");
            refused >= 5.0
        });
        refused
    });
    assert_eq!(refused, 5.0);
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "the backend still runs"
    );
}

/// The file form, and a clear error for an entry that is not an address or a network.
#[test]
fn the_config_file_takes_the_list_and_names_a_bad_entry() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[server]\nlisten = \"0.0.0.0:9000\"\nallowed_peers = \"10.0.0.5, 10.1.0.0/16\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--print-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("allowed_peers = \"10.0.0.5/32, 10.1.0.0/16\""),
        "{printed}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nallowed_peers = \"10.0.0.5, proxy\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--print-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:2") && stderr.contains("server.allowed_peers"),
        "{stderr}"
    );
    let unix = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "unix:/tmp/never.sock",
            "--allowed-peers",
            "10.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(!unix.status.success());
    assert!(
        String::from_utf8_lossy(&unix.stderr).contains("server.unix_mode"),
        "{}",
        String::from_utf8_lossy(&unix.stderr)
    );
}
