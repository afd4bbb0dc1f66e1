//! The FastCGI client side of the load generator: a request encoded once per run (the params
//! nginx sends, from [`fcgi_client::nginx_params`], and the `fcgi_proto` record encoders) whose
//! only per-request change is the request id, a response parser that takes STDOUT as it
//! arrives, and the GET_VALUES probe.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use fcgi_proto::nv::encode_pair;
use fcgi_proto::record::{
    EndRequestBody, HEADER_LEN, Header, NULL_REQUEST_ID, RecordType, encode_begin_request,
    encode_record, encode_stream, encode_stream_end,
};
use fcgi_uring::Addr;

use crate::response::{CgiStream, Completion, Expect, Failure, Violation};

/// `FCGI_RESPONDER` (spec 5.1).
const ROLE_RESPONDER: u16 = 1;

/// One request, encoded once (BEGIN_REQUEST, PARAMS, empty PARAMS, STDIN..., empty STDIN) with
/// the offsets of every record's request id so that a copy can be given any id.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    bytes: Vec<u8>,
    /// INVARIANT: each offset + 2 <= bytes.len().
    id_offsets: Vec<usize>,
    /// A large request encoded once per id (index 0 empty), see [`RequestTemplate::prepare`].
    prepared: Vec<Vec<u8>>,
}

/// Requests at least this long are encoded once per request id ([`RequestTemplate::prepare`])
/// and written from there: copying one into a write buffer per request would cost the load
/// generator as much as the kernel's copy (an upload of 64 KiB costs a server little more).
pub const PREPARE_MIN: usize = 16 * 1024;
/// Most bytes [`RequestTemplate::prepare`] keeps.
const PREPARED_MAX_BYTES: usize = 256 << 20;

impl RequestTemplate {
    /// A request with `params`, `body` as STDIN and the KEEP_CONN flag.
    pub fn new(params: &[(Vec<u8>, Vec<u8>)], body: &[u8], keep_conn: bool) -> RequestTemplate {
        let mut content = Vec::new();
        for (name, value) in params {
            encode_pair(&mut content, name, value);
        }
        let mut bytes = Vec::new();
        encode_begin_request(&mut bytes, 1, ROLE_RESPONDER, keep_conn);
        encode_stream(&mut bytes, RecordType::Params, 1, &content);
        encode_stream_end(&mut bytes, RecordType::Params, 1);
        encode_stream(&mut bytes, RecordType::Stdin, 1, body);
        encode_stream_end(&mut bytes, RecordType::Stdin, 1);
        let mut id_offsets = Vec::new();
        let mut at = 0;
        while at + HEADER_LEN <= bytes.len() {
            id_offsets.push(at + 2);
            let header: &[u8; HEADER_LEN] = bytes[at..at + HEADER_LEN]
                .try_into()
                .expect("slice of HEADER_LEN");
            at += HEADER_LEN + Header::parse(header).body_len();
        }
        RequestTemplate {
            bytes,
            id_offsets,
            prepared: Vec::new(),
        }
    }

    /// Keeps the request encoded for each id `1..=max_id` when it is at least [`PREPARE_MIN`]
    /// bytes (and all of them fit in 256 MiB), for [`RequestTemplate::prepared`].
    pub fn prepare(mut self, max_id: u16) -> RequestTemplate {
        let total = self.bytes.len().saturating_mul(usize::from(max_id));
        if self.bytes.len() >= PREPARE_MIN && total <= PREPARED_MAX_BYTES {
            let mut prepared = vec![Vec::new()];
            for id in 1..=max_id {
                let mut one = Vec::with_capacity(self.bytes.len());
                self.append(&mut one, id);
                prepared.push(one);
            }
            self.prepared = prepared;
        }
        self
    }

    /// The request with id `id` as [`RequestTemplate::prepare`] kept it, if it did.
    pub fn prepared(&self, id: u16) -> Option<&[u8]> {
        self.prepared
            .get(usize::from(id))
            .filter(|b| !b.is_empty())
            .map(Vec::as_slice)
    }

    /// The encoded request (with id 1).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends the request with request id `id`: one copy and a two-byte patch per record.
    pub fn append(&self, out: &mut Vec<u8>, id: u16) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let id = id.to_be_bytes();
        for &off in &self.id_offsets {
            out[start + off..start + off + 2].copy_from_slice(&id);
        }
    }
}

/// The request the load generator sends, encoded once per run: the params nginx's stock
/// `fastcgi_params` gives for `method request_uri` ([`fcgi_client::nginx_params`]) with the
/// headers of a plain client (`Host: host`, `User-Agent`, `Accept`, and for a body of
/// `body.len()` bytes `Content-Type: application/octet-stream` and its CONTENT_LENGTH), then
/// `body` as STDIN.
pub fn nginx_request(
    method: &str,
    request_uri: &str,
    host: &str,
    body: &[u8],
    keep_conn: bool,
) -> RequestTemplate {
    let mut headers = vec![
        ("Host".to_owned(), host.to_owned()),
        ("User-Agent".to_owned(), "fcgi-loadtest".to_owned()),
        ("Accept".to_owned(), "*/*".to_owned()),
    ];
    if !body.is_empty() {
        headers.push((
            "Content-Type".to_owned(),
            "application/octet-stream".to_owned(),
        ));
    }
    let body_len = (!body.is_empty()).then_some(body.len());
    let params = fcgi_client::nginx_params(method, request_uri, &headers, body_len);
    RequestTemplate::new(&params, body, keep_conn)
}

/// Parses the records of responses on one connection, for request ids `1..=max_id`. STDOUT and
/// STDERR content is taken as it arrives (a record need not be complete), so a large response
/// is never copied to be joined; other records are parsed once complete.
#[derive(Debug)]
pub struct ResponseParser {
    /// The CGI check of each request's STDOUT, per request id (index 0 unused).
    stdout: Vec<CgiStream>,
    active: Vec<bool>,
    expect: Expect,
    /// The STDOUT or STDERR record whose content is being read.
    open: Option<OpenStream>,
}

/// A STDOUT or STDERR record partly read.
#[derive(Debug, Clone, Copy)]
struct OpenStream {
    id: u16,
    stdout: bool,
    content_left: usize,
    padding_left: usize,
}

impl ResponseParser {
    /// A parser for ids `1..=max_id`.
    pub fn new(max_id: u16, expect: Expect) -> ResponseParser {
        let n = max_id as usize + 1;
        ResponseParser {
            stdout: vec![CgiStream::default(); n],
            active: vec![false; n],
            expect,
            open: None,
        }
    }

    /// Request `id` was sent.
    pub fn begin(&mut self, id: u16) {
        let i = id as usize;
        self.stdout[i].reset();
        self.active[i] = true;
    }

    /// Forgets every request in flight (the connection is gone).
    pub fn reset(&mut self) {
        self.active.iter_mut().for_each(|a| *a = false);
        self.open = None;
    }

    /// Parses the records at the start of `buf`, pushing a [`Completion`] per END_REQUEST.
    /// Returns the bytes consumed: all but an incomplete record header, or an incomplete
    /// record other than STDOUT and STDERR, at the end.
    pub fn parse(&mut self, buf: &[u8], done: &mut Vec<Completion>) -> Result<usize, Violation> {
        let mut at = 0;
        loop {
            if let Some(open) = &mut self.open {
                let n = open.content_left.min(buf.len() - at);
                if open.stdout {
                    self.stdout[usize::from(open.id)].push(&buf[at..at + n], &self.expect);
                }
                open.content_left -= n;
                at += n;
                let pad = open.padding_left.min(buf.len() - at);
                open.padding_left -= pad;
                at += pad;
                if open.content_left > 0 || open.padding_left > 0 {
                    return Ok(at);
                }
                self.open = None;
            }
            if buf.len() - at < HEADER_LEN {
                return Ok(at);
            }
            let header: &[u8; HEADER_LEN] = buf[at..at + HEADER_LEN]
                .try_into()
                .expect("slice of HEADER_LEN");
            let header = Header::parse(header);
            if header.version != 1 {
                return Err(Violation("record with a version other than 1"));
            }
            let id = header.request_id;
            if let Some(kind @ (RecordType::Stdout | RecordType::Stderr)) = header.known_type()
                && id != NULL_REQUEST_ID
            {
                self.check_active(id)?;
                self.open = Some(OpenStream {
                    id,
                    stdout: kind == RecordType::Stdout,
                    content_left: usize::from(header.content_length),
                    padding_left: usize::from(header.padding_length),
                });
                at += HEADER_LEN;
                continue;
            }
            let end = at + HEADER_LEN + header.body_len();
            if end > buf.len() {
                return Ok(at);
            }
            let content = &buf[at + HEADER_LEN..at + HEADER_LEN + header.content_length as usize];
            self.record(header, content, done)?;
            at = end;
        }
    }

    fn check_active(&self, id: u16) -> Result<(), Violation> {
        if self.active.get(usize::from(id)).copied().unwrap_or(false) {
            Ok(())
        } else {
            Err(Violation("record for a request id not in flight"))
        }
    }

    /// A complete record other than STDOUT and STDERR.
    fn record(
        &mut self,
        header: Header,
        content: &[u8],
        done: &mut Vec<Completion>,
    ) -> Result<(), Violation> {
        let id = header.request_id;
        if id == NULL_REQUEST_ID {
            return Ok(()); // Management records (GET_VALUES_RESULT, UNKNOWN_TYPE): nothing to do.
        }
        self.check_active(id)?;
        let i = usize::from(id);
        match header.known_type() {
            Some(RecordType::EndRequest) => {
                let body: &[u8; 8] = content
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(Violation("END_REQUEST shorter than 8 bytes"))?;
                let end = EndRequestBody::parse(body);
                self.active[i] = false;
                let result = if end.protocol_status != 0 {
                    Err(Failure::Protocol)
                } else {
                    self.stdout[i].finish(&self.expect)
                };
                done.push(Completion { slot: id, result });
            }
            _ => return Err(Violation("unexpected record type from the application")),
        }
        Ok(())
    }
}

/// What a server said to GET_VALUES (spec 4.1), `None` for a name it left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagementValues {
    pub max_conns: Option<u64>,
    pub max_reqs: Option<u64>,
    pub mpxs_conns: Option<bool>,
}

/// Appends a GET_VALUES record asking for FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS.
pub fn encode_get_values(out: &mut Vec<u8>) {
    let mut content = Vec::new();
    for name in ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"] {
        encode_pair(&mut content, name.as_bytes(), b"");
    }
    encode_record(out, RecordType::GetValues, NULL_REQUEST_ID, &content);
}

/// Asks the server at `addr` for its management values on a connection of its own, waiting
/// at most `timeout` for the answer. `Ok(None)`: the server closed or did not answer in time.
pub fn probe_values(addr: &Addr, timeout: Duration) -> io::Result<Option<ManagementValues>> {
    let mut socket = crate::net::connect_blocking(addr, timeout)?;
    let mut request = Vec::new();
    encode_get_values(&mut request);
    socket.write_all(&request)?;
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut at = 0;
        while buf.len() - at >= HEADER_LEN {
            let header = Header::parse(buf[at..at + HEADER_LEN].try_into().expect("8 bytes"));
            let end = at + HEADER_LEN + header.body_len();
            if end > buf.len() {
                break;
            }
            if header.known_type() == Some(RecordType::GetValuesResult) {
                let content =
                    &buf[at + HEADER_LEN..at + HEADER_LEN + header.content_length as usize];
                return Ok(Some(parse_values(content)));
            }
            at = end;
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        match socket.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Decodes the pairs of a GET_VALUES_RESULT; malformed or unknown pairs are skipped.
pub fn parse_values(mut content: &[u8]) -> ManagementValues {
    let mut values = ManagementValues::default();
    while let Some((name, value, rest)) = next_pair(content) {
        let number = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        match name {
            b"FCGI_MAX_CONNS" => values.max_conns = number,
            b"FCGI_MAX_REQS" => values.max_reqs = number,
            b"FCGI_MPXS_CONNS" => values.mpxs_conns = number.map(|n| n != 0),
            _ => {}
        }
        content = rest;
    }
    values
}

fn next_pair(input: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (name_len, input) = read_len(input)?;
    let (value_len, input) = read_len(input)?;
    if input.len() < name_len.checked_add(value_len)? {
        return None;
    }
    let (name, input) = input.split_at(name_len);
    let (value, rest) = input.split_at(value_len);
    Some((name, value, rest))
}

fn read_len(input: &[u8]) -> Option<(usize, &[u8])> {
    let first = *input.first()?;
    if first < 0x80 {
        return Some((first as usize, &input[1..]));
    }
    let bytes: [u8; 4] = input.get(..4)?.try_into().ok()?;
    Some((
        (u32::from_be_bytes(bytes) & 0x7FFF_FFFF) as usize,
        &input[4..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fcgi_proto::ProtocolStatus;
    use fcgi_proto::record::encode_end_request;
    use std::sync::Arc;

    #[test]
    fn request_bytes_and_id_patch() {
        let params = vec![(b"A".to_vec(), b"bc".to_vec())];
        let t = RequestTemplate::new(&params, b"xyz", true);
        #[rustfmt::skip]
        let want_id1: Vec<u8> = [
            &[1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0][..], // BEGIN, responder, keep
            &[1, 4, 0, 1, 0, 5, 0, 0, 1, 2, b'A', b'b', b'c'],     // PARAMS
            &[1, 4, 0, 1, 0, 0, 0, 0],                             // end of PARAMS
            &[1, 5, 0, 1, 0, 3, 0, 0, b'x', b'y', b'z'],           // STDIN
            &[1, 5, 0, 1, 0, 0, 0, 0],                             // end of STDIN
        ].concat();
        assert_eq!(t.bytes(), &want_id1[..]);
        let mut out = vec![9];
        t.append(&mut out, 0x0203);
        assert_eq!(out.len(), 1 + want_id1.len());
        for at in [1, 17, 30, 38, 49] {
            assert_eq!(&out[at + 2..at + 4], &[2, 3], "record at {at}");
            assert_eq!(out[at], 1);
        }
        let no_keep = RequestTemplate::new(&params, b"", false);
        assert_eq!(no_keep.bytes()[10], 0);
        // No STDIN data record when the body is empty.
        assert_eq!(no_keep.bytes().len(), want_id1.len() - 11);
    }

    /// The params of a request as `RequestTemplate::new` encoded them.
    fn params_of(t: &RequestTemplate) -> Vec<(Vec<u8>, Vec<u8>)> {
        let header: &[u8; HEADER_LEN] = t.bytes()[16..24].try_into().unwrap();
        let header = Header::parse(header);
        assert_eq!(header.known_type(), Some(RecordType::Params));
        let mut content = &t.bytes()[24..24 + header.content_length as usize];
        let mut pairs = Vec::new();
        while let Some((name, value, rest)) = next_pair(content) {
            pairs.push((name.to_vec(), value.to_vec()));
            content = rest;
        }
        assert!(content.is_empty());
        pairs
    }

    #[test]
    fn requests_carry_what_nginx_sends() {
        let get = nginx_request("GET", "/hello?x=1", "127.0.0.1:9000", b"", true);
        let want = fcgi_client::nginx_params(
            "GET",
            "/hello?x=1",
            &[
                ("Host".into(), "127.0.0.1:9000".into()),
                ("User-Agent".into(), "fcgi-loadtest".into()),
                ("Accept".into(), "*/*".into()),
            ],
            None,
        );
        assert_eq!(params_of(&get), want);
        let p = params_of(&get);
        let value = |name: &[u8]| p.iter().find(|(n, _)| n == name).map(|(_, v)| &v[..]);
        assert_eq!(value(b"CONTENT_LENGTH"), Some(&b""[..]));
        assert_eq!(value(b"HTTP_HOST"), Some(&b"127.0.0.1:9000"[..]));
        // No STDIN data record for an empty body.
        let params_end = 24 + p.iter().map(|(n, v)| 2 + n.len() + v.len()).sum::<usize>();
        assert_eq!(get.bytes().len(), params_end + 8 + 8);

        let post = nginx_request("POST", "/echo", "localhost", b"xyz", false);
        let p = params_of(&post);
        let value = |name: &[u8]| p.iter().find(|(n, _)| n == name).map(|(_, v)| &v[..]);
        assert_eq!(value(b"REQUEST_METHOD"), Some(&b"POST"[..]));
        assert_eq!(value(b"CONTENT_LENGTH"), Some(&b"3"[..]));
        assert_eq!(
            value(b"CONTENT_TYPE"),
            Some(&b"application/octet-stream"[..])
        );
        assert!(post.bytes().ends_with(&[
            1, 5, 0, 1, 0, 3, 0, 0, b'x', b'y', b'z', 1, 5, 0, 1, 0, 0, 0, 0
        ]));
        assert_eq!(post.bytes()[10], 0, "KEEP_CONN off");
    }

    pub(crate) fn response(id: u16, stdout: &[u8], status: ProtocolStatus) -> Vec<u8> {
        let mut out = Vec::new();
        encode_stream(&mut out, RecordType::Stdout, id, stdout);
        encode_stream_end(&mut out, RecordType::Stdout, id);
        encode_end_request(&mut out, id, 0, status);
        out
    }

    fn expect_hello() -> Expect {
        Expect {
            body: Some(Arc::from(&b"Hello, World!"[..])),
        }
    }

    const OK: &[u8] = b"Content-Type: text/plain\r\n\r\nHello, World!";

    /// Feeds `stream` cut at `cuts` the way the engine does (append, parse, drop consumed).
    fn feed_split(parser: &mut ResponseParser, stream: &[u8], cuts: &[usize]) -> Vec<Completion> {
        let mut done = Vec::new();
        let mut buf = Vec::new();
        let mut last = 0;
        for &cut in cuts.iter().chain([stream.len()].iter()) {
            buf.extend_from_slice(&stream[last..cut]);
            last = cut;
            let n = parser.parse(&buf, &mut done).unwrap();
            buf.drain(..n);
        }
        assert!(buf.is_empty());
        done
    }

    #[test]
    fn responses_parse_the_same_across_every_split() {
        let mut stream = response(1, OK, ProtocolStatus::RequestComplete);
        // Padding and STDERR must be skipped.
        stream.extend_from_slice(&[1, 7, 0, 2, 0, 1, 3, 0, b'e', 0, 0, 0]);
        stream.extend(response(
            2,
            b"Status: 500 Oops\r\n\r\n",
            ProtocolStatus::RequestComplete,
        ));
        stream.extend(response(3, OK, ProtocolStatus::Overloaded));
        stream.extend(response(4, b"\r\nHello", ProtocolStatus::RequestComplete));
        let want = vec![
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
                result: Err(Failure::Protocol),
            },
            Completion {
                slot: 4,
                result: Err(Failure::Body),
            },
        ];
        let new = || {
            let mut p = ResponseParser::new(4, expect_hello());
            (1..=4).for_each(|id| p.begin(id));
            p
        };
        assert_eq!(feed_split(&mut new(), &stream, &[]), want);
        for a in 0..stream.len() {
            assert_eq!(feed_split(&mut new(), &stream, &[a]), want, "cut at {a}");
        }
        // Pairs of cuts, on a coarser grid to keep the test fast.
        for a in (0..stream.len()).step_by(3) {
            for b in (a..stream.len()).step_by(5) {
                assert_eq!(
                    feed_split(&mut new(), &stream, &[a, b]),
                    want,
                    "cuts {a} {b}"
                );
            }
        }
        // Byte at a time.
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(feed_split(&mut new(), &stream, &every), want);
    }

    #[test]
    fn large_requests_are_prepared_for_each_id_exactly_as_appended() {
        let params = [(b"REQUEST_METHOD".to_vec(), b"POST".to_vec())];
        let large = RequestTemplate::new(&params, &vec![b'x'; PREPARE_MIN], true).prepare(3);
        for id in 1..=3 {
            let mut appended = Vec::new();
            large.append(&mut appended, id);
            assert_eq!(large.prepared(id), Some(&appended[..]), "id {id}");
        }
        assert_eq!(large.prepared(0), None);
        assert_eq!(large.prepared(4), None);
        let small = RequestTemplate::new(&params, b"xyz", true).prepare(3);
        assert_eq!(
            small.prepared(1),
            None,
            "small requests are copied, not prepared"
        );
    }

    #[test]
    fn stdout_is_taken_as_it_arrives_not_when_its_record_is_complete() {
        let body = vec![b'x'; 200_000];
        let stdout = [&b"Content-Type: a/b\r\n\r\n"[..], &body].concat();
        let stream = response(1, &stdout, ProtocolStatus::RequestComplete);
        let expect = Expect {
            body: Some(Arc::from(&body[..])),
        };
        let mut p = ResponseParser::new(1, expect);
        p.begin(1);
        let mut done = Vec::new();
        let mut at = 0;
        // Reads of 1000 bytes: each is consumed whole but for an incomplete record header or
        // END_REQUEST, so what the engine keeps never grows past one record header's worth.
        let mut kept = Vec::new();
        for piece in stream.chunks(1000) {
            kept.extend_from_slice(piece);
            let n = p.parse(&kept, &mut done).unwrap();
            kept.drain(..n);
            assert!(
                kept.len() < 2 * HEADER_LEN,
                "kept {} bytes at {at}",
                kept.len()
            );
            at += piece.len();
        }
        assert!(kept.is_empty());
        assert_eq!(
            done,
            [Completion {
                slot: 1,
                result: Ok(())
            }]
        );
    }

    #[test]
    fn records_for_ids_not_in_flight_are_violations() {
        let mut p = ResponseParser::new(1, Expect::default());
        let mut done = Vec::new();
        let r = response(1, OK, ProtocolStatus::RequestComplete);
        assert!(p.parse(&r, &mut done).is_err());
        p.begin(1);
        assert_eq!(p.parse(&r, &mut done), Ok(r.len()));
        // A second END_REQUEST for the same id.
        assert!(p.parse(&r, &mut done).is_err());
        let mut bad_version = r.clone();
        bad_version[0] = 2;
        assert!(p.parse(&bad_version, &mut done).is_err());
    }

    #[test]
    fn management_values_round_trip() {
        let mut content = Vec::new();
        encode_pair(&mut content, b"FCGI_MPXS_CONNS", b"1");
        encode_pair(&mut content, b"FCGI_MAX_REQS", b"100");
        encode_pair(&mut content, b"OTHER", &[b'x'; 200]);
        let v = parse_values(&content);
        assert_eq!(
            v,
            ManagementValues {
                max_conns: None,
                max_reqs: Some(100),
                mpxs_conns: Some(true)
            }
        );
        assert_eq!(
            parse_values(&content[..content.len() - 1]).mpxs_conns,
            Some(true)
        );
        let mut get = Vec::new();
        encode_get_values(&mut get);
        assert_eq!(&get[..4], &[1, 9, 0, 0]);
    }
}
