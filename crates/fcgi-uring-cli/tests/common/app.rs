//! The app behind every proxy in the matrix (tests/common/matrix.rs): one route per behaviour a
//! front end can get wrong.
//!
//! - `GET /status/N` for N in 200, 204, 301 (with `Location: /moved-here`), 304, 404, 500
//! - `GET /cookies` -> three `Set-Cookie` headers
//! - `GET /big` -> [`BIG_LEN`] bytes of [`big_byte`], streamed in 64 KiB frames
//! - `GET /slow?ms=N` -> waits N ms, then `slept N`
//! - `POST /echo` -> the request body, with `x-body-len`
//! - `GET /params` (or any path ending in `/params`) -> what the handler saw: trusted params and the client headers that must
//!   never be trusted (one `name=value` line each, see [`ParamsSeen`])
//! - any request with the AUTHORIZER role -> 200 with `Variable-FOO: bar` for user `alice`
//!   (REMOTE_USER), 403 otherwise
#![allow(dead_code)]

use bytes::Bytes;
use fcgi_uring::{Addr, RequestBody, Role, Server, ServerHandle, TrustedParams, service_fn};
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Size of the `/big` response: 10 MiB.
pub const BIG_LEN: usize = 10 * 1024 * 1024;
/// Frame size of the `/big` response.
pub const FRAME: usize = 64 * 1024;

/// Byte `i` of the `/big` response: varies within a frame and between frames, so a lost,
/// repeated or reordered frame changes the content.
pub fn big_byte(i: usize) -> u8 {
    ((i % 251) ^ (i / FRAME)) as u8
}

/// A response body: all at once, or [`BIG_LEN`] bytes streamed frame by frame.
pub enum TestBody {
    Full(Option<Bytes>),
    Stream { sent: usize, len: usize },
}

impl TestBody {
    fn full(b: impl Into<Bytes>) -> TestBody {
        TestBody::Full(Some(b.into()))
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            TestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            TestBody::Stream { sent, len } => {
                if *sent >= *len {
                    return Poll::Ready(None);
                }
                let n = FRAME.min(*len - *sent);
                let frame: Vec<u8> = (*sent..*sent + n).map(big_byte).collect();
                *sent += n;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(frame)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            TestBody::Full(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            TestBody::Stream { sent, len } => sent >= len,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            TestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            // Length unknown to the server: the proxy must stream it (chunked or until close).
            TestBody::Stream { .. } => SizeHint::default(),
        }
    }
}

/// The app on `listen` with two workers (a UNIX socket gets mode 0666 so a proxy that drops
/// root, like Apache, can connect).
pub fn start(listen: Addr) -> ServerHandle {
    let config = super::test_config()
        .into_builder()
        .listen(listen)
        .workers(2)
        .unix_mode(Some(0o666))
        .build()
        .unwrap();
    Server::new(config)
        .start(|| service_fn(handle))
        .expect("server starts")
}

pub fn start_tcp() -> ServerHandle {
    start("127.0.0.1:0".parse().unwrap())
}

/// The app on a UNIX socket in a temporary directory that any user may traverse.
pub fn start_unix() -> (ServerHandle, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = start(Addr::Unix(dir.path().join("app.sock")));
    (server, dir)
}

pub async fn handle(req: http::Request<RequestBody>) -> Result<Response<TestBody>, Infallible> {
    let role = req
        .extensions()
        .get::<TrustedParams>()
        .map(TrustedParams::role);
    if role == Some(Role::Authorizer) {
        return Ok(authorize(&req));
    }
    let path = req.uri().path().to_owned();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    Ok(match path.as_str() {
        p if get && p.starts_with("/status/") => status(&p["/status/".len()..]),
        "/cookies" if get => {
            let mut r = Response::new(TestBody::full("cookies"));
            for c in ["a=1; Path=/", "b=2; HttpOnly", "c=3; Max-Age=60"] {
                r.headers_mut()
                    .append(header::SET_COOKIE, HeaderValue::from_static(c));
            }
            r
        }
        "/big" if get => Response::new(TestBody::Stream {
            sent: 0,
            len: BIG_LEN,
        }),
        "/slow" if get => {
            let ms: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(100)
                .min(10_000);
            // Kept: a slow handler is the point of this route (proxies' timeouts and slow
            // responses); callers assert on the answer, not on how long it took.
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(TestBody::full(format!("slept {ms}")))
        }
        p if p.ends_with("/params") => Response::new(TestBody::full(ParamsSeen::of(&req).render())),
        "/echo" if req.method() == Method::POST => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let mut r = Response::new(TestBody::full(e.to_string()));
                    *r.status_mut() = StatusCode::BAD_REQUEST;
                    return Ok(r);
                }
            };
            let mut r = Response::new(TestBody::full(body.clone()));
            r.headers_mut()
                .insert("x-body-len", HeaderValue::from(body.len()));
            r
        }
        _ => status("404"),
    })
}

fn status(code: &str) -> Response<TestBody> {
    let code: u16 = code.parse().unwrap_or(404);
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND);
    let body = match code {
        // No body is allowed with these (RFC 9110 15.3.5, 15.4.5).
        204 | 304 => TestBody::Full(None),
        _ => TestBody::full(format!("status {code}")),
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    match code {
        301 => {
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/moved-here"));
        }
        304 => {
            r.headers_mut()
                .insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        }
        _ => {}
    }
    r
}

/// AUTHORIZER (spec 6.3): `alice` is allowed and gets `FOO=bar` passed on to the next stage.
fn authorize(req: &http::Request<RequestBody>) -> Response<TestBody> {
    let user = req
        .extensions()
        .get::<TrustedParams>()
        .and_then(|t| t.remote_user().map(str::to_owned));
    let mut r = Response::new(TestBody::Full(None));
    if user.as_deref() == Some("alice") {
        r.headers_mut()
            .insert("Variable-FOO", HeaderValue::from_static("bar"));
    } else {
        *r.status_mut() = StatusCode::FORBIDDEN;
    }
    r
}

/// What the `/params` handler saw, rendered as `name=value` lines and parsed back by tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParamsSeen {
    pub remote_addr: String,
    pub remote_port: String,
    /// `TrustedParams::https()`.
    pub https: bool,
    pub server_name: String,
    pub server_port: String,
    pub server_addr: String,
    /// The `foo` param, set by an authorizer's `Variable-FOO` header: Apache strips the prefix
    /// and keeps the rest of the name as sent, and `http` header names are lowercase, so the
    /// param is `foo`.
    pub foo: String,
    /// Every trusted param name, in arrival order (deduplicated).
    pub trusted_names: Vec<String>,
    /// Trusted names that look like a client header that must never be trusted (PROXY,
    /// X_REAL_IP, HTTP_*): must stay empty.
    pub trusted_leaks: Vec<String>,
    /// The client's `Proxy:` header as an ordinary header (empty when the proxy dropped it).
    pub header_proxy: String,
    /// The client's `X-Real-IP:` header as an ordinary header.
    pub header_x_real_ip: String,
}

impl ParamsSeen {
    fn of(req: &http::Request<RequestBody>) -> ParamsSeen {
        let header = |n: &str| {
            req.headers()
                .get_all(n)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut seen = ParamsSeen {
            header_proxy: header("proxy"),
            header_x_real_ip: header("x-real-ip"),
            ..ParamsSeen::default()
        };
        let Some(t) = req.extensions().get::<TrustedParams>() else {
            return seen;
        };
        let get = |n: &str| t.get(n).unwrap_or_default().to_owned();
        seen.remote_addr = get("REMOTE_ADDR");
        seen.remote_port = get("REMOTE_PORT");
        seen.https = t.https();
        seen.server_name = get("SERVER_NAME");
        seen.server_port = get("SERVER_PORT");
        seen.server_addr = get("SERVER_ADDR");
        seen.foo = get("foo");
        for (name, _) in t.iter() {
            let name = String::from_utf8_lossy(name).into_owned();
            let upper = name.to_ascii_uppercase();
            if upper.contains("PROXY") || upper.contains("REAL_IP") || upper.starts_with("HTTP_") {
                seen.trusted_leaks.push(name.clone());
            }
            if !seen.trusted_names.contains(&name) {
                seen.trusted_names.push(name);
            }
        }
        seen
    }

    fn render(&self) -> String {
        format!(
            "remote_addr={}\nremote_port={}\nhttps={}\nserver_name={}\nserver_port={}\n\
             server_addr={}\nfoo={}\ntrusted_names={}\ntrusted_leaks={}\nheader_proxy={}\n\
             header_x_real_ip={}\n",
            self.remote_addr,
            self.remote_port,
            self.https,
            self.server_name,
            self.server_port,
            self.server_addr,
            self.foo,
            self.trusted_names.join(","),
            self.trusted_leaks.join(","),
            self.header_proxy,
            self.header_x_real_ip,
        )
    }

    /// Parses what `/params` rendered.
    pub fn parse(body: &[u8]) -> ParamsSeen {
        let text = String::from_utf8_lossy(body);
        let mut seen = ParamsSeen::default();
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.to_owned();
            match k {
                "remote_addr" => seen.remote_addr = v,
                "remote_port" => seen.remote_port = v,
                "https" => seen.https = v == "true",
                "server_name" => seen.server_name = v,
                "server_port" => seen.server_port = v,
                "server_addr" => seen.server_addr = v,
                "foo" => seen.foo = v,
                "trusted_names" => seen.trusted_names = list(&v),
                "trusted_leaks" => seen.trusted_leaks = list(&v),
                "header_proxy" => seen.header_proxy = v,
                "header_x_real_ip" => seen.header_x_real_ip = v,
                other => panic!("unknown /params line {other:?} in {text:?}"),
            }
        }
        seen
    }
}
