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
