//! Shared helpers for integration tests: start servers in-process on ephemeral addresses.
#![allow(dead_code)]

use fcgi_client::{Client, Record, RequestSpec, Response};
use fcgi_proto::record::{Header, RecordType};
use fcgi_uring::{Addr, Config, IoMode, RequestBody, RingConfig, Server, ServerHandle, service_fn};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a test waits for any single answer before failing (a hang guard, not a speed
/// assertion).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One `read`, again when a signal interrupted it: a read of a socket with a timeout fails with
/// EINTR on any signal handler (a child process exiting), SA_RESTART or not.
pub fn read_some(from: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match from.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// How long [`wait_for`] waits for a fact before failing: generous, it only bounds a hang.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// Waits until `cond` holds, polling it with a short backoff (1 ms doubling up to 50 ms), and
/// panics naming `what` if it still does not hold after `guard`. This is how a test waits for
/// an observable fact (a counter, a byte, a socket or process state, a log line) instead of
/// sleeping a fixed time and hoping.
pub fn wait_for(what: &str, guard: Duration, cond: impl FnMut() -> bool) {
    assert!(
        holds_within(guard, cond),
        "waited {guard:?} for {what}, in vain"
    );
}

/// Polls `cond` as [`wait_for`] does; false if it still does not hold after `guard` (for a
/// caller that adds its own context to the failure).
pub fn holds_within(guard: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + guard;
    let mut pause = Duration::from_millis(1);
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    true
}

/// How many established TCP connections to local `port` have received bytes and have none left
/// unread: requests the server there has read (from `ss -tin`, which shows bytes_received).
pub fn connections_read(port: u16) -> usize {
    let out = std::process::Command::new("ss")
        .args([
            "-Htin",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let mut count = 0;
    // Each socket: a line "Recv-Q Send-Q local peer", then an indented line of TCP info.
    while let (Some(socket), Some(info)) = (lines.next(), lines.next()) {
        let unread = socket.split_whitespace().next() != Some("0");
        let received = info
            .split_whitespace()
            .find_map(|w| w.strip_prefix("bytes_received:"))
            .is_some_and(|n| n != "0");
        if received && !unread {
            count += 1;
        }
    }
    count
}

/// Whether process `pid` catches signal `signo` (it installed a handler: the SigCgt mask of
/// /proc/PID/status).
pub fn catches_signal(pid: u32, signo: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signo - 1)) != 0)
}

/// The state letter of a thread of this process (R running, S sleeping, T stopped...), from
/// /proc/self/task/TID/stat.
pub fn thread_state(tid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // "tid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The kernel's id of the calling thread.
pub fn current_tid() -> u64 {
    let link = std::fs::read_link("/proc/thread-self").expect("read /proc/thread-self");
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("a thread id")
}

/// The kernel id of this process's worker thread `fcgi-worker-0` (a server started in-process).
pub fn worker_tid() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .expect("list threads")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .find(|tid| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .is_ok_and(|c| c.trim() == "fcgi-worker-0")
        })
        .expect("a thread named fcgi-worker-0")
}

/// The system call thread `tid` of this process is blocked in (its number), from
/// /proc/self/task/TID/syscall; `None` while it runs.
pub fn blocked_in(tid: u64) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A child process (a server under test), killed when dropped, so that a failing assertion does
/// not leave it running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `fcgi-uring serve ARGS` with its standard error piped (standard input and output closed),
/// killed if the test ends first.
pub fn serve_with_stderr(args: &[&str]) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
            .arg("serve")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start fcgi-uring serve"),
    )
}

/// Sends SIGTERM to a server of [`serve_with_stderr`] and returns what it wrote to standard
/// error until it exited.
pub fn stop_and_read_stderr(server: &mut KillOnDrop) -> String {
    use std::io::Read;
    restarts::signal(server.0.id(), "TERM");
    let mut stderr = String::new();
    if let Some(mut pipe) = server.0.stderr.take() {
        pipe.read_to_string(&mut stderr)
            .expect("read the server's stderr");
    }
    stderr
}

/// The demo app on 127.0.0.1 with an ephemeral port and two workers.
pub fn demo_tcp() -> ServerHandle {
    start_demo("127.0.0.1:0".parse().unwrap())
}

/// The demo app on a UNIX socket in a fresh temporary directory (kept alive by the returned
/// guard).
pub fn demo_unix() -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let addr = Addr::Unix(dir.path().join("app.sock"));
    (start_demo(addr), dir)
}

pub fn start_demo(listen: Addr) -> ServerHandle {
    demo_with(
        Config::builder()
            .listen(listen)
            .workers(2)
            .pin_workers(false)
            .shutdown_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
    )
}

/// The demo app served with `config`.
pub fn demo_with(config: Config) -> ServerHandle {
    Server::new(config)
        .start(|| service_fn(fcgi_uring_cli::demo::app))
        .expect("server starts")
}

/// The demo app on one unpinned worker ([`test_config`]) with `ring.yield_after_wake` set.
pub fn demo_yielding(yield_after_wake: bool) -> ServerHandle {
    demo_with(
        test_config()
            .into_builder()
            .yield_after_wake(yield_after_wake)
            .build()
            .unwrap(),
    )
}

/// A small config for tests that bring their own handler.
pub fn test_config() -> Config {
    Config::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .workers(1)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// `len` bytes that differ for every `seed` and position (a misplaced or reordered piece of a
/// body shows).
pub fn patterned(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| {
            (i.wrapping_add(seed.wrapping_mul(7919))
                .wrapping_mul(2_654_435_761)
                >> 13) as u8
        })
        .collect()
}

/// POST /echo of `data` to the demo app on `c`, kept open, and the echo checked whole.
pub fn echo_kept(c: &mut Client, data: Vec<u8>) {
    let mut spec = RequestSpec::post("/echo", data.clone());
    spec.keep_conn = true;
    let r = c.request(&spec).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == data, "echo of {} bytes differs", data.len());
}

pub fn connect(addr: &Addr) -> Client {
    let c = Client::connect(addr).expect("connect");
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c
}

pub fn get(addr: &Addr, uri: &str) -> Response {
    connect(addr)
        .request(&RequestSpec::get(uri))
        .expect("request")
}

/// 1,000 GET /hello one after another on one KEEP_CONN connection, each answered in full.
pub fn sequential_1000(addr: &Addr) {
    let mut c = connect(addr);
    for i in 0..1000 {
        let mut spec = RequestSpec::get("/hello");
        spec.keep_conn = true;
        let r = c
            .request(&spec)
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.body, b"Hello, World!", "request {i}");
    }
}

/// What came back for one request id on a raw connection.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    pub stdout: Vec<u8>,
    pub stdout_ended: bool,
    pub end_requests: usize,
    pub protocol_status: Option<u8>,
}

/// Reads records until every id in `ids` has its END_REQUEST; returns what each received and the
/// order in which the END_REQUESTs arrived.
pub fn collect_until_ended(c: &mut Client, ids: &[u16]) -> (HashMap<u16, Collected>, Vec<u16>) {
    let mut got: HashMap<u16, Collected> = HashMap::new();
    let mut order = Vec::new();
    while !ids
        .iter()
        .all(|id| got.get(id).is_some_and(|g| g.end_requests > 0))
    {
        let rec = c.read_record().expect("read").expect("connection open");
        record_into(&mut got, &mut order, rec);
    }
    (got, order)
}

pub fn record_into(got: &mut HashMap<u16, Collected>, order: &mut Vec<u16>, rec: Record) {
    let Header {
        record_type,
        request_id,
        ..
    } = rec.header;
    let entry = got.entry(request_id).or_default();
    match RecordType::from_u8(record_type) {
        Some(RecordType::Stdout) if rec.content.is_empty() => entry.stdout_ended = true,
        Some(RecordType::Stdout) => entry.stdout.extend_from_slice(&rec.content),
        Some(RecordType::EndRequest) => {
            entry.end_requests += 1;
            entry.protocol_status = rec.content.get(4).copied();
            order.push(request_id);
        }
        _ => {}
    }
}

/// Splits a CGI response (head, blank line, body).
pub fn split_cgi(stdout: &[u8]) -> (String, Vec<u8>) {
    let pos = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("CGI head ends with a blank line");
    (
        String::from_utf8_lossy(&stdout[..pos]).into_owned(),
        stdout[pos + 4..].to_vec(),
    )
}
pub mod app;
pub mod http_client;
pub mod lab;
pub mod matrix;
pub mod metrics;
pub mod proxy;
pub mod restarts;

/// The demo app on the io_uring backend (whatever `FCGI_URING_IO` says) with one worker and the
/// given ring settings and idle spin.
pub fn start_uring_demo(listen: Addr, ring: RingConfig, idle_spin_us: u32) -> ServerHandle {
    let config = Config::builder()
        .io(IoMode::Uring)
        .listen(listen)
        .workers(1)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(2))
        .ring(ring)
        .idle_spin_us(idle_spin_us)
        .build()
        .unwrap();
    Server::new(config)
        .start(|| service_fn(fcgi_uring_cli::demo::app))
        .unwrap_or_else(|e| panic!("server starts: {e}"))
}

/// A server running a handler that reads the body one frame at a time, 200 us apart (slower
/// than the peer sends), and answers it back whole.
pub fn slow_reader_server(config: Config) -> ServerHandle {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    Server::new(config)
        .start(|| {
            service_fn(|req: http::Request<RequestBody>| async move {
                let mut body = req.into_body();
                let mut all = Vec::new();
                while let Some(frame) = body.frame().await {
                    all.extend_from_slice(&frame.unwrap().into_data().unwrap());
                    // Kept: the slowness under test (a reader slower than the peer). What is
                    // asserted (every byte intact) holds whatever the pauses' real length.
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(all))))
            })
        })
        .unwrap()
}
