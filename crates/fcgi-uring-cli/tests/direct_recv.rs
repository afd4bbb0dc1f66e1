//! `ring.direct_recv`: connections that upload switch from the ring's provided buffers to
//! receives the worker makes itself, and back after small requests, losing and reordering
//! nothing either way; with the knob off every receive is the ring's. (That an upload a
//! direct receive brings whole is handed on uncopied: `uploads.rs`.)
//!
//! Specific to the io_uring backend: every server here asks for `io = uring`, whatever
//! `FCGI_URING_IO` says.

mod common;

use common::*;
use fcgi_client::RequestSpec;
use fcgi_uring::{Config, IoMode, RingConfig, RingStats, ServerHandle};
use std::time::Duration;

fn tcp(ring: RingConfig) -> ServerHandle {
    start_uring_demo("127.0.0.1:0".parse().unwrap(), ring, 0)
}

fn stats(server: &ServerHandle) -> RingStats {
    let s = server.ring_stats();
    eprintln!("{s}");
    s
}

fn hello(c: &mut fcgi_client::Client) {
    let mut spec = RequestSpec::get("/hello");
    spec.keep_conn = true;
    let r = c.request(&spec).unwrap();
    assert_eq!(r.body, b"Hello, World!");
}

#[test]
fn an_upload_switches_its_connection_to_direct_receives_and_small_requests_switch_it_back() {
    let server = tcp(RingConfig::default());
    assert!(server.features().unwrap().direct_recv);
    let mut c = connect(server.local_addr());
    for round in 0..3u32 {
        let before = server.ring_stats();
        echo_kept(&mut c, patterned(round, 256 * 1024));
        let s = server.ring_stats();
        assert!(
            s.direct_recv_switches > before.direct_recv_switches,
            "round {round}: {s}"
        );
        // Ten small requests, read directly until the eighth small receive in a row hands the
        // connection back (the ring may have received the whole upload before the switch, and
        // an upload read in small pieces may have switched it back and forth already).
        for _ in 0..10 {
            hello(&mut c);
        }
        let s = server.ring_stats();
        assert!(
            s.direct_recvs >= before.direct_recvs + 8,
            "round {round}: {s}"
        );
        assert_eq!(
            s.direct_recv_returns, s.direct_recv_switches,
            "round {round}: {s}"
        );
    }
    // Back on provided buffers: small requests are ring receives again.
    let before = server.ring_stats();
    for _ in 0..20 {
        hello(&mut c);
    }
    let s = stats(&server);
    assert_eq!(s.direct_recvs, before.direct_recvs, "{s}");
    assert!(s.recv_completions >= before.recv_completions + 20, "{s}");
    assert_eq!(s.recv_buffers, s.recv_buffers_returned, "{s}");
}

#[test]
fn uploads_and_small_requests_mixed_on_several_connections_come_back_whole_and_in_order() {
    let server = tcp(RingConfig::default());
    let addr = server.local_addr().clone();
    // Sizes around the switch (a 4 KiB receive) and past a direct receive's 256 KiB, GETs
    // between them, three requests in flight per connection.
    let sizes = [
        0usize,
        100,
        4 * 1024 - 1,
        4 * 1024,
        20_000,
        64 * 1024,
        200 * 1024,
        300 * 1024,
    ];
    let threads: Vec<_> = (0..4u32)
        .map(|conn| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = connect(&addr);
                let mut next = 0u32;
                for batch in 0..24u32 {
                    let mut expected = Vec::new();
                    for slot in 0..3u16 {
                        let id = slot + 1;
                        next += 1;
                        let pick = (batch * 3 + u32::from(slot) + conn) as usize;
                        let mut spec = if pick % 3 == 2 {
                            expected.push((id, b"Hello, World!".to_vec()));
                            RequestSpec::get("/hello")
                        } else {
                            let data = patterned(conn * 1000 + next, sizes[pick % sizes.len()]);
                            expected.push((id, data.clone()));
                            RequestSpec::post("/echo", data)
                        };
                        spec.keep_conn = true;
                        c.begin(&spec, id).unwrap();
                    }
                    let (got, _) = collect_until_ended(&mut c, &[1, 2, 3]);
                    for (id, want) in expected {
                        let (head, back) = split_cgi(&got[&id].stdout);
                        assert!(
                            back == want,
                            "conn {conn} batch {batch} id {id}: {head}, {} of {} bytes",
                            back.len(),
                            want.len()
                        );
                        assert_eq!(got[&id].end_requests, 1);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = stats(&server);
    assert!(s.direct_recv_switches >= 4, "{s}");
    assert!(s.direct_recvs > 0, "{s}");
    assert_eq!(s.recv_buffers, s.recv_buffers_returned, "{s}");
}

/// More connections sending at once than the pool has buffers: a receive that finds the pool
/// empty switches its connection to direct receives (each one counted), instead of being armed
/// again to find the pool as empty, turn after turn; every request is answered.
#[test]
fn connections_finding_the_pool_empty_read_directly_instead_of_rearming() {
    let ring = RingConfig {
        recv_buffers: 2,
        ..RingConfig::default()
    };
    let server = tcp(ring);
    let addr = server.local_addr().clone();
    let (conns, per_conn) = (32u64, 40u64);
    let start = std::sync::Arc::new(std::sync::Barrier::new(conns as usize));
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, start) = (addr.clone(), start.clone());
            std::thread::spawn(move || {
                let mut c = connect(&addr);
                start.wait();
                for _ in 0..per_conn {
                    hello(&mut c);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = stats(&server);
    let requests = conns * per_conn;
    assert!(s.recv_pool_dry > 0, "the pool never ran dry: {s}");
    // No uploads: every switch is an empty pool's, and every empty pool switched one.
    assert_eq!(s.direct_recv_switches, s.recv_pool_dry, "{s}");
    assert!(s.direct_recvs > 0, "{s}");
    // Re-armed at once, receives found the pool empty many times per request.
    assert!(s.recv_pool_dry < requests, "{requests} requests: {s}");
    assert_eq!(s.recv_buffers, s.recv_buffers_returned, "{s}");
}

#[test]
fn a_slow_body_reader_pauses_a_direct_receiving_connection_and_loses_nothing() {
    // A 16 MiB upload against 64 KiB of body buffer: the connection switches to direct
    // receives, then the core pauses and resumes it many times (its poll cancelled and armed
    // again) while the handler reads slowly. What the ring received before the switch and a
    // pause took effect waits in the core; the socket's receive buffer grows only as the server
    // reads, so most of so large a body comes after, through direct receives.
    let config = Config::builder()
        .io(IoMode::Uring)
        .listen("127.0.0.1:0".parse().unwrap())
        .workers(1)
        .pin_workers(false)
        .max_body_buffer(64 * 1024)
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let server = slow_reader_server(config);
    let data = patterned(7, 16 << 20);
    let r = connect(server.local_addr())
        .request(&RequestSpec::post("/slow-reader", data.clone()))
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == data, "body intact after pauses");
    let s = stats(&server);
    assert!(s.direct_recv_switches >= 1 && s.direct_recvs > 0, "{s}");
}

#[test]
fn direct_recv_off_receives_every_upload_into_provided_buffers() {
    let server = tcp(RingConfig {
        direct_recv: false,
        ..RingConfig::default()
    });
    assert!(!server.features().unwrap().direct_recv);
    let mut c = connect(server.local_addr());
    for round in 0..3 {
        echo_kept(&mut c, patterned(round, 256 * 1024));
        hello(&mut c);
    }
    let s = stats(&server);
    assert_eq!(
        (
            s.direct_recvs,
            s.direct_recv_switches,
            s.direct_recv_returns
        ),
        (0, 0, 0),
        "{s}"
    );
    assert_eq!(s.recv_buffers, s.recv_buffers_returned, "{s}");
}

#[test]
fn sqpoll_keeps_every_receive_on_the_ring() {
    let server = tcp(RingConfig {
        sqpoll: true,
        defer_taskrun: false,
        coop_taskrun: false,
        ..RingConfig::default()
    });
    assert!(!server.features().unwrap().direct_recv);
    let mut c = connect(server.local_addr());
    echo_kept(&mut c, patterned(1, 256 * 1024));
    let s = stats(&server);
    assert_eq!(s.direct_recvs + s.direct_recv_switches, 0, "{s}");
}

/// A peer whose last bytes and end (FIN) come in one burst, on a connection that receives
/// directly: the poll's one wakeup covers both, and the end is read right after the data, so
/// the server ends the connection at once (cancelling the request the end cut short), not at
/// the body's or the idle deadline.
#[test]
fn a_peer_ending_right_after_its_data_is_seen_ending_on_a_direct_receiving_connection() {
    let server = tcp(RingConfig::default());
    for round in 0..20u32 {
        let mut c = connect(server.local_addr());
        // An upload switches the connection to direct receives.
        echo_kept(&mut c, patterned(round, 64 * 1024));
        let mut spec = RequestSpec::post("/echo", patterned(round, 64 * 1024));
        spec.keep_conn = true;
        let mut out = Vec::new();
        spec.encode(1, &mut out);
        out.truncate(out.len() - 16 * 1024);
        c.send_raw(&out).unwrap();
        c.shutdown_write().unwrap();
        let started = std::time::Instant::now();
        loop {
            match c.read_record() {
                Ok(None) => break,
                Ok(Some(_)) => {}
                Err(e) => panic!(
                    "round {round}: not closed after {:?} ({e}); {}",
                    started.elapsed(),
                    server.ring_stats()
                ),
            }
        }
    }
    assert!(stats(&server).direct_recv_switches > 0);
}
