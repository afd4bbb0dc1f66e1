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
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;
use std::time::Duration;

/// The demo app's response body.
pub type DemoBody = Full<Bytes>;

/// Longest `/sleep` accepted.
const MAX_SLEEP_MS: u64 = 60_000;

/// Handles one request (use with [`fcgi_uring::service_fn`]).
pub async fn app(mut req: http::Request<RequestBody>) -> Result<Response<DemoBody>, Infallible> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    Ok(match req.uri().path() {
        "/hello" if get => text(
            reused(&mut req),
            StatusCode::OK,
            Bytes::from_static(b"Hello, World!"),
        ),
        "/json" if get => json(reused(&mut req)),
        "/pid" if get => text(
            reused(&mut req),
            StatusCode::OK,
            Bytes::from(std::process::id().to_string()),
        ),
        "/sleep" if get => sleep(req).await,
        "/echo" if req.method() == Method::POST => echo(req).await,
        _ => not_found(reused(&mut req)),
    })
}

/// The request's header map, emptied, for the response's headers: it keeps its allocation, so
/// a response's headers cost none (a new `HeaderMap` allocates twice for its first header).
fn reused(req: &mut http::Request<RequestBody>) -> HeaderMap {
    let mut headers = std::mem::take(req.headers_mut());
    headers.clear();
    headers
}

fn text(mut headers: HeaderMap, status: StatusCode, body: Bytes) -> Response<DemoBody> {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    with_headers(status, headers, body)
}

fn not_found(headers: HeaderMap) -> Response<DemoBody> {
    text(
        headers,
        StatusCode::NOT_FOUND,
        Bytes::from_static(b"Not Found"),
    )
}

fn json(mut headers: HeaderMap) -> Response<DemoBody> {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_headers(
        StatusCode::OK,
        headers,
        Bytes::from_static(br#"{"message":"Hello, World!","server":"fcgi-uring"}"#),
    )
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<DemoBody> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

async fn sleep(mut req: http::Request<RequestBody>) -> Response<DemoBody> {
    let ms = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("ms="))
        .and_then(|v| v.parse::<u64>().ok());
    let headers = reused(&mut req);
    drop(req);
    match ms {
        Some(ms) if ms <= MAX_SLEEP_MS => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(headers, StatusCode::OK, Bytes::from(format!("slept {ms}")))
        }
        _ => text(
            headers,
            StatusCode::BAD_REQUEST,
            Bytes::from(format!("expected ?ms=N with N <= {MAX_SLEEP_MS}")),
        ),
    }
}

async fn echo(mut req: http::Request<RequestBody>) -> Response<DemoBody> {
    let content_type = req.headers_mut().remove(header::CONTENT_TYPE);
    let mut headers = reused(&mut req);
    match req.into_body().collect().await {
        Ok(body) => {
            headers.insert(
                header::CONTENT_TYPE,
                content_type.unwrap_or(HeaderValue::from_static("application/octet-stream")),
            );
            with_headers(StatusCode::OK, headers, body.to_bytes())
        }
        Err(e) => text(headers, StatusCode::BAD_REQUEST, Bytes::from(e.to_string())),
    }
}
