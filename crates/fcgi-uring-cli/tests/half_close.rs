//! A peer that sends its last request and shuts its write side down at once (FIN right behind
//! the records): the request is answered in full, then the server sees the end of stream and
//! closes the connection, well before any timeout would (idle is 300 s by default). On epoll
//! the FIN comes with the same readiness as the records, and no later edge announces it.

mod common;

use common::{collect_until_ended, connect, demo_tcp, demo_unix};
use fcgi_client::RequestSpec;
use fcgi_uring::Addr;

fn answered_then_closed(addr: &Addr) {
    for round in 0..20 {
        let mut c = connect(addr);
        let mut spec = RequestSpec::get("/hello");
        spec.keep_conn = true;
        c.begin(&spec, 1).unwrap();
        c.shutdown_write().unwrap();
        let (got, _) = collect_until_ended(&mut c, &[1]);
        assert!(
            got[&1].stdout.ends_with(b"Hello, World!"),
            "round {round}: {:?}",
            String::from_utf8_lossy(&got[&1].stdout)
        );
        // `connect` sets a 10 s read timeout: a server waiting for another edge times out here.
        match c.read_record() {
            Ok(None) => {}
            other => panic!("round {round}: expected the server to close, got {other:?}"),
        }
    }
}

#[test]
fn request_then_fin_is_answered_and_closed_over_tcp() {
    let server = demo_tcp();
    answered_then_closed(server.local_addr());
}

#[test]
fn request_then_fin_is_answered_and_closed_over_unix() {
    let (server, _dir) = demo_unix();
    answered_then_closed(server.local_addr());
}
