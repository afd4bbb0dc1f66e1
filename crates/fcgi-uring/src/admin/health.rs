//! Readiness: starting, ready, draining. Written by the server (start, drain), read by the
//! admin listener (`/readyz`, the `fcgi_uring_ready` gauge) and by the ping path.
//!
//! Liveness (`/healthz`): whether each worker still turns its loop. The admin listener asks
//! once a second, a worker answers at its next loop turn (woken for it when it sleeps), and a
//! question left unanswered past `admin.stall_timeout` means something holds the worker's
//! thread: a handler that blocks it (a synchronous call, a long computation) instead of
//! awaiting.

use crate::wheel::process_ms;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::Waker;
use std::time::Duration;

/// Where the server is in its life, as a load balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Workers are starting: not ready for traffic yet.
    Starting,
    /// Every worker accepts.
    Ready,
    /// A shutdown began: traffic should go elsewhere (requests still in flight are served).
    Draining,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Starting => "starting",
            Readiness::Ready => "ready",
            Readiness::Draining => "draining",
        }
    }
}

/// The server's readiness, shared between threads.
#[derive(Debug)]
pub struct Health(AtomicU8);

impl Default for Health {
    fn default() -> Health {
        Health(AtomicU8::new(Readiness::Starting as u8))
    }
}

impl Health {
    pub fn get(&self) -> Readiness {
        match self.0.load(Ordering::Acquire) {
            0 => Readiness::Starting,
            1 => Readiness::Ready,
            _ => Readiness::Draining,
        }
    }

    /// Every worker accepts.
    pub fn set_ready(&self) {
        // Never from draining back to ready.
        let _ = self.0.compare_exchange(
            Readiness::Starting as u8,
            Readiness::Ready as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// A shutdown began; true the first time.
    pub fn set_draining(&self) -> bool {
        self.0.swap(Readiness::Draining as u8, Ordering::AcqRel) != Readiness::Draining as u8
    }
}

/// One worker's answers to the admin listener's questions (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    /// The admin listener asks: the worker leaves a waker when it sleeps.
    watched: AtomicBool,
    asked: AtomicU64,
    answered: AtomicU64,
    /// When the last question was asked, in [`process_ms`].
    asked_at: AtomicU64,
    /// How to wake the worker while it sleeps; the lock also orders a question against a
    /// worker going to sleep, so that no question is missed.
    sleeping: Mutex<Option<Waker>>,
}

impl Liveness {
    /// The worker, at each loop turn: answers the question asked, if any.
    pub fn answer(&self) {
        let asked = self.asked.load(Ordering::Acquire);
        if self.answered.load(Ordering::Relaxed) != asked {
            self.answered.store(asked, Ordering::Release);
        }
    }

    /// The worker, before it sleeps: leaves `waker` for the next question. True when a
    /// question is waiting already: the worker turns its loop instead of sleeping.
    pub fn sleeping(&self, waker: &Waker) -> bool {
        if !self.watched.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(mut slot) = self.sleeping.lock() else {
            return false;
        };
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
        self.answered.load(Ordering::Acquire) != self.asked.load(Ordering::Acquire)
    }

    /// Before the worker starts, when `admin.stall_timeout` is on: from then on the worker
    /// leaves a waker each time it sleeps (so that even the first question wakes it).
    pub fn watch(&self) {
        self.watched.store(true, Ordering::Relaxed);
    }

    /// The admin listener, once a second: asks again once the last question was answered,
    /// and wakes the worker if it sleeps.
    pub fn ask(&self) {
        let Ok(slot) = self.sleeping.lock() else {
            return;
        };
        if self.answered.load(Ordering::Acquire) != self.asked.load(Ordering::Acquire) {
            return;
        }
        // When first, then the question: a reader that sees the question sees its time.
        self.asked_at.store(process_ms(), Ordering::Release);
        self.asked.fetch_add(1, Ordering::Release);
        let waker = slot.clone();
        drop(slot);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// How long the question in flight has gone unanswered; `None` when it was answered.
    pub fn unanswered_for(&self) -> Option<Duration> {
        let asked = self.asked.load(Ordering::Acquire);
        if self.answered.load(Ordering::Acquire) == asked {
            return None;
        }
        let at = self.asked_at.load(Ordering::Acquire);
        Some(Duration::from_millis(process_ms().saturating_sub(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_is_answered_at_the_next_turn_and_wakes_a_sleeping_worker() {
        let live = Liveness::default();
        let woken = std::sync::Arc::new(AtomicBool::new(false));
        let waker = waker_setting(woken.clone());
        // Not watched: a sleeping worker leaves nothing (and takes no lock).
        assert!(!live.sleeping(&waker));
        live.watch();
        assert_eq!(live.unanswered_for(), None, "nothing asked yet");
        assert!(!live.sleeping(&waker), "nothing waiting");
        live.ask();
        assert!(
            woken.swap(false, Ordering::SeqCst),
            "the first question wakes it"
        );
        assert!(live.unanswered_for().is_some());
        assert!(live.sleeping(&waker), "a question waits: no sleep");
        live.answer();
        assert_eq!(live.unanswered_for(), None);
        assert!(!live.sleeping(&waker));
        live.ask();
        assert!(
            woken.load(Ordering::SeqCst),
            "the sleeping worker was woken"
        );
        // Not asked again while unanswered: the time of the first question stands.
        live.ask();
        assert!(live.unanswered_for().is_some());
        live.answer();
        assert_eq!(live.unanswered_for(), None);
    }

    fn waker_setting(flag: std::sync::Arc<AtomicBool>) -> Waker {
        struct Flag(std::sync::Arc<AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        Waker::from(std::sync::Arc::new(Flag(flag)))
    }

    #[test]
    fn starting_then_ready_then_draining_never_back() {
        let h = Health::default();
        assert_eq!(h.get(), Readiness::Starting);
        h.set_ready();
        assert_eq!(h.get(), Readiness::Ready);
        assert!(h.set_draining());
        assert!(!h.set_draining());
        h.set_ready();
        assert_eq!(h.get(), Readiness::Draining);
    }
}
