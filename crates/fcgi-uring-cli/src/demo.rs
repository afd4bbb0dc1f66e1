//! The built-in demo app served by `fcgi-uring serve`, written with the public API only.
//!
//! - `GET /hello` -> `Hello, World!` (text/plain)
//! - `POST /echo` -> the request body
//! - `GET /sleep?ms=N` -> waits N ms (asynchronously, at most 60 s), then `slept N`
//! - `GET /json` -> a small JSON document
//! - `GET /pid` -> the serving process's id (which process answered, across restarts and hot
//!   upgrades)
//! - anything else -> 404

use bytes::Bytes;
use fcgi_uring::RequestBody;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;
use std::time::Duration;

/// The demo app's response body.
pub type DemoBody = Full<Bytes>;

/// Longest `/sleep` accepted.
const MAX_SLEEP_MS: u64 = 60_000;

/// Handles one request (use with [`fcgi_uring::service_fn`]).
pub async fn app(req: http::Request<RequestBody>) -> Result<Response<DemoBody>, Infallible> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    Ok(match req.uri().path() {
        "/hello" if get => text(StatusCode::OK, Bytes::from_static(b"Hello, World!")),
        "/json" if get => json(),
        "/pid" if get => text(StatusCode::OK, Bytes::from(std::process::id().to_string())),
        "/sleep" if get => sleep(req.uri().query()).await,
        "/echo" if req.method() == Method::POST => echo(req).await,
        _ => text(StatusCode::NOT_FOUND, Bytes::from_static(b"Not Found")),
    })
}

fn text(status: StatusCode, body: Bytes) -> Response<DemoBody> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json() -> Response<DemoBody> {
    let mut r = Response::new(Full::new(Bytes::from_static(
        br#"{"message":"Hello, World!","server":"fcgi-uring"}"#,
    )));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn sleep(query: Option<&str>) -> Response<DemoBody> {
    let ms = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("ms="))
        .and_then(|v| v.parse::<u64>().ok());
    match ms {
        Some(ms) if ms <= MAX_SLEEP_MS => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, Bytes::from(format!("slept {ms}")))
        }
        _ => text(
            StatusCode::BAD_REQUEST,
            Bytes::from(format!("expected ?ms=N with N <= {MAX_SLEEP_MS}")),
        ),
    }
}

async fn echo(req: http::Request<RequestBody>) -> Response<DemoBody> {
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    match req.into_body().collect().await {
        Ok(body) => {
            let mut r = Response::new(Full::new(body.to_bytes()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                content_type.unwrap_or(HeaderValue::from_static("application/octet-stream")),
            );
            r
        }
        Err(e) => text(StatusCode::BAD_REQUEST, Bytes::from(e.to_string())),
    }
}
