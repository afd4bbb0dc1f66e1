//! `fcgi-loadtest run ...`: see the crate's README.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use fcgi_loadtest::compare::{CompareConfig, Load, SchedPolicy};
use fcgi_loadtest::run::parse_cpu_list;
use fcgi_loadtest::tune::cli::TuneArgs;
use fcgi_loadtest::{Config, Protocol};
use fcgi_uring::Addr;

#[derive(Parser)]
#[command(
    name = "fcgi-loadtest",
    version,
    about = "Load generator for FastCGI and HTTP/1.1 servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a server and report throughput, latency percentiles and CPU use.
    Run(RunArgs),
    /// Serve the demo app over FastCGI, HTTP/1.1 and h2c (direct, and through nginx and
    /// HAProxy), run the same scenarios against each in interleaved rounds, print a table,
    /// write DIR/report.html and DIR/results.json.
    Compare(CompareArgs),
    /// Compare two `compare` results (before and after a change): per cell the change with
    /// its spread; exits 1 when --metric regresses beyond the noise and --threshold.
    Diff(fcgi_loadtest::diff::DiffArgs),
    /// Run fcgi-uring with one knob varied at a time, then the winners together, against the
    /// front ends' workloads; print a table and write DIR/fcgi-uring.toml, report.html and
    /// results.json.
    Tune(Box<TuneArgs>),
}

/// `fcgi-loadtest tune`: the server defaults to the `fcgi-uring` next to this binary.
fn tune(args: TuneArgs) -> ExitCode {
    fcgi_loadtest::tune::cli::main("fcgi-loadtest tune", args, || {
        Ok(std::env::current_exe()?.with_file_name("fcgi-uring"))
    })
}

#[derive(clap::Args)]
struct CompareArgs {
    /// Directory for report.html, table.txt, results.json, proxy configs and logs.
    #[arg(long, default_value = "compare-out")]
    out: std::path::PathBuf,
    /// Measured seconds per cell and round (after the warmup).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Warmup seconds per cell and round.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Rounds of all cells, interleaved: each cell reports the median and the min-max range.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Open loop at this many requests per second (latency counted from each request's
    /// scheduled time). Default: closed loop.
    #[arg(long, conflicts_with = "rate_fraction")]
    rate: Option<f64>,
    /// Open loop at this fraction (0 < F <= 1) of each cell's peak, measured first by one
    /// closed-loop run of the cell.
    #[arg(long)]
    rate_fraction: Option<f64>,
    /// A cell with more failed requests than this percentage is drawn as failed.
    #[arg(long, default_value_t = fcgi_loadtest::cells::DEFAULT_MAX_ERROR_PCT)]
    max_error_pct: f64,
    /// CPUs for the server and the proxy (they share them).
    #[arg(long, default_value = "0")]
    server_cpus: String,
    /// CPUs for the client (one thread each).
    #[arg(long, default_value = "1")]
    client_cpus: String,
    /// The fcgi-uring binary (default: next to this one).
    #[arg(long)]
    fcgi_uring: Option<std::path::PathBuf>,
    /// The scheduling policy of the fcgi-uring servers (every protocol), not of the proxies:
    /// normal, or batch (SCHED_BATCH, set with `chrt --batch 0`: a woken worker does not
    /// preempt the proxy that shares its CPU).
    #[arg(long, value_enum, default_value_t = SchedPolicy::Normal)]
    server_sched: SchedPolicy,
    /// Only the paths whose names contain one of these (e.g. fastcgi,h2c).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these scenarios (hello, echo-1k, echo-64k, sleep-5ms).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Requests in flight for every scenario instead of its own (64, or 256 for sleep-5ms):
    /// HTTP/1.1 and proxied paths open one client connection each; direct FastCGI and h2c
    /// multiplex them over at most 16 connections.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    in_flight: Option<u32>,
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: std::path::PathBuf,
    #[arg(long, default_value = "/usr/sbin/haproxy")]
    haproxy: std::path::PathBuf,
}

fn load(a: &CompareArgs) -> Result<Load, String> {
    match (a.rate, a.rate_fraction) {
        (Some(r), _) if r > 0.0 && r.is_finite() => Ok(Load::Rate(r)),
        (Some(_), _) => Err("--rate must be a positive number of requests per second".into()),
        (None, Some(f)) if f > 0.0 && f <= 1.0 => Ok(Load::Fraction(f)),
        (None, Some(_)) => Err("--rate-fraction must be more than 0 and at most 1".into()),
        (None, None) => Ok(Load::Closed),
    }
}

fn compare_config(a: CompareArgs) -> Result<CompareConfig, String> {
    let fcgi_uring = match &a.fcgi_uring {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("fcgi-uring"),
    };
    if !(a.max_error_pct >= 0.0 && a.max_error_pct <= 100.0) {
        return Err("--max-error-pct must be between 0 and 100".into());
    }
    for s in &a.scenarios {
        if !fcgi_loadtest::compare::SCENARIOS
            .iter()
            .any(|k| k.name == s)
        {
            return Err(format!("unknown scenario {s:?}"));
        }
    }
    let mut cfg = CompareConfig::new(a.out.clone(), fcgi_uring);
    cfg.load = load(&a)?;
    cfg.duration = seconds("duration", a.duration)?;
    cfg.warmup = seconds("warmup", a.warmup)?;
    cfg.server_cpus = parse_cpu_list(&a.server_cpus)?;
    cfg.client_cpus = parse_cpu_list(&a.client_cpus)?;
    cfg.rounds = a.rounds as usize;
    cfg.max_error_pct = a.max_error_pct;
    cfg.only = a.only;
    cfg.scenarios = a.scenarios;
    cfg.in_flight = a.in_flight.map(|n| n as usize);
    cfg.nginx = a.nginx;
    cfg.haproxy = a.haproxy;
    cfg.server_sched = a.server_sched;
    Ok(cfg)
}

fn compare(a: CompareArgs) -> ExitCode {
    let cfg = match compare_config(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fcgi-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    fcgi_loadtest::sys::kill_children_on_signal();
    match fcgi_loadtest::compare::compare(&cfg) {
        Ok(table) => {
            print!("{table}");
            println!("report: {}", cfg.out.join("report.html").display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fcgi-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// Protocol spoken to the server.
    #[arg(long, value_enum, default_value = "fastcgi")]
    protocol: Protocol,
    /// Server address: HOST:PORT or unix:PATH.
    #[arg(long)]
    addr: Addr,
    /// Connections, spread over the threads.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Requests in flight per connection (FastCGI multiplexing needs FCGI_MPXS_CONNS=1;
    /// HTTP/1.1 pipelining).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Measured seconds (after the warmup).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Open loop: requests per second over all connections, latency counted from each
    /// request's scheduled time. Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Request method (default GET, or POST with --body-bytes).
    #[arg(long)]
    method: Option<String>,
    /// Request body size (FastCGI STDIN).
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    /// Client worker threads, each with its own event loop.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CPUs to pin worker threads to, e.g. 1 or 0,2 or 2-3.
    #[arg(long)]
    cpus: Option<String>,
    /// Keep connections open (FastCGI KEEP_CONN); false: a new connection per request.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    keep_conn: bool,
    /// Count a response whose body differs from this as an error.
    #[arg(long)]
    expect_body: Option<String>,
    /// Measure this process's CPU time over the window (server CPU per request).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Request URI (path and query).
    path: String,
}

fn seconds(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{name} must be a number of seconds >= 0"))
}

fn config(a: RunArgs) -> Result<(Config, bool), String> {
    let cpus = match &a.cpus {
        Some(list) => parse_cpu_list(list)?,
        None => Vec::new(),
    };
    let cfg = Config {
        protocol: a.protocol,
        addr: a.addr,
        path: a.path,
        conns: a.conns,
        depth: a.depth,
        duration: seconds("duration", a.duration)?,
        warmup: seconds("warmup", a.warmup)?,
        rate: a.rate,
        method: a.method,
        body_bytes: a.body_bytes,
        threads: a.threads,
        cpus,
        keep_conn: a.keep_conn,
        expect_body: a.expect_body,
        server_pid: a.server_pid,
        cpu_trees: Vec::new(),
        watch_cpus: Vec::new(),
        progress: true,
    };
    Ok((cfg, a.json))
}

fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Run(args) => args,
        Command::Compare(args) => return compare(args),
        Command::Tune(args) => return tune(*args),
        Command::Diff(args) => return fcgi_loadtest::diff::main(args),
    };
    let (cfg, json) = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fcgi-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    match fcgi_loadtest::run(&cfg) {
        Ok(report) => {
            if json {
                if let Some(w) = report.saturation_warning() {
                    eprintln!("{w}");
                }
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fcgi-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}
