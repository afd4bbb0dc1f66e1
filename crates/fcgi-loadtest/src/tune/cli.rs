//! The `tune` command line, one definition for `fcgi-loadtest tune` and `fcgi-uring tune`:
//! [`TuneArgs`] (the flags) and [`main`] (runs the sweep, prints the table and the
//! recommendation).
//!
//! `fcgi-uring tune` runs the whole sweep in its own process: the server under test defaults to
//! the running executable (`serve` is a subcommand of the same binary), and the load is
//! generated in-process by this crate's engine on a thread pinned to `--client-cpu`. A lone
//! installed `fcgi-uring` binary therefore tunes itself; nothing else is executed.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{TuneConfig, clock, output, tune};

/// Flags of `tune`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Outputs in --out: table.txt (also printed), results.json, report.html, \
fcgi-uring.toml (the recommendation, checked with `fcgi-uring serve --config F --print-config`), \
and trials/ (each trial's configuration file and server log). See tuning/README.md."
)]
pub struct TuneArgs {
    /// A short sweep (few values, short runs, keepconn-tcp and mux16-tcp), under two minutes.
    #[arg(long)]
    pub quick: bool,
    /// Output directory.
    #[arg(long, default_value = "tune-out")]
    pub out: PathBuf,
    /// The fcgi-uring binary to tune [default: `fcgi-uring tune`: that binary itself;
    /// `fcgi-loadtest tune`: the fcgi-uring next to it].
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Only these workloads: names (keepconn-tcp), shapes (keepconn, newconn, mux16, post64k)
    /// or transports (tcp, unix) [default: all; --quick: keepconn-tcp,mux16-tcp].
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Only these knobs, by key (completions_per_turn) or section.key [default: all].
    #[arg(long, value_delimiter = ',')]
    pub knobs: Vec<String>,
    /// Measured seconds per run [default: 5; --quick: 1].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Warmup seconds per run [default: 1; --quick: 0.3].
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Rounds: every value measured this many times, each against the default around it
    /// [default: 3; --quick: 1].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Open-loop rate as a fraction of the default configuration's peak in each workload.
    #[arg(long, default_value_t = 0.7)]
    pub fraction: f64,
    /// Closed-loop runs of the default configuration, before the sweep, whose median peak sets
    /// each workload's open-loop rate.
    #[arg(long, default_value_t = 3)]
    pub calibration_runs: usize,
    /// CPU of the server (one worker, pinned).
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// CPU of the client (one thread, pinned).
    #[arg(long, default_value_t = 1)]
    pub client_cpu: usize,
    /// Smallest gain that counts, even when the measured noise is smaller.
    #[arg(long, default_value_t = 0.02)]
    pub min_gain: f64,
    /// p99 at the fixed rate may grow by the measured noise or by this, whichever is larger.
    #[arg(long, default_value_t = 0.10)]
    pub p99_tolerance: f64,
}

impl TuneArgs {
    /// The sweep these flags ask for; `default_server` gives the server when `--server` is
    /// not given.
    pub fn config(
        self,
        default_server: impl FnOnce() -> io::Result<PathBuf>,
    ) -> Result<TuneConfig, String> {
        let server = match self.server {
            Some(p) => p,
            None => default_server().map_err(|e| format!("cannot find this binary's path: {e}"))?,
        };
        let mut cfg = TuneConfig::new(server, self.quick);
        cfg.out = self.out;
        cfg.workloads = self.workloads;
        cfg.knobs = self.knobs;
        if let Some(d) = self.duration {
            cfg.duration = seconds("duration", d)?;
        }
        if let Some(w) = self.warmup {
            cfg.warmup = seconds("warmup", w)?;
        }
        if let Some(r) = self.rounds {
            cfg.rounds = r;
        }
        // Explicit timings are the user's: do not trim the plan behind their back.
        if self.duration.is_some() || self.warmup.is_some() || self.rounds.is_some() {
            cfg.budget = None;
        }
        cfg.fraction = self.fraction;
        cfg.calibration_runs = self.calibration_runs;
        cfg.server_cpu = self.server_cpu;
        cfg.client_cpu = self.client_cpu;
        cfg.rule.min_gain = self.min_gain;
        cfg.rule.p99_tolerance = self.p99_tolerance;
        Ok(cfg)
    }
}

fn seconds(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{name} must be a number of seconds >= 0"))
}

/// Runs `tune` for the command `prog` (`fcgi-loadtest tune`, `fcgi-uring tune`, which prefixes
/// its messages): prints the table, the recommendation and where the report is. Exit status 2
/// for bad flags, 1 when the sweep fails.
pub fn main(
    prog: &str,
    args: TuneArgs,
    default_server: impl FnOnce() -> io::Result<PathBuf>,
) -> ExitCode {
    let cfg = match args.config(default_server) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{prog}: {e}");
            return ExitCode::from(2);
        }
    };
    match tune(&cfg) {
        Ok(results) => {
            print!("{}", output::table(&results));
            let toml = cfg.out.join("fcgi-uring.toml");
            println!(
                "\nrecommendation ({}, accepted by `{} serve --config {}`):",
                toml.display(),
                results.server,
                toml.display()
            );
            let text = std::fs::read_to_string(&toml).unwrap_or_default();
            for line in text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
            {
                println!("  {line}");
            }
            println!(
                "report: {}; wall time {}",
                cfg.out.join("report.html").display(),
                clock(Duration::from_secs_f64(results.wall_s))
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{prog}: {e}");
            ExitCode::FAILURE
        }
    }
}
