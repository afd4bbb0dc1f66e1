//! An unchanged axum Router served over FastCGI.

mod common;

use axum::Router;
use axum::extract::Path;
use axum::routing;
use common::*;
use fcgi_client::RequestSpec;
use fcgi_uring::Server;

fn app() -> Router {
    Router::new()
        .route("/", routing::get(|| async { "root" }))
        .route(
            "/users/{id}",
            routing::get(|Path(id): Path<u32>| async move { format!("user {id}") }),
        )
        .route("/echo", routing::post(|body: String| async move { body }))
}

#[test]
fn an_axum_router_serves_over_fastcgi() {
    let server = Server::new(test_config()).start(app).unwrap();
    let addr = server.local_addr();
    let r = get(addr, "/");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"root"[..]));
    let r = get(addr, "/users/42?x=1");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"user 42"[..]));
    let r = get(addr, "/missing");
    assert_eq!(r.status, 404);
    let mut spec = RequestSpec::post("/echo", b"posted".to_vec());
    spec.headers
        .push(("Content-Type".into(), "text/plain".into()));
    let r = connect(addr).request(&spec).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"posted"[..]));
}
