//! One worker thread: pinned, with its own ring (or epoll instance, [`crate::epoll`]), its own
//! current-thread tokio runtime (so handlers can use timers, tokio sockets and tokio-based
//! clients) and its own service.
//!
//! One loop turn: expire deadlines, resume paused connections, let the connection core act on
//! what changed ([`Core::flush`] through the ring backend), submit everything in one
//! `io_uring_enter` that also reaps completions (at most `completions_per_turn`), read the
//! uploading connections the ring reported readable (`ring.direct_recv`, one `recv(2)` each),
//! dispatch the requests that became complete ([`dispatch`]), then let handler tasks run. With nothing to do
//! it spins for `idle_spin`, then, when no handler task is running, waits for completions in
//! `io_uring_enter` with no timeout, a tick of the ring every `idle_wait` bringing a look at
//! tokio ([`Pace`]), and otherwise sleeps in tokio's reactor until the ring, a handler task, a
//! deadline or a shutdown request wakes it. Woken from a wait in the ring, it yields the CPU
//! once before its turn while that pays ([`Wakes`], `ring.yield_after_wake`), so that a proxy on
//! its CPU finishes its turn first. A shutdown cancels the multishot accept, serves what it
//! still took, then accepts what waits in the listener's queue (a connection whose wakeup went
//! to the cancelled accept woke no other, see [`Backend::accept_queued`]), and ends once no
//! request is in flight, every response was handed to the kernel and every connection closed
//! between requests ([`crate::conn::Core::begin_drain`]), or at `shutdown_timeout`.

mod dispatch;
#[cfg(feature = "bench-internals")]
pub mod harness;
mod wake_yield;

pub(crate) use dispatch::Dispatcher;

use crate::config::Backend as IoBackend;
use crate::conn::{self, Core, Settings};
use crate::service::HttpService;
use crate::uring::backend::{Backend, Followups};
use crate::uring::{Features, OpId, Ring, RingConfig, RingCounters, SetupError};
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What a worker reports once it is ready (or why it could not start): the ring's features,
/// none on epoll.
pub(crate) type Ready = Result<Option<Features>, WorkerError>;

/// Why a worker could not start.
#[derive(Debug)]
pub(crate) enum WorkerError {
    Ring(SetupError),
    Runtime(io::Error),
    /// The application's service could not be built.
    Start(crate::server::StartError),
}

/// Everything one worker thread needs.
pub(crate) struct WorkerSpec<F> {
    pub core_id: Option<core_affinity::CoreId>,
    pub listener: Arc<OwnedFd>,
    pub is_tcp: bool,
    /// The IO backend, chosen once for the server.
    pub backend: IoBackend,
    pub ring: RingConfig,
    pub settings: Settings,
    pub shutdown_timeout: Duration,
    /// Pause before accepting again after accept failed.
    pub accept_retry: Duration,
    pub completions_per_turn: usize,
    /// How long an idle worker keeps polling before it sleeps (zero: not at all).
    pub idle_spin: Duration,
    /// How long an idle worker with no handler task running waits for IO in its backend before
    /// it sleeps in tokio's reactor (zero: not at all).
    pub idle_wait: Duration,
    /// Yield once after a wake while it pays (`ring.yield_after_wake`).
    pub yield_after_wake: bool,
    /// What the ring does, shared with the server handle.
    pub ring_counters: Arc<RingCounters>,
    pub make: Arc<F>,
    pub stats: Arc<crate::stats::WorkerStats>,
    pub stop: Arc<Stop>,
    pub ready: mpsc::Sender<Ready>,
    /// This worker's most requests in flight on one connection (see `Core::note_in_flight`).
    pub max_in_flight: Arc<AtomicUsize>,
    /// The systemd watchdog's liveness stamp and how often this worker's runtime stamps it.
    pub heartbeat: Option<(Arc<crate::server::systemd::Heartbeat>, Duration)>,
}

/// The worker thread's body.
pub(crate) fn run<F, S>(spec: WorkerSpec<F>)
where
    F: Fn() -> S + Send + Sync + 'static,
    S: HttpService,
{
    crate::server::pin_current_thread(spec.core_id);
    let ring = match spec.backend {
        IoBackend::Epoll => None,
        IoBackend::IoUring => match Ring::with_counters(&spec.ring, spec.ring_counters.clone()) {
            Ok(r) => Some(r),
            Err(e) => {
                let _ = spec.ready.send(Err(WorkerError::Ring(e)));
                return;
            }
        },
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = spec.ready.send(Err(WorkerError::Runtime(e)));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    if let Some((heartbeat, period)) = spec.heartbeat {
        // A task on the worker's own runtime: it stamps only while the loop yields to tokio.
        local.spawn_local(heartbeat.run(period));
    }
    let service =
        match crate::server::serve::build_on_worker(&*spec.make, &rt, &local, spec.stats.worker) {
            Ok(service) => service,
            Err(e) => {
                let _ = spec.ready.send(Err(WorkerError::Start(e)));
                return;
            }
        };
    let dispatcher = Dispatcher::new(
        Rc::new(Core::new(spec.settings, spec.stats, spec.max_in_flight)),
        Rc::new(RefCell::new(service)),
    );
    let _ = spec
        .ready
        .send(Ok(ring.as_ref().map(|r| r.features().clone())));
    // Under SQPOLL the tick's completions are task work for the SQ thread every `idle_wait`,
    // which keeps it from ever falling asleep (it then polls its core away): such a worker
    // waits in tokio's reactor, as with `idle_wait` 0.
    let sqpoll = ring.as_ref().is_some_and(|r| r.features().sqpoll);
    let loop_ = LoopSpec {
        idle_spin: spec.idle_spin,
        idle_wait: if sqpoll {
            Duration::ZERO
        } else {
            spec.idle_wait
        },
        yield_after_wake: spec.yield_after_wake,
        listener: spec.listener,
        is_tcp: spec.is_tcp,
        stop: spec.stop,
        shutdown_timeout: spec.shutdown_timeout,
        accept_retry: spec.accept_retry,
    };
    let result = match ring {
        Some(ring) => {
            let uring = Loop {
                batch: spec.completions_per_turn.max(1),
                spec: loop_,
            };
            local.block_on(&rt, uring.drive(ring, dispatcher))
        }
        None => local.block_on(&rt, crate::epoll::driver::drive(loop_, dispatcher)),
    };
    if let Err(e) = result {
        tracing::error!("worker stopped: {e}");
    }
}

/// A shutdown request for one worker: the flag is read once per busy loop turn, the notify wakes
/// an idle worker.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    requested: AtomicBool,
    /// Once it took what waits in its listener's queue, the worker stops the listener (see
    /// [`Stop::request_refusing_new`]).
    refuse_new: AtomicBool,
    notify: Notify,
}

impl Stop {
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// A stop after which new connections are refused: the worker serves what already waits
    /// in its listener's queue, then stops the listener. Only for listeners no other process
    /// serves (not after a hot upgrade handed them over, not systemd's).
    pub fn request_refusing_new(&self) {
        self.refuse_new.store(true, Ordering::Release);
        self.request();
    }

    pub(crate) fn refuses_new(&self) -> bool {
        self.refuse_new.load(Ordering::Acquire)
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Notified at a stop request (wait on it, then check [`Stop::is_requested`]).
    pub(crate) fn notify(&self) -> &Notify {
        &self.notify
    }

    /// Resolves once a stop was requested (for workers that wait in a `select!`).
    #[cfg(feature = "http-compare")]
    pub async fn wait(&self) {
        while !self.is_requested() {
            self.notify.notified().await;
        }
    }
}

/// How an idle spin ended.
enum Spin {
    /// Completions or handler output showed up.
    Work,
    /// A shutdown was requested.
    Stop,
    /// Nothing came: sleep.
    Idle,
}

/// What a worker's loop needs, whichever the backend.
pub(crate) struct LoopSpec {
    pub idle_spin: Duration,
    pub idle_wait: Duration,
    pub yield_after_wake: bool,
    pub listener: Arc<OwnedFd>,
    pub is_tcp: bool,
    pub stop: Arc<Stop>,
    pub shutdown_timeout: Duration,
    pub accept_retry: Duration,
}

/// The io_uring loop.
struct Loop {
    /// Completions handled per loop turn before answers are submitted.
    batch: usize,
    spec: LoopSpec,
}

impl std::ops::Deref for Loop {
    type Target = LoopSpec;
    fn deref(&self) -> &LoopSpec {
        &self.spec
    }
}

impl Loop {
    async fn drive<S>(self, ring: Ring, d: Dispatcher<S>) -> io::Result<()>
    where
        S: HttpService,
    {
        let core = d.core.clone();
        let waiter = ring.register_wakeup()?;
        let mut io = Backend::new(ring);
        let mut accept: Option<OpId> = Some(io.arm_accept(&self.listener));
        let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        // Set while accepting is paused after a failed accept (EMFILE...): the multishot accept
        // is armed again when it elapses.
        let mut accept_pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        // Set from a stop until the accept it cancelled has ended: the worker does not end
        // before (a connection that accept took is served), and then accepts what waits in
        // the queue ([`Backend::accept_queued`]).
        let mut accept_ending = false;
        let stop = self.stop.clone();
        let mut stop_signal = std::pin::pin!(stop.notify.notified());
        let mut f = Followups::default();
        let mut timer = WakeTimer::new();
        let mut pace = Pace::new(self.idle_wait);
        let mut wakes = Wakes::new(self.yield_after_wake);
        loop {
            wakes.clock_turn(&core);
            core.stats.shared.liveness.answer();
            conn::expire(&core);
            core.resume_paused();
            let replayed = core.replay_held(&mut f.staged);
            // Before the submit below, or the accept would wait for the next turn.
            if accept_pause.as_ref().is_some_and(|p| p.is_elapsed()) && deadline.is_none() {
                accept_pause = None;
                accept = Some(io.arm_accept(&self.listener));
            }
            // What handler tasks wrote since the last turn, and new connections to arm; with
            // nothing changed, only the logs' and metrics' turn, when it has come.
            let direct = if core.has_dirty() || core.housekeeping_due() {
                flush(&core, &mut io)
            } else {
                0
            };
            io.ring.submit()?;
            let n = direct
                + replayed
                + io.complete(&core, self.batch, self.is_tcp, &mut f)
                + io.read_ready(&core, &mut f.staged);
            if io.ring.take_tick() {
                pace.ticked(&core);
            }
            let failed = std::mem::take(&mut f.accept_failed);
            if std::mem::take(&mut f.rearm_accept) {
                if deadline.is_some() {
                    if std::mem::take(&mut accept_ending) {
                        io.accept_queued(&core, &self.listener, self.is_tcp);
                        if self.stop.refuses_new() {
                            crate::sock::refuse_new_connections(std::os::fd::AsFd::as_fd(
                                &*self.listener,
                            ));
                        }
                    }
                } else if failed {
                    accept = None;
                    accept_pause = Some(Box::pin(tokio::time::sleep(self.accept_retry)));
                } else {
                    accept = Some(io.arm_accept(&self.listener));
                }
            }
            for s in f.staged.drain(..) {
                d.dispatch(s);
            }
            if let Some(dl) = &deadline
                && ((core.is_drained() && !accept_ending) || dl.is_elapsed())
            {
                if dl.is_elapsed() {
                    core.abandon_at_shutdown(self.shutdown_timeout);
                }
                break;
            }
            if deadline.is_none() && self.stop.is_requested() {
                if let Some(op) = accept.take() {
                    io.ring.cancel(op);
                    accept_ending = true;
                } else if self.stop.refuses_new() {
                    // Accepting was paused (a failed accept): nothing is taken from the queue.
                    crate::sock::refuse_new_connections(std::os::fd::AsFd::as_fd(&*self.listener));
                }
                accept_pause = None;
                core.begin_drain();
                deadline = Some(Box::pin(tokio::time::sleep(self.shutdown_timeout)));
                continue;
            }
            // Set when this turn had work and the next look at the ring is the idle wait below.
            let mut unlooked = false;
            // Completions left in the queue are work too: a turn reaps at most `batch`, and
            // the idle tick's are not counted in `n` (a worker kept from its ring finds many).
            if n > 0 || core.has_dirty() || io.ring.has_completions() || io.has_reads() {
                if pace.yield_after_work(&core, d.running_tasks()) {
                    tokio::task::yield_now().await;
                }
                // What the turn left dirty (its completions, a handler's answer) is flushed and
                // submitted now: an answer is sent before the worker waits (sending it in the
                // wait's own enter let a proxy on the same CPU preempt the worker and cost the
                // proxy more than it saved, see performance.md).
                if core.has_dirty() {
                    // An answer the socket took in part at a direct send comes back as a
                    // result that leaves its connection dirty (the rest to send): one more
                    // flush here rather than a whole turn. One taken whole was settled in
                    // the flush.
                    if flush(&core, &mut io) > 0 && core.has_dirty() {
                        flush(&core, &mut io);
                    }
                    io.ring.submit()?;
                }
                if core.has_dirty()
                    || d.running_tasks() > 0
                    || io.ring.has_completions()
                    || io.has_reads()
                {
                    continue;
                }
                // Nothing is left to do in the worker: a turn now would find the ring as the
                // wait below does (which returns at once when a completion is pending).
                unlooked = true;
            }
            if deadline.is_none() && !self.idle_spin.is_zero() {
                match self.spin(&mut io.ring, &core).await? {
                    Spin::Work => {
                        io.ring.counters().note_idle_spin_hit();
                        continue;
                    }
                    Spin::Stop => continue,
                    Spin::Idle => {}
                }
            }
            wakes.idle(&core);
            match pace.when_idle(&d, deadline.is_some(), accept_pause.as_ref()) {
                Idle::Wait { look_first, limit } => {
                    if look_first && pace.look(&d, &self.stop).await {
                        continue;
                    }
                    if pace.start_wait() {
                        io.ring.start_tick(pace.tick_period());
                    }
                    io.ring.quiet_completions();
                    io.ring.wait_for_io(limit)?;
                    if io.ring.has_completions() {
                        wakes.woke(&core);
                    }
                    continue;
                }
                // Sleeping in tokio needs a look at the ring since the last work first.
                Idle::Sleep if unlooked => continue,
                Idle::Sleep => {
                    if pace.sleeping() {
                        io.ring.stop_tick();
                        io.ring.submit()?;
                    }
                }
            }
            // Completions wake the reactor only from here on: what came before is looked at.
            if io.ring.wake_on_completions()? {
                continue;
            }
            park(
                &core,
                &waiter,
                stop_signal.as_mut(),
                deadline.as_mut(),
                accept_pause.as_mut(),
                &mut timer,
            )
            .await;
            io.ring.acknowledge_wakeup();
        }
        drop(waiter);
        Ok(())
    }

    /// Before sleeping, looks for work for up to `idle_spin`: new completions (entering the
    /// kernel without waiting, which runs deferred completions), handler output, paused
    /// connections that may read again, expired deadlines. Yields to tokio between looks, so
    /// handler tasks, timers and tokio IO go on; a stop request ends it.
    async fn spin(&self, ring: &mut Ring, core: &Core) -> io::Result<Spin> {
        let start = Instant::now();
        loop {
            tokio::task::yield_now().await;
            if self.stop.is_requested() {
                return Ok(Spin::Stop);
            }
            core.clock.update();
            conn::expire(core);
            core.resume_paused();
            ring.submit()?;
            if core.has_dirty() || ring.has_completions() {
                return Ok(Spin::Work);
            }
            if start.elapsed() >= self.idle_spin {
                return Ok(Spin::Idle);
            }
        }
    }
}

/// Flushes what changed through the ring backend and hands the core the results of the direct
/// sends (`ring.direct_send`) the socket did not take whole; returns how many.
fn flush(core: &Core, io: &mut Backend) -> usize {
    core.flush(io);
    io.report_sent(core)
}

/// Turns with work a worker runs without yielding to tokio while no handler task is running, at
/// most: tasks the application runs outside requests, and tokio's timers and IO, get a look at
/// least this often under load.
const TURNS_WITHOUT_YIELD: u32 = 16;

/// When a busy worker yields to tokio, and how an idle one waits.
///
/// Waking from the backend is one system call; waking through tokio's reactor is its
/// `epoll_wait` on the backend's fd, the eventfd read and the backend's own call. So an idle
/// worker with no handler task running, not draining, waits for IO in its backend
/// (`io_uring_enter`, or `epoll_wait` on its own epoll fd) with no timeout of its own: while it
/// waits there, the backend ticks every `idle_wait` (a multishot timeout on the ring, a timerfd
/// in the epoll set), and a tick ends the wait under way. A timeout on every wait would cost
/// the kernel a timer start and cancel per request (about 3 us of system time per request at
/// one connection, measured). After a tick the worker looks at tokio (a yield: tasks a handler
/// spawned, tokio's IO and timers) before it waits again; a tick that finds no work since the
/// one before stops the ticks and sends the worker to sleep in tokio's reactor, so an idle
/// server does not wake every `idle_wait`. A wheel deadline or the end of an accept pause
/// nearer than `idle_wait` bounds the wait. Guarantee: tasks the application runs outside
/// requests (woken by a timer, by tokio IO or from another thread) and a shutdown request are
/// noticed at most `idle_wait` (and one loop turn) late; a worker with no work sleeps in tokio
/// after one to two `idle_wait`s.
pub(crate) struct Pace {
    idle_wait: Duration,
    /// Turns with work since the last yield.
    turns_unyielded: u32,
    /// The backend's tick runs.
    ticking: bool,
    /// Work came since the last tick (or since the ticks started).
    worked: bool,
    /// A tick came since the worker last looked at tokio.
    look_due: bool,
    /// A tick found no work since the one before: the next idle sleeps in tokio's reactor.
    expired: bool,
    /// A wait in the backend was taken and no turn with work has come since.
    waiting: bool,
}

impl Pace {
    pub fn new(idle_wait: Duration) -> Pace {
        Pace {
            idle_wait,
            turns_unyielded: 0,
            ticking: false,
            worked: false,
            look_due: false,
            expired: false,
            waiting: false,
        }
    }

    /// After a turn with work: whether to yield to tokio before the next turn. Always while a
    /// handler task runs (its output is what the next flush sends); otherwise once every
    /// [`TURNS_WITHOUT_YIELD`] turns. A wait in the backend that this work ended is counted.
    pub fn yield_after_work(&mut self, core: &Core, running_tasks: usize) -> bool {
        if self.after_work() {
            core.stats.count(crate::stats::Counter::IdleWaitWoken);
        }
        self.busy_turn(running_tasks)
    }

    /// Counts a turn with work; true when the worker yields after it.
    fn busy_turn(&mut self, running_tasks: usize) -> bool {
        self.turns_unyielded += 1;
        if running_tasks > 0 || self.turns_unyielded >= TURNS_WITHOUT_YIELD {
            self.turns_unyielded = 0;
            self.look_due = false;
            return true;
        }
        false
    }

    /// Notes work; true when it ended a wait in the backend.
    fn after_work(&mut self) -> bool {
        self.expired = false;
        self.worked = true;
        std::mem::take(&mut self.waiting)
    }

    /// The backend ticked (once or more since the last turn): a look at tokio is due, or, when
    /// no work came since the tick before, the worker is idle and sleeps in tokio next.
    pub fn ticked(&mut self, core: &Core) {
        if self.on_tick() {
            core.stats.count(crate::stats::Counter::IdleWaitExpired);
        }
    }

    /// True when the tick found the worker idle.
    fn on_tick(&mut self) -> bool {
        if !self.ticking {
            return false; // The last word of a stopped tick.
        }
        if std::mem::take(&mut self.worked) {
            self.look_due = true;
            return false;
        }
        self.expired = true;
        true
    }

    /// What an idle worker does next: wait in its backend (after a look at tokio when a tick
    /// asked for one, [`Pace::look`], then [`Pace::start_wait`]), or sleep in tokio's reactor
    /// (then call [`Pace::sleeping`]). Not async: the look is awaited only when due, not at
    /// every wait.
    pub fn when_idle<S: HttpService>(
        &mut self,
        d: &Dispatcher<S>,
        draining: bool,
        accept_pause: Option<&Pin<Box<tokio::time::Sleep>>>,
    ) -> Idle {
        if self.idle_wait.is_zero() || self.expired || d.running_tasks() > 0 || draining {
            return Idle::Sleep;
        }
        // From the turn's clock (read at its start, a few microseconds old at worst): no clock
        // read per idle wait.
        let pause = accept_pause.map(|p| {
            p.deadline()
                .into_std()
                .saturating_duration_since(d.core.now())
        });
        let bound = [d.core.until_next_deadline(), pause]
            .into_iter()
            .flatten()
            .min();
        if bound.is_some_and(|b| b.is_zero()) {
            return Idle::Sleep;
        }
        Idle::Wait {
            look_first: std::mem::take(&mut self.look_due),
            limit: bound.filter(|b| *b < self.idle_wait),
        }
    }

    /// The look at tokio a tick asked for (tasks a handler spawned, tokio's IO and timers): true
    /// when it found work, for a loop turn rather than the wait.
    pub async fn look<S: HttpService>(&self, d: &Dispatcher<S>, stop: &Stop) -> bool {
        tokio::task::yield_now().await;
        d.core.has_dirty() || d.running_tasks() > 0 || stop.is_requested()
    }

    /// A wait in the backend begins; true when the tick must start first.
    pub fn start_wait(&mut self) -> bool {
        self.waiting = true;
        // Waits are not busy turns: the ticks bring the looks at tokio while it waits.
        self.turns_unyielded = 0;
        if self.ticking {
            return false;
        }
        self.ticking = true;
        self.worked = false;
        true
    }

    /// The worker goes to sleep in tokio's reactor: true when the backend's tick must stop.
    pub fn sleeping(&mut self) -> bool {
        self.waiting = false;
        self.look_due = false;
        std::mem::take(&mut self.ticking)
    }

    /// The period of the backend's tick.
    pub fn tick_period(&self) -> Duration {
        self.idle_wait
    }
}

/// The worker's yields after a wake ([`wake_yield`]), driven by its loop: [`Wakes::woke`] after
/// each wait in the backend that IO ended, [`Wakes::idle`] each time the worker is idle again.
/// It also reads the clock for the turn after a wake ([`Wakes::clock_turn`]): the reading that
/// decides the yield is that turn's clock, so a wake costs one clock read.
pub(crate) struct Wakes {
    yields: wake_yield::WakeYield,
    /// The clock was read for the coming turn (by [`Wakes::woke`]).
    clocked: bool,
}

impl Wakes {
    pub fn new(enabled: bool) -> Wakes {
        Wakes {
            yields: wake_yield::WakeYield::new(enabled),
            clocked: false,
        }
    }

    /// The worker woke from a wait in its backend: yields the CPU once (`sched_yield`) when
    /// yielding pays; true when it yielded (what came meanwhile is for the coming turn). With
    /// yields on, it reads the worker's clock for the coming turn (after the yield, if one).
    pub fn woke(&mut self, core: &Core) -> bool {
        if !self.yields.is_enabled() {
            return false;
        }
        core.clock.update();
        self.clocked = true;
        let start = core.now();
        if !self.yields.should_yield(start) {
            return false;
        }
        rustix::thread::sched_yield();
        core.clock.update();
        let took = core.now().saturating_duration_since(start);
        self.yields.yielded(took, core.requests_begun());
        true
    }

    /// Reads the worker's clock at the start of a loop turn, unless the wake just before did.
    pub fn clock_turn(&mut self, core: &Core) {
        if !std::mem::take(&mut self.clocked) {
            core.clock.update();
        }
    }

    /// The worker is idle again: counts how the yield before went.
    pub fn idle(&mut self, core: &Core) {
        use crate::stats::Counter;
        if let Some(outcome) = self.yields.settle(core.now(), core.requests_begun()) {
            core.stats.count(match outcome {
                wake_yield::Outcome::Paid => Counter::WakeYieldPaid,
                wake_yield::Outcome::Free => Counter::WakeYieldFree,
                wake_yield::Outcome::Costly => Counter::WakeYieldCostly,
            });
        }
    }
}

/// What an idle worker does next ([`Pace::when_idle`]).
pub(crate) enum Idle {
    /// Wait for IO in the backend, until a tick or for at most `limit` (a deadline nearer than
    /// the next tick). When `look_first`, look at tokio first ([`Pace::look`]); work it finds
    /// is a loop turn instead. Then [`Pace::start_wait`] (which says whether the tick must
    /// start) and the wait.
    Wait {
        look_first: bool,
        limit: Option<Duration>,
    },
    /// Sleep in tokio's reactor.
    Sleep,
}

/// Sleeps in tokio until something may have work for the worker's next turn: its backend's fd
/// readable (ring completions, epoll events), output a handler task wrote, a liveness probe,
/// a stop request (`stop_signal`, not polled once draining), the drain's `deadline`, the end of
/// an `accept_pause`, or the timer wheel's next deadline. Any wake after the first poll counts
/// (a body channel that drained wakes the driver too); a spurious one costs one turn.
pub(crate) async fn park<T: std::os::fd::AsRawFd>(
    core: &Core,
    waiter: &tokio::io::unix::AsyncFd<T>,
    mut stop_signal: Pin<&mut tokio::sync::futures::Notified<'_>>,
    mut deadline: Option<&mut Pin<Box<tokio::time::Sleep>>>,
    mut accept_pause: Option<&mut Pin<Box<tokio::time::Sleep>>>,
    timer: &mut WakeTimer,
) {
    let mut polled = false;
    poll_fn(|cx| {
        let mut ready = std::mem::replace(&mut polled, true);
        core.set_driver_waker(cx.waker());
        core.set_driver_parked(true);
        ready |= core.has_dirty();
        ready |= core.stats.shared.liveness.sleeping(cx.waker());
        if let Poll::Ready(r) = waiter.poll_read_ready(cx) {
            if let Ok(mut guard) = r {
                guard.clear_ready();
            }
            ready = true;
        }
        match &mut deadline {
            None => ready |= stop_signal.as_mut().poll(cx).is_ready(),
            Some(dl) => ready |= dl.as_mut().poll(cx).is_ready(),
        }
        if let Some(p) = &mut accept_pause {
            ready |= p.as_mut().poll(cx).is_ready();
        }
        ready |= timer.poll(core, cx);
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    core.set_driver_parked(false);
}

/// The worker's one timer: armed for the wheel's first due slot.
pub(crate) struct WakeTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl WakeTimer {
    pub fn new() -> WakeTimer {
        WakeTimer {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            armed: None,
        }
    }

    /// Re-arms for the wheel's next due slot; true when that time has come.
    pub fn poll(&mut self, core: &Core, cx: &mut Context<'_>) -> bool {
        let Some(due) = core.next_deadline() else {
            self.armed = None;
            return false;
        };
        if self.armed != Some(due) {
            self.armed = Some(due);
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(due));
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The clock read by a wake (yields on) is the next turn's: the turn does not read it
    /// again, the one after does; with yields off the turn reads it.
    #[test]
    fn a_wake_reads_the_clock_for_the_turn_after_it() {
        let core = crate::conn::tests::core_with(crate::conn::tests::settings());
        let moved = |since: Instant| {
            let guard = Instant::now();
            while Instant::now() <= since {
                assert!(
                    guard.elapsed() < Duration::from_secs(10),
                    "the clock stands still"
                );
            }
        };
        let mut wakes = Wakes::new(true);
        wakes.woke(&core);
        let woke_at = core.now();
        moved(woke_at);
        wakes.clock_turn(&core);
        assert_eq!(core.now(), woke_at, "the wake's reading is the turn's");
        wakes.clock_turn(&core);
        assert!(core.now() > woke_at, "the next turn reads the clock");
        let mut off = Wakes::new(false);
        let before = core.now();
        assert!(!off.woke(&core));
        assert_eq!(core.now(), before, "no yields: the wake reads nothing");
        moved(before);
        off.clock_turn(&core);
        assert!(core.now() > before, "and the turn reads the clock");
    }

    /// The first wait starts the tick, later ones find it running; sleeping in tokio stops it
    /// and the next wait starts it again.
    #[test]
    fn the_tick_runs_from_the_first_wait_until_the_worker_sleeps_in_tokio() {
        let mut pace = Pace::new(MS);
        assert!(pace.start_wait(), "the first wait starts the tick");
        assert!(pace.after_work(), "IO ended that wait");
        assert!(!pace.start_wait(), "the tick runs");
        assert!(pace.sleeping(), "sleeping in tokio stops it");
        assert!(!pace.sleeping(), "once");
        assert!(pace.start_wait(), "and the next wait starts it again");
        assert!(
            pace.after_work() && !pace.after_work(),
            "one wait, counted once"
        );
    }

    /// A tick after work asks for a look at tokio; a tick with no work since the one before
    /// sends the worker to sleep in tokio, until work comes.
    #[test]
    fn a_tick_with_no_work_since_the_last_one_sends_the_worker_to_sleep_in_tokio() {
        let mut pace = Pace::new(MS);
        pace.start_wait();
        pace.after_work();
        assert!(!pace.on_tick(), "work came since the tick started");
        assert!(pace.look_due && !pace.expired);
        pace.look_due = false;
        assert!(pace.on_tick(), "a whole period with no work");
        assert!(pace.expired);
        pace.after_work();
        assert!(!pace.expired, "work clears it");
        // The last word of a stopped tick changes nothing.
        pace.sleeping();
        let before = (pace.expired, pace.look_due, pace.worked);
        assert!(!pace.on_tick());
        assert_eq!(before, (pace.expired, pace.look_due, pace.worked));
    }

    /// A tick right after the ticks start, with no work since, expires: the period before it
    /// was whole (the tick starts with the wait).
    #[test]
    fn the_first_period_counts_from_the_start_of_the_tick() {
        let mut pace = Pace::new(MS);
        pace.after_work();
        assert!(pace.start_wait());
        assert!(
            pace.on_tick(),
            "work before the start is not work in the period"
        );
    }

    /// A busy worker with no handler task yields every TURNS_WITHOUT_YIELD turns (a yield is
    /// a look: a due look is dropped), a wait starts the count again, and a running handler
    /// task makes every turn yield.
    #[test]
    fn a_busy_worker_yields_every_sixteen_turns_and_a_wait_starts_the_count_again() {
        let mut pace = Pace::new(MS);
        let yields: Vec<bool> = (0..32).map(|_| pace.busy_turn(0)).collect();
        assert_eq!(yields.iter().filter(|y| **y).count(), 2);
        assert!(yields[15] && yields[31]);
        for _ in 0..10 {
            pace.busy_turn(0);
        }
        pace.look_due = true;
        pace.start_wait();
        let yields: Vec<bool> = (0..16).map(|_| pace.busy_turn(0)).collect();
        assert_eq!(yields.iter().position(|y| *y), Some(15));
        assert!(!pace.look_due);
        assert!(pace.busy_turn(1), "a handler task is running");
    }
}
