//! One worker thread's event loop: non-blocking connections on a level-triggered epoll, each
//! keeping up to `depth` requests in flight.
//!
//! Per wakeup a connection does one `read` (large buffer), parses every complete response in
//! it, refills its free slots and sends all new requests in one `write`. Requests are
//! pre-encoded; only a FastCGI request id is patched per request. Time is nanoseconds since the
//! run's start, read once per wakeup.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fcgi_uring::Addr;
use socket2::Socket;

use crate::fcgi::{self, RequestTemplate};
use crate::http1;
use crate::net::{self, Connecting};
use crate::response::{Completion, Expect, Failure};
use crate::schedule::Pacer;
use crate::stats::ThreadStats;
use crate::sys::{self, ERROR, Epoll, READABLE, WRITABLE};

/// Initial read buffer per connection: holds any FastCGI record (at most 65535 + 255 + 8).
const READ_BUF: usize = 128 * 1024;
/// Largest read buffer (a single HTTP response must fit).
const MAX_READ_BUF: usize = 64 * 1024 * 1024;
/// A request still unanswered at the end of the run that was sent (or due) longer ago than
/// this counts as a [`Failure::Timeout`].
pub const TIMEOUT_NS: u64 = 1_000_000_000;
/// Wait before retrying a connection that could not be made.
const CONNECT_BACKOFF_NS: u64 = 10_000_000;

/// The request every connection sends, encoded once.
#[derive(Debug, Clone)]
pub enum Request {
    Fcgi(RequestTemplate),
    Http1(Vec<u8>),
}

impl Request {
    fn append(&self, out: &mut Vec<u8>, slot: u16) {
        match self {
            Request::Fcgi(t) => t.append(out, slot),
            Request::Http1(bytes) => out.extend_from_slice(bytes),
        }
    }

    /// The request for `slot` where it is written from as it is, not copied into the write
    /// buffer first (a large request: see [`fcgi::PREPARE_MIN`]).
    fn prepared(&self, slot: u16) -> Option<&[u8]> {
        match self {
            Request::Fcgi(t) => t.prepared(slot),
            Request::Http1(bytes) => (bytes.len() >= fcgi::PREPARE_MIN).then_some(&bytes[..]),
        }
    }
}

/// What all connections of a run share.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: Addr,
    pub request: Request,
    pub method: String,
    pub expect: Expect,
    pub depth: u16,
    pub keep_conn: bool,
    /// Start of the measured window, ns since `base`.
    pub window_start: u64,
    /// End of the run and of the measured window, ns since `base`.
    pub window_end: u64,
}

/// A worker's live count of finished requests (its own cache line: only the worker writes).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Progress {
    pub completed: AtomicU64,
}

#[derive(Debug)]
enum Parser {
    Fcgi(fcgi::ResponseParser),
    Http1(http1::ResponseParser),
}

impl Parser {
    fn new(plan: &Plan) -> Parser {
        match plan.request {
            Request::Fcgi(_) => {
                Parser::Fcgi(fcgi::ResponseParser::new(plan.depth, plan.expect.clone()))
            }
            Request::Http1(_) => Parser::Http1(http1::ResponseParser::new(
                &plan.method,
                plan.expect.clone(),
            )),
        }
    }

    fn begin(&mut self, slot: u16) {
        match self {
            Parser::Fcgi(p) => p.begin(slot),
            Parser::Http1(p) => p.begin(slot),
        }
    }

    fn reset(&mut self) {
        match self {
            Parser::Fcgi(p) => p.reset(),
            Parser::Http1(p) => p.reset(),
        }
    }

    fn parse(&mut self, buf: &[u8], done: &mut Vec<Completion>) -> Result<usize, Failure> {
        match self {
            Parser::Fcgi(p) => p.parse(buf, done),
            Parser::Http1(p) => p.parse(buf, done),
        }
        .map_err(|_| Failure::Protocol)
    }

    fn must_close(&self) -> bool {
        match self {
            Parser::Fcgi(_) => false,
            Parser::Http1(p) => p.must_close(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket; connect at `retry_at`.
    Closed {
        retry_at: u64,
    },
    Connecting,
    Open,
}

struct Conn {
    socket: Option<Socket>,
    state: State,
    /// When the current connection attempt started (latency origin with `--keep-conn false`).
    opened_at: u64,
    /// Requests sent on the current connection.
    sent_on_conn: u32,
    wbuf: Vec<u8>,
    wpos: usize,
    /// The slot whose prepared request ([`Request::prepared`]) is being written, before
    /// `wbuf`, and how far.
    direct: Option<u16>,
    dpos: usize,
    /// INVARIANT: `rlen <= rbuf.len()`.
    rbuf: Vec<u8>,
    rlen: usize,
    parser: Parser,
    /// Send (or due) time per slot, index 1..=depth.
    sent_at: Vec<u64>,
    free: Vec<u16>,
    in_flight: usize,
    /// EPOLLOUT is in the interest set.
    want_write: bool,
    pacer: Option<Pacer>,
}

impl Conn {
    fn new(plan: &Plan, pacer: Option<Pacer>) -> Conn {
        let retry_at = pacer.as_ref().map_or(0, Pacer::next_due);
        Conn {
            socket: None,
            state: State::Closed { retry_at },
            opened_at: 0,
            sent_on_conn: 0,
            wbuf: Vec::new(),
            wpos: 0,
            direct: None,
            dpos: 0,
            rbuf: vec![0; READ_BUF],
            rlen: 0,
            parser: Parser::new(plan),
            sent_at: vec![0; plan.depth as usize + 1],
            free: (1..=plan.depth).rev().collect(),
            in_flight: 0,
            want_write: false,
            pacer,
        }
    }
}

/// One worker: its connections, its epoll, its statistics.
pub struct Worker {
    plan: Arc<Plan>,
    base: Instant,
    epoll: Epoll,
    conns: Vec<Conn>,
    stats: ThreadStats,
    done: Vec<Completion>,
    completed: u64,
    closed: usize,
    in_window: bool,
    cpu_at_start: Duration,
    /// Open loop: some connection has a pacer.
    paced: bool,
    /// Scratch for the ready events of one wait.
    ready: Vec<(u64, u32)>,
}

impl Worker {
    /// A worker for `pacers.len()` connections (`None`: closed loop), timed from `base`.
    pub fn new(plan: Arc<Plan>, base: Instant, pacers: Vec<Option<Pacer>>) -> io::Result<Worker> {
        let paced = pacers.iter().any(Option::is_some);
        let conns: Vec<Conn> = pacers.into_iter().map(|p| Conn::new(&plan, p)).collect();
        Ok(Worker {
            epoll: Epoll::new(conns.len().clamp(1, 1024))?,
            closed: conns.len(),
            conns,
            plan,
            base,
            stats: ThreadStats::new(),
            done: Vec::new(),
            completed: 0,
            in_window: false,
            cpu_at_start: Duration::ZERO,
            paced,
            ready: Vec::new(),
        })
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Runs until the end of the window and returns what was measured in it.
    pub fn run(mut self, progress: &Progress) -> io::Result<ThreadStats> {
        loop {
            let now = self.now();
            if !self.in_window && now >= self.plan.window_start {
                self.in_window = true;
                self.cpu_at_start = sys::thread_cpu_time();
            }
            if now >= self.plan.window_end {
                break;
            }
            if self.closed > 0 || self.paced {
                self.timers(now);
            }
            let timeout = self.next_timer(now).saturating_sub(now);
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            let events = self.epoll.wait(Some(Duration::from_nanos(timeout)))?;
            ready.extend(events.iter().map(|e| (e.u64, e.events)));
            let now = self.now();
            for &(token, events) in &ready {
                self.on_event(token as usize, events, now);
            }
            self.ready = ready;
            progress.completed.store(self.completed, Ordering::Relaxed);
        }
        if self.in_window {
            self.stats.cpu = sys::thread_cpu_time().saturating_sub(self.cpu_at_start);
            self.count_timeouts(self.now());
        }
        Ok(self.stats)
    }

    /// Counts the requests in flight that have waited longer than [`TIMEOUT_NS`].
    fn count_timeouts(&mut self, now: u64) {
        for c in &self.conns {
            if c.socket.is_none() {
                continue;
            }
            let stale = (1..=self.plan.depth)
                .filter(|slot| !c.free.contains(slot))
                .filter(|&slot| now.saturating_sub(c.sent_at[slot as usize]) > TIMEOUT_NS)
                .count();
            for _ in 0..stale {
                self.stats.errors.count(Failure::Timeout);
            }
        }
    }

    /// Reconnects closed connections that are due and sends paced requests that are due.
    fn timers(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            match self.conns[i].state {
                State::Closed { retry_at } if retry_at <= now => self.connect(i, now),
                State::Open if self.conns[i].pacer.is_some() => self.send_more(i, now),
                _ => {}
            }
        }
    }

    /// The next time something is due without IO: the window's edges, reconnects, paced sends.
    fn next_timer(&self, now: u64) -> u64 {
        let mut next = self.plan.window_end;
        if now < self.plan.window_start {
            next = next.min(self.plan.window_start);
        }
        if self.closed == 0 && !self.paced {
            return next;
        }
        for c in &self.conns {
            match (c.state, &c.pacer) {
                (State::Closed { retry_at }, _) => next = next.min(retry_at),
                (State::Open, Some(p)) if !c.free.is_empty() => next = next.min(p.next_due()),
                _ => {}
            }
        }
        next
    }

    fn in_window(&self, now: u64) -> bool {
        now >= self.plan.window_start && now < self.plan.window_end
    }

    fn fail(&mut self, now: u64, failure: Failure) {
        if self.in_window(now) {
            self.stats.errors.count(failure);
        }
    }

    fn connect(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        c.opened_at = now;
        c.sent_on_conn = 0;
        let (socket, interest, state) = match net::start_connect(&self.plan.addr) {
            Ok(Connecting::Done(s)) => (s, READABLE, State::Open),
            Ok(Connecting::InProgress(s)) => (s, READABLE | WRITABLE, State::Connecting),
            Err(_) => return self.connect_failed(i, now),
        };
        if self
            .epoll
            .add(socket.as_raw_fd(), i as u64, interest)
            .is_err()
        {
            return self.connect_failed(i, now);
        }
        let c = &mut self.conns[i];
        c.want_write = interest & WRITABLE != 0;
        c.socket = Some(socket);
        c.state = state;
        self.closed -= 1;
        if state == State::Open {
            self.send_more(i, now);
        }
    }

    fn connect_failed(&mut self, i: usize, now: u64) {
        self.fail(now, Failure::Connect);
        let c = &mut self.conns[i];
        let due = c.pacer.as_ref().map_or(0, Pacer::next_due);
        c.state = State::Closed {
            retry_at: (now + CONNECT_BACKOFF_NS).max(due),
        };
    }

    fn on_event(&mut self, i: usize, ready: u32, now: u64) {
        let Some(c) = self.conns.get(i) else { return };
        match c.state {
            State::Closed { .. } => {}
            State::Connecting => {
                if ready & (WRITABLE | ERROR) != 0 {
                    self.on_connect_ready(i, now);
                }
            }
            State::Open => {
                if ready & (READABLE | ERROR) != 0 {
                    self.on_readable(i, now);
                }
                if ready & WRITABLE != 0 && self.conns[i].state == State::Open {
                    self.flush(i, now);
                }
            }
        }
    }

    fn on_connect_ready(&mut self, i: usize, now: u64) {
        let Some(socket) = self.conns[i].socket.as_ref() else {
            return;
        };
        match net::finish_connect(socket) {
            Err(_) => {
                self.close(i, now + CONNECT_BACKOFF_NS);
                self.fail(now, Failure::Connect);
            }
            // A stale readiness from an earlier socket with the same token: keep waiting.
            Ok(()) if socket.peer_addr().is_err() => {}
            Ok(()) => {
                self.conns[i].state = State::Open;
                // Also drops the EPOLLOUT interest once nothing is left to write.
                self.send_more(i, now);
            }
        }
    }

    /// Fills free slots with new requests (paced ones only when due) and writes them.
    fn send_more(&mut self, i: usize, now: u64) {
        let plan = &self.plan;
        let c = &mut self.conns[i];
        while let Some(&slot) = c.free.last() {
            if !plan.keep_conn && c.sent_on_conn > 0 {
                break;
            }
            let sent_at = match c.pacer.as_mut() {
                Some(p) => match p.take_due(now) {
                    Some(due) => due,
                    None => break,
                },
                None if !plan.keep_conn => c.opened_at,
                None => now,
            };
            c.free.pop();
            let nothing_pending = c.direct.is_none() && c.wbuf.is_empty();
            if nothing_pending && plan.request.prepared(slot).is_some() {
                c.direct = Some(slot);
                c.dpos = 0;
            } else {
                plan.request.append(&mut c.wbuf, slot);
            }
            c.parser.begin(slot);
            c.sent_at[slot as usize] = sent_at;
            c.in_flight += 1;
            c.sent_on_conn += 1;
        }
        self.flush(i, now);
    }

    /// Writes what is pending until done or the socket would block: the prepared request
    /// first, then the write buffer.
    fn flush(&mut self, i: usize, now: u64) {
        let plan = &self.plan;
        let c = &mut self.conns[i];
        let Some(socket) = c.socket.as_ref() else {
            return;
        };
        if let Some(slot) = c.direct {
            let bytes = plan.request.prepared(slot).unwrap_or_default();
            if write_from(socket, bytes, &mut c.dpos).is_err() {
                return self.drop_conn(i, now, Failure::Io);
            }
            if c.dpos == bytes.len() {
                c.direct = None;
                c.dpos = 0;
            }
        }
        if c.direct.is_none() && write_from(socket, &c.wbuf, &mut c.wpos).is_err() {
            return self.drop_conn(i, now, Failure::Io);
        }
        let pending = c.direct.is_some() || c.wpos < c.wbuf.len();
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
        }
        if pending != c.want_write {
            self.set_want_write(i, pending);
        }
    }

    fn set_want_write(&mut self, i: usize, on: bool) {
        let c = &mut self.conns[i];
        let Some(socket) = c.socket.as_ref() else {
            return;
        };
        let interest = if on { READABLE | WRITABLE } else { READABLE };
        if self
            .epoll
            .modify(socket.as_raw_fd(), i as u64, interest)
            .is_ok()
        {
            c.want_write = on;
        }
    }

    fn on_readable(&mut self, i: usize, now: u64) {
        let in_window = self.in_window(now);
        let Worker {
            conns,
            stats,
            done,
            completed,
            ..
        } = self;
        let c = &mut conns[i];
        let Some(socket) = c.socket.as_ref() else {
            return;
        };
        if c.rlen == c.rbuf.len() {
            if c.rbuf.len() >= MAX_READ_BUF {
                return self.drop_conn(i, now, Failure::Protocol);
            }
            let grown = c.rbuf.len() * 2;
            c.rbuf.resize(grown, 0);
        }
        match (&*socket).read(&mut c.rbuf[c.rlen..]) {
            Ok(0) => return self.drop_conn(i, now, Failure::Io),
            Ok(n) => c.rlen += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return;
            }
            Err(_) => return self.drop_conn(i, now, Failure::Io),
        }
        done.clear();
        let consumed = match c.parser.parse(&c.rbuf[..c.rlen], done) {
            Ok(n) => n,
            Err(failure) => return self.drop_conn(i, now, failure),
        };
        if consumed > 0 {
            c.rbuf.copy_within(consumed..c.rlen, 0);
            c.rlen -= consumed;
        }
        for d in done.iter() {
            c.free.push(d.slot);
            c.in_flight -= 1;
            *completed += 1;
            if !in_window {
                continue;
            }
            match d.result {
                Ok(()) => stats.record_ok(now.saturating_sub(c.sent_at[d.slot as usize])),
                Err(f) => stats.errors.count(f),
            }
        }
        if c.parser.must_close() || (!self.plan.keep_conn && c.in_flight == 0) {
            self.drop_conn(i, now, Failure::Io);
        } else {
            self.send_more(i, now);
        }
    }

    /// Closes connection `i`, counting its requests in flight as `failure`, and schedules its
    /// replacement (at once, or when its next paced request is due).
    fn drop_conn(&mut self, i: usize, now: u64, failure: Failure) {
        for _ in 0..self.conns[i].in_flight {
            self.fail(now, failure);
        }
        let due = self.conns[i].pacer.as_ref().map_or(now, Pacer::next_due);
        self.close(i, due.max(now));
    }

    fn close(&mut self, i: usize, retry_at: u64) {
        let depth = self.plan.depth;
        let c = &mut self.conns[i];
        if c.socket.take().is_none() {
            return;
        }
        c.state = State::Closed { retry_at };
        c.wbuf.clear();
        c.wpos = 0;
        c.direct = None;
        c.dpos = 0;
        c.rlen = 0;
        c.parser.reset();
        c.free.clear();
        c.free.extend((1..=depth).rev());
        c.in_flight = 0;
        c.want_write = false;
        self.closed += 1;
    }
}

/// Writes `bytes[*at..]` until all is written or the socket would block, advancing `at`.
fn write_from(socket: &Socket, bytes: &[u8], at: &mut usize) -> io::Result<()> {
    while *at < bytes.len() {
        match (&*socket).write(&bytes[*at..]) {
            Ok(n) => *at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
