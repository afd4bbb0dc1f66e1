//! `fcgi-loadtest tune` (and `fcgi-uring tune`): runs `fcgi-uring serve` with one knob varied
//! at a time, then with every knob's winner together, against the workloads of the front ends
//! that speak FastCGI; writes a table, `report.html`, `results.json` and a recommended
//! `fcgi-uring.toml`.
//!
//! Layers: [`knobs`] (the catalogue, settings, TOML) and [`workloads`] and [`decide`] (the rule)
//! are pure; [`output`] formats [`Results`]; [`server`] runs the binary under test; this module
//! plans the trials, runs them and keeps the books.
//!
//! How a trial runs: a fresh server (one worker, pinned to the server CPU, its configuration
//! file in `DIR/trials/`), a closed-loop run for the peak, then an open-loop run at
//! `--fraction` of the default configuration's peak for that workload (every setting faces the
//! same offered rate) for p50/p99/p99.9 and the server's CPU per request, then the server is
//! stopped. Per workload the default runs before the first knob and after each knob's values,
//! so every value is compared with the default measured just around it.
//!
//! The open-loop rate of a workload is fixed before the sweep: `--calibration-runs` closed-loop
//! runs of the default configuration (each on a fresh server, as trials run), and the rate is `--fraction` of their median.
//! One run's peak is too noisy on a shared machine: a lucky first run would set a rate that
//! later default runs cannot sustain, and every p99 would measure an overload.

pub mod decide;
pub mod knobs;
pub mod output;
pub mod server;
pub mod workloads;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fcgi_uring::Addr;
use serde::Serialize;

use crate::child;
use crate::run::run;
use crate::stats::Report;
use decide::{DEFAULT, Judged, Noise, Point, Ratios, Rule, Sample, Verdict};
use knobs::{Setting, Value};
use server::Server;
use workloads::{Transport, Workload};

/// What `tune` needs.
#[derive(Debug, Clone)]
pub struct TuneConfig {
    /// The `fcgi-uring` binary under test.
    pub server: PathBuf,
    pub out: PathBuf,
    /// Few values, short runs, two workloads, trimmed to `budget`.
    pub quick: bool,
    /// Workload filter (see [`workloads::select`]); empty: all, or the quick ones.
    pub workloads: Vec<String>,
    /// Knob filter (see [`knobs::select`]); empty: all.
    pub knobs: Vec<String>,
    pub duration: Duration,
    pub warmup: Duration,
    pub rounds: usize,
    /// Open-loop rate as a fraction of the default configuration's peak.
    pub fraction: f64,
    /// Closed-loop runs of the default configuration whose median peak sets the open-loop
    /// rate of a workload.
    pub calibration_runs: usize,
    pub server_cpu: usize,
    pub client_cpu: usize,
    pub rule: Rule,
    /// Trim the plan (workloads, then knobs) until its estimate fits.
    pub budget: Option<Duration>,
}

impl TuneConfig {
    /// The defaults of the full sweep, or of `--quick`.
    pub fn new(server: PathBuf, quick: bool) -> TuneConfig {
        TuneConfig {
            server,
            out: PathBuf::from("tune-out"),
            quick,
            workloads: Vec::new(),
            knobs: Vec::new(),
            duration: Duration::from_secs_f64(if quick { 1.0 } else { 5.0 }),
            warmup: Duration::from_secs_f64(if quick { 0.3 } else { 1.0 }),
            rounds: if quick { 1 } else { 3 },
            fraction: 0.7,
            calibration_runs: 3,
            server_cpu: 0,
            client_cpu: 1,
            rule: Rule::default(),
            budget: quick.then(|| Duration::from_secs(95)),
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.rounds == 0 {
            return Err("--rounds must be at least 1".into());
        }
        if self.calibration_runs == 0 {
            return Err("--calibration-runs must be at least 1".into());
        }
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err("--fraction must be in (0, 1]".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        let cores: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .iter()
            .map(|c| c.id)
            .collect();
        for (flag, cpu) in [
            ("--server-cpu", self.server_cpu),
            ("--client-cpu", self.client_cpu),
        ] {
            if !cores.is_empty() && !cores.contains(&cpu) {
                return Err(format!(
                    "{flag} {cpu}: this process may run on CPUs {cores:?} only"
                ));
            }
        }
        Ok(())
    }
}

/// A value of a knob to try, as a whole setting (rules applied).
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub value: Value,
    pub setting: Setting,
    pub label: String,
}

/// A knob the server knows, its default, and the values to try.
#[derive(Debug, Clone, Serialize)]
pub struct KnobPlan {
    pub name: String,
    pub description: &'static str,
    pub default: Value,
    pub candidates: Vec<Candidate>,
}

/// One line of the sweep's table: a setting in a workload against the default.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    /// `None` for the default's own row.
    pub knob: Option<String>,
    pub setting: String,
    pub ratios: Ratios,
    pub verdict: Option<Verdict>,
    pub noise: Noise,
}

/// What was decided for a knob.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub knob: String,
    pub default: Value,
    /// The value recommended (the default when nothing beat it).
    pub value: Value,
    pub changed: bool,
    /// Each candidate's label and judgement (verdict per workload, score).
    pub judged: Vec<(String, Judged)>,
}

/// The winners together against the default.
#[derive(Debug, Clone, Serialize)]
pub struct Combination {
    pub setting: Setting,
    pub label: String,
    /// The default's runs of this phase, per workload (with their noise).
    pub default_rows: Vec<Row>,
    pub rows: Vec<Row>,
    /// No workload worse, at p99 or failed.
    pub accepted: bool,
}

/// A workload as run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadInfo {
    pub name: String,
    pub description: String,
    /// The open-loop rate (`fraction` of the median of the calibration peaks); `None` if
    /// calibration failed.
    pub rate: Option<f64>,
    /// The default configuration's closed-loop peaks (requests/s) that set `rate`.
    pub calibration: Vec<f64>,
}

/// One trial as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub step: usize,
    /// `sweep` or `combination`.
    pub phase: &'static str,
    pub round: usize,
    pub workload: String,
    pub setting: String,
    pub keys: Vec<(String, Value)>,
    pub rate: Option<f64>,
    pub sample: Option<Sample>,
    pub error: Option<String>,
    pub closed: Option<Report>,
    pub open: Option<Report>,
    /// The trial's configuration file and server log, in `DIR/trials/`.
    pub config: String,
    pub log: String,
}

/// Everything `tune` measured and decided; `results.json` is this.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub server: String,
    pub server_cpu: usize,
    pub client_cpu: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub rounds: usize,
    pub fraction: f64,
    pub rule: Rule,
    pub quick: bool,
    /// Seconds since the epoch at the start, and the run's wall time.
    pub started_unix: u64,
    pub wall_s: f64,
    /// Skipped knobs and values, trimmed plans, failures, fallbacks.
    pub notes: Vec<String>,
    pub workloads: Vec<WorkloadInfo>,
    pub knobs: Vec<KnobPlan>,
    pub rows: Vec<Row>,
    pub decisions: Vec<Decision>,
    pub combination: Option<Combination>,
    /// The recommended value of every knob swept, and the keys rules added.
    pub recommendation: Setting,
    pub trials: Vec<Trial>,
}

/// Runs the sweep, writes the outputs into `cfg.out` and returns the results (the table and
/// the recommendation are printed by the caller from them).
pub fn tune(cfg: &TuneConfig) -> Result<Results, String> {
    cfg.check()?;
    let started = Instant::now();
    let server = Server::new(cfg.server.clone())?;
    let trials_dir = cfg.out.join("trials");
    fs::create_dir_all(&trials_dir).map_err(|e| format!("{}: {e}", trials_dir.display()))?;
    let sockets = SocketDir::new()?;
    // This thread runs the client's progress watch: keep it off the server's core.
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cfg.client_cpu }) {
        eprintln!("tune: warning: could not pin to CPU {}", cfg.client_cpu);
    }
    crate::sys::kill_children_on_signal();

    let mut notes = Vec::new();
    let defaults = knobs::parse_defaults(
        &server
            .print_config(None)
            .map_err(|e| format!("{} serve --print-config failed: {e}", server.path.display()))?,
    )?;
    let mut workloads = select_workloads(cfg)?;
    let mut plans = probe_knobs(cfg, &server, &defaults, &mut notes)?;
    if let Some(budget) = cfg.budget {
        trim(cfg, budget, &mut workloads, &mut plans, &mut notes);
    }
    let per_round = 1 + plans.iter().map(|p| p.candidates.len() + 1).sum::<usize>();
    let combination_steps = 2 * cfg.rounds + 1;
    let mut sweep = Sweep {
        cfg,
        server: &server,
        workloads: &workloads,
        trials_dir,
        sockets: &sockets,
        rates: vec![None; workloads.len()],
        calibration: vec![Vec::new(); workloads.len()],
        dead: vec![false; workloads.len()],
        trials: Vec::new(),
        chains: vec![Vec::new(); workloads.len()],
        left: vec![cfg.rounds * per_round + combination_steps; workloads.len()],
        started: Instant::now(),
        notes: Vec::new(),
    };
    eprintln!(
        "tune: {} workload(s) x {} knob(s), {} round(s), {:.1} s + {:.1} s warmup per run, \
         2 runs per trial; {} trials, about {}",
        workloads.len(),
        plans.len(),
        cfg.rounds,
        cfg.duration.as_secs_f64(),
        cfg.warmup.as_secs_f64(),
        sweep.total(),
        clock(estimate(cfg, workloads.len(), sweep.total()))
    );
    for wi in 0..workloads.len() {
        sweep.calibrate(wi);
    }
    let default = Setting::default_config();
    for round in 1..=cfg.rounds {
        for wi in 0..workloads.len() {
            sweep.step("sweep", round, wi, &default);
            for plan in &plans {
                for c in &plan.candidates {
                    sweep.step("sweep", round, wi, &c.setting);
                }
                sweep.step("sweep", round, wi, &default);
            }
        }
    }
    let live: Vec<usize> = (0..workloads.len()).filter(|&w| !sweep.dead[w]).collect();
    if live.is_empty() {
        return Err(format!(
            "the default configuration failed in every workload: {}",
            sweep.notes.join("; ")
        ));
    }
    let (rows, decisions) = analyse(&sweep.chains, &workloads, &live, &plans, &cfg.rule);

    let (recommended, combination) = confirm(&mut sweep, &live, &decisions, &defaults, &mut notes);
    notes.append(&mut sweep.notes);
    let recommendation = complete(&recommended, &plans, &defaults);

    let workload_info = workloads
        .iter()
        .zip(&sweep.rates)
        .zip(&sweep.calibration)
        .map(|((w, rate), peaks)| WorkloadInfo {
            name: w.name(),
            description: w.description(),
            rate: *rate,
            calibration: peaks.clone(),
        })
        .collect();
    let results = Results {
        server: server.path.display().to_string(),
        server_cpu: cfg.server_cpu,
        client_cpu: cfg.client_cpu,
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
        rounds: cfg.rounds,
        fraction: cfg.fraction,
        rule: cfg.rule,
        quick: cfg.quick,
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(started.elapsed().as_secs()),
        wall_s: started.elapsed().as_secs_f64(),
        notes,
        workloads: workload_info,
        knobs: plans,
        rows,
        decisions,
        combination,
        recommendation,
        trials: std::mem::take(&mut sweep.trials),
    };
    write_outputs(cfg, &server, &results)?;
    Ok(results)
}

/// `recommended` with every swept knob that it leaves alone at its default, in catalogue order,
/// rules applied. A key a rule sets is not written as its default (that would block the rule:
/// sqpoll = true needs defer_taskrun = false).
fn complete(
    recommended: &Setting,
    plans: &[KnobPlan],
    defaults: &BTreeMap<String, Value>,
) -> Setting {
    let mut all = recommended.overrides.clone();
    let set = recommended.keys();
    for p in plans {
        if !set.iter().any(|(k, _)| *k == p.name) {
            all.push((p.name.clone(), p.default));
        }
    }
    let order = |k: &str| knobs::KNOBS.iter().position(|n| n.name() == k);
    all.sort_by_key(|(k, _)| order(k));
    Setting::new(all, defaults)
}

/// Runs the knobs' winners together against the default in every live workload
/// (`D B D B ... D`) and returns the setting to recommend: the winners together when no workload
/// is worse, else the best single winner other than them, or the defaults.
fn confirm(
    sweep: &mut Sweep<'_>,
    live: &[usize],
    decisions: &[Decision],
    defaults: &BTreeMap<String, Value>,
    notes: &mut Vec<String>,
) -> (Setting, Option<Combination>) {
    let cfg = sweep.cfg;
    let winners: Vec<(String, Value)> = decisions
        .iter()
        .filter(|d| d.changed)
        .map(|d| (d.knob.clone(), d.value))
        .collect();
    let together = Setting::new(winners, defaults);
    let label = together.label();
    if together.is_default() {
        sweep.left.iter_mut().for_each(|l| *l = 0);
        notes.push(
            "no value beat the default by more than the measured noise: the recommendation is the defaults"
                .into(),
        );
        return (together, None);
    }
    if let Err(e) = probe(sweep.server, &sweep.trials_dir, &together) {
        sweep.left.iter_mut().for_each(|l| *l = 0);
        let instead = best_single(decisions, defaults, &label);
        notes.push(format!(
            "the server refuses the winners together ({label}): {e}; recommended instead: {}",
            instead.label()
        ));
        return (instead, None);
    }
    let sweep_chains =
        std::mem::replace(&mut sweep.chains, vec![Vec::new(); sweep.workloads.len()]);
    let default = Setting::default_config();
    for round in 1..=cfg.rounds {
        for &wi in live {
            if round == 1 {
                sweep.step("combination", round, wi, &default);
            }
            sweep.step("combination", round, wi, &together);
            sweep.step("combination", round, wi, &default);
        }
    }
    let chains = std::mem::replace(&mut sweep.chains, sweep_chains);
    let (mut rows, mut default_rows) = (Vec::new(), Vec::new());
    for &wi in live {
        let noise = decide::noise(&chains[wi]);
        if let Some(r) = decide::ratios(&chains[wi], DEFAULT) {
            default_rows.push(Row {
                workload: sweep.workloads[wi].name(),
                knob: None,
                setting: DEFAULT.into(),
                verdict: None,
                ratios: r,
                noise,
            });
        }
        if let Some(r) = decide::ratios(&chains[wi], &label) {
            rows.push(Row {
                workload: sweep.workloads[wi].name(),
                knob: None,
                setting: label.clone(),
                verdict: Some(decide::verdict(&r, &noise, &cfg.rule)),
                ratios: r,
                noise,
            });
        }
    }
    let accepted = !rows.is_empty()
        && rows
            .iter()
            .all(|r| matches!(r.verdict, Some(Verdict::Better | Verdict::Same)));
    let recommended = if accepted {
        if !rows.iter().any(|r| r.verdict == Some(Verdict::Better)) {
            notes.push(format!(
                "the winners together ({label}) were within the noise of the default in every \
                 workload: their gain is not confirmed"
            ));
        }
        together.clone()
    } else {
        let instead = best_single(decisions, defaults, &label);
        notes.push(format!(
            "the winners together ({label}) were worse than the default (or failed) in some \
             workload when measured again: recommended instead: {}",
            instead.label()
        ));
        instead
    };
    let combination = Combination {
        setting: together,
        label,
        default_rows,
        rows,
        accepted,
    };
    (recommended, Some(combination))
}

fn select_workloads(cfg: &TuneConfig) -> Result<Vec<Workload>, String> {
    if cfg.workloads.is_empty() && cfg.quick {
        let quick: Vec<String> = workloads::QUICK.iter().map(|s| s.to_string()).collect();
        return workloads::select(&quick);
    }
    workloads::select(&cfg.workloads)
}

/// `setting` as a probe file in `dir`, checked by `serve --config F --print-config`.
fn probe(server: &Server, dir: &Path, setting: &Setting) -> Result<String, String> {
    let path = dir.join(format!("probe-{}.toml", file_name(&setting.label())));
    fs::write(&path, knobs::probe_toml(setting)).map_err(|e| format!("{}: {e}", path.display()))?;
    server.print_config(Some(&path))
}

/// The selected knobs the server has, with the values it accepts (each checked with
/// `--print-config`); a knob or value it refuses is skipped with a note.
fn probe_knobs(
    cfg: &TuneConfig,
    server: &Server,
    defaults: &BTreeMap<String, Value>,
    notes: &mut Vec<String>,
) -> Result<Vec<KnobPlan>, String> {
    let dir = cfg.out.join("trials");
    let mut plans = Vec::new();
    for knob in knobs::select(&cfg.knobs)? {
        let values = if cfg.quick { knob.quick } else { knob.values };
        if values.is_empty() {
            continue;
        }
        let name = knob.name();
        let Some(&default) = defaults.get(&name) else {
            let note = format!("{name}: skipped, this server does not have it");
            eprintln!("tune: {note}");
            notes.push(note);
            continue;
        };
        let mut candidates = Vec::new();
        for &value in values.iter().filter(|v| **v != default) {
            let setting = Setting::new(vec![(name.clone(), value)], defaults);
            match probe(server, &dir, &setting) {
                Ok(printed) => {
                    let effective = knobs::parse_defaults(&printed)?;
                    if effective.get(&name) != Some(&value) {
                        let note = format!(
                            "{name} = {value}: skipped, the server reads it as {:?}",
                            effective.get(&name)
                        );
                        eprintln!("tune: {note}");
                        notes.push(note);
                        continue;
                    }
                    candidates.push(Candidate {
                        value,
                        label: setting.label(),
                        setting,
                    });
                }
                Err(e) => {
                    let note = format!("{name} = {value}: skipped, the server refuses it: {e}");
                    eprintln!("tune: {note}");
                    notes.push(note);
                }
            }
        }
        if !candidates.is_empty() {
            plans.push(KnobPlan {
                name,
                description: knob.description,
                default,
                candidates,
            });
        }
    }
    if plans.is_empty() {
        return Err("no knob to sweep: every selected knob was skipped (see above)".into());
    }
    Ok(plans)
}

/// Fixed cost per trial besides the two runs: start, probe connection, stop.
const TRIAL_OVERHEAD: Duration = Duration::from_millis(400);

/// The estimated time of `trials` trials.
/// `e` with the tail of the server's log and the log's path.
fn with_log(e: String, proc: &child::Proc, log: &Path) -> String {
    format!("{e}; server log: {} ({})", proc.log_tail(5), log.display())
}

/// Wall time of `trials` trials in `workloads` workloads, calibration included.
fn estimate(cfg: &TuneConfig, workloads: usize, trials: usize) -> Duration {
    // Each calibration run starts and stops its own server, as a trial does.
    let calibration =
        (cfg.warmup + cfg.duration + TRIAL_OVERHEAD) * (cfg.calibration_runs * workloads) as u32;
    (2 * (cfg.warmup + cfg.duration) + TRIAL_OVERHEAD) * trials as u32 + calibration
}

fn trials_of(cfg: &TuneConfig, workloads: usize, plans: &[KnobPlan]) -> usize {
    let per_round = 1 + plans.iter().map(|p| p.candidates.len() + 1).sum::<usize>();
    workloads * (cfg.rounds * per_round + 2 * cfg.rounds + 1)
}

/// Drops workloads (down to one), then knobs (down to one), from the end until the estimate
/// fits `budget`; notes what was dropped.
fn trim(
    cfg: &TuneConfig,
    budget: Duration,
    workloads: &mut Vec<Workload>,
    plans: &mut Vec<KnobPlan>,
    notes: &mut Vec<String>,
) {
    let over = |w: usize, p: &[KnobPlan]| estimate(cfg, w, trials_of(cfg, w, p)) > budget;
    while workloads.len() > 1 && over(workloads.len(), plans) {
        let w = workloads.pop().map(|w| w.name()).unwrap_or_default();
        notes.push(format!("{w}: left out to fit {} s", budget.as_secs()));
    }
    while plans.len() > 1 && over(workloads.len(), plans) {
        let p = plans.pop().map(|p| p.name).unwrap_or_default();
        notes.push(format!("{p}: left out to fit {} s", budget.as_secs()));
    }
    for n in notes.iter().filter(|n| n.contains("left out")) {
        eprintln!("tune: {n}");
    }
}

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
struct Sweep<'a> {
    cfg: &'a TuneConfig,
    server: &'a Server,
    workloads: &'a [Workload],
    trials_dir: PathBuf,
    sockets: &'a SocketDir,
    /// Open-loop rate per workload, set by [`Sweep::calibrate`].
    rates: Vec<Option<f64>>,
    /// The closed-loop peaks of each workload's calibration.
    calibration: Vec<Vec<f64>>,
    /// A workload whose calibration or first default trial failed is not run again.
    dead: Vec<bool>,
    trials: Vec<Trial>,
    chains: Vec<Vec<Point>>,
    /// Trials still planned per workload (for the progress line).
    left: Vec<usize>,
    started: Instant,
    notes: Vec<String>,
}

impl Sweep<'_> {
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
                let rate = self.cfg.fraction * decide::median(peaks.clone());
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

/// The rows of the sweep's table and the decision per knob.
fn analyse(
    chains: &[Vec<Point>],
    workloads: &[Workload],
    live: &[usize],
    plans: &[KnobPlan],
    rule: &Rule,
) -> (Vec<Row>, Vec<Decision>) {
    let noise: Vec<Noise> = chains.iter().map(|c| decide::noise(c)).collect();
    let mut rows = Vec::new();
    for &wi in live {
        if let Some(r) = decide::ratios(&chains[wi], DEFAULT) {
            rows.push(Row {
                workload: workloads[wi].name(),
                knob: None,
                setting: DEFAULT.into(),
                ratios: r,
                verdict: None,
                noise: noise[wi],
            });
        }
    }
    let mut decisions = Vec::new();
    for plan in plans {
        let mut judged = Vec::new();
        for c in &plan.candidates {
            let mut verdicts = Vec::new();
            let mut ratios = Vec::new();
            for &wi in live {
                let Some(r) = decide::ratios(&chains[wi], &c.label) else {
                    continue;
                };
                let v = decide::verdict(&r, &noise[wi], rule);
                verdicts.push(v);
                if v != Verdict::Failed {
                    ratios.push(r.clone());
                }
                rows.push(Row {
                    workload: workloads[wi].name(),
                    knob: Some(plan.name.clone()),
                    setting: c.label.clone(),
                    ratios: r,
                    verdict: Some(v),
                    noise: noise[wi],
                });
            }
            let score = decide::score(&ratios.iter().collect::<Vec<_>>());
            judged.push((c.label.clone(), Judged { verdicts, score }));
        }
        let chosen = decide::choose(&judged.iter().map(|(_, j)| j.clone()).collect::<Vec<_>>());
        let value = chosen.map_or(plan.default, |i| plan.candidates[i].value);
        decisions.push(Decision {
            knob: plan.name.clone(),
            default: plan.default,
            value,
            changed: chosen.is_some(),
            judged,
        });
    }
    // Rows grouped by workload, the default first, then the knobs in sweep order.
    let order: Vec<String> = live.iter().map(|&w| workloads[w].name()).collect();
    rows.sort_by_key(|r| order.iter().position(|w| *w == r.workload));
    (rows, decisions)
}

/// The single winner with the highest score, alone, other than the setting `refused`; the
/// defaults when there is none (a lone winner that failed its confirmation is not kept).
fn best_single(
    decisions: &[Decision],
    defaults: &BTreeMap<String, Value>,
    refused: &str,
) -> Setting {
    let best = decisions
        .iter()
        .filter(|d| d.changed)
        .filter_map(|d| {
            let label = Setting::new(vec![(d.knob.clone(), d.value)], defaults).label();
            if label == refused {
                return None;
            }
            d.judged
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, j)| (d, j.score))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match best {
        Some((d, _)) => Setting::new(vec![(d.knob.clone(), d.value)], defaults),
        None => Setting::default_config(),
    }
}

/// Writes `results.json`, `table.txt`, `report.html` and `fcgi-uring.toml` into the output
/// directory, and checks that the server accepts the recommendation as it is.
fn write_outputs(cfg: &TuneConfig, server: &Server, results: &Results) -> Result<(), String> {
    let write = |name: &str, text: &str| {
        let path = cfg.out.join(name);
        fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(
        "results.json",
        &serde_json::to_string_pretty(results).map_err(|e| e.to_string())?,
    )?;
    write("table.txt", &output::table(results))?;
    write("report.html", &output::html(results))?;
    let toml_path = cfg.out.join("fcgi-uring.toml");
    write("fcgi-uring.toml", &output::recommendation_toml(results))?;
    let printed = server.print_config(Some(&toml_path)).map_err(|e| {
        format!(
            "the server refuses the recommended {}: {e}",
            toml_path.display()
        )
    })?;
    let effective = knobs::parse_defaults(&printed)?;
    for (key, value) in results.recommendation.keys() {
        if effective.get(&key) != Some(&value) {
            return Err(format!(
                "{}: the server reads {key} as {:?}, not {value}",
                toml_path.display(),
                effective.get(&key)
            ));
        }
    }
    Ok(())
}

/// A label as part of a file name.
fn file_name(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '=' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `m:ss` (or `h:mm:ss`).
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Knob plans for tests of the writers.
#[cfg(test)]
pub(crate) fn knob(name: &str) -> &'static knobs::Knob {
    knobs::KNOBS
        .iter()
        .find(|k| k.name() == name)
        .expect("a known knob")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_and_file_names() {
        assert_eq!(clock(Duration::from_secs(59)), "0:59");
        assert_eq!(clock(Duration::from_secs(3 * 3600 + 61)), "3:01:01");
        assert_eq!(
            file_name("sqpoll=true (+defer_taskrun=false)"),
            "sqpoll=true___defer_taskrun=false_"
        );
    }

    /// A fake server that knows completions_per_turn and defer_taskrun (refusing false), and
    /// echoes a probe file back as its effective configuration.
    const FAKE_SERVER: &str = r#"#!/bin/sh
case "$*" in
  *--config*)
    if grep -q 'defer_taskrun = false' "$3"; then
      echo "fcgi-uring: $3:5: ring.defer_taskrun: not on this kernel" >&2; exit 1
    fi
    cat "$3" ;;
  *) printf '[server]\nworkers = 0\n[ring]\ndefer_taskrun = true\ncompletions_per_turn = 32\n' ;;
esac
"#;

    #[test]
    fn probing_skips_what_the_server_lacks_or_refuses() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("tune-probe-{}", std::process::id()));
        fs::create_dir_all(dir.join("trials")).unwrap();
        let bin = dir.join("fake-fcgi-uring");
        fs::write(&bin, FAKE_SERVER).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let server = Server::new(bin.clone()).unwrap();
        let defaults = knobs::parse_defaults(&server.print_config(None).unwrap()).unwrap();
        let mut cfg = TuneConfig::new(bin, true);
        cfg.out = dir.clone();
        cfg.knobs = vec![
            "completions_per_turn".into(),
            "defer_taskrun".into(),
            "sqpoll".into(),
        ];
        let mut notes = Vec::new();
        let plans = probe_knobs(&cfg, &server, &defaults, &mut notes).unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(plans.len(), 1, "{plans:?}");
        assert_eq!(plans[0].name, "ring.completions_per_turn");
        assert_eq!(plans[0].default, Value::Int(32));
        let values: Vec<Value> = plans[0].candidates.iter().map(|c| c.value).collect();
        assert_eq!(values, [Value::Int(8), Value::Int(128)]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with(
                "ring.defer_taskrun = false: skipped, the server refuses it: fcgi-uring:"
            ),
            "{notes:?}"
        );
        assert!(notes[0].contains("not on this kernel"), "{notes:?}");
        assert_eq!(
            notes[1],
            "ring.sqpoll: skipped, this server does not have it"
        );
    }

    #[test]
    fn the_fallback_is_another_single_winner_or_the_defaults() {
        let defaults = knobs::parse_defaults(&fcgi_uring_cli::config_file::to_toml(
            &fcgi_uring::Config::default(),
        ))
        .unwrap();
        let decision = |knob: &str, value: Value, label: &str, score: f64| Decision {
            knob: knob.into(),
            default: defaults[knob],
            value,
            changed: true,
            judged: vec![(
                label.into(),
                Judged {
                    verdicts: vec![Verdict::Better],
                    score,
                },
            )],
        };
        let cpt = decision(
            "ring.completions_per_turn",
            Value::Int(128),
            "completions_per_turn=128",
            1.2,
        );
        let dt = decision(
            "ring.defer_taskrun",
            Value::Bool(false),
            "defer_taskrun=false",
            1.1,
        );
        // A lone winner refused when measured again: back to the defaults.
        let alone = best_single(
            std::slice::from_ref(&cpt),
            &defaults,
            "completions_per_turn=128",
        );
        assert!(alone.is_default());
        // Two winners refused together: the best one alone.
        let two = [dt, cpt];
        let together = "completions_per_turn=128 defer_taskrun=false";
        assert_eq!(
            best_single(&two, &defaults, together).label(),
            "completions_per_turn=128"
        );
        // The server refused the best one: the next.
        assert_eq!(
            best_single(&two, &defaults, "completions_per_turn=128").label(),
            "defer_taskrun=false"
        );
    }

    #[test]
    fn the_recommendation_names_every_swept_knob_and_keeps_rules() {
        let mut defaults = knobs::parse_defaults(&fcgi_uring_cli::config_file::to_toml(
            &fcgi_uring::Config::default(),
        ))
        .unwrap();
        defaults.insert("ring.sqpoll".into(), Value::Bool(false));
        defaults.insert("ring.defer_taskrun".into(), Value::Bool(true));
        let plan = |name: &str| KnobPlan {
            name: name.into(),
            description: "",
            default: defaults[name],
            candidates: Vec::new(),
        };
        let plans = [
            plan("ring.sqpoll"),
            plan("ring.completions_per_turn"),
            plan("ring.defer_taskrun"),
        ];
        let won = Setting::new(vec![("ring.sqpoll".into(), Value::Bool(true))], &defaults);
        let r = complete(&won, &plans, &defaults);
        assert_eq!(
            r.keys(),
            [
                ("ring.completions_per_turn".to_owned(), Value::Int(32)),
                ("ring.sqpoll".to_owned(), Value::Bool(true)),
                ("ring.defer_taskrun".to_owned(), Value::Bool(false)),
                ("ring.coop_taskrun".to_owned(), Value::Bool(false)),
            ]
        );
        assert_eq!(
            r.implied[0].why,
            "sqpoll = true needs defer_taskrun = false"
        );
        let none = complete(&Setting::default_config(), &plans, &defaults);
        assert_eq!(none.overrides.len(), 3);
        assert!(none.implied.is_empty());
    }

    #[test]
    fn trimming_keeps_one_workload_and_one_knob() {
        let mut cfg = TuneConfig::new(PathBuf::from("x"), true);
        cfg.rounds = 1;
        let defaults = knobs::parse_defaults(&fcgi_uring_cli::config_file::to_toml(
            &fcgi_uring::Config::default(),
        ))
        .unwrap();
        let plan = |name: &str, values: &[Value]| KnobPlan {
            name: name.into(),
            description: knob(name).description,
            default: defaults[name],
            candidates: values
                .iter()
                .map(|v| {
                    let setting = Setting::new(vec![(name.into(), *v)], &defaults);
                    Candidate {
                        value: *v,
                        label: setting.label(),
                        setting,
                    }
                })
                .collect(),
        };
        let mut plans = vec![
            plan(
                "ring.completions_per_turn",
                &[Value::Int(8), Value::Int(128)],
            ),
            plan("ring.defer_taskrun", &[Value::Bool(false)]),
        ];
        let mut ws = workloads::select(&["keepconn-tcp".into(), "mux16-tcp".into()]).unwrap();
        let mut notes = Vec::new();
        // 2 workloads x (1 + 3 + 2 + 3) trials x 3 s: fits 95 s.
        trim(
            &cfg,
            Duration::from_secs(95),
            &mut ws,
            &mut plans,
            &mut notes,
        );
        assert_eq!((ws.len(), plans.len()), (2, 2));
        assert!(notes.is_empty());
        trim(
            &cfg,
            Duration::from_secs(40),
            &mut ws,
            &mut plans,
            &mut notes,
        );
        assert_eq!((ws.len(), plans.len()), (1, 2), "{notes:?}");
        trim(
            &cfg,
            Duration::from_secs(1),
            &mut ws,
            &mut plans,
            &mut notes,
        );
        assert_eq!((ws.len(), plans.len()), (1, 1));
        assert_eq!(notes.len(), 2);
        assert!(notes[0].starts_with("mux16-tcp: left out"), "{notes:?}");
    }
}
