//! A real caddy in front of the server: the checks of tests/common/matrix.rs over TCP and over
//! a UNIX socket.

mod common;

use common::matrix::{self, Expect, Transport};
use common::proxy;

/// Caddy passes `Proxy:` on as HTTP_PROXY (an ordinary header here, never trusted), sends no
/// SERVER_ADDR, and derives SERVER_NAME and SERVER_PORT from the client's Host header.
const EXPECT: Expect = Expect {
    passes_proxy_header: true,
    sends_server_addr: false,
    server_port_from_host: true,
    chunked_upload_limit: None,
    location_becomes_302: false,
    internal_errors_when_multiplexing: false,
};

#[test]
fn caddy_over_tcp() {
    matrix::run(Transport::Tcp, proxy::caddy, EXPECT);
}

#[test]
fn caddy_over_unix_socket() {
    matrix::run(Transport::Unix, proxy::caddy, EXPECT);
}
