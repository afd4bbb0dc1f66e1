//! Item 8 of issue 18: an axum app mounted under a prefix (`/app/`) behind nginx and Apache,
//! with `server.strip_script_name`: the app's routes are written as if it were at `/`.

#[path = "common/axum_proxy.rs"]
mod axum_proxy;
mod common;

use axum::Router;
use axum::extract::{OriginalUri, Path};
use axum::http::Uri;
use axum::routing;
use common::http_client::{Upload, request};
use common::proxy;
use common::*;
use fcgi_uring::{Server, ServerHandle, TrustedParams};

fn app() -> Router {
    let api = Router::new().route(
        "/users/{id}",
        routing::get(|Path(id): Path<u32>| async move { format!("user {id}") }),
    );
    Router::new()
        .route(
            "/where",
            routing::get(
                |uri: Uri, OriginalUri(original): OriginalUri, req: axum::extract::Request| async move {
                    let t = req.extensions().get::<TrustedParams>();
                    format!(
                        "uri={uri} original={original} script={:?}",
                        t.and_then(|t| t.script_name()),
                    )
                },
            ),
        )
        .nest("/api", api)
}

fn start(strip: bool) -> ServerHandle {
    let config = test_config()
        .into_builder()
        .strip_script_name(strip)
        .build()
        .unwrap();
    Server::new(config).start(app()).unwrap()
}

/// nginx: the split gives SCRIPT_NAME `/app` (stock fastcgi_params) and PATH_INFO.
const NGINX_SITE: &str = r#"
    upstream app {
        server BACKEND;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:{port};
        location /app/ {
            fastcgi_split_path_info ^(/app)(/.*)$;
            include {params};
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_pass app;
            fastcgi_keep_conn on;
        }
    }
"#;

/// Apache: mod_proxy_fcgi sends the whole path as SCRIPT_NAME unless told the mount point.
const APACHE_SITE: &str = r#"
ProxyPass "/app/" "fcgi://BACKEND/" enablereuse=on
<Location "/app/">
    ProxyFCGISetEnvIf "true" SCRIPT_NAME "/app"
</Location>
"#;

fn get_via(proxy: &proxy::Proxy, path: &str) -> (u16, String) {
    let r = request(proxy.addr, "GET", path, &[], Upload::None);
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// With `strip_script_name`, routes written for `/` answer under `/app/`; `OriginalUri` keeps
/// the path the client asked for. Without it, the URI is REQUEST_URI, whole (404 here).
fn mounted_under_app(start_proxy: impl Fn(&str) -> Option<proxy::Proxy>) {
    let server = start(true);
    let Some(proxy) = start_proxy(&server.local_addr().to_string()) else {
        return;
    };
    assert_eq!(
        get_via(&proxy, "/app/api/users/7"),
        (200, "user 7".to_owned()),
        "{}",
        proxy.log()
    );
    assert_eq!(
        get_via(&proxy, "/app/where?x=1"),
        (
            200,
            "uri=/where?x=1 original=/app/where?x=1 script=Some(\"/app\")".to_owned()
        )
    );
    assert_eq!(get_via(&proxy, "/app/nothing-here").0, 404);

    let whole = start(false);
    let Some(proxy) = start_proxy(&whole.local_addr().to_string()) else {
        return;
    };
    assert_eq!(get_via(&proxy, "/app/api/users/7").0, 404);
}

#[test]
fn nginx_location_with_split_path_info() {
    mounted_under_app(|backend| axum_proxy::nginx_site(&NGINX_SITE.replace("BACKEND", backend)));
}

#[test]
fn apache_proxypass_with_script_name_set() {
    mounted_under_app(|backend| axum_proxy::apache_site(&APACHE_SITE.replace("BACKEND", backend)));
}

/// The same through a bare FastCGI client: SCRIPT_NAME `/app` as the proxies above send it.
#[test]
fn script_name_is_stripped_from_request_uri() {
    let server = start(true);
    let mut spec = fcgi_client::RequestSpec::get("/app/api/users/7?q=1");
    spec.extra_params = vec![(b"SCRIPT_NAME".to_vec(), b"/app".to_vec())];
    let r = connect(server.local_addr()).request(&spec).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"user 7"[..]));
    // A path outside the mount point is left as it is.
    let mut spec = fcgi_client::RequestSpec::get("/application/api/users/7");
    spec.extra_params = vec![(b"SCRIPT_NAME".to_vec(), b"/app".to_vec())];
    assert_eq!(
        connect(server.local_addr()).request(&spec).unwrap().status,
        404
    );
}
