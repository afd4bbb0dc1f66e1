//! From a complete request to a running handler, and from its response to STDOUT records.
//!
//! A handler that finishes on its first poll (and whose body is ready) is answered inline, with
//! no task spawned; otherwise the same future moves into a local task on this core. Panics are
//! caught: that request gets a 500 (or is cut short if its head was sent), the worker goes on.

use super::core::{BodyIn, Core, Head, ReqKey};
use super::driver::Staged;
use crate::body::{FilterData, RequestBody};
use crate::cgi;
use crate::service::BoxError;
use crate::service::HttpService;
use bytes::{Buf, Bytes};
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
}

impl<S> Dispatcher<S>
where
    S: HttpService,
{
    /// Starts the handler of a staged request.
    pub fn dispatch(&self, staged: Staged) {
        let Staged { rk, role, params } = staged;
        let Some((body, data)) = self.take_body(rk) else {
            return;
        };
        let request = match cgi::build_request(params, role, body) {
            Ok(mut r) => {
                if let Some(data) = data {
                    r.extensions_mut().insert(FilterData::new(data));
                }
                if r.method() == http::Method::HEAD {
                    self.core.set_head_only(rk);
                }
                r
            }
            Err(e) => {
                self.core.stats.hit(
                    super::stats::Counter::BadRequest,
                    self.core.now(),
                    format_args!("bad request (request id {}): {e}", rk.id),
                );
                self.core.write_status(rk, http::StatusCode::BAD_REQUEST);
                return;
            }
        };
        let core = self.core.clone();
        let service = self.service.clone();
        let mut fut: Pin<Box<dyn Future<Output = ()>>> = Box::pin(CatchUnwind {
            inner: run(core, service, rk, request),
            on_panic: Some((self.core.clone(), rk)),
        });
        let mut cx = Context::from_waker(Waker::noop());
        if fut.as_mut().poll(&mut cx).is_ready() {
            return;
        }
        let handle = tokio::task::spawn_local(fut);
        let mut conns = self.core.conns.borrow_mut();
        if let Some(entry) = conns
            .get_mut(rk.conn)
            .and_then(|c| c.requests.get_mut(&rk.id))
            .filter(|e| e.serial == rk.serial)
        {
            entry.task = Some(handle.abort_handle());
        } else {
            handle.abort();
        }
    }

    /// Turns the staged STDIN (and DATA, for a FILTER) into the request's bodies.
    fn take_body(&self, rk: ReqKey) -> Option<(RequestBody, Option<RequestBody>)> {
        let limit = self.core.settings.max_body_buffer;
        let mut conns = self.core.conns.borrow_mut();
        let entry = conns
            .get_mut(rk.conn)?
            .requests
            .get_mut(&rk.id)
            .filter(|e| e.serial == rk.serial)?;
        let body = entry.body.dispatch(limit);
        let data = matches!(entry.data, BodyIn::Staged { .. }).then(|| entry.data.dispatch(limit));
        Some((body, data))
    }
}

/// Calls the handler and writes its response.
async fn run<S>(
    core: Rc<Core>,
    service: Rc<RefCell<S>>,
    rk: ReqKey,
    request: http::Request<RequestBody>,
) where
    S: HttpService,
{
    let ready = poll_fn(|cx| service.borrow_mut().poll_ready(cx)).await;
    let result = match ready {
        Ok(()) => {
            let call = service.borrow_mut().call(request);
            call.await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(response) => respond(&core, rk, response).await,
        Err(e) => {
            let e: BoxError = e.into();
            tracing::error!("handler error (request id {}): {e}", rk.id);
            core.fail(rk);
        }
    }
}

/// Streams the response: CGI head and first body bytes in one record, then each frame as it
/// comes, pausing while the connection's output backlog is over its limit.
async fn respond<B>(core: &Core, rk: ReqKey, response: http::Response<B>)
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    // Encoded into the connection's output with the first body bytes.
    let mut head = Some(Head::Response(&parts, body.size_hint().exact()));
    let mut body = std::pin::pin!(body);
    loop {
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
                if !core.write_stdout(rk, head.take(), &mut data) {
                    return;
                }
            }
            Some(Err(e)) => {
                let e: BoxError = e.into();
                tracing::error!("response body error (request id {}): {e}", rk.id);
                core.fail(rk);
                return;
            }
            None => break,
        }
    }
    if let Some(head) = head
        && !core.write_stdout(rk, Some(head), &mut Bytes::new())
    {
        return;
    }
    core.finish(rk, 0);
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
