//! `/status`: what each worker is doing now, as JSON or as a table for a terminal
//! (`?human`, and `fcgi-uring status`).

use super::Sources;
use crate::stats::Counter;
use std::collections::VecDeque;
use std::fmt::Write;

/// Seconds of history kept for the request rates.
const WINDOW: usize = 60;

/// Requests served by each worker, sampled once a second by the admin thread (newest last).
#[derive(Debug, Clone)]
pub struct History {
    samples: VecDeque<Vec<u64>>,
}

impl History {
    pub fn new(_workers: usize) -> History {
        History {
            samples: VecDeque::with_capacity(WINDOW + 1),
        }
    }

    pub fn push(&mut self, served: &[u64]) {
        if self.samples.len() > WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(served.to_vec());
    }

    /// Requests per second of `worker` over the last `secs` seconds (fewer while the history
    /// is shorter), from the newest sample; `None` before two samples exist.
    pub fn rate(&self, worker: usize, secs: usize, now_served: u64) -> Option<f64> {
        let n = self.samples.len();
        if n == 0 {
            return None;
        }
        let back = secs.min(n);
        let old = self.samples.get(n - back)?.get(worker)?;
        // The newest sample may be up to a second old: `now_served` stands for "now", and the
        // span is counted in whole samples plus that part second, approximated as one.
        let span = back as f64;
        Some(now_served.saturating_sub(*old) as f64 / span)
    }
}

/// One worker's row.
struct Row {
    worker: usize,
    conns: u64,
    in_flight: u64,
    served: u64,
    rates: [Option<f64>; 3],
    limits_hit: u64,
    timeouts: u64,
    /// The oldest request in flight: age in seconds, method, URI (sampled once a second).
    oldest: Option<(f64, String, String)>,
    /// Seconds the worker has not turned its loop, past `admin.stall_timeout` (a handler
    /// blocking its thread): the other columns are as of its last turn.
    stalled: Option<f64>,
}

const LIMITS: [Counter; 5] = [
    Counter::ConnsRefused,
    Counter::WorkerOverloaded,
    Counter::ConnOverloaded,
    Counter::ParamsLimit,
    Counter::OutputFull,
];

const TIMEOUTS: [Counter; 6] = [
    Counter::IdleTimeout,
    Counter::ParamsTimeout,
    Counter::BodyTimeout,
    Counter::HandlerTimeout,
    Counter::WriteTimeout,
    Counter::LingerTimeout,
];

fn rows(s: &Sources, history: Option<&History>) -> Vec<Row> {
    s.workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let stats = w.stats.snapshot();
            let m = w.stats.metrics.snapshot();
            let served = stats.get(Counter::Requests);
            let rate = |secs| history.and_then(|h| h.rate(i, secs, served));
            Row {
                worker: i,
                conns: m.conns_open,
                in_flight: m.in_flight,
                served,
                rates: [rate(1), rate(10), rate(60)],
                limits_hit: LIMITS.iter().map(|c| stats.get(*c)).sum(),
                timeouts: TIMEOUTS.iter().map(|c| stats.get(*c)).sum(),
                oldest: oldest(w, m.in_flight),
                stalled: w
                    .stats
                    .liveness
                    .unanswered_for()
                    .filter(|d| !s.stall_timeout.is_zero() && *d > s.stall_timeout)
                    .map(|d| d.as_secs_f64()),
            }
        })
        .collect()
}

/// The oldest request in flight a worker published, unless it has none in flight now.
fn oldest(w: &super::WorkerSource, in_flight: u64) -> Option<(f64, String, String)> {
    if in_flight == 0 {
        return None;
    }
    let slot = w.stats.oldest_in_flight.lock().ok()?;
    let o = slot.as_ref()?;
    Some((
        o.since.elapsed().as_secs_f64(),
        o.method.clone(),
        o.uri.clone(),
    ))
}

/// The status page and whether it is JSON.
pub fn render_status(s: &Sources, history: Option<&History>, human: bool) -> (String, bool) {
    let rows = rows(s, history);
    let uptime = s.started_at.elapsed().as_secs_f64();
    let state = s.health.get().as_str();
    if human {
        return (table(&rows, uptime, state, s.io_backend), false);
    }
    (json(&rows, uptime, state, s.io_backend), true)
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "null".to_owned(), |r| format!("{r:.1}"))
}

/// `s` as a JSON string.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn oldest_json(o: &Option<(f64, String, String)>) -> String {
    match o {
        Some((age, method, uri)) => format!(
            "{{\"age_seconds\":{age:.3},\"method\":{},\"uri\":{}}}",
            json_str(method),
            json_str(uri)
        ),
        None => "null".to_owned(),
    }
}

fn json(rows: &[Row], uptime: f64, state: &str, backend: &str) -> String {
    let mut out = format!(
        "{{\"state\":\"{state}\",\"io_backend\":\"{backend}\",\"uptime_seconds\":{uptime:.3},\"workers\":["
    );
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"worker\":{},\"uptime_seconds\":{uptime:.3},\"connections\":{},\"in_flight\":{},\
             \"served\":{},\"rate_1s\":{},\"rate_10s\":{},\"rate_60s\":{},\"limits_hit\":{},\
             \"timeouts\":{},\"oldest_in_flight\":{},\"stalled_seconds\":{}}}",
            r.worker,
            r.conns,
            r.in_flight,
            r.served,
            num(r.rates[0]),
            num(r.rates[1]),
            num(r.rates[2]),
            r.limits_hit,
            r.timeouts,
            oldest_json(&r.oldest),
            num(r.stalled),
        );
    }
    out.push_str("]}\n");
    out
}

fn table(rows: &[Row], uptime: f64, state: &str, backend: &str) -> String {
    let workers = match rows.len() {
        1 => "1 worker".to_owned(),
        n => format!("{n} workers"),
    };
    let mut out =
        format!("fcgi-uring: {state}, io backend {backend}, up {uptime:.0} s, {workers}\n\n");
    let _ = writeln!(
        out,
        "{:>6} {:>6} {:>9} {:>12} {:>9} {:>9} {:>9} {:>8} {:>8}  oldest in flight",
        "worker",
        "conns",
        "in_flight",
        "served",
        "rate_1s",
        "rate_10s",
        "rate_60s",
        "limits",
        "timeouts"
    );
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
    for r in rows {
        let oldest = match &r.oldest {
            Some((age, method, uri)) => format!("{age:.1}s {method} {uri}"),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:>6} {:>6} {:>9} {:>12} {:>9} {:>9} {:>9} {:>8} {:>8}  {oldest}",
            r.worker,
            r.conns,
            r.in_flight,
            r.served,
            show(r.rates[0]),
            show(r.rates[1]),
            show(r.rates[2]),
            r.limits_hit,
            r.timeouts
        );
        if let Some(secs) = r.stalled {
            let _ = writeln!(
                out,
                "{:>6} has not turned its loop for {secs:.1} s: a handler blocks its thread \
                 (the figures above are as of its last turn)",
                r.worker
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_samples_of_the_window() {
        let mut h = History::new(1);
        assert_eq!(h.rate(0, 1, 5), None);
        for served in [0, 10, 20, 30] {
            h.push(&[served]);
        }
        assert_eq!(h.rate(0, 1, 40), Some(10.0));
        assert_eq!(h.rate(0, 10, 40), Some(10.0));
        assert_eq!(h.rate(1, 1, 40), None);
    }
}
