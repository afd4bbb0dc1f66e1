//! `ring.yield_after_wake`: a worker woken from its wait in the backend yields the CPU once
//! before its turn, while that pays; a yield that handed the CPU to a busy neighbour for long and
//! brought nothing pauses the yields (100 ms, doubling).
//!
//! Runs on the backend `FCGI_URING_IO` names (the suite runs once per backend). Shows that
//! sequential requests yield after their wakes when the setting is on and never when it is off;
//! tests/wake_yield_busy.rs shows the pause next to a busy thread.

mod common;

use common::*;
use fcgi_uring::{Counter, Stats};

/// Yields made, by outcome: (paid, free, costly).
fn yields(stats: &Stats) -> (u64, u64, u64) {
    (
        stats.get(Counter::WakeYieldPaid),
        stats.get(Counter::WakeYieldFree),
        stats.get(Counter::WakeYieldCostly),
    )
}

#[test]
fn sequential_requests_yield_after_their_wakes() {
    let server = demo_yielding(true);
    sequential_1000(server.local_addr());
    // One connection, one request at a time: the worker waits in its backend between them,
    // and each wake that IO ends is followed by a yield, whose outcome is counted when the
    // worker is idle again.
    wait_for("yields after wakes, counted", HANG_GUARD, || {
        let (paid, free, costly) = yields(&server.stats());
        paid + free + costly > 0
    });
    let stats = server.stats();
    assert!(stats.get(Counter::IdleWaitWoken) > 0, "{stats}");
    server.shutdown();
}

#[test]
fn off_never_yields() {
    let server = demo_yielding(false);
    sequential_1000(server.local_addr());
    let stats = server.stats();
    // The worker did wake from its backend, and did not yield.
    assert!(stats.get(Counter::IdleWaitWoken) > 0, "{stats}");
    assert_eq!(yields(&stats), (0, 0, 0), "{stats}");
    server.shutdown();
}
