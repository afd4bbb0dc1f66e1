//! A blocking FastCGI client: for the `fcgi-uring request` command, tests and load tools.

#![forbid(unsafe_code)]
//!
//! - [`Client`]: one connection (TCP or UNIX) with a high-level [`Client::request`] and the raw
//!   pieces integration tests need ([`Client::send_raw`], [`Client::read_record`],
//!   [`Client::begin`] for several requests in flight, [`Client::abort`]).
//! - [`RequestSpec`]: what to send, turned into params the way nginx would ([`nginx_params`]).
//! - [`Response`]: a parsed CGI response; [`Responses`] groups records by request id and notes
//!   protocol violations by the application (records after END_REQUEST, a second END_REQUEST).
//!
//! Guarantees: every read is bounded by the record header's 16-bit lengths; malformed
//! application output is an `io::Error` of kind `InvalidData`, never a panic.

mod conn;
mod response;

pub use conn::{Client, HttpAnswer, Record, RequestSpec};
pub use response::{Exchange, Response, Responses};

/// The params nginx's stock `fastcgi_params` sends for a request (same names, same order), for
/// `method` and `request_uri` (path and query as the client sent them), `headers` as the
/// client sent them (turned into `HTTP_*`; `Content-Type` and `Content-Length` become
/// CONTENT_TYPE and CONTENT_LENGTH), `body_len` bytes of body (CONTENT_LENGTH, empty when None,
/// as nginx sends for a chunked upload it does not buffer).
///
/// Modelled on nginx 1.22 (Debian 12) serving `http://localhost/` from `/var/www/html`:
/// - fixed values: DOCUMENT_ROOT `/var/www/html`, SERVER_PROTOCOL `HTTP/1.1`, REQUEST_SCHEME
///   `http` (so no HTTPS, which is `if_not_empty`), SERVER_SOFTWARE `nginx/1.22.1`,
///   REMOTE_ADDR `127.0.0.1`, REMOTE_PORT `50000`, SERVER_ADDR `127.0.0.1`, SERVER_PORT `80`,
///   SERVER_NAME `localhost`, REDIRECT_STATUS `200`;
/// - SCRIPT_NAME and DOCUMENT_URI are the percent-decoded path (nginx's `$uri`, without its
///   dot-segment and slash normalisation);
/// - with `body_len` None, CONTENT_LENGTH is a `Content-Length` header's value if one is given
///   (so a test can send a lying one), else empty;
/// - headers follow in the order given, one param per header line (nginx 1.22 sends two
///   `Cookie:` lines as two HTTP_COOKIE; nginx 1.23+ would join them); header names containing
///   `_` are dropped, as nginx does by default (`underscores_in_headers off`).
pub fn nginx_params(
    method: &str,
    request_uri: &str,
    headers: &[(String, String)],
    body_len: Option<usize>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (path, query) = request_uri.split_once('?').unwrap_or((request_uri, ""));
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let content_length = match body_len {
        Some(len) => len.to_string(),
        None => header("content-length").unwrap_or_default().to_owned(),
    };
    let uri = percent_decode(path.as_bytes());
    let fixed: [(&str, &[u8]); 18] = [
        ("QUERY_STRING", query.as_bytes()),
        ("REQUEST_METHOD", method.as_bytes()),
        (
            "CONTENT_TYPE",
            header("content-type").unwrap_or_default().as_bytes(),
        ),
        ("CONTENT_LENGTH", content_length.as_bytes()),
        ("SCRIPT_NAME", &uri),
        ("REQUEST_URI", request_uri.as_bytes()),
        ("DOCUMENT_URI", &uri),
        ("DOCUMENT_ROOT", b"/var/www/html"),
        ("SERVER_PROTOCOL", b"HTTP/1.1"),
        ("REQUEST_SCHEME", b"http"),
        ("GATEWAY_INTERFACE", b"CGI/1.1"),
        ("SERVER_SOFTWARE", b"nginx/1.22.1"),
        ("REMOTE_ADDR", b"127.0.0.1"),
        ("REMOTE_PORT", b"50000"),
        ("SERVER_ADDR", b"127.0.0.1"),
        ("SERVER_PORT", b"80"),
        ("SERVER_NAME", b"localhost"),
        ("REDIRECT_STATUS", b"200"),
    ];
    let mut params: Vec<(Vec<u8>, Vec<u8>)> = fixed
        .iter()
        .map(|(name, value)| (name.as_bytes().to_vec(), value.to_vec()))
        .collect();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-type")
            || name.eq_ignore_ascii_case("content-length")
            || name.contains('_')
            || name.is_empty()
        {
            continue;
        }
        let mut param = Vec::with_capacity(5 + name.len());
        param.extend_from_slice(b"HTTP_");
        param.extend(name.bytes().map(|b| match b {
            b'-' => b'_',
            b => b.to_ascii_uppercase(),
        }));
        params.push((param, value.as_bytes().to_vec()));
    }
    params
}

/// `%XX` sequences decoded; anything else (including a malformed `%`) kept as is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests;
