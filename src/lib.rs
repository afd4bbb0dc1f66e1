//! fcgi-uring: a thread-per-core io_uring FastCGI server for `http`/`tower` handlers.
//!
//! Layers, with dependencies pointing one way:
//! [`protocol`] (pure FastCGI) <- [`cgi`] (params <-> `http`) <- `runtime` (connection glue,
//! per-core workers, server) which alone uses [`uring`] (the io_uring driver, all `unsafe`).

pub mod addr;
pub mod cgi;
pub mod client;
pub mod config_file;
pub mod protocol;
pub mod uring;

pub use addr::Addr;
pub mod body;
pub mod runtime;
pub mod service;

pub use body::{BodyError, FilterData, RequestBody};
pub use cgi::TrustedParams;
pub use protocol::Role;
pub use runtime::{Config, Counter, Protocol, Server, ServerHandle, StartError, Stats, Timeouts};
pub use service::{BoxError, HttpService, Request, ServiceFn, service_fn};
pub mod demo;
