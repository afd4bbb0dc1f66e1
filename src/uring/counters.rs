//! What a ring did: receive completions and buffers, bundles, fixed sends, SQ-thread wakeups,
//! idle spins that found work. Written only by the ring's thread (a plain load and store, no
//! locked add), readable from any thread.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// One ring's counters, shared with whoever wants to read them.
#[derive(Debug, Default)]
pub struct RingCounters {
    recv_completions: AtomicU64,
    recv_buffers: AtomicU64,
    multi_buffer_recvs: AtomicU64,
    recv_buffers_returned: AtomicU64,
    fixed_sends: AtomicU64,
    fixed_short_sends: AtomicU64,
    sqpoll_wakeups: AtomicU64,
    idle_spin_hits: AtomicU64,
}

/// Increments to add in one go (at the end of a batch of completions).
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub recv_completions: u64,
    pub recv_buffers: u64,
    pub multi_buffer_recvs: u64,
    pub recv_buffers_returned: u64,
    pub fixed_sends: u64,
    pub fixed_short_sends: u64,
    pub sqpoll_wakeups: u64,
}

/// A snapshot of [`RingCounters`], or their sum over several rings.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingStats {
    /// Receive completions that carried data.
    pub recv_completions: u64,
    /// Provided buffers those completions consumed.
    pub recv_buffers: u64,
    /// Receive completions that consumed more than one buffer (bundles).
    pub multi_buffer_recvs: u64,
    /// Provided buffers given back to the ring (equals `recv_buffers` once the worker has
    /// handled every completion it reaped).
    pub recv_buffers_returned: u64,
    /// Sends queued from a registered buffer (WRITE_FIXED), resends included.
    pub fixed_sends: u64,
    /// Of those, how many sent less than asked (the rest was sent again).
    pub fixed_short_sends: u64,
    /// Submits that had to wake a sleeping SQPOLL thread.
    pub sqpoll_wakeups: u64,
    /// Idle spins (`idle_spin_us`) that found work before the worker would have slept.
    pub idle_spin_hits: u64,
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

impl RingCounters {
    pub(super) fn tally(&self, t: &Tally) {
        add(&self.recv_completions, t.recv_completions);
        add(&self.recv_buffers, t.recv_buffers);
        add(&self.multi_buffer_recvs, t.multi_buffer_recvs);
        add(&self.recv_buffers_returned, t.recv_buffers_returned);
        add(&self.fixed_sends, t.fixed_sends);
        add(&self.fixed_short_sends, t.fixed_short_sends);
        add(&self.sqpoll_wakeups, t.sqpoll_wakeups);
    }

    /// Counts an idle spin that found work (called by the worker that owns the ring).
    pub fn note_idle_spin_hit(&self) {
        add(&self.idle_spin_hits, 1);
    }

    pub fn snapshot(&self) -> RingStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RingStats {
            recv_completions: get(&self.recv_completions),
            recv_buffers: get(&self.recv_buffers),
            multi_buffer_recvs: get(&self.multi_buffer_recvs),
            recv_buffers_returned: get(&self.recv_buffers_returned),
            fixed_sends: get(&self.fixed_sends),
            fixed_short_sends: get(&self.fixed_short_sends),
            sqpoll_wakeups: get(&self.sqpoll_wakeups),
            idle_spin_hits: get(&self.idle_spin_hits),
        }
    }
}

impl RingStats {
    /// The sum of several snapshots.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a RingCounters>) -> RingStats {
        let mut total = RingStats::default();
        for s in all.into_iter().map(RingCounters::snapshot) {
            total.recv_completions += s.recv_completions;
            total.recv_buffers += s.recv_buffers;
            total.multi_buffer_recvs += s.multi_buffer_recvs;
            total.recv_buffers_returned += s.recv_buffers_returned;
            total.fixed_sends += s.fixed_sends;
            total.fixed_short_sends += s.fixed_short_sends;
            total.sqpoll_wakeups += s.sqpoll_wakeups;
            total.idle_spin_hits += s.idle_spin_hits;
        }
        total
    }
}

impl fmt::Display for RingStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recv_completions={} recv_buffers={} multi_buffer_recvs={} recv_buffers_returned={} \
             fixed_sends={} fixed_short_sends={} sqpoll_wakeups={} idle_spin_hits={}",
            self.recv_completions,
            self.recv_buffers,
            self.multi_buffer_recvs,
            self.recv_buffers_returned,
            self.fixed_sends,
            self.fixed_short_sends,
            self.sqpoll_wakeups,
            self.idle_spin_hits
        )
    }
}
