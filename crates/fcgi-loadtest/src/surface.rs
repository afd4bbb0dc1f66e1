//! What handing a request to an application through the `http::Request` / `tower::Service`
//! surface costs by itself, with no protocol: [`Surface::serve`] does, for one `GET /hello`,
//! only what any server that gives its application an `http::Request` must do, each step as
//! cheaply as the `http` crate allows:
//!
//! - the request's method, URI and three header values (`Host`, `User-Agent`, `Accept`, the
//!   headers `fcgi-loadtest` sends) as zero-copy slices of one shared buffer, the way params or
//!   a parsed HTTP/1.1 head hold them; the header names are `http`'s constants (no parsing);
//! - one extension ([`fcgi_uring::TrustedParams`] over a params block shared by every request,
//!   cheaper than building one);
//! - a header map reused from the previous response (as `fcgi-uring serve` does);
//! - the application called through its `tower::Service`, its future polled once;
//! - the response head written out as a CGI head (`encode_head`) and its one body frame
//!   appended, the way a protocol encoder reads them;
//! - everything dropped.
//!
//! The `http_surface` example counts its instructions with the demo app; `fcgi-floor --surface`
//! runs it per request behind the floors' IO with [`hello`], the demo's `GET /hello` steps, so
//! that what the surface costs under each load is measured next to the floors.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use fcgi_uring::{HttpService, RequestBody, ServiceFn, TrustedParams};
use http::header::{ACCEPT, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::Full;

/// The request's bytes as a server would hold them after parsing: one shared buffer.
const HEAD: &[u8] = b"GET/hello127.0.0.1:9000fcgi-loadtest*/*";

/// The response of [`hello`].
pub type HelloResponse = Response<Full<Bytes>>;

/// [`hello`] as a service.
pub type HelloService = ServiceFn<fn(http::Request<RequestBody>) -> HelloFuture>;

/// The future of [`hello`].
pub type HelloFuture = Ready<Result<HelloResponse, Infallible>>;

/// The demo app's `GET /hello`, step for step (its route matched first, the request's header
/// map emptied for the response's, `Content-Type: text/plain; charset=utf-8`, a 13-byte body;
/// anything else 404), as a plain function: what the floor's application costs is the least an
/// application answering `/hello` does.
pub fn hello(mut req: http::Request<RequestBody>) -> HelloFuture {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let (status, body) = match req.uri().path() {
        "/hello" if get => (StatusCode::OK, &b"Hello, World!"[..]),
        _ => (StatusCode::NOT_FOUND, &b"Not Found"[..]),
    };
    let mut headers = std::mem::take(req.headers_mut());
    headers.clear();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let mut response = Response::new(Full::new(Bytes::from_static(body)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    ready(Ok(response))
}

/// [`hello`] through [`fcgi_uring::service_fn`].
pub fn hello_service() -> HelloService {
    fcgi_uring::service_fn(hello as fn(_) -> _)
}

/// What a server keeps from one request to the next.
pub struct Surface<S> {
    service: S,
    /// The shared buffer the request's parts are sliced from (refcounted, as a receive buffer
    /// or params block is).
    head: Bytes,
    params: fcgi_proto::Params,
    spare_headers: HeaderMap,
}

impl<S> Surface<S>
where
    S: HttpService<ResBody = Full<Bytes>>,
{
    /// A surface serving `service`.
    pub fn new(service: S) -> Surface<S> {
        Surface {
            service,
            head: Bytes::copy_from_slice(HEAD),
            params: fcgi_proto::Params::from_pairs([
                (&b"REQUEST_METHOD"[..], &b"GET"[..]),
                (b"REQUEST_URI", b"/hello"),
                (b"REMOTE_ADDR", b"127.0.0.1"),
            ]),
            spare_headers: HeaderMap::new(),
        }
    }

    /// One `GET /hello`: its CGI head and body appended to `out`. Returns `false` (and appends
    /// nothing) if the service did not answer on its first poll or failed.
    pub fn serve(&mut self, out: &mut Vec<u8>) -> bool {
        let slice = |a: usize, b: usize| self.head.slice(a..b);
        let value = |a: usize, b: usize| HeaderValue::from_maybe_shared(slice(a, b)).ok();
        let mut request = http::Request::new(RequestBody::empty());
        *request.method_mut() = Method::from_bytes(&HEAD[0..3]).unwrap_or(Method::GET);
        if let Ok(uri) = Uri::from_maybe_shared(slice(3, 9)) {
            *request.uri_mut() = uri;
        }
        let mut headers = std::mem::take(&mut self.spare_headers);
        for (name, v) in [
            (HOST, value(9, 23)),
            (USER_AGENT, value(23, 36)),
            (ACCEPT, value(36, 39)),
        ] {
            if let Some(v) = v {
                headers.append(name, v);
            }
        }
        *request.headers_mut() = headers;
        request
            .extensions_mut()
            .insert(TrustedParams::new(self.params.clone()));

        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Ok(response)) = pin!(self.service.call(request)).poll(&mut cx) else {
            return false;
        };
        let (mut parts, body) = response.into_parts();
        let mut body = pin!(body);
        let len = body.size_hint().exact();
        fcgi_uring::bench::encode_head(&parts, len, out);
        if let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx)
            && let Some(data) = frame.data_ref()
        {
            out.extend_from_slice(data);
        }
        let mut headers = std::mem::take(&mut parts.headers);
        headers.clear();
        self.spare_headers = headers;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_demo_apps_hello_answer_with_a_reused_header_map() {
        let mut surface = Surface::new(hello_service());
        let mut out = Vec::new();
        assert!(surface.serve(&mut out));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Status: 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n\
             Content-Length: 13\r\n\r\nHello, World!"
        );
        // The response's map comes back emptied, with its room, for the next request.
        assert!(surface.spare_headers.is_empty());
        assert!(surface.spare_headers.capacity() > 0);
        let mut again = Vec::new();
        assert!(surface.serve(&mut again));
        assert_eq!(again, out);
    }

    /// The status [`hello`] answers `method` `path` with.
    fn status(method: Method, path: &'static str) -> StatusCode {
        let mut req = http::Request::new(RequestBody::empty());
        *req.method_mut() = method;
        *req.uri_mut() = Uri::from_static(path);
        let Poll::Ready(Ok(response)) =
            pin!(hello(req)).poll(&mut Context::from_waker(Waker::noop()))
        else {
            panic!("hello is ready at once");
        };
        response.status()
    }

    #[test]
    fn hello_answers_get_and_head_of_hello_and_404_otherwise() {
        assert_eq!(status(Method::GET, "/hello"), StatusCode::OK);
        assert_eq!(status(Method::HEAD, "/hello"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/other"), StatusCode::NOT_FOUND);
        assert_eq!(status(Method::POST, "/hello"), StatusCode::NOT_FOUND);
    }
}
