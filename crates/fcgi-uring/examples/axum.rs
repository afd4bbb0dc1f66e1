//! An axum app served over FastCGI: the only change from `axum::serve` is the last line.
//!
//! ```text
//! cargo run --release --example axum          # listens on 127.0.0.1:9000
//! fcgi-uring request /users/7                 # or put nginx in front (see README)
//! ```

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "Hello from axum over FastCGI" }))
        .route(
            "/users/{id}",
            get(|Path(id): Path<u32>| async move { format!("user {id}") }),
        )
        .route("/echo", post(|body: String| async move { body }))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Before: axum::serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?, app()).await?;
    fcgi_uring::Server::bind("127.0.0.1:9000")?.serve(app)?;
    Ok(())
}
