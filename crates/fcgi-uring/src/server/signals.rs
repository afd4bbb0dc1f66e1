//! The signals a running server answers, as the `fcgi-uring` binary, [`Server::serve`] and
//! [`serve`](crate::serve()) answer them: SIGINT and SIGTERM stop it, SIGUSR1 reopens the access
//! log ([`ServerHandle::reopen_logs`]), SIGUSR2 and SIGHUP start this program again with its
//! arguments and hand it the listening sockets ([`ServerHandle::upgrade`]; SIGHUP is the
//! reload signal operators of nginx and most daemons send).
//!
//! Guarantees:
//! - The signals are listened for from [`Signals::listen`] on: one that comes while the server
//!   starts is acted on once [`Signals::answer`] runs, and none ends the process by its default
//!   action meanwhile.
//! - The program an upgrade starts is the path this one was started from, read at
//!   [`Signals::listen`]: once a deploy replaced the file, `/proc/self/exe` names a deleted
//!   file, and the upgrade must run the new one.
//! - Each upgrade is logged as it starts and as it ends (`upgraded: ...` or
//!   `upgrade failed: ...; still serving`), the end only after [`Signals::answer`]'s hook ran.
//!
//! [`Server::serve`]: super::Server::serve

use super::ServerHandle;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal asks of a running server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// SIGINT, SIGTERM.
    Stop,
    /// SIGUSR1.
    ReopenLogs,
    /// SIGUSR2 or SIGHUP (named).
    Upgrade(&'static str),
}

/// How a hot upgrade a signal asked for ended, as [`Signals::answer`] tells its hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeOutcome {
    /// The new process (this pid) reported ready and serves; this one is to drain.
    Upgraded(u32),
    /// The upgrade failed (the log line that follows says why); this process serves on.
    Failed,
}

/// This program's path, read once (see the module doc), or why it is unknown.
pub(crate) type ExePath = Result<PathBuf, Arc<io::Error>>;

/// This program's path as an upgrade starts it.
pub(crate) fn current_exe() -> ExePath {
    std::env::current_exe().map_err(Arc::new)
}

/// SIGUSR2 or SIGHUP (`signal`): starts `exe` with this process's arguments and the listening
/// sockets, then tells `on_upgrade` how it ended, then logs it. True once the new process
/// reported ready (this one is then to drain); false when it failed (this one serves on).
pub(crate) fn upgrade_on_signal(
    handle: &mut ServerHandle,
    exe: &ExePath,
    signal: &str,
    on_upgrade: &mut dyn FnMut(UpgradeOutcome),
) -> bool {
    let attempt = match exe {
        Ok(exe) => {
            tracing::info!(
                "{signal}: starting {} with the listening sockets",
                exe.display()
            );
            let mut command = std::process::Command::new(exe);
            command.args(std::env::args_os().skip(1));
            handle.upgrade(command).map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("this program's path is unknown ({e})")),
    };
    // The hook first, the log line second: whoever waits for the line (an operator, a test)
    // then sees what the hook did (the binary's pid file rewritten) already done.
    match attempt {
        Ok(pid) => {
            on_upgrade(UpgradeOutcome::Upgraded(pid));
            tracing::info!(
                "upgraded: pid {pid} serves; draining pid {}",
                std::process::id()
            );
            true
        }
        Err(cause) => {
            on_upgrade(UpgradeOutcome::Failed);
            tracing::warn!("{signal}: upgrade failed: {cause}; still serving");
            false
        }
    }
}

/// The signal streams (see the module doc), registered when made: a signal that comes before
/// `recv` is polled is kept. Needs a tokio runtime with IO enabled.
pub(crate) struct SignalStreams {
    interrupt: Signal,
    terminate: Signal,
    user1: Signal,
    user2: Signal,
    hangup: Signal,
}

impl SignalStreams {
    pub(crate) fn listen() -> io::Result<SignalStreams> {
        Ok(SignalStreams {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            user1: signal(SignalKind::user_defined1())?,
            user2: signal(SignalKind::user_defined2())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    pub(crate) async fn recv(&mut self) -> Action {
        tokio::select! {
            _ = self.interrupt.recv() => Action::Stop,
            _ = self.terminate.recv() => Action::Stop,
            _ = self.user1.recv() => Action::ReopenLogs,
            _ = self.user2.recv() => Action::Upgrade("SIGUSR2"),
            _ = self.hangup.recv() => Action::Upgrade("SIGHUP"),
        }
    }
}

/// The signals a running server answers as the `fcgi-uring` binary does, for a server started
/// with [`Server::start`](super::Server::start): SIGINT and SIGTERM stop it, SIGUSR1 reopens
/// the access log ([`ServerHandle::reopen_logs`]), SIGUSR2 and SIGHUP hot-upgrade it
/// ([`ServerHandle::upgrade`] of this program, started again from the path it was started
/// from, read at [`Signals::listen`], with this process's arguments). They are listened for
/// on a thread of their own, with a tokio runtime of its own: the caller may be inside a
/// runtime or not.
///
/// ```no_run
/// # fn run<M, A: fcgi_uring::App<M>>(app: A) -> Result<(), Box<dyn std::error::Error>> {
/// use fcgi_uring::{Server, Signals};
/// let signals = Signals::listen()?; // before the start: no signal is lost
/// let mut handle = Server::bind("127.0.0.1:9000")?.start(app)?;
/// signals.answer(&mut handle, |_| {}); // until SIGTERM, or an upgrade handed over
/// handle.shutdown();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Signals {
    received: std::sync::mpsc::Receiver<Action>,
    exe: ExePath,
    /// Dropped (ending the thread) with this value.
    _cancel: tokio::sync::oneshot::Sender<()>,
}

impl Signals {
    /// Starts listening for SIGINT, SIGTERM, SIGUSR1, SIGUSR2 and SIGHUP (from now on their
    /// default actions no longer end the process); returns once they are listened for. Fails
    /// when the thread, its runtime or a signal handler cannot be set up (no descriptor left,
    /// say).
    pub fn listen() -> io::Result<Signals> {
        let (listening_tx, listening_rx) = std::sync::mpsc::channel();
        let (received_tx, received) = std::sync::mpsc::channel();
        let (cancel, mut cancelled) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fcgi-signals".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = listening_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut signals = match SignalStreams::listen() {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = listening_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = listening_tx.send(Ok(()));
                    loop {
                        tokio::select! {
                            action = signals.recv() => {
                                if received_tx.send(action).is_err() {
                                    return;
                                }
                            }
                            _ = &mut cancelled => return,
                        }
                    }
                });
            })?;
        listening_rx
            .recv()
            .map_err(|_| io::Error::other("the signal thread exited during startup"))??;
        Ok(Signals {
            received,
            exe: current_exe(),
            _cancel: cancel,
        })
    }

    /// Answers signals for `handle` (blocking this thread) until SIGINT or SIGTERM, or until a
    /// SIGUSR2 or SIGHUP upgrade handed the sockets over; the caller then shuts `handle` down
    /// ([`ServerHandle::shutdown`], which drains). `on_upgrade` is called once each upgrade has
    /// ended, before the line that logs the end: the `fcgi-uring` binary writes its pid file
    /// there. An upgrade blocks this thread up to `server.upgrade_timeout`; signals that come
    /// meanwhile are answered after it.
    pub fn answer(self, handle: &mut ServerHandle, mut on_upgrade: impl FnMut(UpgradeOutcome)) {
        while let Ok(action) = self.received.recv() {
            match action {
                Action::Stop => return,
                Action::ReopenLogs => handle.reopen_logs(),
                Action::Upgrade(name) => {
                    if upgrade_on_signal(handle, &self.exe, name, &mut on_upgrade) {
                        return;
                    }
                }
            }
        }
    }
}
