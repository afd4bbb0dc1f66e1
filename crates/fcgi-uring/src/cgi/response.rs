//! The CGI response header block written at the start of STDOUT (RFC 3875 section 6.3).
//!
//! Policies:
//! - The first line is always `Status: <code> <reason>` (canonical reason; the code alone when
//!   the code has none), so every front end sees the handler's status.
//! - Headers follow in `HeaderMap` order, one line per value (several `Set-Cookie` stay several
//!   lines). Values are written byte for byte (`http` already refused CR, LF and NUL).
//! - Hop-by-hop headers (RFC 9110 7.6.1: `connection`, `keep-alive`, `proxy-connection`, `te`,
//!   `transfer-encoding`, `upgrade`) are dropped: they describe the handler-to-proxy hop, which
//!   FastCGI frames itself, and a `Transfer-Encoding: chunked` would make the proxy expect
//!   chunks that never come. A handler's own `status` header is dropped too (the first line is
//!   the status).
//! - `Content-Length: N` is added when `body_len` is known and the handler set none. A handler's
//!   own `Content-Length` is kept (a HEAD answer needs it): the runtime must make sure it does
//!   not exceed the bytes sent, since nginx, HAProxy and lighttpd then hang the client.
//! - Before encoding, [`frame`] decides what a handler's response may carry, as hyper's
//!   HTTP/1.1 server does (so that switching from `axum::serve` changes nothing): no body and
//!   no added `Content-Length` for 204 and 304 (RFC 9110 6.4.1, 8.6); no body for HEAD, and no
//!   added `Content-Length: 0` there (a HEAD of a streamed body has no known length); a
//!   handler's `Content-Length` dropped on a 204 and wherever the body is empty, except on
//!   HEAD (a 304 keeps a length its handler gave with a body, as hyper does). A 1xx
//!   status cannot be a final answer (it would corrupt the client's connection):
//!   [`replace_informational`] turns it into a bare 500, as hyper does.

use http::header::CONTENT_LENGTH;

/// How a handler's response is framed (see [`frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// The `Content-Length` to add when the handler set none.
    pub content_length: Option<u64>,
    /// Whether body bytes may follow the head (not for HEAD, 204, 304).
    pub send_body: bool,
}

/// Decides the framing of a response to a HEAD request or not (`head_request`) whose body has
/// ended (`body_ended`: `is_end_stream`) or has `body_len` bytes when known, removing a
/// handler's `Content-Length` where no body is sent on a request other than HEAD. See the module
/// docs.
pub fn frame(
    parts: &mut http::response::Parts,
    head_request: bool,
    body_ended: bool,
    body_len: Option<u64>,
) -> Framing {
    let status = parts.status;
    let can_have_length = !matches!(
        status,
        http::StatusCode::NO_CONTENT | http::StatusCode::NOT_MODIFIED
    ) && !status.is_informational();
    // RFC 9110 8.6: never on a 204. Elsewhere, as hyper: dropped when there is no body to send
    // (a HEAD answer keeps it: it is the length a GET would get).
    if status == http::StatusCode::NO_CONTENT || (body_ended && !head_request) {
        parts.headers.remove(CONTENT_LENGTH);
    }
    let content_length = match (body_ended, body_len) {
        (true, _) | (false, Some(0)) => (can_have_length && !head_request).then_some(0),
        (false, Some(len)) => can_have_length.then_some(len),
        (false, None) => None,
    };
    Framing {
        content_length,
        send_body: can_have_length && !head_request,
    }
}

/// Replaces a 1xx final status with a bare 500 (no header, no body), returning the status
/// replaced; any other response is left alone.
pub fn replace_informational(parts: &mut http::response::Parts) -> Option<http::StatusCode> {
    if !parts.status.is_informational() {
        return None;
    }
    let status = parts.status;
    let (mut bare, ()) = http::Response::new(()).into_parts();
    bare.status = http::StatusCode::INTERNAL_SERVER_ERROR;
    *parts = bare;
    Some(status)
}

/// Appends `Status: <code> <reason>\r\n`, every header as `Name: value\r\n`, a
/// `Content-Length` when `body_len` is known and the handler set none, and the blank line.
pub fn encode_head(parts: &http::response::Parts, body_len: Option<u64>, out: &mut Vec<u8>) {
    encode_status_line(parts.status, out);
    // Noticed while writing instead of looked up afterwards: a lookup hashes the name.
    let mut has_length = false;
    for (name, value) in &parts.headers {
        // Spelled once: a standard name's spelling is looked up in `http`'s table.
        let spelling = name.as_str();
        if is_dropped(spelling) {
            continue;
        }
        has_length |= name == CONTENT_LENGTH;
        out.extend_from_slice(spelling.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(len) = body_len
        && !has_length
    {
        encode_content_length(len, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a header block for a bare status with a text/plain body of `body_len` bytes (used
/// for 400 and 500 answers the runtime makes itself).
pub fn encode_status_only(status: http::StatusCode, body_len: u64, out: &mut Vec<u8>) {
    encode_status_line(status, out);
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    encode_content_length(body_len, out);
    out.extend_from_slice(b"\r\n");
}

fn encode_status_line(status: http::StatusCode, out: &mut Vec<u8>) {
    if let Some(line) = common_status_line(status) {
        out.extend_from_slice(line);
        return;
    }
    out.extend_from_slice(b"Status: ");
    out.extend_from_slice(status.as_str().as_bytes());
    if let Some(reason) = status.canonical_reason() {
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The status lines of the most frequent statuses, whole (one copy instead of four); the
/// same bytes as the general path.
fn common_status_line(status: http::StatusCode) -> Option<&'static [u8]> {
    Some(match status.as_u16() {
        200 => b"Status: 200 OK\r\n",
        204 => b"Status: 204 No Content\r\n",
        301 => b"Status: 301 Moved Permanently\r\n",
        302 => b"Status: 302 Found\r\n",
        304 => b"Status: 304 Not Modified\r\n",
        400 => b"Status: 400 Bad Request\r\n",
        404 => b"Status: 404 Not Found\r\n",
        500 => b"Status: 500 Internal Server Error\r\n",
        _ => return None,
    })
}

fn encode_content_length(len: u64, out: &mut Vec<u8>) {
    const NAME: &[u8] = b"Content-Length: ";
    // Laid out from its end (CRLF, the digits, the name) and appended with one copy.
    let mut line = [0u8; NAME.len() + MAX_DIGITS + 2];
    let crlf = line.len() - 2;
    line[crlf..].copy_from_slice(b"\r\n");
    let start = write_decimal_before(len, &mut line[..crlf]) - NAME.len();
    line[start..start + NAME.len()].copy_from_slice(NAME);
    out.extend_from_slice(&line[start..]);
}

/// Hop-by-hop headers and `status` (by their lowercase spelling, `HeaderName::as_str`), which
/// a CGI response must not carry.
fn is_dropped(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "status"
    )
}

/// Digits of the largest u64.
const MAX_DIGITS: usize = 20;

/// Writes `n` in decimal at the end of `out` (which must hold [`MAX_DIGITS`] bytes) without
/// going through `fmt`; returns where the digits start.
fn write_decimal_before(mut n: u64, out: &mut [u8]) -> usize {
    let mut at = out.len();
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        at -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Response, StatusCode};

    fn head(response: Response<()>, body_len: Option<u64>) -> String {
        let (parts, ()) = response.into_parts();
        let mut out = Vec::new();
        encode_head(&parts, body_len, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn status_headers_and_content_length() {
        let r = Response::builder()
            .status(404)
            .header("content-type", "text/html")
            .header("x-a", "1")
            .body(())
            .unwrap();
        assert_eq!(
            head(r, Some(12)),
            "Status: 404 Not Found\r\ncontent-type: text/html\r\nx-a: 1\r\nContent-Length: 12\r\n\r\n"
        );
    }

    #[test]
    fn several_set_cookie_lines_in_order() {
        let r = Response::builder()
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .body(())
            .unwrap();
        assert_eq!(
            head(r, None),
            "Status: 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\n"
        );
    }

    #[test]
    fn handler_content_length_is_kept_and_not_doubled() {
        let r = Response::builder()
            .header("content-length", "100")
            .body(())
            .unwrap();
        assert_eq!(
            head(r, Some(0)),
            "Status: 200 OK\r\ncontent-length: 100\r\n\r\n"
        );
    }

    #[test]
    fn hop_by_hop_and_status_headers_are_dropped() {
        let r = Response::builder()
            .header("transfer-encoding", "chunked")
            .header("connection", "close")
            .header("keep-alive", "timeout=5")
            .header("upgrade", "h2c")
            .header("status", "500")
            .header("x-kept", "yes")
            .body(())
            .unwrap();
        assert_eq!(
            head(r, Some(3)),
            "Status: 200 OK\r\nx-kept: yes\r\nContent-Length: 3\r\n\r\n"
        );
    }

    #[test]
    fn code_without_canonical_reason() {
        let r = Response::builder().status(599).body(()).unwrap();
        assert_eq!(head(r, Some(0)), "Status: 599\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn non_utf8_value_bytes_are_written_as_is() {
        let value = http::HeaderValue::from_bytes(b"caf\xe9").unwrap();
        let r = Response::builder().header("x-raw", value).body(()).unwrap();
        let (parts, ()) = r.into_parts();
        let mut out = Vec::new();
        encode_head(&parts, None, &mut out);
        assert_eq!(out, b"Status: 200 OK\r\nx-raw: caf\xe9\r\n\r\n");
    }

    #[test]
    fn status_only() {
        let mut out = Vec::new();
        encode_status_only(StatusCode::BAD_REQUEST, 11, &mut out);
        assert_eq!(
            out,
            b"Status: 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 11\r\n\r\n"
        );
    }

    #[test]
    fn common_status_lines_match_the_general_path() {
        for code in 100..=999 {
            let status = StatusCode::from_u16(code).unwrap();
            let Some(line) = common_status_line(status) else {
                continue;
            };
            let mut general = format!("Status: {}", status.as_str());
            if let Some(reason) = status.canonical_reason() {
                general = format!("{general} {reason}");
            }
            assert_eq!(line, format!("{general}\r\n").as_bytes(), "{code}");
        }
    }

    fn framed(
        status: u16,
        header_len: Option<&str>,
        head: bool,
        ended: bool,
        len: Option<u64>,
    ) -> String {
        let mut r = Response::builder().status(status);
        if let Some(v) = header_len {
            r = r.header("content-length", v);
        }
        let (mut parts, ()) = r.body(()).unwrap().into_parts();
        let framing = frame(&mut parts, head, ended, len);
        let mut out = Vec::new();
        encode_head(&parts, framing.content_length, &mut out);
        let body = if framing.send_body { "body" } else { "no body" };
        format!("{}| {body}", String::from_utf8(out).unwrap())
    }

    #[test]
    fn no_content_and_not_modified_carry_no_length_and_no_body() {
        for status in [204, 304] {
            let line = if status == 204 {
                "Status: 204 No Content\r\n\r\n| no body"
            } else {
                "Status: 304 Not Modified\r\n\r\n| no body"
            };
            // An empty body, a known empty body, an unknown one, a handler's own length of 0.
            assert_eq!(framed(status, None, false, true, Some(0)), line);
            assert_eq!(framed(status, None, false, false, Some(0)), line);
            assert_eq!(framed(status, None, false, false, None), line);
            assert_eq!(framed(status, None, false, false, Some(5)), line);
            assert_eq!(framed(status, Some("0"), false, true, Some(0)), line);
        }
        // A handler's length with a body: never on a 204, kept (but no body) on a 304.
        assert_eq!(
            framed(204, Some("5"), false, false, Some(5)),
            "Status: 204 No Content\r\n\r\n| no body"
        );
        assert_eq!(
            framed(304, Some("5"), false, false, Some(5)),
            "Status: 304 Not Modified\r\ncontent-length: 5\r\n\r\n| no body"
        );
    }

    #[test]
    fn head_answers_get_no_added_zero_length_and_no_body() {
        // axum empties the body of a HEAD answer: no length is known, none is invented.
        assert_eq!(
            framed(200, None, true, true, Some(0)),
            "Status: 200 OK\r\n\r\n| no body"
        );
        // The handler's own length (of the GET body) is kept.
        assert_eq!(
            framed(200, Some("10485760"), true, true, Some(0)),
            "Status: 200 OK\r\ncontent-length: 10485760\r\n\r\n| no body"
        );
        // A body of known length still tells its length, as hyper does.
        assert_eq!(
            framed(200, None, true, false, Some(7)),
            "Status: 200 OK\r\nContent-Length: 7\r\n\r\n| no body"
        );
    }

    #[test]
    fn other_answers_are_framed_as_hyper_frames_them() {
        assert_eq!(
            framed(200, None, false, true, Some(0)),
            "Status: 200 OK\r\nContent-Length: 0\r\n\r\n| body"
        );
        assert_eq!(
            framed(200, None, false, false, Some(3)),
            "Status: 200 OK\r\nContent-Length: 3\r\n\r\n| body"
        );
        assert_eq!(
            framed(200, None, false, false, None),
            "Status: 200 OK\r\n\r\n| body"
        );
        // A length header over an empty body is dropped: there is nothing to send.
        assert_eq!(
            framed(200, Some("9"), false, true, Some(0)),
            "Status: 200 OK\r\nContent-Length: 0\r\n\r\n| body"
        );
    }

    #[test]
    fn informational_final_status_becomes_a_bare_500() {
        let r = Response::builder()
            .status(103)
            .header("link", "</a.css>; rel=preload")
            .body(())
            .unwrap();
        let (mut parts, ()) = r.into_parts();
        assert_eq!(
            replace_informational(&mut parts),
            Some(StatusCode::EARLY_HINTS)
        );
        assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(parts.headers.is_empty());
        let (mut ok, ()) = Response::new(()).into_parts();
        assert_eq!(replace_informational(&mut ok), None);
        assert_eq!(ok.status, StatusCode::OK);
    }

    #[test]
    fn decimal_edges() {
        for n in [0, 9, 10, 12345, u64::MAX] {
            let mut out = b"x".to_vec();
            encode_content_length(n, &mut out);
            assert_eq!(out, format!("xContent-Length: {n}\r\n").as_bytes());
        }
    }
}
