//! The request body handed to handlers: STDIN as it arrives (spec 6.2), as an `http_body::Body`.
//!
//! Three shapes, chosen by the runtime when it dispatches a request:
//! - empty, and complete-in-hand (the whole STDIN arrived with the params, as nginx sends a GET):
//!   no channel, no allocation beyond the bytes themselves (a body of 16 KiB or more that one
//!   of the worker's own receives brought whole is a slice of that receive's buffer, uncopied);
//! - HTTP (the `http1`/`h2c` comparison modes, feature `http-compare`): hyper's body, streamed
//!   through as it is;
//! - streaming: a per-request channel the worker fills as STDIN records arrive. The channel is
//!   created, filled and drained on one core; its mutex is never contended (it exists because
//!   `axum` and most of the ecosystem require `Send` bodies).
//!
//! Guarantees: the bytes a handler reads are exactly the STDIN stream (its end is the empty STDIN
//! record, never CONTENT_LENGTH); buffered, unread bytes are bounded by the runtime's
//! `max_body_buffer` (past it the connection stops reading until the handler catches up); a
//! request aborted by the proxy or a connection that closes mid-body ends the body with a
//! [`BodyError`].

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Why a request body ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyError {
    /// The proxy sent FCGI_ABORT_REQUEST.
    Aborted,
    /// The connection closed before the end of STDIN.
    ConnectionClosed,
    /// No body byte arrived for the body timeout (`Timeouts::body`).
    TimedOut,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyError::Aborted => "request aborted by the web server (FCGI_ABORT_REQUEST)",
            BodyError::ConnectionClosed => "connection closed before the end of the request body",
            BodyError::TimedOut => "request body timed out: no byte arrived in time",
        })
    }
}

impl std::error::Error for BodyError {}

/// The body of a FastCGI request: the STDIN stream.
#[derive(Debug)]
pub struct RequestBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Empty,
    Full(Option<Bytes>),
    Stream(Arc<Channel>),
    #[cfg(feature = "http-compare")]
    Incoming(hyper::body::Incoming),
}

impl RequestBody {
    /// A body with no bytes.
    pub fn empty() -> RequestBody {
        RequestBody { kind: Kind::Empty }
    }

    /// A body whose bytes are all known.
    pub fn full(bytes: Bytes) -> RequestBody {
        if bytes.is_empty() {
            return RequestBody::empty();
        }
        RequestBody {
            kind: Kind::Full(Some(bytes)),
        }
    }

    /// The body of a request received over HTTP by hyper, streamed through (an empty one
    /// costs nothing). A transport error ends it with [`BodyError::ConnectionClosed`].
    #[cfg(feature = "http-compare")]
    pub(crate) fn from_incoming(body: hyper::body::Incoming) -> RequestBody {
        if body.is_end_stream() {
            return RequestBody::empty();
        }
        RequestBody {
            kind: Kind::Incoming(body),
        }
    }

    pub(crate) fn streaming(channel: Arc<Channel>) -> RequestBody {
        RequestBody {
            kind: Kind::Stream(channel),
        }
    }
}

impl Default for RequestBody {
    fn default() -> RequestBody {
        RequestBody::empty()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(channel) => channel.poll_next(cx),
            #[cfg(feature = "http-compare")]
            Kind::Incoming(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(BodyError::ConnectionClosed))),
                other => other.map(|f| f.map(|f| f.map_err(|_| BodyError::ConnectionClosed))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(channel) => channel.is_drained(),
            #[cfg(feature = "http-compare")]
            Kind::Incoming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(_) => SizeHint::default(),
            #[cfg(feature = "http-compare")]
            Kind::Incoming(body) => body.size_hint(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Kind::Stream(channel) = &self.kind {
            channel.reader_dropped();
        }
    }
}

/// The DATA stream of a FILTER request (spec 6.4: the file to filter; its FCGI_DATA_LAST_MOD
/// and FCGI_DATA_LENGTH are in [`crate::TrustedParams`]), as a request extension. Take it once:
/// `req.extensions().get::<FilterData>().and_then(FilterData::take)`.
#[derive(Debug, Clone)]
pub struct FilterData(Arc<Mutex<Option<RequestBody>>>);

impl FilterData {
    pub(crate) fn new(body: RequestBody) -> FilterData {
        FilterData(Arc::new(Mutex::new(Some(body))))
    }

    /// The DATA stream; `None` once taken.
    pub fn take(&self) -> Option<RequestBody> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What the producer should do after a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep reading.
    Continue,
    /// More than the limit is buffered: stop reading the connection until
    /// [`Channel::wants_more`] says otherwise (the driver is woken then).
    Pause,
}

/// The STDIN channel of one streaming request.
///
/// Bytes are copied into a fill buffer sized for the body's announced length (CONTENT_LENGTH,
/// at most [`RESERVE_FACTOR`] times the bytes that came with it and half the limit), which is
/// handed to the reader as one frame once it is full, when the stream ends or fails, or when
/// the unread bytes pass half the limit. A body that announces its length therefore reaches
/// the handler in few frames, usually one, which a handler that collects it takes without a
/// second copy to join them; a body of unknown length is handed on as it arrives.
#[derive(Debug)]
pub(crate) struct Channel {
    state: Mutex<ChannelState>,
    limit: usize,
}

/// How much more than the bytes that came a body's buffer may reserve for its announced length:
/// an announced length costs nothing until bytes come, and cannot make a few bytes reserve much
/// more. Eight: a 64 KiB body whose first receive also carried the params (a little under
/// 16 KiB of body) fits the first buffer, which then never grows (growing copies).
pub(crate) const RESERVE_FACTOR: usize = 8;

/// The least room a new fill buffer of a [`Channel`] gets (or half its limit, if less): bytes
/// that arrive in small records are gathered into frames of about this size instead of one
/// frame each, so that a body sent a byte a record holds about its bytes in memory, not a
/// frame's bookkeeping (some 60 bytes) per byte.
pub(crate) const MIN_FILL: usize = 4 * 1024;

/// Room for a body's buffer when `len` bytes arrive: what is still `announced` (if anything),
/// but never less than `len` nor more than [`RESERVE_FACTOR`] times it or `cap`.
pub(crate) fn reserve_for(len: usize, announced: Option<usize>, cap: usize) -> usize {
    let most = len.saturating_mul(RESERVE_FACTOR).min(cap).max(len);
    announced.map_or(len, |left| left.clamp(len, most))
}

#[derive(Debug, Default)]
struct ChannelState {
    /// Frames ready for the reader.
    chunks: VecDeque<Bytes>,
    /// Bytes not handed on yet: the reader gets them whole (see [`Channel`]).
    filling: Vec<u8>,
    /// Bytes the body announced and that have not arrived yet.
    announced_left: Option<usize>,
    /// Unread bytes, `filling` included.
    buffered: usize,
    ended: bool,
    error: Option<BodyError>,
    reader: Option<Waker>,
    reader_gone: bool,
    /// The driver paused reading for this channel and wants a wake when it drains.
    driver: Option<Waker>,
}

impl Channel {
    /// A channel whose body announced `announced_left` more bytes (if it did), starting with
    /// `first` (the bytes that arrived before the handler was called, and the room reserved
    /// for more).
    pub(crate) fn new(limit: usize, first: Vec<u8>, announced_left: Option<usize>) -> Channel {
        let ch = Channel {
            state: Mutex::new(ChannelState {
                buffered: first.len(),
                filling: first,
                announced_left,
                ..ChannelState::default()
            }),
            limit,
        };
        ch.settle(&mut ch.lock());
        ch
    }

    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        // A panic while holding this lock cannot leave the state inconsistent (every update is a
        // single field assignment or push), so a poisoned lock is used as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds STDIN bytes (copied). Dropped silently when the handler no longer holds the body.
    pub(crate) fn push(&self, data: &[u8]) -> Flow {
        let mut st = self.lock();
        if st.reader_gone || st.ended || st.error.is_some() {
            return Flow::Continue;
        }
        if st.filling.capacity() - st.filling.len() < data.len() {
            Self::hand_on(&mut st);
            if st.filling.capacity() < data.len() {
                // Never more than the bytes still announced: the buffer is full, and handed
                // on, with the body's last byte.
                let floor = st
                    .announced_left
                    .map_or(MIN_FILL, |left| MIN_FILL.min(left))
                    .min(self.limit / 2);
                let want = reserve_for(data.len(), st.announced_left, self.limit / 2).max(floor);
                st.filling = Vec::with_capacity(want);
            }
        }
        st.filling.extend_from_slice(data);
        st.buffered += data.len();
        st.announced_left = st
            .announced_left
            .map(|left| left.saturating_sub(data.len()));
        self.settle(&mut st);
        if st.buffered > self.limit {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }

    /// Hands the fill buffer on once it is full or holds the last byte announced (a buffer
    /// staged before dispatch may have grown past the announced length), or while the reader
    /// waits if the body's length is unknown or its unread bytes passed half the limit (so that
    /// the reader can always bring them under it, which resumes a paused connection; a reader
    /// that is not waiting gets them at its next poll, see [`Channel::poll_next`]). Not at
    /// every push past half the limit: a body sent a byte a record would be held a frame a
    /// byte.
    fn settle(&self, st: &mut ChannelState) {
        let full = st.filling.len() == st.filling.capacity() || st.announced_left == Some(0);
        let awaited = st.reader.is_some() && !self.fills(st);
        if !st.filling.is_empty() && (full || awaited) {
            Self::hand_on(st);
        }
    }

    /// Whether the fill buffer waits to be full before its reader gets it: its body announced
    /// a length and its unread bytes are within half the limit.
    fn fills(&self, st: &ChannelState) -> bool {
        st.announced_left.is_some() && st.buffered <= self.limit / 2
    }

    /// Moves the filled bytes to the reader's frames and wakes it. A buffer less than half
    /// full is copied into a frame of its own size and kept for the next bytes: a frame holds
    /// no more memory than twice its bytes.
    fn hand_on(st: &mut ChannelState) {
        if st.filling.is_empty() {
            return;
        }
        let frame = if st.filling.len() < st.filling.capacity() / 2 {
            let frame = Bytes::copy_from_slice(&st.filling);
            st.filling.clear();
            frame
        } else {
            Bytes::from(std::mem::take(&mut st.filling))
        };
        st.chunks.push_back(frame);
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }

    /// The empty STDIN record arrived.
    pub(crate) fn end(&self) {
        let mut st = self.lock();
        Self::hand_on(&mut st);
        // No more bytes come: a buffer kept by `hand_on` is not held for the body's life.
        st.filling = Vec::new();
        st.ended = true;
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }

    /// The body cannot complete.
    pub(crate) fn fail(&self, error: BodyError) {
        let mut st = self.lock();
        if st.ended {
            return;
        }
        Self::hand_on(&mut st);
        st.filling = Vec::new();
        st.error = Some(error);
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }

    /// True when reading may resume (buffer at or under half the limit, or nobody reads);
    /// otherwise registers `driver` to be woken when that becomes true.
    pub(crate) fn wants_more(&self, driver: &Waker) -> bool {
        let mut st = self.lock();
        if st.reader_gone || st.buffered <= self.limit / 2 {
            return true;
        }
        st.driver = Some(driver.clone());
        false
    }

    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut st = self.lock();
        if st.chunks.is_empty() && !self.fills(&st) {
            // A body of unknown length, or past half the limit: what has arrived so far (the
            // reader is this poll: a waker it left earlier is not woken for it).
            st.reader = None;
            Self::hand_on(&mut st);
        }
        if let Some(chunk) = st.chunks.pop_front() {
            st.buffered -= chunk.len();
            if st.buffered <= self.limit / 2
                && let Some(w) = st.driver.take()
            {
                w.wake();
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(e) = st.error {
            return Poll::Ready(Some(Err(e)));
        }
        if st.ended {
            return Poll::Ready(None);
        }
        st.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Unread bytes (the fill buffer's included).
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn buffered(&self) -> usize {
        self.lock().buffered
    }

    /// The stream can still deliver bytes and someone holds its reading end: the peer owes
    /// us bytes (the body timeout applies).
    pub(crate) fn is_open(&self) -> bool {
        let st = self.lock();
        !st.ended && st.error.is_none() && !st.reader_gone
    }

    fn is_drained(&self) -> bool {
        let st = self.lock();
        st.chunks.is_empty() && st.filling.is_empty() && (st.ended || st.error.is_some())
    }

    fn reader_dropped(&self) {
        let mut st = self.lock();
        st.reader_gone = true;
        st.chunks.clear();
        st.filling = Vec::new();
        st.buffered = 0;
        if let Some(w) = st.driver.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn full_and_empty_bodies() {
        let b = RequestBody::full(Bytes::from_static(b"abc"));
        assert_eq!(b.size_hint().exact(), Some(3));
        assert_eq!(block_on(b.collect()).unwrap().to_bytes(), "abc");
        let e = RequestBody::empty();
        assert!(e.is_end_stream());
        assert_eq!(block_on(e.collect()).unwrap().to_bytes(), "");
    }

    #[test]
    fn streaming_body_delivers_in_order_and_ends() {
        let ch = Arc::new(Channel::new(1024, Vec::new(), None));
        let body = RequestBody::streaming(ch.clone());
        assert_eq!(ch.push(b"he"), Flow::Continue);
        assert_eq!(ch.push(b"llo"), Flow::Continue);
        ch.end();
        assert_eq!(block_on(body.collect()).unwrap().to_bytes(), "hello");
    }

    /// The frames a reader polling after every push gets.
    fn frames_while_pushing(ch: &Arc<Channel>, pushes: &[&[u8]]) -> Vec<usize> {
        let mut body = RequestBody::streaming(ch.clone());
        let mut cx = Context::from_waker(Waker::noop());
        let mut frames = Vec::new();
        let mut take = |body: &mut RequestBody, frames: &mut Vec<usize>| {
            while let Poll::Ready(Some(Ok(f))) = Pin::new(&mut *body).poll_frame(&mut cx) {
                frames.push(f.into_data().unwrap().len());
            }
        };
        for p in pushes {
            assert_eq!(ch.push(p), Flow::Continue);
            take(&mut body, &mut frames);
        }
        ch.end();
        take(&mut body, &mut frames);
        assert!(body.is_end_stream());
        frames
    }

    #[test]
    fn an_announced_body_reaches_the_reader_whole() {
        // 2 bytes came with the params (room reserved for 8), 8 more announced.
        let mut first = Vec::with_capacity(8);
        first.extend_from_slice(b"ab");
        let ch = Arc::new(Channel::new(1024, first, Some(8)));
        assert_eq!(
            frames_while_pushing(&ch, &[b"cde", b"fgh", b"ij"]),
            vec![8, 2]
        );
        // Announced up front: one frame, although the reader looked after every push.
        let ch = Arc::new(Channel::new(1024, Vec::new(), Some(10)));
        assert_eq!(
            frames_while_pushing(&ch, &[b"abc", b"def", b"ghij"]),
            vec![10]
        );
    }

    #[test]
    fn a_body_of_unknown_length_is_handed_on_as_it_arrives() {
        let ch = Arc::new(Channel::new(1024, Vec::new(), None));
        assert_eq!(frames_while_pushing(&ch, &[b"abc", b"de"]), vec![3, 2]);
    }

    /// A body sent a byte at a time to a reader that does not read meanwhile is held in
    /// frames of MIN_FILL bytes, announced or not: its memory is about its bytes.
    #[test]
    fn bytes_in_small_records_are_gathered_into_few_frames() {
        for announced in [None, Some(1 << 20)] {
            let ch = Arc::new(Channel::new(1 << 20, Vec::new(), announced));
            let mut body = RequestBody::streaming(ch.clone());
            for i in 0..100_000u32 {
                assert_eq!(ch.push(&[i as u8]), Flow::Continue);
            }
            {
                let st = ch.lock();
                assert!(
                    st.chunks.len() <= 100_000 / MIN_FILL + 1,
                    "{announced:?}: {} frames",
                    st.chunks.len()
                );
                let held: usize =
                    st.chunks.iter().map(Bytes::len).sum::<usize>() + st.filling.capacity();
                assert!(
                    held <= 100_000 + MIN_FILL,
                    "{announced:?}: {held} bytes held"
                );
            }
            ch.end();
            let mut cx = Context::from_waker(Waker::noop());
            let mut got = Vec::new();
            while let Poll::Ready(Some(Ok(f))) = Pin::new(&mut body).poll_frame(&mut cx) {
                got.extend_from_slice(&f.into_data().unwrap());
            }
            let want: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
            assert!(got == want, "{announced:?}: the bytes differ");
        }
    }

    /// A small announced body reaches a waiting reader with its last byte, not only at the
    /// end of its stream.
    #[test]
    fn an_announced_body_reaches_the_reader_with_its_last_byte() {
        let ch = Arc::new(Channel::new(1 << 20, Vec::new(), Some(3000)));
        let mut body = RequestBody::streaming(ch.clone());
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
            ch.push(&[9; 1000]);
        }
        let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("the announced bytes are all there");
        };
        assert_eq!(frame.into_data().unwrap().len(), 3000);
        assert_eq!(
            ch.lock().filling.capacity(),
            0,
            "the buffer went with the frame"
        );
    }

    /// A waiting reader of a body of unknown length is woken by each push and gets the bytes
    /// that came, however few.
    #[test]
    fn a_waiting_reader_of_an_unknown_length_gets_each_push() {
        let ch = Arc::new(Channel::new(1 << 20, Vec::new(), None));
        let mut body = RequestBody::streaming(ch.clone());
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let waker = Waker::from(Arc::new(Count(woken.clone())));
        let mut cx = Context::from_waker(&waker);
        for (i, piece) in [&b"a"[..], b"bc", b"def"].iter().enumerate() {
            assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
            ch.push(piece);
            assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), i + 1);
            let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else {
                panic!("push {i}: no frame");
            };
            assert_eq!(frame.into_data().unwrap(), *piece);
        }
    }

    #[test]
    fn an_announced_body_does_not_hold_more_than_half_the_limit() {
        // Limit 16: the reader gets the bytes once more than 8 are unread, so that it can
        // always bring a paused connection back under the limit.
        let ch = Arc::new(Channel::new(16, Vec::new(), Some(100)));
        assert_eq!(
            frames_while_pushing(&ch, &[b"abcd", b"efgh", b"i"]),
            vec![8, 1]
        );
        // An announced length larger than the bytes that came reserves at most RESERVE_FACTOR
        // times them, and never less than MIN_FILL.
        let ch = Arc::new(Channel::new(1 << 20, Vec::new(), Some(1 << 20)));
        assert_eq!(ch.push(&[7; 1000]), Flow::Continue);
        assert_eq!(ch.lock().filling.capacity(), 1000 * RESERVE_FACTOR);
        let ch = Arc::new(Channel::new(1 << 20, Vec::new(), Some(1 << 20)));
        assert_eq!(ch.push(b"ab"), Flow::Continue);
        assert_eq!(ch.lock().filling.capacity(), MIN_FILL);
    }

    #[test]
    fn over_limit_pauses_and_draining_wakes_driver() {
        let ch = Arc::new(Channel::new(4, Vec::new(), None));
        let mut body = RequestBody::streaming(ch.clone());
        assert_eq!(ch.push(b"12345"), Flow::Pause);
        let woken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let driver = Waker::from(Arc::new(Flag(woken.clone())));
        assert!(!ch.wants_more(&driver));
        let mut cx = Context::from_waker(Waker::noop());
        let frame = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(frame, Poll::Ready(Some(Ok(_)))));
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst));
        assert!(ch.wants_more(&driver));
    }

    #[test]
    fn failure_reaches_reader_and_drop_discards() {
        let ch = Arc::new(Channel::new(1024, Vec::new(), None));
        let body = RequestBody::streaming(ch.clone());
        ch.push(b"x");
        ch.fail(BodyError::Aborted);
        let err = block_on(body.collect()).unwrap_err();
        assert_eq!(err, BodyError::Aborted);
        let ch2 = Arc::new(Channel::new(1, Vec::new(), None));
        drop(RequestBody::streaming(ch2.clone()));
        assert_eq!(ch2.push(b"ignored"), Flow::Continue);
        assert!(ch2.wants_more(Waker::noop()));
    }

    mod model {
        //! The channel against what a reader is owed, under random pushes and polls, limits
        //! and announced lengths: bytes arrive in order and whole, the unread count is what the
        //! frames and the fill buffer hold, a waiting reader of a body of unknown length is
        //! woken and given every byte, and a reader that waits never faces a driver it cannot
        //! resume.

        use super::*;
        use proptest::prelude::*;
        use std::sync::atomic::{AtomicUsize, Ordering};

        struct Count(Arc<AtomicUsize>);

        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }

        #[derive(Debug, Clone)]
        enum Op {
            Push(usize),
            /// One poll.
            Poll,
            /// Polls until the reader has to wait.
            Drain,
        }

        fn ops() -> impl Strategy<Value = Vec<Op>> {
            proptest::collection::vec(
                prop_oneof![
                    3 => (1usize..3000).prop_map(Op::Push),
                    1 => (1usize..10).prop_map(Op::Push),
                    2 => Just(Op::Poll),
                    1 => Just(Op::Drain),
                ],
                0..80,
            )
        }

        /// The `i`th byte of a body.
        fn byte(i: usize) -> u8 {
            (i * 7) as u8
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
            #[test]
            fn the_reader_gets_every_byte_in_order(
                ops in ops(),
                limit in prop_oneof![Just(16usize), Just(4096), Just(1 << 16), Just(1 << 20)],
                announced in proptest::option::of(0usize..100_000),
                first in 0usize..5000,
            ) {
                let mut sent: Vec<u8> = (0..first).map(byte).collect();
                let mut first_buf =
                    Vec::with_capacity(reserve_for(first.max(1), announced, usize::MAX));
                first_buf.extend_from_slice(&sent);
                let left = announced.map(|n| n.saturating_sub(first));
                let ch = Arc::new(Channel::new(limit, first_buf, left));
                let mut body = RequestBody::streaming(ch.clone());
                let driver = Waker::from(Arc::new(Count(Arc::default())));
                let woken = Arc::new(AtomicUsize::new(0));
                let reader = Waker::from(Arc::new(Count(woken.clone())));
                let mut cx = Context::from_waker(&reader);
                let mut got: Vec<u8> = Vec::new();
                let (mut paused, mut waiting) = (false, false);
                for op in ops {
                    match op {
                        Op::Push(n) => {
                            let data: Vec<u8> = (sent.len()..sent.len() + n).map(byte).collect();
                            sent.extend_from_slice(&data);
                            let before = woken.load(Ordering::SeqCst);
                            paused |= ch.push(&data) == Flow::Pause;
                            let was_woken = woken.load(Ordering::SeqCst) > before;
                            if waiting && announced.is_none() {
                                prop_assert!(was_woken, "a waiting reader of an unknown length");
                            }
                            waiting &= !was_woken;
                        }
                        Op::Poll | Op::Drain => {
                            loop {
                                match Pin::new(&mut body).poll_frame(&mut cx) {
                                    Poll::Ready(Some(Ok(f))) => {
                                        got.extend_from_slice(&f.into_data().unwrap());
                                    }
                                    Poll::Pending => {
                                        waiting = true;
                                        break;
                                    }
                                    other => panic!("{other:?}"),
                                }
                                if matches!(op, Op::Poll) {
                                    break;
                                }
                            }
                            if waiting && announced.is_none() {
                                prop_assert_eq!(got.len(), sent.len(), "bytes held back");
                            }
                            if paused && ch.wants_more(&driver) {
                                paused = false;
                            }
                            prop_assert!(!(waiting && paused), "the reader waits on a paused driver");
                        }
                    }
                    prop_assert!(got[..] == sent[..got.len()], "order");
                    let st = ch.lock();
                    let framed: usize = st.chunks.iter().map(Bytes::len).sum();
                    prop_assert_eq!(st.buffered, framed + st.filling.len());
                    prop_assert_eq!(st.buffered + got.len(), sent.len());
                }
                ch.end();
                let mut cx = Context::from_waker(Waker::noop());
                while let Poll::Ready(Some(Ok(f))) = Pin::new(&mut body).poll_frame(&mut cx) {
                    got.extend_from_slice(&f.into_data().unwrap());
                }
                prop_assert!(got == sent, "whole");
                prop_assert!(body.is_end_stream());
            }
        }
    }
}
