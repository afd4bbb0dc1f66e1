//! FastCGI params <-> `http` types, the way nginx, Apache, HAProxy, Caddy and lighttpd send them
//! (CGI/1.1, RFC 3875). Pure: no IO.
//!
//! - [`request`]: method, URI and headers of an `http::Request` from params; trusted params in
//!   the [`TrustedParams`] extension, never mixed with client headers (`HTTP_*`).
//! - [`mount`]: the path of an app mounted under a prefix (SCRIPT_NAME removed), opt-in.
//! - [`response`]: the CGI header block (`Status:` line, headers, blank line) for STDOUT.

pub mod mount;
pub mod request;
pub mod response;
pub mod trusted;

#[cfg(feature = "bench-internals")]
pub use request::build_request;
pub use response::{encode_head, encode_status_only};
pub(crate) use trusted::NotedParams;
pub use trusted::TrustedParams;
