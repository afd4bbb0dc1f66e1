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
//! - the fd an operation works on stays open until the operation's final completion has been
//!   reaped: every operation holds a reference to it ([`OpFd`]), so a caller that drops its
//!   connection cannot close a socket the kernel still uses (or that a new connection reuses);
//! - a registered send buffer ([`FixedBuf`]) is sent only by the ring whose pool it came from:
//!   [`Ring::send`] refuses another ring's (the send completes with an error).
//!
//! Files: `setup.rs` (config checks, feature detection, errors), `buffers.rs` (the
//! provided-buffer ring), `sendbufs.rs` (registered send buffers), `ops.rs` (the in-flight op
//! table), `counters.rs` (what the ring did, for tests and tuning), `backend.rs` (runs the
//! connection core's `conn::Io` requests on the ring and feeds it the completions; no
//! `unsafe`); the [`Ring`] and `ReadBuf` (the buffer of the worker's own receives) are
//! here.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub(crate) mod backend;
mod buffers;
mod counters;
mod ops;
pub(crate) mod probe;
pub(crate) mod reactor;
mod sendbufs;
mod setup;
#[cfg(test)]
pub(crate) mod tests;
mod tick;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::io::Read;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{EnterFlags, IoUring, cqueue, opcode, squeue};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

pub use crate::config::RingConfig;
pub use crate::conn::OutBuf;
use buffers::{BUF_GROUP, BufRing, Lent, Order};
use counters::Tally;
pub use counters::{RingCounters, RingStats};
use ops::{INTERNAL, OpKind, OpTable, VectoredMsg};
pub use sendbufs::FixedBuf;
use sendbufs::SendPool;
use tick::Tick;

/// The buffer a worker's own receives read into (the epoll backend's, and the io_uring
/// backend's direct receives): each receive's bytes are handed to the connection core in the
/// buffer, which splits them off only to keep a request body as a slice of them
/// ([`crate::conn::Core::on_bytes_owned`]); bytes it did not keep are overwritten by the next
/// receive, with no reference count taken or dropped. The allocation is reused whole once
/// nothing holds a slice of it; while something does, receives read into what is left of it,
/// and a new one is taken when that is short. Receives read into the spare capacity: no byte
/// is written twice.
#[derive(Debug, Default)]
pub(crate) struct ReadBuf {
    buf: bytes::BytesMut,
}

impl ReadBuf {
    /// Bytes one receive reads at most (a connection with more waiting is read again).
    pub(crate) const MAX: usize = 256 * 1024;
    /// While a body holds a slice of the allocation, receives read into what is left of it as
    /// long as at least this much is.
    const MIN: usize = 64 * 1024;

    /// One non-blocking `recv(2)` on `fd`: the buffer holding its bytes and nothing else
    /// (empty: the peer closed), and whether they filled the room the receive had (more may be
    /// waiting). Bytes of the previous receive still in the buffer (not split off) are dropped.
    pub(crate) fn recv(
        &mut self,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> rustix::io::Result<(&mut bytes::BytesMut, bool)> {
        let buf = &mut self.buf;
        buf.clear();
        if buf.capacity() < Self::MAX && !buf.try_reclaim(Self::MAX) && buf.capacity() < Self::MIN {
            buf.reserve(Self::MAX);
        }
        let spare = buf.spare_capacity_mut();
        let room = spare.len().min(Self::MAX);
        let ((read, _), _) =
            rustix::net::recv(fd, &mut spare[..room], rustix::net::RecvFlags::DONTWAIT)?;
        let n = read.len();
        // SAFETY: `buf` is empty (cleared above), and recv(2) initialized the first `n` bytes
        // of its spare capacity (`read` is that prefix).
        unsafe { buf.set_len(n) };
        Ok((buf, n == room))
    }
}

/// Caller's tag for an operation, handed back in its completions.
pub type Token = u64;

/// Identifies one submitted operation (for [`Ring::cancel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId(pub(crate) u64);

/// The fd of an operation, shared with the caller: the ring keeps its clone until the
/// operation's final completion, so the fd is closed only after both let go of it.
#[derive(Debug, Clone)]
pub enum OpFd {
    /// An fd of this thread (a connection).
    Local(Rc<OwnedFd>),
    /// An fd shared between threads (a listener every worker accepts on).
    Shared(Arc<OwnedFd>),
}

impl OpFd {
    fn raw(&self) -> RawFd {
        match self {
            OpFd::Local(fd) => fd.as_raw_fd(),
            OpFd::Shared(fd) => fd.as_raw_fd(),
        }
    }
}

impl From<&Rc<OwnedFd>> for OpFd {
    fn from(fd: &Rc<OwnedFd>) -> OpFd {
        OpFd::Local(fd.clone())
    }
}

impl From<&Arc<OwnedFd>> for OpFd {
    fn from(fd: &Arc<OwnedFd>) -> OpFd {
        OpFd::Shared(fd.clone())
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
    /// COOP_TASKRUN's TASKRUN_FLAG.
    pub taskrun_flag: bool,
    pub sqpoll: bool,
    pub recv_bundle: bool,
    /// Registered send buffers (0: none).
    pub registered_send_buffers: u16,
    /// Answers are tried with a `send(2)` first (`RingConfig::direct_send`; never with SQPOLL).
    pub direct_send: bool,
    /// Uploads are received by the worker itself (`RingConfig::direct_recv`; never with SQPOLL).
    pub direct_recv: bool,
}

// `Display` (a compact list for the startup line, e.g.
// `kernel 6.18, multishot-accept, multishot-recv, buf-ring, single-issuer, defer-taskrun`)
// is in setup.rs.

/// Why a ring could not be set up: each variant's message names the cause and the fix.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// EPERM from io_uring_setup: a seccomp profile (Docker >= 25, containerd 2.x) blocks it.
    Blocked(io::Error),
    /// `kernel.io_uring_disabled` is 1 (and we are not in its group) or 2.
    Disabled { sysctl: u8 },
    /// ENOMEM: RLIMIT_MEMLOCK too small for the rings and buffers.
    Memlock(io::Error),
    /// ENOSYS from io_uring_setup: a kernel without io_uring, or a seccomp filter answering
    /// ENOSYS (rootless Podman).
    NotImplemented(io::Error),
    /// ENOMEM registering the send buffers: RLIMIT_MEMLOCK too small for them.
    MemlockSendBuffers {
        err: io::Error,
        count: u16,
        size: u32,
    },
    /// A needed feature is missing (kernel too old).
    Unsupported {
        feature: &'static str,
        needs: &'static str,
    },
    /// Invalid ring settings (sizes not powers of two, conflicting modes...).
    Config(crate::ConfigError),
    /// `registered_send_buffers` is on while SIGPIPE would terminate the process (WRITE_FIXED
    /// is a write(2), which raises SIGPIPE when the peer is gone).
    SigpipeFatal,
    /// The kernel refused to bind the SQPOLL thread to `sqpoll_cpu`.
    SqpollCpu { cpu: u32, err: io::Error },
    /// Any other failure of io_uring_setup or a registration.
    Other(io::Error),
}

// `Display` (cause and fix) is in setup.rs.

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
    ///
    /// `Err(ENOBUFS)` means every pool buffer was in use when data arrived. No data is lost (it
    /// stays in the socket), and the buffers of this `complete` call are back in the pool when
    /// [`Ring::complete`] returns: call [`Ring::recv_multishot`] again after it returns.
    Recv {
        result: io::Result<&'a [u8]>,
        more: bool,
    },
    /// A send finished: bytes sent (may be short: send the rest), and the buffer back for reuse
    /// (a registered one goes back to its pool when dropped).
    Send {
        result: io::Result<usize>,
        buf: SendBuf,
    },
    /// A shutdown(2) finished.
    Shutdown { result: io::Result<()> },
    /// The socket of a multishot poll ([`Ring::poll_readable`]) became readable (or closed or
    /// failed: a receive tells which); `Ok` holds the events the poll saw (`POLLIN`,
    /// `POLLRDHUP`...: wakeups that came before the completion was made share one).
    /// `more == false`: the poll ended (`Err(ECANCELED)` when cancelled, another error when it
    /// could not poll); arm it again to go on.
    Readable { result: io::Result<u32>, more: bool },
}

/// What a send sends from: heap output (one buffer, or pieces sent with one vectored write,
/// see [`OutBuf`]), or a registered buffer ([`Ring::fixed_copy`]).
#[derive(Debug)]
pub enum SendBuf {
    Heap(OutBuf),
    Fixed(FixedBuf),
}

impl SendBuf {
    /// Bytes it holds.
    pub fn len(&self) -> usize {
        match self {
            SendBuf::Heap(buf) => buf.len(),
            SendBuf::Fixed(buf) => buf.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The heap buffer, if it is one (its shared pieces released).
    pub fn into_heap(self) -> Option<Vec<u8>> {
        match self {
            SendBuf::Heap(buf) => Some(buf.into_vec()),
            SendBuf::Fixed(_) => None,
        }
    }
}

/// The message header of a vectored send of `buf` from `offset`: one iovec per piece.
fn vectored_msg(buf: &OutBuf, offset: usize) -> Box<VectoredMsg> {
    let mut iov = Vec::with_capacity(buf.shared_chunks() * 2 + 1);
    buf.each_piece(offset, |piece| {
        iov.push(libc::iovec {
            iov_base: piece.as_ptr() as *mut libc::c_void,
            iov_len: piece.len(),
        })
    });
    // SAFETY: `msghdr` is plain data for which all zeroes is valid (no address, no control
    // data, no iovecs); the iovecs are set below.
    let hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    let mut msg = Box::new(VectoredMsg { hdr, iov });
    msg.hdr.msg_iov = msg.iov.as_mut_ptr();
    msg.hdr.msg_iovlen = msg.iov.len();
    msg
}

impl From<Vec<u8>> for SendBuf {
    fn from(buf: Vec<u8>) -> SendBuf {
        SendBuf::Heap(OutBuf::from(buf))
    }
}

impl From<OutBuf> for SendBuf {
    fn from(buf: OutBuf) -> SendBuf {
        SendBuf::Heap(buf)
    }
}

impl From<FixedBuf> for SendBuf {
    fn from(buf: FixedBuf) -> SendBuf {
        SendBuf::Fixed(buf)
    }
}

/// An owned duplicate of the ring's wakeup eventfd, registered by [`Ring::register_wakeup`].
#[derive(Debug)]
pub struct WakeFd(OwnedFd);

impl AsRawFd for WakeFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// How long [`Ring`]'s `Drop` waits for cancelled operations before leaking their memory.
const DROP_REAP_LIMIT: Duration = Duration::from_secs(2);
/// One wait of that loop; the cancel is re-sent after each.
const DROP_REAP_STEP: Duration = Duration::from_millis(100);

/// A per-thread io_uring with its provided-buffer pool.
///
/// Not `Send`: with SINGLE_ISSUER only the creating thread may submit, so the ring stays on the
/// thread that created it.
///
/// Readiness: [`Ring::wait_fd`] is an eventfd registered with IORING_REGISTER_EVENTFD. The ring
/// fd itself is not used: with DEFER_TASKRUN, deferred completions do not wake an epoll waiting
/// on it (observed on Linux 6.18 by the test
/// `eventfd_reports_deferred_completions_to_edge_triggered_epoll`, which prints both). With
/// DEFER_TASKRUN the eventfd is late for a receive's deferred work when nothing waits in the
/// ring (9-16 ms on 6.18.44, which that test prints too): a worker that must answer promptly
/// waits in the ring itself, and `defer_taskrun` stays off by default. The
/// eventfd can also fire when nothing new is pending (the kernel signals it for completions
/// posted during our own `submit`): treat a wakeup as a hint, run `acknowledge_wakeup`,
/// `submit`, `complete`. A worker that waits in the ring itself needs no eventfd: it turns the
/// signals off meanwhile ([`Ring::quiet_completions`]) and on before it sleeps in its reactor
/// ([`Ring::wake_on_completions`]).
pub struct Ring {
    // Field order is drop order: the io_uring is closed before the buffers are freed.
    ring: IoUring,
    eventfd: File,
    /// Completions do not signal the eventfd (IORING_CQ_EVENTFD_DISABLED is set).
    eventfd_quiet: bool,
    bufs: BufRing,
    sends: Option<SendPool>,
    ops: OpTable,
    /// Entries that did not fit in the submission queue even after a submit (rare).
    backlog: VecDeque<squeue::Entry>,
    features: Features,
    counters: Arc<RingCounters>,
    tick: Tick,
    _single_thread: PhantomData<*mut ()>,
}

impl Ring {
    /// Creates the ring on the calling thread (the only thread that may use it: SINGLE_ISSUER).
    pub fn new(config: &RingConfig) -> Result<Ring, SetupError> {
        Ring::with_counters(config, Arc::default())
    }

    /// Like [`Ring::new`], counting what the ring does in `counters` (which another thread may
    /// read).
    pub fn with_counters(
        config: &RingConfig,
        counters: Arc<RingCounters>,
    ) -> Result<Ring, SetupError> {
        setup::validate(config)?;
        let kernel = setup::kernel_version();
        setup::check_required(kernel)?;
        if config.registered_send_buffers > 0 {
            setup::check_sigpipe()?;
        }
        let (ring, flags) = setup::build_ring(config)?;
        setup::check_opcodes(&ring, config)?;
        if config.recv_bundle {
            setup::check_bundle(&ring, kernel)?;
        }

        let eventfd = new_eventfd().map_err(SetupError::Other)?;
        ring.submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(|err| setup::classify(err, setup::io_uring_disabled_sysctl()))?;

        // Registered after the ring exists; the ring is closed before they are freed (field
        // order), so no failure below can free memory the kernel still knows.
        let sends = match config.registered_send_buffers {
            0 => None,
            count => {
                let pool =
                    SendPool::new(count, config.send_buffer_size).map_err(SetupError::Other)?;
                pool.register(&ring.submitter())
                    .map_err(|err| setup::classify_send_buffers(err, config))?;
                Some(pool)
            }
        };
        let order = if config.recv_bundle {
            Order::InRing
        } else {
            Order::Warm
        };
        let mut bufs = BufRing::new(config.recv_buffers, config.recv_buffer_size, order)
            .map_err(SetupError::Other)?;
        bufs.bound_window(u64::from(config.recv_window_bytes));
        bufs.register(&ring.submitter())
            .map_err(|err| match err.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOSYS) => SetupError::Unsupported {
                    feature: "provided buffer ring",
                    needs: "Linux >= 5.19",
                },
                _ => setup::classify(err, setup::io_uring_disabled_sysctl()),
            })?;

        let mut features = setup::version_features(kernel);
        features.single_issuer = flags.single_issuer;
        features.defer_taskrun = flags.defer_taskrun;
        features.coop_taskrun = flags.coop_taskrun;
        features.taskrun_flag = flags.taskrun_flag;
        features.sqpoll = flags.sqpoll;
        features.recv_bundle = config.recv_bundle;
        features.registered_send_buffers = config.registered_send_buffers;
        // SQPOLL is there to send without system calls: a direct send would be one.
        features.direct_send = config.direct_send && !flags.sqpoll;
        features.direct_recv = config.direct_recv && !flags.sqpoll;
        Ok(Ring {
            ring,
            eventfd,
            eventfd_quiet: false,
            bufs,
            sends,
            ops: OpTable::default(),
            backlog: VecDeque::new(),
            features,
            counters,
            tick: Tick::default(),
            _single_thread: PhantomData,
        })
    }

    /// What this ring did so far (shared: another thread may read it).
    pub fn counters(&self) -> &Arc<RingCounters> {
        &self.counters
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The fd to register in an async reactor: readable when completions may be ready. After it
    /// reports readiness call [`Ring::acknowledge_wakeup`], then [`Ring::submit`] and
    /// [`Ring::complete`].
    pub fn wait_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Registers (a duplicate of) [`Ring::wait_fd`] in the current tokio runtime's reactor,
    /// for readable, edge-triggered readiness. tokio >= 1.54 makes registering a raw fd
    /// `unsafe` (`AsyncFd::register_with_interest`); this keeps that inside the driver. Call it
    /// inside a tokio runtime with IO enabled (tokio panics otherwise). After each readiness:
    /// `guard.clear_ready()`, [`Ring::acknowledge_wakeup`], [`Ring::submit`], [`Ring::complete`].
    pub fn register_wakeup(&self) -> io::Result<AsyncFd<WakeFd>> {
        let wake = WakeFd(OwnedFd::from(self.eventfd.try_clone()?));
        // SAFETY: `WakeFd` owns its fd (a dup of the eventfd) and never changes it, so the fd
        // stays open and refers to the same eventfd for the whole life of the AsyncFd, as
        // `register_with_interest` requires. No memory is shared with the kernel here.
        Ok(unsafe { AsyncFd::register_with_interest(wake, Interest::READABLE) }?)
    }

    /// Completions stop signalling [`Ring::wait_fd`], for a worker that is about to wait in the
    /// ring itself or is busy: each signal costs the kernel a wakeup of the eventfd's waiters
    /// (its epoll's callback), about 1 % of a worker's CPU at every load. Kept on under SQPOLL,
    /// whose worker waits in its reactor.
    pub fn quiet_completions(&mut self) {
        if !self.eventfd_quiet && !self.features.sqpoll {
            self.ring.completion().disable_eventfd();
            self.eventfd_quiet = true;
        }
    }

    /// Completions signal [`Ring::wait_fd`] again, before the worker sleeps in its reactor.
    /// Returns whether completions are ready: those posted while they did not signal, and those
    /// of work the kernel had pending, which this runs (a submit). When true the worker must
    /// not sleep: nothing would wake it for them.
    pub fn wake_on_completions(&mut self) -> io::Result<bool> {
        if self.eventfd_quiet {
            self.ring.completion().enable_eventfd();
            self.eventfd_quiet = false;
            // The flag's store before the loads that follow (the queue, the kernel's
            // pending-work flag): work the kernel adds after them signals the eventfd.
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            self.submit()?;
        }
        Ok(self.has_completions())
    }

    /// Consumes the readiness notification (reads the eventfd if one is used).
    pub fn acknowledge_wakeup(&mut self) {
        let mut count = [0u8; 8];
        // Non-blocking: EAGAIN just means no notification was pending.
        let _ = (&self.eventfd).read(&mut count);
    }

    /// Queues a multishot accept on a listening socket (kept open until the accept ends).
    /// Accepted fds are close-on-exec.
    pub fn accept_multishot(&mut self, listener: impl Into<OpFd>, token: Token) -> OpId {
        let listener = listener.into();
        let entry = opcode::AcceptMulti::new(Fd(listener.raw()))
            .flags(libc::SOCK_CLOEXEC)
            .build();
        let user_data = self.ops.insert(token, OpKind::Accept, Some(listener));
        self.push(entry.user_data(user_data));
        OpId(user_data)
    }

    /// Queues a multishot receive into the provided-buffer pool (a bundle receive when the ring
    /// was configured with `recv_bundle`; its completions still come one buffer at a time).
    /// `fd` is kept open until the receive's final completion.
    pub fn recv_multishot(&mut self, fd: impl Into<OpFd>, token: Token) -> OpId {
        let fd = fd.into();
        let entry = if self.features.recv_bundle {
            opcode::RecvMultiBundle::new(Fd(fd.raw()), BUF_GROUP).build()
        } else {
            opcode::RecvMulti::new(Fd(fd.raw()), BUF_GROUP).build()
        };
        let user_data = self.ops.insert(token, OpKind::Recv, Some(fd));
        self.push(entry.user_data(user_data));
        OpId(user_data)
    }

    /// Queues a multishot poll for readability of `fd` (POLLIN, POLLRDHUP): each time data
    /// arrives, one [`CompletionKind::Readable`], and the worker receives itself. `fd` is kept
    /// open until the poll's final completion.
    pub fn poll_readable(&mut self, fd: impl Into<OpFd>, token: Token) -> OpId {
        let fd = fd.into();
        let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let entry = opcode::PollAdd::new(Fd(fd.raw()), mask).multi(true).build();
        let user_data = self.ops.insert(token, OpKind::Readable, Some(fd));
        self.push(entry.user_data(user_data));
        OpId(user_data)
    }

    /// Bytes of one provided receive buffer.
    pub fn recv_buffer_size(&self) -> usize {
        self.bufs.size() as usize
    }

    /// Copies `data` into a free registered send buffer. `None` when the ring has none, all are
    /// in use, or `data` is empty or larger than one.
    pub fn fixed_copy(&mut self, data: &[u8]) -> Option<FixedBuf> {
        self.sends.as_mut()?.fill(&[data])
    }

    /// Like [`Ring::fixed_copy`], for output in pieces (see [`OutBuf`]): the pieces one after
    /// the other. `None` at once when the ring has no registered send buffers.
    pub fn fixed_copy_out(&mut self, out: &OutBuf) -> Option<FixedBuf> {
        let pool = self.sends.as_mut()?;
        match out.contiguous() {
            Some(bytes) => pool.fill(&[bytes]),
            None => {
                let mut pieces: [&[u8]; crate::conn::MAX_PIECES] = [&[]; crate::conn::MAX_PIECES];
                let mut count = 0;
                out.each_piece(0, |piece| {
                    if let Some(slot) = pieces.get_mut(count) {
                        *slot = piece;
                        count += 1;
                    }
                });
                let pieces = pieces.get(..count).unwrap_or_default();
                // All of it or nothing (more pieces than an OutBuf makes would not fit the list).
                let copied = pieces.iter().map(|p| p.len()).sum::<usize>();
                (copied == out.len()).then(|| pool.fill(pieces)).flatten()
            }
        }
    }

    /// Queues a send of `buf[offset..]` on `fd` (kept open until the send completes); the
    /// buffer comes back in the completion. An `offset` past the end sends nothing; at most
    /// `u32::MAX` bytes go in one send. A heap buffer is sent with SEND (MSG_NOSIGNAL), a
    /// registered one with WRITE_FIXED (a write(2): EPIPE raises SIGPIPE, which [`Ring::new`]
    /// checked is not fatal). A registered buffer of another ring is not sent: its completion
    /// is an `InvalidInput` error with the buffer.
    pub fn send(
        &mut self,
        fd: impl Into<OpFd>,
        buf: impl Into<SendBuf>,
        offset: usize,
        token: Token,
    ) -> OpId {
        let fd = fd.into();
        let buf = buf.into();
        if let SendBuf::Fixed(fixed) = &buf
            && !self.sends.as_ref().is_some_and(|pool| pool.owns(fixed))
        {
            let user_data = self.ops.insert(token, OpKind::Refused(buf), None);
            self.push(opcode::Nop::new().build().user_data(user_data));
            return OpId(user_data);
        }
        let raw = fd.raw();
        let offset = offset.min(buf.len());
        let len = u32::try_from(buf.len() - offset).unwrap_or(u32::MAX);
        let user_data = self.ops.insert(token, OpKind::Send(buf, None), Some(fd));
        // The pointers are taken from the buffer where it now lives (the op table), which keeps
        // it, and the message header made for it, until the send's completion is reaped.
        let entry = match (
            self.ops.get_mut(user_data).map(|op| &mut op.kind),
            &self.sends,
        ) {
            (Some(OpKind::Send(SendBuf::Heap(buf), msg)), _) => match buf.contiguous() {
                Some(bytes) => opcode::Send::new(Fd(raw), bytes[offset..].as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build(),
                None => {
                    let msg = msg.insert(vectored_msg(buf, offset));
                    // SENDMSG rather than WRITEV: a write(2) to a peer gone raises SIGPIPE, a
                    // send with MSG_NOSIGNAL does not (tests: ..._raises_no_sigpipe).
                    opcode::SendMsg::new(Fd(raw), &msg.hdr)
                        .flags(libc::MSG_NOSIGNAL as u32)
                        .build()
                }
            },
            // `owns` was checked above: the buffer is one of this ring's registered ones.
            (Some(OpKind::Send(SendBuf::Fixed(buf), _)), Some(pool)) => {
                self.counters.tally(&Tally {
                    fixed_sends: 1,
                    ..Tally::default()
                });
                opcode::WriteFixed::new(Fd(raw), pool.addr(buf, offset), len, buf.index())
                    .offset(0)
                    .build()
            }
            _ => opcode::Nop::new().build(),
        };
        self.push(entry.user_data(user_data));
        OpId(user_data)
    }

    /// Queues shutdown(fd, SHUT_WR); `fd` is kept open until it completes.
    pub fn shutdown_write(&mut self, fd: impl Into<OpFd>, token: Token) -> OpId {
        let fd = fd.into();
        let entry = opcode::Shutdown::new(Fd(fd.raw()), libc::SHUT_WR).build();
        let user_data = self.ops.insert(token, OpKind::Shutdown, Some(fd));
        self.push(entry.user_data(user_data));
        OpId(user_data)
    }

    /// Asks the kernel to cancel `op`; its final completion (often ECANCELED) still arrives.
    /// Cancelling an op that already ended is harmless.
    pub fn cancel(&mut self, op: OpId) {
        if self.ops.get(op.0).is_none() {
            return; // Ended (its slot may hold a newer op with another generation).
        }
        let entry = opcode::AsyncCancel::new(op.0).build().user_data(INTERNAL);
        self.push(entry);
    }

    /// Submits everything queued and runs deferred completions, in one `io_uring_enter`
    /// (with GETEVENTS when DEFER_TASKRUN is in use). Never blocks.
    ///
    /// Transient refusals (EINTR, EAGAIN, EBUSY: the kernel is short of memory or the
    /// completion queue overflowed) return `Ok`: the entries stay queued for the next call, and
    /// reaping completions with [`Ring::complete`] makes room.
    pub fn submit(&mut self) -> io::Result<()> {
        self.enter(0, None)?;
        // Only when more than a whole submission queue was queued: one enter per queue-full.
        while !self.backlog.is_empty() {
            let before = self.backlog.len();
            self.enter(0, None)?;
            if self.backlog.len() == before {
                break;
            }
        }
        Ok(())
    }

    /// Like [`Ring::submit`] but blocks until at least one completion is ready. Returns at once
    /// when no operation is in flight (nothing could ever complete).
    pub fn submit_and_wait(&mut self) -> io::Result<()> {
        if self.ops.len() == 0 {
            return self.submit();
        }
        self.enter(1, None)
    }

    /// Like [`Ring::submit_and_wait`] but gives up after `timeout` (returning `Ok`).
    pub fn submit_and_wait_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if self.ops.len() == 0 {
            return self.submit();
        }
        self.enter(1, Some(timeout))
    }

    /// Starts the idle tick: a multishot timeout that completes every `period` until
    /// [`Ring::stop_tick`] (its completions are not shown by [`Ring::complete`]:
    /// [`Ring::take_tick`] tells). Before Linux 6.4 (no multishot timeouts) the kernel refuses
    /// it and [`Ring::wait_for_io`] waits at most `period` instead, a wait that ends with no
    /// completion counting as a tick. Queued here, submitted by the next enter.
    pub fn start_tick(&mut self, period: Duration) {
        if let Some(entry) = self.tick.start(period) {
            self.push(entry);
        }
    }

    /// Stops the idle tick (and forgets a tick not taken yet). Queued here, submitted by the
    /// next enter.
    pub fn stop_tick(&mut self) {
        if let Some(entry) = self.tick.stop() {
            self.push(entry);
        }
    }

    /// Whether the idle tick completed since the last call.
    pub fn take_tick(&mut self) -> bool {
        self.tick.take()
    }

    /// Submits what is queued and waits for a completion: until the idle tick's next one, or
    /// for at most `limit` if given (or the tick's period when no tick runs, see
    /// [`Ring::start_tick`]).
    pub fn wait_for_io(&mut self, limit: Option<Duration>) -> io::Result<()> {
        let untimed = limit.is_none() && self.tick.running();
        let timeout = match limit {
            Some(limit) => Some(limit),
            None if untimed => None,
            None => Some(self.tick.period()),
        };
        if self.ops.len() == 0 && !untimed {
            return self.submit();
        }
        self.enter(1, timeout)?;
        if limit.is_none() && !untimed && !self.has_completions() {
            self.tick.expired_wait();
        }
        Ok(())
    }

    /// Hands every ready completion to `f`; returns how many. Internal completions (cancels,
    /// buffer bookkeeping) are not shown. Receive buffers go back to the pool after `f` returns
    /// for their completion; the pool's tail is published once per call.
    pub fn complete(&mut self, f: impl FnMut(Completion<'_>)) -> usize {
        self.complete_at_most(usize::MAX, f)
    }

    /// Like [`Ring::complete`], but reaps at most `max` completions (internal ones included);
    /// the rest stay in the completion queue for the next call. Lets the caller send what it
    /// has answered before reading more.
    pub fn complete_at_most(&mut self, max: usize, mut f: impl FnMut(Completion<'_>)) -> usize {
        let Ring {
            ring,
            bufs,
            ops,
            counters,
            tick,
            ..
        } = self;
        let mut delivered = 0;
        let mut tally = Tally::default();
        let mut ran_dry = false;
        let (_, returned_before) = bufs.totals();
        let buf_size = bufs.size().max(1);
        for cqe in ring.completion().take(max) {
            let user_data = cqe.user_data();
            let res = cqe.result();
            let flags = cqe.flags();
            // Whatever happens below, buffers the kernel handed back return to the pool. A
            // bundle consumed as many consecutive buffers as its bytes fill (each is filled
            // before the next); a single receive never exceeds one buffer.
            let consumed = usize::try_from(res).map_or(1, |n| n.div_ceil(buf_size as usize).max(1));
            let lent = cqueue::buffer_select(flags).and_then(|bid| bufs.take_bundle(bid, consumed));
            if tick.owns(user_data) {
                tick.on_completion(user_data, res, cqueue::more(flags));
                continue;
            }
            let Some(op) = ops.get(user_data) else {
                // INTERNAL (cancel results) or unknown: swallowed.
                if let Some(buf) = lent {
                    bufs.recycle(buf);
                }
                continue;
            };
            let token = op.token;
            let shape = Shape::of(&op.kind);
            let more = cqueue::more(flags)
                && matches!(shape, Shape::Accept | Shape::Recv | Shape::Readable);
            let ended = if more { None } else { ops.remove(user_data) };
            let op = OpId(user_data);
            match shape {
                Shape::Recv if lent.as_ref().is_some_and(|b| BufRing::lent_count(b) > 1) => {
                    // A bundle: one completion per buffer, in order; only the last one carries
                    // the multishot's `more`.
                    let buf = lent.as_ref().expect("checked above");
                    let n = BufRing::lent_count(buf);
                    tally.recv_completions += 1;
                    tally.recv_buffers += n as u64;
                    tally.multi_buffer_recvs += 1;
                    match bufs.chunks(buf, res as usize) {
                        Some(chunks) => {
                            for (i, data) in chunks.enumerate() {
                                let kind = CompletionKind::Recv {
                                    result: Ok(data),
                                    more: more || i + 1 < n,
                                };
                                f(Completion { token, op, kind });
                            }
                        }
                        None => {
                            let kind = CompletionKind::Recv {
                                result: Err(io::Error::other(
                                    "io_uring bundle completion larger than its buffers",
                                )),
                                more,
                            };
                            f(Completion { token, op, kind });
                        }
                    }
                }
                _ => {
                    let kind = match shape {
                        Shape::Accept => CompletionKind::Accept {
                            result: accept_result(res),
                            more,
                        },
                        Shape::Recv => {
                            if res > 0 {
                                tally.recv_completions += 1;
                                tally.recv_buffers += lent.is_some() as u64;
                                if lent.is_some() {
                                    bufs.filled(token, res as usize);
                                }
                            } else if res == -libc::ENOBUFS {
                                bufs.ran_dry(token);
                                ran_dry = true;
                                tally.recv_pool_dry += 1;
                            }
                            CompletionKind::Recv {
                                result: recv_result(res, lent.as_ref(), bufs),
                                more,
                            }
                        }
                        Shape::Send => {
                            let (buf, refused) = match ended.map(|op| op.kind) {
                                Some(OpKind::Send(buf, _)) => (buf, false),
                                Some(OpKind::Refused(buf)) => (buf, true),
                                _ => (SendBuf::from(Vec::new()), false),
                            };
                            let result = if refused {
                                Err(io::Error::new(
                                    io::ErrorKind::InvalidInput,
                                    "registered send buffer of another ring",
                                ))
                            } else {
                                result_of(res).map(|n| n as usize)
                            };
                            if let SendBuf::Fixed(fixed) = &buf
                                && usize::try_from(res).is_ok_and(|n| n > 0 && n < fixed.len())
                            {
                                tally.fixed_short_sends += 1;
                            }
                            CompletionKind::Send { result, buf }
                        }
                        Shape::Readable => CompletionKind::Readable {
                            result: result_of(res),
                            more,
                        },
                        Shape::Shutdown => CompletionKind::Shutdown {
                            result: result_of(res).map(drop),
                        },
                    };
                    f(Completion { token, op, kind });
                }
            }
            delivered += 1;
            if let Some(buf) = lent {
                bufs.recycle(buf);
            }
        }
        let (_, returned_after) = bufs.totals();
        if returned_after != returned_before || ran_dry {
            bufs.publish();
            tally.recv_buffers_returned = returned_after - returned_before;
        }
        counters.tally(&tally);
        delivered
    }

    /// Whether completions wait in the completion queue (without entering the kernel: with
    /// DEFER_TASKRUN, or COOP_TASKRUN work pending, only [`Ring::submit`] makes them appear).
    pub fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Operations submitted or queued whose final completion has not been reaped.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Puts an entry in the submission queue, submitting first if the queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        if self.backlog.is_empty() && self.ring.submission().is_full() {
            // An error here resurfaces from the next `submit`; the entry waits in the backlog.
            let _ = self.enter(0, None);
        }
        if !self.backlog.is_empty() || !self.try_push(&entry) {
            self.backlog.push_back(entry);
        }
    }

    fn try_push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: the entry references only memory that outlives the operation: a send's buffer
        // (and, for a vectored one, its boxed message header, the iovecs and the shared chunks
        // they point to) is owned by the op table until the send's completion is reaped,
        // receives use the buffer ring (freed only after every operation was reaped, or
        // leaked), and the other entries reference no memory at all. The fd of each operation
        // is held open by its entry in the op table until its final completion is reaped.
        unsafe { self.ring.submission().push(entry) }.is_ok()
    }

    fn flush_backlog(&mut self) {
        while let Some(entry) = self.backlog.front() {
            let entry = entry.clone();
            if !self.try_push(&entry) {
                break;
            }
            self.backlog.pop_front();
        }
    }

    /// One io_uring_enter: submits the queue, runs deferred work (GETEVENTS), and waits for
    /// `want` completions (bounded by `timeout` if given). With SQPOLL the kernel thread
    /// submits: we enter only to wake it, to wait, or to flush an overflowed queue.
    fn enter(&mut self, want: u32, timeout: Option<Duration>) -> io::Result<()> {
        self.flush_backlog();
        let (to_submit, cq_overflow, taskrun) = {
            let sq = self.ring.submission();
            (sq.len() as u32, sq.cq_overflow(), sq.taskrun())
        };
        let result = if self.features.sqpoll {
            if want == 0 && to_submit == 0 && !cq_overflow {
                // Nothing to hand over: leave a sleeping SQ thread asleep.
                return Ok(());
            }
            self.enter_sqpoll(want, timeout)
        } else {
            let mut flags = EnterFlags::empty();
            // With DEFER_TASKRUN, completions are only posted by an enter with GETEVENTS; with
            // TASKRUN_FLAG, the kernel says when COOP_TASKRUN work waits for one.
            if self.features.defer_taskrun || want > 0 || cq_overflow || taskrun {
                flags |= EnterFlags::GETEVENTS;
            }
            if flags.is_empty() && to_submit == 0 {
                return Ok(());
            }
            let submitter = self.ring.submitter();
            match timeout {
                // SAFETY: `to_submit` counts entries we pushed, each of which references only
                // memory that outlives its operation (see `try_push`); no extended argument.
                None => unsafe {
                    submitter.enter::<libc::sigset_t>(to_submit, want, flags.bits(), None)
                },
                Some(timeout) => {
                    let timespec = Timespec::from(timeout);
                    let args = SubmitArgs::new().timespec(&timespec);
                    submitter.submit_with_args(want as usize, &args)
                }
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY | libc::ETIME)
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// [`Ring::enter`] under SQPOLL: the io-uring crate's submit skips the system call while
    /// the SQ thread is awake and adds IORING_ENTER_SQ_WAKEUP when it sleeps.
    fn enter_sqpoll(&mut self, want: u32, timeout: Option<Duration>) -> io::Result<usize> {
        if self.ring.submission().need_wakeup() {
            self.counters.tally(&Tally {
                sqpoll_wakeups: 1,
                ..Tally::default()
            });
        }
        let submitter = self.ring.submitter();
        match timeout {
            None => submitter.submit_and_wait(want as usize),
            Some(timeout) => {
                let timespec = Timespec::from(timeout);
                let args = SubmitArgs::new().timespec(&timespec);
                submitter.submit_with_args(want as usize, &args)
            }
        }
    }
}

impl Drop for Ring {
    /// Cancels every operation and reaps until none remains (bounded by [`DROP_REAP_LIMIT`]);
    /// if some never end, leaks the memory they may still use instead of freeing it.
    fn drop(&mut self) {
        // Entries still in the backlog never reached the kernel.
        for entry in std::mem::take(&mut self.backlog) {
            self.ops.remove(entry.get_user_data());
        }
        let deadline = Instant::now() + DROP_REAP_LIMIT;
        while self.ops.len() > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let cancel_all = opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(INTERNAL);
            self.push(cancel_all);
            if self.enter(1, Some(left.min(DROP_REAP_STEP))).is_err() {
                break;
            }
            // Accepted fds are closed, send buffers dropped.
            self.complete(|_| {});
        }
        let clean = self.ops.len() == 0 && self.bufs.unregister(&self.ring.submitter()).is_ok();
        if !clean {
            tracing::error!(
                in_flight = self.ops.len(),
                "io_uring operations did not end at drop: leaking their buffers"
            );
            self.bufs.leak();
            if let Some(pool) = &mut self.sends {
                pool.leak();
            }
            self.ops.leak();
            #[cfg(test)]
            LEAKED_AT_DROP.with(|n| n.set(n.get() + 1));
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Rings dropped on this thread that took the leak path (tests assert it stays 0).
    pub(crate) static LEAKED_AT_DROP: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Which kind an op is, without what it owns.
#[derive(Clone, Copy)]
enum Shape {
    Accept,
    Recv,
    Readable,
    Send,
    Shutdown,
}

impl Shape {
    fn of(kind: &OpKind) -> Shape {
        match kind {
            OpKind::Accept => Shape::Accept,
            OpKind::Recv => Shape::Recv,
            OpKind::Readable => Shape::Readable,
            OpKind::Send(..) | OpKind::Refused(_) => Shape::Send,
            OpKind::Shutdown => Shape::Shutdown,
        }
    }
}

/// A CQE result: `-errno` or a non-negative value.
fn result_of(res: i32) -> io::Result<u32> {
    u32::try_from(res).map_err(|_| io::Error::from_raw_os_error(res.saturating_neg()))
}

fn accept_result(res: i32) -> io::Result<OwnedFd> {
    let fd = result_of(res)?;
    // SAFETY: a non-negative accept result is a new fd the kernel just installed in our table;
    // nothing else knows it, so we are its only owner. (No memory is involved.)
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn recv_result<'a>(res: i32, lent: Option<&'a Lent>, bufs: &'a BufRing) -> io::Result<&'a [u8]> {
    let len = result_of(res)? as usize;
    if len == 0 {
        return Ok(&[]);
    }
    let bytes = lent.and_then(|buf| bufs.bytes(buf, len));
    bytes.ok_or_else(|| io::Error::other("io_uring recv completion without a valid buffer"))
}

fn new_eventfd() -> io::Result<File> {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: eventfd just returned this fd; nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}
