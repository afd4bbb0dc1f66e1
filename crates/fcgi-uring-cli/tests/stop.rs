//! `fcgi-uring stop --pid-file F`: SIGTERM to the server F names, then a wait for its exit.
//!
//! - It returns (exit 0) once the server has exited, after the drain: `/readyz` answered 503
//!   meanwhile, the request in flight was answered, the pid file is gone.
//! - A missing pid file, a stale one (no such process, or a process that is not fcgi-uring, which
//!   is left alone), and a server still draining at `--wait`: exit 1 with the reason.
//! - In a PID namespace where the server is PID 1 (a container), whose exit kills every other
//!   process of the namespace: it returns once the signal is delivered, and the server drains
//!   and exits.
//! - `fcgi-uring reload` finds its server the same way: a stale pid file is refused with the
//!   reason and the process it names is not signalled.
//! - A server is known by its worker threads, not by its binary's name: a server started from
//!   a renamed binary (`myapp-v2`) is reloaded and stopped, and another program that happens to
//!   be named `fcgi-uring` is refused.
//! - `--wait` takes seconds as every duration of the command line does, fractions included.
//! - A pid file that cannot be written fails the start before the server serves, naming it.

mod common;

use common::proxy::free_port;
use common::{HANG_GUARD, KillOnDrop, wait_for};
use fcgi_client::RequestSpec;
use fcgi_uring::Addr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-uring");

/// `fcgi-uring serve` with an admin listener, `--drain-delay drain_delay` and a pid file in
/// `dir`, started through `wrapper` (a command and its arguments before the binary) if given.
struct Server {
    child: KillOnDrop,
    fcgi: Addr,
    port: u16,
    admin: SocketAddr,
    pid_file: PathBuf,
}

impl Server {
    fn start(dir: &Path, drain_delay: &str, wrapper: &[&str]) -> Server {
        Server::start_binary(BIN, dir, drain_delay, wrapper)
    }

    /// As [`Server::start`], with the binary at `bin`.
    fn start_binary(bin: &str, dir: &Path, drain_delay: &str, wrapper: &[&str]) -> Server {
        let fcgi = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let pid_file = dir.join("fcgi-uring.pid");
        let mut cmd = match wrapper {
            [program, args @ ..] => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
            [] => Command::new(bin),
        };
        cmd.args(["serve", "--workers", "2", "--no-pin", "--listen"])
            .arg(fcgi.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .args(["--drain-delay", drain_delay, "--pid-file"])
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let server = Server {
            child: KillOnDrop(cmd.spawn().expect("start fcgi-uring serve")),
            fcgi: Addr::Tcp(fcgi),
            port: fcgi.port(),
            admin,
            pid_file,
        };
        wait_for("the server to be ready", HANG_GUARD, || {
            server.pid_file.exists() && server.readyz() == 200
        });
        server
    }

    /// `/readyz`'s status, 0 when the admin listener does not answer.
    fn readyz(&self) -> u16 {
        match std::net::TcpStream::connect(self.admin) {
            Ok(_) => {
                let none = common::http_client::Upload::None;
                common::http_client::request(self.admin, "GET", "/readyz", &[], none).status
            }
            Err(_) => 0,
        }
    }

    fn exited(&mut self) -> bool {
        self.child.0.try_wait().expect("try_wait").is_some()
    }
}

fn stop(pid_file: &Path, wait: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["stop", "--wait", wait, "--pid-file"])
        .arg(pid_file)
        .stdin(Stdio::null());
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn stop_returns_once_the_server_drained_and_exited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), "1", &[]);
    // A request in flight across the drain delay and into the drain.
    let mut slow = common::connect(&server.fcgi);
    slow.begin(&RequestSpec::get("/sleep?ms=1500"), 1)
        .expect("send");
    wait_for("the slow request to be read", HANG_GUARD, || {
        common::connections_read(server.port) > 0
    });

    let stopping: Child = stop(&server.pid_file, "60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fcgi-uring stop");
    wait_for("/readyz 503 while draining", HANG_GUARD, || {
        server.readyz() == 503
    });
    let out = stopping.wait_with_output().expect("fcgi-uring stop");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("exited"), "{}", text(&out));
    // The server is gone when stop returns (a zombie until reaped: try_wait reaps it).
    assert!(server.exited(), "stop returned while the server ran");
    assert!(!server.pid_file.exists(), "the server removes its pid file");
    let mut responses = fcgi_client::Responses::new();
    while !responses.is_ended(1) {
        let record = slow
            .read_record()
            .expect("read")
            .expect("the answer, not EOF");
        responses.push(record);
    }
    let answer = responses
        .take(1)
        .expect("request 1")
        .response()
        .expect("response");
    assert_eq!(answer.status, 200, "the request in flight was answered");
}

#[test]
fn stop_without_a_running_server_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("fcgi-uring.pid");

    let out = stop(&pid_file, "1").output().expect("stop");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no pid in"), "{}", text(&out));

    // A process that exited (its pid not reused yet: a fresh pid is far from reuse).
    let mut gone = Command::new("true").spawn().expect("true");
    let gone_pid = gone.id();
    gone.wait().expect("wait");
    std::fs::write(&pid_file, format!("{gone_pid}\n")).expect("write");
    let out = stop(&pid_file, "1").output().expect("stop");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("stale"), "{}", text(&out));

    // A live process that is not fcgi-uring (a pid reused after a crash) is not signalled.
    refuses_another_programs_pid(&pid_file, || stop(&pid_file, "1").output().expect("stop"));
}

/// `run` (stop or reload) with `pid_file` naming a `sleep`, then a `sleep` whose binary is
/// named `fcgi-uring` (the name of the server's binary proves nothing): exit 1 saying the file
/// is stale and what the process is, and neither signalled (SIGTERM and SIGUSR2 would both end
/// it).
fn refuses_another_programs_pid(pid_file: &Path, run: impl Fn() -> Output) {
    let dir = tempfile::tempdir().expect("tempdir");
    let named = dir.path().join("fcgi-uring");
    std::fs::copy(which("sleep"), &named).expect("copy sleep");
    for (program, comm) in [(PathBuf::from("sleep"), "sleep"), (named, "fcgi-uring")] {
        let mut other = KillOnDrop(Command::new(&program).arg("600").spawn().expect("sleep"));
        // Until the child has exec'd, its name is still this test's.
        let proc_comm = format!("/proc/{}/comm", other.0.id());
        wait_for("the child to exec sleep", HANG_GUARD, || {
            std::fs::read_to_string(&proc_comm)
                .unwrap_or_default()
                .trim()
                == comm
        });
        std::fs::write(pid_file, format!("{}\n", other.0.id())).expect("write");
        let out = run();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let said = text(&out);
        assert!(
            said.contains("stale")
                && said.contains("600`, not an fcgi-uring server")
                && said.contains("not signalled"),
            "{said}"
        );
        assert!(
            other.0.try_wait().expect("try_wait").is_none(),
            "{comm} was signalled"
        );
    }
}

/// The path of `program` on PATH.
fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} not on PATH"))
}

#[test]
fn a_server_started_from_a_renamed_binary_is_reloaded_and_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A versioned deploy's name (a copy: a hard link would do where the target directory is
    // on the same filesystem as the temporary one).
    let bin = dir.path().join("myapp-v2");
    if std::fs::hard_link(BIN, &bin).is_err() {
        std::fs::copy(BIN, &bin).expect("copy the binary");
    }
    let bin = bin.to_str().expect("a UTF-8 path").to_owned();
    let mut server = Server::start_binary(&bin, dir.path(), "0", &[]);
    let old = std::fs::read_to_string(&server.pid_file).expect("pid file");

    let out = Command::new(BIN)
        .args(["reload", "--wait", "60", "--pid-file"])
        .arg(&server.pid_file)
        .stdin(Stdio::null())
        .output()
        .expect("reload");
    assert!(out.status.success(), "{}", text(&out));
    let new = std::fs::read_to_string(&server.pid_file).expect("pid file");
    assert_ne!(old, new, "{}", text(&out));
    wait_for("the old process to drain and exit", HANG_GUARD, || {
        server.exited()
    });

    let out = stop(&server.pid_file, "60").output().expect("stop");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("exited"), "{}", text(&out));
    assert!(!server.pid_file.exists(), "the server removes its pid file");
}

#[test]
fn a_pid_file_that_cannot_be_written_fails_the_start_before_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("missing").join("fcgi-uring.pid");
    let out = Command::new(BIN)
        .args(["serve", "--workers", "1", "--no-pin", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--admin-listen", "none", "--pid-file"])
        .arg(&pid_file)
        .stdin(Stdio::null())
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("serving"), "it served first: {stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot write the pid file {}", pid_file.display())),
        "{stderr}"
    );
}

#[test]
fn reload_of_a_stale_pid_file_signals_nothing_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("fcgi-uring.pid");
    let reload = |pid_file: &Path| {
        Command::new(BIN)
            .args(["reload", "--wait", "1", "--pid-file"])
            .arg(pid_file)
            .stdin(Stdio::null())
            .output()
            .expect("reload")
    };
    let out = reload(&pid_file);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no pid in"), "{}", text(&out));

    refuses_another_programs_pid(&pid_file, || reload(&pid_file));
}

#[test]
fn stop_reports_a_server_still_draining_at_its_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), "600", &[]);
    // Fractions of a second, as every duration of the command line.
    let out = stop(&server.pid_file, "1.5").output().expect("stop");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("still runs 1.5 s after SIGTERM"),
        "{}",
        text(&out)
    );
    // It was stopped all the same: draining (still serving) in its drain delay.
    assert!(!server.exited());
    assert_eq!(server.readyz(), 503);
    assert_eq!(common::get(&server.fcgi, "/hello").status, 200);
}

/// Whether this process may create PID namespaces (root); outside CI a test that needs it
/// is skipped with a note, in CI (root) it never is.
fn may_unshare() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false);
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root: PID namespaces are available"
        );
        eprintln!("SKIPPED: creating a PID namespace needs root");
    }
    root
}

#[test]
fn stop_of_a_containers_pid_1_returns_once_signalled() {
    if !may_unshare() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The server is PID 1 of a new PID namespace, as a container's main process is (and is
    // killed with `unshare` if the test fails).
    let mut server = Server::start(
        dir.path(),
        "1",
        &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
    );
    assert_eq!(
        std::fs::read_to_string(&server.pid_file)
            .expect("pid file")
            .trim(),
        "1",
        "the server is PID 1 of its namespace"
    );
    // Its pid as this namespace sees it: the one child of `unshare`.
    let unshare = server.child.0.id();
    let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        .expect("unshare's children");
    let host_pid = children
        .split_whitespace()
        .next()
        .expect("the server")
        .to_owned();

    // As `kubectl exec` / `docker exec` (and a preStop exec hook) run it: inside the namespace.
    let out = Command::new("nsenter")
        .args([
            "--target", &host_pid, "--pid", "--mount", BIN, "stop", "--wait", "60",
        ])
        .arg("--pid-file")
        .arg(&server.pid_file)
        .stdin(Stdio::null())
        .output()
        .expect("nsenter");
    assert!(out.status.success(), "{} {}", out.status, text(&out));
    assert!(text(&out).contains("does not wait"), "{}", text(&out));
    wait_for("the server to drain and exit", HANG_GUARD, || {
        server.exited()
    });
}
