//! systemd socket activation with Debian's `systemd-socket-activate` (no systemd as PID 1):
//! it holds the listening socket, as a socket unit does, and runs a shell that starts the
//! service process again each time it exits (a unit's `Restart=always`), passing the socket on
//! with `LISTEN_FDS`, `LISTEN_FDNAMES` and a `LISTEN_PID` naming each new process. Under steady
//! keep-alive load, 20 restarts (SIGTERM to the serving process) lose nothing: no failed
//! request, no reset, every request answered by one of the processes, on TCP and on UNIX
//! sockets.

mod common;

use common::restarts::{KillPidFile, Load, alive, assert_lossless, pid_in, signal};
use common::{HANG_GUARD, KillOnDrop, wait_for};
use fcgi_uring::Addr;
use std::path::Path;
use std::process::{Command, Stdio};

const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";
const RESTARTS: usize = 20;

/// The supervisor: `$1` is the stop file, the rest the service's command line.
const SUPERVISOR: &str = r#"stop=$1; shift
while [ ! -e "$stop" ]; do
  sh -c 'LISTEN_PID=$$ exec "$@"' service "$@"
done"#;

fn restarts_lose_nothing(listen: &str, addr: Addr, dir: &Path) {
    assert!(
        Path::new(ACTIVATE).exists(),
        "{ACTIVATE} is missing: install Debian's systemd package (.ci/run does)"
    );
    let pid_file = dir.join("fcgi-uring.pid");
    let stop_file = dir.join("stop");
    let _kill_server = KillPidFile(pid_file.clone());
    let mut supervisor = KillOnDrop(
        Command::new(ACTIVATE)
            .args([
                "-l",
                listen,
                "--fdname=fastcgi",
                "sh",
                "-c",
                SUPERVISOR,
                "supervisor",
            ])
            .arg(&stop_file)
            .arg(env!("CARGO_BIN_EXE_fcgi-uring"))
            .args([
                "serve",
                "--workers",
                "2",
                "--no-pin",
                "--admin-listen",
                "none",
            ])
            .args(["--shutdown-timeout", "10", "--pid-file"])
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start systemd-socket-activate"),
    );
    // systemd-socket-activate listens, then starts the service at the first connection.
    wait_for("systemd-socket-activate listening", HANG_GUARD, || {
        fcgi_client::Client::connect(&addr).is_ok()
    });
    let load = Load::start(&addr, 8);
    let mut pids = Vec::new();
    let mut current = 0;
    wait_for("the first service process", HANG_GUARD, || {
        current = pid_in(&pid_file).unwrap_or(0);
        current != 0 && alive(current)
    });
    load.wait_answered_by(current);
    pids.push(current);
    for _ in 0..RESTARTS {
        let old = current;
        signal(old, "TERM");
        wait_for("the next service process", HANG_GUARD, || {
            current = pid_in(&pid_file).unwrap_or(0);
            current != 0 && current != old && alive(current)
        });
        load.wait_answered_by(current);
        pids.push(current);
    }
    load.wait_answers(100);
    let tally = load.stop();
    std::fs::write(&stop_file, b"").expect("write the stop file");
    signal(current, "TERM");
    wait_for("the supervisor to exit", HANG_GUARD, || {
        supervisor.0.try_wait().expect("wait").is_some()
    });
    assert_lossless(&tally, &pids);
    eprintln!(
        "{RESTARTS} restarts: {} answered, {} resent after a close between requests, by pid: {:?}",
        tally.answered(),
        tally.resent,
        tally.by_pid
    );
}

#[test]
fn tcp_socket_restarts_lose_nothing() {
    let port = common::proxy::free_port();
    let listen = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: Addr = listen.parse().expect("addr");
    restarts_lose_nothing(&listen, addr, dir.path());
}

#[test]
fn unix_socket_restarts_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fcgi.sock");
    let listen = path.to_str().expect("utf-8 path").to_owned();
    restarts_lose_nothing(&listen, Addr::Unix(path.clone()), dir.path());
    assert!(
        path.exists(),
        "the socket file belongs to the socket unit: the service must leave it"
    );
}

/// `sh -c SCRIPT` with the binary as `$0`, its output.
fn run_sh(script: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", script, env!("CARGO_BIN_EXE_fcgi-uring")])
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

#[test]
fn a_passed_fd_that_is_no_listening_socket_fails_the_start_naming_it() {
    let out = run_sh(
        "exec 3</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web \
         exec \"$0\" serve --workers 1 --no-pin --admin-listen none",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("passed fd 3 (name \"web\")"), "{err}");
}

#[test]
fn a_stray_listen_fds_without_listen_pid_is_ignored() {
    let port = common::proxy::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    let _kill = KillPidFile(pid_file.clone());
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
            .args([
                "serve",
                "--workers",
                "1",
                "--no-pin",
                "--admin-listen",
                "none",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--pid-file"])
            .arg(&pid_file)
            .env("LISTEN_FDS", "1")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start"),
    );
    wait_for("the server on its own port", HANG_GUARD, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(server.0.try_wait().expect("wait").is_none());
}
