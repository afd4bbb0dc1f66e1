//! Each runtime knob of `[ring]` turned on in a real server: every demo route (POST /echo of
//! 1 MiB included), 1,000 sequential requests on one connection, multiplexed requests, and what
//! the ring counted to show that the knob's path was really taken.
//!
//! Specific to the io_uring backend (its ring's knobs and statistics): every server here asks
//! for `io = uring`, whatever `FCGI_URING_IO` says, so the suite's epoll pass runs them on
//! io_uring too.

mod common;

use common::*;
use fcgi_client::RequestSpec;
use fcgi_uring::RingStats;
use fcgi_uring::{Addr, Config, IoMode, RingConfig, Server, ServerHandle, service_fn};

/// The knobs a test turns: the ring's, and the idle spin.
struct Knobs {
    ring: RingConfig,
    idle_spin_us: u32,
}

fn start(listen: Addr, set: impl FnOnce(&mut Knobs)) -> ServerHandle {
    let mut knobs = Knobs {
        ring: RingConfig::default(),
        idle_spin_us: 0,
    };
    set(&mut knobs);
    start_uring_demo(listen, knobs.ring, knobs.idle_spin_us)
}

fn tcp(set: impl FnOnce(&mut Knobs)) -> ServerHandle {
    start("127.0.0.1:0".parse().unwrap(), set)
}

fn unix(set: impl FnOnce(&mut Knobs)) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(Addr::Unix(dir.path().join("app.sock")), set);
    (server, dir)
}

/// 1 MiB that is not a repetition of a short pattern (a misplaced buffer would show).
fn mib() -> Vec<u8> {
    (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Every demo route, POST /echo of 1 MiB included.
fn routes(addr: &Addr) {
    let r = get(addr, "/hello");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    let r = get(addr, "/json");
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(b"{"));
    let r = get(addr, "/sleep?ms=20");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"slept 20"[..]));
    assert_eq!(get(addr, "/nope").status, 404);
    let body = mib();
    let r = connect(addr)
        .request(&RequestSpec::post("/echo", body.clone()))
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body == body,
        "1 MiB echo differs ({} bytes back)",
        r.body.len()
    );
    let r = connect(addr)
        .request(&RequestSpec::post("/echo", Vec::new()))
        .unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
}

/// 50 requests in flight on one connection, echoes of different sizes among them.
fn multiplexed(addr: &Addr) {
    let mut c = connect(addr);
    let mut expected = Vec::new();
    for id in 1..=50u16 {
        let spec = if id % 5 == 0 {
            let body: Vec<u8> = (0..usize::from(id) * 1000)
                .map(|i| (i % 249) as u8)
                .collect();
            expected.push((id, body.clone()));
            RequestSpec::post("/echo", body)
        } else {
            expected.push((id, b"Hello, World!".to_vec()));
            RequestSpec::get("/hello")
        };
        let mut spec = spec;
        spec.keep_conn = true;
        c.begin(&spec, id).unwrap();
    }
    let ids: Vec<u16> = (1..=50).collect();
    let (got, _) = collect_until_ended(&mut c, &ids);
    for (id, body) in expected {
        let (head, back) = split_cgi(&got[&id].stdout);
        assert!(back == body, "id {id}: {head}");
        assert_eq!(got[&id].end_requests, 1, "id {id}");
    }
}

fn exercise(addr: &Addr) {
    routes(addr);
    sequential_1000(addr);
    multiplexed(addr);
}

fn stats(server: &ServerHandle) -> RingStats {
    let s = server.ring_stats();
    eprintln!("{s}");
    s
}

/// Every buffer the kernel handed over came back.
fn buffers_all_back(s: &RingStats) {
    assert!(s.recv_buffers > 0, "{s}");
    assert_eq!(s.recv_buffers, s.recv_buffers_returned, "{s}");
}

#[test]
fn defaults_take_none_of_the_new_paths() {
    let server = tcp(|_| {});
    exercise(server.local_addr());
    let s = stats(&server);
    buffers_all_back(&s);
    assert_eq!(s.recv_buffers, s.recv_completions, "one buffer each: {s}");
    assert_eq!(s.multi_buffer_recvs + s.fixed_sends + s.sqpoll_wakeups, 0);
    assert_eq!(s.idle_spin_hits, 0);
    let f = server.features().unwrap();
    assert!(!f.sqpoll && !f.recv_bundle && f.registered_send_buffers == 0);
}

#[test]
fn sqpoll() {
    let server = tcp(|c| {
        c.ring.sqpoll = true;
        c.ring.sqpoll_idle_ms = 1;
        c.ring.defer_taskrun = false;
        c.ring.coop_taskrun = false;
    });
    let f = server.features().unwrap();
    assert!(f.sqpoll && !f.defer_taskrun && !f.coop_taskrun, "{f}");
    assert!(f.to_string().contains("sqpoll"), "{f}");
    exercise(server.local_addr());
    buffers_all_back(&stats(&server));
    // /sleep?ms=20 leaves the SQ thread idle for longer than its 1 ms: it falls asleep, and the
    // answer's submit has to wake it. (The worker's idle tick, whose completions would keep the
    // SQ thread awake, is off under SQPOLL.) On a loaded machine the SQ thread may get no CPU
    // to fall asleep in one such pause, so pauses are repeated until one shows.
    wait_for(
        "a submit that woke the sleeping SQ thread",
        HANG_GUARD,
        || {
            if server.ring_stats().sqpoll_wakeups > 0 {
                return true;
            }
            let r = get(server.local_addr(), "/sleep?ms=20");
            assert_eq!((r.status, r.body.as_slice()), (200, &b"slept 20"[..]));
            false
        },
    );
}

#[test]
fn sqpoll_bound_to_a_cpu() {
    let server = tcp(|c| {
        c.ring.sqpoll = true;
        c.ring.sqpoll_cpu = Some(0);
        c.ring.defer_taskrun = false;
        c.ring.coop_taskrun = false;
    });
    routes(server.local_addr());
    multiplexed(server.local_addr());
}

#[test]
fn sqpoll_on_a_cpu_that_does_not_exist_fails_startup_naming_the_key() {
    let config = Config::builder()
        .io(IoMode::Uring)
        .listen("127.0.0.1:0".parse().unwrap())
        .workers(1)
        .pin_workers(false)
        .sqpoll(true)
        .sqpoll_cpu(Some(4095))
        .defer_taskrun(false)
        .coop_taskrun(false)
        .build()
        .unwrap();
    let e = Server::new(config)
        .start(|| service_fn(fcgi_uring_cli::demo::app))
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sqpoll_cpu 4095 was refused"), "{e}");
}

#[test]
fn coop_taskrun_without_defer_taskrun() {
    let server = tcp(|c| {
        c.ring.defer_taskrun = false;
        c.ring.coop_taskrun = true;
    });
    let f = server.features().unwrap();
    assert!(f.coop_taskrun && f.taskrun_flag && !f.defer_taskrun, "{f}");
    exercise(server.local_addr());
    buffers_all_back(&stats(&server));
}

#[test]
fn neither_defer_nor_coop_taskrun() {
    let server = tcp(|c| {
        c.ring.defer_taskrun = false;
        c.ring.coop_taskrun = false;
    });
    let f = server.features().unwrap();
    assert!(
        !f.coop_taskrun && !f.taskrun_flag && !f.defer_taskrun,
        "{f}"
    );
    exercise(server.local_addr());
}

#[test]
fn idle_spin_with_defer_taskrun() {
    let server = tcp(|c| c.idle_spin_us = 50_000);
    exercise(server.local_addr());
    let s = stats(&server);
    // The worker is idle only between bursts (a busy worker never reaches the spin): while
    // /sleep?ms=20 sleeps, the 50 ms spin is what finds its answer.
    assert!(s.idle_spin_hits > 0, "{s}");
    buffers_all_back(&s);
    // Shutdown is not held up by the spin.
    server.shutdown();
}

#[test]
fn idle_spin_with_coop_taskrun() {
    let server = tcp(|c| {
        c.idle_spin_us = 50_000;
        c.ring.defer_taskrun = false;
    });
    exercise(server.local_addr());
    assert!(stats(&server).idle_spin_hits > 0);
}

#[test]
fn idle_spin_lets_handler_tasks_and_timers_run() {
    // A spin longer than the handler's sleep: the sleep's timer and task must run during it.
    let server = tcp(|c| c.idle_spin_us = 100_000);
    for _ in 0..3 {
        let r = get(server.local_addr(), "/sleep?ms=5");
        assert_eq!(r.body, b"slept 5");
    }
}

#[test]
fn registered_send_buffers_for_every_response_over_unix_with_short_sends() {
    // Ring sends only: direct sends would answer most requests before a registered buffer.
    let (server, _dir) = unix(|c| {
        c.ring.registered_send_buffers = 4;
        c.ring.send_buffer_size = 2 << 20;
        c.ring.direct_send = false;
    });
    assert_eq!(server.features().unwrap().registered_send_buffers, 4);
    exercise(server.local_addr());
    let s = stats(&server);
    assert!(s.fixed_sends > 1000, "{s}");
    // A UNIX socket takes far less than a 1 MiB echo at once: the rest was sent again.
    assert!(s.fixed_short_sends > 0, "{s}");
}

#[test]
fn registered_send_buffers_over_tcp_small_ones_and_the_heap_for_the_rest() {
    let server = tcp(|c| {
        c.ring.registered_send_buffers = 2;
        c.ring.send_buffer_size = 4096;
        c.ring.direct_send = false;
    });
    exercise(server.local_addr());
    let s = stats(&server);
    assert!(s.fixed_sends > 1000, "{s}");
}

#[test]
fn recv_bundle_with_small_buffers() {
    let server = tcp(|c| {
        c.ring.recv_bundle = true;
        c.ring.recv_buffer_size = 1024;
        c.ring.recv_buffers = 256;
    });
    assert!(server.features().unwrap().recv_bundle);
    exercise(server.local_addr());
    let s = stats(&server);
    // A 1 MiB body arrives faster than one 1 KiB buffer at a time.
    assert!(s.multi_buffer_recvs > 0, "{s}");
    assert!(s.recv_buffers > s.recv_completions, "{s}");
    buffers_all_back(&s);
}

#[test]
fn recv_bundle_over_unix_with_a_tiny_pool() {
    // 16 buffers of 512 bytes: bundles, wrap-around and ENOBUFS re-arms all the time.
    let (server, _dir) = unix(|c| {
        c.ring.recv_bundle = true;
        c.ring.recv_buffer_size = 512;
        c.ring.recv_buffers = 16;
    });
    exercise(server.local_addr());
    let s = stats(&server);
    assert!(s.multi_buffer_recvs > 0, "{s}");
    buffers_all_back(&s);
}

#[test]
fn every_knob_at_once() {
    let (server, _dir) = unix(|c| {
        c.ring.sqpoll = true;
        c.ring.defer_taskrun = false;
        c.ring.coop_taskrun = false;
        c.ring.recv_bundle = true;
        c.ring.recv_buffer_size = 2048;
        c.ring.registered_send_buffers = 8;
        c.ring.send_buffer_size = 256 * 1024;
        c.idle_spin_us = 20_000;
    });
    // SQPOLL sends without system calls: no direct sends with it.
    assert!(!server.features().unwrap().direct_send);
    exercise(server.local_addr());
    let s = stats(&server);
    assert!(s.multi_buffer_recvs > 0 && s.fixed_sends > 0, "{s}");
    assert_eq!(s.direct_sends + s.direct_sends_handed_over, 0, "{s}");
    buffers_all_back(&s);
}

#[test]
fn direct_send_off_sends_every_answer_through_the_ring() {
    let server = tcp(|c| c.ring.direct_send = false);
    assert!(!server.features().unwrap().direct_send);
    exercise(server.local_addr());
    let s = stats(&server);
    assert_eq!(s.direct_sends + s.direct_sends_handed_over, 0, "{s}");
}

#[test]
fn direct_sends_answer_every_route() {
    let server = tcp(|_| {});
    assert!(server.features().unwrap().direct_send);
    exercise(server.local_addr());
    let s = stats(&server);
    // Every sequential request's answer is the only one of its flush, and small.
    assert!(s.direct_sends >= 1000, "{s}");
    buffers_all_back(&s);
}

#[test]
fn a_direct_send_the_socket_does_not_take_whole_is_finished_by_the_ring() {
    // Over a UNIX socket (about 200 KiB of room): echoes of 12 KiB on one connection, nothing
    // read. Each is asked for once the answer before it has been sent, so every flush holds
    // one small answer and is sent directly, until the socket is full: that send is taken in
    // part or not at all, and the ring sends the rest once the client reads.
    let (server, _dir) = unix(|_| {});
    let sends = || {
        let s = server.ring_stats();
        (s.direct_sends, s.direct_sends_handed_over)
    };
    let mut c = connect(server.local_addr());
    let mut expected = Vec::new();
    for id in 1..=60u16 {
        let body: Vec<u8> = (0..12 * 1024usize)
            .map(|i| (i * 7 + usize::from(id)) as u8)
            .collect();
        let mut spec = RequestSpec::post("/echo", body.clone());
        spec.keep_conn = true;
        let (direct, handed_over) = sends();
        c.begin(&spec, id).unwrap();
        expected.push((id, body));
        if handed_over == 0 {
            wait_for("the answer's send", HANG_GUARD, || {
                let (d, h) = sends();
                d > direct || h > 0
            });
        }
    }
    assert!(sends().1 > 0, "no direct send found the socket full");
    // Every answer arrives whole and in its place across the handover.
    let ids: Vec<u16> = (1..=60).collect();
    let (got, _) = collect_until_ended(&mut c, &ids);
    for (id, body) in expected {
        let (head, back) = split_cgi(&got[&id].stdout);
        assert!(back == body, "id {id}: {head}, {} bytes back", back.len());
        assert_eq!(got[&id].end_requests, 1, "id {id}");
    }
    let s = stats(&server);
    assert!(s.direct_sends > 0, "{s}");
    buffers_all_back(&s);
}
