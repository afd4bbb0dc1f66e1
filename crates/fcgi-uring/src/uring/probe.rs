//! Whether this process can run the io_uring backend, found by trying rather than by the
//! kernel version: a ring is set up exactly as a worker sets its own up (setup flags, opcode
//! probe, provided buffer ring, registered send buffers: EPERM from a seccomp filter or
//! `kernel.io_uring_disabled`, ENOSYS, ENOMEM from RLIMIT_MEMLOCK all show here), then one
//! multishot accept and one multishot receive run on a private socket pair and must deliver
//! with their `more` flag set.

#![forbid(unsafe_code)]

use super::{CompletionKind, Ring, RingConfig, SetupError};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCEPT_TOKEN: u64 = 1;
const RECV_TOKEN: u64 = 2;
/// How long the probe waits for its two completions (they come at once on a working ring).
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// Sets up a ring with `config` and checks multishot accept and receive on it.
pub(crate) fn probe(config: &RingConfig) -> Result<(), SetupError> {
    let mut ring = Ring::new(config)?;
    check_multishot(&mut ring)
}

/// What the probe's operations reported.
#[derive(Default)]
struct Seen {
    accept: Option<Result<bool, io::Error>>,
    recv: Option<Result<bool, io::Error>>,
}

fn check_multishot(ring: &mut Ring) -> Result<(), SetupError> {
    let name = format!(
        "fcgi-uring-probe-{}-{:?}",
        std::process::id(),
        Instant::now()
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(SetupError::Other)?;
    let listener = UnixListener::bind_addr(&addr).map_err(SetupError::Other)?;
    let listener = Arc::new(OwnedFd::from(listener));
    let (mut writer, reader) = UnixStream::pair().map_err(SetupError::Other)?;
    let reader = Rc::new(OwnedFd::from(reader));
    ring.accept_multishot(&listener, ACCEPT_TOKEN);
    ring.recv_multishot(&reader, RECV_TOKEN);
    ring.submit().map_err(SetupError::Other)?;
    let _client = UnixStream::connect_addr(&addr).map_err(SetupError::Other)?;
    writer.write_all(b"x").map_err(SetupError::Other)?;
    let mut seen = Seen::default();
    let start = Instant::now();
    while (seen.accept.is_none() || seen.recv.is_none()) && start.elapsed() < PROBE_WAIT {
        ring.submit_and_wait_timeout(Duration::from_millis(100))
            .map_err(SetupError::Other)?;
        ring.complete(|c| match c.kind {
            CompletionKind::Accept { result, more } if c.token == ACCEPT_TOKEN => {
                seen.accept.get_or_insert(result.map(|_| more));
            }
            CompletionKind::Recv { result, more } if c.token == RECV_TOKEN => {
                seen.recv.get_or_insert(result.map(|d| more && d == b"x"));
            }
            _ => {}
        });
    }
    verdict(seen.accept, "multishot accept", "Linux >= 5.19")?;
    verdict(seen.recv, "multishot recv", "Linux >= 6.0")
}

/// An operation that failed with EINVAL, ended at once or never completed is missing.
fn verdict(
    seen: Option<Result<bool, io::Error>>,
    feature: &'static str,
    needs: &'static str,
) -> Result<(), SetupError> {
    match seen {
        Some(Ok(true)) => Ok(()),
        Some(Err(e)) if e.raw_os_error() != Some(libc::EINVAL) => Err(SetupError::Other(e)),
        _ => Err(SetupError::Unsupported { feature, needs }),
    }
}
