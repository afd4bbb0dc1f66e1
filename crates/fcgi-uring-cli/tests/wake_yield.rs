//! `ring.yield_after_wake`: a worker woken from its wait in the backend yields the CPU once
//! before its turn, while that pays; a yield that handed the CPU to a busy neighbour for long and
//! brought nothing pauses the yields (100 ms, doubling).
//!
//! Runs on the backend `FCGI_URING_IO` names (the suite runs once per backend). Shows that
//! sequential requests yield after their wakes when the setting is on and never when it is off,
//! and that next to a busy thread on the worker's CPU the costly yields stop after a few while
//! the requests go on (without the pause every request would make one).

mod common;

use common::*;
use fcgi_uring::{Config, Counter, ServerHandle, Stats, service_fn};
use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn start(yield_after_wake: bool) -> ServerHandle {
    let config = Config::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .workers(1)
        .pin_workers(false)
        .shutdown_timeout(Duration::from_secs(2))
        .yield_after_wake(yield_after_wake)
        .build()
        .unwrap();
    fcgi_uring::Server::new(config)
        .start(|| service_fn(fcgi_uring_cli::demo::app))
        .expect("server starts")
}

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
    let server = start(true);
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
    let server = start(false);
    sequential_1000(server.local_addr());
    let stats = server.stats();
    // The worker did wake from its backend, and did not yield.
    assert!(stats.get(Counter::IdleWaitWoken) > 0, "{stats}");
    assert_eq!(yields(&stats), (0, 0, 0), "{stats}");
    server.shutdown();
}

/// The worker thread, for `sched_setaffinity`.
fn worker_pid() -> Pid {
    i32::try_from(worker_tid())
        .ok()
        .and_then(Pid::from_raw)
        .expect("a thread id")
}

fn only(cpu: usize) -> CpuSet {
    let mut set = CpuSet::new();
    set.set(cpu);
    set
}

#[test]
fn next_to_a_busy_thread_the_costly_yields_pause() {
    let allowed = sched_getaffinity(None).expect("this process's CPUs");
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
        .filter(|&c| allowed.is_set(c))
        .collect();
    assert!(
        cpus.len() >= 2,
        "this test needs two CPUs (the worker and a busy thread on one, the client on another), has {cpus:?}"
    );
    let (shared, client) = (cpus[0], cpus[1]);
    let server = start(true);
    sched_setaffinity(Some(worker_pid()), &only(shared)).expect("pin the worker");
    sched_setaffinity(None, &only(client)).expect("pin the client");
    let busy = Arc::new(AtomicBool::new(true));
    let spinning = Arc::new(AtomicBool::new(false));
    let hog = {
        let (busy, spinning) = (busy.clone(), spinning.clone());
        std::thread::spawn(move || {
            sched_setaffinity(None, &only(shared)).expect("pin the busy thread");
            spinning.store(true, Ordering::Relaxed);
            while busy.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    wait_for("the busy thread spinning", HANG_GUARD, || {
        spinning.load(Ordering::Relaxed)
    });
    // Each yield hands the CPU to the busy thread until the scheduler takes it back (about a
    // tick), and one connection's next request comes only after the answer: such a yield is
    // costly, and pauses the yields.
    sequential_1000(server.local_addr());
    busy.store(false, Ordering::Relaxed);
    hog.join().unwrap();
    let stats = server.stats();
    let (_, _, costly) = yields(&stats);
    assert!(costly >= 1, "no yield was found costly: {stats}");
    // Pauses of 100, 200, 400... ms: a handful in the seconds this takes at most, not one
    // per request.
    assert!(costly <= 10, "the costly yields did not pause: {stats}");
    server.shutdown();
}
