//! The idle worker's tick: a multishot IORING_OP_TIMEOUT that completes every period while the
//! worker waits for IO in `io_uring_enter` ([`crate::worker::Pace`]), so that no wait needs a
//! timeout of its own (a timer started and cancelled per wait, in the kernel).
//!
//! Its completions carry `user_data` values no operation of the op table has (the high half is
//! `u32::MAX`, a generation the table never uses), numbered per start, so that the last
//! completion of a stopped tick is told apart from the running one's. The kernel copies the
//! period when it takes the entry; the period stays in a box as long as the ring all the same.

use io_uring::types::{TimeoutFlags, Timespec};
use io_uring::{opcode, squeue};
use std::time::Duration;

use super::ops::INTERNAL;

/// High half of a tick's `user_data`.
const TICK_HIGH: u64 = 0xffff_ffff;

#[derive(Debug)]
pub(super) struct Tick {
    /// INVARIANT: read by the kernel when it takes a start's entry; lives as long as the ring.
    period: Box<Timespec>,
    every: Duration,
    /// The `user_data` of the running tick.
    running: Option<u64>,
    /// The `user_data` of the last stopped tick until its final completion (the kernel's
    /// timeout is gone then).
    stopping: Option<u64>,
    /// Ticks started (numbers the `user_data`).
    started: u32,
    ticked: bool,
    /// The kernel refused a multishot timeout (before Linux 6.4): waits are timed instead.
    refused: bool,
}

impl Default for Tick {
    fn default() -> Tick {
        Tick {
            period: Box::new(Timespec::new()),
            every: Duration::from_millis(1),
            running: None,
            stopping: None,
            started: 0,
            ticked: false,
            refused: false,
        }
    }
}

impl Tick {
    /// The entry that starts a tick every `every`, unless one runs or the kernel refused one.
    pub fn start(&mut self, every: Duration) -> Option<squeue::Entry> {
        self.every = every;
        if self.running.is_some() || self.refused {
            return None;
        }
        *self.period = Timespec::from(every);
        // Never u32::MAX: (TICK_HIGH, u32::MAX) is INTERNAL.
        self.started = (self.started + 1) % u32::MAX;
        let id = (TICK_HIGH << 32) | u64::from(self.started);
        self.running = Some(id);
        let entry = opcode::Timeout::new(&*self.period)
            .count(0)
            .flags(TimeoutFlags::MULTISHOT)
            .build()
            .user_data(id);
        Some(entry)
    }

    /// The entry that stops the running tick, if one runs.
    pub fn stop(&mut self) -> Option<squeue::Entry> {
        self.ticked = false;
        let id = self.running.take()?;
        self.stopping = Some(id);
        Some(opcode::TimeoutRemove::new(id).build().user_data(INTERNAL))
    }

    pub fn take(&mut self) -> bool {
        std::mem::take(&mut self.ticked)
    }

    pub fn running(&self) -> bool {
        self.running.is_some()
    }

    /// A stopped tick's timeout may still be in the kernel (its final completion has not come).
    #[cfg(test)]
    pub fn stopping(&self) -> bool {
        self.stopping.is_some()
    }

    pub fn period(&self) -> Duration {
        self.every
    }

    /// A wait timed by the period (no tick runs) ended with no completion: that is a tick.
    pub fn expired_wait(&mut self) {
        self.ticked = true;
    }

    /// Whether a completion is a tick's.
    pub fn owns(&self, user_data: u64) -> bool {
        user_data >> 32 == TICK_HIGH && user_data != INTERNAL
    }

    /// A tick's completion: a period passed (`more`), or the tick ended: stopped (an older
    /// start's last word, ignored), refused by a kernel without multishot timeouts (EINVAL:
    /// waits are timed from now on), or failed (the next start tries again).
    pub fn on_completion(&mut self, user_data: u64, res: i32, more: bool) {
        if self.running != Some(user_data) {
            if !more && self.stopping == Some(user_data) {
                self.stopping = None;
            }
            return;
        }
        self.ticked = true;
        if !more {
            self.running = None;
            self.refused |= res == -libc::EINVAL;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_ids_are_never_an_op_or_internal_and_a_stopped_ticks_last_word_is_ignored() {
        let mut tick = Tick::default();
        assert!(!tick.owns(INTERNAL));
        assert!(!tick.owns(1 << 32 | 5), "an op table id");
        let first = tick
            .start(Duration::from_millis(1))
            .unwrap()
            .get_user_data();
        assert!(tick.owns(first));
        assert!(tick.start(Duration::from_millis(1)).is_none(), "one runs");
        tick.on_completion(first, -libc::ETIME, true);
        assert!(tick.take() && !tick.take());
        tick.stop().unwrap();
        let second = tick
            .start(Duration::from_millis(1))
            .unwrap()
            .get_user_data();
        assert_ne!(first, second);
        assert!(tick.stopping());
        tick.on_completion(first, -libc::ETIME, true);
        assert!(tick.stopping(), "not its end yet");
        tick.on_completion(first, -libc::ECANCELED, false);
        assert!(!tick.take() && tick.running(), "the old tick's end");
        assert!(!tick.stopping());
        tick.on_completion(second, -libc::ETIME, true);
        assert!(tick.take());
    }

    #[test]
    fn a_refused_tick_is_not_started_again_and_numbers_skip_internal() {
        let mut tick = Tick::default();
        let id = tick
            .start(Duration::from_millis(2))
            .unwrap()
            .get_user_data();
        tick.on_completion(id, -libc::EINVAL, false);
        assert!(
            tick.take(),
            "the worker is told, and waits timed from now on"
        );
        assert!(!tick.running());
        assert!(tick.start(Duration::from_millis(2)).is_none());
        assert_eq!(tick.period(), Duration::from_millis(2));

        let mut tick = Tick {
            started: u32::MAX - 1,
            ..Tick::default()
        };
        let id = tick
            .start(Duration::from_millis(1))
            .unwrap()
            .get_user_data();
        assert_ne!(id, INTERNAL);
        assert!(tick.owns(id));
    }
}
