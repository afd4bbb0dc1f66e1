//! Building an `http::Request` from a request's params (RFC 3875 section 4.1).
//!
//! Policies, each tested below:
//! - **Method**: REQUEST_METHOD, required, must be an HTTP token.
//! - **URI**: REQUEST_URI when present and non-empty (the raw path and query of the client's
//!   request line, as nginx, Apache, HAProxy, Caddy and lighttpd send it); when it has no `?` and
//!   QUERY_STRING is non-empty (Apache may send the query only there, and an nginx rewrite may
//!   move it there) `?QUERY_STRING` is appended. Without REQUEST_URI: SCRIPT_NAME + PATH_INFO +
//!   `?QUERY_STRING` (when non-empty). An absolute-form REQUEST_URI (`http://host/p?q`) keeps
//!   only its path and query. Bytes a browser would have percent-encoded (the WHATWG path and
//!   query percent-encode sets: controls, space, `"`, `#`, `<`, `>`, plus `` ` ``, `{`, `}` in
//!   the path) and every non-ASCII byte are percent-encoded instead of refused; `%` is left
//!   alone. A URI that still does not parse is [`RequestError::BadUri`]. The common case (a
//!   clean REQUEST_URI) is not copied: the URI is a slice of the params buffer.
//! - **Version**: SERVER_PROTOCOL (`HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/2.0`, `HTTP/3`...),
//!   HTTP/1.1 when missing or unknown.
//! - **Headers**: each `HTTP_FOO_BAR` param becomes a `foo-bar` header; names or values `http`
//!   refuses are skipped; duplicates are appended (two HTTP_COOKIE give two `cookie` values).
//!   CONTENT_TYPE gives `content-type` when non-empty; CONTENT_LENGTH gives `content-length`
//!   only when it is a plain non-negative integer. CONTENT_LENGTH is **advisory**: proxies send
//!   it computed, empty, absent or `-1` for chunked uploads, and the body ends where STDIN ends.
//!   `HTTP_CONTENT_TYPE` and `HTTP_CONTENT_LENGTH` are ignored (the meta-variables above are
//!   the proxy's statement, RFC 3875 4.1.18), and so is `HTTP_TRANSFER_ENCODING` (the proxy has
//!   already removed the framing: STDIN is the decoded body).
//! - **Hop-by-hop headers** (RFC 9110 7.6.1) are dropped: `Connection`, `Keep-Alive`,
//!   `Proxy-Connection`, `TE`, `Upgrade`, and `Expect` (the proxy has answered any
//!   `100-continue` itself). They describe the client's connection to the proxy, which the app
//!   is not part of; nginx's `proxy_pass` does not forward them either, so an app moved from
//!   HTTP to FastCGI sees the same request headers.
//! - **Trust**: `HTTP_PROXY` (from a client's `Proxy:` header) is an ordinary `proxy` header;
//!   trusted values are only reachable through the [`TrustedParams`] extension, which refuses
//!   every `HTTP_*` name.
//! - **Extensions**: one, [`TrustedParams`], which also holds the FastCGI [`Role`] (one
//!   extension costs `http` three allocations, each more one).

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri, Version};

use super::TrustedParams;
use fcgi_proto::{Params, Role};

/// Why params could not form a request (answered with 400 by the runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// No REQUEST_METHOD param.
    MissingMethod,
    /// REQUEST_METHOD is not an HTTP token.
    BadMethod,
    /// No valid URI could be formed, even after percent-encoding.
    BadUri,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestError::MissingMethod => "REQUEST_METHOD param missing",
            RequestError::BadMethod => "REQUEST_METHOD param is not a valid HTTP method",
            RequestError::BadUri => "REQUEST_URI (or SCRIPT_NAME/PATH_INFO) is not a valid URI",
        })
    }
}

impl std::error::Error for RequestError {}

/// Builds the request: method from REQUEST_METHOD; URI from REQUEST_URI, else SCRIPT_NAME +
/// PATH_INFO + QUERY_STRING; headers from `HTTP_*` (plus CONTENT_TYPE and CONTENT_LENGTH);
/// extension: [`super::TrustedParams`], with the [`Role`]. See the module docs for the policies.
#[cfg(any(test, feature = "bench-internals"))]
pub fn build_request<B>(
    params: Params,
    role: Role,
    body: B,
) -> Result<http::Request<B>, RequestError> {
    build_request_in(params, role, body, HeaderMap::new())
}

/// Like [`build_request`], with the headers added to `headers`, an empty map whose
/// allocation is reused (the worker keeps the maps of answered responses for this).
#[cfg(any(test, feature = "bench-internals"))]
pub fn build_request_in<B>(
    params: Params,
    role: Role,
    body: B,
    headers: HeaderMap,
) -> Result<http::Request<B>, RequestError> {
    let mut request = http::Request::new(body);
    fill_request(&mut request, params, role, headers)?;
    Ok(request)
}

/// What `build_request_in` does, for a request made with `http::Request::new(body)`, filled
/// where it lies: the worker builds it in its handler's future, and a request is a few hundred
/// bytes to move.
pub(crate) fn fill_request<B>(
    request: &mut http::Request<B>,
    params: Params,
    role: Role,
    mut headers: HeaderMap,
) -> Result<(), RequestError> {
    let mut known = Known::default();
    known.scan(&params, &mut headers);
    let method = match known.method {
        None => return Err(RequestError::MissingMethod),
        Some(m) => Method::from_bytes(m).map_err(|_| RequestError::BadMethod)?,
    };
    let uri = build_uri(&params, &known)?;
    let version = known.protocol.map_or(Version::HTTP_11, parse_version);

    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    add_content_headers(&params, &known, &mut headers);
    // Filled in place: the one it replaces never allocated.
    *request.headers_mut() = headers;
    let noted = known.noted;
    request
        .extensions_mut()
        .insert(TrustedParams::with_noted_params(params, role, noted));
    Ok(())
}

/// The params a request is built from, found in one pass (the last of duplicates wins, as in
/// [`Params::get`]).
#[derive(Default)]
struct Known<'a> {
    method: Option<&'a [u8]>,
    request_uri: Option<&'a [u8]>,
    query: Option<&'a [u8]>,
    script_name: Option<&'a [u8]>,
    path_info: Option<&'a [u8]>,
    protocol: Option<&'a [u8]>,
    content_type: Option<&'a [u8]>,
    content_length: Option<&'a [u8]>,
    /// Where the params read for every request are (read later without a search).
    noted: super::trusted::NotedParams,
}

impl<'a> Known<'a> {
    /// Finds the params the request is built from, and adds the header of each `HTTP_*` param
    /// to `headers` on the way (in their order: one pass over the params for both).
    fn scan(&mut self, params: &'a Params, headers: &mut HeaderMap) {
        let mut name_buf = [0u8; 64];
        for (at, name, value) in params.iter_at() {
            let Some(key) = NameKey::of(name) else {
                // Under 8 bytes: no name looked for, but maybe a header's (`HTTP_TE`).
                add_header(headers, params, name, value, &mut name_buf);
                continue;
            };
            if key.is_header() {
                add_header(headers, params, name, value, &mut name_buf);
                match key {
                    NameKey::HTTP_REFERER => self.noted.referer = Some(at),
                    NameKey::HTTP_USER_AGENT => self.noted.user_agent = Some(at),
                    _ => {}
                }
                continue;
            }
            // Most params are none of these: a few comparisons of machine words each.
            let slot = match key {
                NameKey::REQUEST_METHOD => &mut self.method,
                NameKey::REQUEST_URI => &mut self.request_uri,
                NameKey::QUERY_STRING => &mut self.query,
                NameKey::SCRIPT_NAME => &mut self.script_name,
                NameKey::PATH_INFO => &mut self.path_info,
                NameKey::SERVER_PROTOCOL => &mut self.protocol,
                NameKey::CONTENT_TYPE => &mut self.content_type,
                NameKey::CONTENT_LENGTH => &mut self.content_length,
                NameKey::REMOTE_ADDR => {
                    self.noted.remote = Some(at);
                    continue;
                }
                NameKey::REMOTE_PORT => {
                    self.noted.remote_port = Some(at);
                    continue;
                }
                _ => continue,
            };
            *slot = Some(value);
        }
    }
}

/// A param name of at least 8 bytes as [`Known::scan`] compares it: its length and its first
/// and last 8 bytes as words. Two names of at most 16 bytes are equal exactly when their keys
/// are (the words cover every byte), and each name looked for is 9 to 15 bytes long, so a key
/// equal to one of the constants below is that name; a longer name differs in length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameKey {
    len: usize,
    head: u64,
    tail: u64,
}

impl NameKey {
    const REQUEST_METHOD: NameKey = NameKey::of_const(b"REQUEST_METHOD");
    const REQUEST_URI: NameKey = NameKey::of_const(b"REQUEST_URI");
    const QUERY_STRING: NameKey = NameKey::of_const(b"QUERY_STRING");
    const SCRIPT_NAME: NameKey = NameKey::of_const(b"SCRIPT_NAME");
    const PATH_INFO: NameKey = NameKey::of_const(b"PATH_INFO");
    const SERVER_PROTOCOL: NameKey = NameKey::of_const(b"SERVER_PROTOCOL");
    const CONTENT_TYPE: NameKey = NameKey::of_const(b"CONTENT_TYPE");
    const CONTENT_LENGTH: NameKey = NameKey::of_const(b"CONTENT_LENGTH");
    const REMOTE_ADDR: NameKey = NameKey::of_const(b"REMOTE_ADDR");
    const REMOTE_PORT: NameKey = NameKey::of_const(b"REMOTE_PORT");
    const HTTP_REFERER: NameKey = NameKey::of_const(b"HTTP_REFERER");
    const HTTP_USER_AGENT: NameKey = NameKey::of_const(b"HTTP_USER_AGENT");

    /// `HTTP_` as the low five bytes of a little-endian word, and the mask that selects them.
    const HEADER_PREFIX: u64 = u64::from_le_bytes(*b"HTTP_\0\0\0");
    const HEADER_PREFIX_MASK: u64 = (1 << 40) - 1;

    /// The key of `name`, if it has at least 8 bytes.
    fn of(name: &[u8]) -> Option<NameKey> {
        let (head, tail) = (name.first_chunk::<8>()?, name.last_chunk::<8>()?);
        Some(NameKey {
            len: name.len(),
            head: u64::from_le_bytes(*head),
            tail: u64::from_le_bytes(*tail),
        })
    }

    /// The key of a name of 8 to 16 bytes, at compile time (another length does not compile).
    const fn of_const(name: &[u8]) -> NameKey {
        assert!(name.len() >= 8 && name.len() <= 16);
        /// The 8 bytes of `name` from `at`, as [`NameKey::of`] reads them.
        const fn word(name: &[u8], at: usize) -> u64 {
            let mut bytes = [0u8; 8];
            let mut i = 0;
            while i < 8 {
                bytes[i] = name[at + i];
                i += 1;
            }
            u64::from_le_bytes(bytes)
        }
        NameKey {
            len: name.len(),
            head: word(name, 0),
            tail: word(name, name.len() - 8),
        }
    }

    /// The name starts with `HTTP_`: a client header's param.
    fn is_header(self) -> bool {
        self.head & NameKey::HEADER_PREFIX_MASK == NameKey::HEADER_PREFIX
    }
}

/// The version named by SERVER_PROTOCOL; HTTP/1.1 for anything unknown.
fn parse_version(protocol: &[u8]) -> Version {
    match protocol {
        b"HTTP/1.1" => Version::HTTP_11,
        b"HTTP/1.0" => Version::HTTP_10,
        b"HTTP/2" | b"HTTP/2.0" => Version::HTTP_2,
        b"HTTP/3" | b"HTTP/3.0" => Version::HTTP_3,
        b"HTTP/0.9" => Version::HTTP_09,
        _ => Version::HTTP_11,
    }
}

fn build_uri(params: &Params, known: &Known<'_>) -> Result<Uri, RequestError> {
    let query = known.query.unwrap_or_default();
    match known.request_uri.and_then(|r| params.share(r)) {
        Some(raw) if !raw.is_empty() => {
            if query.is_empty() || raw.contains(&b'?') {
                uri_from_target(raw)
            } else {
                let mut joined = Vec::with_capacity(raw.len() + 1 + query.len());
                joined.extend_from_slice(&raw);
                joined.push(b'?');
                joined.extend_from_slice(query);
                uri_from_target(Bytes::from(joined))
            }
        }
        _ => {
            let script = known.script_name.unwrap_or_default();
            let path_info = known.path_info.unwrap_or_default();
            let mut target = Vec::with_capacity(2 + script.len() + path_info.len() + query.len());
            if !script.starts_with(b"/") {
                target.push(b'/');
            }
            target.extend_from_slice(script);
            if target.ends_with(b"/") && path_info.starts_with(b"/") {
                target.pop();
            }
            target.extend_from_slice(path_info);
            if !query.is_empty() {
                target.push(b'?');
                target.extend_from_slice(query);
            }
            uri_from_target(Bytes::from(target))
        }
    }
}

/// Parses a request target (origin, absolute, authority or asterisk form), percent-encoding
/// what `http::Uri` would refuse. Absolute form is reduced to its path and query.
fn uri_from_target(target: Bytes) -> Result<Uri, RequestError> {
    let target = if needs_escape(&target) {
        Bytes::from(escape(&target))
    } else {
        target
    };
    let uri = Uri::from_maybe_shared(target).map_err(|_| RequestError::BadUri)?;
    if uri.scheme().is_none() {
        return Ok(uri);
    }
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).map_err(|_| RequestError::BadUri)
}

/// Bytes escaped in the path: C0 controls, space, `"`, `#`, `<`, `>`, `` ` ``, `{`, `}`, DEL and
/// non-ASCII (the WHATWG path percent-encode set, plus DEL and non-ASCII).
const fn escape_in_path(b: u8) -> bool {
    matches!(b, 0..=0x20 | b'"' | b'#' | b'<' | b'>' | b'`' | b'{' | b'}' | 0x7F..=0xFF)
}

/// Bytes escaped in the query: the WHATWG query percent-encode set, plus DEL and non-ASCII.
const fn escape_in_query(b: u8) -> bool {
    matches!(b, 0..=0x20 | b'"' | b'#' | b'<' | b'>' | 0x7F..=0xFF)
}

/// Per byte: [`ESCAPED_IN_PATH`], [`ESCAPED_IN_QUERY`] and [`QUESTION_MARK`] bits, so that a
/// clean target is checked with one table load and one test per byte.
const BYTE_CLASS: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        if escape_in_path(byte) {
            table[b] |= ESCAPED_IN_PATH;
        }
        if escape_in_query(byte) {
            table[b] |= ESCAPED_IN_QUERY;
        }
        b += 1;
    }
    table[b'?' as usize] |= QUESTION_MARK;
    table
};
const ESCAPED_IN_PATH: u8 = 1;
const ESCAPED_IN_QUERY: u8 = 2;
const QUESTION_MARK: u8 = 4;

fn needs_escape(target: &[u8]) -> bool {
    // The bits that stop the scan: escaped bytes where it is, and `?` while in the path.
    let mut stop = ESCAPED_IN_PATH | QUESTION_MARK;
    for &b in target {
        let class = BYTE_CLASS[usize::from(b)];
        if class & stop != 0 {
            if b != b'?' {
                return true;
            }
            // The first `?` (escaped nowhere) starts the query.
            stop = ESCAPED_IN_QUERY;
        }
    }
    false
}

fn escape(target: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(target.len() + 16);
    let mut in_query = false;
    for &b in target {
        let escaped = if in_query {
            escape_in_query(b)
        } else {
            escape_in_path(b)
        };
        if escaped {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.push(b);
        }
        in_query |= b == b'?';
    }
    out
}

/// Adds `content-type` from CONTENT_TYPE and `content-length` from CONTENT_LENGTH (see the
/// module docs) after the client's headers; values are zero-copy slices of the params buffer.
fn add_content_headers(params: &Params, known: &Known<'_>, headers: &mut HeaderMap) {
    let content_type = known.content_type.filter(|v| !v.is_empty());
    let content_length = known.content_length.filter(|v| is_decimal_u64(v));
    if let Some(value) = content_type.and_then(|v| params.share(v))
        && let Ok(value) = HeaderValue::from_maybe_shared(value)
    {
        let _ = headers.try_insert(CONTENT_TYPE, value);
    }
    if let Some(value) = content_length.and_then(|v| params.share(v))
        && let Ok(value) = HeaderValue::from_maybe_shared(value)
    {
        let _ = headers.try_insert(CONTENT_LENGTH, value);
    }
}

/// Appends the header of an `HTTP_*` param (any other param is ignored), unless `http` refuses
/// its name or value or it is one of the ignored names (see the module docs).
fn add_header(
    headers: &mut HeaderMap,
    params: &Params,
    name: &[u8],
    value: &[u8],
    name_buf: &mut [u8; 64],
) {
    let Some(suffix) = name.strip_prefix(b"HTTP_") else {
        return;
    };
    // The common headers are none of the ignored ones: they skip that check.
    let header_name = match common_header(suffix) {
        Some(name) => name,
        None if is_ignored(suffix) => return,
        None => match header_name(suffix, name_buf) {
            Some(name) => name,
            None => return,
        },
    };
    let Some(Ok(header_value)) = params.share(value).map(HeaderValue::from_maybe_shared) else {
        return;
    };
    // Only fails past http's 32768-entry limit, far above the params limits.
    let _ = headers.try_append(header_name, header_value);
}

/// `HTTP_*` params that give no header (see the module docs).
fn is_ignored(suffix: &[u8]) -> bool {
    matches!(
        suffix,
        b"CONTENT_TYPE"
            | b"CONTENT_LENGTH"
            | b"TRANSFER_ENCODING"
            | b"CONNECTION"
            | b"KEEP_ALIVE"
            | b"PROXY_CONNECTION"
            | b"TE"
            | b"UPGRADE"
            | b"EXPECT"
    )
}

/// `FOO_BAR` -> `foo-bar` (lowercasing is done by `HeaderName::from_bytes`) for a name that
/// [`common_header`] does not know; names up to 64 bytes use the stack buffer, so a standard
/// header name allocates nothing.
fn header_name(suffix: &[u8], buf: &mut [u8; 64]) -> Option<HeaderName> {
    let dash = |b: &u8| if *b == b'_' { b'-' } else { *b };
    if suffix.len() <= buf.len() {
        let out = &mut buf[..suffix.len()];
        for (o, b) in out.iter_mut().zip(suffix) {
            *o = dash(b);
        }
        HeaderName::from_bytes(out).ok()
    } else {
        let owned: Vec<u8> = suffix.iter().map(dash).collect();
        HeaderName::from_bytes(&owned).ok()
    }
}

/// The headers browsers and proxies send on nearly every request, matched on the param's
/// spelling so they cost no conversion, no validation and no allocation: one jump on length and
/// first byte, then at most a few comparisons.
fn common_header(suffix: &[u8]) -> Option<HeaderName> {
    use http::header;
    const fn named(name: &'static str) -> HeaderName {
        HeaderName::from_static(name)
    }
    Some(match (suffix.len(), suffix.first()?) {
        (3, b'D') if suffix == b"DNT" => header::DNT,
        (4, b'H') if suffix == b"HOST" => header::HOST,
        (6, b'A') if suffix == b"ACCEPT" => header::ACCEPT,
        (6, b'C') if suffix == b"COOKIE" => header::COOKIE,
        (6, b'O') if suffix == b"ORIGIN" => header::ORIGIN,
        (6, b'P') if suffix == b"PRAGMA" => header::PRAGMA,
        (7, b'R') if suffix == b"REFERER" => header::REFERER,
        (8, b'P') if suffix == b"PRIORITY" => const { named("priority") },
        (9, b'S') if suffix == b"SEC_CH_UA" => const { named("sec-ch-ua") },
        (9, b'X') if suffix == b"X_REAL_IP" => const { named("x-real-ip") },
        (10, b'U') if suffix == b"USER_AGENT" => header::USER_AGENT,
        (13, b'A') if suffix == b"AUTHORIZATION" => header::AUTHORIZATION,
        (13, b'C') if suffix == b"CACHE_CONTROL" => header::CACHE_CONTROL,
        (13, b'I') if suffix == b"IF_NONE_MATCH" => header::IF_NONE_MATCH,
        (14, b'S') if suffix == b"SEC_FETCH_DEST" => const { named("sec-fetch-dest") },
        (14, b'S') if suffix == b"SEC_FETCH_MODE" => const { named("sec-fetch-mode") },
        (14, b'S') if suffix == b"SEC_FETCH_SITE" => const { named("sec-fetch-site") },
        (14, b'S') if suffix == b"SEC_FETCH_USER" => const { named("sec-fetch-user") },
        (15, b'A') if suffix == b"ACCEPT_LANGUAGE" => header::ACCEPT_LANGUAGE,
        (15, b'A') if suffix == b"ACCEPT_ENCODING" => header::ACCEPT_ENCODING,
        (15, b'X') if suffix == b"X_FORWARDED_FOR" => const { named("x-forwarded-for") },
        (16, b'S') if suffix == b"SEC_CH_UA_MOBILE" => const { named("sec-ch-ua-mobile") },
        (17, b'I') if suffix == b"IF_MODIFIED_SINCE" => header::IF_MODIFIED_SINCE,
        (17, b'X') if suffix == b"X_FORWARDED_PROTO" => const { named("x-forwarded-proto") },
        (18, b'S') if suffix == b"SEC_CH_UA_PLATFORM" => const { named("sec-ch-ua-platform") },
        (25, b'U') if suffix == b"UPGRADE_INSECURE_REQUESTS" => header::UPGRADE_INSECURE_REQUESTS,
        _ => return None,
    })
}

/// A non-empty run of ASCII digits that fits a u64 (no sign, no spaces).
fn is_decimal_u64(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= 20
        && value.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some()
}

#[cfg(test)]
mod tests;
