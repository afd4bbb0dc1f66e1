//! The epoll backend of the connection core: runs what the core asks ([`Io`]) as non-blocking
//! socket calls, and turns readiness into the core's inputs.
//!
//! Per connection it keeps the socket, whether the kernel said it is readable or writable
//! (edge-triggered: a flag stays set until a read comes back short or a write would block),
//! whether the core wants bytes (a receive is "armed"), and the rest of a short send. A send
//! the core asks for is written at once (the core asks after the turn's reads and dispatches);
//! its result, like a cancelled receive's end, is handed to the core by [`Backend::complete`]
//! after the core's flush, as a completion would be. It decides nothing about the protocol or
//! the lifecycle.

#![forbid(unsafe_code)]

use crate::conn::{ConnKey, Core, Io, OutBuf, OutQueue, Sending, Sent, Staged};
use crate::sock::send_now;
use crate::uring::ReadBuf;
use crate::uring::reactor::{self, ReactorFd};
use rustix::event::{Timespec, epoll};
use rustix::io::Errno;
use rustix::net::SocketFlags;
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, timerfd_create, timerfd_settime,
};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Token of the listener (connection tokens never have bit 63 set).
const LISTENER_TOKEN: u64 = 1 << 63;
/// Token of the idle tick's timerfd.
const TICK_TOKEN: u64 = (1 << 63) | 1;
/// Readiness events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;

/// What the backend holds for one connection.
struct IoConn {
    key: ConnKey,
    fd: OwnedFd,
    /// The kernel reported data (or EOF, or an error) not yet read to a short read.
    readable: bool,
    /// The peer shut its side down or the connection failed (RDHUP, HUP, ERR): no edge will
    /// come for the EOF, so reads go on past a short one until it shows.
    hup: bool,
    /// The kernel reported room to send since the last write that would have blocked.
    writable: bool,
    /// The core wants bytes.
    armed: bool,
    /// Listed for the next read pass.
    queued: bool,
    /// What a short send left: its buffer and how far it went.
    rest: Option<(OutBuf, usize)>,
    /// A send the core handed over and whose result it has not been told yet.
    in_flight: bool,
}

/// A result for the core, held until its flush is over.
enum Done {
    Sent(Sent),
    RecvEnded,
}

/// The epoll instance and the per-connection state, indexed like the core's connection table.
pub(crate) struct Backend {
    epoll: AsyncFd<ReactorFd>,
    /// The idle tick: a timerfd in the epoll set ([`Backend::start_tick`]).
    tick: OwnedFd,
    /// The tick expired since [`Backend::take_tick`] last looked.
    ticked: bool,
    conns: Vec<Option<IoConn>>,
    events: Vec<epoll::Event>,
    /// Connections to read in the next read pass.
    to_read: Vec<ConnKey>,
    done: Vec<(ConnKey, Done)>,
    /// What every read goes into: at most [`ReadBuf::MAX`] (256 KiB, four times the largest
    /// FastCGI record: an upload of 64 KiB with its params arrives in one read, so its request
    /// runs in the turn it came in rather than the next; with 64 KiB, 16 connections uploading
    /// 64 KiB bodies cost 26-28 us per request and a p99 of 0.6-1.7 ms, with 256 KiB 23 us and
    /// 0.5 ms, see docs/performance.md). One per worker: a GET touches only its first page, and
    /// a body that comes whole in a read is handed on as a slice of it.
    buf: ReadBuf,
    listener: Arc<OwnedFd>,
    /// The listener is registered (not paused, not shut down).
    listening: bool,
    /// The listener reported pending connections.
    accept_ready: bool,
    /// A shared (UNIX) listener: registered with `EPOLLEXCLUSIVE`.
    shared: bool,
    is_tcp: bool,
}

/// Why accepting stopped.
#[derive(Debug)]
pub(crate) enum AcceptError {
    /// accept(2) failed for a reason that lasts (EMFILE, ENFILE, ENOMEM...).
    Failed(io::Error),
}

impl Backend {
    /// An epoll instance registered in the current tokio reactor, listening on `listener`.
    pub fn new(listener: Arc<OwnedFd>, is_tcp: bool) -> io::Result<Backend> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let tick = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )?;
        epoll::add(
            &fd,
            &tick,
            epoll::EventData::new_u64(TICK_TOKEN),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        let mut b = Backend {
            epoll: reactor::register_readable(fd)?,
            tick,
            ticked: false,
            conns: Vec::new(),
            events: Vec::with_capacity(EVENTS_PER_WAIT),
            to_read: Vec::new(),
            done: Vec::new(),
            buf: ReadBuf::default(),
            listener,
            listening: false,
            accept_ready: false,
            shared: !is_tcp,
            is_tcp,
        };
        b.listen(true)?;
        Ok(b)
    }

    /// The epoll fd as registered in tokio: readable when an event is pending.
    pub fn waiter(&self) -> &AsyncFd<ReactorFd> {
        &self.epoll
    }

    /// Starts or stops watching the listener (a paused or shut-down worker accepts nothing;
    /// connections wait in the backlog, or go to the other workers).
    pub fn listen(&mut self, on: bool) -> io::Result<()> {
        if on == self.listening {
            return Ok(());
        }
        if on {
            let mut flags = epoll::EventFlags::IN;
            if self.shared {
                flags |= epoll::EventFlags::EXCLUSIVE;
            }
            epoll::add(
                self.epoll.get_ref().fd(),
                &*self.listener,
                epoll::EventData::new_u64(LISTENER_TOKEN),
                flags,
            )?;
        } else {
            epoll::delete(self.epoll.get_ref().fd(), &*self.listener)?;
            self.accept_ready = false;
        }
        self.listening = on;
        Ok(())
    }

    /// Takes the pending readiness events without waiting: marks connections readable or
    /// writable, lists the armed readable ones for [`Backend::read`], writes what waited for
    /// room. Returns how many events came (a full batch means more may be pending).
    pub fn poll_events(&mut self) -> io::Result<usize> {
        self.take_events(Some(Duration::ZERO))
    }

    /// Like [`Backend::poll_events`], but waits for the first event, for at most `limit` if
    /// given (the idle worker's wait in its backend, which a tick ends:
    /// [`crate::worker::Pace`]).
    pub fn wait_events(&mut self, limit: Option<Duration>) -> io::Result<usize> {
        self.take_events(limit)
    }

    /// Starts the idle tick: the timerfd in the epoll set expires every `period` (each expiry
    /// is read when its event is taken, which re-arms it) until [`Backend::stop_tick`].
    pub fn start_tick(&mut self, period: Duration) -> io::Result<()> {
        let every = timespec(period);
        let spec = Itimerspec {
            it_interval: every,
            it_value: every,
        };
        timerfd_settime(&self.tick, TimerfdTimerFlags::empty(), &spec)?;
        Ok(())
    }

    /// Stops the idle tick (and forgets a tick not taken yet).
    pub fn stop_tick(&mut self) -> io::Result<()> {
        let zero = timespec(Duration::ZERO);
        let spec = Itimerspec {
            it_interval: zero,
            it_value: zero,
        };
        timerfd_settime(&self.tick, TimerfdTimerFlags::empty(), &spec)?;
        self.ticked = false;
        Ok(())
    }

    /// Whether the idle tick expired since the last call.
    pub fn take_tick(&mut self) -> bool {
        std::mem::take(&mut self.ticked)
    }

    fn take_events(&mut self, limit: Option<Duration>) -> io::Result<usize> {
        self.events.clear();
        let limit = limit.map(timespec);
        let n = match epoll::wait(
            self.epoll.get_ref().fd(),
            rustix::buffer::spare_capacity(&mut self.events),
            limit.as_ref(),
        ) {
            Ok(n) => n,
            Err(Errno::INTR) => return Ok(1),
            Err(e) => return Err(e.into()),
        };
        let events = std::mem::take(&mut self.events);
        let mut ticks = 0;
        for ev in &events {
            if ev.data.u64() == TICK_TOKEN {
                // Read to re-arm: a periodic timerfd expires again only once its count was
                // read (EAGAIN: the tick was stopped since).
                let mut count = [0u8; 8];
                let _ = rustix::io::read(&self.tick, &mut count);
                self.ticked = true;
                ticks += 1;
            } else {
                self.on_event(ev.data.u64(), ev.flags);
            }
        }
        self.events = events;
        // The tick is not IO.
        Ok(n - ticks)
    }

    fn on_event(&mut self, token: u64, flags: epoll::EventFlags) {
        use epoll::EventFlags as F;
        if token == LISTENER_TOKEN {
            self.accept_ready = self.listening;
            return;
        }
        let Some(key) = ConnKey::from_token(token) else {
            return;
        };
        let Backend {
            conns,
            to_read,
            done,
            ..
        } = self;
        let Some(c) = io_conn(conns, key) else {
            return;
        };
        if flags.intersects(F::IN | F::RDHUP | F::HUP | F::ERR) {
            c.readable = true;
            c.hup |= flags.intersects(F::RDHUP | F::HUP | F::ERR);
            queue_read(c, to_read);
        }
        if flags.intersects(F::OUT | F::HUP | F::ERR) {
            c.writable = true;
            if c.in_flight {
                write_rest(c, done);
            }
        }
    }

    /// Accepts what the listener has (up to `max`) once it reported pending connections,
    /// handing each connection to the core. Returns how many were accepted.
    pub fn accept(&mut self, core: &Core, max: usize) -> Result<usize, AcceptError> {
        if !self.accept_ready {
            return Ok(0);
        }
        let (n, emptied) = self.accept_queued(core, max)?;
        if emptied {
            self.accept_ready = false;
        }
        Ok(n)
    }

    /// Accepts up to `max` of the connections waiting on the listener, reported or not, and
    /// while the core has room for them. Returns how many, and whether the queue was found
    /// empty.
    ///
    /// A stopping worker calls it once it no longer watches the listener: a shared listener
    /// is watched with `EPOLLEXCLUSIVE`, so a connection whose wakeup went to this worker may
    /// wake no other watcher (another worker, or the new process after a hot upgrade), and
    /// would wait in the queue until the next connection came.
    pub fn accept_queued(&mut self, core: &Core, max: usize) -> Result<(usize, bool), AcceptError> {
        let mut n = 0;
        while n < max && !core.is_full() {
            let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
            match crate::sock::accept_now(self.listener.as_fd(), flags) {
                Ok(Some(fd)) => {
                    n += 1;
                    self.add_conn(core, fd);
                }
                Ok(None) => return Ok((n, true)),
                Err(e) => return Err(AcceptError::Failed(e.into())),
            }
        }
        Ok((n, false))
    }

    fn add_conn(&mut self, core: &Core, fd: OwnedFd) {
        let peer = if core.checks_peers() {
            crate::server::listener::peer_ip(std::os::fd::AsFd::as_fd(&fd))
        } else {
            None
        };
        let Some(key) = core.accept(peer) else {
            return; // refused: the socket closes here
        };
        if self.is_tcp {
            let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
        }
        use epoll::EventFlags as F;
        let flags = F::IN | F::OUT | F::RDHUP | F::ET;
        if let Err(e) = epoll::add(
            self.epoll.get_ref().fd(),
            &fd,
            epoll::EventData::new_u64(key.token()),
            flags,
        ) {
            tracing::debug!("cannot watch a new connection: {e}");
            core.on_peer_gone(key);
            return;
        }
        if self.conns.len() <= key.index() {
            self.conns.resize_with(key.index() + 1, || None);
        }
        // Read at once: a client usually sends its request right behind the handshake, before
        // the accept (an empty socket costs one EAGAIN, then the edge is awaited).
        self.conns[key.index()] = Some(IoConn {
            key,
            fd,
            readable: true,
            hup: false,
            writable: false,
            armed: false,
            queued: false,
            rest: None,
            in_flight: false,
        });
    }

    /// Reads each listed connection once, feeding the core; requests whose params are complete
    /// go to `staged`. A connection that filled the read buffer is read again next turn.
    /// Returns how many reads were made.
    pub fn read(&mut self, core: &Core, staged: &mut Vec<Staged>) -> usize {
        let keys = std::mem::take(&mut self.to_read);
        let mut reads = 0;
        for &key in &keys {
            let Backend {
                conns,
                buf,
                to_read,
                ..
            } = self;
            let Some(c) = io_conn(conns, key) else {
                continue;
            };
            c.queued = false;
            if !(c.armed && c.readable) {
                continue;
            }
            reads += 1;
            match buf.recv(c.fd.as_fd()) {
                Ok((read, _)) if read.is_empty() => {
                    c.readable = false;
                    core.on_peer_gone(key);
                }
                Ok((read, filled)) => {
                    // A short read emptied the socket; new data brings a new edge (an EOF
                    // already reported does not).
                    if filled || c.hup {
                        queue_read(c, to_read);
                    } else {
                        c.readable = false;
                    }
                    core.on_bytes_owned(key, read, staged);
                }
                Err(Errno::AGAIN) => c.readable = false,
                Err(Errno::INTR) => queue_read(c, to_read),
                Err(e) => {
                    c.readable = false;
                    tracing::debug!("receive failed: {e}");
                    core.on_peer_gone(key);
                }
            }
        }
        // Keep the allocation of the list for the next turn.
        let mut keys = keys;
        keys.clear();
        if self.to_read.is_empty() {
            self.to_read = keys;
        }
        reads
    }

    /// Hands the core what happened during its flush (send results, ended receives); returns
    /// how many.
    pub fn complete(&mut self, core: &Core) -> usize {
        let n = self.done.len();
        for (key, done) in self.done.drain(..) {
            match done {
                Done::Sent(sent) => core.on_sent(key, sent),
                Done::RecvEnded => core.on_recv_ended(key),
            }
        }
        n
    }

    /// Readable connections waiting for the next read pass.
    pub fn has_reads(&self) -> bool {
        !self.to_read.is_empty()
    }

    /// Results of sends (or ended receives) the core has not been handed yet.
    pub fn has_results(&self) -> bool {
        !self.done.is_empty()
    }

    /// The listener reported connections that a turn has not accepted yet.
    pub fn accept_pending(&self) -> bool {
        self.accept_ready
    }
}

/// `d` as a kernel timespec (saturated: no duration here comes near `i64::MAX` seconds).
fn timespec(d: Duration) -> Timespec {
    Timespec::try_from(d).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    })
}

fn io_conn(conns: &mut [Option<IoConn>], key: ConnKey) -> Option<&mut IoConn> {
    conns
        .get_mut(key.index())?
        .as_mut()
        .filter(|c| c.key == key)
}

fn queue_read(c: &mut IoConn, to_read: &mut Vec<ConnKey>) {
    if c.armed && c.readable && !c.queued {
        c.queued = true;
        to_read.push(c.key);
    }
}

/// Writes what a short send left, now that there is room; reports the result unless it would
/// block again (then the send stays in flight until the next `EPOLLOUT`).
fn write_rest(c: &mut IoConn, done: &mut Vec<(ConnKey, Done)>) {
    let Some((buf, offset)) = c.rest.take() else {
        return;
    };
    match send_now(c.fd.as_fd(), &buf, offset) {
        Ok(0) => {
            c.writable = false;
            c.rest = Some((buf, offset));
        }
        Ok(n) if offset + n < buf.len() => {
            c.writable = false;
            c.rest = Some((buf, offset + n));
            c.in_flight = false;
            done.push((c.key, Done::Sent(Sent::Part(n))));
        }
        Ok(_) => {
            c.in_flight = false;
            done.push((c.key, Done::Sent(Sent::All(Some(buf.into_vec())))));
        }
        Err(e) => {
            tracing::debug!("send failed: {e}");
            c.in_flight = false;
            done.push((c.key, Done::Sent(Sent::Failed)));
        }
    }
}

impl Io for Backend {
    fn send(&mut self, key: ConnKey, out: &mut OutQueue) -> Sending {
        let Backend { conns, done, .. } = self;
        let Some(c) = io_conn(conns, key) else {
            done.push((key, Done::Sent(Sent::Failed)));
            return Sending::Started;
        };
        let result = send_now(c.fd.as_fd(), out.queued(), 0);
        match result {
            Ok(n) if n == out.len() => {
                out.copied();
                Sending::Done
            }
            Ok(0) => {
                // No room: the whole send waits for EPOLLOUT.
                c.writable = false;
                c.rest = Some((out.take(), 0));
                c.in_flight = true;
                Sending::Started
            }
            Ok(n) => {
                c.writable = false;
                c.rest = Some((out.take(), n));
                done.push((key, Done::Sent(Sent::Part(n))));
                Sending::Started
            }
            Err(e) => {
                tracing::debug!("send failed: {e}");
                done.push((key, Done::Sent(Sent::Failed)));
                Sending::Started
            }
        }
    }

    fn resend(&mut self, key: ConnKey) {
        let Backend { conns, done, .. } = self;
        let Some(c) = io_conn(conns, key) else {
            done.push((key, Done::Sent(Sent::Failed)));
            return;
        };
        if c.rest.is_none() {
            done.push((key, Done::Sent(Sent::All(None))));
            return;
        }
        c.in_flight = true;
        if c.writable {
            write_rest(c, done);
        }
    }

    fn arm_recv(&mut self, key: ConnKey) {
        let Backend { conns, to_read, .. } = self;
        if let Some(c) = io_conn(conns, key) {
            c.armed = true;
            queue_read(c, to_read);
        }
    }

    fn cancel_recv(&mut self, key: ConnKey) {
        if let Some(c) = io_conn(&mut self.conns, key) {
            c.armed = false;
        }
        self.done.push((key, Done::RecvEnded));
    }

    fn cork(&mut self, key: ConnKey) {
        if let Some(c) = io_conn(&mut self.conns, key) {
            let _ = rustix::net::sockopt::set_tcp_cork(&c.fd, true);
        }
    }

    fn shutdown_write(&mut self, key: ConnKey) {
        if let Some(c) = io_conn(&mut self.conns, key) {
            let _ = rustix::net::shutdown(&c.fd, rustix::net::Shutdown::Write);
        }
    }

    fn close(&mut self, key: ConnKey, _abort: bool) {
        // Closing the socket ends everything on it (and removes it from the epoll set); there
        // is no operation left in the kernel to unblock, so `abort` needs nothing more.
        let Some(slot) = self.conns.get_mut(key.index()) else {
            return;
        };
        if !slot.as_ref().is_some_and(|c| c.key == key) {
            return;
        }
        if let Some(c) = slot.take()
            && c.in_flight
        {
            self.done.push((key, Done::Sent(Sent::Failed)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANG_GUARD: Duration = Duration::from_secs(10);

    /// A current-thread runtime with IO, for a backend to register in (enter it first).
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap()
    }

    /// What waits on the listener is taken (at most `max`, and while the core has room)
    /// whether or not epoll reported it; the call says when it found the queue empty.
    #[test]
    fn accept_queued_takes_what_waits_while_the_core_has_room() {
        use crate::conn::tests::{core_with, settings};
        let rt = runtime();
        let _guard = rt.enter();
        let listener = crate::uring::tests::abstract_listener("accept-queued-epoll");
        let addr = listener.local_addr().unwrap();
        let connect = || std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
        let mut clients: Vec<_> = (0..4).map(|_| connect()).collect();
        let fd = OwnedFd::from(listener.try_clone().unwrap());
        let mut b = Backend::new(Arc::new(fd), false).unwrap();
        b.listen(false).unwrap();
        let core = core_with(crate::conn::Settings {
            max_conns: 5,
            ..settings()
        });
        assert_eq!(
            b.accept_queued(&core, 1).unwrap(),
            (1, false),
            "at most max"
        );
        assert_eq!(
            b.accept_queued(&core, 8).unwrap(),
            (3, true),
            "then it is empty"
        );
        clients.push(connect());
        assert_eq!(
            b.accept_queued(&core, 8).unwrap(),
            (1, false),
            "full: it looks no further"
        );
        assert!(core.is_full());
        clients.push(connect());
        assert_eq!(
            b.accept_queued(&core, 8).unwrap(),
            (0, false),
            "none while the core is full"
        );
    }

    /// The idle tick's timerfd ends waits every period (it is re-armed by the read its event
    /// brings), counts as no IO, and once stopped ends none.
    #[test]
    fn the_idle_tick_ends_waits_each_period_until_it_is_stopped() {
        let rt = runtime();
        let _guard = rt.enter();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut b = Backend::new(Arc::new(OwnedFd::from(listener)), true).unwrap();
        let period = Duration::from_millis(2);
        b.start_tick(period).unwrap();
        for _ in 0..5 {
            assert_eq!(
                b.wait_events(Some(HANG_GUARD)).unwrap(),
                0,
                "a tick is no IO"
            );
            assert!(b.take_tick(), "a tick ended the wait");
            assert!(!b.take_tick(), "taken once");
        }
        b.stop_tick().unwrap();
        // Disarmed in the kernel, and what was pending forgotten.
        let left = rustix::time::timerfd_gettime(&b.tick).unwrap();
        assert_eq!((left.it_value.tv_sec, left.it_value.tv_nsec), (0, 0));
        assert_eq!(b.wait_events(Some(Duration::ZERO)).unwrap(), 0);
        assert!(!b.take_tick(), "a stopped tick does not tick");
    }
}
