//! `fcgi-uring.toml`: every setting of [`Config`] in a file, checked with messages that name the
//! key and the accepted range.
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
//! Every key is optional (a missing one keeps its default); an unknown key is an error.
//! [`ConfigFile::apply`] layers a file over a [`Config`], [`validate`] checks a whole
//! [`Config`] (including cross-key rules such as `cq_entries >= sq_entries`) and [`to_toml`]
//! prints a [`Config`] as a file that [`ConfigFile::parse`] reads back unchanged.

use fcgi_uring::Addr;
use fcgi_uring::{Config, Protocol};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// A parsed (and range-checked) configuration file: `None` keeps the value it is applied to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub server: ServerSection,
    pub ring: RingSection,
    pub limits: LimitsSection,
    pub timeouts: TimeoutsSection,
}

/// `[server]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_workers: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<i64>,
    /// Octal, as a string: `"660"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_mode: Option<String>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<f64>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_retry: Option<f64>,
}

/// `[ring]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sq_entries: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cq_entries: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv_buffers: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv_buffer_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defer_taskrun: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completions_per_turn: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coop_taskrun: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqpoll: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqpoll_idle_ms: Option<i64>,
    /// Absent: the scheduler places the SQ thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqpoll_cpu: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_spin_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_send_buffers: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_buffer_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv_bundle: Option<bool>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_conns_per_worker: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_worker: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_conn: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_params_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_params_pairs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_name_len: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_value_len: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_buffer: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_buffer: Option<i64>,
    /// FCGI_MAX_CONNS in GET_VALUES_RESULT; defaults to `max_conns_per_worker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_max_conns: Option<i64>,
    /// FCGI_MAX_REQS in GET_VALUES_RESULT; defaults to `max_requests_per_conn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_max_reqs: Option<i64>,
}

/// `[timeouts]`, in seconds (fractional allowed, `0` turns one off).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linger: Option<f64>,
}

/// Longest accepted timeout: one year.
pub const MAX_TIMEOUT_SECS: f64 = 365.0 * 24.0 * 3600.0;

const GIB: i128 = 1 << 30;

/// What an integer key accepts.
#[derive(Clone, Copy)]
enum Rule {
    Range(i128, i128),
    PowerOfTwo(i128, i128),
}

/// Every integer key, with the flag of `fcgi-uring serve` that sets it.
const INT_KEYS: &[(&str, &str, Rule)] = &[
    ("server.workers", "--workers", Rule::Range(0, 4096)),
    (
        "server.backlog",
        "--backlog",
        Rule::Range(0, i32::MAX as i128),
    ),
    (
        "ring.sq_entries",
        "--ring-entries",
        Rule::PowerOfTwo(1, 32768),
    ),
    (
        "ring.cq_entries",
        "--cq-entries",
        Rule::PowerOfTwo(1, 65536),
    ),
    (
        "ring.recv_buffers",
        "--recv-buffers",
        Rule::PowerOfTwo(1, 32768),
    ),
    (
        "ring.recv_buffer_size",
        "--recv-buffer-size",
        Rule::Range(1, 16 << 20),
    ),
    (
        "ring.completions_per_turn",
        "--completions-per-turn",
        Rule::Range(1, 65536),
    ),
    (
        "ring.sqpoll_idle_ms",
        "--sqpoll-idle-ms",
        Rule::Range(1, 60_000),
    ),
    ("ring.sqpoll_cpu", "--sqpoll-cpu", Rule::Range(0, 4095)),
    (
        "ring.idle_spin_us",
        "--idle-spin-us",
        Rule::Range(0, 100_000),
    ),
    (
        "ring.registered_send_buffers",
        "--registered-send-buffers",
        Rule::Range(0, 16384),
    ),
    (
        "ring.send_buffer_size",
        "--send-buffer-size",
        Rule::Range(1, 16 << 20),
    ),
    (
        "limits.max_conns_per_worker",
        "--max-conns-per-worker",
        Rule::Range(1, 1 << 24),
    ),
    (
        "limits.max_requests_per_worker",
        "--max-requests-per-worker",
        Rule::Range(1, 1 << 24),
    ),
    (
        "limits.max_requests_per_conn",
        "--max-requests-per-conn",
        Rule::Range(1, 65535),
    ),
    (
        "limits.max_params_bytes",
        "--max-params-bytes",
        Rule::Range(1, GIB),
    ),
    ("limits.max_params_pairs", "", Rule::Range(1, 1 << 24)),
    ("limits.max_name_len", "", Rule::Range(1, GIB)),
    ("limits.max_value_len", "", Rule::Range(1, GIB)),
    (
        "limits.max_body_buffer",
        "--max-body-buffer",
        Rule::Range(1, GIB),
    ),
    (
        "limits.max_output_buffer",
        "--max-output-buffer",
        Rule::Range(1, GIB),
    ),
    (
        "limits.advertised_max_conns",
        "",
        Rule::Range(1, u32::MAX as i128),
    ),
    (
        "limits.advertised_max_reqs",
        "",
        Rule::Range(1, u32::MAX as i128),
    ),
];

/// Every seconds key, with its flag.
const SECS_KEYS: &[(&str, &str)] = &[
    ("server.shutdown_timeout", "--shutdown-timeout"),
    ("server.accept_retry", "--accept-retry"),
    ("timeouts.idle", "--idle-timeout"),
    ("timeouts.params", "--params-timeout"),
    ("timeouts.body", "--body-timeout"),
    ("timeouts.handler", "--handler-timeout"),
    ("timeouts.write", "--write-timeout"),
    ("timeouts.linger", "--linger-timeout"),
];

fn rule(key: &str) -> Rule {
    INT_KEYS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, r)| *r)
        .expect("every integer key has a rule")
}

fn flag(key: &str) -> &'static str {
    INT_KEYS
        .iter()
        .map(|(k, f, _)| (*k, *f))
        .chain(SECS_KEYS.iter().copied())
        .find(|(k, _)| *k == key)
        .map_or("", |(_, f)| f)
}

/// Checks one integer key's value: `Err("ring.sq_entries = 1000: must be a power of two between
/// 1 and 32768")`.
fn check_int(key: &str, v: i128) -> Result<(), String> {
    match rule(key) {
        Rule::Range(lo, hi) if !(lo..=hi).contains(&v) => {
            Err(format!("{key} = {v}: must be between {lo} and {hi}"))
        }
        Rule::PowerOfTwo(lo, hi) if !(lo..=hi).contains(&v) || (v as u128).count_ones() != 1 => {
            Err(format!(
                "{key} = {v}: must be a power of two between {lo} and {hi}"
            ))
        }
        _ => Ok(()),
    }
}

/// Settings in seconds where 0 is refused rather than meaning "off", with the reason.
const NONZERO_SECS: &[(&str, &str)] = &[(
    "server.accept_retry",
    "retrying a failed accept at once spins at full CPU",
)];

fn check_secs(key: &str, v: f64) -> Result<Duration, String> {
    let nonzero = NONZERO_SECS.iter().find(|(k, _)| *k == key);
    if let Some((_, why)) = nonzero
        && v == 0.0
    {
        return Err(format!("{key} = 0: must be more than 0 seconds ({why})"));
    }
    if !v.is_finite() || !(0.0..=MAX_TIMEOUT_SECS).contains(&v) {
        let zero = if nonzero.is_some() {
            ", more than 0"
        } else {
            " (0 turns it off)"
        };
        return Err(format!(
            "{key} = {v}: must be a number of seconds between 0 and {MAX_TIMEOUT_SECS}{zero}"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses a file mode in octal: `"660"`, `"0660"` or `"0o660"`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777 && !digits.is_empty())
        .ok_or_else(|| format!("{s:?} must be an octal file mode between 0 and 777 (e.g. \"660\")"))
}

/// The name of a protocol as the file and `--protocol` spell it.
pub fn protocol_name(p: Protocol) -> &'static str {
    p.as_str()
}

impl ConfigFile {
    /// Reads and checks `path` (see [`ConfigFile::parse`]).
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        ConfigFile::parse(&text, &path.display().to_string())
    }

    /// Parses `text` (named `name` in messages) and checks every value's range. Messages name
    /// the file, the line, the key and what it accepts.
    pub fn parse(text: &str, name: &str) -> Result<ConfigFile, String> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| toml_error(&e, text, name))?;
        let mut probe = Config::default();
        file.apply(&mut probe)
            .map_err(|(key, msg)| match key_line(text, &key) {
                Some(line) => format!("{name}:{line}: {msg}"),
                None => format!("{name}: {msg}"),
            })?;
        Ok(file)
    }

    /// Sets every key the file has on `config`. When the file sets `max_requests_per_conn` or
    /// `max_conns_per_worker` but not the matching `advertised_*` key, the advertised value
    /// follows (as the command-line flags do). `Err((key, message))` for a value out of range.
    pub fn apply(&self, config: &mut Config) -> Result<(), (String, String)> {
        fn int<T: TryFrom<i64>>(
            key: &str,
            v: Option<i64>,
            out: &mut T,
        ) -> Result<(), (String, String)> {
            if let Some(v) = v {
                check_int(key, v.into()).map_err(|m| (key.to_owned(), m))?;
                *out = T::try_from(v).ok().expect("range fits the type");
            }
            Ok(())
        }
        fn secs(key: &str, v: Option<f64>, out: &mut Duration) -> Result<(), (String, String)> {
            if let Some(v) = v {
                *out = check_secs(key, v).map_err(|m| (key.to_owned(), m))?;
            }
            Ok(())
        }
        let s = &self.server;
        if let Some(p) = &s.protocol {
            config.protocol = p.parse().map_err(|e: String| {
                (
                    "server.protocol".to_owned(),
                    format!("server.protocol: {e}"),
                )
            })?;
        }
        if let Some(l) = &s.listen {
            config.listen = l
                .parse::<Addr>()
                .map_err(|e| ("server.listen".to_owned(), format!("server.listen: {e}")))?;
        }
        int("server.workers", s.workers, &mut config.workers)?;
        if let Some(pin) = s.pin_workers {
            config.pin_workers = pin;
        }
        int("server.backlog", s.backlog, &mut config.backlog)?;
        if let Some(m) = &s.unix_mode {
            config.unix_mode = Some(parse_mode(m).map_err(|e| {
                (
                    "server.unix_mode".to_owned(),
                    format!("server.unix_mode = {e}"),
                )
            })?);
        }
        secs(
            "server.shutdown_timeout",
            s.shutdown_timeout,
            &mut config.shutdown_timeout,
        )?;
        secs(
            "server.accept_retry",
            s.accept_retry,
            &mut config.accept_retry,
        )?;

        let r = &self.ring;
        int("ring.sq_entries", r.sq_entries, &mut config.ring.sq_entries)?;
        int("ring.cq_entries", r.cq_entries, &mut config.ring.cq_entries)?;
        int(
            "ring.recv_buffers",
            r.recv_buffers,
            &mut config.ring.recv_buffers,
        )?;
        int(
            "ring.recv_buffer_size",
            r.recv_buffer_size,
            &mut config.ring.recv_buffer_size,
        )?;
        if let Some(d) = r.defer_taskrun {
            config.ring.defer_taskrun = d;
        }
        int(
            "ring.completions_per_turn",
            r.completions_per_turn,
            &mut config.completions_per_turn,
        )?;
        if let Some(c) = r.coop_taskrun {
            config.ring.coop_taskrun = c;
        }
        if let Some(q) = r.sqpoll {
            config.ring.sqpoll = q;
        }
        int(
            "ring.sqpoll_idle_ms",
            r.sqpoll_idle_ms,
            &mut config.ring.sqpoll_idle_ms,
        )?;
        if let Some(cpu) = r.sqpoll_cpu {
            let mut v = 0u32;
            int("ring.sqpoll_cpu", Some(cpu), &mut v)?;
            config.ring.sqpoll_cpu = Some(v);
        }
        int(
            "ring.idle_spin_us",
            r.idle_spin_us,
            &mut config.idle_spin_us,
        )?;
        int(
            "ring.registered_send_buffers",
            r.registered_send_buffers,
            &mut config.ring.registered_send_buffers,
        )?;
        int(
            "ring.send_buffer_size",
            r.send_buffer_size,
            &mut config.ring.send_buffer_size,
        )?;
        if let Some(b) = r.recv_bundle {
            config.ring.recv_bundle = b;
        }

        let l = &self.limits;
        int(
            "limits.max_conns_per_worker",
            l.max_conns_per_worker,
            &mut config.max_conns_per_worker,
        )?;
        int(
            "limits.max_requests_per_worker",
            l.max_requests_per_worker,
            &mut config.max_requests_per_worker,
        )?;
        int(
            "limits.max_requests_per_conn",
            l.max_requests_per_conn,
            &mut config.limits.max_requests_per_conn,
        )?;
        int(
            "limits.max_params_bytes",
            l.max_params_bytes,
            &mut config.limits.max_params_bytes,
        )?;
        int(
            "limits.max_params_pairs",
            l.max_params_pairs,
            &mut config.limits.max_params_pairs,
        )?;
        int(
            "limits.max_name_len",
            l.max_name_len,
            &mut config.limits.max_name_len,
        )?;
        int(
            "limits.max_value_len",
            l.max_value_len,
            &mut config.limits.max_value_len,
        )?;
        int(
            "limits.max_body_buffer",
            l.max_body_buffer,
            &mut config.max_body_buffer,
        )?;
        int(
            "limits.max_output_buffer",
            l.max_output_buffer,
            &mut config.max_output_buffer,
        )?;
        let adv_conns = l.advertised_max_conns.or(l.max_conns_per_worker);
        let adv_reqs = l.advertised_max_reqs.or(l.max_requests_per_conn);
        int(
            "limits.advertised_max_conns",
            adv_conns,
            &mut config.limits.advertised_max_conns,
        )?;
        int(
            "limits.advertised_max_reqs",
            adv_reqs,
            &mut config.limits.advertised_max_reqs,
        )?;

        let t = &self.timeouts;
        secs("timeouts.idle", t.idle, &mut config.timeouts.idle)?;
        secs("timeouts.params", t.params, &mut config.timeouts.params)?;
        secs("timeouts.body", t.body, &mut config.timeouts.body)?;
        secs("timeouts.handler", t.handler, &mut config.timeouts.handler)?;
        secs("timeouts.write", t.write, &mut config.timeouts.write)?;
        secs("timeouts.linger", t.linger, &mut config.timeouts.linger)?;
        Ok(())
    }

    /// Every setting of `config`, all keys present (`unix_mode` only when set).
    pub fn from_config(config: &Config) -> ConfigFile {
        let i = |v: usize| Some(v as i64);
        ConfigFile {
            server: ServerSection {
                protocol: Some(protocol_name(config.protocol).to_owned()),
                listen: Some(config.listen.to_string()),
                workers: i(config.workers),
                pin_workers: Some(config.pin_workers),
                backlog: Some(config.backlog.into()),
                unix_mode: config.unix_mode.map(|m| format!("{m:o}")),
                shutdown_timeout: Some(config.shutdown_timeout.as_secs_f64()),
                accept_retry: Some(config.accept_retry.as_secs_f64()),
            },
            ring: RingSection {
                sq_entries: Some(config.ring.sq_entries.into()),
                cq_entries: Some(config.ring.cq_entries.into()),
                recv_buffers: Some(config.ring.recv_buffers.into()),
                recv_buffer_size: Some(config.ring.recv_buffer_size.into()),
                defer_taskrun: Some(config.ring.defer_taskrun),
                completions_per_turn: i(config.completions_per_turn),
                coop_taskrun: Some(config.ring.coop_taskrun),
                sqpoll: Some(config.ring.sqpoll),
                sqpoll_idle_ms: Some(config.ring.sqpoll_idle_ms.into()),
                sqpoll_cpu: config.ring.sqpoll_cpu.map(i64::from),
                idle_spin_us: Some(config.idle_spin_us.into()),
                registered_send_buffers: Some(config.ring.registered_send_buffers.into()),
                send_buffer_size: Some(config.ring.send_buffer_size.into()),
                recv_bundle: Some(config.ring.recv_bundle),
            },
            limits: LimitsSection {
                max_conns_per_worker: i(config.max_conns_per_worker),
                max_requests_per_worker: i(config.max_requests_per_worker),
                max_requests_per_conn: i(config.limits.max_requests_per_conn),
                max_params_bytes: i(config.limits.max_params_bytes),
                max_params_pairs: i(config.limits.max_params_pairs),
                max_name_len: i(config.limits.max_name_len),
                max_value_len: i(config.limits.max_value_len),
                max_body_buffer: i(config.max_body_buffer),
                max_output_buffer: i(config.max_output_buffer),
                advertised_max_conns: Some(config.limits.advertised_max_conns.into()),
                advertised_max_reqs: Some(config.limits.advertised_max_reqs.into()),
            },
            timeouts: TimeoutsSection {
                idle: Some(config.timeouts.idle.as_secs_f64()),
                params: Some(config.timeouts.params.as_secs_f64()),
                body: Some(config.timeouts.body.as_secs_f64()),
                handler: Some(config.timeouts.handler.as_secs_f64()),
                write: Some(config.timeouts.write.as_secs_f64()),
                linger: Some(config.timeouts.linger.as_secs_f64()),
            },
        }
    }

    /// This file as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config file serialises")
    }
}

/// `config` as a complete TOML file that [`ConfigFile::parse`] accepts as is.
pub fn to_toml(config: &Config) -> String {
    format!(
        "# fcgi-uring configuration (fcgi-uring serve --config FILE); timeouts in seconds\n{}",
        ConfigFile::from_config(config).to_toml()
    )
}

/// Checks every setting of `config` and the rules between settings. Messages name the file
/// key and its flag: `ring.sq_entries = 1000 (--ring-entries): must be a power of two ...`.
pub fn validate(config: &Config) -> Result<(), String> {
    let with_flag = |key: &str, msg: String| {
        let f = flag(key);
        if f.is_empty() {
            msg
        } else {
            format!("{msg} (flag {f})")
        }
    };
    let u = |v: usize| v as i128;
    let ring = &config.ring;
    let ints: [(&str, i128); 22] = [
        ("server.workers", u(config.workers)),
        ("server.backlog", config.backlog.into()),
        ("ring.sq_entries", config.ring.sq_entries.into()),
        ("ring.cq_entries", config.ring.cq_entries.into()),
        ("ring.recv_buffers", config.ring.recv_buffers.into()),
        ("ring.recv_buffer_size", config.ring.recv_buffer_size.into()),
        ("ring.completions_per_turn", u(config.completions_per_turn)),
        ("ring.sqpoll_idle_ms", ring.sqpoll_idle_ms.into()),
        ("ring.idle_spin_us", config.idle_spin_us.into()),
        (
            "ring.registered_send_buffers",
            ring.registered_send_buffers.into(),
        ),
        ("ring.send_buffer_size", ring.send_buffer_size.into()),
        (
            "limits.max_conns_per_worker",
            u(config.max_conns_per_worker),
        ),
        (
            "limits.max_requests_per_worker",
            u(config.max_requests_per_worker),
        ),
        (
            "limits.max_requests_per_conn",
            u(config.limits.max_requests_per_conn),
        ),
        ("limits.max_params_bytes", u(config.limits.max_params_bytes)),
        ("limits.max_params_pairs", u(config.limits.max_params_pairs)),
        ("limits.max_name_len", u(config.limits.max_name_len)),
        ("limits.max_value_len", u(config.limits.max_value_len)),
        ("limits.max_body_buffer", u(config.max_body_buffer)),
        ("limits.max_output_buffer", u(config.max_output_buffer)),
        (
            "limits.advertised_max_conns",
            config.limits.advertised_max_conns.into(),
        ),
        (
            "limits.advertised_max_reqs",
            config.limits.advertised_max_reqs.into(),
        ),
    ];
    let cpu = ring.sqpoll_cpu.map(|c| ("ring.sqpoll_cpu", i128::from(c)));
    for (key, v) in ints.into_iter().chain(cpu) {
        check_int(key, v).map_err(|m| with_flag(key, m))?;
    }
    let t = &config.timeouts;
    let secs = [
        ("server.shutdown_timeout", config.shutdown_timeout),
        ("server.accept_retry", config.accept_retry),
        ("timeouts.idle", t.idle),
        ("timeouts.params", t.params),
        ("timeouts.body", t.body),
        ("timeouts.handler", t.handler),
        ("timeouts.write", t.write),
        ("timeouts.linger", t.linger),
    ];
    for (key, d) in secs {
        check_secs(key, d.as_secs_f64()).map_err(|m| with_flag(key, m))?;
    }
    if let Some(m) = config.unix_mode
        && m > 0o777
    {
        return Err(format!(
            "server.unix_mode = {m:o}: must be an octal file mode between 0 and 777 (flag --unix-mode)"
        ));
    }
    if ring.sqpoll && (ring.defer_taskrun || ring.coop_taskrun) {
        return Err(format!(
            "ring.sqpoll = true cannot be combined with ring.defer_taskrun = {} or \
             ring.coop_taskrun = {}: the kernel refuses SQPOLL together with DEFER_TASKRUN or \
             COOP_TASKRUN; set ring.defer_taskrun = false and ring.coop_taskrun = false \
             (flags --sqpoll, --defer-taskrun false, --coop-taskrun false)",
            ring.defer_taskrun, ring.coop_taskrun
        ));
    }
    if let Some(cpu) = ring.sqpoll_cpu
        && !ring.sqpoll
    {
        return Err(format!(
            "ring.sqpoll_cpu = {cpu} requires ring.sqpoll = true (flags --sqpoll-cpu, --sqpoll)"
        ));
    }
    if config.ring.cq_entries < config.ring.sq_entries {
        return Err(format!(
            "ring.cq_entries = {} must be at least ring.sq_entries = {} (flags --cq-entries, --ring-entries)",
            config.ring.cq_entries, config.ring.sq_entries
        ));
    }
    Ok(())
}

/// A toml error as `file:line:column: message`, an unknown key named with its section.
fn toml_error(e: &toml::de::Error, text: &str, name: &str) -> String {
    let pos = e.span().map(|s| line_col(text, s.start));
    let at = match pos {
        Some((line, col)) => format!("{name}:{line}:{col}"),
        None => name.to_owned(),
    };
    let msg = e.message().trim();
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
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
        let expected = expected.trim_start_matches(',').trim().replace('`', "");
        return format!("{at}: unknown key \"{key}\" in {name}: {expected}");
    }
    let msg = msg.replace("expected i64", "expected an integer");
    match e.span().and_then(|s| key_at(text, s.start)) {
        Some(key) => format!("{at}: {key}: {msg}"),
        None => format!("{at}: {msg}"),
    }
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
