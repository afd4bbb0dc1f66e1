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

use http::header::{CONTENT_LENGTH, HeaderName};

/// Appends `Status: <code> <reason>\r\n`, every header as `Name: value\r\n`, a
/// `Content-Length` when `body_len` is known and the handler set none, and the blank line.
pub fn encode_head(parts: &http::response::Parts, body_len: Option<u64>, out: &mut Vec<u8>) {
    encode_status_line(parts.status, out);
    // Noticed while writing instead of looked up afterwards: a lookup hashes the name.
    let mut has_length = false;
    for (name, value) in &parts.headers {
        if is_dropped(name) {
            continue;
        }
        has_length |= name == CONTENT_LENGTH;
        out.extend_from_slice(name.as_str().as_bytes());
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
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(len, out);
    out.extend_from_slice(b"\r\n");
}

/// Hop-by-hop headers and `status`, which a CGI response must not carry.
fn is_dropped(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "status"
    )
}

/// Appends `n` in decimal without going through `fmt`.
fn push_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
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

    #[test]
    fn decimal_edges() {
        for n in [0, 9, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(n, &mut out);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
