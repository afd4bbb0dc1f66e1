//! The io_uring fallback of the real binary, with io_uring blocked the way container runtimes
//! block it: a seccomp filter (installed by bubblewrap's `--seccomp`) makes `io_uring_setup`,
//! `io_uring_enter` and `io_uring_register` fail with EPERM (Docker >= 25, containerd 2.x
//! RuntimeDefault) or ENOSYS (rootless Podman). `--io auto` must serve on epoll and log why;
//! `--io uring` must exit non-zero with the cause and the fix.

mod common;

use common::proxy::free_port;
use common::{HANG_GUARD, KillOnDrop, connect, sequential_1000, wait_for};
use fcgi_client::RequestSpec;
use fcgi_uring::Addr;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-uring");
/// io_uring_setup, io_uring_enter, io_uring_register (the same numbers on x86_64 and aarch64).
const IO_URING_SYSCALLS: [u32; 3] = [425, 426, 427];

/// A classic BPF seccomp program: `errno` for the io_uring syscalls of this architecture,
/// everything else allowed. Each instruction is `struct sock_filter` (u16 code, u8 jt, u8 jf,
/// u32 k), in native byte order, as bubblewrap reads it.
fn seccomp_filter(errno: u32) -> Vec<u8> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    // seccomp_data: nr at offset 0, arch at offset 4.
    let arch: u32 = if cfg!(target_arch = "aarch64") {
        0xC000_00B7
    } else {
        0xC000_003E
    };
    let [setup, enter, register] = IO_URING_SYSCALLS;
    let program: [(u16, u8, u8, u32); 8] = [
        (LD_W_ABS, 0, 0, 4),     // 0: A = arch
        (JEQ_K, 0, 4, arch),     // 1: another arch: allow (6)
        (LD_W_ABS, 0, 0, 0),     // 2: A = nr
        (JEQ_K, 3, 0, setup),    // 3: -> errno (7)
        (JEQ_K, 2, 0, enter),    // 4: -> errno (7)
        (JEQ_K, 1, 0, register), // 5: -> errno (7)
        (RET_K, 0, 0, RET_ALLOW),
        (RET_K, 0, 0, RET_ERRNO | errno),
    ];
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for (code, jt, jf, k) in program {
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.extend_from_slice(&[jt, jf]);
        bytes.extend_from_slice(&k.to_ne_bytes());
    }
    bytes
}

/// bubblewrap, or `None` to skip outside CI (in CI a missing one fails: .ci/run installs it).
fn bwrap() -> Option<PathBuf> {
    common::proxy::find_binary("bwrap", &["/usr/bin/bwrap"])
}

/// `fcgi-uring serve ARGS` under a seccomp filter that fails the io_uring syscalls with `errno`;
/// stdout and stderr piped.
fn serve_blocked(bwrap: &Path, dir: &Path, errno: i32, args: &[&str]) -> Child {
    let filter = dir.join(format!("io_uring-{errno}.bpf"));
    std::fs::write(&filter, seccomp_filter(errno as u32)).unwrap();
    // The filter is read from fd 9; the sandbox shares the host's filesystem and network.
    let script = r#"exec 9<"$1"; shift; exec "$@""#;
    Command::new("bash")
        .args(["-c", script, "sh"])
        .arg(&filter)
        .arg(bwrap)
        .args([
            "--bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--die-with-parent",
        ])
        .args(["--seccomp", "9"])
        .args(["--", BIN, "serve", "--workers", "2", "--no-pin"])
        .args(args)
        .env_remove(fcgi_uring::IO_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fcgi-uring serve under bwrap")
}

/// The process bubblewrap (`bwrap_pid`) runs.
fn sandboxed_pid(bwrap_pid: u32) -> u32 {
    let path = format!("/proc/{bwrap_pid}/task/{bwrap_pid}/children");
    let children = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut pids = children.split_whitespace();
    let pid = pids
        .next()
        .unwrap_or_else(|| panic!("bwrap {bwrap_pid} has no child"));
    pid.parse().unwrap()
}

/// Lines of a child's pipe, as they come.
fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; every line seen is kept in `seen`.
fn line_with(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    loop {
        match rx.recv_timeout(HANG_GUARD) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line with {needle:?} ({e}); lines so far: {seen:#?}"),
        }
    }
}

/// With io_uring failing with `errno`, `--io auto` logs the cause once, serves on epoll, and
/// answers every request; it stops cleanly on SIGTERM.
fn auto_serves_on_epoll(errno: i32, cause: &str) {
    let Some(bwrap) = bwrap() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = serve_blocked(
        &bwrap,
        dir.path(),
        errno,
        &["--io", "auto", "--listen", &listen],
    );
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    let mut server = KillOnDrop(child);
    let mut seen = Vec::new();
    let startup = line_with(&stdout, "fcgi-uring serving", &mut seen);
    assert!(startup.ends_with("; epoll"), "startup line: {startup}");
    let warning = line_with(&stderr, "serving with epoll", &mut seen);
    assert!(
        warning.contains(cause),
        "the log names the cause: {warning}"
    );
    wait_for("the server listening", HANG_GUARD, || {
        TcpStream::connect(&listen).is_ok()
    });

    let addr: Addr = listen.parse().unwrap();
    sequential_1000(&addr);
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let r = connect(&addr)
        .request(&RequestSpec::post("/echo", body.clone()))
        .expect("echo");
    assert_eq!(r.body, body, "a 300 KB body comes back whole");

    // bubblewrap runs the server as its child and exits with its status.
    let pid = sandboxed_pid(server.0.id()).to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.0.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let shutdown = line_with(&stderr, "shutting down", &mut seen);
    assert!(shutdown.contains("requests=1001"), "{shutdown}");
    let warnings = seen
        .iter()
        .filter(|l| l.contains("serving with epoll"))
        .count();
    assert_eq!(
        warnings, 0,
        "one fallback line per process, more seen: {seen:#?}"
    );
}

/// With io_uring failing with `errno`, `--io uring` exits non-zero with the cause and the fix.
fn uring_refuses(errno: i32, message: &str) {
    let Some(bwrap) = bwrap() else { return };
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let child = serve_blocked(
        &bwrap,
        dir.path(),
        errno,
        &["--io", "uring", "--listen", &listen],
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit status {}: {stderr}",
        out.status
    );
    assert!(stderr.contains(message), "stderr: {stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "it never said it was serving"
    );
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_gives_eperm() {
    auto_serves_on_epoll(libc::EPERM, "io_uring blocked");
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_gives_enosys() {
    auto_serves_on_epoll(libc::ENOSYS, "io_uring not implemented");
}

#[test]
fn uring_exits_with_the_cause_when_io_uring_gives_eperm() {
    uring_refuses(libc::EPERM, "seccomp profile that allows io_uring_setup");
}

#[test]
fn uring_exits_with_the_cause_when_io_uring_gives_enosys() {
    uring_refuses(libc::ENOSYS, "a seccomp filter refuses it with ENOSYS");
}

/// The filter really is what blocks it: without it, `auto` picks io_uring here.
#[test]
fn auto_picks_io_uring_without_the_filter() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--workers",
            "1",
            "--no-pin",
            "--io",
            "auto",
            "--listen",
            &listen,
        ])
        .env_remove(fcgi_uring::IO_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let _server = KillOnDrop(child);
    let startup = line_with(&stdout, "fcgi-uring serving", &mut Vec::new());
    assert!(startup.contains("; io_uring: kernel"), "{startup}");
}

/// The suite's servers run on the backend `FCGI_URING_IO` names (io_uring when unset, on a host
/// that allows it): the epoll pass of .ci/run really is on epoll.
#[test]
fn the_suite_runs_on_the_backend_fcgi_uring_io_names() {
    let expected = match std::env::var(fcgi_uring::IO_ENV).as_deref() {
        Ok("epoll") => fcgi_uring::Backend::Epoll,
        _ => fcgi_uring::Backend::IoUring,
    };
    let server = common::demo_tcp();
    assert_eq!(server.backend(), Some(expected));
    assert_eq!(server.stats().backend(), Some(expected));
    assert_eq!(
        server.features().is_some(),
        expected == fcgi_uring::Backend::IoUring
    );
    sequential_1000(server.local_addr());
}

/// Too little locked memory for the send buffers the rings are asked to register: `auto` serves
/// on epoll and names the limit and the fix. `limit` bytes of RLIMIT_MEMLOCK, CAP_IPC_LOCK
/// dropped, `workers` workers with `buffers` registered send buffers of 1 MiB each.
fn auto_serves_on_epoll_with_memlock(limit: u64, workers: &str, buffers: &str) {
    use std::os::unix::process::CommandExt;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--workers",
        workers,
        "--no-pin",
        "--io",
        "auto",
        "--listen",
        &listen,
    ])
    .args([
        "--registered-send-buffers",
        buffers,
        "--send-buffer-size",
        "1048576",
    ])
    .env_remove(fcgi_uring::IO_ENV)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY (test): only async-signal-safe calls (prctl, setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Dropped from the bounding set, CAP_IPC_LOCK is not granted again at exec.
            const CAP_IPC_LOCK: libc::c_ulong = 14;
            libc::prctl(libc::PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0);
            let rlim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    let _server = KillOnDrop(child);
    let mut seen = Vec::new();
    let startup = line_with(&stdout, "fcgi-uring serving", &mut seen);
    assert!(startup.ends_with("; epoll"), "startup line: {startup}");
    let warning = line_with(&stderr, "serving with epoll", &mut seen);
    assert!(
        warning.contains("RLIMIT_MEMLOCK") && warning.contains("ulimit -l"),
        "{warning}"
    );
    let addr: Addr = listen.parse().unwrap();
    for _ in 0..100 {
        assert_eq!(common::get(&addr, "/hello").body, b"Hello, World!");
    }
}

/// 64 MiB of send buffers under a 1 MiB limit: the probe's own ring fails.
#[test]
fn auto_falls_back_to_epoll_when_one_rings_locked_memory_is_short() {
    auto_serves_on_epoll_with_memlock(1 << 20, "1", "64");
}

/// 3 MiB per worker under a 4 MiB limit: one ring may fit (then the probe passes, the second
/// worker's ring does not, and the workers started on io_uring are stopped and every worker
/// starts again on epoll); the limit counts every process of the user, so on a busy machine
/// the probe may fail first. Either way the server serves on epoll.
#[test]
fn auto_falls_back_to_epoll_when_the_workers_locked_memory_is_short() {
    auto_serves_on_epoll_with_memlock(4 << 20, "2", "3");
}
