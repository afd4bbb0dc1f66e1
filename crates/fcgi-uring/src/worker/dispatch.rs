//! From a complete request to a running handler, and from its response to STDOUT records.
//!
//! Each handler runs in a heap slot taken from a per-core pool (so a request allocates nothing
//! for its handler's future). A handler that finishes on its first poll (and whose body is
//! ready) is answered inline, with no task spawned; otherwise its slot moves into a local task
//! on this core, and returns to the pool when the task ends or is aborted. Panics are caught:
//! that request gets a 500 (or is cut short if its head was sent), the worker goes on.
//!
//! The header map of each response, once its head is encoded, is emptied and kept for the
//! headers of a later request, so that in the steady state a request allocates nothing for its
//! `HeaderMap`.

use crate::body::{FilterData, RequestBody};
use crate::cgi;
use crate::conn::{Core, Head, Ping, ReqKey, Staged};
use crate::service::BoxError;
use crate::service::HttpService;
use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::Body;
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Dispatches requests for one worker.
pub(crate) struct Dispatcher<S> {
    pub core: Rc<Core>,
    pub service: Rc<RefCell<S>>,
    /// Idle handler slots, reused so that a request costs no allocation for its handler's
    /// future (a few KiB with the handler's own state).
    slots: SlotPool,
    /// Emptied header maps of answered responses, for the next requests' headers.
    header_maps: Rc<HeaderMaps>,
    /// Handler tasks spawned and not yet ended.
    running: Rc<std::cell::Cell<usize>>,
}

impl<S> Dispatcher<S>
where
    S: HttpService,
{
    pub fn new(core: Rc<Core>, service: Rc<RefCell<S>>) -> Dispatcher<S> {
        Dispatcher {
            core,
            service,
            slots: Rc::default(),
            header_maps: Rc::default(),
            running: Rc::default(),
        }
    }

    /// Handler tasks running (spawned because their handler did not finish on its first poll,
    /// not yet ended or aborted).
    pub fn running_tasks(&self) -> usize {
        self.running.get()
    }

    /// Starts the handler of a staged request.
    pub fn dispatch(&self, staged: Staged) {
        let Some((body, data)) = self.core.take_body(&staged) else {
            return;
        };
        let popped = self.slots.borrow_mut().pop();
        let mut slot = popped.unwrap_or_else(|| self.new_slot());
        let rk = staged.rk;
        slot.as_mut().start(Incoming { staged, body, data });
        let mut cx = Context::from_waker(Waker::noop());
        if slot.as_mut().poll_handler(&mut cx).is_ready() {
            self.core.clear_line();
            // Its handler done, the slot holds nothing: no `clear` needed.
            keep_idle(&self.slots, slot);
            return;
        }
        self.running.set(self.running.get() + 1);
        let handle = tokio::task::spawn_local(Pooled {
            slot: Some(slot),
            pool: self.slots.clone(),
            running: self.running.clone(),
        });
        self.core.set_task(rk, handle.abort_handle());
    }

    /// An empty slot that runs this worker's service.
    fn new_slot(&self) -> Pin<Box<dyn HandlerSlot>> {
        let core = self.core.clone();
        let service = self.service.clone();
        let maps = self.header_maps.clone();
        Box::pin(Slot {
            start: move |incoming: Incoming| CatchUnwind {
                on_panic: Some((core.clone(), incoming.staged.rk)),
                inner: run(core.clone(), service.clone(), maps.clone(), incoming),
            },
            running: None,
        })
    }
}

/// A staged request with its bodies: what a handler slot starts from.
struct Incoming {
    staged: Staged,
    body: RequestBody,
    /// The DATA stream of a FILTER request.
    data: Option<RequestBody>,
}

/// Builds the request (answering 400 if the params do not form one), calls the handler and
/// writes its response.
///
/// The request is built here rather than by the dispatcher so that it is moved as little as
/// possible (it is a few hundred bytes) on its way to the handler.
async fn run<S>(core: Rc<Core>, service: Rc<RefCell<S>>, maps: Rc<HeaderMaps>, incoming: Incoming)
where
    S: HttpService,
{
    let Incoming { staged, body, data } = incoming;
    let Staged { rk, role, params } = staged;
    let headers = maps.take();
    let mut request = http::Request::new(body);
    if let Err(e) = cgi::request::fill_request(&mut request, params, role, headers) {
        core.stats.hit(
            crate::stats::Counter::BadRequest,
            core.now(),
            format_args!("bad request (request id {}): {e}", rk.id),
        );
        core.write_status(rk, http::StatusCode::BAD_REQUEST);
        return;
    }
    if let Some(data) = data {
        request.extensions_mut().insert(FilterData::new(data));
    }
    let called = core.handler_start();
    let head_request = request.method() == http::Method::HEAD;
    if head_request {
        core.set_head_only(rk);
    }
    if core.wants_info() {
        core.set_info(rk, &request, called);
    } else {
        core.note_line(&request);
    }
    if let Some(ping) = &core.settings.ping
        && request.uri().path() == ping.path
    {
        core.stats.count(crate::stats::Counter::Pings);
        let response = ping_response(ping);
        std::pin::pin!(respond(&core, &maps, rk, head_request, response)).await;
        return;
    }
    let ready = poll_fn(|cx| service.borrow_mut().poll_ready(cx)).await;
    // The handler's and the response's futures are pinned where they are made: awaiting
    // them by value would move them (several hundred bytes) once more.
    let result = match ready {
        Ok(()) => {
            let call = std::pin::pin!({
                // Not borrowed while the handler runs: another request may call the service.
                let mut service = service.borrow_mut();
                service.call(request)
            });
            call.await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(response) => std::pin::pin!(respond(&core, &maps, rk, head_request, response)).await,
        Err(e) => {
            let e: BoxError = e.into();
            tracing::error!("handler error (request id {}): {e}", rk.id);
            core.fail(rk);
        }
    }
    core.handler_ended(called);
}

/// The ping path's answer: `ping.response` as text/plain, or 503 while the server drains (so
/// that a load balancer's health check takes it out before it stops).
fn ping_response(ping: &Ping) -> http::Response<http_body_util::Full<Bytes>> {
    let draining = ping.health.get() == crate::admin::Readiness::Draining;
    let (status, body) = if draining {
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"draining\n"),
        )
    } else {
        (http::StatusCode::OK, ping.response.clone())
    };
    let mut r = http::Response::new(http_body_util::Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, no-store, must-revalidate, max-age=0"),
    );
    r
}

/// Streams the response: CGI head and first body bytes in one record, then each frame as it
/// comes, pausing while the connection's output backlog is over its limit. A response that
/// may carry no body (HEAD, 204, 304, a 1xx turned into 500) is its head alone. Its header map
/// is kept for a later request.
async fn respond<B>(
    core: &Core,
    maps: &HeaderMaps,
    rk: ReqKey,
    head_request: bool,
    response: http::Response<B>,
) where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let replaced = cgi::response::replace_informational(&mut parts);
    if let Some(status) = replaced {
        tracing::error!(
            "handler answered {status} as a final status (request id {}): answered 500",
            rk.id
        );
    }
    let ended = replaced.is_some() || body.is_end_stream();
    let framing = cgi::response::frame(&mut parts, head_request, ended, body.size_hint().exact());
    'send: {
        if replaced.is_some() || !framing.send_body {
            let head = Head::Response(&parts, framing.content_length);
            core.write_stdout(rk, Some(head), &mut Bytes::new(), true);
            break 'send;
        }
        // Encoded into the connection's output with the first body bytes.
        let mut head = Some(Head::Response(&parts, framing.content_length));
        let mut body = std::pin::pin!(body);
        // A body that says it has ended is not polled again (nor is room waited for): its end
        // costs no lookup of the request.
        while !body.is_end_stream() {
            poll_fn(|cx| core.poll_writable(rk, cx)).await;
            let frame = poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
            match frame {
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue; // trailers have no place in a CGI response
                    };
                    if !data.has_remaining() {
                        continue;
                    }
                    // The last bytes end the request in the same lookup of it.
                    let last = body.is_end_stream();
                    if !core.write_stdout(rk, head.take(), &mut data, last) || last {
                        break 'send;
                    }
                }
                Some(Err(e)) => {
                    let e: BoxError = e.into();
                    tracing::error!("response body error (request id {}): {e}", rk.id);
                    core.fail(rk);
                    break 'send;
                }
                None => break,
            }
        }
        match head {
            Some(head) => {
                core.write_stdout(rk, Some(head), &mut Bytes::new(), true);
            }
            None => core.finish(rk, 0),
        }
    }
    maps.put(parts.headers);
}

/// Most idle handler slots kept per worker.
const MAX_IDLE_SLOTS: usize = 64;

/// Most emptied header maps kept per worker.
const MAX_IDLE_HEADER_MAPS: usize = 16;

/// Largest header map kept (in headers it holds without growing, and in values it held): what a
/// browser's request needs, so that a handler's unusually large response does not stay
/// allocated.
const MAX_KEPT_HEADER_CAPACITY: usize = 24;

/// Emptied header maps, reused for the headers of later requests: a new `HeaderMap`
/// allocates twice (its index and its entries) at its first header, a reused one not at all
/// while the request's headers fit.
#[derive(Default)]
struct HeaderMaps(RefCell<Vec<HeaderMap>>);

impl HeaderMaps {
    /// A kept map, or a new (unallocated) one.
    fn take(&self) -> HeaderMap {
        self.0.borrow_mut().pop().unwrap_or_default()
    }

    /// Keeps `map`, emptied, unless it never allocated, is large, or enough are kept.
    fn put(&self, mut map: HeaderMap) {
        let capacity = map.capacity();
        // `len` counts the values of repeated names too, which `capacity` does not.
        let large = capacity > MAX_KEPT_HEADER_CAPACITY || map.len() > MAX_KEPT_HEADER_CAPACITY;
        let mut maps = self.0.borrow_mut();
        if capacity == 0 || large || maps.len() >= MAX_IDLE_HEADER_MAPS {
            return;
        }
        map.clear();
        maps.push(map);
    }
}

type SlotPool = Rc<RefCell<Vec<Pin<Box<dyn HandlerSlot>>>>>;

/// A heap slot that runs one request's handler at a time.
trait HandlerSlot {
    /// Starts the handler of `incoming` in this slot, dropping what it held.
    fn start(self: Pin<&mut Self>, incoming: Incoming);

    /// Polls the handler; once it is done the slot holds nothing.
    fn poll_handler(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;

    /// Drops the handler, if any.
    fn clear(self: Pin<&mut Self>);
}

pin_project_lite::pin_project! {
    /// A [`HandlerSlot`] whose handler futures are made by `start`.
    struct Slot<M, F> {
        start: M,
        #[pin]
        running: Option<F>,
    }
}

impl<M, F> HandlerSlot for Slot<M, F>
where
    M: Fn(Incoming) -> F,
    F: Future<Output = ()>,
{
    fn start(self: Pin<&mut Self>, incoming: Incoming) {
        let this = self.project();
        let handler = (this.start)(incoming);
        let mut running = this.running;
        running.set(Some(handler));
    }

    fn poll_handler(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut running = self.project().running;
        let Some(handler) = running.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let poll = handler.poll(cx);
        if poll.is_ready() {
            running.set(None);
        }
        poll
    }

    fn clear(self: Pin<&mut Self>) {
        self.project().running.set(None);
    }
}

/// Empties a slot whose handler was aborted and puts it back in the pool (or frees it when the
/// pool is full).
fn recycle(pool: &RefCell<Vec<Pin<Box<dyn HandlerSlot>>>>, mut slot: Pin<Box<dyn HandlerSlot>>) {
    slot.as_mut().clear();
    keep_idle(pool, slot);
}

/// Puts a slot that holds no handler back in the pool (or frees it when the pool is full).
fn keep_idle(pool: &RefCell<Vec<Pin<Box<dyn HandlerSlot>>>>, slot: Pin<Box<dyn HandlerSlot>>) {
    let mut pool = pool.borrow_mut();
    if pool.len() < MAX_IDLE_SLOTS {
        pool.push(slot);
    }
}

/// A handler that did not finish on its first poll, as a task; its slot goes back to the pool
/// when it finishes or is aborted.
struct Pooled {
    slot: Option<Pin<Box<dyn HandlerSlot>>>,
    pool: SlotPool,
    /// The dispatcher's count of running tasks, this one included until it is dropped.
    running: Rc<std::cell::Cell<usize>>,
}

impl Future for Pooled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(slot) = self.slot.as_mut() else {
            return Poll::Ready(());
        };
        let poll = slot.as_mut().poll_handler(cx);
        if poll.is_ready()
            && let Some(slot) = self.slot.take()
        {
            // Its handler done, the slot holds nothing (as in `Dispatcher::dispatch`).
            keep_idle(&self.pool, slot);
        }
        poll
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.running.set(self.running.get().saturating_sub(1));
        if let Some(slot) = self.slot.take() {
            recycle(&self.pool, slot);
        }
    }
}

pin_project_lite::pin_project! {
    /// Runs a future, turning a panic into a 500 for its request.
    struct CatchUnwind<F> {
        #[pin]
        inner: F,
        on_panic: Option<(Rc<Core>, ReqKey)>,
    }
}

impl<F: Future<Output = ()>> Future for CatchUnwind<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let inner = this.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(p) => p,
            Err(_) => {
                if let Some((core, rk)) = this.on_panic.take() {
                    tracing::error!("handler panicked (request id {}): answered 500", rk.id);
                    core.fail(rk);
                }
                Poll::Ready(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{CONTENT_TYPE, HOST};

    fn map_with(headers: usize) -> HeaderMap {
        let mut map = HeaderMap::new();
        for i in 0..headers {
            let name = http::HeaderName::try_from(format!("x-h{i}")).unwrap();
            map.insert(name, HeaderValue::from_static("v"));
        }
        map
    }

    /// A kept map comes back empty, with its room: a response's headers never reach a later
    /// request, and the request's headers need no allocation.
    #[test]
    fn kept_header_maps_come_back_empty_with_their_room() {
        let maps = HeaderMaps::default();
        let mut map = map_with(3);
        map.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let capacity = map.capacity();
        maps.put(map);
        let again = maps.take();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
        assert!(maps.take().capacity() == 0, "one map was kept, and taken");

        let params = fcgi_proto::Params::from_pairs([
            (&b"REQUEST_METHOD"[..], &b"GET"[..]),
            (b"REQUEST_URI", b"/"),
            (b"HTTP_HOST", b"example.com"),
        ]);
        let req =
            cgi::request::build_request_in(params, fcgi_proto::Role::Responder, (), again).unwrap();
        assert_eq!(req.headers().len(), 1);
        assert_eq!(req.headers()[HOST], "example.com");
        assert_eq!(req.headers().capacity(), capacity);
    }

    /// Maps that never allocated, large ones, and more than the pool holds are dropped.
    #[test]
    fn only_small_allocated_maps_are_kept_and_few() {
        let maps = HeaderMaps::default();
        maps.put(HeaderMap::new());
        maps.put(map_with(MAX_KEPT_HEADER_CAPACITY + 1));
        // Few names, many values: the values of a repeated name are held apart.
        let mut cookies = map_with(1);
        for _ in 0..MAX_KEPT_HEADER_CAPACITY {
            cookies.append(http::header::SET_COOKIE, HeaderValue::from_static("a=1"));
        }
        assert!(cookies.capacity() <= MAX_KEPT_HEADER_CAPACITY);
        maps.put(cookies);
        assert_eq!(maps.0.borrow().len(), 0);
        for _ in 0..MAX_IDLE_HEADER_MAPS + 3 {
            maps.put(map_with(2));
        }
        assert_eq!(maps.0.borrow().len(), MAX_IDLE_HEADER_MAPS);
    }
}
