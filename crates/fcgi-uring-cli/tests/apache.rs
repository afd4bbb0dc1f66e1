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

/// mod_authnz_fcgi with the server as AUTHORIZER (role 2, for both the authentication and the
/// authorization step: `authnz`), the protected resource served by the same server as
/// RESPONDER through mod_proxy_fcgi. Apache moves the authorizer's `Variable-FOO` response
/// header into the request's environment with the prefix stripped, which mod_proxy_fcgi sends
/// on as a param: the resource reads it from `TrustedParams`. The name arrives lowercase
/// (`foo`): `http` header names are lowercase on the wire and Apache keeps them as sent.
#[test]
fn apache_authorizer_allows_denies_and_passes_variables() {
    use common::http_client::{Upload, request};
    let authorizer = common::app::start_tcp();
    let extra = format!(
        r#"AuthnzFcgiDefineProvider authnz TestAuthz fcgi://{}/
<Location "/protected/">
    AuthType Basic
    AuthName "test"
    AuthBasicProvider TestAuthz
    Require TestAuthz
</Location>"#,
        authorizer.local_addr()
    );
    let Some(running) = matrix::start(Transport::Tcp, |backend| {
        proxy::apache_with(backend, &extra)
    }) else {
        return;
    };
    let addr = running.proxy.addr;
    // alice:secret
    let alice = [("Authorization", "Basic YWxpY2U6c2VjcmV0")];
    let r = request(addr, "GET", "/protected/params", &alice, Upload::None);
    assert_eq!(r.status, 200, "log:\n{}", running.proxy.log());
    let seen = common::app::ParamsSeen::parse(&r.body);
    assert_eq!(seen.foo, "bar", "the authorizer's Variable-FOO: {seen:?}");
    assert!(
        seen.trusted_names.iter().any(|n| n == "REMOTE_USER"),
        "{seen:?}"
    );

    // mallory:secret: the authorizer answers 403, Apache asks for credentials again.
    let mallory = [("Authorization", "Basic bWFsbG9yeTpzZWNyZXQ=")];
    let r = request(addr, "GET", "/protected/params", &mallory, Upload::None);
    assert_eq!(r.status, 401, "log:\n{}", running.proxy.log());
    let r = request(addr, "GET", "/protected/params", &[], Upload::None);
    assert_eq!(r.status, 401);

    // Outside the protected location nobody is asked and no variable appears.
    let r = request(addr, "GET", "/params", &[], Upload::None);
    assert_eq!(r.status, 200);
    assert_eq!(common::app::ParamsSeen::parse(&r.body).foo, "");
}
