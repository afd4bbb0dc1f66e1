//! From the measured chains to what is recommended, with no IO: the table's rows, the best
//! value of each knob on its own ([`analyse`]), the winners together judged against the default
//! measured around them ([`combination`]), the fallback when they are refused or worse
//! ([`recommend`], [`best_single`]), and the complete recommended setting ([`complete`]).
//!
//! Guarantees: a value is recommended only when [`decide::choose`] picked it (better than the
//! measured noise, not worse anywhere); the winners together are recommended only when no live
//! workload is worse or failed with them; the recommendation names every swept knob, in
//! catalogue order, with the keys the rules imply.

use std::collections::BTreeMap;

use super::decide::{self, DEFAULT, Judged, Noise, Point, Rule, Verdict};
use super::knobs::{self, Setting, Value};
use super::plan::KnobPlan;
use super::results::{Combination, Decision, Row};
use super::workloads::Workload;

/// The rows of the sweep's table and the decision per knob.
pub(super) fn analyse(
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

/// Every knob's winner together, rules applied (the default configuration when nothing won).
/// When epoll won `server.io`, the `ring.*` winners are left out: they were measured on
/// io_uring, and epoll uses none of them.
pub(super) fn winners_together(
    decisions: &[Decision],
    defaults: &BTreeMap<String, Value>,
) -> Setting {
    let mut winners: Vec<(String, Value)> = decisions
        .iter()
        .filter(|d| d.changed)
        .map(|d| (d.knob.clone(), d.value))
        .collect();
    if winners.contains(&(knobs::IO.to_owned(), knobs::EPOLL)) {
        winners.retain(|(key, _)| !key.starts_with("ring."));
    }
    Setting::new(winners, defaults)
}

/// The winners together (`together`) judged in every live workload from the chains of the
/// combination phase (`D B D B ... D`): accepted when every workload has a row and none is
/// worse or failed.
pub(super) fn combination(
    chains: &[Vec<Point>],
    workloads: &[Workload],
    live: &[usize],
    together: Setting,
    rule: &Rule,
) -> Combination {
    let label = together.label();
    let (mut rows, mut default_rows) = (Vec::new(), Vec::new());
    for &wi in live {
        let noise = decide::noise(&chains[wi]);
        if let Some(r) = decide::ratios(&chains[wi], DEFAULT) {
            default_rows.push(Row {
                workload: workloads[wi].name(),
                knob: None,
                setting: DEFAULT.into(),
                verdict: None,
                ratios: r,
                noise,
            });
        }
        if let Some(r) = decide::ratios(&chains[wi], &label) {
            rows.push(Row {
                workload: workloads[wi].name(),
                knob: None,
                setting: label.clone(),
                verdict: Some(decide::verdict(&r, &noise, rule)),
                ratios: r,
                noise,
            });
        }
    }
    let accepted = !rows.is_empty()
        && rows
            .iter()
            .all(|r| matches!(r.verdict, Some(Verdict::Better | Verdict::Same)));
    Combination {
        setting: together,
        label,
        default_rows,
        rows,
        accepted,
    }
}

/// The setting to recommend after the combination phase: the winners together when accepted
/// (with a note when no workload was better beyond the noise), else the best single winner
/// (see [`best_single`]), with a note.
pub(super) fn recommend(
    c: &Combination,
    decisions: &[Decision],
    defaults: &BTreeMap<String, Value>,
    notes: &mut Vec<String>,
) -> Setting {
    let label = &c.label;
    if c.accepted {
        if !c.rows.iter().any(|r| r.verdict == Some(Verdict::Better)) {
            notes.push(format!(
                "the winners together ({label}) were within the noise of the default in every \
                 workload: their gain is not confirmed"
            ));
        }
        return c.setting.clone();
    }
    let instead = best_single(decisions, defaults, label);
    notes.push(format!(
        "the winners together ({label}) were worse than the default (or failed) in some \
         workload when measured again: recommended instead: {}",
        instead.label()
    ));
    instead
}

/// The single winner with the highest score, alone, other than the setting `refused`; the
/// defaults when there is none (a lone winner that failed its confirmation is not kept).
pub(super) fn best_single(
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

/// `recommended` with every swept knob that it leaves alone at its default, in catalogue order,
/// rules applied. A key a rule sets is not written as its default (that would block the rule:
/// sqpoll = true needs defer_taskrun = false).
pub(super) fn complete(
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

#[cfg(test)]
mod tests {
    use super::super::decide::Judged;
    use super::*;

    fn won(knob: &str, default: Value, value: Value) -> Decision {
        Decision {
            knob: knob.into(),
            default,
            value,
            changed: true,
            judged: Vec::new(),
        }
    }

    #[test]
    fn epoll_winning_leaves_the_ring_winners_out_of_the_combination() {
        let defaults = knobs::parse_defaults(&fcgi_uring_cli::config_file::to_toml(
            &fcgi_uring::Config::default(),
        ))
        .unwrap();
        let cpt = won("ring.completions_per_turn", Value::Int(32), Value::Int(128));
        let epoll = won(knobs::IO, Value::Str("auto"), Value::Str("epoll"));
        let together = winners_together(&[epoll, cpt.clone()], &defaults);
        assert_eq!(together.label(), "io=epoll");
        assert_eq!(
            together.keys(),
            [(knobs::IO.to_owned(), Value::Str("epoll"))]
        );
        // Without epoll among the winners, the ring's winners stay.
        let uring = won(knobs::IO, Value::Str("auto"), Value::Str("uring"));
        let together = winners_together(&[uring, cpt], &defaults);
        assert_eq!(together.label(), "io=uring completions_per_turn=128");
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
                ("ring.completions_per_turn".to_owned(), Value::Int(1024)),
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
}
