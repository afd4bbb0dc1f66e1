//! The sd_notify messages of the real binary, read from a `NOTIFY_SOCKET` the test binds (as
//! systemd's): `READY=1` once serving, `WATCHDOG=1` repeatedly when `WATCHDOG_USEC` is set,
//! `MAINPID=<new pid>` after a hot upgrade (and the new process's own `READY=1`), `STOPPING=1`
//! when a shutdown's drain starts, and no `STOPPING=1` from a process that handed over.

mod common;

use common::restarts::{KillPidFile, alive, pid_in, signal};
use common::{HANG_GUARD, wait_for};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every datagram received so far, as text.
fn collect(socket: UnixDatagram) -> Arc<Mutex<Vec<String>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => sink
                    .lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    });
    got
}

fn count(got: &Mutex<Vec<String>>, line: &str) -> usize {
    got.lock()
        .expect("lock")
        .iter()
        .flat_map(|m| m.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l == line)
        .count()
}

#[test]
fn ready_watchdog_mainpid_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = dir.path().join("notify.sock");
    let got = collect(UnixDatagram::bind(&notify).expect("bind the notify socket"));
    let pid_file = dir.path().join("fcgi-uring.pid");
    let _kill = KillPidFile(pid_file.clone());
    let listen = format!("127.0.0.1:{}", common::proxy::free_port());
    let _first = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
            .args(["serve", "--listen", &listen, "--workers", "2", "--no-pin"])
            .args(["--admin-listen", "none", "--pid-file"])
            .arg(&pid_file)
            .env("NOTIFY_SOCKET", &notify)
            .env("WATCHDOG_USEC", "200000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start fcgi-uring serve"),
    );
    wait_for("READY=1", HANG_GUARD, || count(&got, "READY=1") == 1);
    // `serve` writes its pid file once the server has started, just after READY=1.
    wait_for("the pid file", HANG_GUARD, || pid_in(&pid_file).is_some());
    let old = pid_in(&pid_file).expect("pid file");
    // Pings every 100 ms while the workers turn.
    wait_for("5 watchdog pings", HANG_GUARD, || {
        count(&got, "WATCHDOG=1") >= 5
    });

    signal(old, "USR2");
    let mut new = 0;
    wait_for("the new process", HANG_GUARD, || {
        new = pid_in(&pid_file).unwrap_or(0);
        new != 0 && new != old && alive(new)
    });
    wait_for("MAINPID= naming it", HANG_GUARD, || {
        count(&got, &format!("MAINPID={new}")) == 1
    });
    wait_for("the old process to exit", HANG_GUARD, || !alive(old));
    assert_eq!(count(&got, "READY=1"), 2, "the new process reported ready");
    assert_eq!(count(&got, "STOPPING=1"), 0, "a hand-over is no stop");
    let pings = count(&got, "WATCHDOG=1");
    wait_for("the new process's watchdog pings", HANG_GUARD, || {
        count(&got, "WATCHDOG=1") >= pings + 5
    });

    signal(new, "TERM");
    wait_for("STOPPING=1", HANG_GUARD, || count(&got, "STOPPING=1") == 1);
    wait_for("the last process to exit", HANG_GUARD, || !alive(new));
}
