//! The per-core loop of the epoll backend: the same turn as the io_uring loop, with readiness
//! in place of completions.
//!
//! One turn: expire deadlines, resume paused connections, take the pending readiness events
//! (without waiting), accept, let the core act on what changed ([`Core::flush`]: arm the new
//! connections, send what handler tasks wrote), read every ready connection once, dispatch the
//! requests that became complete (a handler that answers at once queues its response now),
//! flush again, then hand the core the results of the turn's writes. A connection gets at
//! most one `send` per turn: its send stays in flight for the core until the turn ends. With
//! nothing to do it spins for `idle_spin`, then, when no handler task is running, waits in
//! `epoll_wait` on its own epoll fd, looking at tokio every `idle_wait` (a timerfd in the set
//! ticks; [`crate::worker::Pace`]), and otherwise sleeps in tokio's reactor (where the epoll fd
//! is registered) until a socket, a handler task, a deadline or a shutdown request wakes it.
//! Woken from `epoll_wait`, it yields the CPU once before its turn while that pays
//! ([`crate::worker::Wakes`]). A shutdown stops watching the listener, accepts what waits in
//! its queue then (a connection whose wakeup came to this worker may have woken no one else,
//! see [`Backend::accept_queued`]), and ends once no request is in flight, every response
//! was handed to the kernel and every connection closed between requests
//! ([`crate::conn::Core::begin_drain`]), or at `shutdown_timeout`.

use super::backend::{AcceptError, Backend};
use crate::conn::{self, Core};
use crate::service::HttpService;
use crate::stats::Counter;
use crate::worker::{Dispatcher, Idle, LoopSpec, Pace, WakeTimer, Wakes, park};

use std::io;
use std::pin::Pin;
use std::time::Instant;

/// Connections accepted per turn at most (the rest wait for the next turn).
const ACCEPTS_PER_TURN: usize = 256;

/// Runs the worker until it is stopped and quiet (or its shutdown timeout passed).
pub(crate) async fn drive<S>(spec: LoopSpec, d: Dispatcher<S>) -> io::Result<()>
where
    S: HttpService,
{
    let core = d.core.clone();
    let mut io = Backend::new(spec.listener.clone(), spec.is_tcp)?;
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // Set while accepting is paused after a failed accept (EMFILE...).
    let mut accept_pause: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let stop = spec.stop.clone();
    let mut stop_signal = std::pin::pin!(stop.notify().notified());
    let mut timer = WakeTimer::new();
    let mut staged = Vec::new();
    let mut last_work = core.now();
    let mut pace = Pace::new(spec.idle_wait);
    let mut wakes = Wakes::new(spec.yield_after_wake);
    // Events a backend wait took, for the next turn (which then does not look again).
    let mut waited_events: Option<usize> = None;
    loop {
        wakes.clock_turn(&core);
        core.stats.shared.liveness.answer();
        conn::expire(&core);
        core.resume_paused();
        let replayed = core.replay_held(&mut staged);
        if accept_pause.as_ref().is_some_and(|p| p.is_elapsed()) && deadline.is_none() {
            accept_pause = None;
            io.listen(true)?;
        }
        let events = match waited_events.take() {
            Some(n) => n,
            None => io.poll_events()?,
        };
        if io.take_tick() {
            pace.ticked(&core);
        }
        let accepted = match io.accept(&core, ACCEPTS_PER_TURN) {
            Ok(n) => n,
            Err(AcceptError::Failed(e)) => {
                accept_failed(&core, &e);
                io.listen(false)?;
                accept_pause = Some(Box::pin(tokio::time::sleep(spec.accept_retry)));
                0
            }
        };
        // Arms the new connections (read in this turn's pass when data came with them) and
        // sends what handler tasks wrote since the last turn. With nothing changed there is
        // nothing to act on: the flush after the dispatches clocks and logs what ended.
        if core.has_dirty() {
            core.flush(&mut io);
        }
        let reads = io.read(&core, &mut staged);
        for s in staged.drain(..) {
            d.dispatch(s);
        }
        core.flush(&mut io);
        // Results of this turn's writes, after both flushes: a connection written to in this
        // turn is not written to again before the next one.
        let done = io.complete(&core);
        if let Some(dl) = &deadline
            && (core.is_drained() || dl.is_elapsed())
        {
            if dl.is_elapsed() {
                core.abandon_at_shutdown(spec.shutdown_timeout);
            }
            break;
        }
        if deadline.is_none() && spec.stop.is_requested() {
            io.listen(false)?;
            // What waits in the queue now may have woken only this worker: it is served here
            // (a failed accept leaves the rest to whoever accepts next).
            if accept_pause.take().is_none()
                && let Err(AcceptError::Failed(e)) = io.accept_queued(&core, usize::MAX)
            {
                accept_failed(&core, &e);
            }
            if spec.stop.refuses_new() {
                crate::sock::refuse_new_connections(std::os::fd::AsFd::as_fd(&*spec.listener));
            }
            core.begin_drain();
            deadline = Some(Box::pin(tokio::time::sleep(spec.shutdown_timeout)));
            continue;
        }
        let work = events + accepted + reads + done + replayed;
        // Set when this turn had work and the next look at the epoll set is the idle wait below.
        let mut unlooked = false;
        if work > 0 || core.has_dirty() || io.has_reads() {
            // The turn's clock: no clock read per turn for the idle spin.
            last_work = core.now();
            if pace.yield_after_work(&core, d.running_tasks()) {
                tokio::task::yield_now().await;
            }
            if !settled(&core, &mut io, d.running_tasks()) {
                continue;
            }
            unlooked = true;
        }
        // Spinning is more loop turns: each one looks at the epoll set without waiting.
        if deadline.is_none()
            && !spec.idle_spin.is_zero()
            && Instant::now().saturating_duration_since(last_work) < spec.idle_spin
        {
            tokio::task::yield_now().await;
            continue;
        }
        wakes.idle(&core);
        match pace.when_idle(&d, deadline.is_some(), accept_pause.as_ref()) {
            Idle::Wait { look_first, limit } => {
                if look_first && pace.look(&d, &spec.stop).await {
                    continue;
                }
                if pace.start_wait() {
                    io.start_tick(pace.tick_period())?;
                }
                let events = io.wait_events(limit)?;
                // After a yield the turn looks at the epoll set again: what came meanwhile.
                let yielded = events > 0 && wakes.woke(&core);
                waited_events = Some(events).filter(|_| !yielded);
                continue;
            }
            // Sleeping in tokio needs a look at the epoll set since the last work first.
            Idle::Sleep if unlooked => continue,
            Idle::Sleep => {
                if pace.sleeping() {
                    io.stop_tick()?;
                }
            }
        }
        park(
            &core,
            io.waiter(),
            stop_signal.as_mut(),
            deadline.as_mut(),
            accept_pause.as_mut(),
            &mut timer,
        )
        .await;
    }
    Ok(())
}

/// After a turn with work: flushes what it left dirty (its send results, a handler task's
/// output); true when nothing is left for a turn, so that the next look at the epoll set can be
/// the idle wait (which returns at once when events are pending) rather than a turn that looks
/// without waiting. A send this flush starts is a result for the next turn.
fn settled(core: &Core, io: &mut Backend, running_tasks: usize) -> bool {
    if core.has_dirty() {
        core.flush(io);
    }
    !(core.has_dirty()
        || io.has_results()
        || io.has_reads()
        || io.accept_pending()
        || running_tasks > 0)
}

fn accept_failed(core: &Core, e: &io::Error) {
    core.stats.hit(
        Counter::AcceptFailed,
        core.now(),
        format_args!(
            "accept failed: {e}; accepting again after server.accept_retry \
             (EMFILE: raise RLIMIT_NOFILE, e.g. LimitNOFILE= in the systemd unit)"
        ),
    );
}
