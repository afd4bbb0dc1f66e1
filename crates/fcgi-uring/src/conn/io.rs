//! What the connection core asks of an IO backend, and the output queue it hands over.
//!
//! The core decides, the backend executes: [`super::Core::flush`] calls these methods for each
//! connection that changed, and the backend feeds what completes back through the core's input
//! methods (`accept`, `on_bytes`, `on_sent`...). Nothing here knows how the bytes travel.

use super::ConnKey;

/// Operations the core asks of the IO, one connection at a time. A backend keeps, per
/// connection, what these need (its socket, the receive in flight, the rest of a short send).
pub(crate) trait Io {
    /// Sends the queued bytes of `out`: the backend copies them ([`OutQueue::copied`]) or
    /// takes the buffer ([`OutQueue::take`]). Its completion is reported with
    /// [`super::Core::on_sent`].
    fn send(&mut self, key: ConnKey, out: &mut OutQueue);
    /// Sends again what a short send left (reported as [`super::Sent::Part`]).
    fn resend(&mut self, key: ConnKey);
    /// Arms a receive that delivers bytes until it ends ([`super::Core::on_recv_ended`]).
    fn arm_recv(&mut self, key: ConnKey);
    /// Cancels the armed receive; its final completion still comes.
    fn cancel_recv(&mut self, key: ConnKey);
    /// Shuts the write side down (our FIN) once every byte was sent.
    fn shutdown_write(&mut self, key: ConnKey);
    /// Holds back the last partial segment of what is sent next (TCP_CORK), so that the FIN of
    /// a [`Io::shutdown_write`] that follows goes out in the same segment as the last bytes; a
    /// no-op where it does not apply (UNIX sockets).
    fn cork(&mut self, key: ConnKey);
    /// The core dropped the connection: release the socket once no operation uses it.
    /// `abort`: shut both directions down first, so that an operation stuck on the peer ends.
    fn close(&mut self, key: ConnKey, abort: bool);
}

/// Output buffers larger than this are freed after use rather than kept for the next response.
const MAX_SPARE_CAPACITY: usize = 256 * 1024;

/// A connection's output not yet handed to a send, and an emptied buffer kept for reuse (so
/// the steady state allocates nothing).
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    out: Vec<u8>,
    spare: Vec<u8>,
}

impl OutQueue {
    /// The queued bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.out
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// The backend copied the queued bytes away: the queue empties and keeps its allocation
    /// for the next response, unless it grew large.
    pub fn copied(&mut self) {
        if self.out.capacity() > MAX_SPARE_CAPACITY {
            self.out = std::mem::take(&mut self.spare);
        }
        self.out.clear();
    }

    /// Takes the queued bytes (their buffer); the queue goes on in the spare one.
    pub fn take(&mut self) -> Vec<u8> {
        let next = std::mem::take(&mut self.spare);
        std::mem::replace(&mut self.out, next)
    }

    /// A buffer from [`OutQueue::take`] whose bytes were sent, kept as the spare if there is
    /// none and it is not large.
    pub(super) fn give_back(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        if self.spare.capacity() == 0 && buf.capacity() <= MAX_SPARE_CAPACITY {
            self.spare = buf;
        }
    }

    pub(super) fn clear(&mut self) {
        self.out.clear();
    }

    /// The buffer records are encoded into.
    pub(super) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
}
