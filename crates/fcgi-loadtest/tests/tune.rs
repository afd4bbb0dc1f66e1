//! A tiny real sweep: `fcgi-loadtest tune` against the real `fcgi-uring` binary, one workload,
//! one knob with two values, runs of a fraction of a second (about 10 s in all, killed at 60 s).
//! It checks the outputs and their agreement, not the speed: the table has a row per setting,
//! `results.json` records every trial, no server is left running, and
//! `fcgi-uring serve --config DIR/fcgi-uring.toml --print-config` accepts the recommendation.
//!
//! The server is `$FCGI_URING`, else `target/{debug,release}/fcgi-uring` (built by
//! `cargo test --workspace`), else it is built with `cargo build --bin fcgi-uring`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FCGI_URING") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let found = ["debug", "release"]
        .iter()
        .map(|p| root.join("target").join(p).join("fcgi-uring"))
        .find(|p| p.exists());
    if let Some(p) = found {
        return p;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--bin", "fcgi-uring", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --bin fcgi-uring failed");
    root.join("target/debug/fcgi-uring")
}

/// Runs `cmd` to completion, killed past [`LIMIT`]; returns (success, stdout, stderr).
fn run_bounded(mut cmd: Command) -> (bool, String, String) {
    let out_dir = tempfile_dir("tune-test-io");
    let (o, e) = (out_dir.join("stdout"), out_dir.join("stderr"));
    cmd.stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().expect("start fcgi-loadtest tune");
    let (status, killed) = fcgi_loadtest::child::wait_or_kill(&mut child, LIMIT).unwrap();
    assert!(
        !killed,
        "tune ran past {LIMIT:?}; stderr: {}",
        std::fs::read_to_string(&e).unwrap_or_default()
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let result = (status.success(), read(&o), read(&e));
    let _ = std::fs::remove_dir_all(&out_dir);
    result
}

/// A fresh directory, unique to this process and call.
fn tempfile_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `fcgi-loadtest tune` of `server` over keepconn-tcp, varying only `knobs`, runs of a
/// fraction of a second, outputs in `out`.
fn tiny_sweep(server: &Path, knobs: &str, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fcgi-loadtest"));
    cmd.arg("tune")
        .arg("--server")
        .arg(server)
        .args(["--quick", "--workloads", "keepconn-tcp", "--knobs", knobs])
        .args(["--duration", "0.3", "--warmup", "0.1", "--rounds", "1"])
        .arg("--out")
        .arg(out);
    cmd
}

/// What `server serve --config TOML --print-config` prints; fails the test if it refuses it.
fn effective_config(server: &Path, toml: &Path) -> String {
    let printed = Command::new(server)
        .args(["serve", "--config"])
        .arg(toml)
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    String::from_utf8(printed.stdout).unwrap()
}

#[test]
fn a_tiny_sweep_writes_a_recommendation_the_server_accepts() {
    let server = server_binary();
    let out = tempfile_dir("tune-test-out");
    let (ok, stdout, stderr) = run_bounded(tiny_sweep(&server, "completions_per_turn", &out));
    assert!(ok, "tune failed:\n{stderr}\n{stdout}");

    for f in [
        "results.json",
        "table.txt",
        "report.html",
        "fcgi-uring.toml",
    ] {
        assert!(out.join(f).is_file(), "{f} missing; stderr:\n{stderr}");
    }
    // The table (printed and written) has the default and both values of the knob.
    let table = std::fs::read_to_string(out.join("table.txt")).unwrap();
    assert!(stdout.starts_with(&table), "the printed table is table.txt");
    for setting in [
        "default",
        "completions_per_turn=32",
        "completions_per_turn=4096",
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with("keepconn-tcp") && l.contains(&format!(" {setting} ")));
        let row = row.unwrap_or_else(|| panic!("no row for {setting}:\n{table}"));
        assert!(row.contains(" x"), "no ratio to the default: {row}");
    }
    assert!(table.contains("ring.completions_per_turn (default 1024) -> "));
    // Progress lines: step k/n for every trial.
    assert!(stderr.contains("[  1/"), "{stderr}");

    // results.json: every trial ran (D, 32, 4096, D, and D B D if a value won), no errors.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let trials = json["trials"].as_array().unwrap();
    assert!(trials.len() == 4 || trials.len() == 7, "{}", trials.len());
    for t in trials {
        assert!(t["error"].is_null(), "trial failed: {t}");
        assert_eq!(t["open"]["rate"], t["rate"], "open loop at the fixed rate");
        let pid = t["closed"]["server_pid"].as_u64().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            !stat.contains("fcgi-uring"),
            "server {pid} still running: {stat}"
        );
    }
    let rate = trials[0]["rate"].as_f64().unwrap();
    assert!(trials.iter().all(|t| t["rate"].as_f64() == Some(rate)));
    // The rate is 70 % of the median of three calibration peaks of the default.
    let workload = &json["workloads"][0];
    let mut peaks: Vec<f64> = workload["calibration"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert_eq!(peaks.len(), 3, "{workload}");
    peaks.sort_by(f64::total_cmp);
    assert!(peaks[0] > 0.0, "{workload}");
    assert!(
        (rate - 0.7 * peaks[1]).abs() < 1e-6 * rate,
        "rate {rate} is not 70 % of the median of {peaks:?}"
    );
    assert!(stderr.contains("keepconn-tcp open-loop rate"), "{stderr}");

    // The recommendation is accepted as it is, and says what it chose.
    let toml = out.join("fcgi-uring.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("completions_per_turn = "), "{text}");
    let chosen = json["recommendation"]["overrides"][0][1].as_i64().unwrap();
    let effective = effective_config(&server, &toml);
    assert!(
        effective.contains(&format!("completions_per_turn = {chosen}")),
        "{effective}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// The IO backend knob: a trial on epoll is measured against the default (io_uring here) and a
/// recommendation naming it is one the server accepts.
#[test]
fn the_io_backend_is_a_knob() {
    let server = server_binary();
    let out = tempfile_dir("tune-test-io-knob");
    let (ok, stdout, stderr) = run_bounded(tiny_sweep(&server, "io", &out));
    assert!(ok, "tune failed:\n{stderr}\n{stdout}");
    let table = std::fs::read_to_string(out.join("table.txt")).unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with("keepconn-tcp") && l.contains(" io=epoll "));
    let row = row.unwrap_or_else(|| panic!("no io=epoll row:\n{table}"));
    assert!(row.contains(" x"), "no ratio to the default: {row}");
    assert!(table.contains("server.io (default auto) -> "), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for t in json["trials"].as_array().unwrap() {
        assert!(t["error"].is_null(), "trial failed: {t}");
    }
    let effective = effective_config(&server, &out.join("fcgi-uring.toml"));
    let chosen = json["recommendation"]["overrides"][0][1].as_str();
    let expected = format!("io = \"{}\"", chosen.unwrap_or("auto"));
    assert!(
        effective.contains(&expected),
        "{expected} not in:\n{effective}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_missing_server_binary_is_a_clear_error() {
    let out = tempfile_dir("tune-test-missing");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fcgi-loadtest"));
    cmd.args([
        "tune",
        "--quick",
        "--server",
        "/nonexistent/fcgi-uring",
        "--out",
    ])
    .arg(&out);
    let (ok, _, stderr) = run_bounded(cmd);
    let _ = std::fs::remove_dir_all(&out);
    assert!(!ok);
    assert!(
        stderr.contains("/nonexistent/fcgi-uring not found") && stderr.contains("cargo build"),
        "{stderr}"
    );
}

#[test]
fn a_server_that_does_not_start_is_reported_with_its_stderr() {
    use std::os::unix::fs::PermissionsExt as _;
    let real = server_binary();
    let dir = tempfile_dir("tune-test-broken");
    // The real server, except that it fails to start with completions_per_turn = 32 (probes
    // with --print-config still pass, as a setting the kernel refuses would).
    let script = format!(
        "#!/bin/sh\n\
         if [ \"$1\" = serve ] && [ \"$4\" != --print-config ] && grep -q 'completions_per_turn = 32$' \"$3\"; then\n\
         echo 'fcgi-uring: io_uring_setup: Cannot allocate memory (test)' >&2; exit 1\n\
         fi\n\
         exec '{}' \"$@\"\n",
        real.display()
    );
    let fake = dir.join("fcgi-uring");
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cmd = tiny_sweep(&fake, "completions_per_turn", &dir.join("out"));
    let (ok, stdout, stderr) = run_bounded(cmd);
    assert!(ok, "the sweep goes on past a failed trial:\n{stderr}");
    assert!(
        stderr.contains("completions_per_turn=32: FAILED: server did not start")
            && stderr.contains("Cannot allocate memory (test)"),
        "{stderr}"
    );
    let row = stdout
        .lines()
        .find(|l| l.contains(" completions_per_turn=32 "))
        .unwrap();
    assert!(row.contains("failed"), "{row}");
    assert!(
        stdout.contains("notes:") && stdout.contains("Cannot allocate memory (test)"),
        "{stdout}"
    );
    assert!(!stdout.contains("-> 32 CHANGED"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
