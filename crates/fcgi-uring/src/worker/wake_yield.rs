//! One yield of the CPU after a wake, while it pays (`ring.yield_after_wake`).
//!
//! A worker woken by a proxy on its own CPU (nginx writing a request) runs at once: the
//! scheduler lets a task that slept preempt the one running. So the worker answers one request
//! per wake and sleeps again, while the proxy, stopped in the middle of its turn, holds the
//! rest of its clients' requests. Yielding once right after the wake (`sched_yield`) lets the
//! proxy finish its turn first; the worker then finds every request that turn forwarded and
//! answers them in one turn of its own. Behind nginx at 16 and 64 clients that is a fraction of
//! the wakes, and half to two thirds less CPU per request on io_uring (whose ring brings all
//! those requests to one `io_uring_enter`), a quarter less on epoll (docs/performance.md); a
//! worker alone on its CPU gives nothing up (the yield returns at once).
//!
//! The hazard is a neighbour that does not block (a CPU-bound process on the same CPU): it gets
//! the CPU until the scheduler takes it back, up to a tick (4 ms) per yield. So a yield must
//! pay for itself. One that took long ([`SLOW_YIELD`] or more) and brought no request beyond
//! the one that woke the worker stops the yields for a while ([`FIRST_PAUSE`], doubling with
//! each such yield in a row up to [`MAX_PAUSE`]); one that brought more requests ends the
//! doubling. Next to a CPU-bound neighbour the worker pays a few such yields in its first
//! second and then one per [`MAX_PAUSE`]. A yield that returns at once with nothing new costs
//! only its system call, but it is useless (nothing else wanted the CPU: a worker alone on its
//! CPU, or a proxy with one client): after [`FREE_STREAK`] of them in a row the yields pause
//! for [`FIRST_PAUSE`] too, so at low load a worker yields a few dozen times per pause.
//!
//! Pure: the caller yields, reads the clock and counts requests; this decides.

use std::time::{Duration, Instant};

/// A yield that took at least this long handed the CPU to someone else for a real while.
pub(crate) const SLOW_YIELD: Duration = Duration::from_micros(500);
/// How long the first slow yield that brought nothing stops the yields.
pub(crate) const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(10);
/// Useless yields in a row that pause the yields for [`FIRST_PAUSE`].
pub(crate) const FREE_STREAK: u32 = 32;

/// Whether to yield after a wake, from how earlier yields went.
#[derive(Debug)]
pub(crate) struct WakeYield {
    enabled: bool,
    /// No yield before this.
    paused_until: Option<Instant>,
    /// The next pause after a costly yield.
    pause: Duration,
    /// Free yields in a row.
    free_streak: u32,
    /// The yield whose outcome is not known yet: how long it took, and the requests begun
    /// when it returned.
    pending: Option<(Duration, u64)>,
}

/// How a yield went, once the turns after it have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It brought requests beyond the one that woke the worker.
    Paid,
    /// It brought nothing, quickly: nothing else wanted the CPU.
    Free,
    /// It brought nothing and took long: the yields pause.
    Costly,
}

impl WakeYield {
    pub fn new(enabled: bool) -> WakeYield {
        WakeYield {
            enabled,
            paused_until: None,
            pause: FIRST_PAUSE,
            free_streak: 0,
            pending: None,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The worker woke from a wait in its backend at `now`: whether it yields before its turn.
    pub fn should_yield(&mut self, now: Instant) -> bool {
        if !self.enabled || self.pending.is_some() {
            return false;
        }
        match self.paused_until {
            Some(until) if now < until => false,
            _ => {
                self.paused_until = None;
                true
            }
        }
    }

    /// The yield took `took`; `requests` had begun when it returned.
    pub fn yielded(&mut self, took: Duration, requests: u64) {
        self.pending = Some((took, requests));
    }

    /// The worker is idle again at `now`, `requests` begun in all: the outcome of the yield
    /// before, if one is pending.
    pub fn settle(&mut self, now: Instant, requests: u64) -> Option<Outcome> {
        let (took, before) = self.pending.take()?;
        // The request that woke the worker may have been begun before the yield or after it.
        let outcome = if requests.saturating_sub(before) > 1 {
            Outcome::Paid
        } else if took >= SLOW_YIELD {
            Outcome::Costly
        } else {
            Outcome::Free
        };
        match outcome {
            Outcome::Paid => {
                self.pause = FIRST_PAUSE;
                self.free_streak = 0;
            }
            Outcome::Costly => {
                self.paused_until = Some(now + self.pause);
                self.pause = (self.pause * 2).min(MAX_PAUSE);
                self.free_streak = 0;
            }
            Outcome::Free => {
                self.free_streak += 1;
                if self.free_streak >= FREE_STREAK {
                    self.paused_until = Some(now + FIRST_PAUSE);
                    self.free_streak = 0;
                }
            }
        }
        Some(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_micros(2);
    const SLOW: Duration = Duration::from_millis(2);

    #[test]
    fn off_never_yields() {
        let mut y = WakeYield::new(false);
        assert!(!y.should_yield(Instant::now()));
    }

    #[test]
    fn a_yield_that_brings_requests_keeps_the_yields_on() {
        let t = Instant::now();
        let mut y = WakeYield::new(true);
        assert!(y.should_yield(t));
        y.yielded(SLOW, 10);
        // No second yield before the first is settled.
        assert!(!y.should_yield(t));
        assert_eq!(y.settle(t, 25), Some(Outcome::Paid));
        assert!(y.should_yield(t));
    }

    #[test]
    fn useless_yields_in_a_row_pause_the_yields() {
        let t = Instant::now();
        let mut y = WakeYield::new(true);
        for n in 0..u64::from(FREE_STREAK) {
            assert!(y.should_yield(t));
            y.yielded(FAST, n);
            assert_eq!(y.settle(t, n + 1), Some(Outcome::Free));
        }
        assert!(!y.should_yield(t + FIRST_PAUSE - Duration::from_millis(1)));
        assert!(y.should_yield(t + FIRST_PAUSE));
        // Not doubled: another streak pauses as long.
        let t = t + FIRST_PAUSE;
        for n in 0..u64::from(FREE_STREAK) {
            assert!(y.should_yield(t));
            y.yielded(FAST, n);
            y.settle(t, n + 1);
        }
        assert!(y.should_yield(t + FIRST_PAUSE));
    }

    #[test]
    fn a_yield_that_pays_ends_a_streak_of_useless_ones() {
        let t = Instant::now();
        let mut y = WakeYield::new(true);
        for n in 0..u64::from(FREE_STREAK) * 3 {
            assert!(y.should_yield(t), "yield {n}");
            y.yielded(FAST, 10 * n);
            let gained = if n % (u64::from(FREE_STREAK) - 1) == 0 {
                5
            } else {
                1
            };
            y.settle(t, 10 * n + gained);
        }
    }

    #[test]
    fn slow_yields_that_bring_nothing_pause_the_yields_longer_each_time() {
        let mut t = Instant::now();
        let mut y = WakeYield::new(true);
        let mut pauses = Vec::new();
        for n in 0..12 {
            assert!(y.should_yield(t));
            y.yielded(SLOW, n);
            assert_eq!(y.settle(t, n + 1), Some(Outcome::Costly));
            let mut paused = Duration::ZERO;
            while !y.should_yield(t + paused) {
                paused += Duration::from_millis(1);
            }
            // should_yield said yes at t + paused: that yield is not made here.
            pauses.push(paused);
            t += paused;
        }
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert_eq!(pauses[1], FIRST_PAUSE * 2);
        assert_eq!(*pauses.last().unwrap(), MAX_PAUSE);
        // A yield that pays starts the doubling over.
        y.yielded(SLOW, 100);
        assert_eq!(y.settle(t, 200), Some(Outcome::Paid));
        assert!(y.should_yield(t));
        y.yielded(SLOW, 200);
        assert_eq!(y.settle(t, 201), Some(Outcome::Costly));
        assert!(!y.should_yield(t + FIRST_PAUSE - Duration::from_millis(1)));
        assert!(y.should_yield(t + FIRST_PAUSE));
    }

    #[test]
    fn nothing_to_settle_without_a_yield() {
        let mut y = WakeYield::new(true);
        assert_eq!(y.settle(Instant::now(), 5), None);
    }
}
