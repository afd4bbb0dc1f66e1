//! Registering a ring's wakeup fd in tokio's reactor.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The ring's wakeup fd as a tokio readiness source: readable when completions may be ready.
///
/// It holds its own duplicate of the fd, so it stays valid for as long as it lives, whatever
/// happens to the ring.
#[derive(Debug)]
pub struct Waiter {
    fd: AsyncFd<OwnedFd>,
}

impl Waiter {
    /// Registers a duplicate of `wait_fd` (from [`super::Ring::wait_fd`]) with the current tokio
    /// runtime's reactor. Must be called inside a tokio runtime.
    pub fn register(ring: &super::Ring) -> io::Result<Waiter> {
        let raw: RawFd = ring.wait_fd();
        // SAFETY: `raw` is the ring's wakeup fd, open for as long as `ring` lives; `ring` is
        // borrowed for this whole call, so the fd is open while it is duplicated here.
        let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
        let owned = borrowed.try_clone_to_owned()?;
        // SAFETY: the AsyncFd owns `owned`, an fd nobody else can close, so it stays open and
        // refers to the same file description until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Waiter { fd })
    }

    /// Polls for readiness; clears it when ready, so that the next completion re-arms it.
    pub fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self.fd.poll_read_ready(cx) {
            std::task::Poll::Ready(Ok(mut guard)) => {
                guard.clear_ready();
                std::task::Poll::Ready(())
            }
            std::task::Poll::Ready(Err(_)) => std::task::Poll::Ready(()),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}
