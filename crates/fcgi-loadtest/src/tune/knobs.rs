//! The knob catalogue as data, the settings a trial runs with, the rules between keys, and the
//! TOML files written from them. No IO.
//!
//! A knob is a key of `fcgi-uring.toml` with the values worth trying. Its default is not listed
//! here: it is read from the server binary (`serve --print-config`), so the catalogue can name
//! knobs a given binary does not have yet (they are probed and skipped with a note).

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use fcgi_uring::IoMode;
use serde::Serialize;

/// A knob's value: the TOML types the catalogue needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    /// An IO backend's name ([`IoMode::as_str`]), the one string key of the catalogue.
    Str(&'static str),
}

/// `server.io = "epoll"`.
pub const EPOLL: Value = Value::Str(IoMode::Epoll.as_str());

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

impl Value {
    /// The value of a parsed TOML value, if it is a boolean, an integer or an IO backend's
    /// name.
    pub fn from_toml(v: &toml::Value) -> Option<Value> {
        match v {
            toml::Value::Boolean(b) => Some(Value::Bool(*b)),
            toml::Value::Integer(i) => Some(Value::Int(*i)),
            toml::Value::String(s) => s.parse::<IoMode>().ok().map(|m| Value::Str(m.as_str())),
            _ => None,
        }
    }

    /// The value as a TOML literal (strings quoted).
    pub fn literal(&self) -> String {
        match self {
            Value::Str(s) => toml_string(s),
            other => other.to_string(),
        }
    }
}

/// One key of the server's configuration file and the values the sweep tries.
#[derive(Debug, Clone, Copy)]
pub struct Knob {
    /// `ring` or `server`.
    pub section: &'static str,
    pub key: &'static str,
    /// Values of the full sweep (the default is measured anyway and skipped here).
    pub values: &'static [Value],
    /// Values of `--quick`; empty: the knob is left out of the quick sweep.
    pub quick: &'static [Value],
    pub description: &'static str,
}

impl Knob {
    /// `section.key`, as the server's messages name it.
    pub fn name(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }
}

const fn ints<const N: usize>(v: [i64; N]) -> [Value; N] {
    let mut out = [Value::Int(0); N];
    let mut i = 0;
    while i < N {
        out[i] = Value::Int(v[i]);
        i += 1;
    }
    out
}

const BOOLS: [Value; 2] = [Value::Bool(true), Value::Bool(false)];
const NONE: [Value; 0] = [];

/// The IO backend knob: with epoll, no `ring.*` key is used.
pub const IO: &str = "server.io";

/// Every knob the sweep knows, in the order it sweeps them.
pub const KNOBS: &[Knob] = &[
    Knob {
        section: "server",
        key: "io",
        values: &[EPOLL],
        quick: &[EPOLL],
        description: "IO backend: epoll instead of io_uring (the ring.* settings are then unused)",
    },
    Knob {
        section: "ring",
        key: "sq_entries",
        values: &ints([128, 256, 1024, 4096]),
        quick: &NONE,
        description: "submission queue entries per ring",
    },
    Knob {
        section: "ring",
        key: "cq_entries",
        values: &ints([1024, 4096, 16384]),
        quick: &NONE,
        description: "completion queue entries per ring (at least sq_entries)",
    },
    Knob {
        section: "ring",
        key: "recv_buffers",
        values: &ints([256, 1024, 4096]),
        quick: &NONE,
        description: "provided receive buffers per ring",
    },
    Knob {
        section: "ring",
        key: "recv_buffer_size",
        values: &ints([4096, 16384, 65536]),
        quick: &NONE,
        description: "bytes per provided receive buffer",
    },
    Knob {
        section: "ring",
        key: "recv_window_bytes",
        values: &ints([0, 262144, 524288, 1048576]),
        quick: &NONE,
        description: "bytes the published receive buffers hold at the receives' mean fill (0: no bound)",
    },
    // `ring.defer_taskrun` is not swept: its cost shows only when a request comes after an idle
    // moment (13-20 ms late on Linux 6.18, see docs/tuning.md), which no steady-load trial
    // measures, so a sweep could recommend it for a few percent under load.
    Knob {
        section: "ring",
        key: "completions_per_turn",
        values: &ints([32, 128, 1024, 4096]),
        quick: &ints([32, 4096]),
        description: "completions handled before the answers are submitted",
    },
    Knob {
        section: "ring",
        key: "sqpoll",
        values: &BOOLS,
        quick: &BOOLS,
        description: "IORING_SETUP_SQPOLL: a kernel thread polls the submission queue (needs defer_taskrun and coop_taskrun off)",
    },
    Knob {
        section: "ring",
        key: "sqpoll_idle_ms",
        values: &ints([10, 1000]),
        quick: &NONE,
        description: "ms the SQPOLL thread polls without work before it sleeps (tried with sqpoll = true)",
    },
    Knob {
        section: "ring",
        key: "coop_taskrun",
        values: &BOOLS,
        quick: &BOOLS,
        description: "COOP_TASKRUN + TASKRUN_FLAG when DEFER_TASKRUN is off (tried with defer_taskrun = false)",
    },
    Knob {
        section: "ring",
        key: "idle_spin_us",
        values: &ints([0, 20, 100, 500]),
        quick: &ints([0, 100]),
        description: "microseconds a worker spins for completions before it sleeps",
    },
    Knob {
        section: "ring",
        key: "direct_send",
        values: &BOOLS,
        quick: &NONE,
        description: "the first answer of a flush, if small, written with send(2) before the ring (off: ring sends only)",
    },
    Knob {
        section: "ring",
        key: "direct_recv",
        values: &BOOLS,
        quick: &NONE,
        description: "uploading connections received with recv(2) into one warm buffer instead of the ring's provided buffers (off: ring receives only)",
    },
    Knob {
        section: "ring",
        key: "registered_send_buffers",
        values: &ints([0, 16, 64, 256]),
        quick: &ints([0, 64]),
        description: "registered (fixed) send buffers per ring, 0: off (count x send_buffer_size must fit RLIMIT_MEMLOCK)",
    },
    Knob {
        section: "ring",
        key: "send_buffer_size",
        values: &ints([4096, 16384, 65536]),
        quick: &NONE,
        description: "bytes per registered send buffer (tried with registered_send_buffers = 64 when they are off)",
    },
    Knob {
        section: "ring",
        key: "recv_bundle",
        values: &BOOLS,
        quick: &BOOLS,
        description: "multishot receive bundles: one completion for several provided buffers (Linux >= 6.10)",
    },
];

/// Settings every trial holds fixed, with why. `listen` is set per trial.
pub const FIXED: &[(&str, &str, &str)] = &[
    (
        "server.workers",
        "1",
        "one worker on the one server CPU (--server-cpu)",
    ),
    (
        "server.pin_workers",
        "true",
        "the worker stays on the server CPU",
    ),
    (
        "server.shutdown_timeout",
        "1.0",
        "stop quickly between trials",
    ),
];

/// The knobs whose name (`section.key`) or key is in `filter` (all when empty); an error names
/// a filter term that matches no knob.
pub fn select(filter: &[String]) -> Result<Vec<&'static Knob>, String> {
    for f in filter {
        if !KNOBS.iter().any(|k| k.key == f || k.name() == *f) {
            let names: Vec<&str> = KNOBS.iter().map(|k| k.key).collect();
            return Err(format!(
                "--knobs: no knob {f:?}; knobs: {}",
                names.join(", ")
            ));
        }
    }
    Ok(KNOBS
        .iter()
        .filter(|k| filter.is_empty() || filter.iter().any(|f| k.key == f || k.name() == *f))
        .collect())
}

/// The server's defaults, `section.key` -> value, from `serve --print-config` output (keys of
/// other types, such as floats and strings other than the IO backends, are left out).
pub fn parse_defaults(print_config: &str) -> Result<BTreeMap<String, Value>, String> {
    let table: toml::Table = print_config
        .parse()
        .map_err(|e| format!("cannot read the server's --print-config output: {e}"))?;
    let mut out = BTreeMap::new();
    for (section, keys) in &table {
        let Some(keys) = keys.as_table() else {
            continue;
        };
        for (key, v) in keys {
            if let Some(v) = Value::from_toml(v) {
                out.insert(format!("{section}.{key}"), v);
            }
        }
    }
    Ok(out)
}

/// What a trial changes from the defaults: the values under test, and the values the rules
/// between keys added (each with its reason).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Setting {
    /// `section.key` -> value under test.
    pub overrides: Vec<(String, Value)>,
    /// Keys set because a rule requires them (see [`RULES`]).
    pub implied: Vec<Implied>,
}

/// A key a rule set, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Implied {
    pub key: String,
    pub value: Value,
    pub why: &'static str,
}

/// A rule between keys: given the effective values and the keys under test, the key to set
/// (and its value) for a valid configuration, or `None`.
pub struct Rule {
    pub why: &'static str,
    pub fix: fn(&Effective<'_>) -> Option<(&'static str, Value)>,
}

/// The effective value of every key: implied, then overrides, then the server's defaults.
pub struct Effective<'a> {
    setting: &'a Setting,
    defaults: &'a BTreeMap<String, Value>,
}

impl Effective<'_> {
    pub fn get(&self, key: &str) -> Option<Value> {
        self.setting
            .implied
            .iter()
            .find(|i| i.key == key)
            .map(|i| i.value)
            .or_else(|| {
                self.setting
                    .overrides
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| *v)
            })
            .or_else(|| self.defaults.get(key).copied())
    }

    /// Whether the setting under test changes `key`.
    pub fn overridden(&self, key: &str) -> bool {
        self.setting.overrides.iter().any(|(k, _)| k == key)
    }
}

/// The rules between keys the sweep knows. A rule about a key the server does not have never
/// fires (its effective value is `None`).
pub const RULES: &[Rule] = &[
    Rule {
        why: "sqpoll_idle_ms only matters with sqpoll = true",
        fix: |e| {
            (e.overridden("ring.sqpoll_idle_ms")
                && e.get("ring.sqpoll") == Some(Value::Bool(false)))
            .then_some(("ring.sqpoll", Value::Bool(true)))
        },
    },
    Rule {
        why: "sqpoll = true needs defer_taskrun = false",
        fix: |e| {
            (e.get("ring.sqpoll") == Some(Value::Bool(true))
                && e.get("ring.defer_taskrun") == Some(Value::Bool(true)))
            .then_some(("ring.defer_taskrun", Value::Bool(false)))
        },
    },
    Rule {
        why: "sqpoll = true needs coop_taskrun = false",
        fix: |e| {
            (e.get("ring.sqpoll") == Some(Value::Bool(true))
                && e.get("ring.coop_taskrun") == Some(Value::Bool(true)))
            .then_some(("ring.coop_taskrun", Value::Bool(false)))
        },
    },
    Rule {
        why: "coop_taskrun only matters with defer_taskrun = false",
        fix: |e| {
            (e.overridden("ring.coop_taskrun")
                && e.get("ring.defer_taskrun") == Some(Value::Bool(true)))
            .then_some(("ring.defer_taskrun", Value::Bool(false)))
        },
    },
    Rule {
        why: "cq_entries must be at least sq_entries",
        fix: |e| match (e.get("ring.sq_entries"), e.get("ring.cq_entries")) {
            (Some(Value::Int(sq)), Some(Value::Int(cq))) if cq < sq => {
                Some(("ring.cq_entries", Value::Int(sq)))
            }
            _ => None,
        },
    },
    Rule {
        why: "send_buffer_size only matters with registered_send_buffers > 0",
        fix: |e| {
            (e.overridden("ring.send_buffer_size")
                && e.get("ring.registered_send_buffers") == Some(Value::Int(0)))
            .then_some(("ring.registered_send_buffers", Value::Int(64)))
        },
    },
];

impl Setting {
    /// The defaults.
    pub fn default_config() -> Setting {
        Setting::default()
    }

    /// `overrides`, completed by [`RULES`] against `defaults`.
    pub fn new(overrides: Vec<(String, Value)>, defaults: &BTreeMap<String, Value>) -> Setting {
        let mut s = Setting {
            overrides,
            implied: Vec::new(),
        };
        // Each rule sets a key at most once; a few passes settle any chain of rules.
        for _ in 0..RULES.len() + 1 {
            let mut changed = false;
            for rule in RULES {
                let fix = (rule.fix)(&Effective {
                    setting: &s,
                    defaults,
                });
                if let Some((key, value)) = fix
                    && !s.overrides.iter().any(|(k, _)| k == key)
                    && !s.implied.iter().any(|i| i.key == key)
                {
                    s.implied.push(Implied {
                        key: key.to_owned(),
                        value,
                        why: rule.why,
                    });
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        s
    }

    pub fn is_default(&self) -> bool {
        self.overrides.is_empty() && self.implied.is_empty()
    }

    /// `default`, or `key=value` per override (keys without their section), then `(+key=value)`
    /// per implied key.
    pub fn label(&self) -> String {
        if self.is_default() {
            return "default".to_owned();
        }
        let short = |k: &str| k.split_once('.').map_or(k, |(_, k)| k).to_owned();
        let mut parts: Vec<String> = self
            .overrides
            .iter()
            .map(|(k, v)| format!("{}={v}", short(k)))
            .collect();
        for i in &self.implied {
            parts.push(format!("(+{}={})", short(&i.key), i.value));
        }
        parts.join(" ")
    }

    /// Every key this setting sets, overrides first.
    pub fn keys(&self) -> Vec<(String, Value)> {
        self.overrides
            .iter()
            .cloned()
            .chain(self.implied.iter().map(|i| (i.key.clone(), i.value)))
            .collect()
    }
}

/// One line of a TOML file: `key = literal`, with comment lines above it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `section.key`.
    pub key: String,
    /// A TOML literal: `1024`, `true`, `"127.0.0.1:9000"`.
    pub literal: String,
    pub comments: Vec<String>,
}

impl Entry {
    pub fn new(key: &str, literal: String) -> Entry {
        Entry {
            key: key.to_owned(),
            literal,
            comments: Vec::new(),
        }
    }
}

/// A TOML file: `header` as comment lines, then the entries grouped by section in order of
/// first appearance. Comment text is kept on one line each (newlines become spaces).
pub fn toml_file(header: &[String], entries: &[Entry]) -> String {
    let comment = |out: &mut String, text: &str| {
        let _ = writeln!(out, "# {}", text.replace(['\n', '\r'], " "));
    };
    let mut out = String::new();
    for h in header {
        comment(&mut out, h);
    }
    let mut sections: Vec<&str> = Vec::new();
    for e in entries {
        let section = e.key.split_once('.').map_or("", |(s, _)| s);
        if !sections.contains(&section) {
            sections.push(section);
        }
    }
    for section in sections {
        let _ = writeln!(out, "\n[{section}]");
        for e in entries
            .iter()
            .filter(|e| e.key.split_once('.').map_or("", |(s, _)| s) == section)
        {
            for c in &e.comments {
                comment(&mut out, c);
            }
            let key = e.key.split_once('.').map_or(e.key.as_str(), |(_, k)| k);
            let _ = writeln!(out, "{key} = {}", e.literal);
        }
    }
    out
}

/// A TOML string literal.
pub fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The configuration file of one trial: the fixed settings, `listen`, and what `setting` sets.
pub fn trial_toml(setting: &Setting, listen: &str) -> String {
    let mut entries = vec![Entry::new("server.listen", toml_string(listen))];
    entries.extend(
        FIXED
            .iter()
            .map(|(k, lit, _)| Entry::new(k, (*lit).to_owned())),
    );
    for (k, v) in setting.keys() {
        entries.push(Entry::new(&k, v.literal()));
    }
    toml_file(
        &[format!("fcgi-uring tune trial: {}", setting.label())],
        &entries,
    )
}

/// A configuration file that sets only `setting`'s keys (for `--print-config` probes).
pub fn probe_toml(setting: &Setting) -> String {
    let entries: Vec<Entry> = setting
        .keys()
        .into_iter()
        .map(|(k, v)| Entry::new(&k, v.literal()))
        .collect();
    toml_file(&[format!("probe: {}", setting.label())], &entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fcgi_uring_cli::config_file::ConfigFile;

    fn defaults() -> BTreeMap<String, Value> {
        // What today's server prints, plus two keys of the coming [ring] knobs.
        let printed = fcgi_uring_cli::config_file::to_toml(&fcgi_uring::Config::default());
        let mut d = parse_defaults(&printed).unwrap();
        d.insert("ring.sqpoll".into(), Value::Bool(false));
        d.insert("ring.registered_send_buffers".into(), Value::Int(0));
        // The rules under test turn DEFER_TASKRUN off for SQPOLL: start from it on.
        d.insert("ring.defer_taskrun".into(), Value::Bool(true));
        d
    }

    #[test]
    fn defaults_come_from_print_config() {
        let printed = fcgi_uring_cli::config_file::to_toml(&fcgi_uring::Config::default());
        let d = parse_defaults(&printed).unwrap();
        assert_eq!(d["ring.sq_entries"], Value::Int(1024));
        assert_eq!(d["ring.defer_taskrun"], Value::Bool(false));
        assert_eq!(d["ring.completions_per_turn"], Value::Int(1024));
        assert_eq!(d["server.workers"], Value::Int(0));
        assert_eq!(d[IO], Value::Str("auto"));
        assert!(
            !d.contains_key("server.listen"),
            "strings other than the IO backends are not knobs"
        );
        assert!(parse_defaults("not = [toml").is_err());
    }

    #[test]
    fn every_knob_is_unique_and_quick_values_are_a_subset() {
        for (i, k) in KNOBS.iter().enumerate() {
            assert!(KNOBS[..i].iter().all(|o| o.name() != k.name()), "{}", k.key);
            assert!(!k.values.is_empty(), "{}", k.key);
            assert!(k.quick.iter().all(|q| k.values.contains(q)), "{}", k.key);
        }
        assert_eq!(select(&[]).unwrap().len(), KNOBS.len());
        let some = select(&["ring.sq_entries".into(), "sqpoll".into()]).unwrap();
        assert_eq!(some.len(), 2);
        let e = select(&["sq_entrys".into()]).unwrap_err();
        assert!(e.contains("sq_entrys") && e.contains("sq_entries"), "{e}");
    }

    #[test]
    fn rules_make_combinations_valid() {
        let d = defaults();
        let s = Setting::new(vec![("ring.sqpoll".into(), Value::Bool(true))], &d);
        assert_eq!(s.implied.len(), 2);
        assert_eq!(s.implied[0].key, "ring.defer_taskrun");
        assert_eq!(s.implied[0].value, Value::Bool(false));
        assert_eq!(s.implied[1].key, "ring.coop_taskrun");
        assert_eq!(
            s.label(),
            "sqpoll=true (+defer_taskrun=false) (+coop_taskrun=false)"
        );

        // Already off: nothing to add.
        let s = Setting::new(
            vec![
                ("ring.sqpoll".into(), Value::Bool(true)),
                ("ring.defer_taskrun".into(), Value::Bool(false)),
                ("ring.coop_taskrun".into(), Value::Bool(false)),
            ],
            &d,
        );
        assert!(s.implied.is_empty());

        // Rules chain: sqpoll_idle_ms turns sqpoll on, which turns the taskrun modes off.
        let s = Setting::new(vec![("ring.sqpoll_idle_ms".into(), Value::Int(10))], &d);
        let keys: Vec<&str> = s.implied.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["ring.sqpoll", "ring.defer_taskrun", "ring.coop_taskrun"]
        );

        // coop_taskrun is tried where it matters: with defer_taskrun off.
        let s = Setting::new(vec![("ring.coop_taskrun".into(), Value::Bool(false))], &d);
        assert_eq!(s.label(), "coop_taskrun=false (+defer_taskrun=false)");

        // Past the default cq_entries (16384), the rule raises it.
        let s = Setting::new(vec![("ring.sq_entries".into(), Value::Int(32768))], &d);
        assert_eq!(s.keys()[1], ("ring.cq_entries".into(), Value::Int(32768)));

        let s = Setting::new(vec![("ring.send_buffer_size".into(), Value::Int(4096))], &d);
        assert_eq!(s.implied[0].key, "ring.registered_send_buffers");

        // A rule about a key the server lacks does not fire.
        let mut old = d.clone();
        old.remove("ring.sqpoll");
        old.remove("ring.coop_taskrun");
        let s = Setting::new(
            vec![("ring.defer_taskrun".into(), Value::Bool(false))],
            &old,
        );
        assert!(s.implied.is_empty());
        assert_eq!(Setting::default_config().label(), "default");
    }

    #[test]
    fn trial_and_probe_files_are_accepted_by_the_config_parser() {
        let d = defaults();
        let s = Setting::new(
            vec![
                ("ring.sq_entries".into(), Value::Int(32768)),
                ("ring.defer_taskrun".into(), Value::Bool(false)),
                ("ring.completions_per_turn".into(), Value::Int(128)),
            ],
            &d,
        );
        let text = trial_toml(&s, "unix:/tmp/a \"b\".sock");
        let file = ConfigFile::parse(&text, "trial.toml").unwrap();
        assert_eq!(
            file.server.listen.as_deref(),
            Some("unix:/tmp/a \"b\".sock")
        );
        assert_eq!(file.server.workers, Some(1));
        assert_eq!(file.server.pin_workers, Some(true));
        assert_eq!(file.ring.sq_entries, Some(32768));
        assert_eq!(file.ring.cq_entries, Some(32768), "implied by the rule");
        assert_eq!(file.ring.defer_taskrun, Some(false));
        assert_eq!(file.ring.completions_per_turn, Some(128));
        // One [server] and one [ring] table, each once.
        assert_eq!(text.matches("\n[ring]\n").count(), 1);
        assert_eq!(text.matches("\n[server]\n").count(), 1);

        let probe = probe_toml(&s);
        let file = ConfigFile::parse(&probe, "probe.toml").unwrap();
        assert_eq!(file.server.listen, None);
        assert_eq!(file.ring.sq_entries, Some(32768));
    }

    #[test]
    fn the_io_backend_is_written_as_a_string_the_server_reads() {
        let d = defaults();
        let s = Setting::new(vec![(IO.into(), Value::Str("epoll"))], &d);
        assert_eq!(s.label(), "io=epoll");
        for text in [trial_toml(&s, "127.0.0.1:9000"), probe_toml(&s)] {
            assert!(text.contains("io = \"epoll\""), "{text}");
            let file = ConfigFile::parse(&text, "trial.toml").unwrap();
            assert_eq!(file.server.io.as_deref(), Some("epoll"));
        }
        let parsed = |v: &str| Value::from_toml(&toml::Value::String(v.into()));
        assert_eq!(parsed("uring"), Some(Value::Str("uring")));
        assert_eq!(parsed("127.0.0.1:9000"), None);
        assert_eq!(Value::Int(3).literal(), "3");
    }

    #[test]
    fn comments_stay_comments() {
        let mut e = Entry::new("ring.sq_entries", "256".into());
        e.comments.push("two\nlines # and a hash".into());
        let text = toml_file(&["head\r\nline".into()], &[e]);
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table["ring"]["sq_entries"].as_integer(), Some(256));
        assert_eq!(table.len(), 1);
        assert!(text.starts_with("# head  line\n"));
    }
}
