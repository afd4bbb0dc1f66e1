//! The HTTP/1.1 client side: one pre-encoded request, and a parser of pipelined responses
//! (answered in order) with Content-Length or chunked bodies.

use std::collections::VecDeque;

use crate::response::{Completion, Expect, Failure, Violation};

/// Most response headers read.
const MAX_HEADERS: usize = 64;

/// The request bytes, identical for every request.
pub fn encode_request(method: &str, path: &str, host: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fcgi-loadtest\r\nAccept: */*\r\n"
    )
    .into_bytes();
    if !body.is_empty() || method == "POST" || method == "PUT" {
        out.extend_from_slice(
            format!(
                "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Parses the responses on one connection, matching them in order to the slots sent.
#[derive(Debug)]
pub struct ResponseParser {
    in_flight: VecDeque<u16>,
    head_request: bool,
    expect: Expect,
    /// Scratch for a decoded chunked body.
    dechunked: Vec<u8>,
    /// The last response asked to close the connection.
    close_after: bool,
}

impl ResponseParser {
    pub fn new(method: &str, expect: Expect) -> ResponseParser {
        ResponseParser {
            in_flight: VecDeque::new(),
            head_request: method.eq_ignore_ascii_case("HEAD"),
            expect,
            dechunked: Vec::new(),
            close_after: false,
        }
    }

    /// The request for `slot` was sent (after those before it).
    pub fn begin(&mut self, slot: u16) {
        self.in_flight.push_back(slot);
    }

    /// Forgets every request in flight (the connection is gone).
    pub fn reset(&mut self) {
        self.in_flight.clear();
        self.close_after = false;
    }

    /// Whether a response said `Connection: close`: the connection must be replaced.
    pub fn must_close(&self) -> bool {
        self.close_after
    }

    /// Parses the complete responses at the start of `buf`. Returns the bytes consumed.
    pub fn parse(&mut self, buf: &[u8], done: &mut Vec<Completion>) -> Result<usize, Violation> {
        let mut at = 0;
        while at < buf.len() {
            let Some(n) = self.one(&buf[at..], done)? else {
                break;
            };
            at += n;
        }
        Ok(at)
    }

    fn one(&mut self, buf: &[u8], done: &mut Vec<Completion>) -> Result<Option<usize>, Violation> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Violation("unparsable HTTP response head")),
        };
        let code = resp.code.unwrap_or(0);
        if (100..200).contains(&code) {
            return Ok(Some(head_len)); // Interim response: the real one follows.
        }
        let mut content_length = None;
        let mut chunked = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let len = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or(Violation("bad Content-Length"))?;
                content_length = Some(len);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h.value.to_ascii_lowercase().ends_with(b"chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                self.close_after |= h.value.eq_ignore_ascii_case(b"close");
            }
        }
        let no_body = self.head_request || code == 204 || code == 304;
        let (total, body) = if no_body {
            (head_len, &buf[..0])
        } else if chunked {
            self.dechunked.clear();
            match dechunk(&buf[head_len..], &mut self.dechunked)? {
                Some(n) => (head_len + n, &self.dechunked[..]),
                None => return Ok(None),
            }
        } else if let Some(len) = content_length {
            if buf.len() - head_len < len {
                return Ok(None);
            }
            (head_len + len, &buf[head_len..head_len + len])
        } else {
            return Err(Violation("response without Content-Length or chunked body"));
        };
        let slot = self
            .in_flight
            .pop_front()
            .ok_or(Violation("response with no request in flight"))?;
        let result = if code != 200 {
            Err(Failure::Status(code))
        } else {
            self.expect.check_body(body, false)
        };
        done.push(Completion { slot, result });
        Ok(Some(total))
    }
}

/// Decodes a complete chunked body at the start of `buf` into `out`; returns the bytes it
/// took (through the trailers' blank line), or `None` when it is not all there yet.
fn dechunk(buf: &[u8], out: &mut Vec<u8>) -> Result<Option<usize>, Violation> {
    let mut at = 0;
    loop {
        let Some(line_end) = find_crlf(&buf[at..]) else {
            return Ok(None);
        };
        let line = &buf[at..at + line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or(line);
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or(Violation("bad chunk size"))?;
        at += line_end + 2;
        if size == 0 {
            // Trailers, then a blank line.
            loop {
                let Some(end) = find_crlf(&buf[at..]) else {
                    return Ok(None);
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(Violation("chunk not followed by CRLF"));
        }
        at += size + 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn parser() -> ResponseParser {
        let mut p = ResponseParser::new(
            "GET",
            Expect {
                body: Some(Arc::from(&b"Hello, World!"[..])),
            },
        );
        (0..5).for_each(|s| p.begin(s));
        p
    }

    #[test]
    fn request_bytes() {
        assert_eq!(
            encode_request("GET", "/hello", "localhost", b""),
            b"GET /hello HTTP/1.1\r\nHost: localhost\r\nUser-Agent: fcgi-loadtest\r\nAccept: */*\r\n\r\n"
        );
        let post = encode_request("POST", "/", "h", b"ab");
        assert!(post.ends_with(b"Content-Length: 2\r\n\r\nab"));
    }

    #[test]
    fn pipelined_responses_across_every_split() {
        let stream: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!\
HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHello\r\n8;x=y\r\n, World!\r\n0\r\nT: 1\r\n\r\n\
HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno\
HTTP/1.1 204 No Content\r\n\r\n";
        let want = vec![
            Completion {
                slot: 0,
                result: Ok(()),
            },
            Completion {
                slot: 1,
                result: Ok(()),
            },
            Completion {
                slot: 2,
                result: Err(Failure::Status(500)),
            },
            Completion {
                slot: 3,
                result: Err(Failure::Body),
            },
            // 204 is not 200.
            Completion {
                slot: 4,
                result: Err(Failure::Status(204)),
            },
        ];
        for cut in 0..=stream.len() {
            let mut p = parser();
            let mut done = Vec::new();
            let mut buf = stream[..cut].to_vec();
            let n = p.parse(&buf, &mut done).unwrap();
            buf.drain(..n);
            buf.extend_from_slice(&stream[cut..]);
            let n = p.parse(&buf, &mut done).unwrap();
            assert_eq!(n, buf.len(), "cut at {cut}");
            assert_eq!(done, want, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_and_unsolicited_responses_are_violations() {
        let mut done = Vec::new();
        assert!(parser().parse(b"garbage\r\n\r\n", &mut done).is_err());
        let mut idle = ResponseParser::new("GET", Expect::default());
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(idle.parse(r, &mut done).is_err());
        let mut p = parser();
        p.parse(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            &mut done,
        )
        .unwrap();
        assert!(p.must_close());
    }
}
