//! Sends both IO backends make as system calls of their own: the epoll backend for every
//! send, the io_uring backend for the first try of each answer (`ring.direct_send`).
//!
//! Guarantee: a send never blocks (`MSG_DONTWAIT`, whatever the socket's mode) and never raises
//! SIGPIPE (`MSG_NOSIGNAL`); a send that would block reports `Ok(0)`.

#![forbid(unsafe_code)]

use crate::conn::{MAX_PIECES, OutBuf};
use rustix::io::Errno;
use rustix::net::SendFlags;
use std::io;
use std::os::fd::BorrowedFd;

const FLAGS: SendFlags = SendFlags::NOSIGNAL.union(SendFlags::DONTWAIT);

/// One non-blocking send of `out` from `offset`; `Ok(0)` when it would block.
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
