//! The access log: exactly one parseable line per request under load (combined and JSON), and
//! a rename plus SIGUSR1 in the middle of the load loses no line and duplicates none.

mod common;

use common::*;
use fcgi_client::RequestSpec;
use fcgi_uring::{Addr, Config, Server, service_fn};
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `count` requests `/hello?n=<first + i>` on one KEEP_CONN connection.
fn load(addr: &Addr, first: usize, count: usize) {
    let mut c = connect(addr);
    for i in first..first + count {
        let mut spec = RequestSpec::get(&format!("/hello?n={i}"));
        spec.keep_conn = true;
        assert_eq!(c.request(&spec).unwrap().status, 200);
    }
}

/// `threads` connections sending `per_thread` requests each, numbered from `first`.
fn load_parallel(addr: &Addr, first: usize, threads: usize, per_thread: usize) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || load(&addr, first + t * per_thread, per_thread))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// The fields of a combined line: request line, status, bytes, request time, worker, conn, id.
#[derive(Debug)]
struct Combined {
    request: String,
    status: u16,
    bytes: u64,
    micros: u64,
    worker: usize,
}

fn parse_combined(line: &str) -> Combined {
    let parts: Vec<&str> = line.split('"').collect();
    assert_eq!(parts.len(), 7, "{line}");
    let head: Vec<&str> = parts[0].split_whitespace().collect();
    assert_eq!(head.len(), 5, "{line}");
    assert_eq!(&head[1..3], ["-", "-"], "{line}");
    assert!(head[3].starts_with('[') && head[4].ends_with(']'), "{line}");
    let status_bytes: Vec<&str> = parts[2].split_whitespace().collect();
    let tail: Vec<&str> = parts[6].split_whitespace().collect();
    assert_eq!(tail.len(), 4, "{line}");
    let field = |s: &str, name: &str| -> u64 {
        s.strip_prefix(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    field(tail[2], "conn=");
    field(tail[3], "id=");
    Combined {
        request: parts[1].to_owned(),
        status: status_bytes[0].parse().unwrap(),
        bytes: status_bytes[1].parse().unwrap(),
        micros: tail[0].parse().unwrap(),
        worker: field(tail[1], "worker=") as usize,
    }
}

/// A FIFO made in `dir` for the access log, and a thread opening it for reading (so that the
/// server's open for writing does not wait), which returns the reading end.
fn fifo_being_opened(dir: &Path) -> (std::path::PathBuf, std::thread::JoinHandle<std::fs::File>) {
    let fifo = dir.join("access.pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let path = fifo.clone();
    (
        fifo,
        std::thread::spawn(move || std::fs::File::open(path).unwrap()),
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn server_logging_to(path: &Path, format: &str) -> fcgi_uring::ServerHandle {
    let mut b = Config::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .workers(2)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(2))
        .access_log_path(Some(path.display().to_string()));
    b.set(
        "access_log.format",
        fcgi_uring::config::Value::Text(format.to_owned()),
    )
    .unwrap();
    Server::new(b.build().unwrap())
        .start(|| service_fn(fcgi_uring_cli::demo::app))
        .unwrap()
}

#[test]
fn one_parseable_combined_line_per_request_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let server = server_logging_to(&path, "combined");
    let (threads, per) = (8, 500);
    load_parallel(&server.local_addr().clone(), 0, threads, per);
    server.shutdown();
    let lines = lines(&path);
    assert_eq!(lines.len(), threads * per);
    let mut seen = HashSet::new();
    let mut workers = HashSet::new();
    for line in &lines {
        let c = parse_combined(line);
        assert!(c.request.starts_with("GET /hello?n=") && c.request.ends_with(" HTTP/1.1"));
        assert_eq!((c.status, c.bytes), (200, 13), "{line}");
        assert!(c.micros < 60_000_000, "{line}");
        assert!(seen.insert(c.request), "{line} twice");
        workers.insert(c.worker);
    }
    assert!(workers.iter().all(|w| *w < 2));
}

#[test]
fn json_lines_parse_and_carry_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.json");
    let server = server_logging_to(&path, "json");
    load(&server.local_addr().clone(), 0, 100);
    assert_eq!(get(server.local_addr(), "/missing").status, 404);
    server.shutdown();
    let lines = lines(&path);
    assert_eq!(lines.len(), 101);
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // Each worker's lines are in order; the workers' batches interleave in any order.
    let by_uri = |uri: &str| {
        let found: Vec<_> = v.iter().filter(|l| l["uri"] == uri).collect();
        assert_eq!(found.len(), 1, "one line for {uri}");
        found[0]
    };
    let first = by_uri("/hello?n=0");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], 13);
    assert!(first["request_time_us"].is_u64() && first["time"].is_string());
    let time = first["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
        "ISO 8601 with milliseconds: {time}"
    );
    assert_eq!(by_uri("/missing")["status"], 404);
}

/// The remote address (the last REMOTE_ADDR), the referer and the user agent as sent, with
/// quotes, backslashes, control bytes and bytes past ASCII escaped so that no field breaks
/// its quotes or its line; absent ones are `-` (combined) or empty (JSON).
#[test]
fn remote_referer_and_agent_are_logged_as_sent_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["combined", "json"] {
        let path = dir.path().join(format);
        let server = server_logging_to(&path, format);
        let mut hostile = RequestSpec::get("/hello?who=1")
            .header("Referer", "https://example.com/a\"b")
            .header("User-Agent", "agent\\x\u{1}é");
        hostile
            .extra_params
            .push((b"REMOTE_ADDR".to_vec(), b"2001:db8::7".to_vec()));
        let mut c = fcgi_client::Client::connect(server.local_addr()).unwrap();
        assert_eq!(c.request(&hostile).unwrap().status, 200);
        let mut c = fcgi_client::Client::connect(server.local_addr()).unwrap();
        assert_eq!(
            c.request(&RequestSpec::get("/hello?who=2")).unwrap().status,
            200
        );
        server.shutdown();
        let lines = lines(&path);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let line = |who: &str| {
            lines
                .iter()
                .find(|l| l.contains(&format!("who={who}")))
                .unwrap_or_else(|| panic!("no line for {who}: {lines:?}"))
                .clone()
        };
        if format == "combined" {
            let hostile = line("1");
            assert!(
                hostile.starts_with("2001:db8::7 - - ["),
                "the last REMOTE_ADDR: {hostile}"
            );
            assert!(
                hostile.contains(r#" "https://example.com/a\"b" "agent\\x\x01\xc3\xa9" "#),
                "{hostile}"
            );
            let plain = line("2");
            assert!(plain.contains(r#" 200 13 "-" "-" "#), "{plain}");
            assert!(
                parse_combined(&plain)
                    .request
                    .starts_with("GET /hello?who=2 ")
            );
        } else {
            let hostile: serde_json::Value = serde_json::from_str(&line("1")).unwrap();
            assert_eq!(hostile["remote"], "2001:db8::7");
            assert_eq!(hostile["referer"], "https://example.com/a\"b");
            assert_eq!(hostile["user_agent"], "agent\\x\u{1}é");
            let plain: serde_json::Value = serde_json::from_str(&line("2")).unwrap();
            assert_eq!(
                (&plain["referer"], &plain["user_agent"]),
                (&"".into(), &"".into())
            );
        }
    }
}

/// The binary: lines written while the file is renamed and SIGUSR1 asks for a reopen are all
/// in one of the two files, once.
#[test]
fn rename_and_sigusr1_mid_load_lose_and_duplicate_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let port = common::proxy::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_fcgi-uring"))
            .args(["serve", "--listen", &listen, "--workers", "2", "--no-pin"])
            .args(["--admin-listen", "none"])
            .args(["--access-log", &path.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start fcgi-uring serve"),
    );
    let pid = child.0.id().to_string();
    let addr: Addr = listen.parse().unwrap();
    wait_for("the server listening", HANG_GUARD, || {
        std::net::TcpStream::connect(&listen).is_ok()
    });
    let (threads, per) = (4, 1000);
    let total = threads * per;
    let loader = {
        let addr = addr.clone();
        std::thread::spawn(move || load_parallel(&addr, 0, threads, per))
    };
    // Mid-load: some lines written, not all.
    wait_for("some lines logged", HANG_GUARD, || {
        lines(&path).len() >= 200
    });
    std::fs::rename(&path, &rotated).unwrap();
    let usr1 = Command::new("kill").args(["-USR1", &pid]).status().unwrap();
    assert!(usr1.success());
    wait_for("the new file", HANG_GUARD, || path.exists());
    loader.join().unwrap();
    // Then a few more, all in the new file.
    load(&addr, total, 10);
    let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    assert!(child.0.wait().unwrap().success());
    let old = lines(&rotated);
    let new = lines(&path);
    assert!(
        !old.is_empty() && !new.is_empty(),
        "{} / {}",
        old.len(),
        new.len()
    );
    assert!(old.len() < total, "the rename came mid-load");
    let mut seen = HashSet::new();
    for line in old.iter().chain(&new) {
        let c = parse_combined(line);
        assert!(seen.insert(c.request.clone()), "{} twice", c.request);
    }
    assert_eq!(seen.len(), total + 10, "every request logged once");
    // The last ten came after the reopen: all in the new file.
    let in_new: HashSet<String> = new.iter().map(|l| parse_combined(l).request).collect();
    for k in total..total + 10 {
        assert!(
            in_new.contains(&format!("GET /hello?n={k} HTTP/1.1")),
            "n={k}"
        );
    }
}

/// A writer that falls behind (the log is a pipe nobody reads yet): workers go on serving,
/// lines past each worker's bound are dropped and counted, and the lines written plus the
/// lines dropped are exactly the requests.
#[test]
fn a_stalled_writer_never_blocks_a_worker_and_drops_are_counted() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let (fifo, reader) = fifo_being_opened(dir.path());
    let server = server_logging_to(&fifo, "combined");
    let mut reader = reader.join().unwrap();
    // Long URIs fill the pipe and the queue quickly.
    let long = "x".repeat(2000);
    let addr = server.local_addr().clone();
    let (threads, per) = (4, 1500);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (addr, long) = (addr.clone(), long.clone());
            std::thread::spawn(move || {
                let mut c = connect(&addr);
                for i in 0..per {
                    let mut spec = RequestSpec::get(&format!("/hello?n={t}-{i}&{long}"));
                    spec.keep_conn = true;
                    assert_eq!(c.request(&spec).unwrap().status, 200);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let dropped = server.stats().get(fcgi_uring::Counter::AccessLogDropped);
    assert!(dropped > 0, "nothing dropped: the writer never fell behind");
    // Now read everything, while the server stops and hands over its last lines.
    let drain = std::thread::spawn(move || {
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        all
    });
    server.shutdown();
    let all = drain.join().unwrap();
    let written = all.iter().filter(|b| **b == b'\n').count() as u64;
    assert_eq!(
        written + dropped,
        (threads * per) as u64,
        "{written} + {dropped}"
    );
}

/// An access log that cannot be opened fails the start with an error that names it (not the
/// listener), and nothing is left listening.
#[test]
fn an_access_log_that_cannot_be_opened_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("access.log");
    // A unix socket in this test's own directory: no other test can take it between the
    // failed start and the check below that nothing listens there (a loopback port can be).
    let socket = dir.path().join("fcgi.sock");
    let config = Config::builder()
        .listen(format!("unix:{}", socket.display()).parse().unwrap())
        .workers(1)
        .pin_workers(false)
        .access_log_path(Some(path.display().to_string()))
        .build()
        .unwrap();
    let err = match Server::new(config).start(|| service_fn(fcgi_uring_cli::demo::app)) {
        Ok(_) => panic!("the server started with an access log it cannot open"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, fcgi_uring::StartError::AccessLog { path: p, error }
            if *p == path.display().to_string() && error.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with("cannot open the access log") && message.contains("no-such-dir"),
        "{message}"
    );
    assert!(
        !holds_socket_at(&socket),
        "nothing listens after a failed start"
    );
}

/// Whether this process holds an open socket bound to `path` (its inode in /proc/net/unix
/// among /proc/self/fd's links). Not a connect: a child another test of this process forks
/// meanwhile holds copies of its fds until it execs, and a connect would find those.
fn holds_socket_at(path: &std::path::Path) -> bool {
    let path = path.to_str().expect("a UTF-8 path");
    let table = std::fs::read_to_string("/proc/net/unix").expect("read /proc/net/unix");
    let links: Vec<String> = table
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(7) == Some(path))
        .filter_map(|l| Some(format!("socket:[{}]", l.split_whitespace().nth(6)?)))
        .collect();
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|target| links.iter().any(|l| target.to_str() == Some(l.as_str())))
}

/// Lines the writer fails to write (its reader gone: EPIPE) are counted, where they were only
/// reported once in the log and lost uncounted.
#[test]
fn lines_lost_to_a_failed_write_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (fifo, reader) = fifo_being_opened(dir.path());
    let config = Config::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .workers(1)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(2))
        .access_log_path(Some(fifo.display().to_string()))
        .admin_listen(Some("127.0.0.1:0".parse().unwrap()))
        .build()
        .unwrap();
    let server = Server::new(config)
        .start(|| service_fn(fcgi_uring_cli::demo::app))
        .unwrap();
    // The reader goes away before any line: every write fails.
    drop(reader.join().unwrap());
    let Some(Addr::Tcp(admin)) = server.admin_addr().cloned() else {
        panic!("no admin listener");
    };
    load(server.local_addr(), 0, 5);
    wait_for("5 lost lines counted", HANG_GUARD, || {
        metrics::scrape(admin).get("fcgi_uring_access_log_lost_lines_total") == 5.0
    });
    server.shutdown();
}
