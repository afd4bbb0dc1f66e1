//! fcgi-loadtest: a load generator for FastCGI and HTTP/1.1 servers.
//!
//! Layers, dependencies pointing one way: protocol codecs with no IO ([`fcgi`], [`http1`],
//! [`response`]), pacing and statistics with no clock ([`schedule`], [`stats`]) <- the per-thread
//! event loop ([`engine`], over [`net`] and [`sys`]) <- the run ([`run`](mod@run): threads, pinning,
//! server CPU, progress). All `unsafe` is in [`sys`]. On top: [`compare`] (servers and proxies
//! as children, rounds of cells) over [`cells`] (medians, spreads, CPU sums, error classes,
//! ranking; no IO) and [`cell_report`] (its table and page), [`diff`] (two comparisons), and
//! [`tune`].

pub mod cell_report;
pub mod cells;
pub mod child;
pub mod compare;
pub mod diff;
pub mod engine;
pub mod fcgi;
pub mod h2c;
pub mod http1;
pub mod net;
pub mod report;
pub mod response;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod surface;
pub mod sys;
pub mod tune;

pub use run::{Config, Protocol, run};
