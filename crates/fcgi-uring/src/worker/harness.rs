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
use crate::conn::{self, ConnKey, Core, Io, OutQueue, Sending, Staged};
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
}

impl<S: HttpService> Harness<S> {
    /// A worker with the default configuration serving `service`, one connection accepted.
    ///
    /// A handler that does not finish on its first poll is spawned with
    /// `tokio::task::spawn_local`: call [`Harness::round`] inside a `LocalSet` for those.
    pub fn new(service: S) -> Harness<S> {
        let cfg = Config::default();
        let settings = conn::Settings {
            limits: std::sync::Arc::new(cfg.limits),
            max_body_buffer: cfg.max_body_buffer,
            max_output_buffer: cfg.max_output_buffer,
            max_conns: cfg.max_conns_per_worker,
            max_requests: cfg.max_requests_per_worker,
            timeouts: cfg.timeouts,
            ping: None,
            logs: None,
            allowed_peers: None,
        };
        let core = Rc::new(Core::new(
            settings,
            Arc::new(crate::stats::WorkerStats::default()),
            Arc::new(AtomicUsize::new(0)),
        ));
        let mut io = CopyIo::default();
        let key = core.accept(None);
        core.flush(&mut io);
        Harness {
            dispatcher: Dispatcher::new(core, Rc::new(RefCell::new(service))),
            key: key.unwrap_or_else(|| unreachable!("an empty worker accepts")),
            io,
            staged: Vec::new(),
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
}

/// Copies each send into `out`; every send is taken whole at once, as a non-blocking send the
/// socket has room for.
#[derive(Default)]
struct CopyIo {
    out: Vec<u8>,
}

impl Io for CopyIo {
    fn send(&mut self, _key: ConnKey, queue: &mut OutQueue) -> Sending {
        queue.queued().append_to(&mut self.out);
        queue.copied();
        Sending::Done
    }
    fn resend(&mut self, _key: ConnKey) {}
    fn arm_recv(&mut self, _key: ConnKey) {}
    fn cancel_recv(&mut self, _key: ConnKey) {}
    fn shutdown_write(&mut self, _key: ConnKey) {}
    fn cork(&mut self, _key: ConnKey) {}
    fn close(&mut self, _key: ConnKey, _abort: bool) {}
}
