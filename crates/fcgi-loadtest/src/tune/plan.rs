//! What the sweep will run, decided before any trial: the workloads, the knobs this server has
//! with the values it accepts (each checked with `serve --config F --print-config`), the plan
//! trimmed to a time budget, and the rule that turns the calibration peaks into a workload's
//! open-loop rate.
//!
//! Guarantees: every candidate in a [`KnobPlan`] is a value the server reads back as given (a
//! refused or rewritten value is skipped with a note, never run); a trimmed plan keeps at least
//! one workload and one knob.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::TuneConfig;
use super::decide;
use super::file_name;
use super::knobs::{self, Setting, Value};
use super::server::Server;
use super::workloads::{self, Workload};

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

/// The open-loop rate of a workload: `fraction` of the median of the default configuration's
/// closed-loop peaks. One run's peak is too noisy on a shared machine: a lucky first run would
/// set a rate that later default runs cannot sustain, and every p99 would measure an overload.
pub fn open_loop_rate(fraction: f64, peaks: &[f64]) -> f64 {
    fraction * decide::median(peaks.to_vec())
}

/// The workloads `--workloads` names, or the quick ones for `--quick`, or all.
pub(super) fn select_workloads(cfg: &TuneConfig) -> Result<Vec<Workload>, String> {
    if cfg.workloads.is_empty() && cfg.quick {
        let quick: Vec<String> = workloads::QUICK.iter().map(|s| s.to_string()).collect();
        return workloads::select(&quick);
    }
    workloads::select(&cfg.workloads)
}

/// `setting` as a probe file in `dir`, checked by `serve --config F --print-config`.
pub(super) fn probe(server: &Server, dir: &Path, setting: &Setting) -> Result<String, String> {
    let path = dir.join(format!("probe-{}.toml", file_name(&setting.label())));
    fs::write(&path, knobs::probe_toml(setting)).map_err(|e| format!("{}: {e}", path.display()))?;
    server.print_config(Some(&path))
}

/// The selected knobs the server has, with the values it accepts (each checked with
/// `--print-config`); a knob or value it refuses is skipped with a note.
pub(super) fn probe_knobs(
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

/// Wall time of `trials` trials in `workloads` workloads, calibration included.
pub(super) fn estimate(cfg: &TuneConfig, workloads: usize, trials: usize) -> Duration {
    // Each calibration run starts and stops its own server, as a trial does.
    let calibration =
        (cfg.warmup + cfg.duration + TRIAL_OVERHEAD) * (cfg.calibration_runs * workloads) as u32;
    (2 * (cfg.warmup + cfg.duration) + TRIAL_OVERHEAD) * trials as u32 + calibration
}

/// Trials of the sweep and of the combination phase in `workloads` workloads.
pub(super) fn trials_of(cfg: &TuneConfig, workloads: usize, plans: &[KnobPlan]) -> usize {
    let per_round = 1 + plans.iter().map(|p| p.candidates.len() + 1).sum::<usize>();
    workloads * (cfg.rounds * per_round + 2 * cfg.rounds + 1)
}

/// Drops workloads (down to one), then knobs (down to one), from the end until the estimate
/// fits `budget`; notes what was dropped.
pub(super) fn trim(
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::knob;
    use super::*;

    #[test]
    fn the_open_loop_rate_is_a_fraction_of_the_median_peak() {
        // A lucky 900 does not set the rate.
        assert_eq!(open_loop_rate(0.5, &[100.0, 900.0, 120.0]), 60.0);
        assert_eq!(open_loop_rate(0.7, &[100.0]), 70.0);
    }

    /// A fake server that knows completions_per_turn and coop_taskrun (refusing false), and
    /// echoes a probe file back as its effective configuration.
    const FAKE_SERVER: &str = r#"#!/bin/sh
case "$*" in
  *--config*)
    if grep -q 'coop_taskrun = false' "$3"; then
      echo "fcgi-uring: $3:5: ring.coop_taskrun: not on this kernel" >&2; exit 1
    fi
    cat "$3" ;;
  *) printf '[server]\nworkers = 0\n[ring]\ncoop_taskrun = true\ncompletions_per_turn = 1024\n' ;;
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
            "coop_taskrun".into(),
            "sqpoll".into(),
        ];
        let mut notes = Vec::new();
        let plans = probe_knobs(&cfg, &server, &defaults, &mut notes).unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(plans.len(), 1, "{plans:?}");
        assert_eq!(plans[0].name, "ring.completions_per_turn");
        assert_eq!(plans[0].default, Value::Int(1024));
        let values: Vec<Value> = plans[0].candidates.iter().map(|c| c.value).collect();
        assert_eq!(values, [Value::Int(32), Value::Int(4096)]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        // In the knobs' order: sqpoll comes before coop_taskrun.
        assert_eq!(
            notes[0],
            "ring.sqpoll: skipped, this server does not have it"
        );
        assert!(
            notes[1].starts_with(
                "ring.coop_taskrun = false: skipped, the server refuses it: fcgi-uring:"
            ),
            "{notes:?}"
        );
        assert!(notes[1].contains("not on this kernel"), "{notes:?}");
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
            plan("ring.coop_taskrun", &[Value::Bool(false)]),
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
