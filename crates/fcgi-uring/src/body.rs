//! The request body handed to handlers: STDIN as it arrives (spec 6.2), as an `http_body::Body`.
//!
//! Three shapes, chosen by the runtime when it dispatches a request:
//! - empty, and complete-in-hand (the whole STDIN arrived with the params, as nginx sends a GET):
//!   no channel, no allocation beyond the bytes themselves;
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
#[derive(Debug)]
pub(crate) struct Channel {
    state: Mutex<ChannelState>,
    limit: usize,
}

#[derive(Debug, Default)]
struct ChannelState {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    ended: bool,
    error: Option<BodyError>,
    reader: Option<Waker>,
    reader_gone: bool,
    /// The driver paused reading for this channel and wants a wake when it drains.
    driver: Option<Waker>,
}

impl Channel {
    pub(crate) fn new(limit: usize) -> Channel {
        Channel {
            state: Mutex::new(ChannelState::default()),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        // A panic while holding this lock cannot leave the state inconsistent (every update is a
        // single field assignment or push), so a poisoned lock is used as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds STDIN bytes. Dropped silently when the handler no longer holds the body.
    pub(crate) fn push(&self, data: Bytes) -> Flow {
        let mut st = self.lock();
        if st.reader_gone || st.ended || st.error.is_some() {
            return Flow::Continue;
        }
        st.buffered += data.len();
        st.chunks.push_back(data);
        if let Some(w) = st.reader.take() {
            w.wake();
        }
        if st.buffered > self.limit {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }

    /// The empty STDIN record arrived.
    pub(crate) fn end(&self) {
        let mut st = self.lock();
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

    /// The stream can still deliver bytes and someone holds its reading end: the peer owes
    /// us bytes (the body timeout applies).
    pub(crate) fn is_open(&self) -> bool {
        let st = self.lock();
        !st.ended && st.error.is_none() && !st.reader_gone
    }

    fn is_drained(&self) -> bool {
        let st = self.lock();
        st.chunks.is_empty() && (st.ended || st.error.is_some())
    }

    fn reader_dropped(&self) {
        let mut st = self.lock();
        st.reader_gone = true;
        st.chunks.clear();
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
        let ch = Arc::new(Channel::new(1024));
        let body = RequestBody::streaming(ch.clone());
        assert_eq!(ch.push(Bytes::from_static(b"he")), Flow::Continue);
        assert_eq!(ch.push(Bytes::from_static(b"llo")), Flow::Continue);
        ch.end();
        assert_eq!(block_on(body.collect()).unwrap().to_bytes(), "hello");
    }

    #[test]
    fn over_limit_pauses_and_draining_wakes_driver() {
        let ch = Arc::new(Channel::new(4));
        let mut body = RequestBody::streaming(ch.clone());
        assert_eq!(ch.push(Bytes::from_static(b"12345")), Flow::Pause);
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
        let ch = Arc::new(Channel::new(1024));
        let body = RequestBody::streaming(ch.clone());
        ch.push(Bytes::from_static(b"x"));
        ch.fail(BodyError::Aborted);
        let err = block_on(body.collect()).unwrap_err();
        assert_eq!(err, BodyError::Aborted);
        let ch2 = Arc::new(Channel::new(1));
        drop(RequestBody::streaming(ch2.clone()));
        assert_eq!(ch2.push(Bytes::from_static(b"ignored")), Flow::Continue);
        assert!(ch2.wants_more(Waker::noop()));
    }
}
