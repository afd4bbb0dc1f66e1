//! `fcgi-loadtest tune` (and `fcgi-uring tune`): runs `fcgi-uring serve` with one knob varied
//! at a time, then with every knob's winner together, against the workloads of the front ends
//! that speak FastCGI; writes a table, `report.html`, `results.json` and a recommended
//! `fcgi-uring.toml`.
//!
//! Layers, each in its own file:
//! - pure, no IO: [`knobs`] (the catalogue, settings, rules between keys, TOML),
//!   [`workloads`], [`decide`] (the statistical rule: noise, ratios, verdicts), `analysis`
//!   (from chains to rows, decisions and the recommendation), [`output`] (table, HTML, TOML);
//! - [`plan`]: what to run (workloads, the knobs and values the server accepts, the time
//!   budget, the open-loop rate rule);
//! - `sweep`: running the trials against [`server`] (the binary under test);
//! - [`results`]: the data model of `results.json` and the writing of every output;
//! - [`cli`]: the `tune` command line, shared by `fcgi-loadtest` and `fcgi-uring`;
//! - this module: [`TuneConfig`] and [`tune`], which runs the phases in order.
//!
//! The load is generated in this process by the load generator's engine (one thread pinned to
//! `--client-cpu`); the server is a child process pinned to `--server-cpu`.

mod analysis;
pub mod cli;
pub mod decide;
pub mod knobs;
pub mod output;
pub mod plan;
pub mod results;
pub mod server;
mod sweep;
pub mod workloads;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use decide::Rule;
use knobs::{Setting, Value};
pub use plan::{Candidate, KnobPlan};
pub use results::{Combination, Decision, Results, Row, Trial, WorkloadInfo};
use server::Server;
use sweep::Sweep;

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

/// Runs the sweep, writes the outputs into `cfg.out` and returns the results (the table and
/// the recommendation are printed by the caller from them).
pub fn tune(cfg: &TuneConfig) -> Result<Results, String> {
    cfg.check()?;
    let started = Instant::now();
    let server = Server::new(cfg.server.clone())?;
    let trials_dir = cfg.out.join("trials");
    fs::create_dir_all(&trials_dir).map_err(|e| format!("{}: {e}", trials_dir.display()))?;
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
    let mut workloads = plan::select_workloads(cfg)?;
    let mut plans = plan::probe_knobs(cfg, &server, &defaults, &mut notes)?;
    if let Some(budget) = cfg.budget {
        plan::trim(cfg, budget, &mut workloads, &mut plans, &mut notes);
    }
    let mut sweep = Sweep::new(cfg, &server, &workloads, &plans)?;
    sweep.announce(plans.len());
    sweep.calibrate_all();
    sweep.run_rounds(&plans);
    let live = sweep.live();
    if live.is_empty() {
        let (_, _, failures) = sweep.finish();
        return Err(format!(
            "the default configuration failed in every workload: {}",
            failures.join("; ")
        ));
    }
    let (rows, decisions) = analysis::analyse(&sweep.chains, &workloads, &live, &plans, &cfg.rule);
    let (recommended, combination) = confirm(&mut sweep, &live, &decisions, &defaults, &mut notes);
    let recommendation = analysis::complete(&recommended, &plans, &defaults);
    let (workload_info, trials, mut sweep_notes) = sweep.finish();
    notes.append(&mut sweep_notes);
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
        trials,
    };
    results::write(&cfg.out, &server, &results)?;
    Ok(results)
}

/// Runs the knobs' winners together against the default in every live workload and returns the
/// setting to recommend (see [`analysis::recommend`]); the defaults when nothing won, the best
/// single winner when the server refuses the winners together.
fn confirm(
    sweep: &mut Sweep<'_>,
    live: &[usize],
    decisions: &[Decision],
    defaults: &BTreeMap<String, Value>,
    notes: &mut Vec<String>,
) -> (Setting, Option<Combination>) {
    let together = analysis::winners_together(decisions, defaults);
    if together.is_default() {
        sweep.skip_rest();
        notes.push(
            "no value beat the default by more than the measured noise: the recommendation is the defaults"
                .into(),
        );
        return (together, None);
    }
    let label = together.label();
    if let Err(e) = plan::probe(sweep.server, &sweep.trials_dir, &together) {
        sweep.skip_rest();
        let instead = analysis::best_single(decisions, defaults, &label);
        notes.push(format!(
            "the server refuses the winners together ({label}): {e}; recommended instead: {}",
            instead.label()
        ));
        return (instead, None);
    }
    let chains = sweep.run_combination(live, &together);
    let rule = &sweep.cfg.rule;
    let combination = analysis::combination(&chains, sweep.workloads, live, together, rule);
    let recommended = analysis::recommend(&combination, decisions, defaults, notes);
    (recommended, Some(combination))
}

/// A label as part of a file name.
pub(crate) fn file_name(label: &str) -> String {
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
}
