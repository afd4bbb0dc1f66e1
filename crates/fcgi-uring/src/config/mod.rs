//! Server configuration: every setting declared once in [`SETTINGS`] (file key, flag, what it
//! accepts, default, doc), the [`RULES`] between settings, and [`Config`], built with
//! [`Config::builder`] and checked against both.
//!
//! Guarantees: a [`Config`] from [`ConfigBuilder::build`] or [`Config::default`] passes
//! [`Config::validate`]; every check (a key's range and the rules between keys) exists once,
//! here, and the io_uring driver runs the same checks on its ring settings; each refusal is a
//! [`ConfigError`] that names the key, the value and what is accepted.
//!
//! ```
//! use fcgi_uring::Config;
//! use std::time::Duration;
//!
//! let config = Config::builder()
//!     .listen("127.0.0.1:9000".parse().unwrap())
//!     .workers(2)
//!     .idle_timeout(Duration::from_secs(60))
//!     .build()
//!     .unwrap();
//! assert_eq!(config.workers(), 2);
//! assert!(Config::builder().sq_entries(1000).build().is_err());
//! ```

mod error;
mod io;
mod ops;
mod peers;
mod ring;
mod rules;
mod settings;
mod value;

pub use error::ConfigError;
pub use io::{Backend, IoMode};
pub use ops::{AccessLogFormat, LogFormat, OpsConfig};
pub use peers::{PeerList, PeerListError, WEB_SERVER_ADDRS_ENV};
pub use rules::{RULES, Rule};
pub use settings::{SETTINGS, Setting, find};
pub use value::{Accepts, MAX_SECONDS, Value, ZeroSeconds, parse_mode};

#[cfg(test)]
pub(crate) use settings::MAX_SEND_BUFFERS;

use fcgi_proto::Limits;
use fcgi_proto::addr::Addr;
pub use ring::RingConfig;
use std::time::Duration;

/// Everything a server needs to start. `Config::default()` listens on 127.0.0.1:9000 with one
/// worker per core; [`Config::builder`] changes settings and checks the result. Every field is
/// a setting of [`SETTINGS`] (or a group of them: `ring`, `limits`, `timeouts`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// What clients speak: FastCGI (io_uring), or HTTP/1.1 or h2c (hyper on tokio, for
    /// comparisons; see the `http_compare` module).
    pub(crate) protocol: Protocol,
    /// The IO backend: io_uring, epoll, or io_uring where this process may use it.
    pub(crate) io: IoMode,
    /// Where to listen: TCP (one SO_REUSEPORT listener per worker) or a UNIX socket (one
    /// listener shared by all workers).
    pub(crate) listen: Addr,
    /// Worker threads; `0` means one per available core.
    pub(crate) workers: usize,
    /// Pin worker `i` to the i-th available core.
    pub(crate) pin_workers: bool,
    /// listen(2) backlog.
    pub(crate) backlog: i32,
    /// File mode of a UNIX socket (e.g. 0o660); `None` keeps the umask's.
    pub(crate) unix_mode: Option<u32>,
    /// Start even when another server listens on the TCP port (SO_REUSEPORT sharing).
    pub(crate) share_port: bool,
    /// Remove SCRIPT_NAME from the start of the request path (see `cgi::mount`).
    pub(crate) strip_script_name: bool,
    /// The only TCP peers that may connect (`None`: any, or `FCGI_WEB_SERVER_ADDRS`).
    pub(crate) allowed_peers: Option<PeerList>,
    /// Ring and receive-buffer sizes.
    pub(crate) ring: RingConfig,
    /// Protocol limits (params sizes, requests per connection, advertised values).
    pub(crate) limits: Limits,
    /// Unread request-body bytes buffered per request before the connection stops reading.
    pub(crate) max_body_buffer: usize,
    /// Response bytes queued per connection before streaming handlers are paused.
    pub(crate) max_output_buffer: usize,
    /// Connections per worker; past it new connections are closed at once.
    pub(crate) max_conns_per_worker: usize,
    /// Requests in flight per worker (all connections); past it a request whose params are
    /// complete is answered END_REQUEST(OVERLOADED) without running its handler.
    pub(crate) max_requests_per_worker: usize,
    /// Deadlines that reclaim connections and requests a peer leaves hanging.
    pub(crate) timeouts: Timeouts,
    /// How long a graceful shutdown waits for in-flight requests.
    pub(crate) shutdown_timeout: Duration,
    /// How long a hot upgrade waits for the new process to report ready before giving up on it
    /// (the old process keeps serving).
    pub(crate) upgrade_timeout: Duration,
    /// After accept fails (EMFILE when RLIMIT_NOFILE is reached, ENFILE, ENOMEM...), how long a
    /// worker waits before accepting again. Meanwhile new connections wait in the listen
    /// backlog; retrying at once would spin at full CPU while the failure lasts.
    pub(crate) accept_retry: Duration,
    /// Completions handled per loop turn before the answers are submitted: smaller sends
    /// responses sooner (better overlap with the peer), larger amortises each `io_uring_enter`.
    pub(crate) completions_per_turn: usize,
    /// Microseconds a worker with nothing to do keeps looking for new completions and handler
    /// output before it sleeps (0: sleep at once). Each look enters the kernel without waiting
    /// (with DEFER_TASKRUN, completions appear only then) and yields to the worker's tokio
    /// tasks in between; a shutdown request ends the spin. Trades CPU for wake-up latency.
    pub(crate) idle_spin_us: u32,
    /// Microseconds an idle worker with no handler task running waits for IO in its backend
    /// (`io_uring_enter`, or `epoll_wait` on its own epoll fd) before it sleeps in tokio's
    /// reactor (0: always sleep in tokio). Waking from the backend costs one system call where
    /// tokio's reactor costs three (its `epoll_wait`, the eventfd read, the enter); tasks the
    /// application runs outside requests (woken by a timer, tokio IO or another thread) and a
    /// shutdown request are noticed at the end of such a wait, at most this much later.
    pub(crate) idle_wait_us: u32,
    /// Whether a worker woken from a wait in its backend yields the CPU once before its turn,
    /// while that pays (see `worker::wake_yield`).
    pub(crate) yield_after_wake: bool,
    /// The admin listener, the ping path, the access and slow logs.
    pub(crate) ops: OpsConfig,
}

impl Default for Config {
    /// The defaults of [`SETTINGS`].
    fn default() -> Config {
        // Every field is overwritten by its setting's default.
        let mut c = Config {
            protocol: Protocol::FastCgi,
            io: IoMode::Auto,
            listen: Addr::Tcp(([127, 0, 0, 1], 0).into()),
            workers: 0,
            pin_workers: false,
            backlog: 0,
            unix_mode: None,
            share_port: false,
            strip_script_name: false,
            allowed_peers: None,
            ring: RingConfig::default(),
            limits: Limits::default(),
            max_body_buffer: 0,
            max_output_buffer: 0,
            max_conns_per_worker: 0,
            max_requests_per_worker: 0,
            timeouts: Timeouts::OFF,
            shutdown_timeout: Duration::ZERO,
            upgrade_timeout: Duration::ZERO,
            accept_retry: Duration::ZERO,
            completions_per_turn: 0,
            idle_spin_us: 0,
            idle_wait_us: 0,
            yield_after_wake: false,
            ops: OpsConfig::default(),
        };
        settings::apply_defaults(&mut c);
        c
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        Config::default().into_builder()
    }

    /// A builder starting from this configuration.
    pub fn into_builder(self) -> ConfigBuilder {
        ConfigBuilder { config: self }
    }

    /// Checks every setting's range, then the [`RULES`] between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for s in SETTINGS {
            s.check(&(s.get)(self))?;
        }
        RULES.iter().try_for_each(|rule| (rule.check)(self))
    }

    /// The value of the setting `key` (`section.key`), `None` for an unknown key.
    pub fn get(&self, key: &str) -> Option<Value> {
        find(key).map(|s| (s.get)(self))
    }

    /// Worker count after resolving `0` to the number of available cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
    pub fn io(&self) -> IoMode {
        self.io
    }
    pub fn listen(&self) -> &Addr {
        &self.listen
    }
    /// Worker threads as set (`0`: one per core; see [`Config::worker_count`]).
    pub fn workers(&self) -> usize {
        self.workers
    }
    pub fn pin_workers(&self) -> bool {
        self.pin_workers
    }
    pub fn backlog(&self) -> i32 {
        self.backlog
    }
    pub fn unix_mode(&self) -> Option<u32> {
        self.unix_mode
    }
    pub fn share_port(&self) -> bool {
        self.share_port
    }
    pub fn strip_script_name(&self) -> bool {
        self.strip_script_name
    }
    /// The peers allowed to connect as set (`FCGI_WEB_SERVER_ADDRS` is read at start when
    /// this is `None`).
    pub fn allowed_peers(&self) -> Option<&PeerList> {
        self.allowed_peers.as_ref()
    }
    pub fn ring(&self) -> &RingConfig {
        &self.ring
    }
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    pub fn max_body_buffer(&self) -> usize {
        self.max_body_buffer
    }
    pub fn max_output_buffer(&self) -> usize {
        self.max_output_buffer
    }
    pub fn max_conns_per_worker(&self) -> usize {
        self.max_conns_per_worker
    }
    pub fn max_requests_per_worker(&self) -> usize {
        self.max_requests_per_worker
    }
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// How long a hot upgrade waits for the new process to report ready.
    pub fn upgrade_timeout(&self) -> Duration {
        self.upgrade_timeout
    }
    pub fn accept_retry(&self) -> Duration {
        self.accept_retry
    }
    pub fn completions_per_turn(&self) -> usize {
        self.completions_per_turn
    }
    pub fn idle_spin_us(&self) -> u32 {
        self.idle_spin_us
    }
    pub fn idle_wait_us(&self) -> u32 {
        self.idle_wait_us
    }
    pub fn yield_after_wake(&self) -> bool {
        self.yield_after_wake
    }
    /// The admin listener, the ping path, the access and slow logs.
    pub fn ops(&self) -> &OpsConfig {
        &self.ops
    }
}

/// Builds a [`Config`]: one setter per setting of [`SETTINGS`] (named after it: `workers`,
/// `sq_entries`, `idle_timeout`...), [`ConfigBuilder::set`] by file key, and
/// [`ConfigBuilder::build`], which checks the result.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Sets the setting `key` (`section.key`) to `value`, checked against what it accepts
    /// (the rules between settings are checked by [`ConfigBuilder::build`]).
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), ConfigError> {
        let setting = find(key).ok_or_else(|| ConfigError::UnknownKey {
            key: key.to_owned(),
            nearest: nearest_key(key),
        })?;
        setting.check(&value)?;
        let old = (setting.get)(&self.config);
        if !(setting.set)(&mut self.config, &value) {
            return Err(setting.out_of_range(value));
        }
        follow(&mut self.config, setting.key, &old);
        Ok(())
    }

    /// Every ring setting at once.
    pub fn ring(mut self, ring: RingConfig) -> ConfigBuilder {
        self.config.ring = ring;
        self
    }

    /// Every protocol limit at once (the advertised values included).
    pub fn limits(mut self, limits: Limits) -> ConfigBuilder {
        self.config.limits = limits;
        self
    }

    /// Every timeout at once.
    pub fn timeouts(mut self, timeouts: Timeouts) -> ConfigBuilder {
        self.config.timeouts = timeouts;
        self
    }

    /// The configuration, if it passes [`Config::validate`].
    pub fn build(self) -> Result<Config, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

/// After `key` changed from `old`: the settings that follow it and still had its old value
/// take the new one.
fn follow(c: &mut Config, key: &str, old: &Value) {
    let Some(leader) = find(key) else {
        return;
    };
    let new = (leader.get)(c);
    for s in SETTINGS.iter().filter(|s| s.follows == Some(key)) {
        if (s.get)(c) == *old {
            (s.set)(c, &new);
        }
    }
}

/// Checks ring settings the way [`Config::validate`] does (for the io_uring driver).
pub(crate) fn check_ring(ring: &RingConfig) -> Result<(), ConfigError> {
    Config {
        ring: ring.clone(),
        ..Config::default()
    }
    .validate()
}

impl Setting {
    /// `section` of `section.key`.
    pub fn section(&self) -> &'static str {
        self.key.split_once('.').map_or("", |(s, _)| s)
    }

    /// `key` of `section.key`.
    pub fn name(&self) -> &'static str {
        self.key.split_once('.').map_or(self.key, |(_, k)| k)
    }

    /// Whether `value` is accepted: of the setting's type and in its range.
    pub fn check(&self, value: &Value) -> Result<(), ConfigError> {
        if *value == Value::None && self.optional {
            return Ok(());
        }
        if !self.accepts.same_type(value) {
            return Err(ConfigError::WrongType {
                key: self.key,
                value: value.clone(),
                expected: expected(&self.accepts),
            });
        }
        if !self.accepts.admits(value) {
            return Err(self.refusal(value));
        }
        Ok(())
    }

    /// Why `value` (of the right type) is refused: an address says what is wrong with it (a
    /// port out of range, no host), other values only what is accepted.
    fn refusal(&self, value: &Value) -> ConfigError {
        if let (Accepts::Address, Value::Text(text)) = (&self.accepts, value)
            && let Err(e) = text.parse::<Addr>()
        {
            return ConfigError::Invalid {
                key: self.key,
                text: text.clone(),
                why: e.reason(),
                accepted: self.accepts,
            };
        }
        self.out_of_range(value.clone())
    }

    /// The value of `text` as a flag writes it (`1024`, `true`, `2.5`, `660` for a file mode,
    /// `none` for an optional setting), checked.
    pub fn parse(&self, text: &str) -> Result<Value, ConfigError> {
        let value = if self.optional && text == "none" {
            Value::None
        } else {
            self.accepts
                .parse(text)
                .map_err(|why| ConfigError::Invalid {
                    key: self.key,
                    text: text.to_owned(),
                    why,
                    accepted: self.accepts,
                })?
        };
        self.check(&value)?;
        Ok(value)
    }

    /// The default, as the file writes it.
    pub fn default_value(&self) -> Value {
        (self.default)()
    }

    fn out_of_range(&self, value: Value) -> ConfigError {
        ConfigError::OutOfRange {
            key: self.key,
            value,
            accepted: self.accepts,
        }
    }
}

fn expected(accepts: &Accepts) -> &'static str {
    match accepts.type_name() {
        "boolean" => "true or false",
        "integer" => "an integer",
        "seconds" => "a number of seconds",
        _ => "a string",
    }
}

/// The key (or section) most like `key`: same name with a flag's spelling
/// (`timeouts.idle_timeout` -> `timeouts.idle`), or a small edit away.
pub fn nearest_key(key: &str) -> Option<&'static str> {
    let (section, name) = key.split_once('.').unwrap_or(("", key));
    let as_flag = name.replace('_', "-");
    if let Some(s) = SETTINGS
        .iter()
        .find(|s| s.flag == as_flag && (section.is_empty() || s.section() == section))
    {
        return Some(s.key);
    }
    let candidates: Vec<&'static str> = if key.contains('.') {
        SETTINGS.iter().map(|s| s.key).collect()
    } else {
        let mut sections: Vec<&'static str> = SETTINGS.iter().map(|s| s.section()).collect();
        sections.dedup();
        sections
    };
    candidates
        .into_iter()
        .map(|c| (edit_distance(key, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance in bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Deadlines, checked by one coarse timer wheel per worker (resolution
/// [`Timeouts::RESOLUTION`]). `Duration::ZERO` turns one off. `Timeouts::default()` holds the
/// defaults of the `timeouts.*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection with no request in flight and nothing queued, on which nothing was
    /// received for this long, is closed.
    pub idle: Duration,
    /// A request whose PARAMS stream has not ended this long after its BEGIN_REQUEST closes
    /// its connection (the peer and we cannot agree on that request any more).
    pub params: Duration,
    /// A request body (STDIN or DATA) that is still open while no byte arrived on its
    /// connection for this long fails with [`crate::BodyError::TimedOut`] (slowloris).
    pub body: Duration,
    /// A handler still running this long after dispatch is cancelled: 504 if nothing was
    /// sent yet, else its response is cut short. Off by default.
    pub handler: Duration,
    /// Output queued while the peer has not taken a byte for this long: the connection is
    /// closed (a peer that stopped reading).
    pub write: Duration,
    /// After our FIN on a KEEP_CONN=0 connection, how long we keep reading until the peer
    /// closes too.
    pub linger: Duration,
}

impl Timeouts {
    /// Granularity of every deadline.
    pub const RESOLUTION: Duration = Duration::from_millis(50);

    /// Every deadline off.
    pub const OFF: Timeouts = Timeouts {
        idle: Duration::ZERO,
        params: Duration::ZERO,
        body: Duration::ZERO,
        handler: Duration::ZERO,
        write: Duration::ZERO,
        linger: Duration::ZERO,
    };
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Config::default().timeouts
    }
}

/// The protocol the server speaks to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// FastCGI over io_uring (the point of this crate).
    #[default]
    FastCgi,
    /// HTTP/1.1 with hyper on tokio (feature `http-compare`).
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c, no upgrade) with hyper on tokio (feature `http-compare`).
    H2c,
}

impl Protocol {
    /// The name the configuration file and `--protocol` use: `fastcgi`, `http1` or `h2c`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::FastCgi => "fastcgi",
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "fastcgi" => Ok(Protocol::FastCgi),
            "http1" => Ok(Protocol::Http1),
            "h2c" => Ok(Protocol::H2c),
            _ => Err(format!(
                "unknown protocol {s:?}: expected fastcgi, http1 or h2c"
            )),
        }
    }
}

#[cfg(test)]
mod tests;
