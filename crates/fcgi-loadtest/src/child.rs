//! Server and proxy child processes for `compare` and `tune`: started with their output in a log
//! file, waited for until their address accepts connections, and always stopped: by the guard's
//! `Drop` (also when a panic unwinds), by a SIGKILL from the signal handler on Ctrl-C (see
//! [`sys::kill_children_on_signal`]), and by the kernel if this process dies
//! ([`sys::child_pinned_and_tied`]).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fcgi_uring::Addr;

use crate::net;
use crate::sys;

/// Waits for `child` to exit; if it is still running after `limit`, kills it (SIGKILL) and
/// waits for that. Returns its status and whether it had to be killed. The wait itself blocks on
/// the child's exit; a watchdog thread bounds it.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> std::io::Result<(ExitStatus, bool)> {
    let pid = child.id();
    let (exited, exit_seen) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let overran = exit_seen.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout);
        if overran {
            let _ = sys::signal(pid, libc::SIGKILL);
        }
        overran
    });
    let status = child.wait();
    let _ = exited.send(());
    let killed = watchdog.join().unwrap_or(false);
    Ok((status?, killed))
}

/// How long a stopped child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running child process, stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
pub struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `n` lines of the child's log (its stdout and stderr).
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// Whether the child has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id();
        if self.exited().is_none() {
            let _ = sys::terminate(pid);
            let deadline = Instant::now() + STOP_GRACE;
            while self.exited().is_none() {
                if Instant::now() > deadline {
                    eprintln!("{} did not stop on SIGTERM: killing it", self.name);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        sys::unregister_child(pid);
    }
}

/// The last `n` lines of a log file, joined with `" | "` (empty if unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A free TCP port on 127.0.0.1 for a process about to bind it (a server, a proxy).
///
/// Taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), from which every
/// `bind(:0)` and every client connection gets its port: a port released here cannot be handed
/// to another listener or client before the process it is for binds it (with ports from
/// `bind(:0)`, a test's nginx was once beaten to its port by another test's FastCGI server).
/// Ports go round a window that starts at an offset of this process's id; each is checked by
/// binding it and claimed with a lock on a file named after it (in
/// `$TMPDIR/fcgi-loadtest-ports`) that this process holds until it exits, so that two
/// processes (tests run side by side) never hand out the same port.
pub fn free_port() -> Result<u16, String> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static CLAIMS: Mutex<Vec<fs::File>> = Mutex::new(Vec::new());
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(12_000));
    let span = high - low;
    let start = std::process::id().wrapping_mul(97) % span;
    let claims_dir = std::env::temp_dir().join("fcgi-loadtest-ports");
    fs::create_dir_all(&claims_dir)
        .map_err(|e| format!("cannot create {}: {e}", claims_dir.display()))?;
    for _ in 0..span {
        let port = low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let claim = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(claims_dir.join(port.to_string()))
            .map_err(|e| format!("cannot claim port {port}: {e}"))?;
        let locked =
            rustix::fs::flock(&claim, rustix::fs::FlockOperation::NonBlockingLockExclusive);
        if locked.is_ok() {
            CLAIMS
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(claim);
            return Ok(port);
        }
    }
    Err(format!("no free loopback port between {low} and {high}"))
}

/// Whether something accepts connections on `addr`.
fn accepts(addr: &Addr) -> bool {
    net::connect_blocking(addr, Duration::from_millis(200)).is_ok()
}

/// Starts `cmd` as `name`, its stdout and stderr in `log`, and waits up to `timeout` until
/// `addr` accepts connections. Refuses an address that already accepts (a stale server with
/// SO_REUSEPORT would silently take a share of the load). On failure the message names the
/// child and carries the end of its log.
pub fn spawn(
    mut cmd: Command,
    name: &str,
    log: &Path,
    addr: &Addr,
    timeout: Duration,
) -> Result<Proc, String> {
    if accepts(addr) {
        return Err(format!(
            "{addr} is already in use: stop the process listening on it"
        ));
    }
    let file = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(file).stderr(err);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
    sys::register_child(child.id());
    let mut proc = Proc {
        child,
        name: name.to_owned(),
        log: log.to_owned(),
    };
    let deadline = Instant::now() + timeout;
    while !accepts(addr) {
        if let Some(status) = proc.exited() {
            return Err(format!(
                "{name} exited ({status}) before listening on {addr}: {} (log: {})",
                proc.log_tail(5),
                log.display()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name} did not listen on {addr} within {:.0} s: {} (log: {})",
                timeout.as_secs_f64(),
                proc.log_tail(5),
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(proc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port handed out stays claimed (another process's lock on its file fails: a second
    /// open file description stands for it here) and is not handed out again.
    #[test]
    fn free_ports_are_claimed_until_the_process_exits() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
        for port in [a, b] {
            let path = std::env::temp_dir()
                .join("fcgi-loadtest-ports")
                .join(port.to_string());
            let other = fs::File::open(&path).unwrap();
            let second =
                rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive);
            assert_eq!(second, Err(rustix::io::Errno::WOULDBLOCK), "{port}");
            assert!(
                TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "{port} is free"
            );
        }
    }
}
