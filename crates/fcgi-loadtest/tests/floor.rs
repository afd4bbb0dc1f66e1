//! `fcgi-floor` (the no-application FastCGI floor) against the real server: it must answer
//! `GET /hello` with exactly the bytes `fcgi-uring` answers with, or its rate would not bound the
//! real server's, and the load client must run against it without errors, multiplexed. Each
//! test runs every mode: the io_uring floor and `--epoll`, each answering with stored bytes and
//! through the `http` surface (`--surface`).

mod common;

use common::{HANG_GUARD, TCP_ESTABLISHED, tcp_sockets, wait_for};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use fcgi_loadtest::fcgi::{nginx_request, probe_values};
use fcgi_loadtest::{Config, Protocol, run};
use fcgi_proto::record::{HEADER_LEN, Header, RecordType};
use fcgi_uring::Addr;

/// The `fcgi-floor` child, killed when dropped (even when an assertion fails).
struct Floor {
    child: Child,
    addr: SocketAddr,
    stdout: BufReader<ChildStdout>,
}

impl Floor {
    fn start(mode: Mode) -> Floor {
        Floor::start_with(mode, &[])
    }

    fn start_with(mode: Mode, args: &[&str]) -> Floor {
        Floor::spawn(mode.flags(), args)
    }

    /// `fcgi-floor FLAGS 127.0.0.1:0 ARGS`.
    fn spawn(flags: &[&str], args: &[&str]) -> Floor {
        let (child, stdout, listening) = Floor::spawn_on(flags, "127.0.0.1:0", args);
        let addr = listening.parse().unwrap();
        Floor {
            child,
            addr,
            stdout,
        }
    }

    /// `fcgi-floor FLAGS ADDR ARGS`: the child, its output after the first line, and the
    /// address that line says it listens on.
    fn spawn_on(
        flags: &[&str],
        addr: &str,
        args: &[&str],
    ) -> (Child, BufReader<ChildStdout>, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fcgi-floor"))
            .args(flags)
            .arg(addr)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start fcgi-floor");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let listening = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        (child, stdout, listening)
    }
}

/// The floor's IO, and how it answers.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Ring,
    Epoll,
    RingSurface,
    EpollSurface,
}

impl Mode {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Mode::Ring => &[],
            Mode::Epoll => &["--epoll"],
            Mode::RingSurface => &["--surface"],
            Mode::EpollSurface => &["--epoll", "--surface"],
        }
    }
}

const MODES: [Mode; 4] = [
    Mode::Ring,
    Mode::Epoll,
    Mode::RingSurface,
    Mode::EpollSurface,
];

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real server with the demo app, in this process.
fn real_server() -> (fcgi_uring::ServerHandle, SocketAddr) {
    // A port below the ephemeral range: one from bind(:0), released, was once taken by another
    // test's connection before the server bound it.
    let port = fcgi_loadtest::child::free_port().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = fcgi_uring::Config::builder()
        .listen(Addr::Tcp(addr))
        .workers(1)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = fcgi_uring::Server::new(config)
        .start(|| fcgi_uring::service_fn(fcgi_uring_cli::demo::app))
        .unwrap();
    (handle, addr)
}

/// Sends `GET /hello` as request `id` (split into two writes inside a record header) and
/// returns every byte up to and including END_REQUEST.
fn answer(addr: SocketAddr, id: u16) -> Vec<u8> {
    let request = hello_request(id);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(&request[..13]).unwrap();
    // The server has read the first part (acknowledged, none left unread on its side) before
    // the rest is sent: the header really arrives in two reads.
    let ours = stream.local_addr().unwrap().port();
    wait_for("the server to read the first 13 bytes", HANG_GUARD, || {
        let sockets = tcp_sockets();
        let acked = sockets
            .iter()
            .any(|s| s.local_port == ours && s.remote_port == addr.port() && s.tx_queue == 0);
        let read = sockets.iter().any(|s| {
            s.local_port == addr.port()
                && s.remote_port == ours
                && s.state == TCP_ESTABLISHED
                && s.rx_queue == 0
        });
        acked && read
    });
    stream.write_all(&request[13..]).unwrap();
    read_answer(&mut stream)
}

/// Sends `GET /hello` as request `id` in one write over the UNIX socket at `path` and returns
/// every byte up to and including END_REQUEST.
fn answer_unix(path: &Path, id: u16) -> Vec<u8> {
    let mut stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&hello_request(id)).unwrap();
    read_answer(&mut stream)
}

/// nginx's `GET /hello` as request `id`, in FastCGI records.
fn hello_request(id: u16) -> Vec<u8> {
    let mut request = Vec::new();
    nginx_request("GET", "/hello", "localhost", b"", true).append(&mut request, id);
    request
}

/// Every byte `stream` brings up to and including END_REQUEST.
fn read_answer(stream: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = end_of_response(&got) {
            got.truncate(end);
            return got;
        }
        let n = stream
            .read(&mut chunk)
            .expect("an answer before the timeout");
        assert!(n > 0, "closed before END_REQUEST; got {got:?}");
        got.extend_from_slice(&chunk[..n]);
    }
}

/// Where the END_REQUEST record ends, once it has arrived.
fn end_of_response(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER_LEN) {
        let header = Header::parse(header.try_into().ok()?);
        let end = at + HEADER_LEN + header.body_len();
        if header.known_type() == Some(RecordType::EndRequest) && end <= bytes.len() {
            return Some(end);
        }
        at = end;
    }
    None
}

#[test]
fn floor_answers_hello_with_the_real_servers_bytes() {
    let (_server, real) = real_server();
    for mode in MODES {
        let floor = Floor::start(mode);
        for id in [1, 300, 65535] {
            let theirs = answer(real, id);
            assert!(theirs.windows(13).any(|w| w == b"Hello, World!"));
            assert_eq!(answer(floor.addr, id), theirs, "{mode:?}, request id {id}");
        }
    }
}

#[test]
fn floor_listens_on_a_unix_socket_and_serves_there_as_over_tcp() {
    let (_server, real) = real_server();
    let theirs = answer(real, 7);
    for mode in MODES {
        let path = std::env::temp_dir().join(format!(
            "fcgi-floor-test-{}-{mode:?}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let addr = format!("unix:{}", path.display());
        let (child, stdout, listening) = Floor::spawn_on(mode.flags(), &addr, &[]);
        // Killed when dropped; `addr` is only for the TCP floors' helpers.
        let _floor = Floor {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout,
        };
        assert_eq!(listening, addr, "{mode:?}");
        assert_eq!(answer_unix(&path, 7), theirs, "{mode:?}");

        hello_load(mode, Addr::Unix(path.clone()));
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn floor_says_it_multiplexes_and_serves_a_multiplexed_load_without_errors() {
    for mode in MODES {
        multiplexed_load(mode);
    }
}

fn multiplexed_load(mode: Mode) {
    let floor = Floor::start(mode);
    let addr = Addr::Tcp(floor.addr);
    let values = probe_values(&addr, Duration::from_secs(5))
        .unwrap()
        .expect("a GET_VALUES_RESULT");
    assert_eq!(values.mpxs_conns, Some(true));
    hello_load(mode, addr);
}

/// Half a second of `GET /hello` on 4 connections with 8 requests in flight each: every answer
/// is `Hello, World!`, and more than 100 come.
fn hello_load(mode: Mode, addr: Addr) {
    let mut cfg = Config::new(Protocol::Fastcgi, addr, "/hello");
    cfg.conns = 4;
    cfg.depth = 8;
    cfg.duration = Duration::from_millis(500);
    cfg.warmup = Duration::from_millis(100);
    cfg.expect_body = Some("Hello, World!".into());
    let report = run(&cfg).unwrap();
    assert_eq!(report.errors, 0, "{mode:?}: {report:?}");
    assert!(report.requests > 100, "{mode:?}: {report:?}");
}

#[test]
fn floor_with_seconds_exits_by_itself_and_counts_its_answers() {
    for mode in MODES {
        // Long enough for the three answers on a busy machine (each waits for the floor to
        // read half a request), short enough to wait out.
        let mut floor = Floor::start_with(mode, &["4"]);
        for id in [1, 2, 3] {
            answer(floor.addr, id);
        }
        let status = floor.child.wait().unwrap();
        assert!(status.success(), "{mode:?}: exit status {status}");
        let mut rest = String::new();
        floor.stdout.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "requests=3\n", "{mode:?}");
    }
}

#[test]
fn the_echo_floor_answers_every_upload_with_its_body() {
    let floor = Floor::spawn(&["--epoll", "--echo"], &[]);
    // Two STDIN records per request (65,535 bytes at most each), written by the client from
    // its per-id encodings; with 4 in flight per connection, new requests also queue behind
    // one still being written.
    let body = vec![b'x'; 100_000];
    let mut cfg = Config::new(Protocol::Fastcgi, Addr::Tcp(floor.addr), "/echo");
    cfg.conns = 2;
    cfg.depth = 4;
    cfg.body_bytes = body.len();
    cfg.duration = Duration::from_millis(500);
    cfg.warmup = Duration::from_millis(100);
    cfg.expect_body = Some(String::from_utf8(body).unwrap());
    let report = run(&cfg).unwrap();
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.requests > 10, "{report:?}");
}

#[test]
fn bad_options_are_refused_with_the_usage() {
    for (args, says) in [
        (&["--echo"][..], "--echo needs --epoll"),
        (&["--epoll", "--echo", "--surface"], "not both"),
        (&["--fast"], "unknown option \"--fast\""),
        (&["unix:"], "no path after unix:"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fcgi-floor"))
            .args(args)
            .arg("127.0.0.1:0")
            .output()
            .expect("run fcgi-floor");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(says) && err.contains("usage: fcgi-floor"),
            "{args:?}: {err}"
        );
    }
}
