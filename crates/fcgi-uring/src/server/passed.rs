//! Sockets a server is given instead of binding them: by systemd socket activation
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, fds from 3) or by the process it replaces in a
//! hot upgrade ([`super::upgrade`], which speaks the same protocol without `LISTEN_PID`).
//!
//! Names (`LISTEN_FDNAMES`, systemd's `FileDescriptorName=`) say what each fd is for:
//! [`ADMIN_NAME`] is the admin listener, [`READY_NAME`] the stream over which a new process
//! reports ready to the old one; any other name is a FastCGI listener (TCP or UNIX, all of the
//! same kind).
//!
//! Guarantees: the environment is read once per process, at the first start; every fd is
//! checked to be a listening stream socket of the expected family before it is used (a wrong
//! fd is a start error naming it, never undefined behaviour), and set close-on-exec. A start
//! that fails keeps the passed sockets for the next attempt in the same process (they are used
//! through duplicates until a start succeeds).

use listenfd::ListenFd;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Mutex, OnceLock, PoisonError};

/// `LISTEN_FDNAMES` name of the admin listener.
pub const ADMIN_NAME: &str = "admin";
/// `LISTEN_FDNAMES` name of the ready report's stream (hot upgrade).
pub(crate) const READY_NAME: &str = "fcgi-uring-ready";

/// One passed FastCGI listener.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn try_clone(&self) -> io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l) => Listener::Unix(l.try_clone()?),
        })
    }
}

/// What the environment passed.
#[derive(Debug, Default)]
pub(crate) struct Passed {
    /// The FastCGI listeners, in the order passed.
    pub listeners: Vec<Listener>,
    pub admin: Option<Listener>,
    /// Where to report ready (set for a process started by a hot upgrade).
    pub ready: Option<UnixStream>,
    /// Where they came from, for the log line.
    pub from_upgrade: bool,
    /// Passed by a hot upgrade from a process whose own they were (it bound them, or had them
    /// so from its predecessor): this process's now. systemd's stay systemd's.
    pub ours: bool,
}

impl Passed {
    fn try_clone(&self) -> io::Result<Passed> {
        Ok(Passed {
            listeners: self
                .listeners
                .iter()
                .map(Listener::try_clone)
                .collect::<io::Result<_>>()?,
            admin: self.admin.as_ref().map(Listener::try_clone).transpose()?,
            ready: self.ready.as_ref().map(UnixStream::try_clone).transpose()?,
            from_upgrade: self.from_upgrade,
            ours: self.ours,
        })
    }
}

/// Set in a process started by a hot upgrade (with `LISTEN_FDS`, no `LISTEN_PID`): the pid of
/// the process it replaces.
pub(crate) const UPGRADE_ENV: &str = "FCGI_URING_UPGRADE_FROM";

/// Set to `1` by a hot upgrade whose sockets were the old process's own (see [`Passed::ours`]).
pub(crate) const OURS_ENV: &str = "FCGI_URING_SOCKETS_OURS";

static PASSED: OnceLock<Mutex<Option<io::Result<Passed>>>> = OnceLock::new();

fn slot() -> &'static Mutex<Option<io::Result<Passed>>> {
    PASSED.get_or_init(|| Mutex::new(Some(from_env())))
}

/// Duplicates of what was passed (none: nothing, or a successful start took it already).
pub(crate) fn peek() -> io::Result<Option<Passed>> {
    let guard = slot().lock().unwrap_or_else(PoisonError::into_inner);
    match &*guard {
        None => Ok(None),
        Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
        Some(Ok(p)) if p.listeners.is_empty() && p.admin.is_none() && p.ready.is_none() => Ok(None),
        Some(Ok(p)) => p.try_clone().map(Some),
    }
}

/// A start succeeded with the duplicates: the originals are closed.
pub(crate) fn consumed() {
    let taken = slot().lock().unwrap_or_else(PoisonError::into_inner).take();
    drop(taken);
}

/// Reads `LISTEN_FDS` (listenfd checks `LISTEN_PID` when set and unsets both) and
/// `LISTEN_FDNAMES`, and checks each fd.
fn from_env() -> io::Result<Passed> {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let from_upgrade = std::env::var_os(UPGRADE_ENV).is_some();
    // systemd names the process meant (listenfd checks it); without LISTEN_PID only a hot
    // upgrade passes sockets: a stray LISTEN_FDS in an environment is ignored, as systemd's
    // sd_listen_fds(3) would.
    if std::env::var_os("LISTEN_PID").is_none() && !from_upgrade {
        return Ok(Passed::default());
    }
    let mut fds = ListenFd::from_env();
    let mut passed = Passed {
        from_upgrade,
        ours: from_upgrade && std::env::var_os(OURS_ENV).is_some_and(|v| v == "1"),
        ..Passed::default()
    };
    for i in 0..fds.len() {
        let name = names.get(i).map(String::as_str).unwrap_or("");
        let fd_no = 3 + i;
        let what = |e: io::Error| {
            io::Error::new(e.kind(), format!("passed fd {fd_no} (name {name:?}): {e}"))
        };
        if name == READY_NAME {
            passed.ready = fds
                .take_custom::<UnixStream>(i, libc::AF_UNIX, libc::SOCK_STREAM, "unix stream")
                .map_err(what)?;
            continue;
        }
        let listener = take_listener(&mut fds, i).map_err(what)?;
        if name == ADMIN_NAME {
            passed.admin = listener;
        } else if let Some(l) = listener {
            passed.listeners.push(l);
        }
    }
    if !passed.listeners.is_empty() {
        let tcp = matches!(passed.listeners[0], Listener::Tcp(_));
        if passed
            .listeners
            .iter()
            .any(|l| matches!(l, Listener::Tcp(_)) != tcp)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "passed FastCGI listeners mix TCP and UNIX sockets; pass one kind",
            ));
        }
    }
    Ok(passed)
}

/// The listener at `i`: TCP (IPv4 or IPv6), else UNIX; a socket that is neither, or that does
/// not listen, is an error.
fn take_listener(fds: &mut ListenFd, i: usize) -> io::Result<Option<Listener>> {
    let listener = match fds.take_tcp_listener(i) {
        Ok(Some(l)) => Listener::Tcp(l),
        Ok(None) => return Ok(None),
        Err(_) => match fds.take_unix_listener(i)? {
            Some(l) => Listener::Unix(l),
            None => return Ok(None),
        },
    };
    let fd = match &listener {
        Listener::Tcp(l) => l.as_fd(),
        Listener::Unix(l) => l.as_fd(),
    };
    if !rustix::net::sockopt::socket_acceptconn(fd)? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket does not listen (a socket unit with Accept=no is needed)",
        ));
    }
    Ok(Some(listener))
}

impl Listener {
    /// The owned fd, non-blocking (the epoll backend needs it; io_uring does not care).
    pub fn into_fd(self) -> io::Result<OwnedFd> {
        Ok(match self {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                l.into()
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                l.into()
            }
        })
    }
}
