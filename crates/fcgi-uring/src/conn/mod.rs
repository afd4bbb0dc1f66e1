//! The connection core of one worker, free of IO: its connections, their in-flight requests,
//! their output queues and their deadlines.
//!
//! It takes bytes, completions and the time, and decides what the IO does: a backend reports
//! what happened through the input methods ([`Core::accept`], [`Core::on_bytes`],
//! [`Core::on_sent`], [`Core::on_peer_gone`], [`Core::on_recv_ended`]) and runs what
//! [`Core::flush`] asks of it through the [`Io`] trait (send, arm or cancel a receive, shut
//! down, close). Nothing here imports the io_uring driver, so any backend can drive it, and a
//! test can with byte vectors and the worker clock.
//!
//! Guarantees:
//! - bounded: a connection's queued output stops its reading past `max_output_buffer`, a full
//!   request body buffer pauses it, and requests past `max_requests_per_worker` are refused;
//!   bytes the backend still delivers for a connection that is not to be read are kept
//!   unparsed and parsed in order once it may be read ([`Core::replay_held`], which a backend
//!   calls every loop turn), so output and bodies pass their limits by one receive at most;
//! - a handler reaches only its own request ([`ReqKey`]'s serial), never a later one;
//! - a connection leaves the table exactly when its state says closed, after its receive was
//!   cancelled and the backend told to close it;
//! - single-threaded by construction (`Rc`, `RefCell`): no borrow is held across an `.await`
//!   or while user code runs.

mod deadlines;
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) mod hostile_model;
mod input;
mod io;
mod oplog;
mod requests;
mod respond;
mod state;
#[cfg(test)]
pub(crate) mod tests;

/// Settings for a test core: 8 connections at most, default timeouts, no logs.
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) fn test_settings() -> Settings {
    Settings {
        limits: Default::default(),
        max_body_buffer: 1 << 20,
        max_output_buffer: 1024,
        max_conns: 8,
        max_requests: 64,
        timeouts: Timeouts::default(),
        ping: None,
        logs: None,
        allowed_peers: None,
    }
}

/// A core on its own stats.
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) fn test_core(settings: Settings) -> Core {
    Core::new(
        settings,
        Arc::new(crate::stats::WorkerStats::default()),
        Arc::new(AtomicUsize::new(0)),
    )
}

pub(crate) use deadlines::expire;
pub(crate) use input::{Sent, Staged};
pub use io::OutBuf;
pub(crate) use io::{Io, MAX_PIECES, OutQueue, Sending};
pub(crate) use oplog::InFlight;
pub(crate) use oplog::{AccessSink, LogMsg, OpLogs, SpareBuffers, Target};

/// The method and target of the request whose handler is being called, for `/status` (see
/// [`Core::note_line`]), in a [`Target`] reused for every request: the usual request,
/// answered on its first poll, costs a small copy rather than the reference counts of its
/// `Uri`.
struct PendingLine {
    noted: bool,
    method: http::Method,
    target: Target,
}

impl Default for PendingLine {
    fn default() -> PendingLine {
        PendingLine {
            noted: false,
            method: http::Method::GET,
            target: Target::default(),
        }
    }
}

impl PendingLine {
    fn note(&mut self, request: &http::Request<crate::body::RequestBody>) {
        self.method.clone_from(request.method());
        self.target.set(request.uri());
        self.noted = true;
    }

    fn clear(&mut self) {
        self.noted = false;
        self.target.release();
    }

    /// The noted line, taken (for a request that outlived its first poll).
    fn take(&mut self) -> Option<(http::Method, Target)> {
        std::mem::replace(&mut self.noted, false)
            .then(|| (self.method.clone(), self.target.clone()))
    }
}

/// Chunks of lines queued to the access log's writer.
pub(crate) fn oplog_channel_chunks() -> usize {
    oplog::CHANNEL_CHUNKS
}
pub(crate) use requests::ReqKey;
pub(crate) use respond::Head;

use crate::config::Timeouts;
use crate::stats::metrics::Histogram;
use crate::stats::{Recorder, WorkerStats};
use crate::wheel::{Clock, Millis, Wheel};
use fcgi_proto as protocol;
use state::Conn;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Waker;
use std::time::Instant;

/// A connection slot and the generation that was current when it was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    index: u32,
    generation: u32,
}

impl ConnKey {
    /// A 63-bit tag for IO operations (bit 63 is free for the backend's own tags).
    pub fn token(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    /// The key of a [`ConnKey::token`]; `None` when bit 63 is set.
    pub fn from_token(token: u64) -> Option<ConnKey> {
        if token & (1 << 63) != 0 {
            return None;
        }
        Some(ConnKey {
            index: token as u32,
            generation: (token >> 32) as u32,
        })
    }

    /// The slot index, unique among live connections (for a backend's own per-connection table).
    pub fn index(self) -> usize {
        self.index as usize
    }
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// The connection table: a slab with generations so that a stale key never reaches a new
/// connection.
#[derive(Default)]
pub(crate) struct Conns {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

impl Conns {
    fn insert(&mut self, conn: Conn) -> ConnKey {
        self.live += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.generation = slot.generation.wrapping_add(1) & 0x7FFF_FFFF;
            slot.conn = Some(conn);
            return ConnKey {
                index,
                generation: slot.generation,
            };
        }
        let index = self.slots.len() as u32;
        self.slots.push(Slot {
            generation: 0,
            conn: Some(conn),
        });
        ConnKey {
            index,
            generation: 0,
        }
    }

    fn get_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.conn.as_mut()
    }

    fn remove(&mut self, key: ConnKey) -> Option<Conn> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        let conn = slot.conn.take()?;
        self.free.push(key.index);
        self.live -= 1;
        Some(conn)
    }

    pub fn len(&self) -> usize {
        self.live
    }

    /// Runs `f` on every connection.
    fn for_each(&mut self, mut f: impl FnMut(ConnKey, &mut Conn)) {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let Some(conn) = slot.conn.as_mut() {
                let key = ConnKey {
                    index: index as u32,
                    generation: slot.generation,
                };
                f(key, conn);
            }
        }
    }
}

/// Tunables the per-core code reads.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Shared by every connection of the worker.
    pub limits: Arc<protocol::Limits>,
    pub max_body_buffer: usize,
    pub max_output_buffer: usize,
    pub max_conns: usize,
    pub max_requests: usize,
    pub timeouts: Timeouts,
    /// `ping.path`, answered without calling the application.
    pub ping: Option<Arc<Ping>>,
    /// The access and slow logs, if one is on.
    pub logs: Option<Arc<OpLogs>>,
    /// The only TCP peers that may connect (`server.allowed_peers` or FCGI_WEB_SERVER_ADDRS).
    pub allowed_peers: Option<Arc<crate::config::PeerList>>,
}

/// The ping path: requests for `path` get `response` (503 while the server drains).
#[derive(Debug)]
pub(crate) struct Ping {
    pub path: String,
    pub response: bytes::Bytes,
    pub health: Arc<crate::admin::Health>,
}

/// What one connection holds (see [`Core::holdings`]).
#[cfg(any(test, feature = "bench-internals"))]
#[cfg_attr(not(feature = "bench-internals"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holdings {
    /// It still takes requests.
    pub open: bool,
    /// Bytes of its output queue, a send in flight included.
    pub output: usize,
    /// The most bytes one of its requests' bodies holds (unread by the handler, or staged).
    pub body: usize,
    /// Bytes received while it was not to be read, not parsed yet.
    pub input: usize,
}

/// The per-core shared state: the connection table and what the worker's handlers share.
pub(crate) struct Core {
    conns: RefCell<Conns>,
    /// Connections with output to send or a state change to act on.
    dirty: RefCell<Vec<ConnKey>>,
    /// The other list of [`Core::flush`], swapped with `dirty` (so that neither is reallocated
    /// each loop turn).
    flushing: RefCell<Vec<ConnKey>>,
    /// Where the params of every connection's requests are built, lent to each receive (see
    /// `fcgi_proto::Connection::swap_params_arena`).
    params_arena: Cell<Option<Box<fcgi_proto::ParamsArena>>>,
    /// Connections whose reading is paused on a full body buffer.
    paused: RefCell<Vec<ConnKey>>,
    /// Bytes received on connections that were not to be read (paused, or their output over
    /// `max_output_buffer`), kept unparsed in arrival order until they may be read again (see
    /// [`Core::replay_held`]). The IO stops reading such a connection at the next flush; what
    /// reaches the core meanwhile (io_uring receives already completed) waits here, as it would
    /// in the socket on epoll.
    held: RefCell<std::collections::HashMap<ConnKey, std::collections::VecDeque<bytes::Bytes>>>,
    /// Bodies handed on as a slice of a receive buffer and still held (see
    /// [`Core::on_bytes_owned`]).
    shared_bodies: Arc<AtomicUsize>,
    driver: RefCell<Option<Waker>>,
    /// The driver is parked waiting for work (only then do producers need to wake it).
    driver_parked: Cell<bool>,
    next_serial: Cell<u64>,
    /// Requests dispatched and not yet ended, on all connections.
    active: Cell<usize>,
    /// Sends handed to the IO and not yet completed, on all connections.
    sends: Cell<usize>,
    /// Since when the server drains ([`Core::begin_drain`]).
    draining: Cell<Option<Millis>>,
    pub settings: Settings,
    pub clock: Clock,
    wheel: RefCell<Wheel<ConnKey>>,
    pub stats: Recorder,
    /// Most requests seen in flight at once on one connection of this worker; `stat_shared`
    /// mirrors it for [`crate::ServerHandle`], written only when it grows.
    max_in_flight_seen: Cell<usize>,
    stat_shared: Arc<AtomicUsize>,
    /// This worker's side of the access and slow logs.
    log: RefCell<Option<oplog::WorkerLog>>,
    /// See [`Core::note_line`].
    pending_line: RefCell<PendingLine>,
    /// Latencies whose end is the next flush (see [`Core::flush`]).
    unclocked: RefCell<Unclocked>,
}

/// Starts of latencies that end at the next flush: the histograms read the clock once per
/// flush, not once per request.
#[derive(Debug, Default)]
struct Unclocked {
    /// Params complete, of requests whose last response bytes were queued.
    response: Vec<Instant>,
    /// Handler calls, of handlers whose response was written.
    handler: Vec<Instant>,
}

impl Unclocked {
    fn is_empty(&self) -> bool {
        self.response.is_empty() && self.handler.is_empty()
    }
}

impl Core {
    pub fn new(settings: Settings, stats: Arc<WorkerStats>, stat_shared: Arc<AtomicUsize>) -> Core {
        let clock = Clock::new();
        let log = settings
            .logs
            .clone()
            .map(|logs| oplog::WorkerLog::new(logs, stats.worker));
        Core {
            log: RefCell::new(log),
            pending_line: RefCell::new(PendingLine::default()),
            unclocked: RefCell::default(),
            wheel: RefCell::new(Wheel::new(clock.now_ms(), Timeouts::RESOLUTION)),
            clock,
            stats: Recorder::new(stats),
            conns: RefCell::new(Conns::default()),
            dirty: RefCell::new(Vec::new()),
            flushing: RefCell::new(Vec::new()),
            params_arena: Cell::new(None),
            paused: RefCell::new(Vec::new()),
            held: RefCell::default(),
            shared_bodies: Arc::default(),
            driver: RefCell::new(None),
            driver_parked: Cell::new(false),
            next_serial: Cell::new(1),
            active: Cell::new(0),
            sends: Cell::new(0),
            draining: Cell::new(None),
            settings,
            max_in_flight_seen: Cell::new(0),
            stat_shared,
        }
    }

    /// Records a connection's most requests in flight at once (its protocol state's
    /// `max_active_seen`); the shared atomic is touched only when this worker's maximum grows.
    fn note_in_flight(&self, seen: usize) {
        if seen > self.max_in_flight_seen.get() {
            self.max_in_flight_seen.set(seen);
            self.stat_shared.fetch_max(seen, Ordering::Relaxed);
        }
    }

    /// The worker clock, read once per loop turn.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn now_ms(&self) -> Millis {
        self.clock.now_ms()
    }

    /// When the worker must wake next: the first deadline in the wheel, or, with requests in
    /// flight, the next look at them for the slow log and `/status` (about once a second).
    pub fn next_deadline(&self) -> Option<Instant> {
        let due = self.wheel.borrow().next_due().map(|d| self.clock.at(d));
        [due, self.next_log_look()].into_iter().flatten().min()
    }

    /// How long from the turn's clock until [`Core::next_deadline`]: the idle wait's bound,
    /// looked at every idle turn. A wheel deadline alone (the usual case) is counted in the
    /// wheel's milliseconds, with no `Instant` arithmetic, and may end the wait up to a
    /// millisecond after its instant (the wheel expires a slot once the clock's millisecond
    /// reaches it, so a deadline is never expired early either way). Zero when due.
    pub fn until_next_deadline(&self) -> Option<std::time::Duration> {
        let now_ms = self.now_ms();
        let wheel = self.wheel.borrow().next_due();
        let wheel = wheel.map(|due| std::time::Duration::from_millis(due.saturating_sub(now_ms)));
        let logs = self.next_log_look();
        let logs = logs.map(|at| at.saturating_duration_since(self.now()));
        [wheel, logs].into_iter().flatten().min()
    }

    /// The logs' next look of their own: running requests for the slow log and `/status`
    /// (while any run), access-log lines due for their writer.
    fn next_log_look(&self) -> Option<Instant> {
        let log = self.log.borrow();
        let log = log.as_ref()?;
        let scan = if self.active.get() > 0 {
            log.next_scan()
        } else {
            None
        };
        [scan, log.next_handover()].into_iter().flatten().min()
    }

    /// Requests begun on this worker so far.
    pub fn requests_begun(&self) -> u64 {
        self.next_serial.get() - 1
    }

    fn next_serial(&self) -> u64 {
        let s = self.next_serial.get();
        self.next_serial.set(s + 1);
        s
    }

    /// Whether the driver is parked; set by the driver around its wait.
    pub fn set_driver_parked(&self, parked: bool) {
        self.driver_parked.set(parked);
    }

    /// Remembers the driver's waker (called each time the driver is about to sleep).
    pub fn set_driver_waker(&self, waker: &Waker) {
        let mut slot = self.driver.borrow_mut();
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn wake_driver(&self) {
        if self.driver_parked.replace(false)
            && let Some(w) = &*self.driver.borrow()
        {
            w.wake_by_ref();
        }
    }

    /// Lists `conn` for the next flush.
    fn mark_dirty(&self, key: ConnKey, conn: &mut Conn) {
        if conn.set_dirty() {
            self.dirty.borrow_mut().push(key);
            self.wake_driver();
        }
    }

    /// No request in flight and every response handed to the kernel (a graceful shutdown may
    /// end now).
    pub fn is_quiet(&self) -> bool {
        self.active.get() == 0 && self.sends.get() == 0 && !self.has_dirty()
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.borrow().is_empty()
    }

    /// Connections in the table.
    #[cfg(any(test, feature = "bench-internals"))]
    pub fn conn_count(&self) -> usize {
        self.conns.borrow().len()
    }

    /// What connection `key` holds, while it is in the table (for the model test and the
    /// fuzz target's checks of bounded memory).
    #[cfg(any(test, feature = "bench-internals"))]
    pub fn holdings(&self, key: ConnKey) -> Option<Holdings> {
        let input = self
            .held
            .borrow()
            .get(&key)
            .map_or(0, |chunks| chunks.iter().map(|c| c.len()).sum());
        let mut conns = self.conns.borrow_mut();
        let conn = conns.get_mut(key)?;
        let body = conn
            .requests()
            .flat_map(|e| e.bodies().map(|b| b.held_bytes()))
            .max()
            .unwrap_or(0);
        Some(Holdings {
            open: conn.is_open(),
            output: conn.backlog(),
            body,
            input,
        })
    }

    /// Cancels every request of `conn` (peer gone); the connection closes.
    fn peer_gone(&self, conn: &mut Conn) -> usize {
        let n = conn.peer_gone();
        self.active.set(self.active.get().saturating_sub(n));
        n
    }

    /// The server drains: from now on each connection closes right after its next answer
    /// ([`Conn::drain_after_answer`]), or once idle for [`deadlines::DRAIN_IDLE`]; requests
    /// already on a connection, and those whose first bytes came before, are served. Every
    /// connection is looked at now (its deadlines change).
    pub fn begin_drain(&self) {
        if self.draining.get().is_some() {
            return;
        }
        self.draining.set(Some(self.now_ms()));
        let mut conns = self.conns.borrow_mut();
        conns.for_each(|key, conn| self.mark_dirty(key, conn));
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get().is_some()
    }

    pub fn draining_since(&self) -> Option<Millis> {
        self.draining.get()
    }

    /// Requests begun and not ended, over every connection.
    pub fn requests_active(&self) -> usize {
        let mut n = 0;
        self.conns
            .borrow_mut()
            .for_each(|_, c| n += c.active_requests());
        n
    }

    /// Called when a stop's `server.shutdown_timeout` ran out before the worker drained: counts
    /// and logs the requests still running, which end with the worker (their connections
    /// closed, no answer).
    pub fn abandon_at_shutdown(&self, timeout: std::time::Duration) {
        let n = self.requests_active();
        if n == 0 {
            return;
        }
        self.stats
            .add(crate::stats::Counter::ShutdownAbandoned, n as u64);
        tracing::warn!(
            "server.shutdown_timeout ({timeout:?}) ran out with {n} request(s) still running on \
             this worker: abandoned, their connections closed without an answer"
        );
    }

    /// Draining, and every connection closed: a worker may end.
    pub fn is_drained(&self) -> bool {
        self.is_quiet() && self.conns.borrow().len() == 0
    }

    /// Acts on every connection that changed: hands output to `io`, arms or cancels receives,
    /// shuts down, closes (dropping the connection), and schedules the next deadline.
    pub fn flush(&self, io: &mut impl Io) {
        // Before the sends: a peer that has its answer finds its request counted and logged.
        self.observe_ended();
        let mut keys = std::mem::take(&mut *self.flushing.borrow_mut());
        std::mem::swap(&mut keys, &mut *self.dirty.borrow_mut());
        let mut conns = self.conns.borrow_mut();
        let now = self.now_ms();
        let max_output = self.settings.max_output_buffer;
        // Walked and then cleared rather than drained: a `Drain`'s drop costs more than the
        // one or two keys of a turn.
        for &key in &keys {
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if self.is_draining() {
                conn.drain_after_answer();
            }
            let done = conn.step(key, max_output, now, io);
            if done.sent {
                self.stats.shared.metrics.sent(done.sent_bytes);
            }
            if done.in_flight {
                self.sends.set(self.sends.get() + 1);
            }
            if done.output_full {
                self.stats.hit(
                    crate::stats::Counter::OutputFull,
                    self.now(),
                    format_args!("connection not read: its output queue is full"),
                );
            }
            if done.closed {
                self.stats.shared.metrics.closed(conn.close_reason());
                if conn.is_holding() {
                    self.held.borrow_mut().remove(&key);
                }
                conns.remove(key);
            } else {
                deadlines::schedule(self, key, conn);
                // Its held bytes are fed at the next turn's start (`replay_held`): the worker
                // must not wait for IO before.
                if done.replay {
                    self.mark_dirty(key, conn);
                }
            }
        }
        keys.clear();
        *self.flushing.borrow_mut() = keys;
        self.stats
            .shared
            .metrics
            .set_gauges(self.active.get(), conns.len());
        if let Some(log) = self.log.borrow_mut().as_mut() {
            let now = self.now();
            log.flush(now);
            if log.scan_due(now) {
                let mut oldest: Option<InFlight> = None;
                conns.for_each(|key, conn| {
                    for e in conn.requests_mut() {
                        log.check_running(e, key.token(), now);
                    }
                    let mut conn_oldest = None;
                    for e in conn.requests() {
                        conn_oldest = oplog::WorkerLog::older(conn_oldest, e);
                    }
                    if let Some(e) = conn_oldest
                        && let Some((method, uri)) = e.request_line()
                        && oldest.as_ref().is_none_or(|o| e.params_done < o.since)
                    {
                        oldest = Some(InFlight {
                            since: e.params_done,
                            method: method.to_string(),
                            uri: uri.to_string(),
                        });
                    }
                });
                if log.logs.status
                    && let Ok(mut slot) = self.stats.shared.oldest_in_flight.lock()
                {
                    *slot = oldest;
                }
            }
        }
    }

    /// Whether dispatch should record a [`oplog::ReqInfo`] for the logs.
    pub fn wants_info(&self) -> bool {
        self.settings.logs.as_ref().is_some_and(|l| l.wants_info())
    }

    /// Keeps the method and URI of the request whose handler is being called, for the status
    /// page, until [`Core::set_task`] stores them with a request that did not finish on its
    /// first poll (or [`Core::clear_line`] drops them): no allocation and no lookup for a
    /// request answered at once.
    pub fn note_line(&self, request: &http::Request<crate::body::RequestBody>) {
        let tracks = self
            .settings
            .logs
            .as_ref()
            .is_some_and(|l| l.status && !l.wants_info());
        if tracks {
            self.pending_line.borrow_mut().note(request);
        }
    }

    /// When a handler is called, for the handler histogram: the loop turn's clock (no clock
    /// read per request).
    pub fn handler_start(&self) -> Instant {
        self.now()
    }

    /// A handler called at `called` wrote its whole response: observed at the next flush.
    pub fn handler_ended(&self, called: Instant) {
        self.unclocked.borrow_mut().handler.push(called);
    }

    /// A request whose params were complete at `params_done` queued its last response bytes:
    /// observed at the next flush.
    fn response_ended(&self, params_done: Instant) {
        self.unclocked.borrow_mut().response.push(params_done);
    }

    /// Whether a flush has work with no connection changed: latencies not yet observed, or the
    /// logs' turn (ended requests to log, lines due for their writer, running requests due
    /// for a look for the slow log and `/status`), as of the turn's clock.
    pub fn housekeeping_due(&self) -> bool {
        !self.unclocked.borrow().is_empty()
            || self
                .log
                .borrow()
                .as_ref()
                .is_some_and(|l| l.due(self.now()))
    }

    /// Observes the latencies that end now, as their responses are about to be handed to the
    /// backend, and logs the requests that ended: one clock read for all of them.
    fn observe_ended(&self) {
        let mut unclocked = self.unclocked.borrow_mut();
        let mut log = self.log.borrow_mut();
        let logged = log.as_ref().is_some_and(|l| l.has_ended());
        if unclocked.is_empty() && !logged {
            return;
        }
        let now = Instant::now();
        if let Some(log) = log.as_mut() {
            for _ in 0..log.write_ended(now) {
                oplog::count_drop(&self.stats);
            }
        }
        let metrics = &self.stats.shared.metrics;
        let Unclocked { response, handler } = &mut *unclocked;
        // A request answered on its handler's first poll started both latencies in the same
        // loop turn, at the same clock reading: one duration and bucket serve both.
        if response == handler {
            Histogram::observe_since_in_both(&metrics.response, &metrics.handler, now, response);
        } else {
            metrics.response.observe_since(now, response);
            metrics.handler.observe_since(now, handler);
        }
        response.clear();
        handler.clear();
    }

    /// Drops the line kept by [`Core::note_line`] (its request finished on its first poll).
    pub fn clear_line(&self) {
        self.pending_line.borrow_mut().clear();
    }

    /// Records what the logs and `/status` say about a request being dispatched.
    pub fn set_info(
        &self,
        rk: ReqKey,
        request: &http::Request<crate::body::RequestBody>,
        now: Instant,
    ) {
        // The worker has its log side whenever a log or `/status` is on.
        let mut log = self.log.borrow_mut();
        let Some(log) = log.as_mut() else {
            return;
        };
        let mut conns = self.conns.borrow_mut();
        if let Some(e) = conns.get_mut(rk.conn).and_then(|c| c.live_request(rk)) {
            e.info = Some(log.info(request, now));
        }
    }
}
