//! The request path of one worker without IO, for deterministic measurements: bytes in ->
//! connection core -> dispatcher -> the service (polled inline, as the worker does) -> the
//! connection core's output out. Exposed with the `bench-internals` feature only; not a
//! stable API.
//!
//! It runs everything a worker runs per request except the socket and the ring: protocol
//! decoding, the request entry, building the `http::Request`, the handler, the CGI head and
//! STDOUT/END_REQUEST records, the flush and the send (taken whole, settled in the flush).
//! Callgrind counts its instructions per request and a counting allocator its allocations,
//! with no noise from the kernel or other processes. Sends are copied out, as the epoll
//! backend does.

use super::Dispatcher;
use crate::config::Config;
use crate::conn::{self, ConnKey, Core, Io, OutQueue, Sending, Sent, Staged};
use crate::service::HttpService;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

/// One worker's connection core and dispatcher with one connection open and an IO that copies
/// sends into a vector.
pub struct Harness<S> {
    dispatcher: Dispatcher<S>,
    key: ConnKey,
    io: CopyIo,
    staged: Vec<Staged>,
    /// Made by [`Harness::scripted`].
    scripted: bool,
}

impl<S: HttpService> Harness<S> {
    /// A worker with the default configuration serving `service`, one connection accepted.
    ///
    /// A handler that does not finish on its first poll is spawned with
    /// `tokio::task::spawn_local`: call [`Harness::round`] inside a `LocalSet` for those.
    pub fn new(service: S) -> Harness<S> {
        let cfg = Config::default();
        Harness::build(
            service,
            cfg.max_body_buffer,
            cfg.max_output_buffer,
            cfg.timeouts,
        )
    }

    /// A harness for scripts that drive the IO by hand ([`Harness::turn`] and what follows it):
    /// these limits and deadlines, a clock that moves only with [`Harness::advance`], sends
    /// taken whole or held until [`Harness::sent`] reports them, and paused connections resumed
    /// as a worker turn does.
    pub fn scripted(
        service: S,
        max_body_buffer: usize,
        max_output_buffer: usize,
        timeouts: crate::config::Timeouts,
    ) -> Harness<S> {
        let mut h = Harness::build(service, max_body_buffer, max_output_buffer, timeouts);
        h.scripted = true;
        h.dispatcher.core.set_driver_waker(std::task::Waker::noop());
        h
    }

    fn build(
        service: S,
        max_body_buffer: usize,
        max_output_buffer: usize,
        timeouts: crate::config::Timeouts,
    ) -> Harness<S> {
        let cfg = Config::default();
        let settings = conn::Settings {
            limits: std::sync::Arc::new(cfg.limits),
            max_body_buffer,
            max_output_buffer,
            max_conns: cfg.max_conns_per_worker,
            max_requests: cfg.max_requests_per_worker,
            timeouts,
            ping: None,
            logs: None,
            allowed_peers: None,
        };
        let core = Rc::new(Core::new(
            settings,
            Arc::new(crate::stats::WorkerStats::default()),
            Arc::new(AtomicUsize::new(0)),
        ));
        let mut io = CopyIo {
            whole: true,
            ..CopyIo::default()
        };
        let key = core.accept(None);
        core.flush(&mut io);
        Harness {
            dispatcher: Dispatcher::new(core, Rc::new(RefCell::new(service))),
            key: key.unwrap_or_else(|| unreachable!("an empty worker accepts")),
            io,
            staged: Vec::new(),
            scripted: false,
        }
    }

    /// One receive of `input` on the connection and what a worker's loop turn does with it:
    /// dispatch of the requests it completed, flush, send completion. Appends what was sent to
    /// `out`.
    pub fn round(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let core = &self.dispatcher.core;
        core.clock.update();
        // As a worker's turn: what was held while the connection was not to be read first.
        core.replay_held(&mut self.staged);
        core.on_bytes(self.key, input, &mut self.staged);
        for s in self.staged.drain(..) {
            self.dispatcher.dispatch(s);
        }
        self.io.out = std::mem::take(out);
        core.flush(&mut self.io);
        // As the worker loop does: a second flush only for what the first left changed.
        if core.has_dirty() {
            core.flush(&mut self.io);
        }
        *out = std::mem::take(&mut self.io.out);
    }

    /// A worker loop turn of a scripted harness: deadlines, paused connections resumed, held
    /// input replayed, then one receive of `input` if the connection has a receive armed (or
    /// one last receive racing its cancel), `owned` as the io_uring backend hands its buffer
    /// over (provided buffers, direct receives) or borrowed as epoll reads, dispatch and
    /// flush. Returns whether `input` was received (else the peer still has it to send).
    pub fn turn(&mut self, input: &[u8], owned: bool) -> bool {
        let core = &self.dispatcher.core;
        if !self.scripted {
            core.clock.update();
        }
        conn::expire(core);
        core.resume_paused();
        core.replay_held(&mut self.staged);
        let received = !input.is_empty() && self.io.may_receive();
        if received {
            if owned {
                let mut buf = bytes::BytesMut::from(input);
                core.on_bytes_owned(self.key, &mut buf, &mut self.staged);
            } else {
                core.on_bytes(self.key, input, &mut self.staged);
            }
        }
        for s in self.staged.drain(..) {
            self.dispatcher.dispatch(s);
        }
        core.flush(&mut self.io);
        if core.has_dirty() {
            core.flush(&mut self.io);
        }
        received
    }

    /// Sends are taken whole when made (`true`), or held in flight until [`Harness::sent`]
    /// reports them (as a send the socket had no room for: epoll's `WouldBlock`, a ring send).
    pub fn set_whole_sends(&mut self, whole: bool) {
        self.io.whole = whole;
    }

    /// Whether a send is in flight (not yet reported, or waiting for the core's resend).
    pub fn sending(&self) -> bool {
        self.io.in_flight.is_some()
    }

    /// Reports the send in flight: `None` failed (the peer reset the connection), `Some(n)`
    /// took `n` bytes (all of them if `n` is at least what was sent; a short send otherwise,
    /// whose rest the core resends). Returns false if there was nothing to report.
    pub fn sent(&mut self, n: Option<usize>) -> bool {
        if self.io.resend_due {
            return false;
        }
        let Some(bytes) = self.io.in_flight.as_mut() else {
            return false;
        };
        let core = &self.dispatcher.core;
        if self.io.closed {
            // As the backends report a send of a connection the core dropped.
            self.io.in_flight = None;
            core.on_sent(self.key, Sent::Failed);
            return true;
        }
        match n {
            None => {
                self.io.in_flight = None;
                core.on_sent(self.key, Sent::Failed);
            }
            Some(n) if n.max(1) >= bytes.len() => {
                self.io.out.extend_from_slice(bytes);
                self.io.in_flight = None;
                core.on_sent(self.key, Sent::All(None));
            }
            Some(n) => {
                // At least one byte: a send that wrote nothing failed or would block.
                let n = n.max(1);
                let rest = bytes.split_off(n);
                self.io.out.extend_from_slice(bytes);
                *bytes = rest;
                self.io.resend_due = true;
                core.on_sent(self.key, Sent::Part(n));
            }
        }
        true
    }

    /// The receive being cancelled ended (its final completion): the core may arm another.
    pub fn recv_ended(&mut self) {
        if std::mem::take(&mut self.io.cancelling) {
            self.dispatcher.core.on_recv_ended(self.key);
        }
    }

    /// Moves the clock on by `by` (a scripted harness's clock moves only so).
    pub fn advance(&mut self, by: std::time::Duration) {
        self.dispatcher.core.clock.advance(by);
    }

    /// The peer closed its side (EOF) or reset the connection.
    pub fn peer_gone(&mut self) {
        self.io.armed = false;
        self.io.cancelling = false;
        self.dispatcher.core.on_peer_gone(self.key);
    }

    /// The IO was told to close the connection while a send was under way or its rest waited
    /// to be resent: what the peer received may end within a record.
    pub fn was_cut(&self) -> bool {
        self.io.cut
    }

    /// Every byte the peer received so far.
    pub fn output(&self) -> &[u8] {
        &self.io.out
    }

    /// The connection is in the table and still takes requests.
    pub fn is_open(&self) -> bool {
        self.dispatcher
            .core
            .holdings(self.key)
            .is_some_and(|h| h.open)
    }

    /// The connection left the table, and the IO was told to close it.
    pub fn is_closed(&self) -> bool {
        self.dispatcher.core.conn_count() == 0 && self.io.closed
    }

    /// Whether the IO has a receive armed on the connection.
    pub fn reading(&self) -> bool {
        self.io.armed
    }

    /// No request in flight and no send outstanding.
    pub fn is_quiet(&self) -> bool {
        self.dispatcher.core.is_quiet()
    }

    /// What the connection holds, in bytes: its output queue (sends in flight included), the
    /// most any one of its requests' bodies holds (unread or staged), and input received while
    /// it was not to be read.
    pub fn held(&self) -> (usize, usize, usize) {
        self.dispatcher
            .core
            .holdings(self.key)
            .map_or((0, 0, 0), |h| (h.output, h.body, h.input))
    }
}

/// Copies each send into `out`: taken whole at once, as a non-blocking send the socket has
/// room for, or (scripted, not `whole`) held in flight until the script reports it.
#[derive(Default)]
struct CopyIo {
    out: Vec<u8>,
    whole: bool,
    in_flight: Option<Vec<u8>>,
    /// A short send was reported: the rest waits for [`Io::resend`].
    resend_due: bool,
    armed: bool,
    cancelling: bool,
    /// The receive cancelled delivered its one last receive.
    late: bool,
    closed: bool,
    /// Closed with a send under way (see [`Harness::was_cut`]).
    cut: bool,
}

impl CopyIo {
    /// A receive may complete now: one is armed, or one last one races its cancel.
    fn may_receive(&mut self) -> bool {
        if self.closed {
            return false;
        }
        if self.armed {
            return true;
        }
        if self.cancelling && !self.late {
            self.late = true;
            return true;
        }
        false
    }
}

impl Io for CopyIo {
    fn send(&mut self, _key: ConnKey, queue: &mut OutQueue) -> Sending {
        if self.whole {
            queue.queued().append_to(&mut self.out);
            queue.copied();
            Sending::Done
        } else {
            let mut bytes = Vec::new();
            queue.take().append_to(&mut bytes);
            self.in_flight = Some(bytes);
            Sending::Started
        }
    }
    fn resend(&mut self, _key: ConnKey) {
        self.resend_due = false;
    }
    fn arm_recv(&mut self, _key: ConnKey) {
        self.armed = true;
    }
    fn cancel_recv(&mut self, _key: ConnKey) {
        self.armed = false;
        self.cancelling = true;
        self.late = false;
    }
    fn shutdown_write(&mut self, _key: ConnKey) {}
    fn cork(&mut self, _key: ConnKey) {}
    fn close(&mut self, _key: ConnKey, _abort: bool) {
        self.closed = true;
        self.armed = false;
        self.cut |= self.in_flight.is_some();
        if std::mem::take(&mut self.resend_due) {
            // The rest of a short send is dropped with the connection, never reported.
            self.in_flight = None;
        }
    }
}
