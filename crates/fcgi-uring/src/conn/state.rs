//! One connection's state: what it reads, what it writes, and where it is in its life, each a
//! small enum changed only by the methods below.
//!
//! Invariants kept here:
//! - at most one send is handed to the IO at a time ([`Writing`]), and the bytes it has not
//!   confirmed count in [`Conn::backlog`] until it does;
//! - a receive is armed at most once ([`Reading`]) and cancelled before the connection closes;
//! - once [`Lifecycle::Closed`], nothing is sent, no request of it is live, and its queued
//!   output is gone; a closed connection never opens again.

use super::ConnKey;
use super::io::{Io, OutBuf, OutQueue, Sending};
use super::requests::{ReqEntry, ReqKey, ReqTable};
use crate::body::BodyError;
use crate::stats::metrics::CloseReason;
use crate::wheel::Millis;
use fcgi_proto::{self as protocol, Event, ProtocolError, ProtocolStatus};
use std::task::Waker;

/// The receive side, as the IO holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// No receive armed.
    Idle,
    /// A receive is armed and delivers bytes as they come.
    Armed,
    /// Cancel asked; the receive's final completion is pending.
    Cancelling,
}

/// The send side: at most one send in the IO's hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writing {
    /// Nothing handed to the IO.
    Idle,
    /// A send of `len` bytes started at `since`, not yet confirmed.
    InFlight { len: usize, since: Millis },
    /// A send that went out short: the IO holds the `left` bytes it must send again.
    Partial { left: usize, since: Millis },
}

/// Lifecycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Open,
    /// A KEEP_CONN=0 request ended: flush, shut down the write side (at `shutdown_at`), read
    /// until EOF, close.
    Draining {
        shutdown_at: Option<Millis>,
    },
    /// Protocol error: flush what is queued, then close.
    Closing,
    /// Peer gone or given up on: cancel the receive, close. `abort`: shut both directions down
    /// first, so that a send stuck on a peer that stopped reading ends.
    Closed {
        abort: bool,
    },
}

/// What one [`Conn::step`] did, for the caller's accounting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stepped {
    /// A send was handed to the IO.
    pub sent: bool,
    /// That send is under way (its result will be reported): not [`Sending::Done`].
    pub in_flight: bool,
    /// Reading stopped (or stays stopped) because the output backlog is over its limit while
    /// a receive was armed.
    pub output_full: bool,
    /// The connection is closed and may be dropped.
    pub closed: bool,
    /// It holds received bytes ([`Conn::is_holding`]) and may now be read: they are to be fed.
    pub replay: bool,
    /// Bytes handed to the IO by this step (not counting a resend of a short send's rest).
    pub sent_bytes: usize,
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    proto: protocol::Connection,
    requests: ReqTable,
    out: OutQueue,
    /// Streaming handlers waiting for output room.
    writers: Vec<Waker>,
    reading: Reading,
    writing: Writing,
    lifecycle: Lifecycle,
    /// Reading stopped because a request body buffer is full.
    paused: bool,
    /// Received bytes wait unparsed in the core (see `Core::replay_held`): not read further
    /// until they are fed.
    holding: bool,
    /// Listed in the core's dirty list.
    dirty: bool,
    /// Worker-clock times for the deadlines: last bytes received, last received bytes or ended
    /// request.
    last_recv: Millis,
    last_activity: Millis,
    /// The tick of this connection's live entry in the timer wheel.
    timer: Option<u64>,
    /// Why it closed (meaningful once closed or closing).
    close_reason: CloseReason,
    /// Cork before the next send (set when a drain closes the connection after its answer).
    cork: bool,
}

impl Conn {
    pub fn new(limits: std::sync::Arc<protocol::Limits>, now: Millis) -> Conn {
        Conn {
            proto: protocol::Connection::new(limits),
            requests: ReqTable::default(),
            out: OutQueue::default(),
            writers: Vec::new(),
            reading: Reading::Idle,
            writing: Writing::Idle,
            lifecycle: Lifecycle::Open,
            paused: false,
            holding: false,
            dirty: false,
            last_recv: now,
            last_activity: now,
            cork: false,
            timer: None,
            close_reason: CloseReason::Peer,
        }
    }

    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    #[cfg(any(test, feature = "bench-internals"))]
    pub fn reading(&self) -> Reading {
        self.reading
    }

    #[cfg(test)]
    pub fn writing(&self) -> Writing {
        self.writing
    }

    /// Why the connection closed (or is closing).
    pub fn close_reason(&self) -> CloseReason {
        self.close_reason
    }

    pub fn is_open(&self) -> bool {
        self.lifecycle == Lifecycle::Open
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Closed { .. })
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether bytes received now are to be parsed: not paused on a full body, no bytes held
    /// before them, and the output backlog within `max_output` (otherwise they are held, so
    /// that neither the answers nor the bodies grow past their limits by what the IO still
    /// delivers after it was told to stop reading).
    pub fn reads_input(&self, max_output: usize) -> bool {
        !self.paused && !self.holding && self.backlog() <= max_output
    }

    pub fn is_holding(&self) -> bool {
        self.holding
    }

    pub fn set_holding(&mut self, holding: bool) {
        self.holding = holding;
    }

    /// Lists the connection as dirty; false when it already was.
    pub fn set_dirty(&mut self) -> bool {
        !std::mem::replace(&mut self.dirty, true)
    }

    /// Nothing for [`Conn::step`] to do: open, its receive armed and not to be stopped,
    /// nothing queued or in flight, not listed for the flush already.
    pub fn is_settled(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Open)
            && self.reading == Reading::Armed
            && self.writing == Writing::Idle
            && self.out.is_empty()
            && !self.paused
            && !self.holding
            && !self.cork
            && !self.dirty
    }

    /// Queued output plus output the IO has not confirmed.
    pub fn backlog(&self) -> usize {
        self.out.len()
            + match self.writing {
                Writing::Idle => 0,
                Writing::InFlight { len, .. } => len,
                Writing::Partial { left, .. } => left,
            }
    }

    /// When the send the IO holds started (`None`: no send in flight).
    pub fn send_since(&self) -> Option<Millis> {
        match self.writing {
            Writing::Idle => None,
            Writing::InFlight { since, .. } | Writing::Partial { since, .. } => Some(since),
        }
    }

    pub fn active_requests(&self) -> usize {
        self.proto.active_requests()
    }

    pub fn max_active_seen(&self) -> usize {
        self.proto.max_active_seen()
    }

    pub fn last_recv(&self) -> Millis {
        self.last_recv
    }

    pub fn last_activity(&self) -> Millis {
        self.last_activity
    }

    /// When the receive came that began the oldest request still reading its params (its
    /// params deadline runs from there, however many others complete meanwhile).
    pub fn params_since(&self) -> Option<Millis> {
        // Most connections have every request dispatched: no walk over the protocol's table.
        if self.proto.active_requests() > self.requests.len() {
            self.proto.oldest_reading_params()
        } else {
            None
        }
    }

    pub fn timer(&self) -> Option<u64> {
        self.timer
    }

    pub fn set_timer(&mut self, tick: Option<u64>) {
        self.timer = tick;
    }

    /// Whether a dispatched request is in flight (one of [`Conn::requests`]).
    pub fn has_requests(&self) -> bool {
        !self.requests.is_empty()
    }

    pub fn requests(&self) -> impl Iterator<Item = &ReqEntry> {
        self.requests.values()
    }

    pub fn requests_mut(&mut self) -> impl Iterator<Item = &mut ReqEntry> {
        self.requests.values_mut()
    }

    /// The in-flight request `id`, if any.
    pub fn request_mut(&mut self, id: u16) -> Option<&mut ReqEntry> {
        self.requests.get_mut(&id)
    }

    /// The entry of `rk` while this connection is not closed and its id still names that
    /// request (same serial: not a later request that reused the id).
    pub fn live_request(&mut self, rk: ReqKey) -> Option<&mut ReqEntry> {
        if self.is_closed() {
            return None;
        }
        self.requests
            .get_mut(&rk.id)
            .filter(|e| e.serial == rk.serial)
    }

    /// [`Conn::live_request`] with the output queue, to write the request's response.
    pub fn live_request_and_output(&mut self, rk: ReqKey) -> Option<(&mut ReqEntry, &mut OutBuf)> {
        if self.is_closed() {
            return None;
        }
        let entry = self
            .requests
            .get_mut(&rk.id)
            .filter(|e| e.serial == rk.serial)?;
        Some((entry, self.out.output()))
    }

    /// The output queue's buffer, for the records of a live request (see
    /// [`Conn::live_request_and_output`]).
    pub fn output(&mut self) -> &mut Vec<u8> {
        self.out.buffer()
    }

    /// Registers a streaming handler to wake once output was sent.
    pub fn wait_writable(&mut self, waker: &Waker) {
        self.writers.push(waker.clone());
    }

    /// Runs received bytes through the protocol state machine; `on_event` sees each event with
    /// the request table. Bytes received after the connection stopped being open are dropped.
    ///
    /// Params are built in `arena` (the worker's, lent to the protocol state for this call:
    /// connections share it, and an idle one holds none).
    pub fn receive(
        &mut self,
        data: &[u8],
        now: Millis,
        arena: &mut Option<Box<fcgi_proto::ParamsArena>>,
        on_event: &mut impl FnMut(Event<'_>, &mut ReqTable),
    ) -> Result<(), ProtocolError> {
        if !self.is_open() {
            return Ok(());
        }
        self.last_recv = now;
        self.last_activity = now;
        let Conn {
            proto,
            out,
            requests,
            ..
        } = self;
        proto.swap_params_arena(arena);
        proto.stamp_input(now);
        let result = proto.receive(data, out.buffer(), &mut |event| on_event(event, requests));
        proto.swap_params_arena(arena);
        // The protocol layer's own refusals end requests too.
        self.close_after_keep_conn_0();
        result
    }

    /// Answers a BEGIN_REQUEST with END_REQUEST(`status`) without running it.
    pub fn refuse(&mut self, id: u16, status: ProtocolStatus) {
        self.proto.refuse_request(id, status, self.out.buffer());
        self.close_after_keep_conn_0();
    }

    /// Once a request without KEEP_CONN has its END_REQUEST (an answer, a refusal, an abort)
    /// and no other request is active, the connection closes (spec 5.1: the application closes
    /// it after responding): answer sent, write side shut down, later bytes dropped. Requests
    /// still active go on meanwhile, with their deadlines, and new ones are ignored (the
    /// protocol layer's policy).
    fn close_after_keep_conn_0(&mut self) {
        if self.proto.should_close() && self.is_open() && self.proto.active_requests() == 0 {
            self.lifecycle = Lifecycle::Draining { shutdown_at: None };
        }
    }

    /// Stops reading until [`Conn::resume`]; true when it was reading.
    pub fn pause(&mut self) -> bool {
        !std::mem::replace(&mut self.paused, true)
    }

    /// Reads again after [`Conn::pause`]. The params deadline stood still while the server did
    /// not read (its handlers' bodies were full, no fault of the peer): it restarts now for the
    /// requests still reading params.
    pub fn resume(&mut self, now: Millis) {
        self.paused = false;
        self.proto.restamp_reading_params(now);
    }

    /// Cancels request `id` at the peer's ABORT_REQUEST: handler aborted, bodies failed. The
    /// caller ends it (END_REQUEST) with [`Conn::end_request`].
    pub fn abort_request(&mut self, id: u16) {
        if let Some(entry) = self.requests.get_mut(&id) {
            if let Some(task) = entry.task.take() {
                task.abort();
            }
            entry.fail_bodies(BodyError::Aborted);
        }
    }

    /// Ends request `id`: its entry, if it was dispatched, failed and shown to `ended` before
    /// it is dropped (where it lies: an entry is too large to hand back by value), END_REQUEST
    /// with `app_status` queued, KEEP_CONN=0 honoured. Returns whether the id was active.
    pub fn end_request(
        &mut self,
        id: u16,
        app_status: u32,
        now: Millis,
        ended: impl FnOnce(&mut ReqEntry),
    ) -> bool {
        if let Some(entry) = self.requests.get_mut(&id) {
            entry.fail_bodies(BodyError::Aborted);
            ended(entry);
            self.requests.remove(&id);
        }
        let was_active = self.proto.end_request(id, app_status, self.out.buffer());
        self.last_activity = now;
        self.close_after_keep_conn_0();
        was_active
    }

    /// The server drains and this connection's last answer is queued (no other request in
    /// flight, not even one whose params are still arriving): it closes as after a KEEP_CONN=0
    /// request (answer sent, write side shut down, later bytes dropped unread so that no new
    /// request starts, closed at the peer's EOF or the linger deadline), and the answer is
    /// corked so that the FIN rides in its last segment: a proxy reading the answer sees the
    /// close before it could put the connection back in its pool. True when it began now.
    pub fn drain_after_answer(&mut self) -> bool {
        if self.out.is_empty() {
            return false;
        }
        let began = self.drain_now();
        self.cork = began;
        began
    }

    /// Starts closing as [`Conn::drain_after_answer`] does, answer or not (a connection left
    /// idle during a drain). False when a request is in flight or it was not open.
    pub fn drain_now(&mut self) -> bool {
        if self.lifecycle != Lifecycle::Open
            || !self.requests.is_empty()
            || self.proto.active_requests() > 0
        {
            return false;
        }
        self.lifecycle = Lifecycle::Draining { shutdown_at: None };
        self.close_reason = CloseReason::Drain;
        true
    }

    /// A protocol error: every request cancelled, what is queued is flushed, then the
    /// connection closes. Returns how many requests were in flight.
    pub fn protocol_error(&mut self) -> usize {
        let n = self.abort_all(BodyError::ConnectionClosed);
        if !self.is_closed() {
            self.lifecycle = Lifecycle::Closing;
            self.close_reason = CloseReason::ProtocolError;
        }
        n
    }

    /// The peer is gone (EOF, reset, failed send): every request cancelled, queued output
    /// dropped, closed. Returns how many requests were in flight.
    pub fn peer_gone(&mut self) -> usize {
        let reason = match self.lifecycle {
            Lifecycle::Draining { .. } if self.close_reason == CloseReason::Drain => {
                CloseReason::Drain
            }
            Lifecycle::Draining { .. } => CloseReason::KeepConnOff,
            Lifecycle::Closing => CloseReason::ProtocolError,
            _ => CloseReason::Peer,
        };
        self.close(false, reason)
    }

    /// Gives up on the connection whatever is in flight (a deadline passed): like
    /// [`Conn::peer_gone`], and both directions are shut down before the close.
    pub fn abort(&mut self) -> usize {
        self.close(true, CloseReason::Timeout)
    }

    fn close(&mut self, abort: bool, reason: CloseReason) -> usize {
        if !self.is_closed() {
            self.close_reason = reason;
        }
        let n = self.abort_all(BodyError::ConnectionClosed);
        self.out.clear();
        let abort = abort || matches!(self.lifecycle, Lifecycle::Closed { abort: true });
        self.lifecycle = Lifecycle::Closed { abort };
        n
    }

    /// Ends every request: handlers cancelled, bodies failed, writers woken. Returns how many
    /// requests were in flight.
    fn abort_all(&mut self, why: BodyError) -> usize {
        let n = self.requests.len();
        for entry in self.requests.drain() {
            if let Some(task) = &entry.task {
                task.abort();
            }
            entry.fail_bodies(why);
        }
        self.wake_writers();
        n
    }

    /// The receive's final completion came: none is armed any more.
    pub fn recv_ended(&mut self) {
        self.reading = Reading::Idle;
    }

    /// The IO confirmed `n` bytes of the send in flight, and holds the rest to send again.
    pub fn sent_part(&mut self, n: usize) {
        if let Writing::InFlight { len, since } = self.writing {
            self.writing = Writing::Partial {
                left: len.saturating_sub(n),
                since,
            };
        }
    }

    /// The send in flight went out whole; `buf` is its emptied heap buffer, if it had one.
    pub fn sent_all(&mut self, buf: Option<Vec<u8>>) {
        self.writing = Writing::Idle;
        if let Some(buf) = buf {
            self.out.give_back(buf);
        }
        self.wake_writers();
    }

    /// Wakes the handlers waiting for room. Most sends complete with none waiting: that case
    /// costs a test, not a `Drain` (whose drop moves the vector's tail back).
    fn wake_writers(&mut self) {
        if self.writers.is_empty() {
            return;
        }
        for w in self.writers.drain(..) {
            w.wake();
        }
    }

    /// The send in flight failed: the peer is gone. Returns how many requests were in flight.
    pub fn send_failed(&mut self) -> usize {
        self.writing = Writing::Idle;
        self.close(false, CloseReason::SendFailed)
    }

    /// Acts on the state: hands output to the IO, arms or cancels the receive, shuts the write
    /// side down, closes. `max_output` bounds the backlog of a connection that is still read.
    pub fn step(
        &mut self,
        key: ConnKey,
        max_output: usize,
        now: Millis,
        io: &mut impl Io,
    ) -> Stepped {
        self.dirty = false;
        if std::mem::take(&mut self.cork) {
            io.cork(key);
        }
        let sent = self.send(key, now, io);
        let mut done = Stepped {
            sent: sent.is_some(),
            in_flight: sent.is_some() && self.writing != Writing::Idle,
            sent_bytes: sent.unwrap_or(0),
            ..Stepped::default()
        };
        let idle_out = self.writing == Writing::Idle && self.out.is_empty();
        match self.lifecycle {
            Lifecycle::Open => {
                // A peer that sends without reading our answers (GET_VALUES, refusals) is read
                // no further until it takes them: queued output stays bounded.
                let out_full = self.backlog() > max_output;
                done.output_full = out_full && self.reading == Reading::Armed;
                done.replay = self.holding && !self.paused && !out_full;
                if self.paused || out_full || self.holding {
                    self.cancel_recv(key, io);
                } else {
                    self.arm_recv(key, io);
                }
            }
            Lifecycle::Draining { shutdown_at } => {
                if shutdown_at.is_none() && idle_out {
                    io.shutdown_write(key);
                    self.lifecycle = Lifecycle::Draining {
                        shutdown_at: Some(now),
                    };
                }
                self.arm_recv(key, io);
            }
            Lifecycle::Closing => {
                if idle_out {
                    self.lifecycle = Lifecycle::Closed { abort: false };
                }
            }
            Lifecycle::Closed { .. } => {}
        }
        if let Lifecycle::Closed { abort } = self.lifecycle {
            self.cancel_recv(key, io);
            io.close(key, abort);
            done.closed = true;
        }
        done
    }

    /// Hands output to the IO when no send is in flight: what is left of a short send first,
    /// else everything queued. `Some(new bytes)` when a send started (0 for a resend).
    fn send(&mut self, key: ConnKey, now: Millis, io: &mut impl Io) -> Option<usize> {
        if self.is_closed() {
            return None;
        }
        match self.writing {
            Writing::Partial { left, .. } => {
                io.resend(key);
                self.writing = Writing::InFlight {
                    len: left,
                    since: now,
                };
                Some(0)
            }
            Writing::Idle if !self.out.is_empty() => {
                let len = self.out.len();
                match io.send(key, &mut self.out) {
                    Sending::Started => self.writing = Writing::InFlight { len, since: now },
                    // Settled here: the rest of this step sees the queue empty (a closing
                    // connection closes, a draining one shuts its write side down) and the
                    // deadline scheduled after it is the one that follows the answer.
                    Sending::Done => self.sent_all(None),
                }
                Some(len)
            }
            _ => None,
        }
    }

    fn arm_recv(&mut self, key: ConnKey, io: &mut impl Io) {
        if self.reading == Reading::Idle {
            io.arm_recv(key);
            self.reading = Reading::Armed;
        }
    }

    fn cancel_recv(&mut self, key: ConnKey, io: &mut impl Io) {
        if self.reading == Reading::Armed {
            io.cancel_recv(key);
            self.reading = Reading::Cancelling;
        }
    }
}
