//! Settings for operators: the admin listener, the FastCGI ping path, the access log, the
//! slow-request log and the format of the `fcgi-uring` binary's own log (see
//! docs/operations.md).

use fcgi_proto::addr::Addr;
use std::time::Duration;

/// The format of access-log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AccessLogFormat {
    /// The combined log format's fields, then the request time in microseconds, the worker,
    /// the connection and the request id.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

impl AccessLogFormat {
    pub const NAMES: &'static [&'static str] = &["combined", "json"];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessLogFormat::Combined => "combined",
            AccessLogFormat::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Option<AccessLogFormat> {
        match s {
            "combined" => Some(AccessLogFormat::Combined),
            "json" => Some(AccessLogFormat::Json),
            _ => None,
        }
    }
}

/// The format of the `fcgi-uring` binary's own log on standard error (its tracing events).
/// The library installs no tracing subscriber: an application serving with it logs through
/// its own, and may read this setting to choose that subscriber's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// One line of text per event: time, level, target, message and fields.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON formatter).
    Json,
}

impl LogFormat {
    pub const NAMES: &'static [&'static str] = &["text", "json"];

    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// The operator-facing settings of a [`super::Config`].
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct OpsConfig {
    /// Where the admin HTTP listener listens (`None`: no admin listener).
    pub admin_listen: Option<Addr>,
    /// After a shutdown request: how long `/readyz` (and the ping path) answer 503 while the
    /// server still accepts and serves, before it stops accepting.
    pub drain_delay: Duration,
    /// `/healthz` fails while a worker has not turned its loop for this long (zero: off).
    pub stall_timeout: Duration,
    /// The path answered by the runtime without calling the application.
    pub ping_path: Option<String>,
    /// The body of the ping answer.
    pub ping_response: String,
    /// Where the access log goes: a file, or `-` for standard output (`None`: no access log).
    pub access_log_path: Option<String>,
    pub access_log_format: AccessLogFormat,
    /// Requests slower than this are logged with their timing breakdown (zero: off).
    pub slow_log_threshold: Duration,
    /// The format of the `fcgi-uring` binary's own log (not read by the library).
    pub log_format: LogFormat,
}
