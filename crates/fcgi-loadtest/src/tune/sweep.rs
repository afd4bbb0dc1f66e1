//! Running the trials: a fresh server per trial (one worker, pinned to the server CPU, its
//! configuration file and log in `DIR/trials/`), a closed-loop run for the peak, then an
//! open-loop run at the workload's fixed rate for p50/p99/p99.9 and the server's CPU per
//! request, then the server is stopped. The load runs in this process, on the client CPU
//! ([`crate::run`]).
//!
//! Order: first each workload's calibration (closed-loop runs of the default configuration,
//! each on a fresh server, whose median sets the open-loop rate, see
//! [`super::plan::open_loop_rate`]); then per round and workload the default before the first
//! knob and after each knob's values (`D a b D c D ...`), so every value is compared with the
//! default measured just around it; then the winners together (`D B D B ... D`).
//!
//! Guarantees: a failed trial is recorded with its error and the tail of the server's log, and
//! the sweep goes on; a workload whose calibration or first default trial fails is dropped with
//! a note, never measured against a missing baseline; every server started is stopped (the
//! [`child::Proc`] guard), and the UNIX sockets' directory is removed on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fcgi_uring::Addr;

use super::decide::{DEFAULT, Point, Sample};
use super::knobs::{self, Setting};
use super::plan::{self, KnobPlan};
use super::results::{Trial, WorkloadInfo};
use super::server::Server;
use super::workloads::{Transport, Workload};
use super::{TuneConfig, clock, file_name};
use crate::child;
use crate::run::run;
use crate::stats::Report;

/// Temporary directory for UNIX sockets (short paths: sun_path holds 108 bytes), removed on
/// drop.
struct SocketDir {
    path: PathBuf,
}

const SOCKET_DIR_PREFIX: &str = "fcgi-tune-";

impl SocketDir {
    /// `$TMPDIR/fcgi-tune-PID`, after removing those of runs that were killed (their process
    /// is gone).
    fn new() -> Result<SocketDir, String> {
        let tmp = std::env::temp_dir();
        for entry in fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(SOCKET_DIR_PREFIX))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                remove_socket_dir(&entry.path());
            }
        }
        let path = tmp.join(format!("{SOCKET_DIR_PREFIX}{}", std::process::id()));
        fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(SocketDir { path })
    }
}

/// Removes the `*.sock` files of `dir`, then `dir` if that left it empty.
fn remove_socket_dir(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "sock") {
            let _ = fs::remove_file(entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        remove_socket_dir(&self.path);
    }
}

/// The running sweep: its trials so far and each workload's chain.
pub(super) struct Sweep<'a> {
    pub(super) cfg: &'a TuneConfig,
    pub(super) server: &'a Server,
    pub(super) workloads: &'a [Workload],
    pub(super) trials_dir: PathBuf,
    sockets: SocketDir,
    /// Open-loop rate per workload, set by [`Sweep::calibrate`].
    rates: Vec<Option<f64>>,
    /// The closed-loop peaks of each workload's calibration.
    calibration: Vec<Vec<f64>>,
    /// A workload whose calibration or first default trial failed is not run again.
    dead: Vec<bool>,
    trials: Vec<Trial>,
    pub(super) chains: Vec<Vec<Point>>,
    /// Trials still planned per workload (for the progress line).
    left: Vec<usize>,
    started: Instant,
    notes: Vec<String>,
}

impl<'a> Sweep<'a> {
    /// A sweep of `plans` in `workloads`, none run yet, writing trial files into `DIR/trials/`.
    pub(super) fn new(
        cfg: &'a TuneConfig,
        server: &'a Server,
        workloads: &'a [Workload],
        plans: &[KnobPlan],
    ) -> Result<Sweep<'a>, String> {
        let per_workload = plan::trials_of(cfg, 1, plans);
        let n = workloads.len();
        Ok(Sweep {
            cfg,
            server,
            workloads,
            trials_dir: cfg.out.join("trials"),
            sockets: SocketDir::new()?,
            rates: vec![None; n],
            calibration: vec![Vec::new(); n],
            dead: vec![false; n],
            trials: Vec::new(),
            chains: vec![Vec::new(); n],
            left: vec![per_workload; n],
            started: Instant::now(),
            notes: Vec::new(),
        })
    }

    /// Prints what is about to run and how long it should take.
    pub(super) fn announce(&self, knobs: usize) {
        let cfg = self.cfg;
        eprintln!(
            "tune: {} workload(s) x {knobs} knob(s), {} round(s), {:.1} s + {:.1} s warmup per \
             run, 2 runs per trial; {} trials, about {}",
            self.workloads.len(),
            cfg.rounds,
            cfg.duration.as_secs_f64(),
            cfg.warmup.as_secs_f64(),
            self.total(),
            clock(plan::estimate(cfg, self.workloads.len(), self.total()))
        );
    }

    /// Calibrates every workload (see [`Sweep::calibrate`]).
    pub(super) fn calibrate_all(&mut self) {
        for wi in 0..self.workloads.len() {
            self.calibrate(wi);
        }
    }

    /// The rounds of the sweep: per round and workload, `D`, then each knob's values and `D`.
    pub(super) fn run_rounds(&mut self, plans: &[KnobPlan]) {
        let default = Setting::default_config();
        for round in 1..=self.cfg.rounds {
            for wi in 0..self.workloads.len() {
                self.step("sweep", round, wi, &default);
                for plan in plans {
                    for c in &plan.candidates {
                        self.step("sweep", round, wi, &c.setting);
                    }
                    self.step("sweep", round, wi, &default);
                }
            }
        }
    }

    /// The workloads not dropped.
    pub(super) fn live(&self) -> Vec<usize> {
        (0..self.workloads.len())
            .filter(|&w| !self.dead[w])
            .collect()
    }

    /// Nothing more will run (for the progress line's count).
    pub(super) fn skip_rest(&mut self) {
        self.left.iter_mut().for_each(|l| *l = 0);
    }

    /// Runs `together` against the default in every `live` workload (`D B D B ... D`) and
    /// returns the chains of this phase alone; the sweep's chains are kept.
    pub(super) fn run_combination(
        &mut self,
        live: &[usize],
        together: &Setting,
    ) -> Vec<Vec<Point>> {
        let sweep_chains =
            std::mem::replace(&mut self.chains, vec![Vec::new(); self.workloads.len()]);
        let default = Setting::default_config();
        for round in 1..=self.cfg.rounds {
            for &wi in live {
                if round == 1 {
                    self.step("combination", round, wi, &default);
                }
                self.step("combination", round, wi, together);
                self.step("combination", round, wi, &default);
            }
        }
        std::mem::replace(&mut self.chains, sweep_chains)
    }

    /// Each workload as run, every trial and the sweep's notes.
    pub(super) fn finish(self) -> (Vec<WorkloadInfo>, Vec<Trial>, Vec<String>) {
        let workloads = self
            .workloads
            .iter()
            .zip(self.rates)
            .zip(self.calibration)
            .map(|((w, rate), peaks)| WorkloadInfo {
                name: w.name(),
                description: w.description(),
                rate,
                calibration: peaks,
            })
            .collect();
        (workloads, self.trials, self.notes)
    }

    /// Trials done and still planned.
    fn total(&self) -> usize {
        self.trials.len() + self.left.iter().sum::<usize>()
    }

    /// Runs one trial of `setting` in workload `wi`, records it and prints a progress line.
    fn step(&mut self, phase: &'static str, round: usize, wi: usize, setting: &Setting) {
        if self.dead[wi] {
            return;
        }
        self.left[wi] = self.left[wi].saturating_sub(1);
        let w = self.workloads[wi];
        let label = setting.label();
        let step = self.trials.len() + 1;
        let name = format!("{step:04}-{}-{}", w.name(), file_name(&label));
        let config = self.trials_dir.join(format!("{name}.toml"));
        let log = self.trials_dir.join(format!("{name}.log"));
        let addr = self.address(w, &step.to_string());
        let outcome = addr.and_then(|addr| self.measure(wi, setting, &addr, &config, &log));
        let mut trial = Trial {
            step,
            phase,
            round,
            workload: w.name(),
            setting: label.clone(),
            keys: setting.keys(),
            rate: self.rates[wi],
            sample: None,
            error: None,
            closed: None,
            open: None,
            config: config.display().to_string(),
            log: log.display().to_string(),
        };
        match outcome {
            Ok((closed, open, sample)) => {
                trial.rate = open.rate;
                trial.sample = Some(sample);
                trial.closed = Some(closed);
                trial.open = Some(open);
            }
            Err(e) => {
                trial.error = Some(e.clone());
                let first_default =
                    setting.is_default() && !self.chains[wi].iter().any(|p| p.arm == DEFAULT);
                if first_default {
                    self.dead[wi] = true;
                    self.left[wi] = 0;
                    self.notes.push(format!(
                        "{}: the default configuration failed, workload dropped: {e}",
                        w.name()
                    ));
                } else {
                    self.notes
                        .push(format!("{} {label} (step {step}): {e}", w.name()));
                }
            }
        }
        let arm = if setting.is_default() {
            DEFAULT.to_owned()
        } else {
            label
        };
        let last_default = self.chains[wi]
            .iter()
            .rev()
            .filter(|p| p.arm == DEFAULT)
            .find_map(|p| p.sample);
        self.chains[wi].push(Point {
            arm,
            sample: trial.sample,
        });
        eprintln!("{}", self.progress_line(&trial, last_default.as_ref()));
        self.trials.push(trial);
    }

    fn progress_line(&self, t: &Trial, last_default: Option<&Sample>) -> String {
        // The current trial is counted in neither `trials` nor `left` yet.
        let done = self.trials.len() + 1;
        let total = self.total() + 1;
        let elapsed = self.started.elapsed();
        let eta = elapsed.mul_f64(total.saturating_sub(done) as f64 / done as f64);
        let head = format!(
            "[{done:>3}/{total}] {} elapsed, ETA {}  {} {} {}",
            clock(elapsed),
            clock(eta),
            t.phase,
            t.workload,
            t.setting
        );
        match (&t.sample, &t.error) {
            (Some(s), _) => {
                let ratio = last_default
                    .filter(|_| t.setting != DEFAULT)
                    .map_or(String::new(), |d| format!(" (x{:.3})", s.rps / d.rps));
                format!(
                    "{head}: {:.0} rps{ratio}; at {:.0}/s p50 {} us, p99 {} us, {:.2} us CPU/req{}",
                    s.rps,
                    t.rate.unwrap_or(0.0),
                    s.p50_us,
                    s.p99_us,
                    s.cpu_us_per_req,
                    if s.errors > 0 {
                        format!(", {} ERRORS", s.errors)
                    } else {
                        String::new()
                    }
                )
            }
            (None, Some(e)) => format!("{head}: FAILED: {e}"),
            (None, None) => head,
        }
    }

    /// A fresh address for a server: a free loopback port, or `NAME.sock` in the socket
    /// directory.
    fn address(&self, w: Workload, name: &str) -> Result<Addr, String> {
        match w.transport {
            Transport::Tcp => child::free_port().map(|p| Addr::Tcp(([127, 0, 0, 1], p).into())),
            Transport::Unix => Ok(Addr::Unix(self.sockets.path.join(format!("{name}.sock")))),
        }
    }

    /// Fixes workload `wi`'s open-loop rate: `calibration_runs` closed-loop runs of the default
    /// configuration, each on a fresh server, `fraction` of their median peak. A workload whose
    /// calibration fails is dropped with a note.
    fn calibrate(&mut self, wi: usize) {
        let w = self.workloads[wi];
        let setting = Setting::default_config();
        let name = format!("calibrate-{}", w.name());
        let config = self.trials_dir.join(format!("{name}.toml"));
        let log = self.trials_dir.join(format!("{name}.log"));
        let peaks = self.peaks(wi, &setting, &config, &log);
        match peaks {
            Ok(peaks) => {
                let rate = plan::open_loop_rate(self.cfg.fraction, &peaks);
                eprintln!(
                    "tune: {} open-loop rate {rate:.0}/s = {:.0} % of the median of the \
                     default's peaks {}",
                    w.name(),
                    100.0 * self.cfg.fraction,
                    peaks
                        .iter()
                        .map(|p| format!("{p:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.rates[wi] = Some(rate);
                self.calibration[wi] = peaks;
            }
            Err(e) => {
                self.dead[wi] = true;
                self.left[wi] = 0;
                self.notes.push(format!(
                    "{}: the default configuration failed in calibration, workload dropped: {e}",
                    w.name()
                ));
                eprintln!("tune: {}", self.notes[self.notes.len() - 1]);
            }
        }
    }

    /// `calibration_runs` closed-loop peaks of `setting`, each on a fresh server as in a trial
    /// (a server kept across runs measured up to 25 % faster than the trials' fresh ones).
    fn peaks(
        &self,
        wi: usize,
        setting: &Setting,
        config: &Path,
        log: &Path,
    ) -> Result<Vec<f64>, String> {
        (0..self.cfg.calibration_runs)
            .map(|i| {
                let addr = self.address(self.workloads[wi], &format!("calibrate-{i}"))?;
                let proc = self.start(setting, &addr, config, log)?;
                self.closed_loop(wi, &addr, &proc, log).map(|r| r.rps)
            })
            .collect()
    }

    /// Writes `setting`'s configuration file and starts a server with it on `addr`.
    fn start(
        &self,
        setting: &Setting,
        addr: &Addr,
        config: &Path,
        log: &Path,
    ) -> Result<child::Proc, String> {
        fs::write(config, knobs::trial_toml(setting, &addr.to_string()))
            .map_err(|e| format!("{}: {e}", config.display()))?;
        self.server
            .start(config, addr, self.cfg.server_cpu, log)
            .map_err(|e| format!("server did not start: {e}"))
    }

    /// One closed-loop run of workload `wi` against `proc`; an error if no request succeeded.
    fn closed_loop(
        &self,
        wi: usize,
        addr: &Addr,
        proc: &child::Proc,
        log: &Path,
    ) -> Result<Report, String> {
        let cfg = self.cfg;
        let timing = (cfg.warmup, cfg.duration);
        let load = self.workloads[wi].load(addr.clone(), None, timing, cfg.client_cpu, proc.pid());
        let closed = run(&load).map_err(|e| with_log(format!("closed loop: {e}"), proc, log))?;
        if closed.requests == 0 {
            return Err(with_log(
                format!(
                    "closed loop: no request succeeded ({} errors: {:?})",
                    closed.errors, closed.errors_by_kind
                ),
                proc,
                log,
            ));
        }
        Ok(closed)
    }

    /// Starts the server for `setting`, runs the closed then the open loop, stops the server.
    fn measure(
        &self,
        wi: usize,
        setting: &Setting,
        addr: &Addr,
        config: &Path,
        log: &Path,
    ) -> Result<(Report, Report, Sample), String> {
        let cfg = self.cfg;
        let w = &self.workloads[wi];
        let mut proc = self.start(setting, addr, config, log)?;
        let timing = (cfg.warmup, cfg.duration);
        let with_log = |e: String, proc: &child::Proc| with_log(e, proc, log);
        let closed = self.closed_loop(wi, addr, &proc, log)?;
        let rate = self.rates[wi].unwrap_or(cfg.fraction * closed.rps);
        let open = run(&w.load(addr.clone(), Some(rate), timing, cfg.client_cpu, proc.pid()))
            .map_err(|e| with_log(format!("open loop: {e}"), &proc))?;
        if let Some(status) = proc.exited() {
            return Err(with_log(format!("the server exited ({status})"), &proc));
        }
        let cpu = open.server_cpu_us_per_req.ok_or_else(|| {
            with_log(
                format!(
                    "open loop at {rate:.0}/s: no request succeeded ({} errors: {:?})",
                    open.errors, open.errors_by_kind
                ),
                &proc,
            )
        })?;
        drop(proc);
        let sample = Sample {
            rps: closed.rps,
            p50_us: open.p50_us,
            p99_us: open.p99_us,
            p999_us: open.p999_us,
            cpu_us_per_req: cpu,
            errors: closed.errors + open.errors,
            client_saturated: closed.client_saturated,
        };
        Ok((closed, open, sample))
    }
}

/// `e` with the tail of the server's log and the log's path.
fn with_log(e: String, proc: &child::Proc, log: &Path) -> String {
    format!("{e}; server log: {} ({})", proc.log_tail(5), log.display())
}
