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

/// The longest CGI head [`CgiStream`] keeps looking for the blank line in; past it the
/// response is a [`Failure::Protocol`].
pub const MAX_CGI_HEAD: usize = 64 * 1024;

/// Checks a CGI response (FastCGI STDOUT) as it arrives: a header block ended by a blank line
/// (`\r\n\r\n` or `\n\n`, or an empty block: a first line that is empty), an optional
/// `Status:` header that must say 200, then the body. Only the head is kept; the body is
/// compared with the expected one piece by piece where there is one, and otherwise only
/// counted, so a large body costs no copy.
#[derive(Debug, Clone, Default)]
pub struct CgiStream {
    /// The head so far, with its blank line once complete.
    head: Vec<u8>,
    /// Where the scan for the blank line is after the bytes seen.
    at: HeadEnd,
    /// The head's verdict once the blank line came.
    head_result: Option<Result<(), Failure>>,
    /// Body bytes seen.
    body_len: usize,
    /// A body byte differed from the expected body (or came past its end).
    body_differs: bool,
    /// The head grew past [`MAX_CGI_HEAD`] without its blank line.
    head_too_long: bool,
}

/// The scan for the end of the head: the bytes since the last line feed that matter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum HeadEnd {
    /// Nothing seen yet: a line feed (or CR LF) here is an empty head.
    #[default]
    Start,
    /// A CR first.
    StartCr,
    /// Inside a line.
    Line,
    /// Just after a line feed.
    Lf,
    /// A line feed and a CR.
    LfCr,
}

impl HeadEnd {
    /// The state after `b`; `None` when `b` ends the head.
    fn next(self, b: u8) -> Option<HeadEnd> {
        use HeadEnd::*;
        match (self, b) {
            (Start | StartCr | Lf | LfCr, b'\n') => None,
            (Start, b'\r') => Some(StartCr),
            (Lf, b'\r') => Some(LfCr),
            (Line, b'\n') => Some(Lf),
            _ => Some(Line),
        }
    }
}

impl CgiStream {
    /// Ready for a new response (the head's allocation is kept).
    pub fn reset(&mut self) {
        self.head.clear();
        self.at = HeadEnd::Start;
        self.head_result = None;
        self.body_len = 0;
        self.body_differs = false;
        self.head_too_long = false;
    }

    /// The next STDOUT bytes.
    pub fn push(&mut self, mut bytes: &[u8], expect: &Expect) {
        if self.head_result.is_none() {
            let mut end = None;
            for (i, &b) in bytes.iter().enumerate() {
                match self.at.next(b) {
                    Some(at) => self.at = at,
                    None => {
                        end = Some(i + 1);
                        break;
                    }
                }
            }
            let head_part = &bytes[..end.unwrap_or(bytes.len())];
            let room = MAX_CGI_HEAD.saturating_sub(self.head.len());
            self.head_too_long |= head_part.len() > room;
            self.head
                .extend_from_slice(&head_part[..head_part.len().min(room)]);
            let Some(end) = end else {
                return;
            };
            self.head_result = Some(if self.head_too_long {
                Err(Failure::Protocol)
            } else {
                check_head(&self.head)
            });
            bytes = &bytes[end..];
        }
        if let Some(want) = &expect.body {
            let seen = want.get(self.body_len..self.body_len + bytes.len());
            self.body_differs |= seen != Some(bytes);
        }
        self.body_len += bytes.len();
    }

    /// The verdict on the response, its STDOUT complete.
    pub fn finish(&self, expect: &Expect) -> Result<(), Failure> {
        self.head_result.unwrap_or(Err(Failure::Protocol))?;
        match &expect.body {
            Some(want) if self.body_differs || self.body_len != want.len() => Err(Failure::Body),
            _ => Ok(()),
        }
    }
}

/// The `Status:` check of a complete head (its blank line included).
fn check_head(head: &[u8]) -> Result<(), Failure> {
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() >= 7 && line[..7].eq_ignore_ascii_case(b"status:") {
            let value = line[7..].trim_ascii_start();
            if !value.starts_with(b"200") || value.get(3).is_some_and(u8::is_ascii_digit) {
                return Err(Failure::Status(status_code(value)));
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(body: &str) -> Expect {
        Expect {
            body: Some(Arc::from(body.as_bytes())),
        }
    }

    /// The verdict on `stdout` fed whole and cut at every point (all must agree).
    fn check_cgi(stdout: &[u8], expect: &Expect) -> Result<(), Failure> {
        let mut stream = CgiStream::default();
        stream.push(stdout, expect);
        let whole = stream.finish(expect);
        for cut in 0..=stdout.len() {
            stream.reset();
            stream.push(&stdout[..cut], expect);
            stream.push(&stdout[cut..], expect);
            assert_eq!(stream.finish(expect), whole, "{stdout:?} cut at {cut}");
        }
        stream.reset();
        for b in stdout {
            stream.push(std::slice::from_ref(b), expect);
        }
        assert_eq!(stream.finish(expect), whole, "{stdout:?} byte by byte");
        whole
    }

    #[test]
    fn cgi_status_and_body() {
        let none = Expect::default();
        let ok = b"Content-Type: text/plain\r\n\r\nHello";
        assert_eq!(check_cgi(ok, &none), Ok(()));
        assert_eq!(check_cgi(ok, &expect("Hello")), Ok(()));
        assert_eq!(check_cgi(ok, &expect("Hell")), Err(Failure::Body));
        assert_eq!(check_cgi(ok, &expect("Hello!")), Err(Failure::Body));
        assert_eq!(check_cgi(ok, &expect("Jello")), Err(Failure::Body));
        let lf = b"Status: 200 OK\nContent-Type: text/plain\n\nHello";
        assert_eq!(check_cgi(lf, &expect("Hello")), Ok(()));
        let err = b"Status: 500 Internal Server Error\r\n\r\noops";
        assert_eq!(check_cgi(err, &none), Err(Failure::Status(500)));
        assert_eq!(
            check_cgi(b"status:2000\r\n\r\n", &none),
            Err(Failure::Status(0))
        );
        assert_eq!(check_cgi(b"no header end", &none), Err(Failure::Protocol));
        assert_eq!(check_cgi(b"", &none), Err(Failure::Protocol));
        assert_eq!(check_cgi(b"\r\n\r\n", &none), Ok(()));
        assert_eq!(check_cgi(b"\r\nHello", &expect("Hello")), Ok(()));
        assert_eq!(check_cgi(b"\nHello", &expect("Hello")), Ok(()));
        // A status after the blank line is body, not head.
        let late = b"A: b\n\nStatus: 500\n";
        assert_eq!(check_cgi(late, &none), Ok(()));
        // CR CR LF is not a blank line.
        assert_eq!(check_cgi(b"A: b\n\r\r\n", &none), Err(Failure::Protocol));
        assert_eq!(
            check_cgi(b"A: b\n\r\r\nStatus: 404\n\n", &none),
            Err(Failure::Status(404))
        );
    }

    #[test]
    fn a_head_without_its_blank_line_is_kept_only_to_its_limit() {
        let none = Expect::default();
        let mut stream = CgiStream::default();
        let line = [b'x'; 1000];
        for _ in 0..2 * MAX_CGI_HEAD / line.len() {
            stream.push(&line, &none);
        }
        assert!(stream.head.len() <= MAX_CGI_HEAD);
        stream.push(b"\n\nbody", &none);
        assert_eq!(stream.finish(&none), Err(Failure::Protocol));
    }

    #[test]
    fn a_body_is_compared_without_being_kept() {
        let want = vec![7u8; 200_000];
        let expect = Expect {
            body: Some(Arc::from(&want[..])),
        };
        let mut stream = CgiStream::default();
        stream.push(b"Content-Type: a/b\r\n\r\n", &expect);
        for piece in want.chunks(65_535) {
            stream.push(piece, &expect);
        }
        assert_eq!(stream.finish(&expect), Ok(()));
        assert!(stream.head.len() < 100, "the body is not kept");
        stream.push(&[7], &expect);
        assert_eq!(
            stream.finish(&expect),
            Err(Failure::Body),
            "one byte too many"
        );
    }
}
