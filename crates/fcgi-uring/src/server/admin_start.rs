//! What the server starts and stops for operators, next to its workers: readiness, the admin
//! listener (see [`crate::admin`]) and the ping path's settings.
//!
//! Order guaranteed at shutdown: readiness turns to draining (so `/readyz` and the ping path
//! answer 503) before anything else, then `admin.drain_delay` passes while every listener still
//! accepts, then the workers stop accepting; the admin listener stops last, after the workers
//! exited, so that it answers during the whole drain.

use super::StartError;
use crate::admin::{AdminServer, Health, LogWriter, Readiness, Sources, WorkerSource};
use crate::config::Config;
use crate::conn::{AccessSink, OpLogs, Ping};
use crate::stats::WorkerStats;
use crate::uring::RingCounters;
use fcgi_proto::addr::Addr;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The operator-facing parts of a running server.
#[derive(Debug, Default)]
pub(crate) struct Ops {
    health: Arc<Health>,
    /// Bound at start, served once the workers are ready.
    bound: Option<crate::admin::Bound>,
    admin: Option<AdminServer>,
    drain_delay: Duration,
    /// `admin.stall_timeout`, for `/healthz`.
    stall_timeout: Duration,
    /// The access log's writer thread, if the access log is on.
    log_writer: Option<LogWriter>,
    /// The access and slow logs' settings for the workers.
    logs: Option<Arc<OpLogs>>,
    /// A duplicate of the admin socket, for a hot upgrade to hand over.
    admin_fd: Option<std::os::fd::OwnedFd>,
    /// The admin socket was passed (systemd, hot upgrade): its file is not ours to remove.
    admin_passed: bool,
}

impl Ops {
    /// Binds the admin listener if `admin.listen` is set (before any worker starts, so that a
    /// taken address fails the start cleanly), or serves the one `passed` (named `admin` in
    /// `LISTEN_FDNAMES`) when `admin.listen` is set.
    pub fn bind(cfg: &Config, passed: Option<super::passed::Listener>) -> Result<Ops, StartError> {
        let ops = cfg.ops();
        let admin_passed = passed.is_some() && ops.admin_listen.is_some();
        let bound = match (&ops.admin_listen, passed) {
            (Some(addr), Some(l)) => {
                let bound = crate::admin::Bound::from_passed(l).map_err(|e| {
                    StartError::Listen(io::Error::new(
                        e.kind(),
                        format!("admin.listen {addr} (passed socket): {e}"),
                    ))
                })?;
                if let Ok(local) = bound.local_addr()
                    && !super::same_place(addr, &local)
                {
                    super::kept_over_config("admin.listen", addr, &local);
                }
                Some(bound)
            }
            (Some(addr), None) => Some(crate::admin::Bound::bind(addr).map_err(|e| {
                StartError::Listen(io::Error::new(
                    e.kind(),
                    format!("admin.listen {addr}: {e}"),
                ))
            })?),
            (None, _) => None,
        };
        let admin_fd = match &bound {
            Some(b) => Some(b.try_clone_fd().map_err(StartError::Listen)?),
            None => None,
        };
        let log_writer = match &ops.access_log_path {
            Some(path) => Some(
                LogWriter::start(path).map_err(|error| StartError::AccessLog {
                    path: path.clone(),
                    error,
                })?,
            ),
            None => None,
        };
        let access = log_writer.as_ref().map(|w| AccessSink {
            tx: w.sender(),
            format: ops.access_log_format,
            spare: w.spare(),
        });
        let slow = (!ops.slow_log_threshold.is_zero()).then_some(ops.slow_log_threshold);
        let status = bound.is_some();
        let logs = (access.is_some() || slow.is_some() || status).then(|| {
            Arc::new(OpLogs {
                access,
                slow,
                status,
            })
        });
        Ok(Ops {
            health: Arc::default(),
            bound,
            admin: None,
            drain_delay: ops.drain_delay,
            stall_timeout: ops.stall_timeout,
            log_writer,
            logs,
            admin_fd,
            admin_passed,
        })
    }

    /// A duplicate of the admin socket, to hand over.
    pub fn admin_fd(&self) -> io::Result<Option<std::os::fd::OwnedFd>> {
        self.admin_fd.as_ref().map(|fd| fd.try_clone()).transpose()
    }

    /// A hot upgrade handed the sockets over: the admin listener stops accepting now (the new
    /// process answers on the same socket, so `/readyz` never reports this one's drain), and
    /// its UNIX socket file stays.
    pub fn hand_over(&mut self) {
        self.admin_fd = None;
        if let Some(mut admin) = self.admin.take() {
            admin.keep_file();
        }
    }

    /// The access and slow logs' settings for the workers, if one is on.
    pub fn logs(&self) -> Option<Arc<OpLogs>> {
        self.logs.clone()
    }

    /// Reopens the access log file (after logrotate renamed it).
    pub fn reopen_logs(&self) {
        if let Some(w) = &self.log_writer {
            w.reopen();
        }
    }

    /// The ping path's settings for the workers, if `ping.path` is set.
    pub fn ping(&self, cfg: &Config) -> Option<Arc<Ping>> {
        let ops = cfg.ops();
        ops.ping_path.as_ref().map(|path| {
            Arc::new(Ping {
                path: path.clone(),
                response: bytes::Bytes::from(ops.ping_response.clone()),
                health: self.health.clone(),
            })
        })
    }

    /// Every worker accepts: ready, and the admin listener serves.
    pub fn start(
        &mut self,
        stats: &[Arc<WorkerStats>],
        rings: &[Arc<RingCounters>],
        backend: crate::config::Backend,
    ) -> Result<(), StartError> {
        if let Some(bound) = self.bound.take() {
            let sources = Sources {
                workers: stats
                    .iter()
                    .zip(rings)
                    .map(|(s, r)| WorkerSource {
                        stats: s.clone(),
                        ring: r.clone(),
                    })
                    .collect(),
                health: self.health.clone(),
                stall_timeout: self.stall_timeout,
                started_at: Instant::now(),
                io_backend: backend.as_str(),
                access_log_lost: self.log_writer.as_ref().map(LogWriter::lost_lines),
            };
            let mut admin =
                AdminServer::start(bound, Arc::new(sources)).map_err(StartError::Thread)?;
            if self.admin_passed {
                admin.keep_file();
            }
            self.admin = Some(admin);
        }
        self.health.set_ready();
        Ok(())
    }

    /// Turns readiness to draining; the first time, waits `admin.drain_delay` (listeners still
    /// accepting) before returning.
    pub fn drain(&self) {
        if self.health.set_draining() && !self.drain_delay.is_zero() {
            tracing::info!(
                "draining: /readyz answers 503; still accepting for {:?} (admin.drain_delay)",
                self.drain_delay
            );
            std::thread::sleep(self.drain_delay);
        }
    }

    /// Stops the access log's writer and the admin listener (after the workers exited and
    /// handed over their last lines).
    pub fn stop(&mut self) {
        self.logs = None;
        if let Some(mut w) = self.log_writer.take() {
            w.stop();
        }
        self.admin = None;
        self.admin_fd = None;
    }

    pub fn admin_addr(&self) -> Option<&Addr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    pub fn readiness(&self) -> Readiness {
        self.health.get()
    }
}
