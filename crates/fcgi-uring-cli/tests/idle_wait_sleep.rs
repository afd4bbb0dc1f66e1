//! `ring.idle_wait_us` between sequential requests: the waits in the backend are taken, a wait
//! with no IO ends, and the worker then sleeps in tokio's reactor (not in a loop of short
//! waits).
//!
//! Its own test binary, so that this process runs one server (the worker thread is found by its
//! name). Runs on the backend `FCGI_URING_IO` names.

mod common;

use common::*;
use fcgi_uring::Counter;

#[test]
fn sequential_requests_wake_from_the_backend_and_an_idle_worker_then_sleeps_in_tokio() {
    let server = demo_with(
        test_config()
            .into_builder()
            .idle_wait_us(1000)
            .build()
            .unwrap(),
    );
    let addr = server.local_addr().clone();
    sequential_1000(&addr);
    // One connection, one request at a time: the next request comes well within 1 ms of the
    // previous answer for most of them, so waits in the backend are ended by IO.
    let stats = server.stats();
    assert!(stats.get(Counter::IdleWaitWoken) > 0, "{stats}");
    // With no more IO, a wait expires and the worker goes to sleep in tokio's reactor:
    // `epoll_wait` (tokio's, through mio and libc; the backends' own calls are io_uring_enter
    // and rustix's epoll_pwait), and stays there.
    let tid = worker_tid();
    wait_for("a backend wait to expire", HANG_GUARD, || {
        server.stats().get(Counter::IdleWaitExpired) > 0
    });
    #[cfg(target_arch = "x86_64")]
    wait_for(
        "the worker asleep in tokio's epoll_wait",
        HANG_GUARD,
        || blocked_in(tid) == Some(libc::SYS_epoll_wait),
    );
    // After one more request the worker waits in its backend again, and when that wait
    // expires it goes back to sleep in tokio (not into a loop of short waits, which would
    // never be found in tokio's epoll_wait).
    let expired = server.stats().get(Counter::IdleWaitExpired);
    let r = get(&addr, "/hello");
    assert_eq!(r.status, 200);
    wait_for("another backend wait to expire", HANG_GUARD, || {
        server.stats().get(Counter::IdleWaitExpired) > expired
    });
    #[cfg(target_arch = "x86_64")]
    wait_for(
        "the worker asleep in tokio's epoll_wait again",
        HANG_GUARD,
        || blocked_in(tid) == Some(libc::SYS_epoll_wait),
    );
    server.shutdown();
}
