//! The worker clock and a coarse hashed timer wheel, generic over the key it holds.
//!
//! Guarantees: an entry inserted for tick `t` is handed back by [`Wheel::advance`] once the
//! clock reaches `t` and not before; deadlines past the wheel's horizon wait in its last slot
//! and come back early (the caller re-evaluates them). The wheel knows nothing of what its keys
//! name: a key may be stale when it fires, and the caller decides.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since this process first asked: a monotonic stamp that fits an atomic and
/// means the same on every thread (for liveness stamps one thread writes and another reads).
pub(crate) fn process_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the worker started.
pub(crate) type Millis = u64;

/// Slots of the wheel: deadlines further out than this many ticks wait in the last slot and are
/// re-evaluated when it comes round.
const SLOTS: usize = 2048;

/// Words of the occupancy bitmap: one bit per slot.
const WORDS: usize = SLOTS / 64;

/// A timer wheel of keys, with a tick of `resolution_ms`.
pub(crate) struct Wheel<K> {
    slots: Vec<Vec<K>>,
    /// Bit `i` set: slot `i` holds entries. [`Wheel::first_occupied`] reads this (32 words)
    /// instead of looking at up to 2,048 slots.
    occupied: [u64; WORDS],
    resolution_ms: u64,
    /// The next tick to process; every entry is at a tick >= this.
    next: u64,
    len: usize,
    /// The earliest tick that holds entries (`None`: empty), what [`Wheel::next_due`] answers.
    /// The worker asks before every wait, entries come and go far less often: kept here as
    /// entries are inserted, and looked for in the bitmap only after an advance took the
    /// entries it named.
    first: Option<u64>,
}

impl<K: Copy> Wheel<K> {
    pub fn new(now: Millis, resolution: Duration) -> Wheel<K> {
        let resolution_ms = (resolution.as_millis() as u64).max(1);
        Wheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: [0; WORDS],
            resolution_ms,
            next: now / resolution_ms,
            len: 0,
            first: None,
        }
    }

    /// The tick at which a deadline at `at` is looked at: rounded up, clamped to the horizon.
    pub fn tick_for(&self, at: Millis) -> u64 {
        at.div_ceil(self.resolution_ms)
            .clamp(self.next, self.next + SLOTS as u64 - 1)
    }

    pub fn insert(&mut self, key: K, tick: u64) {
        let i = (tick % SLOTS as u64) as usize;
        self.slots[i].push(key);
        self.occupied[i / 64] |= 1 << (i % 64);
        self.len += 1;
        self.first = Some(self.first.map_or(tick, |f| f.min(tick)));
    }

    /// Moves the entries due at or before `now` to `due`, with the tick each was scheduled for.
    pub fn advance(&mut self, now: Millis, due: &mut Vec<(K, u64)>) {
        // The worker advances every loop turn, most of them within the tick it is in: nothing
        // to do, and no division to find that out.
        if now < self.next * self.resolution_ms {
            return;
        }
        let now_tick = now / self.resolution_ms;
        while self.next <= now_tick && self.len > 0 {
            let tick = self.next;
            let i = (tick % SLOTS as u64) as usize;
            let slot = &mut self.slots[i];
            self.len -= slot.len();
            due.extend(slot.drain(..).map(|k| (k, tick)));
            self.occupied[i / 64] &= !(1 << (i % 64));
            self.next += 1;
        }
        self.next = self.next.max(now_tick + 1);
        if self.first.is_some_and(|f| f < self.next) {
            self.first = self.first_occupied();
        }
    }

    /// When the first non-empty slot is due.
    pub fn next_due(&self) -> Option<Millis> {
        self.first.map(|tick| tick * self.resolution_ms)
    }

    /// The tick of the first non-empty slot, from `next` round the wheel.
    fn first_occupied(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        // The occupied slots from `next`'s round the wheel: the first word from `next`'s bit
        // on, the other words, then the first word's bits before `next`'s.
        let start = (self.next % SLOTS as u64) as usize;
        let (first, bit) = (start / 64, start % 64);
        let below = (1u64 << bit) - 1;
        (0..=WORDS).find_map(|step| {
            let w = (first + step) % WORDS;
            let mask = match step {
                0 => self.occupied[w] & !below,
                WORDS => self.occupied[w] & below,
                _ => self.occupied[w],
            };
            (mask != 0).then(|| {
                let slot = w * 64 + mask.trailing_zeros() as usize;
                let ahead = (slot + SLOTS - start) % SLOTS;
                self.next + ahead as u64
            })
        })
    }
}

/// Worker clock: read once per loop turn.
pub(crate) struct Clock {
    start: Instant,
    now: Cell<Instant>,
    /// `now` in milliseconds since `start`, computed once per update (it is asked for several
    /// times per request).
    now_ms: Cell<Millis>,
}

impl Clock {
    pub fn new() -> Clock {
        let now = Instant::now();
        Clock {
            start: now,
            now: Cell::new(now),
            now_ms: Cell::new(0),
        }
    }

    pub fn update(&self) {
        self.set(Instant::now());
    }

    fn set(&self, now: Instant) {
        self.now.set(now);
        self.now_ms
            .set(now.duration_since(self.start).as_millis() as u64);
    }

    pub fn now(&self) -> Instant {
        self.now.get()
    }

    pub fn now_ms(&self) -> Millis {
        self.now_ms.get()
    }

    /// Moves the clock on by hand (tests of deadlines).
    #[cfg(any(test, feature = "bench-internals"))]
    pub fn advance(&self, by: Duration) {
        self.set(self.now.get() + by);
    }

    pub fn at(&self, ms: Millis) -> Instant {
        self.start + Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RES: Duration = Duration::from_millis(50);

    #[test]
    fn entries_fire_at_their_tick_and_not_before() {
        let mut w = Wheel::new(0, RES);
        let t = w.tick_for(120);
        w.insert(1u32, t);
        assert_eq!(w.next_due(), Some(150));
        let mut due = Vec::new();
        w.advance(149, &mut due);
        assert!(due.is_empty());
        w.advance(150, &mut due);
        assert_eq!(due, vec![(1, t)]);
        assert_eq!(w.next_due(), None);
    }

    /// The first occupied slot by looking at every slot (what the bitmap must agree with).
    fn next_due_by_scan<K>(w: &Wheel<K>) -> Option<Millis> {
        if w.len == 0 {
            return None;
        }
        (w.next..w.next + SLOTS as u64)
            .find(|t| !w.slots[(*t % SLOTS as u64) as usize].is_empty())
            .map(|t| t * w.resolution_ms)
    }

    proptest::proptest! {
        /// After any sequence of inserts (anywhere up to the horizon) and advances (of any
        /// size, across the wheel's wrap), the kept first tick and the bitmap's answer are the
        /// slot scan's.
        #[test]
        fn next_due_is_the_first_occupied_slot(
            start in 0u64..10_000_000,
            ops in proptest::collection::vec((0u64..200_000, proptest::bool::ANY), 1..200),
        ) {
            let mut w = Wheel::new(start, RES);
            let mut now = start;
            let mut due = Vec::new();
            for (key, (amount, insert)) in ops.into_iter().enumerate() {
                if insert {
                    let tick = w.tick_for(now + amount);
                    w.insert(key, tick);
                } else {
                    now += amount / 7;
                    w.advance(now, &mut due);
                }
                proptest::prop_assert_eq!(w.next_due(), next_due_by_scan(&w));
                let bitmap = w.first_occupied().map(|t| t * w.resolution_ms);
                proptest::prop_assert_eq!(bitmap, next_due_by_scan(&w));
            }
        }
    }

    #[test]
    fn far_deadlines_wait_at_the_horizon() {
        let w: Wheel<u32> = Wheel::new(1000, RES);
        let t = w.tick_for(u64::MAX / 2);
        assert_eq!(t, 1000 / 50 + SLOTS as u64 - 1);
        let past = w.tick_for(0);
        assert_eq!(past, 1000 / 50);
    }
}
