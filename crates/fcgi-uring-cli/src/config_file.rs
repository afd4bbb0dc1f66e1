//! `fcgi-uring.toml`: every setting of the table [`SETTINGS`] as a file key, checked with
//! messages that name the file, the line, the key and what it accepts.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:9000"
//! workers = 0
//!
//! [ring]
//! sq_entries = 1024
//!
//! [timeouts]
//! idle = 300.0
//! ```
//!
//! Every key is optional (a missing one keeps its default); an unknown key is an error that
//! suggests the nearest key. [`ConfigFile::apply`] layers a file over a
//! [`ConfigBuilder`]; [`to_toml`] prints a [`Config`] as a file that [`ConfigFile::parse`] reads
//! back unchanged. [`example_toml`] and [`reference_markdown`] write `fcgi-uring.example.toml`
//! and `docs/configuration.md` from the table (tests compare both files with their output).
//!
//! The section structs below are the typed view of a file; a test checks that their keys and
//! types are the table's.

use fcgi_uring::config::{Accepts, RULES, Rule, SETTINGS, Setting, Value, nearest_key, parse_mode};
use fcgi_uring::{Config, ConfigBuilder, ConfigError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed (and range-checked) configuration file: `None` keeps the value it is applied to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub server: ServerSection,
    pub ring: RingSection,
    pub limits: LimitsSection,
    pub timeouts: TimeoutsSection,
    pub admin: AdminSection,
    pub ping: PingSection,
    pub access_log: AccessLogSection,
    pub slow_log: SlowLogSection,
    pub log: LogSection,
}

/// `[server]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub protocol: Option<String>,
    pub io: Option<String>,
    pub listen: Option<String>,
    pub workers: Option<i64>,
    pub pin_workers: Option<bool>,
    pub backlog: Option<i64>,
    /// Octal, as a string: `"660"`.
    pub unix_mode: Option<String>,
    pub share_port: Option<bool>,
    /// Addresses and networks separated by commas: `"10.0.0.5, 10.1.0.0/16"`.
    pub allowed_peers: Option<String>,
    pub strip_script_name: Option<bool>,
    pub shutdown_timeout: Option<f64>,
    pub upgrade_timeout: Option<f64>,
    pub accept_retry: Option<f64>,
}

/// `[ring]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingSection {
    pub sq_entries: Option<i64>,
    pub cq_entries: Option<i64>,
    pub recv_buffers: Option<i64>,
    pub recv_buffer_size: Option<i64>,
    pub recv_window_bytes: Option<i64>,
    pub defer_taskrun: Option<bool>,
    pub coop_taskrun: Option<bool>,
    pub completions_per_turn: Option<i64>,
    pub sqpoll: Option<bool>,
    pub sqpoll_idle_ms: Option<i64>,
    pub sqpoll_cpu: Option<i64>,
    pub idle_spin_us: Option<i64>,
    pub idle_wait_us: Option<i64>,
    pub yield_after_wake: Option<bool>,
    pub direct_send: Option<bool>,
    pub direct_recv: Option<bool>,
    pub registered_send_buffers: Option<i64>,
    pub send_buffer_size: Option<i64>,
    pub recv_bundle: Option<bool>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_conns_per_worker: Option<i64>,
    pub max_requests_per_worker: Option<i64>,
    pub max_requests_per_conn: Option<i64>,
    pub max_params_bytes: Option<i64>,
    pub max_params_pairs: Option<i64>,
    pub max_name_len: Option<i64>,
    pub max_value_len: Option<i64>,
    pub max_body_buffer: Option<i64>,
    pub max_output_buffer: Option<i64>,
    pub advertised_max_conns: Option<i64>,
    pub advertised_max_reqs: Option<i64>,
}

/// `[timeouts]`, in seconds (fractional allowed, `0` turns one off).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSection {
    pub idle: Option<f64>,
    pub params: Option<f64>,
    pub body: Option<f64>,
    pub handler: Option<f64>,
    pub write: Option<f64>,
    pub linger: Option<f64>,
}

/// `[admin]`: the admin HTTP listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: Option<String>,
    pub drain_delay: Option<f64>,
    pub stall_timeout: Option<f64>,
}

/// `[ping]`: the FastCGI ping path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PingSection {
    pub path: Option<String>,
    pub response: Option<String>,
}

/// `[access_log]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogSection {
    pub path: Option<String>,
    pub format: Option<String>,
}

/// `[slow_log]`, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlowLogSection {
    pub threshold: Option<f64>,
}

/// `[log]`: the binary's own log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: Option<String>,
}

/// Why a file was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read.
    Read { path: PathBuf, err: std::io::Error },
    /// Not TOML, or a value of the wrong type; `at` is `file:line:column`, `key` the
    /// `section.key` concerned when known.
    Syntax {
        at: String,
        key: Option<String>,
        message: String,
    },
    /// A key or value the table refuses; `at` is `file:line` (or the file's name).
    Setting { at: String, error: ConfigError },
}

impl std::error::Error for FileError {}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Read { path, err } => write!(f, "cannot read {}: {err}", path.display()),
            FileError::Syntax {
                at,
                key: Some(key),
                message,
            } => write!(f, "{at}: {key}: {message}"),
            FileError::Syntax { at, message, .. } => write!(f, "{at}: {message}"),
            FileError::Setting { at, error } => {
                write!(f, "{at}: {error}")?;
                if let ConfigError::UnknownKey { key, .. } = error {
                    write!(f, " ({})", valid_keys_near(key))?;
                }
                Ok(())
            }
        }
    }
}

/// `keys of [ring]: sq_entries, ...` for a key in a known section, else the sections.
fn valid_keys_near(key: &str) -> String {
    let section = key.split_once('.').map_or("", |(s, _)| s);
    let names: Vec<&str> = SETTINGS
        .iter()
        .filter(|s| s.section() == section)
        .map(|s| s.name())
        .collect();
    if names.is_empty() {
        format!("sections: {}", sections(SETTINGS).join(", "))
    } else {
        format!("keys of [{section}]: {}", names.join(", "))
    }
}

/// The sections of `settings`, in order.
fn sections(settings: &[Setting]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for s in settings {
        if !out.contains(&s.section()) {
            out.push(s.section());
        }
    }
    out
}

impl ConfigFile {
    /// Reads and checks `path` (see [`ConfigFile::parse`]).
    pub fn load(path: &Path) -> Result<ConfigFile, FileError> {
        let text = std::fs::read_to_string(path).map_err(|err| FileError::Read {
            path: path.to_owned(),
            err,
        })?;
        ConfigFile::parse(&text, &path.display().to_string())
    }

    /// Parses `text` (named `name` in messages) and checks every value against the table.
    /// Messages name the file, the line, the key and what it accepts.
    pub fn parse(text: &str, name: &str) -> Result<ConfigFile, FileError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| toml_error(&e, text, name))?;
        let mut probe = Config::builder();
        file.apply(&mut probe).map_err(|error| {
            let at = match key_of(&error).and_then(|key| key_line(text, key)) {
                Some(line) => format!("{name}:{line}"),
                None => name.to_owned(),
            };
            FileError::Setting { at, error }
        })?;
        Ok(file)
    }

    /// Every key the file sets, with its value, in the table's order.
    pub fn entries(&self) -> Result<Vec<(&'static Setting, Value)>, ConfigError> {
        // Structs of optional numbers, booleans and strings always serialise to a table.
        let table = toml::Table::try_from(self).expect("a ConfigFile serialises to a table");
        let mut out = Vec::new();
        for s in SETTINGS {
            let v = table
                .get(s.section())
                .and_then(|section| section.get(s.name()));
            if let Some(v) = v {
                out.push((s, value_of(s, v)?));
            }
        }
        Ok(out)
    }

    /// Sets every key the file has on `builder`, in the table's order (so an advertised
    /// FastCGI limit the file leaves out follows the limit it sets).
    pub fn apply(&self, builder: &mut ConfigBuilder) -> Result<(), ConfigError> {
        for (s, v) in self.entries()? {
            builder.set(s.key, v)?;
        }
        Ok(())
    }
}

/// The table's value of the TOML value `v` for setting `s`.
fn value_of(s: &Setting, v: &toml::Value) -> Result<Value, ConfigError> {
    Ok(match (v, &s.accepts) {
        // As on the command line: `none` unsets an optional setting.
        (toml::Value::String(t), _) if s.optional && t == "none" => Value::None,
        (toml::Value::Boolean(b), _) => Value::Bool(*b),
        (toml::Value::Integer(i), Accepts::Seconds { .. }) => Value::Seconds(*i as f64),
        (toml::Value::Integer(i), _) => Value::Int(*i),
        (toml::Value::Float(f), _) => Value::Seconds(*f),
        (toml::Value::String(t), Accepts::FileMode) => match parse_mode(t) {
            Some(m) => Value::Int(m.into()),
            None => {
                return Err(ConfigError::Invalid {
                    key: s.key,
                    text: t.clone(),
                    why: "not an octal file mode".to_owned(),
                    accepted: s.accepts,
                });
            }
        },
        (toml::Value::String(t), _) => Value::Text(t.clone()),
        (other, _) => Value::Text(other.to_string()),
    })
}

/// The key an error is about.
fn key_of(e: &ConfigError) -> Option<&str> {
    match e {
        ConfigError::WrongType { key, .. }
        | ConfigError::Invalid { key, .. }
        | ConfigError::OutOfRange { key, .. }
        | ConfigError::Requires { key, .. }
        | ConfigError::LessThan { key, .. } => Some(key),
        ConfigError::UnknownKey { key, .. } => Some(key),
        ConfigError::Conflict { keys, .. } => keys.first().map(|(k, _)| *k),
        _ => None,
    }
}

/// `v` of setting `s` as the file writes it; `None` for an unset optional setting.
pub fn toml_value(s: &Setting, v: &Value) -> Option<String> {
    Some(match (v, &s.accepts) {
        (Value::None, _) => return None,
        (Value::Int(m), Accepts::FileMode) => format!("\"{m:o}\""),
        (Value::Seconds(f), _) => toml::Value::Float(*f).to_string(),
        (Value::Text(t), _) => toml::Value::String(t.clone()).to_string(),
        (v, _) => v.to_string(),
    })
}

/// `config` as a complete TOML file that [`ConfigFile::parse`] reads back as the same
/// configuration: an unset optional setting of text is written `"none"` (so that a default the
/// reader applies when the key is missing, such as `fcgi-uring serve`'s admin listener, does
/// not come back; an unset number is left out), and a setting that follows another (`limits.advertised_max_reqs`) is left out while
/// it has that one's value, so that it goes on following it when the file is edited.
pub fn to_toml(config: &Config) -> String {
    let mut out =
        "# fcgi-uring configuration (fcgi-uring serve --config FILE); timeouts in seconds\n"
            .to_owned();
    for section in sections(SETTINGS) {
        out.push_str(&format!("\n[{section}]\n"));
        for s in SETTINGS.iter().filter(|s| s.section() == section) {
            let v = config.get(s.key).unwrap_or(Value::None);
            let leader = s.follows.and_then(|key| config.get(key));
            if leader.is_some_and(|l| l == v) {
                continue;
            }
            match toml_value(s, &v) {
                Some(v) => out.push_str(&format!("{} = {v}\n", s.name())),
                // A number's key cannot hold a string: left out (unset is its default).
                None if is_numeric(s) => {}
                None => out.push_str(&format!("{} = \"none\"\n", s.name())),
            }
        }
    }
    out
}

/// Whether the file writes `s` as a number.
fn is_numeric(s: &Setting) -> bool {
    matches!(
        s.accepts,
        Accepts::Int { .. } | Accepts::PowerOfTwo { .. } | Accepts::Seconds { .. }
    )
}

/// `v` as a flag and the help text write it: `1024`, `0.1`, `fastcgi`, `660`, `none`.
pub fn flag_value(s: &Setting, v: &Value) -> String {
    match (v, &s.accepts) {
        (Value::Int(m), Accepts::FileMode) => format!("{m:o}"),
        (Value::Text(t), _) => t.clone(),
        (v, _) => v.to_string(),
    }
}

/// `fcgi-uring.example.toml`: every setting of `settings` with its doc, what it accepts and
/// its default (an optional one commented out, with an example value).
pub fn example_toml(settings: &[Setting]) -> String {
    let mut out = String::from(
        "# fcgi-uring configuration: `fcgi-uring serve --config fcgi-uring.toml`.\n\
         # Every key is optional (a missing one keeps the default shown here); an unknown key or a\n\
         # value out of range is an error naming the key. Flags given on the command line override\n\
         # this file. `fcgi-uring serve --print-config` prints the effective configuration in this\n\
         # format. Reference: docs/configuration.md. Generated from the table of settings:\n\
         # `fcgi-uring config --example > fcgi-uring.example.toml`.\n",
    );
    for section in sections(settings) {
        out.push_str(&format!("\n[{section}]\n"));
        for s in settings.iter().filter(|s| s.section() == section) {
            let text = format!("{} Accepts: {}.", s.doc, s.accepts.summary());
            for line in wrap(&text, 97) {
                out.push_str(&format!("# {line}\n"));
            }
            let default = s.default_value();
            match (toml_value(s, &default), s.example) {
                // Set, it would stop following the setting it follows.
                (Some(v), _) if s.follows.is_some() => {
                    out.push_str(&format!("# {} = {v}\n", s.name()))
                }
                (Some(v), _) => out.push_str(&format!("{} = {v}\n", s.name())),
                (None, Some(example)) => {
                    let v = s.parse(example).ok();
                    let v = v.and_then(|v| toml_value(s, &v)).unwrap_or_default();
                    out.push_str(&format!("# {} = {v}\n", s.name()));
                }
                (None, None) => out.push_str(&format!("# {} =\n", s.name())),
            }
        }
    }
    out
}

/// `docs/configuration.md`: the reference table of `settings` and `rules`.
pub fn reference_markdown(settings: &[Setting], rules: &[Rule]) -> String {
    let mut out = String::from(
        "# Configuration\n\n\
         Every setting of `fcgi-uring serve` has a key in the configuration file, a flag and a \
         setter of\n`fcgi_uring::ConfigBuilder` for library users. Each has a safe default; a \
         value out of range\nstops the server with a message that names the key, the value and \
         what is accepted.\n\n\
         - **File**: `fcgi-uring serve --config fcgi-uring.toml` reads the keys below (TOML, in \
         the sections\n  shown); every key is optional, and an unknown key is refused with the \
         nearest valid key\n  suggested. [`fcgi-uring.example.toml`](../fcgi-uring.example.toml) \
         lists them all with their defaults.\n\
         - **Flags**: each key has the flag shown (`fcgi-uring serve --help`).\n\
         - **Precedence**: a flag given on the command line wins over the file, which wins over \
         the default.\n  `fcgi-uring serve [--config FILE] [flags] --print-config` prints the \
         effective configuration\n  as a file that `--config` accepts as is.\n\
         - **Library**: `Config::builder().listen(\"127.0.0.1:9000\".parse()?).workers(2).build()?` \
         (one setter per\n  setting, taking the setting's type), or by key on a `mut` builder: \
         `builder.set(\"server.workers\",\n  fcgi_uring::config::Value::Int(2))?`; `build` runs \
         the same checks.\n\n\
         Why these limits, and what a peer that hits one sees: [limits.md](limits.md).\n\n\
         Timeouts are in seconds (fractional allowed) and are checked by one coarse timer wheel \
         per worker\n(50 ms resolution).\n\n\
         This page is generated from the table of settings (`fcgi_uring::config::SETTINGS`) by\n\
         `fcgi-uring config --reference > docs/configuration.md`; a test fails when it is out \
         of date.\n",
    );
    for section in sections(settings) {
        out.push_str(&format!(
            "\n## [{section}]\n\n\
             | key | flag | builder | type | accepts | default | what it does |\n\
             |---|---|---|---|---|---|---|\n"
        ));
        for s in settings.iter().filter(|s| s.section() == section) {
            let default = match toml_value(s, &s.default_value()) {
                Some(v) => format!("`{v}`"),
                None => "unset".to_owned(),
            };
            let default = match s.follows {
                Some(leader) => format!("{default} (follows `{leader}`)"),
                None => default,
            };
            out.push_str(&format!(
                "| `{}` | `--{}` | `{}` | {} | {} | {default} | {} |\n",
                s.name(),
                s.flag,
                s.setter,
                s.accepts.type_name(),
                cell(&s.accepts.summary()),
                cell(s.doc),
            ));
        }
    }
    out.push_str("\n## Rules between settings\n\n");
    for rule in rules {
        out.push_str(&format!("- {}\n", rule.doc));
    }
    out
}

/// The reference page of the table (what `docs/configuration.md` must hold).
pub fn reference() -> String {
    reference_markdown(SETTINGS, RULES)
}

/// The example file of the table (what `fcgi-uring.example.toml` must hold).
pub fn example() -> String {
    example_toml(SETTINGS)
}

/// Text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// `text` cut into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A toml error as `file:line:column: message`; an unknown key becomes
/// [`ConfigError::UnknownKey`] with the nearest valid key.
fn toml_error(e: &toml::de::Error, text: &str, name: &str) -> FileError {
    let pos = e.span().map(|s| line_col(text, s.start));
    let at = match pos {
        Some((line, col)) => format!("{name}:{line}:{col}"),
        None => name.to_owned(),
    };
    let msg = e.message().trim();
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        let section = e
            .span()
            .map(|s| section_at(text, s.start))
            .unwrap_or_default();
        let key = if section.is_empty() {
            field.to_owned()
        } else {
            format!("{section}.{field}")
        };
        let nearest = nearest_key(&key);
        return FileError::Setting {
            at,
            error: ConfigError::UnknownKey { key, nearest },
        };
    }
    let message = msg.replace("expected i64", "expected an integer");
    let key = e.span().and_then(|s| key_at(text, s.start));
    FileError::Syntax { at, key, message }
}

/// The `section.key` set on the line holding byte `offset`, if that line is `key = value`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let section = section_at(text, offset);
    Some(if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    })
}

/// 1-based line and column of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// The `[section]` whose body holds byte `offset` (empty before the first header).
fn section_at(text: &str, offset: usize) -> String {
    let mut section = String::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        // A header is the section of what follows it, not of itself.
        if pos + line.len() > offset {
            break;
        }
        if let Some(h) = header(line) {
            section = h;
        }
        pos += line.len();
    }
    section
}

fn header(line: &str) -> Option<String> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?.split(']').next()?;
    Some(inner.trim().to_owned())
}

/// The 1-based line that sets `key` (`section.name`), if it can be found.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let (section, name) = key.split_once('.')?;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(h) = header(line) {
            current = h;
            continue;
        }
        let t = line.trim_start();
        if current == section
            && let Some(rest) = t.strip_prefix(name)
            && rest.trim_start().starts_with('=')
        {
            return Some(i + 1);
        }
    }
    None
}
