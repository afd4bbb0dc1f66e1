//! A real apache in front of the server: the checks of tests/common/matrix.rs over TCP and over
//! a UNIX socket.

mod common;

use common::matrix::{self, Expect, Transport};
use common::proxy;

/// Apache drops a client's `Proxy:` header (its httpoxy fix), sends SERVER_ADDR, and with
/// `UseCanonicalName Off` (the default) takes SERVER_NAME and SERVER_PORT from the Host header.
/// It also passes its own environment (PATH, LD_LIBRARY_PATH) as params.
const EXPECT: Expect = Expect {
    passes_proxy_header: false,
    sends_server_addr: true,
    server_port_from_host: true,
    chunked_upload_limit: None,
    location_becomes_302: false,
    internal_errors_when_multiplexing: false,
};

#[test]
fn apache_over_tcp() {
    matrix::run(Transport::Tcp, proxy::apache, EXPECT);
}

#[test]
fn apache_over_unix_socket() {
    matrix::run(Transport::Unix, proxy::apache, EXPECT);
}
