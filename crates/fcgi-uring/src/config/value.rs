//! What a setting holds ([`Value`]) and what it accepts ([`Accepts`]), with the conversions
//! between a [`Value`] and the typed field of [`Config`](super::Config) it sets.

use fcgi_proto::addr::Addr;
use std::fmt;
use std::time::Duration;

use super::Protocol;

/// The value of one setting, as a file, a flag or [`ConfigBuilder::set`](super::ConfigBuilder::set)
/// gives it and as [`Config::get`](super::Config::get) reports it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// An optional setting left unset (`none` on the command line, absent from a file).
    None,
    Bool(bool),
    Int(i64),
    /// A duration in seconds (fractional allowed).
    Seconds(f64),
    /// A name or an address (`fastcgi`, `127.0.0.1:9000`).
    Text(String),
}

impl fmt::Display for Value {
    /// As the file writes it, strings quoted: `1024`, `true`, `2.5`, `"fastcgi"`, `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("none"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Seconds(s) => write!(f, "{s}"),
            Value::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// Whether `0` seconds is accepted, and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZeroSeconds {
    /// `0` turns the deadline off.
    TurnsOff,
    /// `0` is refused, for this reason.
    Refused(&'static str),
}

/// What a setting accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Accepts {
    /// `true` or `false`.
    Bool,
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A power of two in `min..=max`.
    PowerOfTwo { min: i64, max: i64 },
    /// A number of seconds in `0..=max` (fractional allowed).
    Seconds { max: f64, zero: ZeroSeconds },
    /// One of these names.
    OneOf(&'static [&'static str]),
    /// `host:port` or `unix:/path`.
    Address,
    /// A file mode in octal, `0..=777` (the file writes it as a string: `"660"`).
    FileMode,
    /// A URL path: starts with `/`, at most 1024 bytes, no space or control character.
    UrlPath,
    /// Any text of at most 1024 bytes (a file path, a body).
    Text,
    /// IP addresses and networks separated by commas: `10.0.0.5, 10.1.0.0/16`.
    PeerList,
}

/// Longest [`Accepts::UrlPath`] or [`Accepts::Text`] value.
const MAX_TEXT: usize = 1024;

fn is_url_path(t: &str) -> bool {
    t.starts_with('/')
        && t.len() <= MAX_TEXT
        && !t.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Longest accepted duration: one year.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

impl Accepts {
    /// What the value must be, completing "must be ...": `a power of two between 1 and 32768`.
    pub fn requirement(&self) -> String {
        match self {
            Accepts::Bool => "true or false".to_owned(),
            Accepts::Int { min, max } => format!("between {min} and {max}"),
            Accepts::PowerOfTwo { min, max } => {
                format!("a power of two between {min} and {max}")
            }
            Accepts::Seconds { max, zero } => {
                let zero = match zero {
                    ZeroSeconds::TurnsOff => " (0 turns it off)",
                    ZeroSeconds::Refused(_) => ", more than 0",
                };
                format!("a number of seconds between 0 and {max}{zero}")
            }
            Accepts::OneOf(names) => format!("one of {}", names.join(", ")),
            Accepts::Address => "host:port or unix:/path".to_owned(),
            Accepts::FileMode => "an octal file mode between 0 and 777 (e.g. \"660\")".to_owned(),
            Accepts::UrlPath => {
                format!("a path starting with / (at most {MAX_TEXT} bytes, no spaces)")
            }
            Accepts::Text => format!("text of at most {MAX_TEXT} bytes"),
            Accepts::PeerList => {
                "IP addresses and networks separated by commas (\"10.0.0.5, 10.1.0.0/16\")"
                    .to_owned()
            }
        }
    }

    /// A short form for tables: `power of two, 1..=32768`.
    pub fn summary(&self) -> String {
        match self {
            Accepts::Bool => "true, false".to_owned(),
            Accepts::Int { min, max } => format!("{min}..={max}"),
            Accepts::PowerOfTwo { min, max } => format!("power of two, {min}..={max}"),
            Accepts::Seconds { max, zero } => match zero {
                ZeroSeconds::TurnsOff => format!("0..={max}, 0: off"),
                ZeroSeconds::Refused(_) => format!("more than 0, up to {max}"),
            },
            Accepts::OneOf(names) => names.join(", "),
            Accepts::Address => "host:port, unix:/path".to_owned(),
            Accepts::FileMode => "octal, 0..=777".to_owned(),
            Accepts::UrlPath => "/path".to_owned(),
            Accepts::Text => "text".to_owned(),
            Accepts::PeerList => "addresses, networks".to_owned(),
        }
    }

    /// The name of a flag's value in help texts: `N`, `BOOL`, `SECONDS`.
    pub fn value_name(&self) -> &'static str {
        match self {
            Accepts::Bool => "BOOL",
            Accepts::Int { .. } | Accepts::PowerOfTwo { .. } => "N",
            Accepts::Seconds { .. } => "SECONDS",
            Accepts::OneOf(_) => "NAME",
            Accepts::Address => "ADDR",
            Accepts::FileMode => "MODE",
            Accepts::UrlPath => "PATH",
            Accepts::Text => "TEXT",
            Accepts::PeerList => "PEERS",
        }
    }

    /// The type a file writes the value as: `integer`, `boolean`, `seconds`, `string`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Accepts::Bool => "boolean",
            Accepts::Int { .. } | Accepts::PowerOfTwo { .. } => "integer",
            Accepts::Seconds { .. } => "seconds",
            Accepts::OneOf(_)
            | Accepts::Address
            | Accepts::FileMode
            | Accepts::UrlPath
            | Accepts::Text
            | Accepts::PeerList => "string",
        }
    }

    /// Whether `v` (of the right type) is accepted.
    pub(crate) fn admits(&self, v: &Value) -> bool {
        match (self, v) {
            (Accepts::Bool, Value::Bool(_)) => true,
            (Accepts::Int { min, max }, Value::Int(i)) => (*min..=*max).contains(i),
            (Accepts::PowerOfTwo { min, max }, Value::Int(i)) => {
                (*min..=*max).contains(i) && i.count_ones() == 1
            }
            (Accepts::Seconds { max, zero }, Value::Seconds(s)) => {
                let zero_ok = *s != 0.0 || *zero == ZeroSeconds::TurnsOff;
                s.is_finite() && (0.0..=*max).contains(s) && zero_ok
            }
            (Accepts::OneOf(names), Value::Text(t)) => names.contains(&t.as_str()),
            (Accepts::Address, Value::Text(t)) => t.parse::<Addr>().is_ok(),
            (Accepts::FileMode, Value::Int(m)) => (0..=0o777).contains(m),
            (Accepts::UrlPath, Value::Text(t)) => is_url_path(t),
            (Accepts::Text, Value::Text(t)) => t.len() <= MAX_TEXT,
            (Accepts::PeerList, Value::Text(t)) => t.parse::<super::PeerList>().is_ok(),
            _ => false,
        }
    }

    /// Whether `v` is of the type this accepts (in range or not).
    pub(crate) fn same_type(&self, v: &Value) -> bool {
        matches!(
            (self, v),
            (Accepts::Bool, Value::Bool(_))
                | (
                    Accepts::Int { .. } | Accepts::PowerOfTwo { .. } | Accepts::FileMode,
                    Value::Int(_)
                )
                | (Accepts::Seconds { .. }, Value::Seconds(_))
                | (
                    Accepts::OneOf(_)
                        | Accepts::Address
                        | Accepts::UrlPath
                        | Accepts::Text
                        | Accepts::PeerList,
                    Value::Text(_)
                )
        )
    }

    /// The value of `text` as a flag or an environment gives it; `Err(why)` when it does not
    /// parse as this type (a range is checked later).
    pub(crate) fn parse(&self, text: &str) -> Result<Value, String> {
        match self {
            Accepts::Bool => match text {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err("expected true or false".to_owned()),
            },
            Accepts::Int { .. } | Accepts::PowerOfTwo { .. } => text
                .parse()
                .map(Value::Int)
                .map_err(|e| format!("not an integer ({e})")),
            Accepts::Seconds { .. } => text
                .parse()
                .map(Value::Seconds)
                .map_err(|_| "not a number of seconds".to_owned()),
            Accepts::OneOf(_) => Ok(Value::Text(text.to_owned())),
            Accepts::Address | Accepts::UrlPath | Accepts::Text => Ok(Value::Text(text.to_owned())),
            Accepts::PeerList => text
                .parse::<super::PeerList>()
                .map(|_| Value::Text(text.to_owned()))
                .map_err(|e| e.to_string()),
            Accepts::FileMode => parse_mode(text)
                .map(|m| Value::Int(m.into()))
                .ok_or_else(|| "not an octal file mode".to_owned()),
        }
    }

    /// `v` written for a person: a file mode in octal, everything else as [`Value`] shows it.
    pub(crate) fn show(&self, v: &Value) -> String {
        match (self, v) {
            (Accepts::FileMode, Value::Int(m)) => format!("{m:o}"),
            _ => v.to_string(),
        }
    }
}

/// A file mode in octal: `"660"`, `"0660"` or `"0o660"`.
pub fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// A type a setting's field has, and its [`Value`] form.
pub(crate) trait FieldValue: Sized {
    /// Whether [`Value::None`] is a value of the type (an `Option`).
    const OPTIONAL: bool = false;
    fn to_value(&self) -> Value;
    /// `None` when `v` is of another type or out of the type's range.
    fn from_value(v: &Value) -> Option<Self>;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
            fn from_value(v: &Value) -> Option<$t> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i).ok(),
                    _ => None,
                }
            }
        }
    )*};
}

int_field!(u16, u32, i32, usize);

impl FieldValue for bool {
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
    fn from_value(v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl FieldValue for Duration {
    fn to_value(&self) -> Value {
        Value::Seconds(self.as_secs_f64())
    }
    fn from_value(v: &Value) -> Option<Duration> {
        match v {
            Value::Seconds(s) => Duration::try_from_secs_f64(*s).ok(),
            _ => None,
        }
    }
}

impl FieldValue for Addr {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
    fn from_value(v: &Value) -> Option<Addr> {
        match v {
            Value::Text(t) => t.parse().ok(),
            _ => None,
        }
    }
}

impl FieldValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
}

impl FieldValue for super::AccessLogFormat {
    fn to_value(&self) -> Value {
        Value::Text(self.as_str().to_owned())
    }
    fn from_value(v: &Value) -> Option<super::AccessLogFormat> {
        match v {
            Value::Text(t) => super::AccessLogFormat::parse(t),
            _ => None,
        }
    }
}

impl FieldValue for super::LogFormat {
    fn to_value(&self) -> Value {
        Value::Text(self.as_str().to_owned())
    }
    fn from_value(v: &Value) -> Option<super::LogFormat> {
        match v {
            Value::Text(t) => super::LogFormat::parse(t),
            _ => None,
        }
    }
}

impl FieldValue for Protocol {
    fn to_value(&self) -> Value {
        Value::Text(self.as_str().to_owned())
    }
    fn from_value(v: &Value) -> Option<Protocol> {
        match v {
            Value::Text(t) => t.parse().ok(),
            _ => None,
        }
    }
}

impl<T: FieldValue> FieldValue for Option<T> {
    const OPTIONAL: bool = true;
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::None, T::to_value)
    }
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::None => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}
