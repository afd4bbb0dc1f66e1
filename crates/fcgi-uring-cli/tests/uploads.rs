//! Uploads handed on uncopied, on whichever IO backend the suite runs (`FCGI_URING_IO`): a
//! body of 16 KiB or more that one of the worker's own receives brings whole (the epoll
//! backend's reads; io_uring's direct receives, `ring.direct_recv`) reaches its handler as a
//! slice of that receive's buffer, counted by `Counter::SharedBodies`; smaller bodies are
//! copied. Every echo comes back intact either way. (Layouts, interleaving and the bound on
//! bodies held: the core's unit tests.)

mod common;

use common::*;
use fcgi_uring::{Counter, ServerHandle};

fn shared(server: &ServerHandle) -> u64 {
    server.stats().get(Counter::SharedBodies)
}

#[test]
fn an_upload_that_one_receive_brings_whole_reaches_its_handler_uncopied() {
    let server = start_demo("127.0.0.1:0".parse().unwrap());
    let mut c = connect(server.local_addr());
    // On io_uring the first upload switches the connection to direct receives.
    echo_kept(&mut c, patterned(0, 256 * 1024));
    // Each later 40 KiB upload is one write (one segment on loopback): a receive brings it
    // whole, and its body is a slice of the receive buffer (one that brought part of it would
    // copy it; the bound only guards against a hang).
    let before = shared(&server);
    let mut sent = 0;
    while shared(&server) < before + 3 {
        assert!(
            sent < 200,
            "no body shared after {sent} uploads: {}",
            server.stats()
        );
        echo_kept(&mut c, patterned(sent + 1, 40 * 1024));
        sent += 1;
    }
    // Small uploads are copied.
    let before = shared(&server);
    for i in 0..4 {
        echo_kept(&mut c, patterned(1000 + i, 8 * 1024));
    }
    assert_eq!(shared(&server), before, "{}", server.stats());
}
