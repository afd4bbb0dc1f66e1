//! The rules between settings, each checked in one place ([`RULES`]) for every way a
//! configuration is made: builder, file, flags and [`Ring::new`](crate::uring).

use super::Config;
use super::error::ConfigError;
use super::value::Value;

/// A rule between settings.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct Rule {
    /// The keys it relates, the one it is about first.
    pub keys: &'static [&'static str],
    /// What it requires, and why.
    pub doc: &'static str,
    pub(crate) check: fn(&Config) -> Result<(), ConfigError>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("keys", &self.keys).finish()
    }
}

const SQPOLL_WHY: &str = "the kernel refuses SQPOLL together with DEFER_TASKRUN or \
                          COOP_TASKRUN; set ring.defer_taskrun = false and \
                          ring.coop_taskrun = false";

/// Every rule between settings, checked after each setting's own range.
pub const RULES: &[Rule] = &[
    Rule {
        keys: &["ring.sqpoll", "ring.defer_taskrun", "ring.coop_taskrun"],
        doc: "ring.sqpoll = true needs ring.defer_taskrun = false and ring.coop_taskrun = false: \
              the kernel refuses SQPOLL together with DEFER_TASKRUN or COOP_TASKRUN.",
        check: sqpoll_without_taskrun_modes,
    },
    Rule {
        keys: &["ring.sqpoll_cpu", "ring.sqpoll"],
        doc: "ring.sqpoll_cpu needs ring.sqpoll = true.",
        check: sqpoll_cpu_needs_sqpoll,
    },
    Rule {
        keys: &["ring.cq_entries", "ring.sq_entries"],
        doc: "ring.cq_entries must be at least ring.sq_entries.",
        check: cq_at_least_sq,
    },
    Rule {
        keys: &["server.allowed_peers", "server.listen"],
        doc: "server.allowed_peers needs a TCP server.listen: a UNIX socket's peers are local \
              processes, guarded by the socket's file mode (server.unix_mode).",
        check: allowed_peers_need_tcp,
    },
    Rule {
        keys: &["admin.listen", "server.listen"],
        doc: "admin.listen must differ from server.listen: the admin listener (HTTP) and the \
              FastCGI listener cannot share an address.",
        check: admin_apart_from_listen,
    },
];

fn sqpoll_without_taskrun_modes(c: &Config) -> Result<(), ConfigError> {
    let r = &c.ring;
    let on = [
        ("ring.defer_taskrun", r.defer_taskrun),
        ("ring.coop_taskrun", r.coop_taskrun),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(key, _)| (key, Value::Bool(true)));
    let keys: Vec<_> = std::iter::once(("ring.sqpoll", Value::Bool(true)))
        .chain(on)
        .collect();
    if r.sqpoll && keys.len() > 1 {
        return Err(ConfigError::Conflict {
            keys,
            why: SQPOLL_WHY,
        });
    }
    Ok(())
}

fn sqpoll_cpu_needs_sqpoll(c: &Config) -> Result<(), ConfigError> {
    match c.ring.sqpoll_cpu {
        Some(cpu) if !c.ring.sqpoll => Err(ConfigError::Requires {
            key: "ring.sqpoll_cpu",
            value: Value::Int(cpu.into()),
            needs: ("ring.sqpoll", Value::Bool(true)),
        }),
        _ => Ok(()),
    }
}

fn cq_at_least_sq(c: &Config) -> Result<(), ConfigError> {
    let (sq, cq) = (c.ring.sq_entries, c.ring.cq_entries);
    if cq < sq {
        return Err(ConfigError::LessThan {
            key: "ring.cq_entries",
            value: Value::Int(cq.into()),
            min: ("ring.sq_entries", Value::Int(sq.into())),
        });
    }
    Ok(())
}

fn admin_apart_from_listen(c: &Config) -> Result<(), ConfigError> {
    use fcgi_proto::Addr;
    let Some(admin) = &c.ops.admin_listen else {
        return Ok(());
    };
    let same = match (admin, &c.listen) {
        (Addr::Unix(a), Addr::Unix(l)) => a == l,
        (Addr::Tcp(a), Addr::Tcp(l)) => {
            a.port() != 0
                && a.port() == l.port()
                && (a.ip() == l.ip() || a.ip().is_unspecified() || l.ip().is_unspecified())
        }
        _ => false,
    };
    if !same {
        return Ok(());
    }
    Err(ConfigError::Conflict {
        keys: vec![
            ("admin.listen", Value::Text(admin.to_string())),
            ("server.listen", Value::Text(c.listen.to_string())),
        ],
        why: "the admin listener (HTTP) and the FastCGI listener cannot share an address: give \
              admin.listen another port or a unix:/path",
    })
}

fn allowed_peers_need_tcp(c: &Config) -> Result<(), ConfigError> {
    match (&c.allowed_peers, &c.listen) {
        (Some(peers), fcgi_proto::Addr::Unix(_)) => Err(ConfigError::Conflict {
            keys: vec![
                ("server.allowed_peers", Value::Text(peers.to_string())),
                ("server.listen", Value::Text(c.listen.to_string())),
            ],
            why: "a UNIX socket's peers are local processes: guard it with its file mode \
                  (server.unix_mode) instead",
        }),
        _ => Ok(()),
    }
}
