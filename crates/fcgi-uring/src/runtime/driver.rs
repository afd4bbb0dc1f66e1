//! The per-core event loop: completions in, protocol events out, batched submissions.
//!
//! One loop turn: act on dirty connections (queue sends, re-arm or cancel receives, shut down,
//! close), submit everything in one `io_uring_enter` that also reaps completions, feed received
//! bytes to each connection's protocol state machine, dispatch the requests that became complete,
//! then let handler tasks run. With nothing to do it sleeps in tokio's reactor until the ring, a
//! handler task or a shutdown request wakes it.

use super::core::{BodyIn, Conn, ConnKey, ConnState, Core, LISTENER_TOKEN, Recv, ReqEntry, ReqKey};
use super::stats::Counter;
use super::timeouts;
use crate::body::{BodyError, Flow};
use crate::uring::{Completion, CompletionKind, Ring, SendBuf};
use fcgi_proto::{Event, Params, ProtocolStatus, RejectReason, Role};
use std::io;
use std::os::fd::OwnedFd;

/// A request whose params are complete, waiting for the end of the receive batch.
pub(crate) struct Staged {
    pub rk: ReqKey,
    pub role: Role,
    pub params: Params,
}

/// What the completion handler leaves for the driver to do with the ring.
#[derive(Default)]
pub(crate) struct Followups {
    pub staged: Vec<Staged>,
    pub rearm_accept: bool,
    /// The accept that ended failed: pause before arming it again.
    pub accept_failed: bool,
}

/// Handles one completion. Never touches the ring (it is borrowed by the caller).
pub(crate) fn on_completion(core: &Core, c: Completion<'_>, is_tcp: bool, f: &mut Followups) {
    if c.token == LISTENER_TOKEN {
        if let CompletionKind::Accept { result, more } = c.kind {
            let failed = !on_accept(core, result, is_tcp);
            f.rearm_accept |= !more;
            f.accept_failed |= failed && !more;
        }
        return;
    }
    let Some(key) = ConnKey::from_token(c.token) else {
        return;
    };
    if let CompletionKind::Send { .. } = c.kind {
        // Counted also when the connection is gone (closed while its send was in flight).
        core.sends.set(core.sends.get().saturating_sub(1));
    }
    let mut conns = core.conns.borrow_mut();
    // A connection dropped with operations in flight: their completions find no connection
    // (its key's generation moved on), and the ring closes the socket after the last one.
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    match c.kind {
        CompletionKind::Recv { result, more } => {
            if !more {
                conn.recv = Recv::Idle;
            }
            on_recv(core, key, conn, result, f);
        }
        CompletionKind::Send { result, buf } => on_send(core, conn, result, buf),
        CompletionKind::Shutdown { .. } | CompletionKind::Accept { .. } => {}
    }
    core.mark_dirty(key, conn);
}

/// Takes a new connection; false when accept itself failed (not for our own cancel).
fn on_accept(core: &Core, result: io::Result<OwnedFd>, is_tcp: bool) -> bool {
    let fd = match result {
        Ok(fd) => fd,
        // Our own cancel, at shutdown.
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => return true,
        Err(e) => {
            core.stats.hit(
                Counter::AcceptFailed,
                core.now(),
                format_args!(
                    "accept failed: {e}; accepting again after server.accept_retry \
                     (EMFILE: raise RLIMIT_NOFILE, e.g. LimitNOFILE= in the systemd unit)"
                ),
            );
            return false;
        }
    };
    let mut conns = core.conns.borrow_mut();
    if conns.len() >= core.settings.max_conns {
        core.stats.hit(
            Counter::ConnsRefused,
            core.now(),
            format_args!(
                "connection refused: {} connections on this worker (max_conns_per_worker)",
                conns.len()
            ),
        );
        return true;
    }
    core.stats.count(Counter::Accepted);
    if is_tcp {
        let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
    }
    let key = conns.insert(Conn::new(fd, core.settings.limits, core.now_ms()));
    if let Some(conn) = conns.get_mut(key) {
        core.mark_dirty(key, conn);
    }
    true
}

fn on_recv(
    core: &Core,
    key: ConnKey,
    conn: &mut Conn,
    result: io::Result<&[u8]>,
    f: &mut Followups,
) {
    match result {
        Ok([]) => on_eof(core, conn),
        // Once we decided to close, what the peer still sends is discarded.
        Ok(data) if conn.state == ConnState::Open => {
            conn.last_recv = core.now_ms();
            conn.last_activity = conn.last_recv;
            feed(core, key, conn, data, f);
        }
        Ok(_) => {}
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::ECANCELED) => {}
            _ => {
                tracing::debug!("receive failed: {e}");
                on_eof(core, conn);
            }
        },
    }
}

/// The peer closed (or reset) the connection.
fn on_eof(core: &Core, conn: &mut Conn) {
    let aborted = core.abort_all(conn, BodyError::ConnectionClosed);
    if aborted > 0 {
        tracing::debug!("connection closed by peer with {aborted} requests in flight");
    }
    conn.out.clear();
    conn.state = ConnState::Closed;
}

/// Runs received bytes through the protocol state machine.
fn feed(core: &Core, key: ConnKey, conn: &mut Conn, data: &[u8], f: &mut Followups) {
    let mut aborts: Vec<u16> = Vec::new();
    let mut overloaded: Vec<u16> = Vec::new();
    let mut dispatched = false;
    let mut pause = false;
    let now = core.now_ms();
    let Conn {
        proto,
        out,
        requests,
        ..
    } = conn;
    let result = proto.receive(data, out, &mut |event| match event {
        Event::Request {
            id, role, params, ..
        } => {
            dispatched = true;
            if core.active.get() >= core.settings.max_requests {
                overloaded.push(id);
                return;
            }
            core.stats.count(Counter::Requests);
            let serial = core.next_serial();
            core.active.set(core.active.get() + 1);
            requests.insert(
                id,
                ReqEntry {
                    id,
                    started: now,
                    serial,
                    // An AUTHORIZER gets no STDIN (spec 6.3); only a FILTER gets DATA (6.4).
                    body: BodyIn::staged(role == Role::Authorizer),
                    data: if role == Role::Filter {
                        BodyIn::staged(false)
                    } else {
                        BodyIn::Done
                    },
                    task: None,
                    head_sent: false,
                    // Set at dispatch, once the method is parsed.
                    head_only: false,
                },
            );
            f.staged.push(Staged {
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
                pause |= entry.body.push(data) == Flow::Pause;
            }
        }
        Event::StdinEnd { id } => {
            if let Some(entry) = requests.get_mut(&id) {
                entry.body.end();
            }
        }
        Event::Data { id, data } => {
            if let Some(entry) = requests.get_mut(&id) {
                pause |= entry.data.push(data) == Flow::Pause;
            }
        }
        Event::DataEnd { id } => {
            if let Some(entry) = requests.get_mut(&id) {
                entry.data.end();
            }
        }
        Event::Abort { id } => aborts.push(id),
        Event::Rejected { id, reason } => {
            let counter = match reason {
                RejectReason::TooManyRequests => Counter::ConnOverloaded,
                RejectReason::UnknownRole(_) => Counter::UnknownRole,
                _ => Counter::ParamsLimit,
            };
            core.stats.hit(
                counter,
                core.now(),
                format_args!("request {id} refused: {reason}"),
            );
        }
    });
    core.note_in_flight(proto.max_active_seen());
    for id in overloaded {
        core.stats.hit(
            Counter::WorkerOverloaded,
            core.now(),
            format_args!(
                "request {id} refused: {} requests in flight on this worker (max_requests_per_worker)",
                core.active.get()
            ),
        );
        conn.proto
            .refuse_request(id, ProtocolStatus::Overloaded, &mut conn.out);
    }
    // Requests still reading params: the params deadline runs from the oldest (restarted when
    // one completes, which keeps the bound per request approximately).
    if conn.proto.active_requests() > conn.requests.len() {
        if dispatched || conn.params_since.is_none() {
            conn.params_since = Some(now);
        }
    } else {
        conn.params_since = None;
    }
    for id in aborts {
        if let Some(entry) = conn.requests.get_mut(&id) {
            if let Some(task) = entry.task.take() {
                task.abort();
            }
            entry.body.fail(BodyError::Aborted);
            entry.data.fail(BodyError::Aborted);
        }
        // A staged request aborted in the same batch is dropped before dispatch.
        f.staged.retain(|s| !(s.rk.conn == key && s.rk.id == id));
        core.end_request(key, conn, id, 0);
    }
    if let Err(e) = result {
        core.stats.hit(
            Counter::ProtocolError,
            core.now(),
            format_args!("closing connection: {e}"),
        );
        core.abort_all(conn, BodyError::ConnectionClosed);
        conn.state = ConnState::Closing;
    }
    if pause && !conn.paused {
        conn.paused = true;
        core.paused.borrow_mut().push(key);
    }
}

fn on_send(core: &Core, conn: &mut Conn, result: io::Result<usize>, buf: SendBuf) {
    let start = conn.send_offset;
    conn.sending = 0;
    match result {
        // A short send: the rest goes out next turn, from the same (heap or registered) buffer.
        Ok(n) if n > 0 && start + n < buf.len() => conn.resend = Some((buf, start + n)),
        Ok(n) if n > 0 || start == buf.len() => {
            // A registered buffer goes back to its pool as it is dropped here.
            if let SendBuf::Heap(mut buf) = buf {
                buf.clear();
                if conn.spare.capacity() == 0 && buf.capacity() <= MAX_SPARE_CAPACITY {
                    conn.spare = buf;
                }
            }
            for w in conn.writers.drain(..) {
                w.wake();
            }
        }
        Ok(_) => {
            tracing::debug!("send wrote nothing: closing");
            on_eof(core, conn);
        }
        Err(e) => {
            tracing::debug!("send failed: {e}");
            on_eof(core, conn);
        }
    }
}

/// Output buffers larger than this are freed after use rather than kept for the next response.
const MAX_SPARE_CAPACITY: usize = 256 * 1024;

/// Acts on every dirty connection: sends, receives armed or cancelled, shutdowns, closes.
pub(crate) fn flush(core: &Core, ring: &mut Ring) {
    let keys = std::mem::take(&mut *core.dirty.borrow_mut());
    let mut conns = core.conns.borrow_mut();
    for key in keys {
        let Some(conn) = conns.get_mut(key) else {
            continue;
        };
        conn.dirty = false;
        queue_send(core, key, conn, ring);
        if advance_state(core, key, conn, ring) {
            conns.remove(key);
        } else {
            timeouts::schedule(core, key, conn);
        }
    }
}

fn queue_send(core: &Core, key: ConnKey, conn: &mut Conn, ring: &mut Ring) {
    if conn.sending > 0 || conn.state == ConnState::Closed {
        return;
    }
    let (buf, offset) = match conn.resend.take() {
        Some(pending) => pending,
        None if !conn.out.is_empty() => match ring.fixed_copy(&conn.out) {
            // Output that fits a free registered send buffer is copied there (WRITE_FIXED);
            // `out` keeps its allocation for the next response, unless it grew large.
            Some(fixed) => {
                if conn.out.capacity() > MAX_SPARE_CAPACITY {
                    conn.out = std::mem::take(&mut conn.spare);
                }
                conn.out.clear();
                (SendBuf::Fixed(fixed), 0)
            }
            None => {
                let next = std::mem::take(&mut conn.spare);
                (SendBuf::Heap(std::mem::replace(&mut conn.out, next)), 0)
            }
        },
        None => return,
    };
    conn.sending = buf.len() - offset;
    conn.send_offset = offset;
    conn.send_since = core.now_ms();
    core.sends.set(core.sends.get() + 1);
    ring.send(&conn.fd, buf, offset, key.token());
}

/// Moves the connection along its lifecycle; true when it can be dropped (its operations
/// still in flight keep the socket open until they end).
fn advance_state(core: &Core, key: ConnKey, conn: &mut Conn, ring: &mut Ring) -> bool {
    let idle_out = conn.sending == 0 && conn.out.is_empty() && conn.resend.is_none();
    match conn.state {
        ConnState::Open => {
            // A peer that sends without reading our answers (GET_VALUES, refusals) is read no
            // further until it takes them: queued output stays bounded.
            let out_full = conn.backlog() > core.settings.max_output_buffer;
            if out_full && matches!(conn.recv, Recv::Armed(_)) {
                core.stats.hit(
                    Counter::OutputFull,
                    core.now(),
                    format_args!("connection not read: its output queue is full"),
                );
            }
            if conn.paused || out_full {
                cancel_recv(conn, ring);
            } else {
                arm_recv(key, conn, ring);
            }
        }
        ConnState::Draining { shutdown_sent } => {
            if !shutdown_sent && idle_out {
                conn.shutdown_at = core.now_ms();
                ring.shutdown_write(&conn.fd, key.token());
                conn.state = ConnState::Draining {
                    shutdown_sent: true,
                };
            }
            arm_recv(key, conn, ring);
        }
        ConnState::Closing => {
            if idle_out {
                conn.state = ConnState::Closed;
            }
        }
        ConnState::Closed => {}
    }
    if conn.state == ConnState::Closed {
        cancel_recv(conn, ring);
        return true;
    }
    false
}

fn arm_recv(key: ConnKey, conn: &mut Conn, ring: &mut Ring) {
    if conn.recv == Recv::Idle {
        conn.recv = Recv::Armed(ring.recv_multishot(&conn.fd, key.token()));
    }
}

fn cancel_recv(conn: &mut Conn, ring: &mut Ring) {
    if let Recv::Armed(op) = conn.recv {
        ring.cancel(op);
        conn.recv = Recv::Cancelling;
    }
}

/// Resumes reading on paused connections whose body buffers drained.
pub(crate) fn resume_paused(core: &Core) {
    if core.paused.borrow().is_empty() {
        return;
    }
    let Some(waker) = core.driver_waker() else {
        return;
    };
    let keys = std::mem::take(&mut *core.paused.borrow_mut());
    let mut conns = core.conns.borrow_mut();
    for key in keys {
        let Some(conn) = conns.get_mut(key) else {
            continue;
        };
        let ready = conn
            .requests
            .values()
            .all(|e| e.body.wants_more(&waker) && e.data.wants_more(&waker));
        if ready {
            conn.paused = false;
            core.mark_dirty(key, conn);
        } else {
            core.paused.borrow_mut().push(key);
        }
    }
}
