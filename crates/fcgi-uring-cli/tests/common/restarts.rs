//! Steady load across restarts and hot upgrades, and the processes it runs against.
//!
//! The load: `threads` clients sending `GET /pid` back to back and noting which process
//! answered, each on one kept-alive connection (KEEP_CONN set, [`Load::start`]) or on a new
//! connection per request ([`Load::start_fresh`]: every request goes through an accept queue,
//! which is what a handover between processes must not lose). A connection the server closed
//! between two requests (a draining server does: FIN after the last response, later bytes
//! never read) shows as a clean EOF before any byte of the next response: that request was
//! not run, and is sent again on a new connection, as HTTP clients and nginx do for a reused
//! connection. Everything else is a failure: a reset, a refused or failed connect, an EOF on
//! a fresh connection, an error status, a timeout (the hang guard).

#![allow(dead_code)]

use fcgi_client::{Client, RequestSpec};
use fcgi_uring::Addr;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

/// What the load saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answers (status 200) per answering pid.
    pub by_pid: BTreeMap<u32, u64>,
    /// Requests sent again after a clean EOF on a reused connection (not run by the server).
    pub resent: u64,
    /// Everything that went wrong, described.
    pub failures: Vec<String>,
}

impl Tally {
    pub fn answered(&self) -> u64 {
        self.by_pid.values().sum()
    }

    fn merge(&mut self, other: Tally) {
        for (pid, n) in other.by_pid {
            *self.by_pid.entry(pid).or_default() += n;
        }
        self.resent += other.resent;
        self.failures.extend(other.failures);
    }
}

/// A running load; [`Load::stop`] ends it and returns the tally.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Answers so far, all threads, for waiting on progress.
    pub answered: Arc<AtomicU64>,
    /// The pid of the latest answer (any thread).
    pub last_pid: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Tally>>,
}

/// How a load's clients use connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Connections {
    /// One kept-alive connection per client, replaced when the server closes it.
    KeptAlive,
    /// A new connection per request (KEEP_CONN unset: the server closes it after the answer).
    PerRequest,
}

impl Load {
    /// Clients on kept-alive connections.
    pub fn start(addr: &Addr, threads: usize) -> Load {
        Load::with(addr, threads, Connections::KeptAlive)
    }

    /// Clients that open a new connection for every request.
    pub fn start_fresh(addr: &Addr, threads: usize) -> Load {
        Load::with(addr, threads, Connections::PerRequest)
    }

    fn with(addr: &Addr, threads: usize, connections: Connections) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let last_pid = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (addr, stop) = (addr.clone(), stop.clone());
                let (answered, last_pid) = (answered.clone(), last_pid.clone());
                std::thread::spawn(move || client(&addr, connections, &stop, &answered, &last_pid))
            })
            .collect();
        Load {
            stop,
            answered,
            last_pid,
            threads,
        }
    }

    /// Whether a client gave up before the stop (a failed connect: its tally says why, and
    /// [`assert_lossless`] reports it), so that waiting for progress ends at once.
    fn gave_up(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    /// Waits until `n` more answers came (the load flows), panicking after the hang guard.
    pub fn wait_answers(&self, n: u64) {
        let from = self.answered.load(Ordering::SeqCst);
        super::wait_for("the load to get answers", super::HANG_GUARD, || {
            self.answered.load(Ordering::SeqCst) >= from + n || self.gave_up()
        });
    }

    /// Waits until process `pid` answered a request.
    pub fn wait_answered_by(&self, pid: u32) {
        super::wait_for(
            &format!("an answer from pid {pid}"),
            super::HANG_GUARD,
            || self.last_pid.load(Ordering::SeqCst) == u64::from(pid) || self.gave_up(),
        );
    }

    pub fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut tally = Tally::default();
        for t in self.threads {
            tally.merge(t.join().expect("load thread"));
        }
        tally
    }
}

fn client(
    addr: &Addr,
    connections: Connections,
    stop: &AtomicBool,
    answered: &AtomicU64,
    last_pid: &AtomicU64,
) -> Tally {
    let mut tally = Tally::default();
    let spec = RequestSpec {
        keep_conn: connections == Connections::KeptAlive,
        ..RequestSpec::get("/pid")
    };
    let mut conn: Option<Client> = None;
    let mut attempt_on_fresh = false;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            match Client::connect(addr) {
                Ok(c) => {
                    let _ = c.set_read_timeout(Some(super::IO_TIMEOUT));
                    let _ = c.set_write_timeout(Some(super::IO_TIMEOUT));
                    conn = Some(c);
                    attempt_on_fresh = true;
                }
                Err(e) => {
                    // The test fails on it; retrying would only spin on a refused port.
                    tally.failures.push(format!("connect: {e}"));
                    break;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let fresh = std::mem::replace(&mut attempt_on_fresh, false);
        match exchange(c, &spec) {
            Ok(None) if !fresh => {
                tally.resent += 1;
                conn = None;
            }
            Ok(None) => {
                tally.failures.push("EOF on a fresh connection".to_owned());
                conn = None;
            }
            Ok(Some(r)) if r.status == 200 => {
                let pid: u32 = String::from_utf8_lossy(&r.body).trim().parse().unwrap_or(0);
                *tally.by_pid.entry(pid).or_default() += 1;
                last_pid.store(u64::from(pid), Ordering::SeqCst);
                answered.fetch_add(1, Ordering::SeqCst);
                if connections == Connections::PerRequest {
                    conn = None;
                }
            }
            Ok(Some(r)) => {
                tally.failures.push(format!("status {}", r.status));
                conn = None;
            }
            Err(e) => {
                tally
                    .failures
                    .push(format!("{:?} {e} (fresh connection: {fresh})", e.kind()));
                conn = None;
            }
        }
    }
    tally
}

/// Sends `spec` as request 1 and reads its answer; `None` on a clean EOF before any byte of
/// it (the server closed the connection between requests: this one was not run).
pub fn exchange(c: &mut Client, spec: &RequestSpec) -> io::Result<Option<fcgi_client::Response>> {
    c.begin(spec, 1)?;
    let mut responses = fcgi_client::Responses::new();
    let mut first = true;
    while !responses.is_ended(1) {
        match c.read_record()? {
            Some(record) => {
                responses.push(record);
            }
            None if first => return Ok(None),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside an answer",
                ));
            }
        }
        first = false;
    }
    match responses.take(1) {
        Some(exchange) => exchange.response().map(Some),
        None => Err(io::Error::other("no END_REQUEST")),
    }
}

/// The pid a `--pid-file` holds.
pub fn pid_in(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` runs (a zombie, exited but not yet reaped by its new parent, does not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Sends `signal` (`TERM`, `USR2`...) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{signal} {pid}");
}

/// Kills (SIGKILL) the process a pid file names when dropped: the servers a test started
/// through restarts and upgrades are not its children.
pub struct KillPidFile(pub std::path::PathBuf);

impl Drop for KillPidFile {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(&self.0)
            && alive(pid)
        {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Asserts the load lost nothing: no failure, answers from every process in `pids`.
pub fn assert_lossless(tally: &Tally, pids: &[u32]) {
    assert!(
        tally.failures.is_empty(),
        "{} failed requests (answered {}, resent {}): {:?}",
        tally.failures.len(),
        tally.answered(),
        tally.resent,
        &tally.failures[..tally.failures.len().min(20)]
    );
    for pid in pids {
        assert!(
            tally.by_pid.contains_key(pid),
            "no answer from pid {pid}: {:?}",
            tally.by_pid
        );
    }
    assert!(
        tally.by_pid.keys().all(|p| pids.contains(p)),
        "answers from unknown processes: {:?} (expected {pids:?})",
        tally.by_pid
    );
}
