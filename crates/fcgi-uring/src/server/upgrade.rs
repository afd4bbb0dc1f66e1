//! Hot upgrade: a new process takes over the listening sockets while the old one drains.
//!
//! The old process starts the command it is given (the binary at its path, so a binary
//! replaced on disk is the one that runs, with the same arguments, so the configuration file is
//! read anew) with its FastCGI listeners, its admin listener and one end of a socket pair as
//! fds 3, 4, ... in the systemd socket activation protocol (`LISTEN_FDS`, `LISTEN_FDNAMES`;
//! no `LISTEN_PID`, which the old process cannot know before the new one runs), and waits
//! on the pair. The new process serves the sockets it was passed ([`super::passed`]) and writes
//! `READY` once every worker accepts.
//!
//! Guarantees:
//! - The listening sockets are never closed: the new process holds them before the old one
//!   stops accepting, so connections waiting in an accept queue (one per SO_REUSEPORT socket)
//!   are accepted by whichever process accepts next, never reset. The kernel wakes one waiting
//!   accept per connection, so one whose wakeup went to an old worker's accept as it stopped
//!   would wake no accept of the new process: each old worker, once its accept has ended,
//!   accepts what its queue still holds and serves it in its drain.
//! - The old process stops accepting only after `READY`. A new process that exits (bad
//!   configuration, crash at start) or is not ready within `server.upgrade_timeout` is an
//!   [`UpgradeError`]; one that did not exit is stopped (SIGTERM, then SIGKILL after
//!   `server.shutdown_timeout`), and the old process serves on as if nothing happened.
//! - Under systemd, `MAINPID=` names the new process once it is ready (the unit needs
//!   `NotifyAccess=all` for the new process's own `READY=1`).

use super::passed::{ADMIN_NAME, OURS_ENV, READY_NAME, UPGRADE_ENV};
use command_fds::{CommandFdExt, FdMapping};
use std::fmt;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Why a hot upgrade did not happen (the old process keeps serving).
#[derive(Debug)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The new process could not be started.
    Spawn(io::Error),
    /// It exited before reporting ready.
    Exited { pid: u32, status: ExitStatus },
    /// It did not report ready within `server.upgrade_timeout` and was stopped.
    NotReady { pid: u32, timeout: Duration },
    /// Waiting for it failed.
    Io(io::Error),
    /// A hot upgrade already handed this server's sockets over.
    AlreadyHandedOver,
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::Spawn(e) => write!(f, "cannot start the new process: {e}"),
            UpgradeError::Exited { pid, status } => {
                write!(
                    f,
                    "the new process (pid {pid}) exited before ready ({status})"
                )
            }
            UpgradeError::NotReady { pid, timeout } => write!(
                f,
                "the new process (pid {pid}) was not ready within {timeout:?} \
                 (server.upgrade_timeout); stopped it"
            ),
            UpgradeError::Io(e) => write!(f, "waiting for the new process: {e}"),
            UpgradeError::AlreadyHandedOver => write!(f, "the sockets were already handed over"),
        }
    }
}

impl std::error::Error for UpgradeError {}

/// The sockets handed over: FastCGI listeners, then the admin listener.
pub(crate) struct Handover {
    pub listeners: Vec<OwnedFd>,
    pub admin: Option<OwnedFd>,
    /// The listeners are this process's own (not systemd's): the new process's then.
    pub ours: bool,
}

/// Starts `command` with `sockets` and waits up to `timeout` for its `READY`. Returns its pid.
pub(crate) fn start(
    mut command: Command,
    sockets: Handover,
    timeout: Duration,
    stop_grace: Duration,
) -> Result<u32, UpgradeError> {
    let (ours, theirs) = UnixStream::pair().map_err(UpgradeError::Spawn)?;
    let mut names = Vec::new();
    let mut mappings = Vec::new();
    let mut map = |fd: OwnedFd, name: &str| {
        mappings.push(FdMapping {
            parent_fd: fd,
            child_fd: 3 + names.len() as i32,
        });
        names.push(name.to_owned());
    };
    if sockets.ours {
        command.env(OURS_ENV, "1");
    } else {
        command.env_remove(OURS_ENV);
    }
    for fd in sockets.listeners {
        map(fd, "fastcgi");
    }
    if let Some(fd) = sockets.admin {
        map(fd, ADMIN_NAME);
    }
    map(theirs.into(), READY_NAME);
    command
        .env("LISTEN_FDS", names.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env(UPGRADE_ENV, std::process::id().to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS_FIRST_FD")
        // systemd's WATCHDOG_PID names the old process: the new one pings once it is MAINPID.
        .env_remove("WATCHDOG_PID");
    command
        .fd_mappings(mappings)
        .map_err(|e| UpgradeError::Spawn(io::Error::other(format!("{e:?}"))))?;
    let mut child = command.spawn().map_err(UpgradeError::Spawn)?;
    // The parent's copies of the mapped fds were moved into `command`: drop them now, so the
    // socket pair reports EOF when the child exits.
    drop(command);
    let pid = child.id();
    match wait_ready(ours, timeout) {
        Ok(true) => Ok(pid),
        Ok(false) => Err(UpgradeError::Exited {
            pid,
            status: reap(&mut child, stop_grace),
        }),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            reap(&mut child, stop_grace);
            Err(UpgradeError::NotReady { pid, timeout })
        }
        Err(e) => {
            reap(&mut child, stop_grace);
            Err(UpgradeError::Io(e))
        }
    }
}

/// True at `READY`, false at EOF (the new process exited, or started without reporting).
fn wait_ready(mut ours: UnixStream, timeout: Duration) -> io::Result<bool> {
    let until = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        ours.set_read_timeout(Some(left))?;
        match ours.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.starts_with(READY) {
                    return Ok(true);
                }
                if got.len() >= READY.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected report from the new process",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// What the new process writes once ready.
pub(crate) const READY: &[u8] = b"READY\n";

/// Stops `child` if it still runs (SIGTERM, then SIGKILL after `grace`) and reaps it.
fn reap(child: &mut Child, grace: Duration) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    loop {
        match child.wait() {
            Ok(status) => return status,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return std::os::unix::process::ExitStatusExt::from_raw(0),
        }
    }
}
