//! The handler surface: any `tower::Service<http::Request<RequestBody>>` returning an
//! `http::Response` with any `http_body::Body`, given to the server as one service cloned for
//! each core (an axum `Router`) or as a factory called once on each core ([`crate::App`]).
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
//! A factory runs once on each worker thread, so the service it makes needs neither `Send` nor
//! locks; only the factory crosses threads. A service given as is must be `Clone + Send`.

use crate::body::RequestBody;
use std::future::Future;
use std::task::{Context, Poll};
use tower_service::Service;

/// The error type handlers may return (anything convertible into it).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request as handlers see it.
pub type Request = http::Request<RequestBody>;

/// What the runtime serves: implemented for every `tower::Service<http::Request<RequestBody>>`
/// that answers an `http::Response` with any `http_body::Body`, whose errors convert into
/// [`BoxError`], and that owns what it borrows (`'static`). It only gathers those bounds in one
/// place; use it as `S: HttpService` in your own generic code that starts a server.
pub trait HttpService: 'static {
    /// The response body.
    type ResBody: http_body::Body<Error: Into<BoxError>> + 'static;
    /// The handler's error.
    type Error: Into<BoxError>;
    /// The handler's future.
    type Future: Future<Output = Result<http::Response<Self::ResBody>, Self::Error>> + 'static;

    /// `tower::Service::poll_ready`.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;

    /// `tower::Service::call`.
    fn call(&mut self, req: Request) -> Self::Future;
}

impl<S, B> HttpService for S
where
    S: Service<Request, Response = http::Response<B>> + 'static,
    S::Error: Into<BoxError>,
    S::Future: 'static,
    B: http_body::Body<Error: Into<BoxError>> + 'static,
{
    type ResBody = B;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Service::poll_ready(self, cx)
    }

    fn call(&mut self, req: Request) -> S::Future {
        Service::call(self, req)
    }
}

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
