//! The io_uring backend of the connection core: runs what the core asks ([`Io`]) as ring
//! operations, and turns completions into the core's inputs.
//!
//! Per connection it keeps the socket (shared with the ring's operations on it, so the socket
//! closes only when the core has dropped the connection and the last operation has ended),
//! the receive in flight (to cancel it), and the rest of a short send (resent from the same
//! heap or registered buffer). It decides nothing about the protocol or the lifecycle.
//!
//! With `ring.direct_send` (the default) an answer is first written with a non-blocking
//! `send(2)`; only what the socket does not take at once becomes a ring send. A direct send the
//! socket took whole is [`Sending::Done`]: the core settles it within the flush that made it.
//! The result of one it took in part, or that failed, is handed to the core by
//! [`Backend::report_sent`] after the core's flush, as a completion would have been.
//!
//! With `ring.direct_recv` (the default) a connection whose receive brings at least
//! [`DIRECT_RECV_FROM`] bytes (an upload) is switched to direct receives: its multishot
//! receive is cancelled, and once its final completion came a multishot poll is armed; each
//! readiness queues the connection, and [`Backend::read_ready`] reads it with `recv(2)` into
//! one buffer of the worker's, so an upload is handled while it is in the CPU caches (the
//! ring's receives fill the pool for every connection at once, and each buffer is cold by the
//! time it is copied out). Each read's bytes are handed to the core
//! ([`Core::on_bytes_owned`]), which gives a body that came whole in them to its handler as a
//! slice of them, uncopied; the buffer's allocation is reused once no body holds a slice. After [`SMALL_RUN`] small receives in a row the connection goes
//! back to provided buffers the same way. Order is kept: at most one of the two is armed on a
//! socket at a time (the next is armed only after the previous one's final completion), and
//! the worker reads a socket only while its poll is the armed receive.
//!
//! A ring receive that finds the provided-buffer pool empty ends (ENOBUFS; its data waits in
//! the socket). Armed again at once, it would find the pool as empty, end again, and so on
//! every turn: with more connections sending at once than the pool has buffers (4,096
//! connections on 256 buffers) the ring did a dozen such round trips per request. So with
//! `ring.direct_recv` such a connection switches to direct receives instead, and goes back to
//! the pool only after [`CALM_TURNS`] turns in which no receive found it empty.

#![forbid(unsafe_code)]

use super::{Completion, CompletionKind, OpId, ReadBuf, Ring, SendBuf, Token};
use crate::conn::{ConnKey, Core, Io, OutQueue, Sending, Sent, Staged};
use crate::sock::send_now;
use crate::stats::Counter;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

/// Token of the listener's accept operation (connection tokens never have bit 63 set).
pub(crate) const LISTENER_TOKEN: Token = 1 << 63;

/// How a connection receives (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiving {
    /// A multishot receive into provided buffers.
    Buffers,
    /// A multishot poll; the worker receives with `recv(2)`.
    Direct,
}

/// What the ring holds for one connection.
struct IoConn {
    key: ConnKey,
    fd: Rc<OwnedFd>,
    /// The receive (or poll) in flight, and which it is.
    recv: Option<(OpId, Receiving)>,
    /// How the next receive is armed.
    mode: Receiving,
    /// The backend ended the armed receive to switch `mode` (its final completion is to come).
    switching: bool,
    /// Direct receives in a row that were small (see [`SMALL_RUN`]).
    small_run: u8,
    /// In [`Receives::to_read`].
    queued: bool,
    /// The poll saw the peer's end (`POLLRDHUP`, `POLLHUP`, `POLLERR`): read on until a receive
    /// reports it. Its data and its end can come in one wakeup, after which no other comes.
    hangup: bool,
    /// Offset into the buffer of the send in flight where it started.
    send_offset: usize,
    /// What a short send left, to send again.
    resend: Option<(SendBuf, usize)>,
}

/// The ring and its per-connection state, indexed like the core's connection table.
pub(crate) struct Backend {
    pub ring: Ring,
    conns: Vec<Option<IoConn>>,
    /// Results of direct sends the core has not been told yet (those not taken whole).
    sent: Vec<(ConnKey, Sent)>,
    /// A direct send was made since the last report (one per flush, see [`DIRECT_MAX`]).
    sent_directly: bool,
    receives: Receives,
}

/// The direct receives' state (`ring.direct_recv`).
struct Receives {
    enabled: bool,
    /// A ring receive of at least this many bytes switches its connection to direct receives;
    /// a direct one of fewer is small (see [`SMALL_RUN`]): [`DIRECT_RECV_FROM`], or a whole
    /// provided buffer if smaller.
    bulk: usize,
    /// Connections to read directly this turn (a readiness came, or the last read filled its
    /// room in `rbuf`).
    to_read: Vec<ConnKey>,
    /// Connections whose armed receive is to be cancelled to switch mode (the ring is busy
    /// while completions are handled).
    to_switch: Vec<ConnKey>,
    /// What direct receives read into (allocated at the first).
    rbuf: ReadBuf,
    /// Connections switched to direct receives by an empty pool in the batch being reaped.
    dry_switches: u64,
    /// Turns in a row in which no ring receive found the pool empty (saturating).
    calm_turns: u8,
}

impl Receives {
    /// Whether connections may go back to provided buffers: the pool has not run dry for
    /// [`CALM_TURNS`] turns.
    fn calm(&self) -> bool {
        self.calm_turns >= CALM_TURNS
    }
}

/// A ring receive of this many bytes or more switches its connection to direct receives. A
/// request from a proxy with its headers is about 1 KiB; 4 KiB and 8 KiB uploads at 64
/// connections cost 6-9 % less CPU per request read directly than with a 16 KiB threshold,
/// GETs the same (docs/performance.md).
const DIRECT_RECV_FROM: usize = 4 * 1024;

/// Small direct receives (see [`Receives::bulk`]), this many in a row, switch a connection back
/// to provided buffers (a ring receive costs no system call).
const SMALL_RUN: u8 = 8;

/// Turns without an empty pool after which connections that read directly may go back to
/// provided buffers (after [`SMALL_RUN`] small receives, as always). Fewer let connections
/// switched by an empty pool return while it is still drained, to find it empty again.
const CALM_TURNS: u8 = 8;

/// Only answers up to this size are sent directly, and only the first of a flush: the other
/// answers of a flush go out as ring sends submitted in one system call, where a direct send
/// each would cost a system call each. Measured with every answer sent directly, whatever its
/// size: 64 connections did 8 % fewer requests/s, 64 KiB echoes at 16 connections 12 % fewer
/// (two rounds each).
const DIRECT_MAX: usize = 16 * 1024;

/// What a direct send attempt left to do.
enum Direct {
    /// The socket took every byte: the send is done.
    Whole,
    /// Its result (a failure) waits in `sent` for [`Backend::report_sent`].
    Reported,
    /// The ring sends the queue from this offset (0: no direct send was made).
    Rest(usize),
}

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
        let receives = Receives {
            enabled: ring.features().direct_recv,
            bulk: DIRECT_RECV_FROM.min(ring.recv_buffer_size()).max(1),
            to_read: Vec::new(),
            to_switch: Vec::new(),
            rbuf: ReadBuf::default(),
            dry_switches: 0,
            calm_turns: CALM_TURNS,
        };
        Backend {
            ring,
            conns: Vec::new(),
            sent: Vec::new(),
            sent_directly: false,
            receives,
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

    /// Accepts the connections waiting on the non-blocking `listener` while the core has
    /// room for them, without the ring. Returns how many; a failed accept is counted and
    /// logged as the ring's are, and leaves the rest in the queue.
    ///
    /// A stopping worker calls it once its multishot accept has ended: the kernel wakes one
    /// accept per connection (accepts wait exclusively), so a connection whose wakeup went to
    /// the accept just cancelled woke no other (the new process's, after a hot upgrade) and
    /// would wait in the queue until the next connection came.
    pub fn accept_queued(&mut self, core: &Core, listener: &OwnedFd, is_tcp: bool) -> usize {
        let mut n = 0;
        while !core.is_full() {
            let flags = rustix::net::SocketFlags::CLOEXEC;
            let accepted = match crate::sock::accept_now(listener.as_fd(), flags) {
                Ok(Some(fd)) => Ok(fd),
                Ok(None) => break,
                Err(e) => Err(e.into()),
            };
            if !on_accept(core, &mut self.conns, accepted, is_tcp) {
                break;
            }
            n += 1;
        }
        n
    }

    /// Reaps at most `max` completions into `core`; returns how many.
    pub fn complete(&mut self, core: &Core, max: usize, is_tcp: bool, f: &mut Followups) -> usize {
        let Backend {
            ring,
            conns,
            receives,
            ..
        } = self;
        let dry_before = ring.counters().pool_dry();
        let n = ring.complete_at_most(max, |c| on_completion(core, conns, receives, c, is_tcp, f));
        if ring.counters().pool_dry() == dry_before {
            receives.calm_turns = receives.calm_turns.saturating_add(1);
        } else {
            receives.calm_turns = 0;
        }
        if receives.dry_switches > 0 {
            ring.counters()
                .note_recv_switches(true, receives.dry_switches);
            receives.dry_switches = 0;
        }
        self.switch_modes();
        n
    }

    /// Reads each connection queued for a direct receive once, feeding the core; requests whose
    /// params are complete go to `staged`. Returns how many reads were made.
    pub fn read_ready(&mut self, core: &Core, staged: &mut Vec<Staged>) -> usize {
        if self.receives.to_read.is_empty() {
            return 0;
        }
        let Backend {
            ring,
            conns,
            receives,
            ..
        } = self;
        let keys = std::mem::take(&mut receives.to_read);
        let mut reads = 0;
        for &key in &keys {
            let Some(c) = io_conn(conns, key) else {
                continue;
            };
            c.queued = false;
            // Only while the poll is the armed receive: once it ended, a ring receive may be
            // armed next, and the data waits for it.
            if !matches!(c.recv, Some((_, Receiving::Direct))) {
                continue;
            }
            reads += 1;
            read_directly(core, c, receives, ring.counters(), staged);
        }
        // Keep the allocation of the list for the next turn.
        let mut keys = keys;
        keys.clear();
        if receives.to_read.is_empty() {
            receives.to_read = keys;
        }
        self.switch_modes();
        reads
    }

    /// Connections are queued for direct receives.
    pub fn has_reads(&self) -> bool {
        !self.receives.to_read.is_empty()
    }

    /// Cancels the armed receive of each connection that switches mode; its final completion
    /// lets the core arm the next one, in the new mode.
    fn switch_modes(&mut self) {
        let Backend {
            ring,
            conns,
            receives,
            ..
        } = self;
        for key in receives.to_switch.drain(..) {
            if let Some(c) = io_conn(conns, key)
                && c.switching
            {
                ring.counters()
                    .note_recv_switch(c.mode == Receiving::Direct);
                // None: it ended by itself meanwhile, and the core arms the next one.
                if let Some((op, _)) = c.recv {
                    ring.cancel(op);
                }
            }
        }
    }

    fn conn(&mut self, key: ConnKey) -> Option<&mut IoConn> {
        io_conn(&mut self.conns, key)
    }

    /// The direct send of `out` (`ring.direct_send`: the first answer of a flush, if small), and
    /// what it leaves: nothing (taken whole), a failure waiting for [`Backend::report_sent`],
    /// or the offset a ring send starts from (0: not sent directly, or the socket took
    /// nothing).
    fn send_directly(&mut self, key: ConnKey, out: &mut OutQueue) -> Direct {
        if !self.ring.features().direct_send || self.sent_directly || out.len() > DIRECT_MAX {
            return Direct::Rest(0);
        }
        self.sent_directly = true;
        let Some(c) = io_conn(&mut self.conns, key) else {
            self.sent.push((key, Sent::Failed));
            return Direct::Reported;
        };
        let counters = self.ring.counters();
        match send_now(c.fd.as_fd(), out.queued(), 0) {
            Ok(n) if n == out.len() => {
                counters.note_direct_send(true);
                out.copied();
                Direct::Whole
            }
            // No room, or room for part: the ring sends the rest once there is.
            Ok(n) => {
                counters.note_direct_send(false);
                Direct::Rest(n)
            }
            Err(e) => {
                tracing::debug!("send failed: {e}");
                self.sent.push((key, Sent::Failed));
                Direct::Reported
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
    fn send(&mut self, key: ConnKey, out: &mut OutQueue) -> Sending {
        let offset = match self.send_directly(key, out) {
            Direct::Whole => return Sending::Done,
            Direct::Reported => return Sending::Started,
            Direct::Rest(offset) => offset,
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
                return Sending::Started;
            }
            c.send_offset = 0;
            ring.send(&c.fd, buf, 0, key.token());
        }
        Sending::Started
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
            let op = match c.mode {
                Receiving::Buffers => ring.recv_multishot(&c.fd, key.token()),
                Receiving::Direct => ring.poll_readable(&c.fd, key.token()),
            };
            c.recv = Some((op, c.mode));
            c.switching = false;
        }
    }

    fn cancel_recv(&mut self, key: ConnKey) {
        if let Some(c) = self.conn(key) {
            c.switching = false;
            if let Some((op, _)) = c.recv.take() {
                self.ring.cancel(op);
            }
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
    receives: &mut Receives,
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
            let bulk = result.as_ref().is_ok_and(|d| d.len() >= receives.bulk);
            if let Some(io) = io {
                if !more {
                    io.recv = None;
                    if receives.enabled && is_pool_dry(&result) && io.mode == Receiving::Buffers {
                        // Its data waits in the socket: read it directly rather than arm a
                        // receive that finds the pool as empty (see the module doc).
                        io.mode = Receiving::Direct;
                        io.small_run = 0;
                        receives.dry_switches += 1;
                    }
                } else if bulk && receives.enabled {
                    switch_to(io, Receiving::Direct, receives);
                }
            }
            if !more {
                core.on_recv_ended(key);
            }
            on_recv(core, key, result, &mut f.staged);
        }
        CompletionKind::Readable { result, more } => {
            let Some(io) = io else {
                return;
            };
            match result {
                Ok(events) => io.hangup |= events & HANGUP != 0,
                Err(e) if e.raw_os_error() != Some(libc::ECANCELED) => {
                    // The socket cannot be polled: back to ring receives, which report why (or
                    // work), rather than arming a poll that fails again.
                    tracing::debug!("poll for readability failed: {e}; receiving through the ring");
                    io.mode = Receiving::Buffers;
                }
                Err(_) => {}
            }
            if !more {
                io.recv = None;
                core.on_recv_ended(key);
            } else if !io.queued {
                io.queued = true;
                receives.to_read.push(key);
            }
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
        mode: Receiving::Buffers,
        switching: false,
        small_run: 0,
        queued: false,
        hangup: false,
        send_offset: 0,
        resend: None,
    });
    true
}

/// Poll events that tell of the peer's end (or a failure a receive will report).
const HANGUP: u32 = (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as u32;

/// Asks for `io`'s armed receive to end so that the next one is armed in `mode` (once).
fn switch_to(io: &mut IoConn, mode: Receiving, receives: &mut Receives) {
    if io.mode != mode && !io.switching {
        io.mode = mode;
        io.switching = true;
        io.small_run = 0;
        receives.to_switch.push(io.key);
    }
}

/// One direct receive of `c` (its poll armed), handed to the core. A read that fills the room
/// of the buffer queues the connection again; a run of small ones switches it back to provided
/// buffers.
fn read_directly(
    core: &Core,
    c: &mut IoConn,
    receives: &mut Receives,
    counters: &crate::uring::RingCounters,
    staged: &mut Vec<Staged>,
) {
    let key = c.key;
    match receives.rbuf.recv(c.fd.as_fd()) {
        Ok((read, _)) if read.is_empty() => core.on_peer_gone(key),
        Ok((read, filled)) => {
            let n = read.len();
            core.on_bytes_owned(key, read, staged);
            counters.note_direct_recv();
            // More to read, or the end the poll saw with this data: no other readiness comes.
            if filled || c.hangup {
                c.queued = true;
                receives.to_read.push(key);
            }
            if n < receives.bulk {
                c.small_run = c.small_run.saturating_add(1);
                if c.small_run >= SMALL_RUN && receives.calm() {
                    switch_to(c, Receiving::Buffers, receives);
                }
            } else {
                c.small_run = 0;
            }
        }
        Err(rustix::io::Errno::AGAIN) => {}
        Err(rustix::io::Errno::INTR) => {
            c.queued = true;
            receives.to_read.push(key);
        }
        Err(e) => {
            tracing::debug!("receive failed: {e}");
            core.on_peer_gone(key);
        }
    }
}

/// A ring receive ended because the provided-buffer pool was empty (no data lost).
fn is_pool_dry(result: &io::Result<&[u8]>) -> bool {
    result
        .as_ref()
        .is_err_and(|e| e.raw_os_error() == Some(libc::ENOBUFS))
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
