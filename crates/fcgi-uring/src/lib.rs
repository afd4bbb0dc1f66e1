//! fcgi-uring: a thread-per-core io_uring FastCGI server for `http`/`tower` handlers.
//!
//! ```no_run
//! use fcgi_uring::{Request, Server, service_fn};
//!
//! async fn hello(_req: Request) -> Result<http::Response<String>, std::convert::Infallible> {
//!     Ok(http::Response::new("Hello, World!".to_owned()))
//! }
//!
//! Server::bind("127.0.0.1:9000").unwrap().serve(|| service_fn(hello)).unwrap();
//! ```
//!
//! An axum `Router` (any `Clone` service) is served as is, from async code as with
//! `axum::serve`: `fcgi_uring::serve("127.0.0.1:9000", router).await?` (see [`serve()`] and
//! [`App`] for what is per core).
//!
//! Layers, with dependencies pointing one way: `fcgi_proto` (pure FastCGI, its own crate) <-
//! `cgi` (params <-> `http`) <- `conn` (the connection core: state, requests, output,
//! deadlines; no IO) <- `uring` (the io_uring driver and the backend that runs the core on it;
//! the one module allowed `unsafe` besides the allocator, `alloc`, feature `mimalloc`) <-
//! `worker` (per-core loop, handler dispatch) <- `server` (threads, sockets, pinning).
//! `stats`, `wheel` (timer wheel, worker clock) and `sock` (the sends both backends make as
//! system calls) are leaves.
//! [`config`] holds the table of settings from which [`Config`], its builder, its checks and the
//! command line's flags and file keys are derived.

#![deny(unsafe_code)]

mod admin;
#[cfg(feature = "mimalloc")]
pub mod alloc;
mod body;
mod cgi;
pub mod config;
mod conn;
mod epoll;
#[cfg(feature = "http-compare")]
mod http_compare;
mod server;
mod service;
mod sock;
mod stats;
mod wheel;
mod worker;
// Parts of the driver's API are used only by the floor benchmark (feature `bench-internals`).
#[cfg(not(feature = "bench-internals"))]
#[allow(dead_code)]
mod uring;

// The io_uring driver, exposed for the no-application floor benchmark only (feature
// `bench-internals`): not a stable API. (Its docs are the module's own: an outer doc comment
// here would make rustdoc resolve the module's links from this scope.)
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod uring;

/// Params <-> `http` mapping and the worker's request path without IO ([`bench::Harness`]),
/// exposed for the per-request benchmarks only (feature `bench-internals`): not a stable API.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench {
    pub use crate::cgi::{build_request, encode_head};
    /// One case of the connection core's model test (`conn::hostile_model`), its operations
    /// read from `data`: for the fuzz target. Panics where the model finds the core wrong.
    #[doc(hidden)]
    pub use crate::conn::hostile_model::fuzz as core_model;
    pub use crate::worker::harness::Harness;
}

pub use admin::Readiness;
pub use body::{BodyError, FilterData, RequestBody};
pub use cgi::TrustedParams;
pub use config::{Backend, Config, IoMode, Protocol, Timeouts};
pub use config::{ConfigBuilder, ConfigError};
pub use fcgi_proto::{Addr, AddrParseError, Limits, Role};
pub use server::backend::IO_ENV;
pub use server::{
    App, IntoServer, Serve, Server, ServerHandle, Signals, StartError, UpgradeError,
    UpgradeOutcome, serve,
};
pub use service::{BoxError, HttpService, Request, ServiceFn, service_fn};
pub use stats::{Counter, Stats};
pub use uring::{Features, RingConfig, RingStats, SetupError};
