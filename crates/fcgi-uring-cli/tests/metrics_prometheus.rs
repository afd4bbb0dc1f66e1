//! The metrics as real tools read them: a Prometheus server (the `prometheus` package, started
//! here with its own configuration and data directory on loopback) scrapes `/metrics` every
//! second while load runs, and its HTTP API then reports the number of requests sent;
//! `promtool check metrics` passes on the Prometheus text format, and the OpenMetrics page
//! parses with the reference OpenMetrics parser (Python `prometheus_client`). Prometheus itself
//! asks for OpenMetrics first, so its scrapes parse that format too.

mod common;

use common::http_client::{Upload, request};
use common::metrics::{admin_addr, get, scrape};
use common::proxy::{Proxy, find_binary, free_port};
use common::*;
use fcgi_client::RequestSpec;
use fcgi_uring::{Config, Server, ServerHandle, service_fn};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

fn start() -> ServerHandle {
    let config = Config::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .workers(2)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(2))
        .admin_listen(Some("127.0.0.1:0".parse().unwrap()))
        .build()
        .unwrap();
    Server::new(config)
        .start(|| service_fn(fcgi_uring_cli::demo::app))
        .unwrap()
}

/// `count` GET /hello on one KEEP_CONN connection.
fn load(addr: &fcgi_uring::Addr, count: usize) {
    let mut c = connect(addr);
    let mut spec = RequestSpec::get("/hello");
    spec.keep_conn = true;
    for _ in 0..count {
        assert_eq!(c.request(&spec).unwrap().status, 200);
    }
}

/// Runs `cmd` with `input` on its stdin; its exit status and output.
fn pipe(mut cmd: Command, input: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_passes_the_text_format_and_openmetrics_parses() {
    let Some(promtool) = find_binary("promtool", &["/usr/bin/promtool"]) else {
        return;
    };
    let server = start();
    load(server.local_addr(), 50);
    let admin = admin_addr(&server);
    let text = scrape(admin).text;
    let mut cmd = Command::new(&promtool);
    cmd.args(["check", "metrics"]);
    let (ok, out) = pipe(cmd, &text);
    assert!(ok && out.trim().is_empty(), "promtool: {out}\n{text}");

    let Some(python) = find_binary("python3", &["/usr/bin/python3"]) else {
        return;
    };
    let om = get(
        admin,
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    let om = String::from_utf8(om.body).unwrap();
    let parse = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
        fams = list(p(sys.stdin.read()))\n\
        names = {f.name: f.type for f in fams}\n\
        assert names['fcgi_uring_requests'] == 'counter', names\n\
        assert names['fcgi_uring_response_duration_seconds'] == 'histogram', names\n\
        print(len(fams))\n";
    let mut cmd = Command::new(&python);
    cmd.args(["-c", parse]);
    let (ok, out) = pipe(cmd, &om);
    if !ok && out.contains("No module named 'prometheus_client'") {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("python3-prometheus-client is required in CI (.ci/run installs it)");
        }
        eprintln!("SKIPPED: python3-prometheus-client not installed");
        return;
    }
    assert!(ok, "OpenMetrics parser: {out}\n{om}");
}

/// A Prometheus server scraping `target` every second.
fn prometheus(target: SocketAddr) -> Option<Proxy> {
    let bin = find_binary("prometheus", &["/usr/bin/prometheus"])?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
         scrape_configs:\n  - job_name: fcgi\n    static_configs:\n      - targets: ['{target}']\n"
    );
    let conf_path = dir.path().join("prometheus.yml");
    std::fs::write(&conf_path, conf).unwrap();
    let log = std::fs::File::create(dir.path().join("error.log")).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", conf_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(log);
    Some(Proxy::spawn(
        cmd,
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    ))
}

/// `%XX`-encodes what a query string cannot hold as is.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a PromQL instant query with one result, if it has one.
fn query(prom: SocketAddr, q: &str) -> Option<f64> {
    let path = format!("/api/v1/query?query={}", encode(q));
    let r = request(prom, "GET", &path, &[], Upload::None);
    let json: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let result = json["data"]["result"].as_array()?;
    let value = result.first()?["value"][1].as_str()?;
    value.parse().ok()
}

#[test]
fn prometheus_scrapes_during_load_and_counts_every_request() {
    let server = start();
    let admin = admin_addr(&server);
    let Some(prom) = prometheus(admin) else {
        return;
    };
    let up = || query(prom.addr, "up{job=\"fcgi\"}") == Some(1.0);
    if !holds_within(HANG_GUARD, up) {
        panic!(
            "Prometheus never scraped the admin listener; log:\n{}",
            prom.log()
        );
    }
    // Load long enough to span several scrapes: 8 connections, 4 rounds of 250 each, with a
    // scrape seen between rounds.
    let addr = server.local_addr().clone();
    let mut sent = 0;
    for round in 0..4 {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let addr = addr.clone();
                std::thread::spawn(move || load(&addr, 250))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sent += 8 * 250;
        let seen = |n: f64| {
            move || {
                query(prom.addr, "fcgi_uring_requests_total{role=\"responder\"}")
                    .is_some_and(|v| v >= n)
            }
        };
        wait_for(
            &format!("Prometheus to see round {round}"),
            HANG_GUARD,
            seen(sent as f64),
        );
    }
    let total = query(prom.addr, "fcgi_uring_requests_total{role=\"responder\"}");
    assert_eq!(total, Some(sent as f64), "log:\n{}", prom.log());
    let summed = query(prom.addr, "sum(fcgi_uring_worker_requests_total)");
    assert_eq!(summed, Some(sent as f64));
    let answered = query(prom.addr, "fcgi_uring_response_duration_seconds_count");
    assert_eq!(answered, Some(sent as f64));
    // Every scrape succeeded (up stayed 1), and there were several during the load.
    let scrapes = query(prom.addr, "count_over_time(up{job=\"fcgi\"}[10m])").unwrap_or(0.0);
    let good = query(prom.addr, "sum_over_time(up{job=\"fcgi\"}[10m])").unwrap_or(-1.0);
    assert!(
        scrapes >= 4.0 && good == scrapes,
        "{good} of {scrapes} scrapes up"
    );
}
