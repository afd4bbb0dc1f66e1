//! The decision rule, with no IO and no clock: ratios of a setting to the default measured
//! around it, the noise measured between default runs, and whether a value beats the default
//! by more than that noise without hurting p99 or any workload.
//!
//! Per workload the trials form a chain in the order they ran: `D a b D c D ...` (D the
//! default). A trial is compared with the mean of the nearest successful default runs before
//! and after it, which cancels a slow drift of the machine. The noise of a metric is the largest
//! relative difference between two consecutive default runs of the chain: the same
//! configuration measured twice differs by that much, so a smaller difference proves nothing.

use serde::Serialize;

/// What one trial measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Closed-loop throughput (the peak), requests per second.
    pub rps: f64,
    /// Open-loop latency at the fixed rate.
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// Server CPU per request at the fixed rate.
    pub cpu_us_per_req: f64,
    /// Failed requests in both runs.
    pub errors: u64,
    /// The client's core was saturated in the closed-loop run (the peak measured the client).
    pub client_saturated: bool,
}

/// One trial of a workload's chain: its arm (`"default"` or a setting's label) and what it
/// measured (`None`: it failed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub arm: String,
    pub sample: Option<Sample>,
}

pub const DEFAULT: &str = "default";

/// Relative noise of each metric (0.05 = 5 %), and from how many pairs of default runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Noise {
    pub rps: f64,
    pub p99: f64,
    pub cpu: f64,
    pub pairs: usize,
}

fn rel_diff(a: f64, b: f64) -> f64 {
    if a <= 0.0 || b <= 0.0 {
        return f64::INFINITY;
    }
    (b / a - 1.0).abs().max((a / b - 1.0).abs())
}

/// The largest relative difference between consecutive successful default runs, per metric.
/// With fewer than two default runs every noise is infinite (nothing can be shown better).
pub fn noise(chain: &[Point]) -> Noise {
    let defaults: Vec<&Sample> = chain
        .iter()
        .filter(|p| p.arm == DEFAULT)
        .filter_map(|p| p.sample.as_ref())
        .collect();
    let pairs = defaults.len().saturating_sub(1);
    if pairs == 0 {
        return Noise {
            rps: f64::INFINITY,
            p99: f64::INFINITY,
            cpu: f64::INFINITY,
            pairs,
        };
    }
    let max_over = |f: fn(&Sample) -> f64| {
        defaults
            .windows(2)
            .map(|w| rel_diff(f(w[0]), f(w[1])))
            .fold(0.0, f64::max)
    };
    Noise {
        rps: max_over(|s| s.rps),
        p99: max_over(|s| s.p99_us as f64),
        cpu: max_over(|s| s.cpu_us_per_req),
        pairs,
    }
}

/// An arm against the default, medians over its runs. `rps` > 1 is better; `p99` and `cpu` < 1
/// are better.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratios {
    pub rps: f64,
    pub p99: f64,
    pub cpu: f64,
    /// Throughput ratio of each run, in order.
    pub rps_runs: Vec<f64>,
    /// Medians of the arm's own samples.
    pub median: Option<Sample>,
    /// Runs that succeeded (and entered the ratios), and runs that failed.
    pub runs: usize,
    pub failed: usize,
    /// Failed requests over all its runs.
    pub errors: u64,
    pub client_saturated: bool,
}

/// The median of `v` (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median sample of `samples` (each metric on its own).
pub fn median_sample(samples: &[&Sample]) -> Option<Sample> {
    if samples.is_empty() {
        return None;
    }
    let m = |f: fn(&Sample) -> f64| median(samples.iter().map(|s| f(s)).collect());
    Some(Sample {
        rps: m(|s| s.rps),
        p50_us: m(|s| s.p50_us as f64) as u64,
        p99_us: m(|s| s.p99_us as f64) as u64,
        p999_us: m(|s| s.p999_us as f64) as u64,
        cpu_us_per_req: m(|s| s.cpu_us_per_req),
        errors: samples.iter().map(|s| s.errors).sum(),
        client_saturated: samples.iter().any(|s| s.client_saturated),
    })
}

/// `arm` against the default runs around each of its runs; `None` when `arm` never ran.
/// `arm == "default"` gives the default's own medians with ratios of 1.
pub fn ratios(chain: &[Point], arm: &str) -> Option<Ratios> {
    let mine: Vec<usize> = (0..chain.len()).filter(|&i| chain[i].arm == arm).collect();
    if mine.is_empty() {
        return None;
    }
    let ok = |i: &usize| chain[*i].arm == DEFAULT && chain[*i].sample.is_some();
    let (mut rps, mut p99, mut cpu, mut samples) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut failed = 0;
    for &i in &mine {
        let Some(s) = &chain[i].sample else {
            failed += 1;
            continue;
        };
        samples.push(s);
        if arm == DEFAULT {
            continue;
        }
        let before = (0..i).rev().find(ok);
        let after = (i + 1..chain.len()).find(ok);
        let refs: Vec<&Sample> = [before, after]
            .into_iter()
            .flatten()
            .filter_map(|j| chain[j].sample.as_ref())
            .collect();
        if refs.is_empty() {
            continue;
        }
        let mean =
            |f: fn(&Sample) -> f64| refs.iter().map(|r| f(r)).sum::<f64>() / refs.len() as f64;
        rps.push(s.rps / mean(|r| r.rps));
        p99.push(s.p99_us as f64 / mean(|r| r.p99_us as f64).max(1.0));
        cpu.push(s.cpu_us_per_req / mean(|r| r.cpu_us_per_req));
    }
    let runs = samples.len();
    let median_s = median_sample(&samples);
    let (rps_m, p99_m, cpu_m) = if arm == DEFAULT {
        let one = if runs > 0 { 1.0 } else { f64::NAN };
        (one, one, one)
    } else {
        (median(rps.clone()), median(p99), median(cpu))
    };
    Some(Ratios {
        rps: rps_m,
        p99: p99_m,
        cpu: cpu_m,
        rps_runs: rps,
        errors: median_s.map_or(0, |s| s.errors),
        client_saturated: median_s.is_some_and(|s| s.client_saturated),
        median: median_s,
        runs,
        failed,
    })
}

/// The thresholds of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rule {
    /// A gain must also exceed this (0.02 = 2 %), however quiet the machine was.
    pub min_gain: f64,
    /// p99 may grow by the measured p99 noise or by this, whichever is larger.
    pub p99_tolerance: f64,
}

impl Default for Rule {
    fn default() -> Rule {
        Rule {
            min_gain: 0.02,
            p99_tolerance: 0.10,
        }
    }
}

/// How an arm compares with the default in one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// More throughput, or less CPU per request, by more than the noise; nothing worse.
    Better,
    /// Within the noise.
    Same,
    /// Less throughput, or more CPU per request, by more than the noise.
    Worse,
    /// p99 at the fixed rate grew by more than the tolerance.
    P99Worse,
    /// A run failed or had failed requests.
    Failed,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Same => "same",
            Verdict::Worse => "worse",
            Verdict::P99Worse => "p99 worse",
            Verdict::Failed => "failed",
        }
    }
}

/// The verdict for `r` given the workload's `noise`.
pub fn verdict(r: &Ratios, noise: &Noise, rule: &Rule) -> Verdict {
    if r.failed > 0 || r.errors > 0 || r.runs == 0 || !r.rps.is_finite() {
        return Verdict::Failed;
    }
    let m_rps = noise.rps.max(rule.min_gain);
    let m_cpu = noise.cpu.max(rule.min_gain);
    let m_p99 = noise.p99.max(rule.p99_tolerance);
    if r.p99 > 1.0 + m_p99 {
        return Verdict::P99Worse;
    }
    if r.rps < 1.0 - m_rps || r.cpu > 1.0 + m_cpu {
        return Verdict::Worse;
    }
    if r.rps > 1.0 + m_rps || r.cpu < 1.0 - m_cpu {
        return Verdict::Better;
    }
    Verdict::Same
}

/// One value of a knob across the workloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judged {
    pub verdicts: Vec<Verdict>,
    /// Geometric mean over the workloads of throughput ratio / CPU-per-request ratio.
    pub score: f64,
}

/// The score of ratios across workloads (throughput per CPU, geometric mean).
pub fn score(ratios: &[&Ratios]) -> f64 {
    if ratios.is_empty() {
        return f64::NAN;
    }
    let logs: f64 = ratios.iter().map(|r| (r.rps / r.cpu).ln()).sum();
    (logs / ratios.len() as f64).exp()
}

/// A value is eligible when it is better in at least one workload and no worse (nor failed,
/// nor worse at p99) in any. Returns the index of the eligible value with the highest score,
/// or `None`: keep the default.
pub fn choose(values: &[Judged]) -> Option<usize> {
    values
        .iter()
        .enumerate()
        .filter(|(_, j)| {
            j.verdicts.contains(&Verdict::Better)
                && j.verdicts
                    .iter()
                    .all(|v| matches!(v, Verdict::Better | Verdict::Same))
                && j.score.is_finite()
        })
        .max_by(|a, b| a.1.score.total_cmp(&b.1.score))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rps: f64, p99: u64, cpu: f64) -> Option<Sample> {
        Some(Sample {
            rps,
            p50_us: p99 / 2,
            p99_us: p99,
            p999_us: p99 * 2,
            cpu_us_per_req: cpu,
            errors: 0,
            client_saturated: false,
        })
    }

    fn p(arm: &str, sample: Option<Sample>) -> Point {
        Point {
            arm: arm.into(),
            sample,
        }
    }

    #[test]
    fn noise_is_the_largest_step_between_default_runs() {
        let chain = [
            p(DEFAULT, s(100.0, 200, 10.0)),
            p("a", s(150.0, 100, 5.0)),
            p(DEFAULT, s(104.0, 210, 10.0)),
            p(DEFAULT, None),
            p(DEFAULT, s(100.0, 200, 10.5)),
        ];
        let n = noise(&chain);
        assert_eq!(n.pairs, 2);
        assert!((n.rps - 0.04).abs() < 1e-9, "{n:?}");
        assert!((n.p99 - 0.05).abs() < 1e-9, "{n:?}");
        assert!((n.cpu - 0.05).abs() < 1e-9, "{n:?}");
        let one = noise(&chain[..2]);
        assert_eq!(one.pairs, 0);
        assert!(one.rps.is_infinite());
    }

    #[test]
    fn ratios_use_the_defaults_around_each_run() {
        // Drift: the default goes 100 -> 120 -> 140; `a` at 110 and 130 sits exactly on it.
        let chain = [
            p(DEFAULT, s(100.0, 100, 10.0)),
            p("a", s(110.0, 100, 10.0)),
            p(DEFAULT, s(120.0, 100, 10.0)),
            p("a", s(130.0, 100, 10.0)),
            p(DEFAULT, s(140.0, 100, 10.0)),
            p("b", None),
        ];
        let a = ratios(&chain, "a").unwrap();
        assert_eq!(a.runs, 2);
        assert!((a.rps - 1.0).abs() < 1e-9, "{a:?}");
        assert_eq!(a.rps_runs.len(), 2);
        assert_eq!(a.median.unwrap().rps, 120.0);
        let b = ratios(&chain, "b").unwrap();
        assert_eq!((b.runs, b.failed), (0, 1));
        assert_eq!(
            verdict(&b, &noise(&chain), &Rule::default()),
            Verdict::Failed
        );
        let d = ratios(&chain, DEFAULT).unwrap();
        assert_eq!((d.rps, d.runs), (1.0, 3));
        assert_eq!(d.median.unwrap().rps, 120.0);
        assert!(ratios(&chain, "c").is_none());
    }

    fn r(rps: f64, p99: f64, cpu: f64) -> Ratios {
        Ratios {
            rps,
            p99,
            cpu,
            rps_runs: vec![rps],
            median: s(1.0, 1, 1.0),
            runs: 1,
            failed: 0,
            errors: 0,
            client_saturated: false,
        }
    }

    #[test]
    fn a_gain_must_exceed_the_measured_noise() {
        let rule = Rule::default();
        let noisy = Noise {
            rps: 0.08,
            p99: 0.3,
            cpu: 0.05,
            pairs: 3,
        };
        assert_eq!(verdict(&r(1.07, 1.0, 1.0), &noisy, &rule), Verdict::Same);
        assert_eq!(verdict(&r(1.09, 1.0, 1.0), &noisy, &rule), Verdict::Better);
        assert_eq!(verdict(&r(0.91, 1.0, 1.0), &noisy, &rule), Verdict::Worse);
        // Less CPU per request counts as better; more as worse.
        assert_eq!(verdict(&r(1.0, 1.0, 0.94), &noisy, &rule), Verdict::Better);
        assert_eq!(verdict(&r(1.2, 1.0, 1.06), &noisy, &rule), Verdict::Worse);
        // A quiet machine still needs the minimum gain.
        let quiet = Noise {
            rps: 0.001,
            p99: 0.001,
            cpu: 0.001,
            pairs: 3,
        };
        assert_eq!(verdict(&r(1.015, 1.0, 1.0), &quiet, &rule), Verdict::Same);
        assert_eq!(verdict(&r(1.03, 1.0, 1.0), &quiet, &rule), Verdict::Better);
    }

    #[test]
    fn p99_guardrail() {
        let rule = Rule::default();
        let quiet = Noise {
            rps: 0.01,
            p99: 0.02,
            cpu: 0.01,
            pairs: 3,
        };
        // Faster, but p99 at the fixed rate 15 % worse: refused.
        assert_eq!(
            verdict(&r(1.3, 1.15, 0.9), &quiet, &rule),
            Verdict::P99Worse
        );
        assert_eq!(verdict(&r(1.3, 1.09, 0.9), &quiet, &rule), Verdict::Better);
        // When p99 itself varies by 40 % between default runs, only more than that counts.
        let p99_noisy = Noise { p99: 0.4, ..quiet };
        assert_eq!(
            verdict(&r(1.3, 1.3, 0.9), &p99_noisy, &rule),
            Verdict::Better
        );
        // Errors disqualify.
        let mut e = r(2.0, 0.5, 0.5);
        e.errors = 1;
        assert_eq!(verdict(&e, &quiet, &rule), Verdict::Failed);
    }

    #[test]
    fn choose_needs_a_win_and_no_loss() {
        use Verdict::*;
        let j = |verdicts: Vec<Verdict>, score: f64| Judged { verdicts, score };
        assert_eq!(choose(&[j(vec![Same, Same], 1.5)]), None);
        assert_eq!(choose(&[j(vec![Better, Worse], 1.5)]), None);
        assert_eq!(choose(&[j(vec![Better, P99Worse], 1.5)]), None);
        assert_eq!(choose(&[j(vec![Better, Failed], 1.5)]), None);
        assert_eq!(
            choose(&[
                j(vec![Better, Same], 1.05),
                j(vec![Better, Better], 1.10),
                j(vec![Better, Worse], 1.5),
            ]),
            Some(1)
        );
        let a = r(1.2, 1.0, 1.0);
        let b = r(1.0, 1.0, 0.8);
        assert!((score(&[&a, &b]) - (1.2f64 * 1.25).sqrt()).abs() < 1e-9);
    }
}
