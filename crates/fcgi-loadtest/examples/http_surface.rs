//! What the `http::Request` / `tower::Service` surface alone costs per request, for callgrind:
//! `http_surface ROUNDS` serves ROUNDS `GET /hello` requests to the demo app (the one
//! `request_path` measures) with no protocol at all, doing only what any server that hands the
//! app an `http::Request` must do, each step as cheaply as the `http` crate allows:
//!
//! - the request's method, URI and three header values (`Host`, `User-Agent`, `Accept`, the
//!   headers `fcgi-loadtest` sends) as zero-copy slices of one shared buffer, the way params or
//!   a parsed HTTP/1.1 head hold them; the header names are `http`'s constants (no parsing);
//! - one extension ([`fcgi_uring::TrustedParams`] over a params block shared by every request,
//!   cheaper than building one);
//! - a header map reused from the previous response (as the runtime does);
//! - the app called through its `tower::Service` (`service_fn`), its future polled once;
//! - the response head written out as a CGI head (`encode_head`) and its one body frame
//!   appended, the way a protocol encoder reads them;
//! - everything dropped.
//!
//! It is a floor for the request path's instruction count: `request_path hello` does all of
//! this plus the FastCGI side (records, params, the connection state).
//!
//! ```sh
//! cargo build --release -p fcgi-loadtest --example http_surface
//! valgrind --tool=callgrind --toggle-collect='*run_surface*' --callgrind-out-file=/tmp/hs.out \
//!     target/release/examples/http_surface 2000
//! callgrind_annotate /tmp/hs.out | head -30   # PROGRAM TOTALS / 2000
//! ```

use bytes::Bytes;
use fcgi_uring::{HttpService, RequestBody, TrustedParams};
use http::header::{ACCEPT, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Uri};
use http_body::Body;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

#[global_allocator]
static GLOBAL: fcgi_uring::alloc::MiMalloc = fcgi_uring::alloc::MiMalloc;

/// The request's bytes as a server would hold them after parsing: one shared buffer.
const HEAD: &[u8] = b"GET/hello127.0.0.1:9000fcgi-loadtest*/*";

fn main() {
    let rounds: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("http_surface: rounds: {e}");
            std::process::exit(2);
        }
    };
    let mut state = Surface::new();
    // Warm-up: the first requests allocate the maps and buffers the later ones reuse.
    let mut out = Vec::with_capacity(4096);
    for _ in 0..64 {
        out.clear();
        state.serve(&mut out);
    }
    let last = run_surface(&mut state, rounds);
    println!(
        "requests={rounds} last_output_bytes={} last_output={:?}",
        last.len(),
        String::from_utf8_lossy(&last)
    );
}

/// What the server keeps from one request to the next.
struct Surface<S> {
    service: S,
    /// The shared buffer the request's parts are sliced from (refcounted, as a receive buffer
    /// or params block is).
    head: Bytes,
    params: fcgi_proto::Params,
    spare_headers: HeaderMap,
}

impl Surface<()> {
    fn new() -> Surface<impl HttpService<ResBody = fcgi_uring_cli::demo::DemoBody>> {
        Surface {
            service: fcgi_uring::service_fn(fcgi_uring_cli::demo::app),
            head: Bytes::copy_from_slice(HEAD),
            params: fcgi_proto::Params::from_pairs([
                (&b"REQUEST_METHOD"[..], &b"GET"[..]),
                (b"REQUEST_URI", b"/hello"),
                (b"REMOTE_ADDR", b"127.0.0.1"),
            ]),
            spare_headers: HeaderMap::new(),
        }
    }
}

impl<S: HttpService<ResBody = fcgi_uring_cli::demo::DemoBody>> Surface<S> {
    /// One request in, its CGI head and body appended to `out`.
    fn serve(&mut self, out: &mut Vec<u8>) {
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
            return;
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
    }
}

/// Serves `rounds` requests; returns the output of the last.
#[inline(never)]
fn run_surface<S: HttpService<ResBody = fcgi_uring_cli::demo::DemoBody>>(
    state: &mut Surface<S>,
    rounds: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    for _ in 0..rounds {
        out.clear();
        state.serve(std::hint::black_box(&mut out));
    }
    out
}
