//! `fcgi-loadtest compare`: the demo app served by `fcgi-uring serve` over FastCGI, HTTP/1.1
//! and h2c, loaded directly and through nginx and HAProxy the way users deploy them, with the
//! same scenarios, in interleaved rounds; one table, `DIR/report.html` and `DIR/results.json`
//! (read back by `diff`).
//!
//! Every server and proxy is a child process of this tool, pinned with `taskset` to the server
//! CPUs (server and proxy share them); the client runs pinned to the client CPUs. Proxy configs
//! are written into the output directory. Ports are fresh ephemeral ports, checked free before
//! each start (a stale listener with SO_REUSEPORT would silently take a share of the load).

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fcgi_uring::Addr;

use crate::cell_report;
use crate::cells::{self, Cell, Limits, Results, Round, Settings};
use crate::child::{self, free_port};
use crate::run::{Config, Protocol, run};

/// What `compare` needs.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub out: PathBuf,
    pub duration: Duration,
    pub warmup: Duration,
    pub server_cpus: Vec<usize>,
    pub client_cpus: Vec<usize>,
    pub fcgi_uring: PathBuf,
    /// The scheduling policy the fcgi-uring servers run under (not the proxies).
    pub server_sched: SchedPolicy,
    /// Run only the paths whose names contain one of these (empty: all).
    pub only: Vec<String>,
    /// Run only the scenarios named here (empty: all).
    pub scenarios: Vec<String>,
    /// Requests in flight for every scenario instead of its own (see [`Scenario::with_in_flight`]).
    pub in_flight: Option<usize>,
    pub nginx: PathBuf,
    pub haproxy: PathBuf,
    /// Rounds of all cells, interleaved (at least 1).
    pub rounds: usize,
    pub load: Load,
    /// Error rate in percent above which a cell is drawn as failed.
    pub max_error_pct: f64,
}

impl CompareConfig {
    /// Defaults: every path and scenario, 3 rounds of 5 s closed loop, server on CPU 0 and
    /// client on CPU 1.
    pub fn new(out: PathBuf, fcgi_uring: PathBuf) -> CompareConfig {
        CompareConfig {
            out,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            server_cpus: vec![0],
            client_cpus: vec![1],
            fcgi_uring,
            server_sched: SchedPolicy::Normal,
            only: Vec::new(),
            scenarios: Vec::new(),
            in_flight: None,
            nginx: "/usr/sbin/nginx".into(),
            haproxy: "/usr/sbin/haproxy".into(),
            rounds: 3,
            load: Load::Closed,
            max_error_pct: cells::DEFAULT_MAX_ERROR_PCT,
        }
    }
}

/// A Linux scheduling policy for the servers `compare` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedPolicy {
    /// SCHED_OTHER, what processes get by default.
    Normal,
    /// SCHED_BATCH (`chrt --batch 0`): the server's threads do not preempt a running task
    /// when they wake, so a proxy on the same CPU finishes its turn first.
    Batch,
}

impl SchedPolicy {
    /// The program and its leading arguments that run `program` under this policy.
    pub fn command(self, program: &Path) -> (PathBuf, Vec<String>) {
        match self {
            SchedPolicy::Normal => (program.to_path_buf(), Vec::new()),
            SchedPolicy::Batch => (
                "chrt".into(),
                vec!["--batch".into(), "0".into(), program.display().to_string()],
            ),
        }
    }
}

/// How the client loads each cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Each answer sends the next request.
    Closed,
    /// Open loop at this many requests per second.
    Rate(f64),
    /// Open loop at this fraction of the cell's peak, measured by one closed-loop run first.
    Fraction(f64),
}

impl Load {
    fn describe(self) -> String {
        match self {
            Load::Closed => "closed loop".into(),
            Load::Rate(r) => format!("open loop at {r:.0} requests/s"),
            Load::Fraction(f) => format!(
                "open loop at {:.0}% of each cell's peak (one closed-loop run measures the peak)",
                f * 100.0
            ),
        }
    }
}

/// A backend protocol of `fcgi-uring serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Fastcgi,
    Http1,
    H2c,
}

impl Backend {
    fn arg(self) -> &'static str {
        match self {
            Backend::Fastcgi => "fastcgi",
            Backend::Http1 => "http1",
            Backend::H2c => "h2c",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Front {
    Direct,
    Nginx,
    Haproxy,
}

impl Front {
    fn proxy(self) -> Option<&'static str> {
        match self {
            Front::Direct => None,
            Front::Nginx => Some("nginx"),
            Front::Haproxy => Some("haproxy"),
        }
    }
}

/// One way from the client to the app.
#[derive(Debug, Clone, Copy)]
struct Route {
    name: &'static str,
    backend: Backend,
    front: Front,
}

const PATHS: [Route; 8] = [
    Route {
        name: "fastcgi",
        backend: Backend::Fastcgi,
        front: Front::Direct,
    },
    Route {
        name: "http1",
        backend: Backend::Http1,
        front: Front::Direct,
    },
    Route {
        name: "h2c",
        backend: Backend::H2c,
        front: Front::Direct,
    },
    Route {
        name: "nginx>fastcgi",
        backend: Backend::Fastcgi,
        front: Front::Nginx,
    },
    Route {
        name: "nginx>http1",
        backend: Backend::Http1,
        front: Front::Nginx,
    },
    Route {
        name: "haproxy>fastcgi",
        backend: Backend::Fastcgi,
        front: Front::Haproxy,
    },
    Route {
        name: "haproxy>h2c",
        backend: Backend::H2c,
        front: Front::Haproxy,
    },
    Route {
        name: "haproxy>http1",
        backend: Backend::Http1,
        front: Front::Haproxy,
    },
];

/// One load shape.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub path: &'static str,
    pub body_bytes: usize,
    pub expect: Option<&'static str>,
    /// In flight over all connections; HTTP/1.1 clients open that many connections, FastCGI
    /// and HTTP/2 clients `mux_conns` connections with `in_flight / mux_conns` each.
    pub in_flight: usize,
    pub mux_conns: usize,
}

impl Scenario {
    /// The same load shape with `n` requests in flight (at least 1), multiplexed over at most
    /// as many connections as before.
    pub fn with_in_flight(self, n: usize) -> Scenario {
        let n = n.max(1);
        Scenario {
            in_flight: n,
            mux_conns: self.mux_conns.min(n),
            ..self
        }
    }
}

pub const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "hello",
        path: "/hello",
        body_bytes: 0,
        expect: Some("Hello, World!"),
        in_flight: 64,
        mux_conns: 16,
    },
    Scenario {
        name: "echo-1k",
        path: "/echo",
        body_bytes: 1024,
        expect: None,
        in_flight: 64,
        mux_conns: 16,
    },
    Scenario {
        name: "echo-64k",
        path: "/echo",
        body_bytes: 65536,
        expect: None,
        in_flight: 64,
        mux_conns: 16,
    },
    Scenario {
        name: "sleep-5ms",
        path: "/sleep?ms=5",
        body_bytes: 0,
        expect: Some("slept 5"),
        in_flight: 256,
        mux_conns: 16,
    },
];

/// A path ready to load: where the client connects, and the processes whose CPU is counted.
struct Ready {
    target: SocketAddr,
    backend_addr: SocketAddr,
    backend_pid: u32,
    proxy_pid: Option<u32>,
}

/// The children of a comparison: a server per backend protocol, a proxy per proxied path. All
/// stop when this is dropped.
#[derive(Default)]
struct Running {
    servers: Vec<Proc>,
    fronts: HashMap<&'static str, Proc>,
}

/// Runs every scenario through every path for `cfg.rounds` interleaved rounds; writes
/// `report.html`, `table.txt`, `results.json` and the configs into `cfg.out`; returns the table.
pub fn compare(cfg: &CompareConfig) -> Result<String, String> {
    fs::create_dir_all(&cfg.out).map_err(|e| format!("{}: {e}", cfg.out.display()))?;
    if !cfg.fcgi_uring.exists() {
        return Err(format!(
            "{} not found: build it (cargo build --release) or pass --fcgi-uring PATH",
            cfg.fcgi_uring.display()
        ));
    }
    let paths: Vec<Route> = PATHS
        .into_iter()
        .filter(|p| cfg.only.is_empty() || cfg.only.iter().any(|o| p.name.contains(o.as_str())))
        .collect();
    let scenarios: Vec<Scenario> = SCENARIOS
        .into_iter()
        .filter(|s| cfg.scenarios.is_empty() || cfg.scenarios.iter().any(|n| n == s.name))
        .map(|s| match cfg.in_flight {
            Some(n) => s.with_in_flight(n),
            None => s,
        })
        .collect();
    if paths.is_empty() || scenarios.is_empty() {
        return Err("no path or no scenario left to run (see --only and --scenarios)".into());
    }
    // Every server and proxy stays up for all rounds (and stops when `running` is dropped).
    let mut running = Running::default();
    let ready = start_all(cfg, &paths, &mut running);
    let mut cells = plan_cells(cfg, &paths, &scenarios, &ready);
    match cfg.load {
        Load::Fraction(f) => calibrate(&mut cells, f),
        Load::Rate(r) => {
            for (cell, load) in &mut cells {
                if let Some(load) = load {
                    load.rate = Some(r);
                    cell.rate = Some(r);
                }
            }
        }
        Load::Closed => {}
    }
    for round in 1..=cfg.rounds.max(1) {
        for i in 0..cells.len() {
            let (cell, load) = &mut cells[i];
            let Some(load) = load else { continue };
            eprintln!(
                "compare: round {round}/{}: {} {} ...",
                cfg.rounds, cell.scenario, cell.path
            );
            let measured = measure(load);
            let failed = over_threshold(&measured, cfg.max_error_pct);
            cell.rounds.push(measured);
            if failed && cell.proxy.is_some() {
                let path = cell.path.clone();
                restart_front(cfg, &path, &ready, &mut running, &mut cells);
            }
        }
    }
    drop(running);
    write_outputs(cfg, &scenarios, cells.into_iter().map(|(c, _)| c).collect())
}

/// Whether a round failed more requests than `max_error_pct` percent (or did not run).
fn over_threshold(round: &Round, max_error_pct: f64) -> bool {
    round.report.as_ref().is_none_or(|r| {
        let all = r.requests + r.errors;
        all == 0 || 100.0 * r.errors as f64 / all as f64 > max_error_pct
    })
}

/// After a failed round of a proxied path: a fresh proxy for the path's next cells, so a
/// proxy stuck by one cell (a connection to the backend that no longer moves, say) does not
/// fail the cells after it. The loads of the path's cells follow the new proxy.
fn restart_front(
    cfg: &CompareConfig,
    path: &str,
    ready: &HashMap<&'static str, Result<Ready, String>>,
    running: &mut Running,
    cells: &mut [(Cell, Option<Config>)],
) {
    let (Some(route), Some(Ok(r))) = (PATHS.iter().find(|p| p.name == path), ready.get(path))
    else {
        return;
    };
    // Stop the old proxy first: its port and its connections to the backend go with it.
    running.fronts.remove(route.name);
    eprintln!("compare: {path} failed: restarting its proxy");
    let front = match start_front(cfg, route, r.backend_addr) {
        Ok(Some(front)) => front,
        Ok(None) => return,
        Err(e) => {
            eprintln!("compare: {path}: {e}");
            return;
        }
    };
    for (cell, load) in cells.iter_mut() {
        if cell.path != path {
            continue;
        }
        if let Some(load) = load {
            load.addr = Addr::Tcp(front.addr);
            load.cpu_trees = vec![r.backend_pid, front.pid()];
        }
    }
    running.fronts.insert(route.name, front);
}

/// A cell per path and scenario, with its load (`None`: the path did not start, and every
/// round of the cell says why).
fn plan_cells(
    cfg: &CompareConfig,
    paths: &[Route],
    scenarios: &[Scenario],
    ready: &HashMap<&'static str, Result<Ready, String>>,
) -> Vec<(Cell, Option<Config>)> {
    let mut cells = Vec::new();
    for p in paths {
        for s in scenarios {
            let mut cell = Cell {
                scenario: s.name.into(),
                path: p.name.into(),
                shape: "-".into(),
                proxy: p.front.proxy().map(str::to_owned),
                rate: None,
                rounds: Vec::new(),
                summary: None,
            };
            let load = match ready.get(p.name) {
                Some(Ok(r)) => {
                    let (load, shape) = load_config(cfg, p, s, r);
                    cell.shape = shape;
                    Some(load)
                }
                Some(Err(e)) => {
                    cell.rounds = (0..cfg.rounds).map(|_| Round::failed(e.clone())).collect();
                    None
                }
                None => {
                    cell.rounds = vec![Round::failed("not started")];
                    None
                }
            };
            cells.push((cell, load));
        }
    }
    cells
}

/// Summarizes the cells and writes `report.html`, `table.txt` and `results.json`; returns the
/// table.
fn write_outputs(
    cfg: &CompareConfig,
    scenarios: &[Scenario],
    mut cells: Vec<Cell>,
) -> Result<String, String> {
    let limits = Limits {
        max_error_pct: cfg.max_error_pct,
        server_cpus: cfg.server_cpus.len().max(1),
    };
    for c in &mut cells {
        c.summarize(&limits);
    }
    let results = Results {
        format: cells::FORMAT.into(),
        title: "fcgi-uring: FastCGI vs HTTP/1.1 vs h2c, direct and through nginx and HAProxy"
            .into(),
        notes: notes(cfg, scenarios),
        settings: Settings {
            rounds: cfg.rounds.max(1),
            duration_s: cfg.duration.as_secs_f64(),
            warmup_s: cfg.warmup.as_secs_f64(),
            server_cpus: cfg.server_cpus.clone(),
            client_cpus: cfg.client_cpus.clone(),
            load: cfg.load.describe(),
            limits,
        },
        cells,
    };
    let table = cell_report::table(&results);
    let write = |name: &str, text: &str| {
        fs::write(cfg.out.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write("report.html", &cell_report::html(&results))?;
    write("table.txt", &table)?;
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    write("results.json", &json)?;
    Ok(table)
}

/// One round of one cell: the client's report and the CPU of the backend's and the proxy's
/// process trees over the same window.
fn measure(load: &Config) -> Round {
    match run(load) {
        Ok(report) => {
            let tree = |i: usize| report.tree_cpu.get(i).map(|t| t.cpu_s);
            Round {
                backend_cpu_s: tree(0),
                backend_system_s: report.tree_cpu.first().map(|t| t.system_s),
                proxy_cpu_s: tree(1),
                report: Some(report),
                error: None,
            }
        }
        Err(e) => {
            eprintln!("compare: {e}");
            Round::failed(e)
        }
    }
}

/// `--rate-fraction F`: one closed-loop run per cell measures its peak; the cell then runs
/// open loop at F times that. A cell whose peak run failed keeps the failure.
fn calibrate(cells: &mut [(Cell, Option<Config>)], fraction: f64) {
    for (cell, load) in cells.iter_mut() {
        let Some(cfg) = load.as_mut() else { continue };
        eprintln!("compare: peak of {} {} ...", cell.scenario, cell.path);
        match run(cfg) {
            Ok(r) if r.rps > 0.0 => {
                let rate = (r.rps * fraction).max(1.0);
                cfg.rate = Some(rate);
                cell.rate = Some(rate);
            }
            Ok(_) => {
                cell.rounds
                    .push(Round::failed("no successful request in the peak run"));
                *load = None;
            }
            Err(e) => {
                cell.rounds.push(Round::failed(format!("peak run: {e}")));
                *load = None;
            }
        }
    }
}

/// Starts the backends and the proxies of `paths`, each once; the processes go into `procs`.
fn start_all(
    cfg: &CompareConfig,
    paths: &[Route],
    running: &mut Running,
) -> HashMap<&'static str, Result<Ready, String>> {
    let mut ready = HashMap::new();
    for backend in [Backend::Fastcgi, Backend::Http1, Backend::H2c] {
        let mine: Vec<&Route> = paths.iter().filter(|p| p.backend == backend).collect();
        if mine.is_empty() {
            continue;
        }
        let server = match start_server(cfg, backend) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("compare: fcgi-uring --protocol {}: {e}", backend.arg());
                for p in mine {
                    ready.insert(p.name, Err(e.clone()));
                }
                continue;
            }
        };
        let (backend_addr, backend_pid) = (server.addr, server.pid());
        running.servers.push(server);
        for p in mine {
            let r = match start_front(cfg, p, backend_addr) {
                Ok(Some(front)) => {
                    let r = Ready {
                        target: front.addr,
                        backend_addr,
                        backend_pid,
                        proxy_pid: Some(front.pid()),
                    };
                    running.fronts.insert(p.name, front);
                    Ok(r)
                }
                Ok(None) => Ok(Ready {
                    target: backend_addr,
                    backend_addr,
                    backend_pid,
                    proxy_pid: None,
                }),
                Err(e) => {
                    eprintln!("compare: {}: {e}", p.name);
                    Err(e)
                }
            };
            ready.insert(p.name, r);
        }
    }
    ready
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn notes(cfg: &CompareConfig, scenarios: &[Scenario]) -> Vec<String> {
    let shapes = scenarios
        .iter()
        .map(|s| {
            format!(
                "{} = {} {}{} ({} in flight)",
                s.name,
                if s.body_bytes > 0 { "POST" } else { "GET" },
                s.path,
                if s.body_bytes > 0 {
                    format!(" with {} B", s.body_bytes)
                } else {
                    String::new()
                },
                s.in_flight
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    vec![
        format!(
            "server (fcgi-uring, {} worker(s)) and proxy pinned to CPU {}; client ({} thread(s)) pinned to CPU {}; \
             {}, {} round(s) of every cell interleaved, {:.1} s measured after {:.1} s warmup per cell and round.",
            cfg.server_cpus.len(),
            cpu_list(&cfg.server_cpus),
            cfg.client_cpus.len(),
            cpu_list(&cfg.client_cpus),
            cfg.load.describe(),
            cfg.rounds.max(1),
            cfg.duration.as_secs_f64(),
            cfg.warmup.as_secs_f64()
        ),
        format!("scenarios: {shapes}."),
        "shape = client connections x requests in flight per connection. Direct fastcgi and h2c \
         multiplex (16 connections); HTTP/1.1 clients, and all clients of a proxy, use one \
         connection per request in flight."
            .into(),
    ]
}

fn load_config(cfg: &CompareConfig, p: &Route, s: &Scenario, r: &Ready) -> (Config, String) {
    let (protocol, conns, depth) = match (p.front, p.backend) {
        (Front::Direct, Backend::Fastcgi) => {
            (Protocol::Fastcgi, s.mux_conns, s.in_flight / s.mux_conns)
        }
        (Front::Direct, Backend::H2c) => (Protocol::H2, s.mux_conns, s.in_flight / s.mux_conns),
        _ => (Protocol::Http1, s.in_flight, 1),
    };
    let mut c = Config::new(protocol, Addr::Tcp(r.target), s.path);
    c.conns = conns;
    c.depth = depth;
    c.duration = cfg.duration;
    c.warmup = cfg.warmup;
    c.body_bytes = s.body_bytes;
    c.expect_body = match s.expect {
        Some(e) => Some(e.to_owned()),
        None => Some("x".repeat(s.body_bytes)),
    };
    c.threads = cfg.client_cpus.len().max(1);
    c.cpus = cfg.client_cpus.clone();
    c.server_pid = Some(r.backend_pid);
    c.cpu_trees = std::iter::once(r.backend_pid).chain(r.proxy_pid).collect();
    // Server CPUs first: the cells' summaries split the list at their number.
    c.watch_cpus = cfg
        .server_cpus
        .iter()
        .chain(&cfg.client_cpus)
        .copied()
        .collect();
    (c, format!("{conns}x{depth}"))
}

/// A running server or proxy and the address it listens on.
struct Proc {
    proc: child::Proc,
    addr: SocketAddr,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// Starts `program` pinned to the server CPUs (with `taskset`), logging to `DIR/name.log`, and
/// waits until `addr` accepts.
fn spawn(
    cfg: &CompareConfig,
    name: &str,
    addr: SocketAddr,
    program: &Path,
    args: &[String],
) -> Result<Proc, String> {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(cpu_list(&cfg.server_cpus))
        .arg(program)
        .args(args);
    crate::sys::child_pinned_and_tied(&mut cmd, None);
    let log = cfg.out.join(format!("{name}.log"));
    let proc = child::spawn(cmd, name, &log, &Addr::Tcp(addr), Duration::from_secs(10))?;
    // Let every worker of the server reach its accept loop.
    std::thread::sleep(Duration::from_millis(100));
    Ok(Proc { proc, addr })
}

fn start_server(cfg: &CompareConfig, backend: Backend) -> Result<Proc, String> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let args: Vec<String> = [
        "serve",
        "--protocol",
        backend.arg(),
        "--listen",
        &addr.to_string(),
        "--workers",
        &cfg.server_cpus.len().max(1).to_string(),
        "--shutdown-timeout",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (program, mut argv) = cfg.server_sched.command(&cfg.fcgi_uring);
    argv.extend(args);
    spawn(
        cfg,
        &format!("fcgi-uring-{}", backend.arg()),
        addr,
        &program,
        &argv,
    )
}

/// Starts the path's proxy in front of `backend` (`None` for a direct path).
fn start_front(
    cfg: &CompareConfig,
    p: &Route,
    backend: SocketAddr,
) -> Result<Option<Proc>, String> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let name = p.name.replace('>', "-");
    let workers = cfg.server_cpus.len().max(1);
    match p.front {
        Front::Direct => Ok(None),
        Front::Nginx => {
            let dir = cfg.out.join(&name);
            fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let conf = nginx_conf(&dir, addr, backend, p.backend == Backend::Fastcgi, workers);
            let path = cfg.out.join(format!("{name}.conf"));
            fs::write(&path, conf).map_err(|e| e.to_string())?;
            let args = vec![
                "-p".into(),
                dir.display().to_string(),
                "-c".into(),
                path.display().to_string(),
                "-e".into(),
                dir.join("error.log").display().to_string(),
            ];
            spawn(cfg, &name, addr, &cfg.nginx, &args).map(Some)
        }
        Front::Haproxy => {
            let conf = haproxy_conf(addr, backend, p.backend, workers);
            let path = cfg.out.join(format!("{name}.cfg"));
            fs::write(&path, conf).map_err(|e| e.to_string())?;
            let args = vec!["-db".into(), "-f".into(), path.display().to_string()];
            spawn(cfg, &name, addr, &cfg.haproxy, &args).map(Some)
        }
    }
}

/// nginx as users deploy it: `fastcgi_pass` with `fastcgi_keep_conn` and upstream keepalive,
/// or `proxy_pass` over HTTP/1.1 with upstream keepalive. Client and upstream keepalive
/// request limits are lifted so no connection is closed mid-run.
pub fn nginx_conf(
    dir: &Path,
    listen: SocketAddr,
    backend: SocketAddr,
    fastcgi: bool,
    workers: usize,
) -> String {
    let d = dir.display();
    let location = if fastcgi {
        "include /etc/nginx/fastcgi_params;\n            fastcgi_pass app;\n            fastcgi_keep_conn on;"
    } else {
        "proxy_pass http://app;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";"
    };
    format!(
        r#"daemon off;
master_process off;
worker_processes {workers};
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 128k;
    keepalive_requests 100000000;
    upstream app {{
        server {backend};
        keepalive 256;
        keepalive_requests 100000000;
    }}
    server {{
        listen {listen};
        location / {{
            {location}
        }}
    }}
}}
"#
    )
}

/// HAProxy with the FastCGI app (`option keep-conn`, `get-values`, `mpxs-conns`), or `proto h2`,
/// or HTTP/1.1 to the server; connections reused (`http-reuse always`).
pub fn haproxy_conf(
    listen: SocketAddr,
    backend: SocketAddr,
    proto: Backend,
    threads: usize,
) -> String {
    let (server, app) = match proto {
        Backend::Fastcgi => (
            format!("use-fcgi-app app\n    server s1 {backend} proto fcgi"),
            "fcgi-app app\n    docroot /srv\n    option keep-conn\n    option get-values\n    option mpxs-conns\n    option max-reqs 100\n",
        ),
        Backend::H2c => (format!("server s1 {backend} proto h2"), ""),
        Backend::Http1 => (format!("server s1 {backend}"), ""),
    };
    format!(
        r#"global
    nbthread {threads}
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind {listen}
    default_backend be
backend be
    {server}
{app}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_flight_override_keeps_the_shape_within_its_connections() {
        let hello = SCENARIOS[0];
        let one = hello.with_in_flight(1);
        assert_eq!((one.in_flight, one.mux_conns), (1, 1));
        let sixteen = hello.with_in_flight(16);
        assert_eq!((sixteen.in_flight, sixteen.mux_conns), (16, 16));
        let many = hello.with_in_flight(256);
        assert_eq!((many.in_flight, many.mux_conns), (256, 16));
        assert_eq!(hello.with_in_flight(0).in_flight, 1);
        assert_eq!(many.path, hello.path);
    }
}
