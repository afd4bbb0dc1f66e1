//! Deadlines of one worker: a coarse hashed timer wheel of connection keys.
//!
//! A connection's deadline is a pure function of its state and a few timestamps
//! ([`deadline`]); it is recomputed whenever the connection is flushed (every state change
//! marks the connection dirty). The wheel holds at most one live entry per connection, the
//! earliest deadline asked for; an entry whose connection has since been rescheduled is stale and
//! skipped. When an entry fires, the connection's deadlines are checked against the clock
//! ([`expire`]), the expired ones acted on, and the connection marked dirty so that its next
//! deadline is scheduled. Only connections with a deadline are ever looked at, and one tokio
//! timer per worker (armed for the first non-empty slot) wakes the loop.

use super::config::Timeouts;
use super::core::{BodyIn, Conn, ConnKey, ConnState, Core, ReqKey};
use super::stats::Counter;
use crate::body::BodyError;
use std::pin::Pin;
use std::task::Context;
use std::time::{Duration, Instant};

/// Milliseconds since the worker started.
pub(crate) type Millis = u64;

const RESOLUTION_MS: u64 = Timeouts::RESOLUTION.as_millis() as u64;
/// Slots of the wheel: deadlines further out than this many ticks wait in the last slot and are
/// re-evaluated when it comes round.
const SLOTS: usize = 2048;

/// A timer wheel of connection keys, with tick = [`Timeouts::RESOLUTION`].
pub(crate) struct Wheel {
    slots: Vec<Vec<ConnKey>>,
    /// The next tick to process; every entry is at a tick >= this.
    next: u64,
    len: usize,
}

impl Wheel {
    pub fn new(now: Millis) -> Wheel {
        Wheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            next: now / RESOLUTION_MS,
            len: 0,
        }
    }

    /// The tick at which a deadline at `at` is looked at: rounded up, clamped to the horizon.
    pub fn tick_for(&self, at: Millis) -> u64 {
        at.div_ceil(RESOLUTION_MS)
            .clamp(self.next, self.next + SLOTS as u64 - 1)
    }

    pub fn insert(&mut self, key: ConnKey, tick: u64) {
        self.slots[(tick % SLOTS as u64) as usize].push(key);
        self.len += 1;
    }

    /// Moves the entries due at or before `now` to `due`, with the tick each was scheduled for.
    pub fn advance(&mut self, now: Millis, due: &mut Vec<(ConnKey, u64)>) {
        let now_tick = now / RESOLUTION_MS;
        while self.next <= now_tick && self.len > 0 {
            let tick = self.next;
            let slot = &mut self.slots[(tick % SLOTS as u64) as usize];
            self.len -= slot.len();
            due.extend(slot.drain(..).map(|k| (k, tick)));
            self.next += 1;
        }
        self.next = self.next.max(now_tick + 1);
    }

    /// When the first non-empty slot is due.
    pub fn next_due(&self) -> Option<Millis> {
        if self.len == 0 {
            return None;
        }
        (self.next..self.next + SLOTS as u64)
            .find(|t| !self.slots[(*t % SLOTS as u64) as usize].is_empty())
            .map(|t| t * RESOLUTION_MS)
    }
}

/// Why a connection or request is past its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Idle,
    Params,
    Body,
    Handler,
    Write,
    Linger,
}

fn after(since: Millis, limit: Duration) -> Option<Millis> {
    (!limit.is_zero()).then(|| since.saturating_add(limit.as_millis() as u64))
}

/// Every deadline of `conn` that applies in its current state.
fn deadlines(conn: &Conn, t: &Timeouts, mut each: impl FnMut(Millis, Cause)) {
    let mut push = |at: Option<Millis>, cause| {
        if let Some(at) = at {
            each(at, cause);
        }
    };
    if conn.backlog() > 0 && conn.state != ConnState::Closed {
        push(after(conn.send_since, t.write), Cause::Write);
    }
    match conn.state {
        ConnState::Open => {}
        ConnState::Draining {
            shutdown_sent: true,
        } => {
            push(after(conn.shutdown_at, t.linger), Cause::Linger);
            return;
        }
        _ => return,
    }
    if conn.proto.active_requests() == 0 && conn.backlog() == 0 {
        push(after(conn.last_activity, t.idle), Cause::Idle);
    }
    if let Some(since) = conn.params_since {
        push(after(since, t.params), Cause::Params);
    }
    if !conn.paused && !t.body.is_zero() && conn.requests.values().any(waits_for_body) {
        push(after(conn.last_recv, t.body), Cause::Body);
    }
    if !t.handler.is_zero() {
        for e in conn.requests.values() {
            push(after(e.started, t.handler), Cause::Handler);
        }
    }
}

fn waits_for_body(e: &super::core::ReqEntry) -> bool {
    let open = |b: &BodyIn| matches!(b, BodyIn::Stream(ch) if ch.is_open());
    open(&e.body) || open(&e.data)
}

/// The earliest deadline of `conn`, if any.
pub(crate) fn deadline(conn: &Conn, t: &Timeouts) -> Option<Millis> {
    let mut first: Option<Millis> = None;
    deadlines(conn, t, |at, _| {
        first = Some(first.map_or(at, |f| f.min(at)))
    });
    first
}

/// Puts `conn` in the wheel for its earliest deadline, unless an earlier entry is live.
pub(crate) fn schedule(core: &Core, key: ConnKey, conn: &mut Conn) {
    let Some(at) = deadline(conn, &core.settings.timeouts) else {
        return;
    };
    let mut wheel = core.wheel.borrow_mut();
    let tick = wheel.tick_for(at);
    if conn.timer.is_some_and(|t| t <= tick) {
        return;
    }
    conn.timer = Some(tick);
    wheel.insert(key, tick);
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
            if conn.timer != Some(tick) {
                continue; // stale: rescheduled since
            }
            conn.timer = None;
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
    let mut passed = [false; 6];
    deadlines(conn, &core.settings.timeouts, |at, cause| {
        if at <= now {
            passed[cause as usize] = true;
        }
    });
    let at = core.now();
    let close = |cause: Cause, counter: Counter, what: &str| {
        passed[cause as usize].then(|| (counter, what.to_owned()))
    };
    let closing = close(Cause::Write, Counter::WriteTimeout, "peer stopped reading")
        .or_else(|| close(Cause::Params, Counter::ParamsTimeout, "params not complete"))
        .or_else(|| close(Cause::Linger, Counter::LingerTimeout, "peer did not close"))
        .or_else(|| close(Cause::Idle, Counter::IdleTimeout, "idle connection"));
    if let Some((counter, what)) = closing {
        core.stats.hit(
            counter,
            at,
            format_args!("closing connection: {what} in time"),
        );
        core.force_close(conn);
        return;
    }
    if passed[Cause::Body as usize] {
        for e in conn.requests.values_mut() {
            if waits_for_body(e) {
                core.stats.hit(
                    Counter::BodyTimeout,
                    at,
                    format_args!("request {}: no body bytes in time", e.id),
                );
                for b in [&mut e.body, &mut e.data] {
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
        for e in conn.requests.values_mut() {
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

/// The worker's one timer: armed for the wheel's first due slot.
pub(crate) struct WakeTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Millis>,
}

impl WakeTimer {
    pub fn new() -> WakeTimer {
        WakeTimer {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            armed: None,
        }
    }

    /// Re-arms for the wheel's next due slot; true when that time has come.
    pub fn poll(&mut self, core: &Core, cx: &mut Context<'_>) -> bool {
        let Some(due) = core.wheel.borrow().next_due() else {
            self.armed = None;
            return false;
        };
        if self.armed != Some(due) {
            self.armed = Some(due);
            let when = core.instant_at(due);
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(when));
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

/// Worker clock: read once per loop turn.
pub(crate) struct Clock {
    start: Instant,
    now: std::cell::Cell<Instant>,
}

impl Clock {
    pub fn new() -> Clock {
        let now = Instant::now();
        Clock {
            start: now,
            now: std::cell::Cell::new(now),
        }
    }

    pub fn update(&self) {
        self.now.set(Instant::now());
    }

    pub fn now(&self) -> Instant {
        self.now.get()
    }

    pub fn now_ms(&self) -> Millis {
        self.now.get().duration_since(self.start).as_millis() as u64
    }

    pub fn at(&self, ms: Millis) -> Instant {
        self.start + Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> ConnKey {
        ConnKey::from_token(i).unwrap()
    }

    #[test]
    fn entries_fire_at_their_tick_and_not_before() {
        let mut w = Wheel::new(0);
        let t = w.tick_for(120);
        w.insert(key(1), t);
        assert_eq!(w.next_due(), Some(150));
        let mut due = Vec::new();
        w.advance(149, &mut due);
        assert!(due.is_empty());
        w.advance(150, &mut due);
        assert_eq!(due, vec![(key(1), t)]);
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn far_deadlines_wait_at_the_horizon() {
        let w = Wheel::new(1000);
        let t = w.tick_for(u64::MAX / 2);
        assert_eq!(t, 1000 / RESOLUTION_MS + SLOTS as u64 - 1);
        let past = w.tick_for(0);
        assert_eq!(past, 1000 / RESOLUTION_MS);
    }
}
