//! `log.format` (`--log-format`): the format of `fcgi-uring serve`'s own log on standard error.
//! With `json`, every line a server writes from its start to its exit is one JSON object; with
//! `text` (the default), every line is a tracing line, the shutdown message included; any
//! other value fails the start with the accepted values named.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_fcgi-uring");

/// A one-worker server on a free port logging in `format`, with an access log at `access_log`
/// and a slow log that catches `/sleep?ms=100`; its address.
fn server(format: &str, access_log: &Path) -> (KillOnDrop, fcgi_uring::Addr) {
    let listen = format!("127.0.0.1:{}", proxy::free_port());
    let server = serve_with_stderr(&[
        "--listen",
        &listen,
        "--workers",
        "1",
        "--no-pin",
        "--admin-listen",
        "none",
        "--access-log",
        access_log.to_str().expect("a UTF-8 path"),
        "--slow-log-threshold",
        "0.05",
        "--log-format",
        format,
    ]);
    let addr: fcgi_uring::Addr = listen.parse().expect("an address");
    wait_for("the server to answer", HANG_GUARD, || answers(&addr));
    (server, addr)
}

fn answers(addr: &fcgi_uring::Addr) -> bool {
    fcgi_client::Client::connect(addr)
        .and_then(|mut c| c.request(&fcgi_client::RequestSpec::get("/hello")))
        .is_ok_and(|r| r.status == 200)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Start, requests (one slow: a warning), SIGUSR1 (the access log reopened), SIGTERM: every
/// line on standard error is a JSON object with the level and the message in its fields.
#[test]
fn with_json_every_line_of_a_run_is_a_json_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let (mut server, addr) = server("json", &log);
    let r = connect(&addr)
        .request(&fcgi_client::RequestSpec::get("/sleep?ms=100"))
        .expect("the slow request");
    assert_eq!(r.status, 200);

    wait_for("a line in the access log", HANG_GUARD, || lines(&log) > 0);
    let moved = dir.path().join("access.log.1");
    std::fs::rename(&log, &moved).expect("rename the access log");
    restarts::signal(server.0.id(), "USR1");
    wait_for("a new access log at the path", HANG_GUARD, || {
        answers(&addr);
        lines(&log) > 0
    });

    let stderr = stop_and_read_stderr(&mut server);
    assert!(server.0.wait().expect("wait").success());
    let mut messages = Vec::new();
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nstderr:\n{stderr}"));
        let level = v["level"].as_str();
        assert!(
            matches!(level, Some("TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")),
            "{line}"
        );
        assert!(
            v["timestamp"].is_string() && v["target"].is_string(),
            "{line}"
        );
        let message = v["fields"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fields.message: {line}"));
        messages.push((level.unwrap_or_default().to_owned(), message.to_owned()));
    }
    let has = |level: &str, start: &str| {
        messages
            .iter()
            .any(|(l, m)| l == level && m.starts_with(start))
    };
    assert!(has("WARN", "slow request: GET /sleep?ms=100"), "{stderr}");
    assert!(has("INFO", "shutting down; accepted="), "{stderr}");
}

/// By default (text), the shutdown message is a tracing line like the others, not a line of
/// its own format.
#[test]
fn with_text_the_shutdown_message_is_a_tracing_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, _) = server("text", &dir.path().join("access.log"));
    let stderr = stop_and_read_stderr(&mut server);
    assert!(server.0.wait().expect("wait").success());
    let shutdown = stderr
        .lines()
        .find(|l| l.contains("shutting down; "))
        .unwrap_or_else(|| panic!("no shutdown line:\n{stderr}"));
    assert!(
        shutdown.contains(" INFO fcgi_uring: shutting down; accepted="),
        "{shutdown}"
    );
    // Every line starts with its time (RFC 3339, UTC), as tracing writes it.
    for line in stderr.lines() {
        let time = line.split_whitespace().next().unwrap_or_default();
        assert!(
            time.ends_with('Z') && time.contains('T'),
            "not a tracing line: {line}\nstderr:\n{stderr}"
        );
    }
}

/// A format that is neither `text` nor `json`, as a flag or in the file, fails the start
/// naming the accepted values.
#[test]
fn an_unknown_log_format_fails_the_start_naming_the_accepted_ones() {
    let said = refused_start(&["--log-format", "xml"]);
    assert!(
        said.contains("--log-format") && said.contains("xml") && said.contains("text, json"),
        "{said}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("fcgi-uring.toml");
    std::fs::write(&file, "[log]\nformat = \"xml\"\n").expect("write the file");
    let said = refused_start(&["--config", file.to_str().expect("a UTF-8 path")]);
    assert!(
        said.contains("log.format") && said.contains("text, json"),
        "{said}"
    );
}

/// `fcgi-uring serve --listen 127.0.0.1:0 ARGS`, which must fail before it serves: what it
/// said on standard error.
fn refused_start(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run fcgi-uring serve");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it served");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
