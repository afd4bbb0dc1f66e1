//! What the IO reports to the core: new connections, received bytes, ended receives, sends
//! done. Each input updates the connection's state and marks it for the next flush; requests
//! whose params are complete are staged for dispatch at the end of the receive batch.
//!
//! Received bytes are copied into the request bodies, except where the IO hands its buffer
//! over ([`Core::on_bytes_owned`]): a body of at least [`BODY_SHARE_MIN`] bytes that comes
//! whole in it becomes a slice of it, its records joined around the largest of them (only the
//! smaller ones are copied). Such a body keeps the buffer's allocation alive while any part of
//! it is held, so at most [`MAX_SHARED_BODIES`] of them are held at a time on a worker; past
//! it bodies are copied as usual. However a receive is cut into records, the work on it is
//! linear in its records (tens of thousands of one-byte STDIN records in one receive cost what
//! they cost one by one).

use super::requests::{BodyIn, ReqEntry, ReqKey};
use super::state::Conn;
use super::{ConnKey, Core};
use crate::body::{Flow, RequestBody};
use crate::stats::Counter;
use crate::stats::metrics::EndStatus;
use bytes::{Bytes, BytesMut};
use fcgi_proto::{Event, Params, ProtocolStatus, RejectReason, Role};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::task::AbortHandle;

/// A body announcing at least this many bytes that comes whole in one buffer the IO hands
/// over is given to its handler as a slice of that buffer (see [`Core::on_bytes_owned`]);
/// smaller ones are copied, as a slice keeps the whole buffer allocated.
pub(crate) const BODY_SHARE_MIN: usize = 16 * 1024;

/// At most this many bodies of a worker that are slices of a receive buffer are held at a time
/// (each can keep one allocated: 64 x 256 KiB); past it bodies are copied.
pub(crate) const MAX_SHARED_BODIES: usize = 64;

/// A body's bytes, sliced from a receive buffer, counted in the worker's tally for as long as
/// any part of them is held (by the handler, a response sending them back, ...).
struct Counted {
    bytes: Bytes,
    tally: Arc<AtomicUsize>,
}

impl Counted {
    fn bytes(bytes: Bytes, tally: &Arc<AtomicUsize>) -> Bytes {
        tally.fetch_add(1, Ordering::Relaxed);
        Bytes::from_owner(Counted {
            bytes,
            tally: tally.clone(),
        })
    }
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.tally.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Received bytes: borrowed (copied where they are kept), or in a buffer of the IO's that the
/// core may split them off (kept in place).
enum Input<'a> {
    Borrowed(&'a [u8]),
    Owned(&'a mut BytesMut),
}

/// The STDIN of one receive left in its buffer until the receive is parsed, body by body.
///
/// Each step costs constant time or time linear in the bodies kept (at most
/// [`MAX_SHARED_BODIES`]), whatever the pieces: a receive cut into tens of thousands of
/// one-byte records costs no more per record than one in a few large ones.
struct Kept {
    /// The pieces, in the order they lie in the buffer.
    pieces: Vec<Piece>,
    /// The bodies the pieces belong to, in the order their first pieces came.
    bodies: Vec<KeptBody>,
    /// The body of the last data piece kept.
    last_data: Option<usize>,
    /// How many bodies may be kept: one past it could not be shared, so it is copied.
    room: usize,
}

/// The ranges of the data pieces of the body at `index` among `pieces`.
fn data_of(pieces: &[Piece], index: usize) -> impl DoubleEndedIterator<Item = Range<usize>> + '_ {
    pieces.iter().filter_map(move |p| match p {
        Piece::Data { body, range } if *body == index => Some(range.clone()),
        _ => None,
    })
}

/// A piece of a kept body (the body's index in [`Kept::bodies`]).
enum Piece {
    Data { body: usize, range: Range<usize> },
    End { body: usize },
}

/// What is known of one kept body.
struct KeptBody {
    id: u16,
    /// Where its first, last and largest data pieces are in [`Kept::pieces`].
    first: usize,
    last: usize,
    largest: usize,
    /// Another body's piece lies between two of its own (joining it would overwrite that).
    interleaved: bool,
    /// Its end came in this receive.
    ended: bool,
}

impl Kept {
    fn new(room: usize) -> Kept {
        Kept {
            pieces: Vec::new(),
            bodies: Vec::new(),
            last_data: None,
            room,
        }
    }

    /// The body of request `id`, if it has pieces kept. The body of the last piece is tried
    /// first: a body's records usually come one after another.
    fn body_of(&self, id: u16) -> Option<usize> {
        self.last_data
            .filter(|&b| self.bodies.get(b).is_some_and(|k| k.id == id))
            .or_else(|| self.bodies.iter().position(|k| k.id == id))
    }

    /// Whether a new body can be kept (see [`Kept::room`]).
    fn has_room(&self) -> bool {
        self.bodies.len() < self.room
    }

    /// The length of the data piece at `at` in [`Kept::pieces`] (0 for an end).
    fn data_len(&self, at: usize) -> usize {
        match self.pieces.get(at) {
            Some(Piece::Data { range, .. }) => range.len(),
            _ => 0,
        }
    }

    /// Keeps `range` of the buffer as the next piece of the body of request `id`.
    fn push_data(&mut self, id: u16, range: Range<usize>) {
        let at = self.pieces.len();
        let len = range.len();
        let body = match self.body_of(id) {
            Some(body) => {
                let after = self.last_data;
                let largest = self
                    .bodies
                    .get(body)
                    .map_or(0, |k| self.data_len(k.largest));
                if let Some(kept) = self.bodies.get_mut(body) {
                    kept.interleaved |= after != Some(body);
                    kept.last = at;
                    if len > largest {
                        kept.largest = at;
                    }
                }
                body
            }
            None => {
                self.bodies.push(KeptBody {
                    id,
                    first: at,
                    last: at,
                    largest: at,
                    interleaved: false,
                    ended: false,
                });
                self.bodies.len() - 1
            }
        };
        self.last_data = Some(body);
        self.pieces.push(Piece::Data { body, range });
    }

    /// Notes the end of the body of request `id`; false if it has no pieces kept.
    fn push_end(&mut self, id: u16) -> bool {
        let Some(body) = self.body_of(id) else {
            return false;
        };
        if let Some(kept) = self.bodies.get_mut(body) {
            kept.ended = true;
        }
        self.pieces.push(Piece::End { body });
        true
    }

    /// Whether the body at `index` can be one slice of the buffer: it ended here and no other
    /// body's piece lies between its own.
    fn joinable(&self, index: usize) -> bool {
        self.bodies
            .get(index)
            .is_some_and(|k| k.ended && !k.interleaved)
    }

    /// Makes the pieces of the joinable body at `index` one range of `buf`, and returns it:
    /// its largest piece stays where it is, the pieces before it are moved up to it and those
    /// after it down to it, over the record headers between them. So only the smaller pieces
    /// are copied: nginx sends the first bytes of a body (read with the request's head) in a
    /// record of their own, then records of 32 KiB.
    fn join(&self, index: usize, buf: &mut [u8]) -> Option<Range<usize>> {
        let kept = self.bodies.get(index)?;
        let Some(Piece::Data { range: largest, .. }) = self.pieces.get(kept.largest) else {
            return None;
        };
        let before = self.pieces.get(kept.first..kept.largest)?;
        let after = self.pieces.get(kept.largest + 1..=kept.last)?;
        // Each piece lies after the one before it, record headers between: a piece moved up
        // lands on or after where it lay and before the next, one moved down the other way.
        let mut start = largest.start;
        for range in data_of(before, index).rev() {
            start -= range.len();
            buf.copy_within(range, start);
        }
        let mut end = largest.end;
        for range in data_of(after, index) {
            let len = range.len();
            buf.copy_within(range, end);
            end += len;
        }
        Some(start..end)
    }
}

/// A request whose params are complete, waiting for the end of the receive batch.
pub(crate) struct Staged {
    pub rk: ReqKey,
    pub role: Role,
    pub params: Params,
}

/// How a send the core asked for ended.
#[derive(Debug)]
pub(crate) enum Sent {
    /// Every byte went out; the heap buffer it was sent from, if any, for reuse.
    All(Option<Vec<u8>>),
    /// Only this many bytes went out: the IO holds the rest for [`super::Io::resend`].
    Part(usize),
    /// The send failed or wrote nothing: the peer is gone.
    Failed,
}

impl Core {
    /// Whether [`Core::accept`] needs the peer's address (an allow-list is set); otherwise
    /// the IO passes `None` and makes no syscall for it.
    pub fn checks_peers(&self) -> bool {
        self.settings.allowed_peers.is_some()
    }

    /// Whether the worker holds `max_conns_per_worker` connections (the next is refused).
    pub fn is_full(&self) -> bool {
        self.conns.borrow().len() >= self.settings.max_conns
    }

    /// A new connection from the IO, from `peer` (a TCP peer's address, when
    /// [`Core::checks_peers`]). `None`: refused (a peer not allowed, or
    /// `max_conns_per_worker`), drop it.
    pub fn accept(&self, peer: Option<std::net::IpAddr>) -> Option<ConnKey> {
        if let Some(allowed) = &self.settings.allowed_peers
            && !peer.is_some_and(|ip| allowed.allows(ip))
        {
            let who = peer.map_or_else(|| "an unknown peer".to_owned(), |ip| ip.to_string());
            self.stats.hit(
                Counter::PeerRefused,
                self.now(),
                format_args!("connection from {who} closed: not in server.allowed_peers"),
            );
            return None;
        }
        let mut conns = self.conns.borrow_mut();
        if conns.len() >= self.settings.max_conns {
            self.stats.hit(
                Counter::ConnsRefused,
                self.now(),
                format_args!(
                    "connection refused: {} connections on this worker (max_conns_per_worker)",
                    conns.len()
                ),
            );
            return None;
        }
        self.stats.count(Counter::Accepted);
        let key = conns.insert(Conn::new(self.settings.limits.clone(), self.now_ms()));
        if let Some(conn) = conns.get_mut(key) {
            self.mark_dirty(key, conn);
        }
        Some(key)
    }

    /// Bytes received on `key`: run through its protocol state machine; requests whose params
    /// are complete are pushed to `staged`.
    pub fn on_bytes(&self, key: ConnKey, data: &[u8], staged: &mut Vec<Staged>) {
        self.stats.shared.metrics.received(data.len());
        self.with_conn(key, |core, conn| {
            // Once we decided to close, what the peer still sends is discarded.
            if conn.is_open() {
                if conn.reads_input(core.settings.max_output_buffer) {
                    core.feed(key, conn, Input::Borrowed(data), staged);
                } else {
                    core.hold(key, conn, data);
                }
            }
        });
    }

    /// Like [`Core::on_bytes`], for bytes in a buffer of the IO's (a receive into a buffer of
    /// its own, holding those bytes only): a request body that comes whole in them (its end
    /// included), announces at least [`BODY_SHARE_MIN`] bytes and is not interleaved with
    /// another such body is handed to its handler as one slice of them, its STDIN records
    /// joined in place over their headers, instead of being copied. Only then are the bytes
    /// split off `data` (which is left empty); otherwise they are left there, for the IO to
    /// overwrite. Returns how many bodies were kept so.
    pub fn on_bytes_owned(
        &self,
        key: ConnKey,
        data: &mut BytesMut,
        staged: &mut Vec<Staged>,
    ) -> usize {
        self.stats.shared.metrics.received(data.len());
        let mut shared = 0;
        self.with_conn(key, |core, conn| {
            if conn.is_open() {
                if conn.reads_input(core.settings.max_output_buffer) {
                    shared = core.feed(key, conn, Input::Owned(data), staged);
                } else {
                    core.hold(key, conn, data);
                }
            }
        });
        for _ in 0..shared {
            self.stats.count(Counter::SharedBodies);
        }
        shared
    }

    /// Keeps `data`, received on a connection that is not to be read now, after what it already
    /// holds (a copy of its exact size: a receive's buffer goes back to the IO). Out of line:
    /// only a connection the IO was told to stop reading gets here.
    #[cold]
    #[inline(never)]
    fn hold(&self, key: ConnKey, conn: &mut Conn, data: &[u8]) {
        conn.set_holding(true);
        self.held
            .borrow_mut()
            .entry(key)
            .or_default()
            .push_back(Bytes::copy_from_slice(data));
    }

    /// Feeds the bytes held on connections that may be read again (no longer paused, output
    /// back within its limit), one receive's worth at a time and in arrival order, stopping where
    /// they make the connection stop reading again; requests they complete go to `staged`. A
    /// connection whose held bytes are all fed is read again at the next flush. Returns how many
    /// receives were fed: work for the loop turn like the receives the IO reports (a body they
    /// filled pauses the connection, and the next turn's [`Core::resume_paused`] must look).
    pub fn replay_held(&self, staged: &mut Vec<Staged>) -> usize {
        if self.held.borrow().is_empty() {
            return 0;
        }
        let mut fed = 0;
        let max_output = self.settings.max_output_buffer;
        let keys: Vec<ConnKey> = self.held.borrow().keys().copied().collect();
        let mut conns = self.conns.borrow_mut();
        for key in keys {
            let Some(conn) = conns.get_mut(key) else {
                self.held.borrow_mut().remove(&key);
                continue;
            };
            while conn.is_open() && !conn.is_paused() && conn.backlog() <= max_output {
                let next = {
                    let mut held = self.held.borrow_mut();
                    let chunks = held.get_mut(&key);
                    let next = chunks.and_then(|c| c.pop_front());
                    if held.get(&key).is_none_or(|c| c.is_empty()) {
                        held.remove(&key);
                        conn.set_holding(false);
                    }
                    next
                };
                let Some(chunk) = next else {
                    break;
                };
                self.feed(key, conn, Input::Borrowed(&chunk), staged);
                fed += 1;
            }
            if !conn.is_open() && conn.is_holding() {
                // Closing: what it still held is discarded, as later receives are.
                self.held.borrow_mut().remove(&key);
                conn.set_holding(false);
            }
            self.mark_dirty(key, conn);
        }
        fed
    }

    /// The peer closed (EOF) or the connection failed: requests cancelled, connection closed.
    pub fn on_peer_gone(&self, key: ConnKey) {
        self.with_conn(key, |core, conn| {
            let aborted = core.peer_gone(conn);
            if aborted > 0 {
                tracing::debug!("connection closed by peer with {aborted} requests in flight");
            }
        });
    }

    /// The receive's final completion came (it must be armed again to read on).
    pub fn on_recv_ended(&self, key: ConnKey) {
        self.with_conn(key, |_, conn| conn.recv_ended());
    }

    /// A send of `key` completed. Reported also for a connection already dropped.
    pub fn on_sent(&self, key: ConnKey, sent: Sent) {
        self.sends.set(self.sends.get().saturating_sub(1));
        let mut conns = self.conns.borrow_mut();
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        match sent {
            Sent::All(buf) => {
                conn.sent_all(buf);
                // The usual end of a ring send leaves nothing for the flush to do: the
                // connection is open, read, with nothing queued, and the one deadline the send's
                // end can add (idle) is decided here, while the connection is in cache, rather
                // than in a pass of the next flush (which, at many connections, found it
                // evicted).
                if conn.is_settled() && !self.is_draining() {
                    if super::deadlines::idle_comes_first(self, conn) {
                        super::deadlines::schedule(self, key, conn);
                    }
                    return;
                }
            }
            Sent::Part(n) => conn.sent_part(n),
            Sent::Failed => {
                let n = conn.send_failed();
                self.active.set(self.active.get().saturating_sub(n));
            }
        }
        self.mark_dirty(key, conn);
    }

    /// Runs `f` on the connection if it is still in the table, then marks it for the flush.
    fn with_conn(&self, key: ConnKey, f: impl FnOnce(&Core, &mut Conn)) {
        let mut conns = self.conns.borrow_mut();
        if let Some(conn) = conns.get_mut(key) {
            f(self, conn);
            self.mark_dirty(key, conn);
        }
    }

    /// Runs received bytes through the protocol state machine; returns how many bodies were
    /// shared with the input (see [`Core::on_bytes_owned`]).
    ///
    /// Inlined into both callers, so that borrowed input (every ring receive) carries none of
    /// the work of keeping bodies in place: out of line, GET /hello's request path cost 41
    /// instructions more (`request_path` under callgrind).
    #[inline(always)]
    fn feed(
        &self,
        key: ConnKey,
        conn: &mut Conn,
        input: Input<'_>,
        staged: &mut Vec<Staged>,
    ) -> usize {
        let mut kept = matches!(input, Input::Owned(_)).then(|| {
            let shared = self.shared_bodies.load(Ordering::Relaxed);
            Kept::new(MAX_SHARED_BODIES.saturating_sub(shared))
        });
        let data: &[u8] = match &input {
            Input::Borrowed(data) => data,
            Input::Owned(data) => data,
        };
        let input_at = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
        let mut aborts: Vec<u16> = Vec::new();
        let mut overloaded: Vec<u16> = Vec::new();
        let mut pause = false;
        let limit = self.settings.max_body_buffer;
        let now = self.now_ms();
        // The worker turn's clock (read at the top of the turn, before its completions were
        // reaped): no clock read per request.
        let params_done = self.now();
        let metrics = &self.stats.shared.metrics;
        let mut arena = self.params_arena.take();
        let result = conn.receive(data, now, &mut arena, &mut |event, requests| match event {
            Event::Request {
                id, role, params, ..
            } => {
                if self.active.get() >= self.settings.max_requests {
                    overloaded.push(id);
                    return;
                }
                self.stats.count(Counter::Requests);
                metrics.request(role.into());
                let serial = self.next_serial();
                self.active.set(self.active.get() + 1);
                let staged_at = u16::try_from(staged.len()).unwrap_or(u16::MAX);
                requests.insert(ReqEntry::new(id, serial, role, now, params_done, staged_at));
                staged.push(Staged {
                    rk: ReqKey {
                        conn: key,
                        id,
                        serial,
                    },
                    role,
                    params,
                });
            }
            Event::Stdin { id, data } => {
                let Some(entry) = requests.get_mut(&id) else {
                    return;
                };
                // The announced length, looked up only for a body's first bytes.
                let at = (entry.serial, entry.staged_at);
                let announced = || announced_length(staged, key, id, at);
                if let Some(kept) = kept.as_mut()
                    && keep_in_place(kept, entry, data, &input_at, announced)
                {
                    return;
                }
                pause |= entry.body.push(data, announced, limit) == Flow::Pause;
            }
            Event::StdinEnd { id } => {
                // A kept body ends with its pieces; any other now.
                let kept_end = kept.as_mut().is_some_and(|kept| kept.push_end(id));
                if !kept_end && let Some(entry) = requests.get_mut(&id) {
                    entry.body.end();
                }
            }
            Event::Data { id, data } => {
                if let Some(body) = requests.get_mut(&id).and_then(|e| e.data.as_deref_mut()) {
                    pause |= body.push(data, || None, limit) == Flow::Pause;
                }
            }
            Event::DataEnd { id } => {
                if let Some(body) = requests.get_mut(&id).and_then(|e| e.data.as_deref_mut()) {
                    body.end();
                }
            }
            Event::Abort { id } => aborts.push(id),
            Event::Rejected { id, reason } => {
                let (counter, status) = match reason {
                    RejectReason::TooManyRequests => {
                        (Counter::ConnOverloaded, EndStatus::Overloaded)
                    }
                    RejectReason::NotMultiplexed => {
                        (Counter::ConnOverloaded, EndStatus::CantMpxConn)
                    }
                    RejectReason::UnknownRole(_) => (Counter::UnknownRole, EndStatus::UnknownRole),
                    _ => (Counter::ParamsLimit, EndStatus::Overloaded),
                };
                metrics.end_request(status);
                self.stats.hit(
                    counter,
                    self.now(),
                    format_args!("request {id} refused: {reason}"),
                );
            }
        });
        self.params_arena.set(arena);
        let mut shared = 0;
        if let (Input::Owned(buf), Some(kept)) = (input, kept)
            && !kept.pieces.is_empty()
        {
            let (n, full) = self.settle_kept(key, conn, buf.split(), &kept, staged);
            shared = n;
            pause |= full;
        }
        self.note_in_flight(conn.max_active_seen());
        for id in overloaded {
            self.stats.hit(
                Counter::WorkerOverloaded,
                self.now(),
                format_args!(
                    "request {id} refused: {} requests in flight on this worker (max_requests_per_worker)",
                    self.active.get()
                ),
            );
            conn.refuse(id, ProtocolStatus::Overloaded);
            metrics.end_request(EndStatus::Overloaded);
        }
        for id in aborts {
            self.stats.count(Counter::Aborted);
            conn.abort_request(id);
            // A request staged in this batch stays staged: ended here, it is no longer live,
            // so its dispatch finds no body to take and starts no handler (`take_body`).
            self.end_request(key, conn, id, 0);
        }
        if let Err(e) = result {
            // A record's version byte that is an upper-case letter: the first byte of an HTTP
            // method (`GET ` is version 71).
            let http = matches!(e, fcgi_proto::ProtocolError::BadVersion(b'A'..=b'Z'));
            let hint = if http {
                " (an HTTP request? this port speaks FastCGI: HTTP clients go to the proxy, \
                 which reaches this port with fastcgi_pass, proto fcgi or a fcgi-app)"
            } else {
                ""
            };
            self.stats.hit(
                Counter::ProtocolError,
                self.now(),
                format_args!("closing connection: {e}{hint}"),
            );
            let n = conn.protocol_error();
            self.active.set(self.active.get().saturating_sub(n));
        }
        if pause && conn.pause() {
            self.paused.borrow_mut().push(key);
        }
        shared
    }

    /// Hands the STDIN kept in `buf` to the bodies: a body whose end came too and that no other
    /// kept body interleaves becomes one slice of `buf` (see [`Kept::join`]); the others are
    /// copied in order, as [`Core::on_bytes`] copies. Returns the bodies shared and whether a
    /// handler's buffer went over its limit.
    fn settle_kept(
        &self,
        key: ConnKey,
        conn: &mut Conn,
        mut buf: BytesMut,
        kept: &Kept,
        staged: &[Staged],
    ) -> (usize, bool) {
        // Whether each body is shared (a request aborted in this receive is not).
        let share: Vec<bool> = kept
            .bodies
            .iter()
            .enumerate()
            .map(|(index, body)| {
                kept.joinable(index) && conn.request_mut(body.id).is_some_and(|e| e.body.is_fresh())
            })
            .collect();
        let mut full = false;
        let limit = self.settings.max_body_buffer;
        for piece in &kept.pieces {
            let (Piece::Data { body, .. } | Piece::End { body }) = piece;
            let (Some(false), Some(kept_body)) =
                (share.get(*body).copied(), kept.bodies.get(*body))
            else {
                continue;
            };
            let id = kept_body.id;
            let Some(entry) = conn.request_mut(id) else {
                continue;
            };
            match piece {
                Piece::Data { range, .. } => {
                    let at = (entry.serial, entry.staged_at);
                    let announced = || announced_length(staged, key, id, at);
                    full |= entry.body.push(&buf[range.clone()], announced, limit) == Flow::Pause;
                }
                Piece::End { .. } => entry.body.end(),
            }
        }
        let joined: Vec<(u16, Range<usize>)> = kept
            .bodies
            .iter()
            .enumerate()
            .filter(|&(index, _)| share.get(index) == Some(&true))
            .filter_map(|(index, body)| Some((body.id, kept.join(index, &mut buf)?)))
            .collect();
        let buf = buf.freeze();
        for (id, range) in &joined {
            if let Some(entry) = conn.request_mut(*id) {
                let body = Counted::bytes(buf.slice(range.clone()), &self.shared_bodies);
                entry.body = BodyIn::Shared(Box::new(body));
            }
        }
        (joined.len(), full)
    }

    /// Resumes reading on paused connections whose body buffers drained.
    pub fn resume_paused(&self) {
        if self.paused.borrow().is_empty() {
            return;
        }
        let Some(waker) = self.driver.borrow().clone() else {
            return;
        };
        let keys = std::mem::take(&mut *self.paused.borrow_mut());
        let limit = self.settings.max_body_buffer;
        let mut conns = self.conns.borrow_mut();
        for key in keys {
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            let ready = conn
                .requests()
                .all(|e| e.bodies().all(|b| b.wants_more(&waker, limit)));
            if ready {
                conn.resume(self.now_ms());
                self.mark_dirty(key, conn);
            } else {
                self.paused.borrow_mut().push(key);
            }
        }
    }

    /// Turns the staged STDIN (and DATA, for a FILTER) of a request about to be dispatched into
    /// its bodies; `None` when the request is gone.
    pub fn take_body(&self, staged: &Staged) -> Option<(RequestBody, Option<RequestBody>)> {
        let (rk, limit) = (staged.rk, self.settings.max_body_buffer);
        let mut conns = self.conns.borrow_mut();
        let entry = conns.get_mut(rk.conn)?.live_request(rk)?;
        let announced = || content_length(&staged.params);
        let body = entry.body.dispatch(limit, announced);
        let data = entry
            .data
            .as_deref_mut()
            .filter(|d| matches!(d, BodyIn::Staged { .. }))
            .map(|d| d.dispatch(limit, || None));
        Some((body, data))
    }

    /// Records the task running the request's handler (aborted with the request). When the
    /// request is already gone the task is aborted now.
    pub fn set_task(&self, rk: ReqKey, task: AbortHandle) {
        let line = self.pending_line.borrow_mut().take();
        let mut conns = self.conns.borrow_mut();
        match conns.get_mut(rk.conn).and_then(|c| c.live_request(rk)) {
            Some(entry) => {
                entry.task = Some(task);
                entry.line = line.map(Box::new);
            }
            None => task.abort(),
        }
    }
}

/// Keeps a piece of STDIN in the IO's buffer instead of copying it (true), when it lies in
/// `input` and continues a body already kept, or starts a body that can be shared: not
/// dispatched, nothing received yet, at least [`BODY_SHARE_MIN`] bytes announced, and room
/// left among the shared bodies.
fn keep_in_place(
    kept: &mut Kept,
    entry: &ReqEntry,
    data: &[u8],
    input: &Range<usize>,
    announced: impl FnOnce() -> Option<usize>,
) -> bool {
    let at = data.as_ptr() as usize;
    if data.is_empty() || at < input.start || at + data.len() > input.end {
        return false;
    }
    if kept.body_of(entry.id).is_none() {
        let fresh = entry.body.is_fresh();
        if !kept.has_room() || !fresh || announced().is_none_or(|n| n < BODY_SHARE_MIN) {
            return false;
        }
    }
    let start = at - input.start;
    kept.push_data(entry.id, start..start + data.len());
    true
}

/// The CONTENT_LENGTH of request `id` of `key` staged in this batch if it states a plain
/// length (advisory: only a size hint for its body's buffer). `at` is the request's serial and
/// where it was staged ([`ReqEntry::staged_at`]): its params are found without a search.
fn announced_length(
    staged: &[Staged],
    key: ConnKey,
    id: u16,
    (serial, at): (u64, u16),
) -> Option<usize> {
    let s = staged.get(usize::from(at)).filter(|s| {
        s.rk == ReqKey {
            conn: key,
            id,
            serial,
        }
    })?;
    content_length(&s.params)
}

/// A request's CONTENT_LENGTH if it states a plain length (advisory: only a size hint for its
/// body's buffers).
fn content_length(params: &Params) -> Option<usize> {
    let value = params.get(b"CONTENT_LENGTH")?;
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}
