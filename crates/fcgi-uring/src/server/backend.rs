//! Which IO backend a server runs on: `server.io` as set, or for `auto` the answer of the
//! io_uring probe ([`crate::uring::probe`]), run once per process.
//!
//! Guarantees: `uring` never falls back (a ring that cannot be set up fails the start with its
//! cause, as before); `epoll` never touches io_uring; `auto` falls back to epoll only when
//! io_uring is unavailable to this process (blocked, disabled, out of locked memory, missing a
//! feature), never for a mistake in the ring settings, and says so in one log line naming the
//! cause and the way to get io_uring back.

use crate::config::{Backend, IoMode, RingConfig};
use crate::uring::SetupError;
use std::sync::{Arc, OnceLock};

/// Overrides `server.io = auto` with `uring` or `epoll` (for running a test suite or a
/// deployment on a chosen backend without editing its configuration).
pub const IO_ENV: &str = "FCGI_URING_IO";

/// The probe's answer, kept for the life of the process.
static PROBE: OnceLock<Result<(), Arc<SetupError>>> = OnceLock::new();

/// The backend for `mode`. When `auto`'s probe failed for a reason that is not about
/// availability (a ring setting the kernel refused), io_uring it is: the workers' ring setup
/// then fails with that cause, as with `uring`.
pub(crate) fn choose(mode: IoMode, ring: &RingConfig) -> Backend {
    match effective(mode) {
        IoMode::Epoll => Backend::Epoll,
        IoMode::Auto => match PROBE.get_or_init(|| probe(ring)) {
            Err(e) if falls_back(e) => Backend::Epoll,
            _ => Backend::IoUring,
        },
        _ => Backend::IoUring,
    }
}

/// `mode`, or for `auto` what [`IO_ENV`] asks for.
fn effective(mode: IoMode) -> IoMode {
    if mode != IoMode::Auto {
        return mode;
    }
    env_override().ok().flatten().unwrap_or(IoMode::Auto)
}

/// What [`IO_ENV`] asks for: unset or empty, nothing; a value that names no backend is an
/// error (checked at start, as a setting would be, rather than ignored).
pub(crate) fn env_override() -> Result<Option<IoMode>, super::StartError> {
    match std::env::var(IO_ENV) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => v
            .parse()
            .map(Some)
            .map_err(|_| super::StartError::IoEnv { value: v }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(super::StartError::IoEnv {
            value: v.to_string_lossy().into_owned(),
        }),
    }
}

fn probe(ring: &RingConfig) -> Result<(), Arc<SetupError>> {
    let result = crate::uring::probe::probe(ring).map_err(Arc::new);
    if let Err(e) = &result
        && falls_back(e)
    {
        tracing::warn!(
            "io_uring unavailable, serving with epoll (server.io = auto): {e}; \
             see docs/deploy/containers.md"
        );
    }
    result
}

/// Whether a worker's ring setup failure `e` under `mode`, on `io`, sends the whole start back
/// to epoll: `auto` chose io_uring (its probe passed with one ring), and `e` is about
/// availability (most often RLIMIT_MEMLOCK, which the rings of every worker share). Logs the
/// fallback line.
pub(crate) fn falls_back_after_probe(mode: IoMode, io: Backend, e: &SetupError) -> bool {
    let fall_back = effective(mode) == IoMode::Auto && io == Backend::IoUring && falls_back(e);
    if fall_back {
        tracing::warn!(
            "io_uring unavailable for every worker, serving with epoll (server.io = auto): {e}; \
             see docs/deploy/containers.md"
        );
    }
    fall_back
}

impl super::ServerHandle {
    /// Stops and joins the workers started so far and forgets them; the listeners stay open
    /// (and a UNIX socket's file in place) for the workers that start next.
    pub(super) fn stop_workers(&mut self) {
        for stop in &self.stops {
            stop.request();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.stops.clear();
        self.stats.clear();
        self.ring_counters.clear();
        self.max_in_flight.clear();
        self.heartbeats.clear();
        self.features = None;
    }
}

/// Whether `e` says io_uring is unavailable here (rather than misconfigured).
fn falls_back(e: &SetupError) -> bool {
    !matches!(
        e,
        SetupError::Config(_) | SetupError::SigpipeFatal | SetupError::SqpollCpu { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn unavailable_io_uring_falls_back_and_ring_mistakes_do_not() {
        let eperm = || io::Error::from_raw_os_error(libc::EPERM);
        for e in [
            SetupError::Blocked(eperm()),
            SetupError::Disabled { sysctl: 2 },
            SetupError::Memlock(io::Error::from_raw_os_error(libc::ENOMEM)),
            SetupError::NotImplemented(io::Error::from_raw_os_error(libc::ENOSYS)),
            SetupError::Unsupported {
                feature: "multishot recv",
                needs: "Linux >= 6.0",
            },
            SetupError::Other(eperm()),
        ] {
            assert!(falls_back(&e), "{e}");
        }
        for e in [
            SetupError::SigpipeFatal,
            SetupError::SqpollCpu {
                cpu: 4095,
                err: io::Error::from_raw_os_error(libc::EINVAL),
            },
        ] {
            assert!(!falls_back(&e), "{e}");
        }
    }

    #[test]
    fn only_auto_on_io_uring_falls_back_after_the_probe() {
        let blocked = || SetupError::Blocked(io::Error::from_raw_os_error(libc::EPERM));
        assert!(!falls_back_after_probe(
            IoMode::Uring,
            Backend::IoUring,
            &blocked()
        ));
        assert!(!falls_back_after_probe(
            IoMode::Epoll,
            Backend::Epoll,
            &blocked()
        ));
        assert!(!falls_back_after_probe(
            IoMode::Auto,
            Backend::IoUring,
            &SetupError::SigpipeFatal
        ));
        if std::env::var_os(IO_ENV).is_none() {
            assert!(falls_back_after_probe(
                IoMode::Auto,
                Backend::IoUring,
                &blocked()
            ));
        }
    }

    #[test]
    fn forced_modes_never_probe() {
        let ring = RingConfig::default();
        assert_eq!(choose(IoMode::Epoll, &ring), Backend::Epoll);
        assert_eq!(choose(IoMode::Uring, &ring), Backend::IoUring);
    }

    /// The unit tests need io_uring (the ring's own tests run here), so the probe passes.
    #[test]
    fn the_probe_passes_where_io_uring_works() {
        let r = crate::uring::probe::probe(&RingConfig::default());
        assert!(r.is_ok(), "{r:?}");
    }
}
