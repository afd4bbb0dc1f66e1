//! The application side of FastCGI 1.0 as a pure layer: bytes in, events and bytes out.
//!
//! No IO, no clock, no `unsafe`. Every allocation is bounded by [`Limits`]; hostile input gets a
//! spec-conforming answer or a [`ProtocolError`] that tells the caller to close the connection,
//! never a panic.
//!
//! - [`record`]: record header, types and encoders (spec 3.3, 5, 8).
//! - [`nv`]: the name-value pair codec (spec 3.4), streaming and bounded.
//! - [`params`]: the decoded params of one request.
//! - [`conn`]: the per-connection state machine (request ids, streams, management records).
//! - [`addr`]: the `host:port` / `unix:/path` notation both ends of a FastCGI hop use.

#![forbid(unsafe_code)]

pub mod addr;
pub mod conn;
pub mod nv;
pub mod params;
pub mod record;

pub use addr::{Addr, AddrParseError};
pub use conn::{Connection, Event, Limits, ProtocolError, RejectReason};
pub use params::{PairAt, Pairs, Params, ParamsArena, ParamsBuilder};
pub use record::{ProtocolStatus, RecordType, Role};
