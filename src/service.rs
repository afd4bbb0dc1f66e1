//! The handler surface: any `tower::Service<http::Request<RequestBody>>` returning an
//! `http::Response` with any `http_body::Body`, built once per core by a factory.
//!
//! ```no_run
//! use bytes::Bytes;
//! use fcgi_uring::{RequestBody, Server, service_fn};
//! use http_body_util::Full;
//!
//! async fn hello(_req: http::Request<RequestBody>) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
//!     Ok(http::Response::new(Full::new(Bytes::from_static(b"Hello, World!"))))
//! }
//!
//! Server::bind("127.0.0.1:9000").unwrap().serve(|| service_fn(hello)).unwrap();
//! ```
//!
//! The factory runs once on each worker thread, so the service itself needs neither `Send` nor
//! locks; only the factory crosses threads.

use crate::body::RequestBody;
use std::future::Future;
use std::task::{Context, Poll};
use tower_service::Service;

/// The error type handlers may return (anything convertible into it).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request as handlers see it.
pub type Request = http::Request<RequestBody>;

/// Turns an async function `Request -> Result<Response, E>` into a service.
pub fn service_fn<F>(f: F) -> ServiceFn<F> {
    ServiceFn { f }
}

/// The service made by [`service_fn`].
#[derive(Clone, Copy, Debug)]
pub struct ServiceFn<F> {
    f: F,
}

impl<F, Fut, R, E> Service<Request> for ServiceFn<F>
where
    F: FnMut(Request) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    type Response = R;
    type Error = E;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Fut {
        (self.f)(req)
    }
}
