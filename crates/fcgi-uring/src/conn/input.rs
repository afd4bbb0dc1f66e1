//! What the IO reports to the core: new connections, received bytes, ended receives, sends
//! done. Each input updates the connection's state and marks it for the next flush; requests
//! whose params are complete are staged for dispatch at the end of the receive batch.

use super::requests::{BodyIn, ReqEntry, ReqKey};
use super::state::Conn;
use super::{ConnKey, Core};
use crate::body::{Flow, RequestBody};
use crate::stats::Counter;
use crate::stats::metrics::EndStatus;
use fcgi_proto::{Event, Params, ProtocolStatus, RejectReason, Role};
use tokio::task::AbortHandle;

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
                core.feed(key, conn, data, staged);
            }
        });
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
        self.with_conn(key, |core, conn| match sent {
            Sent::All(buf) => conn.sent_all(buf),
            Sent::Part(n) => conn.sent_part(n),
            Sent::Failed => {
                let n = conn.send_failed();
                core.active.set(core.active.get().saturating_sub(n));
            }
        });
    }

    /// Runs `f` on the connection if it is still in the table, then marks it for the flush.
    fn with_conn(&self, key: ConnKey, f: impl FnOnce(&Core, &mut Conn)) {
        let mut conns = self.conns.borrow_mut();
        if let Some(conn) = conns.get_mut(key) {
            f(self, conn);
            self.mark_dirty(key, conn);
        }
    }

    /// Runs received bytes through the protocol state machine.
    fn feed(&self, key: ConnKey, conn: &mut Conn, data: &[u8], staged: &mut Vec<Staged>) {
        let mut aborts: Vec<u16> = Vec::new();
        let mut overloaded: Vec<u16> = Vec::new();
        let mut dispatched = false;
        let mut pause = false;
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
                dispatched = true;
                if self.active.get() >= self.settings.max_requests {
                    overloaded.push(id);
                    return;
                }
                self.stats.count(Counter::Requests);
                metrics.request(role.into());
                let serial = self.next_serial();
                self.active.set(self.active.get() + 1);
                requests.insert(ReqEntry::new(id, serial, role, now, params_done));
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
                if let Some(entry) = requests.get_mut(&id) {
                    // The announced length, looked up only for a body's first bytes.
                    let expected = || announced_length(staged, key, id);
                    pause |= entry.body.push(data, expected) == Flow::Pause;
                }
            }
            Event::StdinEnd { id } => {
                if let Some(entry) = requests.get_mut(&id) {
                    entry.body.end();
                }
            }
            Event::Data { id, data } => {
                if let Some(body) = requests.get_mut(&id).and_then(|e| e.data.as_deref_mut()) {
                    pause |= body.push(data, || None) == Flow::Pause;
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
        conn.track_params(dispatched, now);
        for id in aborts {
            self.stats.count(Counter::Aborted);
            conn.abort_request(id);
            // A staged request aborted in the same batch is dropped before dispatch.
            staged.retain(|s| !(s.rk.conn == key && s.rk.id == id));
            self.end_request(key, conn, id, 0);
        }
        if let Err(e) = result {
            self.stats.hit(
                Counter::ProtocolError,
                self.now(),
                format_args!("closing connection: {e}"),
            );
            let n = conn.protocol_error();
            self.active.set(self.active.get().saturating_sub(n));
        }
        if pause && conn.pause() {
            self.paused.borrow_mut().push(key);
        }
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
        let mut conns = self.conns.borrow_mut();
        for key in keys {
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            let ready = conn
                .requests()
                .all(|e| e.bodies().all(|b| b.wants_more(&waker)));
            if ready {
                conn.resume();
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

/// The CONTENT_LENGTH of request `id` of `key` if it is staged in this batch and states a
/// plain length (advisory: only a size hint for its body's buffer).
fn announced_length(staged: &[Staged], key: ConnKey, id: u16) -> Option<usize> {
    let s = staged
        .iter()
        .rev()
        .find(|s| s.rk.conn == key && s.rk.id == id)?;
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
