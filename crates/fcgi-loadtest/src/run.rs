//! A whole run: checks the settings, encodes the request, starts the pinned worker threads,
//! measures the server's CPU over the window, shows progress and merges the results.

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fcgi_uring::Addr;

use crate::engine::{Plan, Progress, Request, Worker};
use crate::fcgi;
use crate::h2c;
use crate::http1;
use crate::response::Expect;
use crate::schedule;
use crate::stats::{CpuBusy, Report, RunInfo, ThreadStats, TreeCpu};
use crate::sys::{self, CpuTime};

/// The protocol spoken to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Fastcgi,
    Http1,
    H2,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Fastcgi => "fastcgi",
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub protocol: Protocol,
    pub addr: Addr,
    /// Request URI: path and query.
    pub path: String,
    pub conns: usize,
    pub depth: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Open loop: requests per second over all connections.
    pub rate: Option<f64>,
    /// `None`: GET, or POST when there is a body.
    pub method: Option<String>,
    pub body_bytes: usize,
    pub threads: usize,
    /// CPUs to pin worker threads to, in turn; empty: no pinning.
    pub cpus: Vec<usize>,
    pub keep_conn: bool,
    pub expect_body: Option<String>,
    pub server_pid: Option<u32>,
    /// Process trees (a root pid and its descendants, e.g. a proxy's master and workers) whose
    /// CPU time is read at the window's edges, into [`Report::tree_cpu`].
    pub cpu_trees: Vec<u32>,
    /// CPUs whose busy time (all processes, from `/proc/stat`) is read at the window's edges,
    /// into [`Report::cpu_busy`].
    pub watch_cpus: Vec<usize>,
    /// Show a progress line on stderr (only honoured when stderr is a terminal).
    pub progress: bool,
}

impl Config {
    /// Defaults for a short closed-loop run against `addr`.
    pub fn new(protocol: Protocol, addr: Addr, path: &str) -> Config {
        Config {
            protocol,
            addr,
            path: path.to_owned(),
            conns: 1,
            depth: 1,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            rate: None,
            method: None,
            body_bytes: 0,
            threads: 1,
            cpus: Vec::new(),
            keep_conn: true,
            expect_body: None,
            server_pid: None,
            cpu_trees: Vec::new(),
            watch_cpus: Vec::new(),
            progress: false,
        }
    }

    fn method(&self) -> String {
        match &self.method {
            Some(m) => m.to_ascii_uppercase(),
            None if self.body_bytes > 0 => "POST".to_owned(),
            None => "GET".to_owned(),
        }
    }
}

/// Parses a CPU list: `1`, `0,2`, `0-3`, `0-1,3`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid CPU list {text:?}: expected e.g. 1 or 0,2 or 0-3");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(cpus)
}

/// Why a run could not start or failed.
pub type RunError = String;

fn check(cfg: &Config) -> Result<(), RunError> {
    if cfg.protocol == Protocol::H2 && !cfg.keep_conn {
        return Err("--keep-conn false is for FastCGI (HTTP/2 keeps its connections)".into());
    }
    if cfg.conns == 0 || cfg.depth == 0 || cfg.threads == 0 {
        return Err("--conns, --depth and --threads must be at least 1".into());
    }
    if cfg.depth > u16::MAX as usize {
        return Err(format!("--depth is at most {}", u16::MAX));
    }
    if !cfg.keep_conn && cfg.depth > 1 {
        return Err("--keep-conn false opens a connection per request: use --depth 1".into());
    }
    if cfg.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number of requests per second".into());
    }
    if cfg.duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    Ok(())
}

/// For `--depth` > 1 over FastCGI: the server must say FCGI_MPXS_CONNS=1 to GET_VALUES.
fn check_multiplexing(cfg: &Config) -> Result<(), RunError> {
    let values = fcgi::probe_values(&cfg.addr, Duration::from_secs(2))
        .map_err(|e| format!("GET_VALUES probe of {}: {e}", cfg.addr))?;
    match values.and_then(|v| v.mpxs_conns) {
        Some(true) => Ok(()),
        Some(false) => Err(format!(
            "--depth {} needs a multiplexing server, but {} answered FCGI_MPXS_CONNS=0: use --depth 1",
            cfg.depth, cfg.addr
        )),
        None => Err(format!(
            "--depth {} needs a multiplexing server, but {} did not answer GET_VALUES with FCGI_MPXS_CONNS: use --depth 1",
            cfg.depth, cfg.addr
        )),
    }
}

fn build_plan(cfg: &Config, window_start: u64, window_end: u64) -> Plan {
    let method = cfg.method();
    let body = vec![b'x'; cfg.body_bytes];
    let host = match &cfg.addr {
        Addr::Tcp(sa) => sa.to_string(),
        Addr::Unix(_) => "localhost".to_owned(),
    };
    let request = match cfg.protocol {
        Protocol::Fastcgi => Request::Fcgi(
            fcgi::nginx_request(&method, &cfg.path, &host, &body, cfg.keep_conn)
                .prepare(cfg.depth as u16),
        ),
        // HTTP/2 runs its own engine (`h2c_plan`); this one is unused.
        Protocol::Http1 | Protocol::H2 => {
            Request::Http1(http1::encode_request(&method, &cfg.path, &host, &body))
        }
    };
    Plan {
        addr: cfg.addr.clone(),
        request,
        method,
        expect: Expect {
            body: cfg.expect_body.as_ref().map(|b| Arc::from(b.as_bytes())),
        },
        depth: cfg.depth as u16,
        keep_conn: cfg.keep_conn,
        window_start,
        window_end,
    }
}

fn h2c_plan(cfg: &Config, window_start: u64, window_end: u64) -> Result<h2c::Plan, RunError> {
    let host = match &cfg.addr {
        Addr::Tcp(sa) => sa.to_string(),
        Addr::Unix(_) => "localhost".to_owned(),
    };
    let uri: http::Uri = format!("http://{host}{}", cfg.path)
        .parse()
        .map_err(|e| format!("bad request path {:?}: {e}", cfg.path))?;
    let method = http::Method::from_bytes(cfg.method().as_bytes())
        .map_err(|e| format!("bad method: {e}"))?;
    Ok(h2c::Plan {
        addr: cfg.addr.clone(),
        method,
        uri,
        body: bytes::Bytes::from(vec![b'x'; cfg.body_bytes]),
        expect: Expect {
            body: cfg.expect_body.as_ref().map(|b| Arc::from(b.as_bytes())),
        },
        depth: cfg.depth,
        window_start,
        window_end,
    })
}

/// Runs the load and returns the report.
pub fn run(cfg: &Config) -> Result<Report, RunError> {
    check(cfg)?;
    if cfg.protocol == Protocol::Fastcgi && cfg.depth > 1 {
        check_multiplexing(cfg)?;
    }
    let threads = cfg.threads.min(cfg.conns);
    let window_start = cfg.warmup.as_nanos() as u64;
    let window_end = window_start + cfg.duration.as_nanos() as u64;
    let plan = Arc::new(build_plan(cfg, window_start, window_end));
    let h2_plan = match cfg.protocol {
        Protocol::H2 => Some(Arc::new(h2c_plan(cfg, window_start, window_end)?)),
        _ => None,
    };
    let progress: Vec<Progress> = (0..threads).map(|_| Progress::default()).collect();
    let base = Instant::now();
    let mut pacers = match cfg.rate {
        Some(rate) => schedule::pacers(cfg.conns, rate, 0)
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None; cfg.conns],
    };
    // Connection k goes to thread k % threads.
    let mut per_thread: Vec<Vec<_>> = vec![Vec::new(); threads];
    for (k, p) in pacers.drain(..).enumerate() {
        per_thread[k % threads].push(p);
    }
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = per_thread
            .into_iter()
            .enumerate()
            .map(|(t, pacers)| {
                let plan = Arc::clone(&plan);
                let h2_plan = h2_plan.clone();
                let cpu = (!cfg.cpus.is_empty()).then(|| cfg.cpus[t % cfg.cpus.len()]);
                let progress = &progress[t];
                std::thread::Builder::new()
                    .name(format!("loadtest-{t}"))
                    .spawn_scoped(scope, move || {
                        if let Some(id) = cpu
                            && !core_affinity::set_for_current(core_affinity::CoreId { id })
                        {
                            eprintln!("warning: could not pin worker {t} to CPU {id}");
                        }
                        match h2_plan {
                            Some(h2) => h2c::run_worker(h2, base, pacers, progress),
                            None => Worker::new(plan, base, pacers)?.run(progress),
                        }
                    })
                    .expect("spawn worker thread")
            })
            .collect();
        let server = watch(cfg, base, window_start, window_end, &progress);
        let stats: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        (server, stats)
    });
    let (server, stats) = results;
    let mut total = ThreadStats::new();
    for s in stats {
        match s {
            Ok(Ok(s)) => total.merge(&s),
            Ok(Err(e)) => return Err(format!("worker failed: {e}")),
            Err(_) => return Err("worker panicked".into()),
        }
    }
    let info = RunInfo {
        protocol: cfg.protocol.name().to_owned(),
        addr: cfg.addr.to_string(),
        path: cfg.path.clone(),
        conns: cfg.conns,
        depth: cfg.depth,
        threads,
        keep_conn: cfg.keep_conn,
        rate: cfg.rate,
    };
    let (server, trees, cpu_busy) = server?;
    let mut report = Report::new(
        info,
        &total,
        Duration::from_nanos(window_end - window_start),
        server,
    );
    report.tree_cpu = trees;
    report.cpu_busy = cpu_busy;
    Ok(report)
}

/// Every tree's CPU time now (see [`sys::tree_cpu_time`]).
fn read_trees(roots: &[u32]) -> Result<Vec<(CpuTime, Vec<u32>)>, RunError> {
    roots
        .iter()
        .map(|&pid| sys::tree_cpu_time(pid).map_err(|e| format!("CPU of process tree {pid}: {e}")))
        .collect()
}

/// The CPU each tree used between two readings, by root pid.
fn tree_deltas(
    roots: &[u32],
    start: &[(CpuTime, Vec<u32>)],
    end: &[(CpuTime, Vec<u32>)],
) -> Vec<TreeCpu> {
    roots
        .iter()
        .zip(start.iter().zip(end))
        .map(|(&pid, ((a, _), (b, pids)))| {
            let used = b.since(*a);
            TreeCpu {
                pid,
                pids: pids.clone(),
                cpu_s: used.total().as_secs_f64(),
                system_s: used.system.as_secs_f64(),
            }
        })
        .collect()
}

/// On the calling thread while the workers run: reads the server's CPU time at the window's
/// edges and draws the progress line once a second.
fn watch(
    cfg: &Config,
    base: Instant,
    window_start: u64,
    window_end: u64,
    progress: &[Progress],
) -> Result<WatchResult, RunError> {
    let tty = cfg.progress && std::io::stderr().is_terminal();
    let server_cpu =
        |pid: u32| sys::process_cpu_time(pid).map_err(|e| format!("--server-pid {pid}: {e}"));
    let mut server_start = None;
    if let Some(pid) = cfg.server_pid {
        server_cpu(pid)?; // Fail early if the process cannot be read.
    }
    read_trees(&cfg.cpu_trees)?;
    let read_cpus = || sys::cpu_ticks(&cfg.watch_cpus).map_err(|e| format!("/proc/stat: {e}"));
    read_cpus()?;
    let mut trees_start = Vec::new();
    let mut cpus_start = Vec::new();
    let mut last_count = 0;
    let mut next_tick = 1_000_000_000u64;
    loop {
        let now = base.elapsed().as_nanos() as u64;
        if server_start.is_none() && now >= window_start {
            server_start = match cfg.server_pid {
                Some(pid) => Some(Some((pid, server_cpu(pid)?))),
                None => Some(None),
            };
            trees_start = read_trees(&cfg.cpu_trees)?;
            cpus_start = read_cpus()?;
        }
        if now >= window_end {
            break;
        }
        if tty && now >= next_tick {
            let count: u64 = progress
                .iter()
                .map(|p| p.completed.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            // The second just ended: warmup if it began before the window.
            let phase = if now.saturating_sub(1_000_000_000) < window_start {
                "warmup"
            } else {
                "run"
            };
            eprint!(
                "\r{phase} {:>4.0} s  {:>10} req/s  {:>12} requests  ",
                now as f64 / 1e9,
                count - last_count,
                count
            );
            let _ = std::io::stderr().flush();
            last_count = count;
            next_tick += 1_000_000_000;
        }
        // Without a terminal there is no progress line: only the window's edges wake us (waking
        // for a tick that is never advanced would spin on the client's own core).
        let mut wake = if tty {
            window_end.min(next_tick)
        } else {
            window_end
        };
        if server_start.is_none() {
            wake = wake.min(window_start);
        }
        std::thread::sleep(Duration::from_nanos(wake.saturating_sub(now)));
    }
    if tty {
        eprint!("\r{:78}\r", "");
    }
    let trees_end = read_trees(&cfg.cpu_trees)?;
    let trees = tree_deltas(&cfg.cpu_trees, &trees_start, &trees_end);
    let cpus = cpu_busy(&cfg.watch_cpus, &cpus_start, &read_cpus()?);
    match (cfg.server_pid, server_start.flatten()) {
        (Some(pid), Some((_, start))) => {
            let end = server_cpu(pid)?;
            Ok((Some((pid, end.since(start))), trees, cpus))
        }
        _ => Ok((None, trees, cpus)),
    }
}

/// Each CPU's busy share between two `/proc/stat` readings.
fn cpu_busy(cpus: &[usize], start: &[(u64, u64)], end: &[(u64, u64)]) -> Vec<CpuBusy> {
    cpus.iter()
        .zip(start.iter().zip(end))
        .map(|(&cpu, ((b0, a0), (b1, a1)))| CpuBusy {
            cpu,
            busy_pct: 100.0 * b1.saturating_sub(*b0) as f64
                / (a1.saturating_sub(*a0)).max(1) as f64,
        })
        .collect()
}

/// What [`watch`] measured: the server's CPU time, each process tree's, each watched CPU's.
type WatchResult = (Option<(u32, CpuTime)>, Vec<TreeCpu>, Vec<CpuBusy>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1"), Ok(vec![1]));
        assert_eq!(parse_cpu_list("0,2"), Ok(vec![0, 2]));
        assert_eq!(parse_cpu_list("0-2,5"), Ok(vec![0, 1, 2, 5]));
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("3-1").is_err());
    }

    #[test]
    fn settings_are_checked() {
        let addr: Addr = "127.0.0.1:1".parse().unwrap();
        let mut cfg = Config::new(Protocol::Fastcgi, addr, "/");
        cfg.keep_conn = false;
        cfg.depth = 2;
        assert!(run(&cfg).unwrap_err().contains("--depth 1"));
        cfg.protocol = Protocol::H2;
        assert!(
            run(&cfg)
                .unwrap_err()
                .contains("HTTP/2 keeps its connections")
        );
        cfg.protocol = Protocol::Fastcgi;
        cfg.keep_conn = true;
        // Nothing listens on port 1: the multiplexing probe fails with a clear error.
        assert!(run(&cfg).unwrap_err().contains("GET_VALUES"));
    }
}
