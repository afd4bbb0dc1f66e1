//! A peer that sends a request and shuts its write side down at once (FIN right behind the
//! records): the server sees the end of stream and closes the connection, well before any
//! timeout would (idle is 300 s by default). Whether the request is answered first depends on
//! whether the end of stream is read in the same batch as the request (the core cancels a
//! connection's requests at its end of stream), so only the close is asserted. On epoll the
//! FIN comes with the same readiness as the records, and no later edge announces it.

mod common;

use common::{connect, demo_tcp, demo_unix};
use fcgi_client::RequestSpec;
use fcgi_uring::Addr;
use std::io::ErrorKind;

fn closed_after_fin(addr: &Addr) {
    for round in 0..20 {
        let mut c = connect(addr);
        let mut spec = RequestSpec::get("/hello");
        spec.keep_conn = true;
        c.begin(&spec, 1).unwrap();
        c.shutdown_write().unwrap();
        // `connect` sets a 10 s read timeout: a server waiting for another edge times out here.
        loop {
            match c.read_record() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("round {round}: the server did not close the connection: {e}")
                }
                // A reset is a close too.
                Err(_) => break,
            }
        }
    }
    // The server is still there.
    let r = common::get(addr, "/hello");
    assert_eq!(r.body, b"Hello, World!");
}

#[test]
fn request_then_fin_is_closed_over_tcp() {
    let server = demo_tcp();
    closed_after_fin(server.local_addr());
}

#[test]
fn request_then_fin_is_closed_over_unix() {
    let (server, _dir) = demo_unix();
    closed_after_fin(server.local_addr());
}
