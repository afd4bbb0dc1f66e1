//! The configuration ([`config`]); the server that reads it is in [`crate::server`].

pub(crate) mod config;

pub use config::{Config, Protocol, Timeouts};
