//! `ring.yield_after_wake` next to a busy thread on the worker's CPU: the costly yields (each
//! hands the CPU to the busy thread until the scheduler takes it back) stop after a few, while
//! the requests go on; without the pause every request would make one.
//!
//! Its own test binary, so that this process runs one server (the worker thread is found by its
//! name, and pinned). Runs on the backend `FCGI_URING_IO` names.

mod common;

use common::*;
use fcgi_client::RequestSpec;
use fcgi_uring::Counter;
use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    let server = demo_yielding(true);
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
    // costly, and pauses the yields. Each request is sent once the worker sleeps (in its
    // backend's wait, which comes first after an answer): with the busy thread on its CPU the
    // worker could otherwise find the next request already there when it gets the CPU back,
    // and not wait at all.
    let tid = worker_tid();
    let mut c = connect(server.local_addr());
    for i in 0..200 {
        wait_for("the worker asleep", HANG_GUARD, || {
            thread_state(tid) == Some('S')
        });
        let mut spec = RequestSpec::get("/hello");
        spec.keep_conn = true;
        let r = c.request(&spec).expect("request");
        assert_eq!(r.status, 200, "request {i}");
    }
    busy.store(false, Ordering::Relaxed);
    hog.join().unwrap();
    let stats = server.stats();
    let costly = stats.get(Counter::WakeYieldCostly);
    assert!(costly >= 1, "no yield was found costly: {stats}");
    // Pauses of 100, 200, 400... ms: a handful in the seconds this takes at most, not one
    // per request.
    assert!(costly <= 10, "the costly yields did not pause: {stats}");
    server.shutdown();
}
