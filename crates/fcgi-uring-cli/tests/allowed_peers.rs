//! `server.allowed_peers` and FastCGI's `FCGI_WEB_SERVER_ADDRS`: a peer not on the list has its
//! connection closed at accept, before anything it sent is read, and is counted; a listed peer
//! is served. Over loopback (127.0.0.2 is a different peer from 127.0.0.1), through the real
//! binary's environment, and from network namespaces the test creates (root and `ip` needed:
//! in CI a missing `ip` fails the test).

mod common;

use common::proxy::{find_binary, free_port};
use common::{HANG_GUARD, IO_TIMEOUT, KillOnDrop, test_config, wait_for};
use fcgi_client::{Client, RequestSpec};
use fcgi_uring::config::PeerList;
use fcgi_uring::{Addr, Counter, Server, ServerHandle, service_fn};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
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

/// A network namespace with a veth link to the server's, removed when dropped.
struct Lab {
    ip: PathBuf,
    names: Vec<String>,
}

impl Lab {
    fn ip(&self, args: &[&str]) {
        let out = Command::new(&self.ip).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The server's namespace and two client namespaces, `ok` on 10.231.1.0/24 and `other` on
    /// 10.231.2.0/24, each linked to the server's by a veth pair (server side .1, client .2).
    fn new(ip: PathBuf) -> Lab {
        let tag = std::process::id();
        let names = ["srv", "ok", "other"].map(|n| format!("fcgi-peers-{n}-{tag}"));
        let lab = Lab {
            ip,
            names: names.to_vec(),
        };
        for n in &names {
            lab.ip(&["netns", "add", n]);
            lab.ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        for (i, client) in names[1..].iter().enumerate() {
            let net = i + 1;
            let (a, b) = (format!("vp{net}a{tag}"), format!("vp{net}b{tag}"));
            // Interface names are at most 15 bytes.
            let (a, b) = (&a[..a.len().min(15)], &b[..b.len().min(15)]);
            lab.ip(&[
                "link", "add", a, "netns", &names[0], "type", "veth", "peer", "name", b,
            ]);
            lab.ip(&["link", "set", b, "netns", client]);
            let srv_addr = format!("10.231.{net}.1/24");
            let cli_addr = format!("10.231.{net}.2/24");
            lab.ip(&["-n", &names[0], "addr", "add", &srv_addr, "dev", a]);
            lab.ip(&["-n", &names[0], "link", "set", a, "up"]);
            lab.ip(&["-n", client, "addr", "add", &cli_addr, "dev", b]);
            lab.ip(&["-n", client, "link", "set", b, "up"]);
        }
        lab
    }

    /// Runs `f` on a thread inside namespace `name` (a thread's network namespace is its own).
    fn inside<T: Send>(&self, name: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/run/netns").join(name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).unwrap();
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&ns),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new(&self.ip).args(["netns", "del", n]).output();
        }
    }
}

/// From namespaces the test creates: the server's namespace listens on every address with only
/// the `ok` network allowed; a client in `other` is closed unanswered and counted, one in `ok` is
/// served. The admin listener (in the server's namespace) reports the refusals.
#[test]
fn a_namespace_off_the_list_cannot_talk_to_the_backend() {
    let Some(ip) = find_binary("ip", &["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip"]) else {
        return;
    };
    let lab = Lab::new(ip.clone());
    let mut server = KillOnDrop(
        Command::new(&ip)
            .args(["netns", "exec", &lab.names[0], BIN, "serve"])
            .args(["--workers", "2", "--no-pin", "--listen", "0.0.0.0:9000"])
            .args(["--admin-listen", "127.0.0.1:9100"])
            .args(["--allowed-peers", "10.231.1.0/24"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let srv_ok: SocketAddr = "10.231.1.1:9000".parse().unwrap();
    let srv_other: SocketAddr = "10.231.2.1:9000".parse().unwrap();
    lab.inside(&lab.names[1], || {
        wait_for("the server to listen", HANG_GUARD, || {
            TcpStream::connect(srv_ok).is_ok()
        });
    });
    lab.inside(&lab.names[2], || {
        for _ in 0..5 {
            assert_closed_unanswered(&mut connect_from([10, 231, 2, 2].into(), srv_other));
        }
    });
    lab.inside(&lab.names[1], || {
        for _ in 0..5 {
            let r = connect_from([10, 231, 1, 2].into(), srv_ok)
                .request(&RequestSpec::get("/hello"))
                .unwrap();
            assert_eq!(r.status, 200);
        }
    });
    let refused = lab.inside(&lab.names[0], || {
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
        "the server still runs"
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
