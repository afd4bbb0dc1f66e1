//! Why a configuration was refused: each error names the key (the file's `section.key`, and
//! the flag of `fcgi-uring serve` that sets it), the value, and what is accepted.

use std::fmt;

use super::settings::find;
use super::value::{Accepts, Value, ZeroSeconds};

/// A setting, or a combination of settings, that a [`Config`](super::Config) cannot have.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No setting has this key; `nearest` is the key it most resembles, if any is close.
    UnknownKey {
        key: String,
        nearest: Option<&'static str>,
    },
    /// A value of another type than the key takes (`expected`: `an integer`, ...).
    WrongType {
        key: &'static str,
        value: Value,
        expected: &'static str,
    },
    /// Text that does not read as the key's type (an address, a number, a file mode).
    Invalid {
        key: &'static str,
        text: String,
        why: String,
        accepted: Accepts,
    },
    /// A value outside what the key accepts.
    OutOfRange {
        key: &'static str,
        value: Value,
        accepted: Accepts,
    },
    /// The first key's value cannot be combined with the values of the others.
    Conflict {
        keys: Vec<(&'static str, Value)>,
        why: &'static str,
    },
    /// A key's value needs another key to have the value `needs`.
    Requires {
        key: &'static str,
        value: Value,
        needs: (&'static str, Value),
    },
    /// A key's value must be at least another key's.
    LessThan {
        key: &'static str,
        value: Value,
        min: (&'static str, Value),
    },
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownKey { key, nearest } => {
                write!(f, "unknown key {key:?}")?;
                if let Some(near) = nearest {
                    write!(f, "; did you mean {near:?}?")?;
                }
                Ok(())
            }
            ConfigError::WrongType {
                key,
                value,
                expected,
            } => {
                write!(f, "{key} = {value}: expected {expected}")?;
                flags(f, &[key])
            }
            ConfigError::Invalid {
                key,
                text,
                why,
                accepted,
            } => {
                let must = accepted.requirement();
                write!(f, "{key} = {text:?}: {why}; must be {must}")?;
                flags(f, &[key])
            }
            ConfigError::OutOfRange {
                key,
                value,
                accepted,
            } => {
                let shown = accepted.show(value);
                match (accepted, value) {
                    (
                        Accepts::Seconds {
                            zero: ZeroSeconds::Refused(why),
                            ..
                        },
                        Value::Seconds(s),
                    ) if *s == 0.0 => {
                        write!(f, "{key} = {shown}: must be more than 0 seconds ({why})")?
                    }
                    _ => write!(f, "{key} = {shown}: must be {}", accepted.requirement())?,
                }
                flags(f, &[key])
            }
            ConfigError::Conflict { keys, why } => {
                let Some(((first, value), others)) = keys.split_first() else {
                    return f.write_str(why);
                };
                write!(f, "{first} = {value} cannot be combined with ")?;
                for (i, (key, value)) in others.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " or " };
                    write!(f, "{sep}{key} = {value}")?;
                }
                write!(f, ": {why}")?;
                let names: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
                flags(f, &names)
            }
            ConfigError::Requires {
                key,
                value,
                needs: (other, needed),
            } => {
                write!(f, "{key} = {value} requires {other} = {needed}")?;
                flags(f, &[key, other])
            }
            ConfigError::LessThan {
                key,
                value,
                min: (other, at_least),
            } => {
                write!(f, "{key} = {value} must be at least {other} = {at_least}")?;
                flags(f, &[key, other])
            }
        }
    }
}

/// ` (flag --x)` or ` (flags --x, --y)`: the flags of `fcgi-uring serve` that set `keys`.
fn flags(f: &mut fmt::Formatter<'_>, keys: &[&str]) -> fmt::Result {
    let names: Vec<String> = keys
        .iter()
        .filter_map(|k| find(k))
        .map(|s| format!("--{}", s.flag))
        .collect();
    match names.len() {
        0 => Ok(()),
        1 => write!(f, " (flag {})", names[0]),
        _ => write!(f, " (flags {})", names.join(", ")),
    }
}
