//! Configurations an operator gets wrong, and what the server says about them.

mod common;

use common::proxy::{free_port, nginx};
use common::{HANG_GUARD, KillOnDrop, wait_for};
use fcgi_client::{Client, RequestSpec};
use fcgi_uring::Addr;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-uring");

/// A proxy pointed at the admin port instead of the FastCGI one: the request fails at the
/// proxy (the admin listener speaks HTTP), and the server's log says what is wrong and what to
/// point the proxy at; the FastCGI port keeps serving.
#[test]
fn a_fastcgi_client_on_the_admin_port_is_reported() {
    let (port, admin_port) = (free_port(), free_port());
    let mut server = KillOnDrop(
        Command::new(BIN)
            .args(["serve", "--workers", "1", "--no-pin"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = server.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    wait_for("the admin listener", HANG_GUARD, || {
        TcpStream::connect(admin).is_ok()
    });
    // A FastCGI request on the admin port: no FastCGI answer comes back.
    let mut client = Client::connect(&Addr::Tcp(admin)).unwrap();
    client.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let answer = client.request(&RequestSpec::get("/hello"));
    assert!(
        answer.is_err(),
        "the admin port answered FastCGI: {answer:?}"
    );
    let wanted = "a FastCGI client connected to the admin listener";
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains(wanted)) {
        match rx.recv_timeout(HANG_GUARD) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("no report of the FastCGI client ({e}); saw {seen:?}"),
        }
    }
    let line = seen.iter().find(|l| l.contains(wanted)).unwrap();
    assert!(line.contains("server.listen"), "{line}");
    // The same mistake with `fcgi-uring request`: it says it got HTTP and names the likely
    // cause, rather than a short read.
    let out = Command::new(BIN)
        .args(["request", "--addr", &admin.to_string(), "/hello"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("the peer answered with HTTP, not FastCGI") && said.contains("admin port"),
        "{said}"
    );
    // And the reverse, `fcgi-uring status` given the FastCGI port: no HTTP answer, and where
    // the admin listener is.
    let out = Command::new(BIN)
        .args(["status", "--admin", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no HTTP answer")
            && said.contains("FastCGI port")
            && said.contains("--admin"),
        "{said}"
    );
    // Through nginx pointed at the admin port: a 502 from nginx, the same report (once a
    // minute at most, so not repeated here), and the FastCGI port unaffected.
    if let Some(proxy) = nginx(&format!("127.0.0.1:{admin_port}")) {
        let r = common::http_client::request(
            proxy.addr,
            "GET",
            "/hello",
            &[],
            common::http_client::Upload::None,
        );
        assert_eq!(r.status, 502);
    }
    let r = common::get(
        &Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
        "/hello",
    );
    assert_eq!(r.status, 200);
}

/// A FastCGI client that sends a second request while one runs on a connection that takes
/// one at a time gets END_REQUEST(CANT_MPX_CONN) for it, as FastCGI 1.0 says, and the first
/// is answered.
#[test]
fn a_concurrent_request_where_one_is_allowed_gets_cant_mpx_conn() {
    let config = common::test_config()
        .into_builder()
        .max_requests_per_conn(1)
        .build()
        .unwrap();
    let server = fcgi_uring::Server::new(config)
        .start(|| fcgi_uring::service_fn(fcgi_uring_cli::demo::app))
        .unwrap();
    let mut c = common::connect(server.local_addr());
    let mut spec = RequestSpec::get("/sleep?ms=200");
    spec.keep_conn = true;
    c.begin(&spec, 1).unwrap();
    c.begin(&spec, 2).unwrap();
    let mut responses = fcgi_client::Responses::new();
    c.collect(&mut responses, &[1, 2]).unwrap();
    let refused = responses.get(2).unwrap().end.unwrap();
    assert_eq!(
        refused.protocol_status,
        fcgi_proto::record::ProtocolStatus::CantMpxConn as u8
    );
    assert_eq!(responses.get(1).unwrap().response().unwrap().status, 200);
    let stats = server.stats();
    assert_eq!(stats.get(fcgi_uring::Counter::ConnOverloaded), 1);
}

/// What the command prints for a person: the banner names the protocol as it is spelt
/// (`FastCGI`) and counts "1 worker"; `fcgi-uring --help` lists `config`; `status --watch` into a
/// pipe writes tables without terminal escapes; a port out of range is called that.
#[test]
fn what_the_command_prints_is_plain() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("config ")),
        "{help}"
    );

    let (port, admin_port) = (free_port(), free_port());
    let mut server = KillOnDrop(
        Command::new(BIN)
            .args(["serve", "--workers", "1", "--no-pin"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut banner = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(
        banner.contains(" over FastCGI on ") && banner.contains(" with 1 worker;"),
        "{banner}"
    );

    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    wait_for("the admin listener", HANG_GUARD, || {
        TcpStream::connect(admin).is_ok()
    });
    let mut watch = KillOnDrop(
        Command::new(BIN)
            .args(["status", "--watch", "--interval", "0.1", "--admin"])
            .arg(admin.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Two tables, each headed by the server's state line.
    while seen
        .iter()
        .filter(|l: &&String| l.starts_with("fcgi-uring: "))
        .count()
        < 2
    {
        match lines.next() {
            Some(Ok(line)) => seen.push(line),
            other => panic!("status --watch ended: {other:?} after {seen:?}"),
        }
    }
    assert!(
        !seen.iter().any(|l| l.contains('\x1b')),
        "terminal escapes into a pipe: {seen:?}"
    );

    let out = Command::new(BIN)
        .args(["request", "--addr", "127.0.0.1:99999", "/"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("port 99999 is out of range"), "{said}");
}

/// An address that is not one says what is wrong with it (a port out of range, no host, no
/// port), as a flag and in the file, before anything is bound.
#[test]
fn a_wrong_address_says_what_is_wrong_with_it() {
    let serve = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        assert!(out.stdout.is_empty(), "{args:?} served");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cases = [
        (
            "--listen",
            "127.0.0.1:70000",
            "port 70000 is out of range (0 to 65535)",
        ),
        (
            "--listen",
            "[::1]:65536",
            "port 65536 is out of range (0 to 65535)",
        ),
        ("--listen", ":9000", "no host before the port"),
        ("--admin-listen", "127.0.0.1", "no port"),
        (
            "--listen",
            "127.0.0.1:fcgi",
            "port \"fcgi\" is not a number",
        ),
    ];
    for (flag, addr, why) in cases {
        let said = serve(&[flag, addr]);
        assert!(
            said.contains(&format!("{addr:?}: {why}")) && said.contains(flag),
            "{flag} {addr}: {said}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fcgi-uring.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:70000\"\n").unwrap();
    let said = serve(&["--config", file.to_str().unwrap()]);
    assert!(
        said.contains(":2: server.listen = \"127.0.0.1:70000\": port 70000 is out of range"),
        "{said}"
    );
}

/// `ring.defer_taskrun` on: the server says at start what it costs (a worker woken late after
/// an idle moment, docs/tuning.md); off (the default), it says nothing of it. The serving line
/// on stdout comes after the start's warnings on stderr.
#[test]
fn defer_taskrun_is_warned_about_at_start() {
    for (defer, warned) in [("true", true), ("false", false)] {
        let mut server = KillOnDrop(
            Command::new(BIN)
                .args([
                    "serve",
                    "--workers",
                    "1",
                    "--no-pin",
                    "--admin-listen",
                    "none",
                ])
                .args(["--listen", "127.0.0.1:0", "--io", "uring"])
                .args(["--defer-taskrun", defer])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdout = server.0.stdout.take().unwrap();
        let mut serving = String::new();
        BufReader::new(stdout).read_line(&mut serving).unwrap();
        assert!(
            serving.contains("serving") && serving.contains("io_uring"),
            "{serving}"
        );
        assert_eq!(serving.contains("defer-taskrun"), warned, "{serving}");
        server.0.kill().unwrap();
        server.0.wait().unwrap();
        let mut log = String::new();
        std::io::Read::read_to_string(&mut server.0.stderr.take().unwrap(), &mut log).unwrap();
        assert_eq!(
            log.contains("ring.defer_taskrun is on"),
            warned,
            "--defer-taskrun {defer}: {log}"
        );
    }
}
