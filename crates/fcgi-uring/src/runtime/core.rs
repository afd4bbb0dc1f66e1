//! Per-core state shared by the driver and the handler tasks of one worker: the connection
//! table, the in-flight request table of each connection, and the output side of responses.
//!
//! Single-threaded by construction (`Rc`, `RefCell`): nothing here is shared between cores. No
//! borrow is held across an `.await` or while user code runs.

use crate::body::{BodyError, Channel, Flow, RequestBody};
use bytes::{Buf, Bytes};
use fcgi_proto::{self as protocol, record};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use tokio::task::AbortHandle;

use super::config::Timeouts;
use super::stats::{Counter, Recorder, WorkerStats};
use super::wheel::{Clock, Millis, Wheel};
use crate::uring::{OpId, SendBuf};
use std::time::Instant;

/// Token of the listener's accept operation (connection tokens never have bit 63 set).
pub(crate) const LISTENER_TOKEN: u64 = 1 << 63;

/// A connection slot and the generation that was current when it was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    index: u32,
    generation: u32,
}

impl ConnKey {
    pub fn token(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    pub fn from_token(token: u64) -> Option<ConnKey> {
        if token & LISTENER_TOKEN != 0 {
            return None;
        }
        Some(ConnKey {
            index: token as u32,
            generation: (token >> 32) as u32,
        })
    }
}

/// One request of one connection, unique for the life of the worker (ids are reused by
/// proxies; the serial is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReqKey {
    pub conn: ConnKey,
    pub id: u16,
    pub serial: u64,
}

/// Where STDIN bytes of a request go.
#[derive(Debug)]
pub(crate) enum BodyIn {
    /// Not dispatched yet: bytes collected during this receive batch.
    Staged { chunks: Vec<Bytes>, ended: bool },
    /// Dispatched with a streaming body.
    Stream(Arc<Channel>),
    /// Dispatched with a complete body, or the handler no longer wants bytes.
    Done,
}

impl BodyIn {
    /// A stream that has not been dispatched yet; `ended` when it will carry nothing.
    pub fn staged(ended: bool) -> BodyIn {
        BodyIn::Staged {
            chunks: Vec::new(),
            ended,
        }
    }

    /// Adds received bytes; `Flow::Pause` when the handler's unread buffer is over its limit.
    pub fn push(&mut self, data: &[u8]) -> Flow {
        match self {
            BodyIn::Staged { chunks, .. } => {
                chunks.push(Bytes::copy_from_slice(data));
                Flow::Continue
            }
            BodyIn::Stream(ch) => ch.push(Bytes::copy_from_slice(data)),
            BodyIn::Done => Flow::Continue,
        }
    }

    /// The stream's empty record arrived.
    pub fn end(&mut self) {
        match self {
            BodyIn::Staged { ended, .. } => *ended = true,
            BodyIn::Stream(ch) => ch.end(),
            BodyIn::Done => {}
        }
    }

    /// The stream cannot complete.
    pub fn fail(&self, why: BodyError) {
        if let BodyIn::Stream(ch) = self {
            ch.fail(why);
        }
    }

    /// True unless a handler's buffer is over its limit (then `driver` is woken when it
    /// drains).
    pub fn wants_more(&self, driver: &Waker) -> bool {
        match self {
            BodyIn::Stream(ch) => ch.wants_more(driver),
            _ => true,
        }
    }

    /// Hands the stream to the handler: complete bytes if it already ended, else a channel
    /// that later bytes go to.
    pub fn dispatch(&mut self, limit: usize) -> RequestBody {
        let BodyIn::Staged { chunks, ended } = std::mem::replace(self, BodyIn::Done) else {
            return RequestBody::empty();
        };
        if ended {
            return RequestBody::full(concat(chunks));
        }
        let channel = Arc::new(Channel::new(limit));
        for chunk in chunks {
            channel.push(chunk);
        }
        *self = BodyIn::Stream(channel.clone());
        RequestBody::streaming(channel)
    }
}

fn concat(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in &chunks {
                all.extend_from_slice(c);
            }
            Bytes::from(all)
        }
    }
}

/// An in-flight request.
#[derive(Debug)]
pub(crate) struct ReqEntry {
    pub id: u16,
    pub serial: u64,
    /// When it was dispatched (worker clock).
    pub started: Millis,
    /// STDIN.
    pub body: BodyIn,
    /// DATA (FILTER role only; otherwise discarded).
    pub data: BodyIn,
    /// The spawned task driving the handler, if it did not finish on its first poll.
    pub task: Option<AbortHandle>,
    /// Response bytes (the CGI head) have been written.
    pub head_sent: bool,
    /// A HEAD request: the CGI head is sent, body bytes are dropped (RFC 3875 4.3.3: the
    /// script must not send a body for HEAD; HAProxy answers 502 when one comes).
    pub head_only: bool,
}

/// Lifecycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    Open,
    /// KEEP_CONN=0 request ended: flush, shut down the write side, read until EOF, close.
    Draining {
        shutdown_sent: bool,
    },
    /// Protocol error: flush what is queued, then close.
    Closing,
    /// Peer gone or closing: cancel operations, drop the socket when none remain.
    Closed,
}

/// Receive operation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recv {
    /// Not armed.
    Idle,
    Armed(OpId),
    /// Cancel requested, final completion pending.
    Cancelling,
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Shared with the ring's operations on it: the socket closes when the connection and
    /// every operation in flight on it are gone.
    pub fd: Rc<OwnedFd>,
    pub proto: protocol::Connection,
    /// Output not yet handed to a send.
    pub out: Vec<u8>,
    /// An emptied buffer kept for reuse.
    pub spare: Vec<u8>,
    /// Bytes of the buffer in flight, and a partially sent buffer waiting to be resent.
    pub sending: usize,
    /// Offset into the in-flight buffer where that send started.
    pub send_offset: usize,
    pub resend: Option<(SendBuf, usize)>,
    pub recv: Recv,
    pub state: ConnState,
    pub requests: ReqTable,
    /// Streaming handlers waiting for output room.
    pub writers: Vec<Waker>,
    /// Reading stopped because a request body buffer is full.
    pub paused: bool,
    /// Listed in the dirty list.
    pub dirty: bool,
    /// Worker-clock times for the deadlines (see `timeouts`): last bytes received, last
    /// received bytes or ended request, start of the current send, our FIN.
    pub last_recv: Millis,
    pub last_activity: Millis,
    pub send_since: Millis,
    pub shutdown_at: Millis,
    /// Since when a request has been reading its params (oldest pending, approximately).
    pub params_since: Option<Millis>,
    /// The tick of this connection's live entry in the timer wheel.
    pub timer: Option<u64>,
}

impl Conn {
    pub fn new(fd: OwnedFd, limits: protocol::Limits, now: Millis) -> Conn {
        Conn {
            fd: Rc::new(fd),
            proto: protocol::Connection::new(limits),
            out: Vec::new(),
            spare: Vec::new(),
            sending: 0,
            send_offset: 0,
            resend: None,
            recv: Recv::Idle,
            state: ConnState::Open,
            requests: ReqTable::default(),
            writers: Vec::new(),
            paused: false,
            dirty: false,
            last_recv: now,
            last_activity: now,
            send_since: now,
            shutdown_at: now,
            params_since: None,
            timer: None,
        }
    }

    /// The entry of `rk` while this connection is open and its id still names that request
    /// (same serial: not a later request that reused the id).
    fn live_request(&mut self, rk: ReqKey) -> Option<&mut ReqEntry> {
        if self.state == ConnState::Closed {
            return None;
        }
        self.requests
            .get_mut(&rk.id)
            .filter(|e| e.serial == rk.serial)
    }

    /// Queued output plus output in flight.
    pub fn backlog(&self) -> usize {
        self.out.len() + self.sending + self.resend.as_ref().map_or(0, |(b, o)| b.len() - o)
    }

    /// Ends every request: handlers cancelled, bodies failed. Used when the peer is gone.
    /// Returns how many requests were in flight.
    fn abort_all(&mut self, why: BodyError) -> usize {
        let n = self.requests.len();
        for (_, entry) in self.requests.drain() {
            if let Some(task) = entry.task {
                task.abort();
            }
            entry.body.fail(why);
            entry.data.fail(why);
        }
        for w in self.writers.drain(..) {
            w.wake();
        }
        n
    }
}

/// Hashes a request id: ids are small integers chosen by the proxy, and the table is bounded by
/// `max_requests_per_conn`, so a multiplicative hash is enough (no SipHash per lookup).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u16(&mut self, id: u16) {
        self.0 = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The in-flight requests of one connection by request id. The first request is stored inline,
/// so a connection that carries one request at a time (nginx, Apache, Caddy, lighttpd) never
/// allocates for its table; multiplexed requests spill into a hash map, shrunk again once a
/// large burst is over.
#[derive(Debug, Default)]
pub(crate) struct ReqTable {
    one: Option<(u16, ReqEntry)>,
    more: HashMap<u16, ReqEntry, BuildHasherDefault<IdHasher>>,
}

/// A spill map that empties is shrunk to room for this many entries: a connection that keeps
/// about as many requests in flight reuses its table, a large burst's table is given back.
const SPILL_KEEP: usize = 16;

impl ReqTable {
    pub fn get_mut(&mut self, id: &u16) -> Option<&mut ReqEntry> {
        match &mut self.one {
            Some((k, e)) if k == id => Some(e),
            _ => self.more.get_mut(id),
        }
    }

    pub fn insert(&mut self, id: u16, entry: ReqEntry) {
        match &mut self.one {
            Some((k, e)) if *k == id => *e = entry,
            None if !self.more.contains_key(&id) => self.one = Some((id, entry)),
            _ => {
                self.more.insert(id, entry);
            }
        }
    }

    pub fn remove(&mut self, id: &u16) -> Option<ReqEntry> {
        if matches!(&self.one, Some((k, _)) if k == id) {
            return self.one.take().map(|(_, e)| e);
        }
        let removed = self.more.remove(id);
        if self.more.is_empty() {
            // A no-op unless the table is larger than needed for SPILL_KEEP entries.
            self.more.shrink_to(SPILL_KEEP);
        }
        removed
    }

    pub fn len(&self) -> usize {
        usize::from(self.one.is_some()) + self.more.len()
    }

    pub fn values(&self) -> impl Iterator<Item = &ReqEntry> {
        self.one.iter().map(|(_, e)| e).chain(self.more.values())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut ReqEntry> {
        self.one
            .iter_mut()
            .map(|(_, e)| e)
            .chain(self.more.values_mut())
    }

    pub fn drain(&mut self) -> impl Iterator<Item = (u16, ReqEntry)> + '_ {
        self.one.take().into_iter().chain(self.more.drain())
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
    pub fn insert(&mut self, conn: Conn) -> ConnKey {
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

    pub fn get_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.conn.as_mut()
    }

    pub fn remove(&mut self, key: ConnKey) -> Option<Conn> {
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
}

/// Tunables the per-core code reads.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub limits: protocol::Limits,
    pub max_body_buffer: usize,
    pub max_output_buffer: usize,
    pub max_conns: usize,
    pub max_requests: usize,
    pub timeouts: Timeouts,
}

/// The per-core shared state.
pub(crate) struct Core {
    pub conns: RefCell<Conns>,
    /// Connections with output to send or a state change to act on.
    pub dirty: RefCell<Vec<ConnKey>>,
    /// Connections whose reading is paused on a full body buffer.
    pub paused: RefCell<Vec<ConnKey>>,
    driver: RefCell<Option<Waker>>,
    /// The driver is parked waiting for work (only then do producers need to wake it).
    driver_parked: Cell<bool>,
    next_serial: Cell<u64>,
    /// Requests dispatched and not yet ended, on all connections.
    pub active: Cell<usize>,
    /// Sends submitted and not yet completed, on all connections.
    pub sends: Cell<usize>,
    pub settings: Settings,
    pub clock: Clock,
    pub wheel: RefCell<Wheel<ConnKey>>,
    pub stats: Recorder,
    /// Most requests seen in flight at once on one connection of this worker; `stat_shared`
    /// mirrors it for [`crate::ServerHandle`], written only when it grows.
    max_in_flight_seen: Cell<usize>,
    stat_shared: Arc<AtomicUsize>,
}

impl Core {
    pub fn new(settings: Settings, stats: Arc<WorkerStats>, stat_shared: Arc<AtomicUsize>) -> Core {
        let clock = Clock::new();
        Core {
            wheel: RefCell::new(Wheel::new(clock.now_ms(), Timeouts::RESOLUTION)),
            clock,
            stats: Recorder::new(stats),
            conns: RefCell::new(Conns::default()),
            dirty: RefCell::new(Vec::new()),
            paused: RefCell::new(Vec::new()),
            driver: RefCell::new(None),
            driver_parked: Cell::new(false),
            next_serial: Cell::new(1),
            active: Cell::new(0),
            sends: Cell::new(0),
            settings,
            max_in_flight_seen: Cell::new(0),
            stat_shared,
        }
    }

    /// Records a connection's most requests in flight at once (its protocol state's
    /// `max_active_seen`); the shared atomic is touched only when this worker's maximum grows.
    pub fn note_in_flight(&self, seen: usize) {
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

    pub fn instant_at(&self, ms: Millis) -> Instant {
        self.clock.at(ms)
    }

    /// Closes `conn` now, whatever is in flight: requests cancelled, queued output dropped,
    /// both directions shut down so that a send stuck on a peer that stopped reading
    /// completes (with an error) and the socket can be released.
    pub fn force_close(&self, conn: &mut Conn) {
        self.abort_all(conn, BodyError::ConnectionClosed);
        conn.out.clear();
        conn.state = ConnState::Closed;
        let _ = socket2::SockRef::from(&conn.fd).shutdown(std::net::Shutdown::Both);
    }

    pub fn next_serial(&self) -> u64 {
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

    pub fn driver_waker(&self) -> Option<Waker> {
        self.driver.borrow().clone()
    }

    fn wake_driver(&self) {
        if self.driver_parked.replace(false)
            && let Some(w) = &*self.driver.borrow()
        {
            w.wake_by_ref();
        }
    }

    /// Lists `conn` for the driver's next flush.
    pub fn mark_dirty(&self, key: ConnKey, conn: &mut Conn) {
        if !conn.dirty {
            conn.dirty = true;
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

    /// Cancels every request of `conn` (peer gone or protocol error).
    pub fn abort_all(&self, conn: &mut Conn, why: BodyError) -> usize {
        let n = conn.abort_all(why);
        self.active.set(self.active.get().saturating_sub(n));
        n
    }

    /// Runs `f` on the request if it is still in flight.
    fn with_request<R>(&self, rk: ReqKey, f: impl FnOnce(&mut Conn, &Core) -> R) -> Option<R> {
        let mut conns = self.conns.borrow_mut();
        let conn = conns.get_mut(rk.conn)?;
        conn.live_request(rk)?;
        Some(f(conn, self))
    }

    /// Runs `f` on the entry of `rk` if the request is still live (see `with_request`).
    fn with_entry<R>(&self, rk: ReqKey, f: impl FnOnce(&mut ReqEntry) -> R) -> Option<R> {
        let mut conns = self.conns.borrow_mut();
        conns.get_mut(rk.conn)?.live_request(rk).map(f)
    }

    /// Writes `head` (if any) followed by `data` as STDOUT, then, if `last`, ends the request
    /// as [`Core::finish`] with app status 0 does. Returns false when the request is gone
    /// (aborted, connection closed): the caller stops producing.
    pub fn write_stdout(
        &self,
        rk: ReqKey,
        head: Option<Head<'_>>,
        data: &mut impl Buf,
        last: bool,
    ) -> bool {
        let mut conns = self.conns.borrow_mut();
        let Some(conn) = conns.get_mut(rk.conn) else {
            return false;
        };
        // One lookup for the liveness check and both flags.
        let Some(entry) = conn.live_request(rk) else {
            return false;
        };
        if entry.head_only {
            data.advance(data.remaining());
        }
        if let Some(head) = head {
            entry.head_sent = true;
            let first = data.chunk();
            encode_stdout2(&mut conn.out, rk.id, head, first);
            let n = first.len();
            data.advance(n);
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            record::encode_stream(&mut conn.out, record::RecordType::Stdout, rk.id, chunk);
            let n = chunk.len();
            data.advance(n);
        }
        if last {
            self.end_stdout(rk, conn, 0);
        } else {
            self.mark_dirty(rk.conn, conn);
        }
        true
    }

    /// Marks a HEAD request: its response body is not sent (RFC 3875 4.3.3).
    pub fn set_head_only(&self, rk: ReqKey) {
        self.with_entry(rk, |e| e.head_only = true);
    }

    /// Ends the request: STDOUT end, END_REQUEST with `app_status`, entry removed.
    pub fn finish(&self, rk: ReqKey, app_status: u32) {
        self.with_request(rk, |conn, core| core.end_stdout(rk, conn, app_status));
    }

    /// STDOUT end, then END_REQUEST with `app_status` (see [`Core::end_request`]).
    fn end_stdout(&self, rk: ReqKey, conn: &mut Conn, app_status: u32) {
        record::encode_stream_end(&mut conn.out, record::RecordType::Stdout, rk.id);
        self.end_request(rk.conn, conn, rk.id, app_status);
    }

    /// Ends the request after a handler error or panic: a 500 if nothing was sent yet, else
    /// the response is cut short.
    pub fn fail(&self, rk: ReqKey) {
        self.stats.count(Counter::HandlerFailed);
        self.cut_or(rk, http::StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// Ends a request whose handler was cancelled at its deadline: a 504 if nothing was sent
    /// yet, else the response is cut short.
    pub fn time_out(&self, rk: ReqKey) {
        self.cut_or(rk, http::StatusCode::GATEWAY_TIMEOUT);
    }

    fn cut_or(&self, rk: ReqKey, status: http::StatusCode) {
        let head_sent = self.with_entry(rk, |e| e.head_sent).unwrap_or(true);
        if !head_sent {
            self.write_status(rk, status);
            return;
        }
        self.finish(rk, 1);
    }

    /// Answers with a bare status and its reason as the body, then ends the request.
    pub fn write_status(&self, rk: ReqKey, status: http::StatusCode) {
        let reason = status.canonical_reason().unwrap_or("Error");
        let head = Head::Status(status, reason.len() as u64);
        self.write_stdout(rk, Some(head), &mut reason.as_bytes(), true);
    }

    /// END_REQUEST for `id` (after its STDOUT end was written), entry removed, connection
    /// state updated for KEEP_CONN=0.
    pub fn end_request(&self, key: ConnKey, conn: &mut Conn, id: u16, app_status: u32) {
        if let Some(entry) = conn.requests.remove(&id) {
            entry.body.fail(BodyError::Aborted);
            entry.data.fail(BodyError::Aborted);
        }
        if conn.proto.end_request(id, app_status, &mut conn.out) {
            self.active.set(self.active.get().saturating_sub(1));
        }
        conn.last_activity = self.now_ms();
        if conn.proto.should_close() && conn.state == ConnState::Open {
            conn.state = ConnState::Draining {
                shutdown_sent: false,
            };
        }
        self.mark_dirty(key, conn);
    }

    /// Ready when the connection has room for more response bytes (or the request is gone).
    pub fn poll_writable(&self, rk: ReqKey, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.settings.max_output_buffer;
        let room = self.with_request(rk, |conn, _| {
            if conn.backlog() < limit {
                true
            } else {
                conn.writers.push(cx.waker().clone());
                false
            }
        });
        match room {
            Some(false) => Poll::Pending,
            _ => Poll::Ready(()),
        }
    }
}

/// The CGI response head that starts a request's STDOUT, encoded straight into the
/// connection's output.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Head<'a> {
    /// A handler's response head and its body length, when known (see [`crate::cgi::encode_head`]).
    Response(&'a http::response::Parts, Option<u64>),
    /// A bare status answered by the runtime, with a text/plain body of this many bytes.
    Status(http::StatusCode, u64),
}

impl Head<'_> {
    fn encode(self, out: &mut Vec<u8>) {
        match self {
            Head::Response(parts, body_len) => crate::cgi::encode_head(parts, body_len, out),
            Head::Status(status, body_len) => crate::cgi::encode_status_only(status, body_len, out),
        }
    }
}

/// Encodes `head ++ body` as STDOUT records of at most 65535 bytes; the head is encoded in
/// place, behind a record header written once its length is known.
fn encode_stdout2(out: &mut Vec<u8>, id: u16, head: Head<'_>, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; record::HEADER_LEN]);
    head.encode(out);
    let content_at = start + record::HEADER_LEN;
    let total = out.len() - content_at + body.len();
    match u16::try_from(total) {
        Ok(len) if total <= record::MAX_CONTENT_LEN => {
            let header = record::Header::new(record::RecordType::Stdout, id, len).encode();
            if let Some(slot) = out.get_mut(start..content_at) {
                slot.copy_from_slice(&header);
            }
            out.extend_from_slice(body);
        }
        _ => {
            // A head and first chunk too large for one record (rare): one stream each.
            let head = out.split_off(content_at);
            out.truncate(start);
            record::encode_stream(out, record::RecordType::Stdout, id, &head);
            record::encode_stream(out, record::RecordType::Stdout, id, body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: u64) -> ReqEntry {
        ReqEntry {
            id: serial as u16,
            serial,
            started: 0,
            body: BodyIn::Done,
            data: BodyIn::Done,
            task: None,
            head_sent: false,
            head_only: false,
        }
    }

    #[test]
    fn request_table_keeps_one_inline_and_spills_the_rest() {
        let mut t = ReqTable::default();
        t.insert(1, entry(10));
        assert!(t.more.capacity() == 0, "one request allocates nothing");
        t.insert(3, entry(30));
        t.insert(5, entry(50));
        assert_eq!(t.len(), 3);
        assert_eq!(t.get_mut(&3).map(|e| e.serial), Some(30));
        assert_eq!(t.remove(&1).map(|e| e.serial), Some(10));
        // The inline slot is free again; a new id goes there unless the map holds it.
        t.insert(7, entry(70));
        assert_eq!(t.get_mut(&7).map(|e| e.serial), Some(70));
        assert_eq!(t.values().count(), 3);
        let mut drained: Vec<u16> = t.drain().map(|(id, _)| id).collect();
        drained.sort();
        assert_eq!(drained, [3, 5, 7]);
        assert_eq!(t.len(), 0);
        for id in 0..100 {
            t.insert(id, entry(id as u64));
        }
        for id in 0..100 {
            assert_eq!(t.remove(&id).map(|e| e.serial), Some(id as u64));
        }
        assert!(
            (SPILL_KEEP..2 * SPILL_KEEP).contains(&t.more.capacity()),
            "a big spill map is shrunk when it empties"
        );
    }

    #[test]
    fn tokens_round_trip_and_never_collide_with_listener() {
        let k = ConnKey {
            index: 7,
            generation: 0x7FFF_FFFF,
        };
        assert_eq!(ConnKey::from_token(k.token()), Some(k));
        assert_eq!(ConnKey::from_token(LISTENER_TOKEN), None);
    }

    #[test]
    fn stdout_head_and_body_share_one_record() {
        let mut out = b"queued".to_vec();
        let (parts, ()) = http::Response::new(()).into_parts();
        encode_stdout2(&mut out, 1, Head::Response(&parts, None), b"hi");
        assert_eq!(&out[..6], b"queued");
        assert_eq!(&out[6..14], &[1, 6, 0, 1, 0, 20, 0, 0]);
        assert_eq!(&out[14..], b"Status: 200 OK\r\n\r\nhi");
    }

    #[test]
    fn a_head_and_chunk_too_large_for_one_record_are_split() {
        let mut out = b"queued".to_vec();
        let body = vec![b'x'; record::MAX_CONTENT_LEN];
        let head = Head::Status(http::StatusCode::OK, body.len() as u64);
        encode_stdout2(&mut out, 1, head, &body);
        let mut expected = b"queued".to_vec();
        let mut head_bytes = Vec::new();
        head.encode(&mut head_bytes);
        record::encode_stream(&mut expected, record::RecordType::Stdout, 1, &head_bytes);
        record::encode_stream(&mut expected, record::RecordType::Stdout, 1, &body);
        assert_eq!(out, expected);
    }
}
