//! Registering an owned fd in the current tokio reactor. tokio (>= 1.54) makes that `unsafe`;
//! this crate allows `unsafe` only in this module tree, so the epoll backend registers its
//! epoll fd through here.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// An fd owned by its [`AsyncFd`] for the whole registration: nothing can close or replace it
/// (no mutable access is given out).
#[derive(Debug)]
pub struct ReactorFd(OwnedFd);

impl ReactorFd {
    /// The fd, for syscalls on it.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for ReactorFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Registers `fd` in the current tokio reactor for readable, edge-triggered readiness. Call it
/// inside a tokio runtime with IO enabled.
pub fn register_readable(fd: OwnedFd) -> io::Result<AsyncFd<ReactorFd>> {
    // SAFETY: `ReactorFd` owns the fd and gives out no mutable access, so the fd stays open and
    // refers to the same file for the whole life of the AsyncFd (closed only when it is
    // dropped, after deregistration), as `register_with_interest` requires.
    Ok(unsafe { AsyncFd::register_with_interest(ReactorFd(fd), Interest::READABLE) }?)
}
