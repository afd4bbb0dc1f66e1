//! The io_uring backend of the connection core: runs what the core asks ([`Io`]) as ring
//! operations, and turns completions into the core's inputs.
//!
//! Per connection it keeps the socket (shared with the ring's operations on it, so the socket
//! closes only when the core has dropped the connection and the last operation has ended),
//! the receive in flight (to cancel it), and the rest of a short send (resent from the same
//! heap or registered buffer). It decides nothing about the protocol or the lifecycle.
//!
//! With `ring.direct_send` (the default) an answer is first written with a non-blocking
//! `send(2)`; only what the socket does not take at once becomes a ring send. A direct send's
//! result is handed to the core by [`Backend::report_sent`] after the core's flush, as its
//! completion would have been: the core sees the same `Sent` sequence either way.

#![forbid(unsafe_code)]

use super::{Completion, CompletionKind, OpId, Ring, SendBuf, Token};
use crate::conn::{ConnKey, Core, Io, OutQueue, Sent, Staged};
use crate::sock::send_now;
use crate::stats::Counter;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

/// Token of the listener's accept operation (connection tokens never have bit 63 set).
pub(crate) const LISTENER_TOKEN: Token = 1 << 63;

/// What the ring holds for one connection.
struct IoConn {
    key: ConnKey,
    fd: Rc<OwnedFd>,
    recv: Option<OpId>,
    /// Offset into the buffer of the send in flight where it started.
    send_offset: usize,
    /// What a short send left, to send again.
    resend: Option<(SendBuf, usize)>,
}

/// The ring and its per-connection state, indexed like the core's connection table.
pub(crate) struct Backend {
    pub ring: Ring,
    conns: Vec<Option<IoConn>>,
    /// Results of direct sends the core has not been told yet.
    sent: Vec<(ConnKey, Sent)>,
    /// A direct send was made since the last report (one per flush, see [`DIRECT_MAX`]).
    sent_directly: bool,
}

/// Only answers up to this size are sent directly, and only the first of a flush: the other
/// answers of a flush go out as ring sends submitted in one system call, where a direct send
/// each would cost a system call each. Measured with every answer sent directly, whatever its
/// size: 64 connections did 8 % fewer requests/s, 64 KiB echoes at 16 connections 12 % fewer
/// (two rounds each).
const DIRECT_MAX: usize = 16 * 1024;

/// What the completions of one batch leave for the worker loop.
#[derive(Default)]
pub(crate) struct Followups {
    pub staged: Vec<Staged>,
    pub rearm_accept: bool,
    /// The accept that ended failed: pause before arming it again.
    pub accept_failed: bool,
}

impl Backend {
    pub fn new(ring: Ring) -> Backend {
        Backend {
            ring,
            conns: Vec::new(),
            sent: Vec::new(),
            sent_directly: false,
        }
    }

    /// Hands the core the results of the direct sends of its last flush; returns how many
    /// (each may leave its connection with more to flush).
    pub fn report_sent(&mut self, core: &Core) -> usize {
        self.sent_directly = false;
        let n = self.sent.len();
        for (key, sent) in self.sent.drain(..) {
            core.on_sent(key, sent);
        }
        n
    }

    /// Arms the multishot accept on `listener`.
    pub fn arm_accept(&mut self, listener: &Arc<OwnedFd>) -> OpId {
        self.ring.accept_multishot(listener, LISTENER_TOKEN)
    }

    /// Reaps at most `max` completions into `core`; returns how many.
    pub fn complete(&mut self, core: &Core, max: usize, is_tcp: bool, f: &mut Followups) -> usize {
        let Backend { ring, conns, .. } = self;
        ring.complete_at_most(max, |c| on_completion(core, conns, c, is_tcp, f))
    }

    fn conn(&mut self, key: ConnKey) -> Option<&mut IoConn> {
        io_conn(&mut self.conns, key)
    }

    /// The direct send of `out` (`ring.direct_send`: the first answer of a flush, if small):
    /// `None` when the send is over (sent whole, or failed; its result waits for
    /// [`Backend::report_sent`]), else the offset a ring send starts from (0: not sent directly,
    /// or the socket took nothing).
    fn send_directly(&mut self, key: ConnKey, out: &mut OutQueue) -> Option<usize> {
        if !self.ring.features().direct_send || self.sent_directly || out.len() > DIRECT_MAX {
            return Some(0);
        }
        self.sent_directly = true;
        let Some(c) = io_conn(&mut self.conns, key) else {
            self.sent.push((key, Sent::Failed));
            return None;
        };
        let counters = self.ring.counters();
        match send_now(c.fd.as_fd(), out.queued(), 0) {
            Ok(n) if n == out.len() => {
                counters.note_direct_send(true);
                out.copied();
                self.sent.push((key, Sent::All(None)));
                None
            }
            // No room, or room for part: the ring sends the rest once there is.
            Ok(n) => {
                counters.note_direct_send(false);
                Some(n)
            }
            Err(e) => {
                tracing::debug!("send failed: {e}");
                self.sent.push((key, Sent::Failed));
                None
            }
        }
    }
}

/// The ring's state of connection `key`, if that connection (not a later one in its slot) is
/// still there. A free function so that callers can hold the ring at the same time.
fn io_conn(conns: &mut [Option<IoConn>], key: ConnKey) -> Option<&mut IoConn> {
    conns
        .get_mut(key.index())?
        .as_mut()
        .filter(|c| c.key == key)
}

impl Io for Backend {
    fn send(&mut self, key: ConnKey, out: &mut OutQueue) {
        let Some(offset) = self.send_directly(key, out) else {
            return;
        };
        // Output that fits a free registered send buffer is copied there (WRITE_FIXED), its
        // shared body chunks too (registered buffers are for every response that fits one);
        // the queue keeps its allocation for the next response.
        let fixed = self.ring.fixed_copy_out(out.queued());
        let buf = match fixed {
            Some(fixed) => {
                out.copied();
                SendBuf::Fixed(fixed)
            }
            None => SendBuf::Heap(out.take()),
        };
        let Backend {
            ring, conns, sent, ..
        } = self;
        if let Some(c) = io_conn(conns, key) {
            if offset > 0 {
                // Reported as a completion would report it; the core asks for the rest.
                c.resend = Some((buf, offset));
                sent.push((key, Sent::Part(offset)));
                return;
            }
            c.send_offset = 0;
            ring.send(&c.fd, buf, 0, key.token());
        }
    }

    fn resend(&mut self, key: ConnKey) {
        let Backend { ring, conns, .. } = self;
        if let Some(c) = io_conn(conns, key)
            && let Some((buf, offset)) = c.resend.take()
        {
            c.send_offset = offset;
            ring.send(&c.fd, buf, offset, key.token());
        }
    }

    fn arm_recv(&mut self, key: ConnKey) {
        let Backend { ring, conns, .. } = self;
        if let Some(c) = io_conn(conns, key) {
            c.recv = Some(ring.recv_multishot(&c.fd, key.token()));
        }
    }

    fn cancel_recv(&mut self, key: ConnKey) {
        if let Some(op) = self.conn(key).and_then(|c| c.recv.take()) {
            self.ring.cancel(op);
        }
    }

    fn cork(&mut self, key: ConnKey) {
        if let Some(c) = io_conn(&mut self.conns, key) {
            // Synchronous: it takes effect before the send submitted after it.
            let _ = rustix::net::sockopt::set_tcp_cork(&*c.fd, true);
        }
    }

    fn shutdown_write(&mut self, key: ConnKey) {
        let Backend { ring, conns, .. } = self;
        if let Some(c) = io_conn(conns, key) {
            ring.shutdown_write(&c.fd, key.token());
        }
    }

    fn close(&mut self, key: ConnKey, abort: bool) {
        let Some(slot) = self.conns.get_mut(key.index()) else {
            return;
        };
        if !slot.as_ref().is_some_and(|c| c.key == key) {
            return;
        }
        if let Some(c) = slot.take()
            && abort
        {
            // A send stuck on a peer that stopped reading completes (with an error), and the
            // ring lets go of the socket.
            let _ = socket2::SockRef::from(&*c.fd).shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Handles one completion. Never touches the ring (the caller is reaping it).
fn on_completion(
    core: &Core,
    conns: &mut Vec<Option<IoConn>>,
    c: Completion<'_>,
    is_tcp: bool,
    f: &mut Followups,
) {
    if c.token == LISTENER_TOKEN {
        if let CompletionKind::Accept { result, more } = c.kind {
            let failed = !on_accept(core, conns, result, is_tcp);
            f.rearm_accept |= !more;
            f.accept_failed |= failed && !more;
        }
        return;
    }
    let Some(key) = ConnKey::from_token(c.token) else {
        return;
    };
    let io = io_conn(conns, key);
    match c.kind {
        CompletionKind::Recv { result, more } => {
            if !more {
                if let Some(io) = io {
                    io.recv = None;
                }
                core.on_recv_ended(key);
            }
            on_recv(core, key, result, &mut f.staged);
        }
        // Reported also for a connection already dropped (the core counts sends in flight).
        CompletionKind::Send { result, buf } => core.on_sent(key, on_send(io, result, buf)),
        CompletionKind::Shutdown { .. } | CompletionKind::Accept { .. } => {}
    }
}

/// Takes a new connection; false when accept itself failed (not for our own cancel).
fn on_accept(
    core: &Core,
    conns: &mut Vec<Option<IoConn>>,
    result: io::Result<OwnedFd>,
    is_tcp: bool,
) -> bool {
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
    let peer = if core.checks_peers() {
        crate::server::listener::peer_ip(std::os::fd::AsFd::as_fd(&fd))
    } else {
        None
    };
    let Some(key) = core.accept(peer) else {
        return true; // refused: the socket closes here
    };
    if is_tcp {
        let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
    }
    if conns.len() <= key.index() {
        conns.resize_with(key.index() + 1, || None);
    }
    conns[key.index()] = Some(IoConn {
        key,
        fd: Rc::new(fd),
        recv: None,
        send_offset: 0,
        resend: None,
    });
    true
}

fn on_recv(core: &Core, key: ConnKey, result: io::Result<&[u8]>, staged: &mut Vec<Staged>) {
    match result {
        Ok([]) => core.on_peer_gone(key),
        Ok(data) => core.on_bytes(key, data, staged),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::ECANCELED) => {}
            _ => {
                tracing::debug!("receive failed: {e}");
                core.on_peer_gone(key);
            }
        },
    }
}

/// What a send completion means for the core; a short send keeps the rest for `resend`.
fn on_send(io: Option<&mut IoConn>, result: io::Result<usize>, buf: SendBuf) -> Sent {
    let Some(io) = io else {
        return Sent::Failed; // the connection is gone; the core only counts it
    };
    let start = io.send_offset;
    match result {
        // A short send: the rest goes out next turn, from the same (heap or registered) buffer.
        Ok(n) if n > 0 && start + n < buf.len() => {
            io.resend = Some((buf, start + n));
            Sent::Part(n)
        }
        // A registered buffer goes back to its pool as it is dropped here.
        Ok(n) if n > 0 || start == buf.len() => Sent::All(buf.into_heap()),
        Ok(_) => {
            tracing::debug!("send wrote nothing: closing");
            Sent::Failed
        }
        Err(e) => {
            tracing::debug!("send failed: {e}");
            Sent::Failed
        }
    }
}
