//! A real lighttpd in front of the server: the checks of tests/common/matrix.rs over TCP and over
//! a UNIX socket.

mod common;

use common::matrix::{self, Expect, Transport};
use common::proxy;

const EXPECT: Expect = Expect {
    passes_proxy_header: false,
    sends_server_addr: true,
    server_port_from_host: false,
    chunked_upload_limit: None,
    location_becomes_302: false,
    internal_errors_when_multiplexing: false,
};

#[test]
fn lighttpd_over_tcp() {
    matrix::run(Transport::Tcp, proxy::lighttpd, EXPECT);
}

#[test]
fn lighttpd_over_unix_socket() {
    matrix::run(Transport::Unix, proxy::lighttpd, EXPECT);
}
