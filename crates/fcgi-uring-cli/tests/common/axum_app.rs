//! A realistic axum 0.8 app, written as for `axum::serve`: path params, JSON, forms, query,
//! multipart uploads, large downloads (known length and streamed), SSE, cookies, redirects,
//! `ServeDir`, `TraceLayer`, `CompressionLayer`, `TimeoutLayer`, `CorsLayer`,
//! `RequestBodyLimitLayer`, a `from_fn` middleware, `State`, `ConnectInfo` and nesting.
#![allow(dead_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, Form, Json, Multipart, Path, Query, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Largest request body the app takes (the 5 MiB upload fits, 7 MiB does not).
pub const BODY_LIMIT: usize = 6 << 20;
/// How long a handler may run before `TimeoutLayer` answers 408.
pub const HANDLER_TIMEOUT: Duration = Duration::from_millis(300);
/// The origin `CorsLayer` allows.
pub const ALLOWED_ORIGIN: &str = "https://app.example";

#[derive(Clone)]
pub struct AppState {
    hits: Arc<AtomicUsize>,
    greeting: Arc<str>,
}

/// Byte `i` of a large download: a pattern that catches misplaced or lost bytes.
pub fn big_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// The app, serving the files of `static_dir` under `/static`.
pub fn app(static_dir: &FsPath) -> Router {
    let state = AppState {
        hits: Arc::new(AtomicUsize::new(0)),
        greeting: "hello".into(),
    };
    let api = Router::new()
        .route("/users/{id}", get(user))
        .route("/users/{id}/posts/{post}", get(post_of_user))
        .route("/users", post(create_user))
        .route("/hits", get(hits))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such api route") });
    Router::new()
        .route("/", get(|| async { axum::response::Html("<h1>home</h1>") }))
        .route("/greet/{name}", get(greet))
        .route("/search", get(search))
        .route("/form", post(form))
        .route("/upload", post(upload))
        .route("/download/{mib}", get(download))
        .route("/stream/{mib}", get(stream))
        .route("/events", get(events))
        .route("/cookies", get(read_cookies))
        .route("/cookies/set", get(set_cookies))
        .route(
            "/old",
            get(|| async { Redirect::permanent("/api/users/1") }),
        )
        .route(
            "/elsewhere",
            get(|| async { Redirect::to("/greet/redirected") }),
        )
        .route("/slow", get(slow))
        .route("/ip", get(ip))
        .route("/headers", get(headers_seen))
        .route("/no-content", get(|| async { StatusCode::NO_CONTENT }))
        .route("/server-header", get(server_header))
        .route("/echo", post(|body: Bytes| async move { body }))
        .nest("/api", api)
        .nest_service("/static", ServeDir::new(static_dir))
        .layer(middleware::from_fn(guard))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(
            CorsLayer::new()
                .allow_origin(HeaderValue::from_static(ALLOWED_ORIGIN))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::CONTENT_TYPE]),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            HANDLER_TIMEOUT,
        ))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// `from_fn`: refuses requests that carry `x-block`, tags every answer with the path.
async fn guard(request: Request, next: Next) -> Response {
    if request.headers().contains_key("x-block") {
        return (StatusCode::FORBIDDEN, "blocked by middleware").into_response();
    }
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if let Ok(v) = HeaderValue::from_str(&path) {
        response.headers_mut().insert("x-seen-path", v);
    }
    response
}

async fn greet(State(state): State<AppState>, Path(name): Path<String>) -> String {
    format!("{}, {name}", state.greeting)
}

async fn user(Path(id): Path<u32>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "id": id, "name": format!("user{id}") }))
}

async fn post_of_user(Path((id, post)): Path<(u32, String)>) -> String {
    format!("post {post} of user {id}")
}

async fn create_user(Json(body): Json<serde_json::Value>) -> impl IntoResponse {
    let name = body.get("name").and_then(|n| n.as_str()).unwrap_or("");
    (
        StatusCode::CREATED,
        [(header::LOCATION, "/api/users/42")],
        Json(serde_json::json!({ "id": 42, "name": name })),
    )
}

async fn hits(State(state): State<AppState>) -> String {
    (state.hits.fetch_add(1, Ordering::SeqCst) + 1).to_string()
}

async fn search(Query(q): Query<BTreeMap<String, String>>) -> Json<BTreeMap<String, String>> {
    Json(q)
}

async fn form(Form(fields): Form<BTreeMap<String, String>>) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

async fn upload(mut multipart: Multipart) -> Result<Json<Vec<serde_json::Value>>, StatusCode> {
    let mut parts = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|_| StatusCode::BAD_REQUEST)?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let file = field.file_name().map(str::to_owned);
        let data = field.bytes().await.map_err(|_| StatusCode::BAD_REQUEST)?;
        let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
        parts.push(serde_json::json!({
            "name": name, "file": file, "len": data.len(), "sum": sum,
        }));
    }
    Ok(Json(parts))
}

async fn download(Path(mib): Path<usize>) -> impl IntoResponse {
    let body: Vec<u8> = (0..mib << 20).map(big_byte).collect();
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"big.bin\"",
            ),
        ],
        body,
    )
}

/// `mib` MiB in 64 KiB frames, of no announced length.
async fn stream(Path(mib): Path<usize>) -> impl IntoResponse {
    const FRAME: usize = 64 << 10;
    let frames = (0..(mib << 20) / FRAME).map(|f| {
        let bytes: Vec<u8> = (f * FRAME..(f + 1) * FRAME).map(big_byte).collect();
        Ok::<_, Infallible>(Bytes::from(bytes))
    });
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(futures_util::stream::iter(frames)),
    )
}

async fn events() -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let events = (1..=3).map(|i| {
        Ok(Event::default()
            .event("tick")
            .id(i.to_string())
            .data(format!("tick {i}")))
    });
    Sse::new(futures_util::stream::iter(events))
}

async fn read_cookies(headers: HeaderMap) -> String {
    let mut cookies: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .collect();
    cookies.sort_unstable();
    cookies.join("; ")
}

async fn set_cookies() -> impl IntoResponse {
    (
        [
            (header::SET_COOKIE, "session=abc123; Path=/; HttpOnly"),
            (header::SET_COOKIE, "theme=dark; Path=/; Max-Age=3600"),
        ],
        Redirect::to("/cookies"),
    )
}

/// Never answers: the `TimeoutLayer` (HANDLER_TIMEOUT) answers for it.
async fn slow() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}

async fn ip(ConnectInfo(addr): ConnectInfo<SocketAddr>) -> String {
    addr.ip().to_string()
}

/// The request headers the app saw, sorted, one per line.
async fn headers_seen(headers: HeaderMap) -> String {
    let mut lines: Vec<String> = headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    lines.sort();
    lines.join("\n")
}

async fn server_header() -> impl IntoResponse {
    ([(header::SERVER, "my-axum-app/1.0")], "who am I")
}
