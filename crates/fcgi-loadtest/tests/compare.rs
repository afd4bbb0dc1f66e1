//! `compare` and `diff` end to end, against a test backend whose faults and cost are known:
//! this test binary re-executed as a FastCGI server (the fcgi-uring library) that answers 500
//! to every tenth request, or spins 20 us per request, behind a tiny wrapper script that takes
//! `fcgi-uring serve`'s arguments. Runs are short (0.3 s per cell and round); the assertions
//! are on error classes, on CPU accounting read from /proc, and on `diff`'s verdict on a
//! slowdown much larger than the noise (CPU per request, not wall-clock speed).
//!
//! nginx and HAProxy (`/usr/sbin/nginx`, `/usr/sbin/haproxy`) must be installed: `.ci/run`
//! installs them.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fcgi_loadtest::cells::{Results, Spread};
use fcgi_loadtest::compare::{CompareConfig, compare};
use http_body_util::Full;

const LISTEN_ENV: &str = "FCGI_LOADTEST_TEST_BACKEND";
const FAIL_EVERY_ENV: &str = "FCGI_LOADTEST_TEST_FAIL_EVERY";
const SPIN_US_ENV: &str = "FCGI_LOADTEST_TEST_SPIN_US";

/// The test backend when this binary runs as the child: `GET /hello` answers `Hello, World!`,
/// every FAIL_EVERY-th request answers 500, each request first spins SPIN_US microseconds.
#[test]
fn child_backend_entry() {
    let Ok(addr) = std::env::var(LISTEN_ENV) else {
        return;
    };
    let num = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (fail_every, spin_us) = (num(FAIL_EVERY_ENV), num(SPIN_US_ENV));
    let config = fcgi_uring::Config::builder()
        .listen(addr.parse().unwrap())
        .workers(1)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let _handle = fcgi_uring::Server::new(config)
        .start(move || {
            fcgi_uring::service_fn(
                move |_req: http::Request<fcgi_uring::RequestBody>| async move {
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_micros(spin_us) {
                        std::hint::spin_loop();
                    }
                    let n = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
                    let mut resp =
                        http::Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
                    if fail_every > 0 && n.is_multiple_of(fail_every) {
                        *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                },
            )
        })
        .unwrap();
    // Serves until the parent stops it.
    loop {
        std::thread::park();
    }
}

/// A stand-in for the `fcgi-uring` binary: takes `serve ... --listen ADDR ...` and runs this
/// test binary as the backend with `env`.
fn backend_script(dir: &Path, env: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let exe = std::env::current_exe().unwrap();
    let exports: String = env
        .iter()
        .map(|(k, v)| format!("export {k}={v}\n"))
        .collect();
    let script = format!(
        "#!/bin/sh\n{exports}while [ $# -gt 0 ]; do\n  \
         if [ \"$1\" = --listen ]; then export {LISTEN_ENV}=\"$2\"; fi\n  shift\ndone\n\
         exec '{}' --exact child_backend_entry --nocapture\n",
        exe.display()
    );
    let path = dir.join("backend.sh");
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fcgi-loadtest-compare-{name}-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A short comparison of `hello` through the FastCGI paths (direct, nginx, HAProxy) with the
/// test backend; returns the parsed results.json.
fn short_compare(dir: &Path, env: &[(&str, &str)], rounds: usize) -> Results {
    for proxy in ["/usr/sbin/nginx", "/usr/sbin/haproxy"] {
        assert!(
            Path::new(proxy).exists(),
            "{proxy} is needed (apt-get install -y nginx haproxy)"
        );
    }
    let mut cfg = CompareConfig::new(dir.to_owned(), backend_script(dir, env));
    cfg.duration = Duration::from_millis(300);
    cfg.warmup = Duration::from_millis(100);
    cfg.rounds = rounds;
    cfg.only = vec!["fastcgi".into()];
    cfg.scenarios = vec!["hello".into()];
    run_unstarved(&cfg)
}

/// Runs `cfg`, again (up to three times in all) when some round completed no request at all,
/// answered or failed: the machine gave the processes no CPU (another process with a real-time
/// priority on the same cores, say), which is not what the tests are about.
fn run_unstarved(cfg: &CompareConfig) -> Results {
    let starved = |r: &Results| {
        r.cells.iter().any(|c| {
            c.rounds.iter().any(|r| match &r.report {
                Some(rep) => rep.requests + rep.errors == 0,
                None => r
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("no successful request")),
            })
        })
    };
    let mut attempt = 1;
    loop {
        let table = compare(cfg).unwrap();
        eprintln!("{table}");
        let text = fs::read_to_string(cfg.out.join("results.json")).unwrap();
        let results = Results::from_json(&text).unwrap();
        if !starved(&results) || attempt == 3 {
            return results;
        }
        eprintln!("a round completed no request (the machine starved it): running again");
        attempt += 1;
    }
}

#[test]
fn injected_failures_are_drawn_as_failed_and_cpu_adds_up() {
    let dir = out_dir("faults");
    let results = short_compare(&dir, &[(FAIL_EVERY_ENV, "10")], 2);
    let cell = |path: &str| {
        results
            .cells
            .iter()
            .find(|c| c.path == path)
            .unwrap_or_else(|| panic!("no cell {path}"))
    };
    // Every tenth request failed: about 10% errors, far over the 0.1% threshold.
    let direct = cell("fastcgi").summary.clone().unwrap();
    let why = direct.failed.clone().expect("the direct cell is failed");
    assert!(
        why.contains("HTTP status") && why.contains("500 x"),
        "{why}"
    );
    assert!(
        (5.0..=15.0).contains(&direct.error_pct),
        "{}",
        direct.error_pct
    );
    let nginx = cell("nginx>fastcgi").summary.clone().unwrap();
    let why = nginx.failed.clone().expect("the nginx cell is failed");
    assert!(why.contains("proxy 5xx"), "{why}");
    // A failed round of a proxied path restarts its proxy: round 2 ran through a new one.
    let proxy_pid = |round: usize| {
        let r = &cell("nginx>fastcgi").rounds[round];
        r.report.as_ref().unwrap().tree_cpu[1].pid
    };
    assert_ne!(proxy_pid(0), proxy_pid(1));
    // Drawn as failed in both bar charts, and in the table.
    let page = fs::read_to_string(dir.join("report.html")).unwrap();
    for series in ["fastcgi", "nginx&gt;fastcgi"] {
        let bar = format!("<rect class=\"bar failed\" data-series=\"{series}\"");
        assert_eq!(page.matches(&bar).count(), 2, "{series}");
    }
    let table = fs::read_to_string(dir.join("table.txt")).unwrap();
    let line = table
        .lines()
        .find(|l| l.starts_with("hello      fastcgi "))
        .unwrap();
    assert!(line.contains("FAILED"), "{line}");

    // CPU: every round's trees were read; the per-request parts and their sum agree with the
    // seconds read from /proc (the summary's medians of per-round values).
    for c in &results.cells {
        for r in &c.rounds {
            let rep = r.report.as_ref().expect("every round ran");
            let backend = r.backend_cpu_s.unwrap();
            assert_eq!(rep.tree_cpu[0].cpu_s, backend);
            // The backend has no children: its tree is the server process, read a moment
            // apart at each edge (a clock tick, 10 ms, either way).
            let server = rep.server_cpu_s.unwrap();
            assert!((server - backend).abs() <= 0.03, "{server} vs {backend}");
            assert_eq!(r.proxy_cpu_s.is_some(), c.proxy.is_some(), "{}", c.path);
            // The server CPU, then the client CPU, busy with all processes.
            let cpus: Vec<usize> = rep.cpu_busy.iter().map(|b| b.cpu).collect();
            assert_eq!(cpus, vec![0, 1]);
            assert!(
                rep.cpu_busy
                    .iter()
                    .all(|b| (0.0..=100.0).contains(&b.busy_pct))
            );
        }
        let s = c.summary.clone().unwrap();
        let per_round_total: Vec<f64> = c
            .rounds
            .iter()
            .filter_map(|r| {
                let rep = r.report.as_ref()?;
                let n = rep.requests as f64;
                Some((rep.client_cpu_s + r.backend_cpu_s? + r.proxy_cpu_s.unwrap_or(0.0)) * 1e6 / n)
            })
            .collect();
        let want = Spread::of(&per_round_total).unwrap();
        let got = s.total_us.unwrap();
        assert!((got.median - want.median).abs() < 1e-6, "{}", c.path);
        if c.rounds.len() == 1 {
            let parts = s.proxy_us.map_or(0.0, |p| p.median)
                + s.backend_us.unwrap().median
                + s.client_us.unwrap().median;
            assert!((parts - got.median).abs() < 0.05, "{}", c.path);
        }
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn tree_cpu_matches_proc_for_a_master_and_its_workers() {
    use std::os::unix::process::CommandExt as _;
    // A master with two busy workers, in its own process group.
    let mut child = Command::new("sh")
        .args(["-c", "(while :; do :; done) & (while :; do :; done) & wait"])
        .process_group(0)
        .spawn()
        .unwrap();
    let root = child.id();
    let children = |pid: u32| -> Vec<u32> {
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    common::wait_for("two workers that used CPU", common::HANG_GUARD, || {
        let kids = children(root);
        kids.len() == 2
            && kids.iter().all(|&k| {
                fcgi_loadtest::sys::process_cpu_time(k).is_ok_and(|t| t.total().as_millis() >= 50)
            })
    });
    // Frozen, the tree's CPU time is a fixed number: ours must equal the sum of the stat
    // lines, found through the kernel's children lists (not the parent-pid scan we use).
    killpg(root, "STOP");
    common::wait_for("the tree stopped", common::HANG_GUARD, || {
        std::iter::once(root)
            .chain(children(root))
            .all(|p| common::process_state(p) == Some('T'))
    });
    let (mut user, mut system) = (Duration::ZERO, Duration::ZERO);
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        let kids = children(pids[i]);
        pids.extend(kids);
        i += 1;
    }
    for &p in &pids {
        let cpu = fcgi_loadtest::sys::process_cpu_time(p).unwrap();
        user += cpu.user;
        system += cpu.system;
    }
    let (got, tree) = fcgi_loadtest::sys::tree_cpu_time(root).unwrap();
    killpg(root, "KILL");
    let _ = child.wait();
    let mut sorted = tree.clone();
    sorted.sort();
    pids.sort();
    assert_eq!(sorted, pids);
    // Equal up to the conversion of clock ticks (a tick is 10 ms at 100 Hz).
    for (part, got, expected) in [("user", got.user, user), ("system", got.system, system)] {
        let diff = got.abs_diff(expected);
        assert!(
            diff < Duration::from_micros(10),
            "{part}: {got:?} vs {expected:?}"
        );
    }
    assert!(got.total() >= Duration::from_millis(100));
}

/// Sends `sig` (e.g. `STOP`) to every process of group `group` with kill(1).
fn killpg(group: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{group}"))
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} -- -{group}");
}

/// `fcgi-loadtest diff OLD NEW` with its exit status and stdout.
fn diff(old: &Path, new: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fcgi-loadtest"))
        .arg("diff")
        .arg(old)
        .arg(new)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout)
}

/// A results.json with one cell per (path, per-round rps and total CPU).
fn synthetic(dir: &Path, name: &str, cells: &[(&str, &[f64], &[f64])]) -> PathBuf {
    let cells: Vec<serde_json::Value> = cells
        .iter()
        .map(|(path, rps, cpu)| {
            let rounds: Vec<serde_json::Value> = rps
                .iter()
                .zip(cpu.iter())
                .map(|(rps, cpu_us)| {
                    let requests = *rps as u64;
                    serde_json::json!({
                        "report": {
                            "protocol": "fastcgi", "addr": "a", "path": "/hello", "conns": 16,
                            "depth": 4, "threads": 1, "keep_conn": true, "rate": null,
                            "window_s": 1.0, "requests": requests, "errors": 0,
                            "errors_by_kind": {"connect": 0, "io": 0, "protocol": 0, "status": 0, "body": 0},
                            "rps": rps, "mean_us": 100.0, "p50_us": 100, "p90_us": 150,
                            "p99_us": 200, "p999_us": 300, "max_us": 400,
                            "client_cpu_s": 0.0, "client_cpu_pct": 0.0,
                            "client_cpu_us_per_req": 0.0, "client_saturated": false,
                            "server_pid": 1, "server_cpu_s": null, "server_cpu_us_per_req": null,
                            "latency_curve": []
                        },
                        "error": null,
                        "proxy_cpu_s": null,
                        "backend_cpu_s": cpu_us * requests as f64 / 1e6,
                    })
                })
                .collect();
            serde_json::json!({
                "scenario": "hello", "path": path, "shape": "16x4", "proxy": null,
                "rate": null, "rounds": rounds
            })
        })
        .collect();
    let doc = serde_json::json!({
        "format": "fcgi-loadtest compare 2", "title": "t", "notes": [],
        "settings": {
            "rounds": 3, "duration_s": 1.0, "warmup_s": 0.0, "server_cpus": [0],
            "client_cpus": [1], "load": "closed loop",
            "limits": {"max_error_pct": 0.1, "server_cpus": 1}
        },
        "cells": cells
    });
    let path = dir.join(format!("{name}.json"));
    fs::write(&path, doc.to_string()).unwrap();
    path
}

#[test]
fn diff_passes_noise_and_fails_a_regression_beyond_it() {
    let dir = out_dir("diff-synthetic");
    // Two runs of one build: medians differ by up to 8%, but the rounds' ranges overlap.
    let a = synthetic(
        &dir,
        "a",
        &[
            ("fastcgi", &[50000.0, 52000.0, 47000.0], &[10.0, 10.5, 9.8]),
            ("h2c", &[30000.0, 31000.0, 29000.0], &[20.0, 21.0, 19.5]),
        ],
    );
    let b = synthetic(
        &dir,
        "b",
        &[
            ("fastcgi", &[48000.0, 46000.0, 49000.0], &[10.6, 10.2, 10.9]),
            ("h2c", &[31500.0, 30500.0, 29900.0], &[20.5, 19.0, 20.1]),
        ],
    );
    for metric in ["rps", "cpu", "p99"] {
        let (code, out) = diff(&a, &b, &["--metric", metric]);
        assert_eq!(code, 0, "{metric}: {out}");
        assert!(out.contains("no regression"), "{out}");
    }
    // A slower build: 30% more CPU per request and 25% fewer requests/s, ranges apart.
    let slow = synthetic(
        &dir,
        "slow",
        &[
            ("fastcgi", &[37000.0, 38000.0, 36500.0], &[13.2, 13.6, 13.0]),
            ("h2c", &[30000.0, 31000.0, 29000.0], &[20.0, 21.0, 19.5]),
        ],
    );
    let html = dir.join("d.html");
    let (code, out) = diff(
        &a,
        &slow,
        &["--metric", "cpu", "--html", html.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}");
    let line = out.lines().find(|l| l.contains(" fastcgi ")).unwrap();
    assert!(
        line.contains("REGRESSION") && line.contains("WORSE"),
        "{line}"
    );
    assert!(
        !out.lines()
            .find(|l| l.contains(" h2c "))
            .unwrap()
            .contains("REGRESSION")
    );
    let page = fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("fill=\"#d62728\""));
    assert_eq!(diff(&a, &slow, &["--metric", "rps"]).0, 1);
    // Under a threshold larger than the change, it passes.
    assert_eq!(
        diff(&a, &slow, &["--metric", "cpu", "--threshold", "50"]).0,
        0
    );
    // An unreadable file is exit status 2.
    assert_eq!(diff(&a, &dir.join("missing.json"), &[]).0, 2);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn diff_flags_a_backend_that_spins_20_us_per_request() {
    let base_dir = out_dir("diff-base");
    let slow_dir = out_dir("diff-slow");
    short_compare(&base_dir, &[], 2);
    short_compare(&slow_dir, &[(SPIN_US_ENV, "20")], 2);
    let (code, out) = diff(
        &base_dir.join("results.json"),
        &slow_dir.join("results.json"),
        &["--metric", "cpu", "--threshold", "10"],
    );
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("hello      fastcgi "))
        .unwrap();
    assert!(line.contains("REGRESSION"), "{line}");
    let _ = fs::remove_dir_all(&base_dir);
    let _ = fs::remove_dir_all(&slow_dir);
}

#[test]
fn rate_fraction_runs_each_cell_open_loop_at_a_share_of_its_peak() {
    let dir = out_dir("open-loop");
    let mut cfg = CompareConfig::new(dir.clone(), backend_script(&dir, &[]));
    cfg.duration = Duration::from_millis(300);
    cfg.warmup = Duration::from_millis(100);
    cfg.rounds = 1;
    // The test backend speaks FastCGI only.
    cfg.only = vec!["fastcgi".into()];
    cfg.scenarios = vec!["hello".into()];
    cfg.load = fcgi_loadtest::compare::Load::Fraction(0.5);
    let results = run_unstarved(&cfg);
    assert!(results.settings.load.contains("open loop at 50%"));
    for c in &results.cells {
        let Some(rep) = c.rounds.last().and_then(|r| r.report.as_ref()) else {
            panic!("{}: no report: {:?}", c.path, c.rounds);
        };
        let rate = c.rate.unwrap_or_else(|| panic!("{}: no rate", c.path));
        assert!(rate > 0.0);
        assert_eq!(rep.rate, Some(rate), "{}", c.path);
    }
    let _ = fs::remove_dir_all(&dir);
}

/// `--server-sched batch` starts the servers under SCHED_BATCH (policy 3 in
/// `/proc/PID/stat`), the default under SCHED_OTHER (0): a wrapper in front of the test
/// backend records the policy it was started with.
#[test]
fn server_sched_batch_starts_the_servers_under_sched_batch() {
    use fcgi_loadtest::compare::SchedPolicy;
    use std::os::unix::fs::PermissionsExt as _;
    for (policy, expected) in [(SchedPolicy::Batch, "3"), (SchedPolicy::Normal, "0")] {
        let dir = out_dir(&format!("sched-{expected}"));
        let backend = backend_script(&dir, &[]);
        let record = dir.join("policy");
        let wrapper = dir.join("record.sh");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nawk '{{print $41}}' /proc/$$/stat > '{}'\nexec '{}' \"$@\"\n",
                record.display(),
                backend.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        let mut cfg = CompareConfig::new(dir.clone(), wrapper);
        cfg.duration = Duration::from_millis(300);
        cfg.warmup = Duration::from_millis(100);
        cfg.rounds = 1;
        cfg.only = vec!["fastcgi".into()];
        cfg.scenarios = vec!["hello".into()];
        cfg.server_sched = policy;
        run_unstarved(&cfg);
        let seen = fs::read_to_string(&record).unwrap();
        assert_eq!(seen.trim(), expected, "{policy:?}");
        let _ = fs::remove_dir_all(&dir);
    }
}
