//! The io_uring driver: the one module of the crate that holds `unsafe` code.
//!
//! It owns the ring, a ring-mapped provided-buffer pool for receives, and every buffer the
//! kernel may touch; its API is entirely safe. Guarantees:
//! - memory the kernel may write or read (receive buffers, send buffers) lives until the
//!   completion that ends the kernel's use of it has been reaped, also when the [`Ring`] is
//!   dropped with operations in flight (it cancels them and waits, or leaks the memory);
//! - submissions are batched: queued operations reach the kernel in one `io_uring_enter` per
//!   [`Ring::submit`] (or earlier only when the submission queue is full);
//! - setup failures name the cause and the fix ([`SetupError`]).
//!
//! File descriptors are not owned by the ring: the caller keeps each fd open until every
//! operation that references it has completed.

mod waiter;
pub use waiter::Waiter;

use std::fmt;
use std::io;
use std::os::fd::{OwnedFd, RawFd};

/// Caller's tag for an operation, handed back in its completions.
pub type Token = u64;

/// Identifies one submitted operation (for [`Ring::cancel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId(pub(crate) u64);

/// Ring and buffer sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// Submission queue entries (power of two).
    pub sq_entries: u32,
    /// Completion queue entries (power of two, >= sq_entries).
    pub cq_entries: u32,
    /// Provided receive buffers (power of two, at most 32768).
    pub recv_buffers: u16,
    /// Bytes per provided receive buffer.
    pub recv_buffer_size: u32,
    /// Use DEFER_TASKRUN (with SINGLE_ISSUER) when the kernel has it.
    pub defer_taskrun: bool,
}

impl Default for RingConfig {
    fn default() -> RingConfig {
        RingConfig {
            sq_entries: 1024,
            cq_entries: 4096,
            recv_buffers: 1024,
            recv_buffer_size: 16 * 1024,
            defer_taskrun: true,
        }
    }
}

/// What the kernel offered and what the ring uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    pub kernel: (u32, u32),
    pub single_issuer: bool,
    pub defer_taskrun: bool,
    pub coop_taskrun: bool,
    pub multishot_accept: bool,
    pub multishot_recv: bool,
    pub provided_buffer_ring: bool,
}

impl fmt::Display for Features {
    /// A compact list for the startup line, e.g.
    /// `kernel 6.18, multishot-accept, multishot-recv, buf-ring, single-issuer, defer-taskrun`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

/// Why a ring could not be set up: each variant's message names the cause and the fix.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// EPERM from io_uring_setup: a seccomp profile (Docker >= 25, containerd 2.x) blocks it.
    Blocked(io::Error),
    /// `kernel.io_uring_disabled` is 1 (and we are not in its group) or 2.
    Disabled {
        sysctl: u8,
    },
    /// ENOMEM: RLIMIT_MEMLOCK too small for the rings and buffers.
    Memlock(io::Error),
    /// A needed feature is missing (kernel too old).
    Unsupported {
        feature: &'static str,
        needs: &'static str,
    },
    /// Invalid configuration (sizes not powers of two and so on).
    Config(String),
    Other(io::Error),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

impl std::error::Error for SetupError {}

/// One completion, handed to the closure of [`Ring::complete`].
#[derive(Debug)]
pub struct Completion<'a> {
    pub token: Token,
    pub op: OpId,
    pub kind: CompletionKind<'a>,
}

/// What completed.
#[derive(Debug)]
pub enum CompletionKind<'a> {
    /// A connection from a multishot accept. `more == false`: the multishot ended; re-arm.
    Accept {
        result: io::Result<OwnedFd>,
        more: bool,
    },
    /// Bytes from a multishot receive, valid for the closure call only (the buffer returns to the
    /// pool afterwards). `Ok(&[])` is end of stream. `more == false` with `Ok` non-empty data or
    /// `Err(ENOBUFS)`: the multishot ended (pool ran dry, CQ overflow...); re-arm to go on.
    Recv {
        result: io::Result<&'a [u8]>,
        more: bool,
    },
    /// A send finished: bytes sent (may be short: send the rest), and the buffer back for reuse.
    Send {
        result: io::Result<usize>,
        buf: Vec<u8>,
    },
    /// A shutdown(2) finished.
    Shutdown { result: io::Result<()> },
}

/// A per-thread io_uring with its provided-buffer pool.
pub struct Ring {}

impl Ring {
    /// Creates the ring on the calling thread (the only thread that may use it: SINGLE_ISSUER).
    pub fn new(config: &RingConfig) -> Result<Ring, SetupError> {
        todo!()
    }

    pub fn features(&self) -> &Features {
        todo!()
    }

    /// The fd to register in an async reactor: readable when completions may be ready. After it
    /// reports readiness call [`Ring::acknowledge_wakeup`], then [`Ring::submit`] and
    /// [`Ring::complete`].
    pub fn wait_fd(&self) -> RawFd {
        todo!()
    }

    /// Consumes the readiness notification (reads the eventfd if one is used).
    pub fn acknowledge_wakeup(&mut self) {
        todo!()
    }

    /// Queues a multishot accept on a listening socket.
    pub fn accept_multishot(&mut self, listener: RawFd, token: Token) -> OpId {
        todo!()
    }

    /// Queues a multishot receive into the provided-buffer pool.
    pub fn recv_multishot(&mut self, fd: RawFd, token: Token) -> OpId {
        todo!()
    }

    /// Queues a send of `buf[offset..]` (MSG_NOSIGNAL); the buffer comes back in the completion.
    pub fn send(&mut self, fd: RawFd, buf: Vec<u8>, offset: usize, token: Token) -> OpId {
        todo!()
    }

    /// Queues shutdown(fd, SHUT_WR).
    pub fn shutdown_write(&mut self, fd: RawFd, token: Token) -> OpId {
        todo!()
    }

    /// Asks the kernel to cancel `op`; its final completion (often ECANCELED) still arrives.
    /// Cancelling an op that already ended is harmless.
    pub fn cancel(&mut self, op: OpId) {
        todo!()
    }

    /// Submits everything queued and runs deferred completions, in one `io_uring_enter`
    /// (with GETEVENTS when DEFER_TASKRUN is in use). Never blocks.
    pub fn submit(&mut self) -> io::Result<()> {
        todo!()
    }

    /// Like [`Ring::submit`] but blocks until at least one completion is ready.
    pub fn submit_and_wait(&mut self) -> io::Result<()> {
        todo!()
    }

    /// Hands every ready completion to `f`; returns how many. Internal completions (cancels,
    /// buffer bookkeeping) are not shown.
    pub fn complete(&mut self, f: impl FnMut(Completion<'_>)) -> usize {
        todo!()
    }

    /// Operations submitted or queued whose final completion has not been reaped.
    pub fn in_flight(&self) -> usize {
        todo!()
    }
}
