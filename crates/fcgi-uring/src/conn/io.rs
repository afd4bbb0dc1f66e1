//! What the connection core asks of an IO backend, and the output queue it hands over.
//!
//! The core decides, the backend executes: [`super::Core::flush`] calls these methods for each
//! connection that changed, and the backend feeds what completes back through the core's input
//! methods (`accept`, `on_bytes`, `on_sent`...). Nothing here knows how the bytes travel.

use super::ConnKey;
use bytes::Bytes;

/// What became of a send by the time [`Io::send`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sending {
    /// Under way: its result comes with [`super::Core::on_sent`].
    Started,
    /// The socket took every byte at once (a non-blocking write made by the backend) and the
    /// queue was emptied with [`OutQueue::copied`]: the core settles the send where it made
    /// it, with no report, no second pass over the connection and no write deadline.
    Done,
}

/// Operations the core asks of the IO, one connection at a time. A backend keeps, per
/// connection, what these need (its socket, the receive in flight, the rest of a short send).
pub(crate) trait Io {
    /// Sends the queued bytes of `out` (one piece, or several when large body chunks are
    /// shared, see [`OutBuf`]): the backend copies them ([`OutQueue::copied`]) or takes the
    /// buffer ([`OutQueue::take`]). A send the socket took whole before this returned is
    /// [`Sending::Done`] and reported no further; any other completes with
    /// [`super::Core::on_sent`].
    fn send(&mut self, key: ConnKey, out: &mut OutQueue) -> Sending;
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

/// Body chunks at least this large are sent from the handler's own buffer (a vectored send)
/// instead of being copied behind their record header; smaller ones are copied, which costs
/// less than one more piece to send.
pub const SHARE_MIN: usize = 16 * 1024;

/// At most this many shared chunks per buffer (later ones are copied), so that a send has at
/// most [`MAX_PIECES`] pieces.
pub const MAX_SHARED: usize = 32;

/// The most pieces an [`OutBuf`] has: its shared chunks and the encoded bytes around them.
pub const MAX_PIECES: usize = 2 * MAX_SHARED + 1;

/// Output as a send takes it: encoded bytes (record headers, CGI heads, small bodies) with large
/// body chunks kept as the handler's own [`Bytes`] between them, so that a large response body
/// is not copied before the kernel copies it. The bytes sent are the encoded bytes with each
/// shared chunk inserted where it was pushed.
#[derive(Debug, Default)]
pub struct OutBuf {
    bytes: Vec<u8>,
    /// Boxed: a connection's idle state keeps one pointer for it (most responses share none).
    shared: Option<Box<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Each chunk goes before `bytes[at..]`; `at` never decreases and is at most `bytes.len()`
    /// (the bytes are only appended to, or cleared with the chunks).
    chunks: Vec<(usize, Bytes)>,
    /// Bytes in `chunks`.
    len: usize,
}

impl OutBuf {
    /// Bytes to send in all.
    pub fn len(&self) -> usize {
        self.bytes.len() + self.shared.as_ref().map_or(0, |s| s.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn chunks(&self) -> &[(usize, Bytes)] {
        self.shared.as_ref().map_or(&[], |s| &s.chunks)
    }

    /// All the bytes as one slice, when no chunk is shared.
    pub fn contiguous(&self) -> Option<&[u8]> {
        self.chunks().is_empty().then_some(self.bytes.as_slice())
    }

    /// Calls `f` with each non-empty piece of the bytes from `offset` on, in order (at most
    /// [`MAX_PIECES`]).
    pub fn each_piece<'a>(&'a self, offset: usize, mut f: impl FnMut(&'a [u8])) {
        let mut skip = offset;
        let mut emit = |piece: &'a [u8]| {
            let cut = skip.min(piece.len());
            skip -= cut;
            if let Some(rest) = piece.get(cut..).filter(|r| !r.is_empty()) {
                f(rest);
            }
        };
        let mut from = 0;
        for (at, chunk) in self.chunks() {
            emit(self.bytes.get(from..*at).unwrap_or_default());
            emit(chunk);
            from = *at;
        }
        emit(self.bytes.get(from..).unwrap_or_default());
    }

    /// Appends every byte to `out`, in order (what a send of the whole buffer sends).
    #[cfg(any(test, feature = "bench-internals"))]
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.len());
        self.each_piece(0, |piece| out.extend_from_slice(piece));
    }

    /// The encoded bytes, to append records to.
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Appends `chunk`: shared when it is large and the buffer has room for another piece,
    /// else copied.
    pub fn push_chunk(&mut self, chunk: Bytes) {
        if chunk.len() < SHARE_MIN || self.shared_chunks() >= MAX_SHARED {
            self.bytes.extend_from_slice(&chunk);
            return;
        }
        let shared = self.shared.get_or_insert_default();
        shared.len += chunk.len();
        shared.chunks.push((self.bytes.len(), chunk));
    }

    /// Shared chunks held (each one piece more to send).
    pub fn shared_chunks(&self) -> usize {
        self.chunks().len()
    }

    /// Empties the buffer, keeping its allocations.
    pub fn clear(&mut self) {
        self.bytes.clear();
        if let Some(shared) = self.shared.as_mut() {
            shared.chunks.clear();
            shared.len = 0;
        }
    }

    /// The encoded bytes' buffer, for reuse (the shared chunks are released).
    pub fn into_vec(self) -> Vec<u8> {
        self.bytes
    }
}

impl From<Vec<u8>> for OutBuf {
    fn from(bytes: Vec<u8>) -> OutBuf {
        OutBuf {
            bytes,
            ..OutBuf::default()
        }
    }
}

/// A connection's output not yet handed to a send, and an emptied buffer kept for reuse (so
/// the steady state allocates nothing).
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    out: OutBuf,
    spare: Vec<u8>,
}

impl OutQueue {
    /// The queued output.
    pub fn queued(&self) -> &OutBuf {
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
        if self.out.bytes.capacity() > MAX_SPARE_CAPACITY {
            self.out.bytes = std::mem::take(&mut self.spare);
        }
        self.out.clear();
    }

    /// Takes the queued output (its buffer); the queue goes on in the spare one.
    pub fn take(&mut self) -> OutBuf {
        let next = OutBuf::from(std::mem::take(&mut self.spare));
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
        &mut self.out.bytes
    }

    /// The output, for a response body whose large chunks are shared.
    pub(super) fn output(&mut self) -> &mut OutBuf {
        &mut self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(buf: &OutBuf, offset: usize) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        buf.each_piece(offset, |p| all.push(p.to_vec()));
        all
    }

    #[test]
    fn large_chunks_are_shared_between_the_encoded_bytes_and_small_ones_copied() {
        let big = Bytes::from(vec![b'b'; SHARE_MIN]);
        let mut buf = OutBuf::from(b"head".to_vec());
        buf.push_chunk(big.clone());
        buf.bytes_mut().extend_from_slice(b"mid");
        buf.push_chunk(Bytes::from_static(b"small"));
        buf.push_chunk(big.clone());
        assert_eq!(buf.shared_chunks(), 2);
        assert_eq!(buf.len(), 4 + SHARE_MIN + 3 + 5 + SHARE_MIN);
        assert_eq!(buf.contiguous(), None);
        let expected = [&b"head"[..], &big, b"midsmall", &big];
        assert_eq!(pieces(&buf, 0), expected.map(<[u8]>::to_vec));
        // The shared chunk is the handler's buffer, not a copy.
        let mut first = None;
        buf.each_piece(4, |p| {
            first.get_or_insert(p.as_ptr());
        });
        assert_eq!(first, Some(big.as_ptr()));
    }

    #[test]
    fn append_to_copies_every_piece_in_order_after_what_is_there() {
        let big = Bytes::from(vec![b'b'; SHARE_MIN]);
        let mut buf = OutBuf::from(b"head".to_vec());
        buf.push_chunk(big.clone());
        buf.bytes_mut().extend_from_slice(b"tail");
        let mut out = b"before".to_vec();
        buf.append_to(&mut out);
        assert_eq!(out, [&b"before"[..], b"head", &big, b"tail"].concat());
    }

    #[test]
    fn pieces_start_at_any_offset_and_leave_out_empty_ones() {
        let big = Bytes::from((0..SHARE_MIN).map(|i| i as u8).collect::<Vec<u8>>());
        let mut buf = OutBuf::default();
        buf.push_chunk(big.clone());
        buf.bytes_mut().extend_from_slice(b"tail");
        let whole: Vec<u8> = pieces(&buf, 0).concat();
        assert_eq!(
            pieces(&buf, 0).len(),
            2,
            "no empty piece before the first chunk"
        );
        for offset in [
            0,
            1,
            SHARE_MIN - 1,
            SHARE_MIN,
            SHARE_MIN + 3,
            SHARE_MIN + 4,
            10 * SHARE_MIN,
        ] {
            let rest = pieces(&buf, offset);
            assert!(rest.iter().all(|p| !p.is_empty()));
            assert_eq!(
                rest.concat(),
                whole.get(offset..).unwrap_or_default(),
                "from {offset}"
            );
        }
    }

    #[test]
    fn past_max_shared_chunks_are_copied() {
        let mut buf = OutBuf::default();
        for _ in 0..MAX_SHARED + 3 {
            buf.push_chunk(Bytes::from(vec![1; SHARE_MIN]));
            buf.bytes_mut().push(0);
        }
        assert_eq!(buf.shared_chunks(), MAX_SHARED);
        let mut count = 0;
        buf.each_piece(0, |_| count += 1);
        assert!(count <= MAX_PIECES, "{count} pieces");
        assert_eq!(buf.len(), (MAX_SHARED + 3) * (SHARE_MIN + 1));
    }

    #[test]
    fn a_taken_buffer_leaves_an_empty_queue_and_clearing_drops_the_chunks() {
        let mut queue = OutQueue::default();
        queue.output().push_chunk(Bytes::from(vec![1; SHARE_MIN]));
        assert_eq!(queue.len(), SHARE_MIN);
        let taken = queue.take();
        assert!(queue.is_empty());
        assert_eq!(taken.len(), SHARE_MIN);
        queue.output().push_chunk(Bytes::from(vec![1; SHARE_MIN]));
        queue.copied();
        assert!(queue.is_empty());
        assert_eq!(queue.queued().shared_chunks(), 0);
    }
}
