//! An axum app served over FastCGI: the only change from `axum::serve` is the line marked
//! "Before". README.md shows this file as it is (a test checks).
//!
//! ```text
//! cargo run --release -p fcgi-uring --example axum   # listens on 127.0.0.1:9000
//! fcgi-uring request /users/7                        # or put nginx in front (docs/axum.md)
//! ```

use axum::extract::{Path, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Default)]
struct AppState {
    visits: Arc<AtomicU64>, // one counter for the whole server: the Router is cloned per core
}

async fn user(Path(id): Path<u32>, State(state): State<AppState>) -> Json<serde_json::Value> {
    let visits = state.visits.fetch_add(1, Ordering::Relaxed) + 1;
    Json(serde_json::json!({ "id": id, "visits": visits }))
}

async fn tag(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let served_by = HeaderValue::from_static("axum over FastCGI");
    response.headers_mut().insert("x-served-by", served_by);
    response
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(|| async { "Hello from axum over FastCGI" }))
        .route("/users/{id}", get(user))
        .route("/echo", post(|body: String| async move { body }))
        .layer(middleware::from_fn(tag))
        .with_state(AppState::default());
    // Before: axum::serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?, app).await?;
    fcgi_uring::serve("127.0.0.1:9000", app).await?;
    Ok(())
}
