//! `server.io`: which IO backend drives the connections ([`IoMode`]), and the one a running
//! server uses ([`Backend`]).

use super::value::{FieldValue, Value};

/// The IO backend a server is asked to use (`server.io`, `--io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IoMode {
    /// io_uring when this process may use it (probed once at the first start), epoll otherwise,
    /// with one log line naming the cause and how to get io_uring back.
    #[default]
    Auto,
    /// io_uring only: a server that cannot set its rings up fails to start, naming the cause.
    Uring,
    /// epoll, even where io_uring is available.
    Epoll,
}

impl IoMode {
    /// The name the configuration file and `--io` use: `auto`, `uring` or `epoll`.
    pub const fn as_str(self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Epoll => "epoll",
        }
    }
}

impl std::fmt::Display for IoMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IoMode {
    type Err = String;

    fn from_str(s: &str) -> Result<IoMode, String> {
        match s {
            "auto" => Ok(IoMode::Auto),
            "uring" => Ok(IoMode::Uring),
            "epoll" => Ok(IoMode::Epoll),
            _ => Err(format!(
                "unknown io backend {s:?}: expected auto, uring or epoll"
            )),
        }
    }
}

impl FieldValue for IoMode {
    fn to_value(&self) -> Value {
        Value::Text(self.as_str().to_owned())
    }
    fn from_value(v: &Value) -> Option<IoMode> {
        match v {
            Value::Text(t) => t.parse().ok(),
            _ => None,
        }
    }
}

/// The IO backend a running server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// One io_uring per worker (multishot accept and receive, provided buffer rings).
    IoUring,
    /// One epoll instance per worker, readiness-driven reads and writes.
    Epoll,
}

impl Backend {
    /// `io_uring` or `epoll`, as the startup line and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
