//! The data model of a sweep, as `results.json` records it: the table's rows, the decision per
//! knob, the winners together, each workload's rate and each trial as it ran; and the writing
//! of every output file from it.
//!
//! Guarantee: the recommendation written is checked against the server before [`write()`]
//! returns: the server must read every recommended key back with the recommended value.

use std::fs;
use std::path::Path;

use serde::Serialize;

use super::decide::{Judged, Noise, Ratios, Rule, Sample, Verdict};
use super::knobs::{self, Setting, Value};
use super::output;
use super::plan::KnobPlan;
use super::server::Server;
use crate::stats::Report;

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

/// Writes `results.json`, `table.txt`, `report.html` and `fcgi-uring.toml` into `out`, and
/// checks that the server accepts the recommendation as it is.
pub fn write(out: &Path, server: &Server, results: &Results) -> Result<(), String> {
    let put = |name: &str, text: &str| {
        let path = out.join(name);
        fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    put(
        "results.json",
        &serde_json::to_string_pretty(results).map_err(|e| e.to_string())?,
    )?;
    put("table.txt", &output::table(results))?;
    put("report.html", &output::html(results))?;
    let toml_path = out.join("fcgi-uring.toml");
    put("fcgi-uring.toml", &output::recommendation_toml(results))?;
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
