//! What a finished request came to, and the checks shared by the protocols.

use std::sync::Arc;

/// Why a request failed, one counter per kind in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The connection could not be made.
    Connect,
    /// The connection failed or closed with the request in flight.
    Io,
    /// The peer broke the protocol (bad record, bad END_REQUEST, unparsable response).
    Protocol,
    /// The response status was not 200 (the status code; 0 when it could not be read).
    Status(u16),
    /// No answer within [`TIMEOUT_NS`](crate::engine::TIMEOUT_NS) (still in flight at the end of
    /// the run).
    Timeout,
    /// The body differed from `--expect-body`.
    Body,
}

/// A finished request: which slot (FastCGI request id, or HTTP pipeline slot) and its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub slot: u16,
    pub result: Result<(), Failure>,
}

/// The peer broke the protocol in a way that ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub &'static str);

/// What every response is checked against.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The exact body wanted, if any.
    pub body: Option<Arc<[u8]>>,
}

impl Expect {
    /// Compares a complete body (`truncated`: bytes were dropped while buffering).
    pub fn check_body(&self, body: &[u8], truncated: bool) -> Result<(), Failure> {
        match &self.body {
            Some(want) if truncated || body != &want[..] => Err(Failure::Body),
            _ => Ok(()),
        }
    }
}

/// Checks a CGI response (FastCGI STDOUT): a header block ended by a blank line, an optional
/// `Status:` header that must say 200, then the body.
pub fn check_cgi(stdout: &[u8], truncated: bool, expect: &Expect) -> Result<(), Failure> {
    let Some((head_len, body_at)) = find_blank_line(stdout) else {
        return Err(Failure::Protocol);
    };
    for line in stdout[..head_len].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() >= 7 && line[..7].eq_ignore_ascii_case(b"status:") {
            let value = line[7..].trim_ascii_start();
            if !value.starts_with(b"200") || value.get(3).is_some_and(u8::is_ascii_digit) {
                return Err(Failure::Status(status_code(value)));
            }
        }
    }
    expect.check_body(&stdout[body_at..], truncated)
}

/// The three-digit code at the start of a `Status:` value (0 if there is none).
fn status_code(value: &[u8]) -> u16 {
    match value {
        [a, b, c, rest @ ..]
            if [a, b, c].iter().all(|d| d.is_ascii_digit())
                && !rest.first().is_some_and(u8::is_ascii_digit) =>
        {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => 0,
    }
}

/// The end of the header block (`\r\n\r\n` or `\n\n`): (header bytes, body offset).
fn find_blank_line(bytes: &[u8]) -> Option<(usize, usize)> {
    // An empty header block.
    if bytes.starts_with(b"\n") {
        return Some((0, 1));
    }
    if bytes.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match bytes.get(nl + 1) {
            Some(b'\n') => return Some((nl, nl + 2)),
            Some(b'\r') if bytes.get(nl + 2) == Some(&b'\n') => return Some((nl, nl + 3)),
            _ => i = nl + 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(body: &str) -> Expect {
        Expect {
            body: Some(Arc::from(body.as_bytes())),
        }
    }

    #[test]
    fn cgi_status_and_body() {
        let none = Expect::default();
        let ok = b"Content-Type: text/plain\r\n\r\nHello";
        assert_eq!(check_cgi(ok, false, &none), Ok(()));
        assert_eq!(check_cgi(ok, false, &expect("Hello")), Ok(()));
        assert_eq!(check_cgi(ok, false, &expect("Hell")), Err(Failure::Body));
        assert_eq!(check_cgi(ok, true, &expect("Hello")), Err(Failure::Body));
        let lf = b"Status: 200 OK\nContent-Type: text/plain\n\nHello";
        assert_eq!(check_cgi(lf, false, &expect("Hello")), Ok(()));
        let err = b"Status: 500 Internal Server Error\r\n\r\noops";
        assert_eq!(check_cgi(err, false, &none), Err(Failure::Status(500)));
        assert_eq!(
            check_cgi(b"status:2000\r\n\r\n", false, &none),
            Err(Failure::Status(0))
        );
        assert_eq!(
            check_cgi(b"no header end", false, &none),
            Err(Failure::Protocol)
        );
        assert_eq!(check_cgi(b"\r\n\r\n", false, &none), Ok(()));
        assert_eq!(check_cgi(b"\r\nHello", false, &expect("Hello")), Ok(()));
    }
}
