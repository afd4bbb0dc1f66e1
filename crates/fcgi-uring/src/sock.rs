//! Sends and accepts both IO backends make as system calls of their own: the epoll backend for
//! every send and accept, the io_uring backend for the first try of each answer
//! (`ring.direct_send`) and for a stopping worker's last look at its listener.
//!
//! Guarantees: a send never blocks (`MSG_DONTWAIT`, whatever the socket's mode) and never
//! raises SIGPIPE (`MSG_NOSIGNAL`); a send that would block reports `Ok(0)`. An accept on a
//! non-blocking listener (every listener the server serves is one) never blocks and reports
//! `Ok(None)` when no connection waits.

#![forbid(unsafe_code)]

use crate::conn::{MAX_PIECES, OutBuf};
use rustix::io::Errno;
use rustix::net::{SendFlags, SocketFlags};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

const FLAGS: SendFlags = SendFlags::NOSIGNAL.union(SendFlags::DONTWAIT);

/// One non-blocking send of `out` from `offset`; `Ok(0)` when it would block.
/// Stops `listener` listening, so that new connections are refused (TCP: reset at once;
/// UNIX: `ECONNREFUSED`) rather than completed into a queue nobody accepts from any more.
/// Linux takes `shutdown(SHUT_RD)` on a listening socket to mean that (a TCP one leaves the
/// listening state). Only for a socket no other process serves: the shutdown reaches every
/// descriptor of it.
pub(crate) fn refuse_new_connections(listener: BorrowedFd<'_>) {
    if let Err(e) = rustix::net::shutdown(listener, rustix::net::Shutdown::Read) {
        tracing::debug!("stopping the listener: {e}");
    }
}

pub(crate) fn send_now(fd: BorrowedFd<'_>, out: &OutBuf, offset: usize) -> Result<usize, Errno> {
    loop {
        let result = match out.contiguous() {
            Some(bytes) => rustix::net::send(fd, bytes.get(offset..).unwrap_or_default(), FLAGS),
            None => send_pieces(fd, out, offset),
        };
        match result {
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(0),
            other => return other,
        }
    }
}

/// One accept on the non-blocking `listener`, the new socket with `flags`; `Ok(None)` when no
/// connection waits. A connection reset while it waited (ECONNABORTED) is skipped.
pub(crate) fn accept_now(
    listener: BorrowedFd<'_>,
    flags: SocketFlags,
) -> Result<Option<OwnedFd>, Errno> {
    loop {
        match rustix::net::accept_with(listener, flags) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::AGAIN) => return Ok(None),
            Err(Errno::INTR | Errno::CONNABORTED) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One `sendmsg` of every piece of `out` from `offset` (large body chunks shared, see
/// [`OutBuf`]).
fn send_pieces(fd: BorrowedFd<'_>, out: &OutBuf, offset: usize) -> Result<usize, Errno> {
    let mut pieces = [io::IoSlice::new(&[]); MAX_PIECES];
    let mut count = 0;
    out.each_piece(offset, |piece| {
        if let Some(slot) = pieces.get_mut(count) {
            *slot = io::IoSlice::new(piece);
            count += 1;
        }
    });
    rustix::net::sendmsg(
        fd,
        pieces.get(..count).unwrap_or_default(),
        &mut rustix::net::SendAncillaryBuffer::default(),
        FLAGS,
    )
}
