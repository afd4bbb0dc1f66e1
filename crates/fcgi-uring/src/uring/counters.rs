//! What a ring did: receive completions and buffers, bundles, fixed sends, SQ-thread wakeups,
//! idle spins that found work. Written only by the ring's thread (a plain load and store, no
//! locked add), readable from any thread.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Declares [`RingCounters`] (atomics), [`Tally`] (a batch's increments, for the counters the
/// ring itself counts) and [`RingStats`] (a snapshot) from one list, so the three cannot drift.
macro_rules! ring_counters {
    (
        tallied { $( $(#[$tdoc:meta])* $t:ident, )* }
        direct { $( $(#[$ddoc:meta])* $d:ident, )* }
    ) => {
        /// One ring's counters, shared with whoever wants to read them.
        #[derive(Debug, Default)]
        pub struct RingCounters {
            $( $t: AtomicU64, )*
            $( $d: AtomicU64, )*
        }

        /// Increments to add in one go (at the end of a batch of completions).
        #[derive(Debug, Default)]
        pub(super) struct Tally {
            $( pub $t: u64, )*
        }

        /// A snapshot of one ring's counters, or their sum over several rings.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct RingStats {
            $( $(#[$tdoc])* pub $t: u64, )*
            $( $(#[$ddoc])* pub $d: u64, )*
        }

        impl RingCounters {
            pub(super) fn tally(&self, t: &Tally) {
                $( add(&self.$t, t.$t); )*
            }

            pub fn snapshot(&self) -> RingStats {
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                RingStats {
                    $( $t: get(&self.$t), )*
                    $( $d: get(&self.$d), )*
                }
            }
        }

        impl RingStats {
            /// The sum of several snapshots.
            pub fn sum<'a>(all: impl IntoIterator<Item = &'a RingCounters>) -> RingStats {
                let mut total = RingStats::default();
                for s in all.into_iter().map(RingCounters::snapshot) {
                    $( total.$t += s.$t; )*
                    $( total.$d += s.$d; )*
                }
                total
            }
        }

        impl fmt::Display for RingStats {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut sep = "";
                $(
                    write!(f, concat!("{}", stringify!($t), "={}"), sep, self.$t)?;
                    sep = " ";
                )*
                $( write!(f, concat!("{}", stringify!($d), "={}"), sep, self.$d)?; )*
                Ok(())
            }
        }
    };
}

ring_counters! {
    tallied {
        /// Receive completions that carried data.
        recv_completions,
        /// Provided buffers those completions consumed.
        recv_buffers,
        /// Receive completions that consumed more than one buffer (bundles).
        multi_buffer_recvs,
        /// Provided buffers given back to the ring (equals `recv_buffers` once the worker has
        /// handled every completion it reaped).
        recv_buffers_returned,
        /// Receives that found no provided buffer (ENOBUFS; re-armed, no data lost): each
        /// widens the window of buffers published ahead of the kernel, up to its bound.
        recv_pool_dry,
        /// Sends queued from a registered buffer (WRITE_FIXED), resends included.
        fixed_sends,
        /// Of those, how many sent less than asked (the rest was sent again).
        fixed_short_sends,
        /// Submits that had to wake a sleeping SQPOLL thread.
        sqpoll_wakeups,
    }
    direct {
        /// Idle spins (`idle_spin_us`) that found work before the worker would have slept.
        idle_spin_hits,
        /// Answers the worker sent itself (`ring.direct_send`), each whole.
        direct_sends,
        /// Direct sends the socket did not take whole: the rest went through the ring.
        direct_sends_handed_over,
        /// Receives the worker made itself (`ring.direct_recv`) that returned bytes.
        direct_recvs,
        /// Connections switched to direct receives (a ring receive of upload size, or one that
        /// found the provided-buffer pool empty).
        direct_recv_switches,
        /// Connections switched back to provided buffers (a run of small receives).
        direct_recv_returns,
    }
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

impl RingCounters {
    /// Counts an idle spin that found work (called by the worker that owns the ring).
    pub fn note_idle_spin_hit(&self) {
        add(&self.idle_spin_hits, 1);
    }

    /// Counts a direct send: whole, or handed over to the ring (called by the owning worker).
    pub fn note_direct_send(&self, whole: bool) {
        let counter = if whole {
            &self.direct_sends
        } else {
            &self.direct_sends_handed_over
        };
        add(counter, 1);
    }

    /// Counts a direct receive that returned bytes (called by the owning worker).
    pub fn note_direct_recv(&self) {
        add(&self.direct_recvs, 1);
    }

    /// Counts a connection switched to direct receives (`to_direct`) or back to provided
    /// buffers (called by the owning worker).
    pub fn note_recv_switch(&self, to_direct: bool) {
        self.note_recv_switches(to_direct, 1);
    }

    /// Counts `n` connections switched (as [`RingCounters::note_recv_switch`]).
    pub fn note_recv_switches(&self, to_direct: bool, n: u64) {
        let counter = if to_direct {
            &self.direct_recv_switches
        } else {
            &self.direct_recv_returns
        };
        add(counter, n);
    }

    /// Receives that found the pool empty so far (`recv_pool_dry`).
    pub fn pool_dry(&self) -> u64 {
        self.recv_pool_dry.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_snapshot_sum_and_display_cover_every_counter() {
        let a = RingCounters::default();
        let b = RingCounters::default();
        let t = Tally {
            recv_completions: 1,
            recv_buffers: 2,
            multi_buffer_recvs: 3,
            recv_buffers_returned: 4,
            recv_pool_dry: 8,
            fixed_sends: 5,
            fixed_short_sends: 6,
            sqpoll_wakeups: 7,
        };
        a.tally(&t);
        a.tally(&t);
        b.tally(&t);
        b.note_idle_spin_hit();
        a.note_direct_send(true);
        a.note_direct_send(true);
        b.note_direct_send(false);
        a.note_direct_recv();
        b.note_direct_recv();
        b.note_direct_recv();
        a.note_recv_switch(true);
        b.note_recv_switch(true);
        a.note_recv_switch(false);
        let s = RingStats::sum([&a, &b]);
        assert_eq!(
            s.to_string(),
            "recv_completions=3 recv_buffers=6 multi_buffer_recvs=9 recv_buffers_returned=12 \
             recv_pool_dry=24 fixed_sends=15 fixed_short_sends=18 sqpoll_wakeups=21 \
             idle_spin_hits=1 direct_sends=2 direct_sends_handed_over=1 direct_recvs=3 \
             direct_recv_switches=2 direct_recv_returns=1"
        );
        assert_eq!(a.snapshot().idle_spin_hits, 0);
    }
}
