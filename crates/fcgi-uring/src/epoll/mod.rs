//! The epoll backend: the same connection core ([`crate::conn`]) driven by readiness instead of
//! io_uring completions, for hosts where io_uring is blocked (container seccomp profiles,
//! `kernel.io_uring_disabled`, a low RLIMIT_MEMLOCK) or when `server.io = "epoll"`.
//!
//! Guarantees, as with io_uring: one epoll instance per worker, its own listener (a shared UNIX
//! listener is registered with `EPOLLEXCLUSIVE`, so one worker wakes per connection), its own
//! connections; nothing shared between workers on the request path. Each loop turn reads every
//! ready connection (one `recv` of up to 64 KiB each), dispatches the requests that became
//! complete, then makes at most one `send` per connection. The epoll fd is registered in the
//! worker's tokio reactor, so the worker sleeps in one place for sockets, handler tasks and
//! timers. No `unsafe`: the syscalls go through `rustix`.
//!
//! Connections are registered once, edge-triggered, for input and output: pausing a reader
//! (full body buffer, full output queue) or waiting for room to send needs no `epoll_ctl`, and
//! a paused connection with unread bytes does not wake the worker again and again as it would
//! level-triggered. Listeners are level-triggered: what one turn leaves in the accept queue is
//! reported again.

pub(crate) mod backend;
pub(crate) mod driver;
