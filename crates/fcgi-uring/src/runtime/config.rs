//! The server's configuration lives in [`crate::config`]; the runtime reads its fields.

pub use crate::config::{Config, Protocol, Timeouts};
