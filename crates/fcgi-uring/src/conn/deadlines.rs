//! Deadlines of one worker's connections, kept in a timer wheel of connection keys.
//!
//! A connection's deadline is a pure function of its state and a few timestamps
//! ([`deadline`]); it is recomputed whenever the connection is flushed (every state change
//! marks the connection dirty, but the end of a send that leaves nothing to do, which decides
//! the one deadline it can add at once: [`idle_comes_first`]). The wheel holds at most one live entry per connection, the
//! earliest deadline asked for; an entry whose connection has since been rescheduled is stale and
//! skipped. When an entry fires, the connection's deadlines are checked against the clock
//! ([`expire`]), the expired ones acted on, and the connection marked dirty so that its next
//! deadline is scheduled. Only connections with a deadline are ever looked at, and one tokio
//! timer per worker (armed for the first non-empty slot) wakes the loop.

use super::requests::{BodyIn, ReqEntry, ReqKey};
use super::state::{Conn, Lifecycle};
use super::{ConnKey, Core};
use crate::body::BodyError;
use crate::config::Timeouts;
use crate::stats::Counter;
use crate::wheel::Millis;
use std::time::Duration;

/// Why a connection or request is past its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Idle,
    Params,
    Body,
    Handler,
    Write,
    Linger,
    /// The server drains and the connection stayed idle.
    DrainIdle,
}

/// How long a draining server leaves a connection idle before it closes it without an answer
/// to carry the FIN. A connection is closed safely right after an answer (the FIN in the
/// answer's last segment); one that is idle may be picked by the proxy at the very moment the
/// FIN is on its way, so it gets this long to bring a request first (and a connection
/// accepted just before the drain, its first request) and is closed only after.
pub(crate) const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

fn after(since: Millis, limit: Duration) -> Option<Millis> {
    (!limit.is_zero()).then(|| since.saturating_add(limit.as_millis() as u64))
}

/// Every deadline of `conn` that applies in its current state.
/// `draining`: since when the server drains.
fn deadlines(
    conn: &Conn,
    t: &Timeouts,
    draining: Option<Millis>,
    mut each: impl FnMut(Millis, Cause),
) {
    let mut push = |at: Option<Millis>, cause| {
        if let Some(at) = at {
            each(at, cause);
        }
    };
    if let Some(since) = conn.send_since()
        && !conn.is_closed()
    {
        push(after(since, t.write), Cause::Write);
    }
    match conn.lifecycle() {
        Lifecycle::Open => {}
        Lifecycle::Draining {
            shutdown_at: Some(at),
        } => {
            push(after(at, t.linger), Cause::Linger);
            return;
        }
        _ => return,
    }
    if conn.active_requests() == 0 && conn.backlog() == 0 {
        push(after(conn.last_activity(), t.idle), Cause::Idle);
        if let Some(since) = draining {
            push(
                after(conn.last_activity().max(since), DRAIN_IDLE),
                Cause::DrainIdle,
            );
        }
    }
    // Not while the server does not read the connection (see `Conn::resume`).
    if !conn.is_paused()
        && let Some(since) = conn.params_since()
    {
        push(after(since, t.params), Cause::Params);
    }
    // The body and handler deadlines are those of dispatched requests; most flushes have none
    // (the answer just queued ended its request).
    if !conn.has_requests() {
        return;
    }
    if !conn.is_paused() && !t.body.is_zero() && conn.requests().any(waits_for_body) {
        push(after(conn.last_recv(), t.body), Cause::Body);
    }
    if !t.handler.is_zero() {
        for e in conn.requests() {
            push(after(e.started, t.handler), Cause::Handler);
        }
    }
}

fn waits_for_body(e: &ReqEntry) -> bool {
    let open = |b: &BodyIn| matches!(b, BodyIn::Stream(ch) if ch.is_open());
    e.bodies().any(open)
}

/// The earliest deadline of `conn`, if any.
fn deadline(conn: &Conn, t: &Timeouts, draining: Option<Millis>) -> Option<Millis> {
    let mut first: Option<Millis> = None;
    deadlines(conn, t, draining, |at, _| {
        first = Some(first.map_or(at, |f| f.min(at)))
    });
    first
}

/// Puts `conn` in the wheel for its earliest deadline, unless an earlier entry is live.
pub(super) fn schedule(core: &Core, key: ConnKey, conn: &mut Conn) {
    let Some(at) = deadline(conn, &core.settings.timeouts, core.draining_since()) else {
        return;
    };
    let mut wheel = core.wheel.borrow_mut();
    let tick = wheel.tick_for(at);
    if conn.timer().is_some_and(|t| t <= tick) {
        return;
    }
    conn.set_timer(Some(tick));
    wheel.insert(key, tick);
}

/// Whether `conn`, settled after its send ended ([`Conn::is_settled`]), must be scheduled:
/// the idle timeout, which applies once no request and no output is left, comes before its
/// live entry in the wheel (or it has none). The end of a send takes the write deadline away
/// and can add only that one: the others it has were there when it was last flushed, and its
/// live entry is at or before the earliest of them. A live entry that comes first finds the
/// connection's deadlines then, as every entry does.
pub(super) fn idle_comes_first(core: &Core, conn: &Conn) -> bool {
    if conn.active_requests() != 0 || conn.backlog() != 0 {
        return false;
    }
    let Some(at) = after(conn.last_activity(), core.settings.timeouts.idle) else {
        return false;
    };
    conn.timer()
        .is_none_or(|live| core.wheel.borrow().tick_for(at) < live)
}

/// Acts on every deadline passed by now. Returns whether anything was done.
pub(crate) fn expire(core: &Core) -> bool {
    let now = core.now_ms();
    let mut due = Vec::new();
    core.wheel.borrow_mut().advance(now, &mut due);
    if due.is_empty() {
        return false;
    }
    let mut late_handlers: Vec<ReqKey> = Vec::new();
    {
        let mut conns = core.conns.borrow_mut();
        for (key, tick) in due {
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if conn.timer() != Some(tick) {
                continue; // stale: rescheduled since
            }
            conn.set_timer(None);
            check(core, key, conn, now, &mut late_handlers);
            core.mark_dirty(key, conn);
        }
    }
    for rk in late_handlers {
        core.time_out(rk);
    }
    true
}

/// Acts on the deadlines of `conn` that have passed.
fn check(core: &Core, key: ConnKey, conn: &mut Conn, now: Millis, late: &mut Vec<ReqKey>) {
    let mut passed = [false; 7];
    deadlines(
        conn,
        &core.settings.timeouts,
        core.draining_since(),
        |at, cause| {
            if at <= now {
                passed[cause as usize] = true;
            }
        },
    );
    let at = core.now();
    let close = |cause: Cause, counter: Counter, what: &'static str| {
        passed[cause as usize].then_some((counter, what))
    };
    let closing = close(
        Cause::Write,
        Counter::WriteTimeout,
        "the peer stopped reading its answers (timeouts.write)",
    )
    .or_else(|| {
        close(
            Cause::Params,
            Counter::ParamsTimeout,
            "a request's params did not end within timeouts.params",
        )
    })
    .or_else(|| {
        close(
            Cause::Linger,
            Counter::LingerTimeout,
            "the peer did not close within timeouts.linger",
        )
    })
    .or_else(|| close(Cause::Idle, Counter::IdleTimeout, "idle for timeouts.idle"));
    if let Some((counter, what)) = closing {
        if counter == Counter::IdleTimeout {
            // An idle connection closed is ordinary (a proxy's pooled connections): counted,
            // not a warning.
            core.stats.count(counter);
            tracing::debug!("closing connection: {what}");
        } else {
            core.stats
                .hit(counter, at, format_args!("closing connection: {what}"));
        }
        let n = conn.abort();
        core.active.set(core.active.get().saturating_sub(n));
        return;
    }
    if passed[Cause::DrainIdle as usize] {
        conn.drain_now();
        return;
    }
    if passed[Cause::Body as usize] {
        for e in conn.requests_mut() {
            if waits_for_body(e) {
                core.stats.hit(
                    Counter::BodyTimeout,
                    at,
                    format_args!("request {}: no body bytes in time", e.id),
                );
                for b in e.bodies_mut() {
                    b.fail(BodyError::TimedOut);
                    if matches!(b, BodyIn::Stream(_)) {
                        *b = BodyIn::Done;
                    }
                }
            }
        }
    }
    if passed[Cause::Handler as usize] {
        let limit = core.settings.timeouts.handler.as_millis() as u64;
        for e in conn.requests_mut() {
            if e.started.saturating_add(limit) <= now {
                if let Some(task) = e.task.take() {
                    task.abort();
                }
                core.stats.hit(
                    Counter::HandlerTimeout,
                    at,
                    format_args!("request {}: handler past its deadline", e.id),
                );
                late.push(ReqKey {
                    conn: key,
                    id: e.id,
                    serial: e.serial,
                });
            }
        }
    }
}
