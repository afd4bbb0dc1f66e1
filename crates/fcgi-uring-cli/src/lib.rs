//! The `fcgi-uring` command's parts, as a library for its tests and for `fcgi-loadtest`:
//! the demo app it serves, its configuration file, and its `request`, `reload`, `status` and `stop` subcommands.

#![forbid(unsafe_code)]

pub mod config_file;
pub mod demo;
pub mod reload;
pub mod request;
pub mod status;
pub mod stop;
