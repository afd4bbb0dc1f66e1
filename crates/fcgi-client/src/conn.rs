//! The connection: sockets, record IO, requests.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use super::response::{Response, Responses};
use fcgi_proto::Addr;
use fcgi_proto::RecordType;
use fcgi_proto::nv::encode_pair;
use fcgi_proto::record::{
    EndRequestBody, HEADER_LEN, Header, MAX_CONTENT_LEN, NULL_REQUEST_ID, encode_abort_request,
    encode_begin_request, encode_record, encode_stream, encode_stream_end,
};

/// Requests larger than this are written by a second thread while the reply is read, so that
/// neither side can block the other on full socket buffers.
const INLINE_WRITE_LIMIT: usize = 256 * 1024;

/// A request's writer that wrote nothing for this long after its answer came is stuck on an
/// application that stopped reading the body.
const WRITE_STALL: Duration = Duration::from_millis(250);

/// The error (inside an `io::Error` of kind `InvalidData`, found with
/// `e.get_ref().and_then(|e| e.downcast_ref::<HttpAnswer>())`) when the peer answered with
/// HTTP: the address is an HTTP port (an admin listener, a web server), not a FastCGI one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The answer's first line, e.g. `HTTP/1.1 400 Bad Request`.
    pub status_line: String,
}

impl std::fmt::Display for HttpAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the peer answered with HTTP, not FastCGI ({:?})",
            self.status_line
        )
    }
}

impl std::error::Error for HttpAnswer {}

/// One record as read from the application (padding skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub header: Header,
    pub content: Vec<u8>,
}

impl Record {
    /// A version-1 record without padding; `content` must fit one record (65535 bytes).
    pub fn new(record_type: RecordType, request_id: u16, content: Vec<u8>) -> Record {
        debug_assert!(content.len() <= MAX_CONTENT_LEN);
        let len = u16::try_from(content.len()).unwrap_or(u16::MAX);
        Record {
            header: Header::new(record_type, request_id, len),
            content,
        }
    }

    /// The record's type, `None` for a type byte FastCGI 1.0 does not define.
    pub fn record_type(&self) -> Option<RecordType> {
        self.header.known_type()
    }

    /// The request id.
    pub fn id(&self) -> u16 {
        self.header.request_id
    }

    /// The END_REQUEST body, if this is a well-formed END_REQUEST.
    pub fn end_request(&self) -> Option<EndRequestBody> {
        if self.record_type() != Some(RecordType::EndRequest) {
            return None;
        }
        let body: &[u8; 8] = self.content.get(..8)?.try_into().ok()?;
        Some(EndRequestBody::parse(body))
    }
}

/// A request to send: params as nginx would build them ([`super::nginx_params`]) followed by
/// `extra_params` (so an extra param with the same name as an nginx one wins for a last-wins
/// reader), the body as STDIN records of `stdin_chunk` bytes, then the empty STDIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    pub method: String,
    /// Request URI: path and query as a client sends them, e.g. `/hello?x=1`.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_conn: bool,
    /// Raw role number (1 RESPONDER, 2 AUTHORIZER, 3 FILTER; others to test UNKNOWN_ROLE).
    pub role: u16,
    pub extra_params: Vec<(Vec<u8>, Vec<u8>)>,
    /// STDIN record size, clamped to 1..=65535 (default 32768, as nginx with a buffered body).
    pub stdin_chunk: usize,
}

impl RequestSpec {
    /// A GET without body, RESPONDER role, KEEP_CONN off (nginx's default).
    pub fn get(uri: &str) -> RequestSpec {
        RequestSpec {
            method: "GET".to_owned(),
            uri: uri.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            keep_conn: false,
            role: 1,
            extra_params: Vec::new(),
            stdin_chunk: 32 * 1024,
        }
    }

    /// A POST of `body`.
    pub fn post(uri: &str, body: impl Into<Vec<u8>>) -> RequestSpec {
        RequestSpec {
            method: "POST".to_owned(),
            body: body.into(),
            ..RequestSpec::get(uri)
        }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: &str, value: &str) -> RequestSpec {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Every param this request sends, in order.
    pub fn params(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut params = super::nginx_params(
            &self.method,
            &self.uri,
            &self.headers,
            Some(self.body.len()),
        );
        params.extend(self.extra_params.iter().cloned());
        params
    }

    /// Appends the request's records on `id`: BEGIN_REQUEST, PARAMS (split at 65535 bytes,
    /// wherever that falls), the empty PARAMS, STDIN records and the empty STDIN.
    pub fn encode(&self, id: u16, out: &mut Vec<u8>) {
        encode_begin_request(out, id, self.role, self.keep_conn);
        let mut params = Vec::new();
        for (name, value) in self.params() {
            encode_pair(&mut params, &name, &value);
        }
        encode_stream(out, RecordType::Params, id, &params);
        encode_stream_end(out, RecordType::Params, id);
        let chunk = self.stdin_chunk.clamp(1, MAX_CONTENT_LEN);
        for piece in self.body.chunks(chunk) {
            encode_record(out, RecordType::Stdin, id, piece);
        }
        encode_stream_end(out, RecordType::Stdin, id);
    }
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blocking connection to a FastCGI application.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<Stream>,
}

impl Client {
    /// Connects over TCP (with TCP_NODELAY) or a UNIX socket. The error names the address.
    pub fn connect(addr: &Addr) -> io::Result<Client> {
        let context = |e: io::Error| io::Error::new(e.kind(), format!("connect to {addr}: {e}"));
        let stream = match addr {
            Addr::Tcp(sa) => {
                let s = TcpStream::connect(sa).map_err(context)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Addr::Unix(path) => Stream::Unix(UnixStream::connect(path).map_err(context)?),
        };
        Ok(Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
        })
    }

    /// A client on a TCP connection made elsewhere (from a chosen source address, say); sets
    /// TCP_NODELAY.
    pub fn from_tcp(stream: TcpStream) -> io::Result<Client> {
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::with_capacity(64 * 1024, Stream::Tcp(stream)),
        })
    }

    /// A second handle on the same connection (for a writer thread while this one reads).
    pub fn try_clone(&self) -> io::Result<Client> {
        Ok(Client {
            reader: BufReader::with_capacity(64 * 1024, self.reader.get_ref().try_clone()?),
        })
    }

    /// Read timeout for every later read (`None`: wait forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self.reader.get_ref() {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// Write timeout for every later write (`None`: wait forever).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self.reader.get_ref() {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    /// Writes bytes as they are (for tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Closes the sending half: the application sees EOF after what was sent.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.reader.get_ref().shutdown(Shutdown::Write)
    }

    /// Reads one record; `Ok(None)` on a clean EOF (before any byte of a header). EOF inside a
    /// record is `UnexpectedEof`.
    pub fn read_record(&mut self) -> io::Result<Option<Record>> {
        let mut head = [0u8; HEADER_LEN];
        let mut filled = 0;
        while filled < HEADER_LEN {
            match self.reader.read(&mut head[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a record header",
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if head.starts_with(b"HTTP/") {
            return Err(self.http_answer(&head));
        }
        let header = Header::parse(&head);
        let mut content = vec![0u8; usize::from(header.content_length)];
        self.reader.read_exact(&mut content)?;
        let mut padding = [0u8; 255];
        self.reader
            .read_exact(&mut padding[..usize::from(header.padding_length)])?;
        Ok(Some(Record { header, content }))
    }

    /// The error for a peer that answered with HTTP (`head`, its first bytes, begin with
    /// `HTTP/`): an [`HttpAnswer`] naming its status line, read on up to its end (at most 200
    /// bytes, as far as they come).
    fn http_answer(&mut self, head: &[u8]) -> io::Error {
        let mut line = head.to_vec();
        let mut byte = [0u8; 1];
        while line.len() < 200 && !line.ends_with(b"\n") {
            match self.reader.read(&mut byte) {
                Ok(1) => line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
        let status_line = String::from_utf8_lossy(&line).trim_end().to_owned();
        io::Error::new(io::ErrorKind::InvalidData, HttpAnswer { status_line })
    }

    /// Sends a whole request on `id` without waiting for the answer (several may be in
    /// flight; read them with [`Client::collect`]).
    pub fn begin(&mut self, spec: &RequestSpec, id: u16) -> io::Result<()> {
        let mut out = Vec::with_capacity(spec.body.len() + 1024);
        spec.encode(id, &mut out);
        self.send_raw(&out)
    }

    /// Sends FCGI_ABORT_REQUEST for `id`.
    pub fn abort(&mut self, id: u16) -> io::Result<()> {
        let mut out = Vec::new();
        encode_abort_request(&mut out, id);
        self.send_raw(&out)
    }

    /// Reads records into `responses` until every id of `ids` has its END_REQUEST.
    /// EOF before that is `UnexpectedEof`.
    pub fn collect(&mut self, responses: &mut Responses, ids: &[u16]) -> io::Result<()> {
        while !ids.iter().all(|&id| responses.is_ended(id)) {
            match self.read_record()? {
                Some(record) => {
                    responses.push(record);
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before END_REQUEST",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sends `spec` as request 1 and waits for its END_REQUEST. Records for other ids and
    /// management records are ignored. A large request is written by a second thread while
    /// the answer is read; if the application answered without reading the whole body (the
    /// writer makes no progress for `WRITE_STALL` (250 ms) after the answer), the sending half is
    /// shut down to end that write (the connection is then not reusable).
    pub fn request(&mut self, spec: &RequestSpec) -> io::Result<Response> {
        const ID: u16 = 1;
        let mut out = Vec::with_capacity(spec.body.len() + 1024);
        spec.encode(ID, &mut out);
        let mut responses = Responses::new();
        if out.len() <= INLINE_WRITE_LIMIT {
            self.send_raw(&out)?;
            self.collect(&mut responses, &[ID])?;
        } else {
            let mut writer = self.reader.get_ref().try_clone()?;
            let (progress, moved) = mpsc::channel();
            let read = std::thread::scope(|scope| {
                let sending = scope.spawn(move || write_reporting(&mut writer, &out, progress));
                let read = self.collect(&mut responses, &[ID]);
                // The answer may come before the writer, whose bytes the kernel has taken,
                // runs again to finish: only a writer that stopped moving is stuck. Each piece
                // written is a message; the writer's end drops the sender.
                loop {
                    match moved.recv_timeout(WRITE_STALL) {
                        Ok(()) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let _ = self.shutdown_write();
                            break;
                        }
                    }
                }
                let sent = sending
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("writer thread panicked")));
                // An answer that came while the body was refused is still the answer.
                read.and(if responses.is_ended(ID) { Ok(()) } else { sent })
            });
            read?;
        }
        match responses.take(ID) {
            Some(exchange) => exchange.response(),
            None => Err(io::Error::other("no END_REQUEST")),
        }
    }

    /// Sends FCGI_GET_VALUES (spec 4.1) for `names` and returns the GET_VALUES_RESULT pairs.
    /// Other records arriving first are skipped; FCGI_UNKNOWN_TYPE is an error.
    pub fn get_values(&mut self, names: &[&str]) -> io::Result<Vec<(String, String)>> {
        let mut body = Vec::new();
        for name in names {
            encode_pair(&mut body, name.as_bytes(), b"");
        }
        if body.len() > MAX_CONTENT_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "GET_VALUES names do not fit one record",
            ));
        }
        let mut out = Vec::new();
        encode_record(&mut out, RecordType::GetValues, NULL_REQUEST_ID, &body);
        self.send_raw(&out)?;
        loop {
            let Some(record) = self.read_record()? else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before GET_VALUES_RESULT",
                ));
            };
            match record.record_type() {
                Some(RecordType::GetValuesResult) => {
                    return Ok(decode_pairs(&record.content)?
                        .into_iter()
                        .map(|(n, v)| {
                            (
                                String::from_utf8_lossy(&n).into_owned(),
                                String::from_utf8_lossy(&v).into_owned(),
                            )
                        })
                        .collect());
                }
                Some(RecordType::UnknownType) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "application answered GET_VALUES with UNKNOWN_TYPE",
                    ));
                }
                _ => {}
            }
        }
    }
}

/// Decodes whole name-value pairs (spec 3.4) from one record's content. Lengths are checked
/// against the remaining bytes before slicing, so nothing is allocated beyond the input.
pub(crate) fn decode_pairs(mut input: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    fn length(input: &mut &[u8]) -> Option<usize> {
        let first = *input.first()?;
        if first < 0x80 {
            *input = &input[1..];
            return Some(usize::from(first));
        }
        let bytes: [u8; 4] = input.get(..4)?.try_into().ok()?;
        *input = &input[4..];
        usize::try_from(u32::from_be_bytes(bytes) & 0x7FFF_FFFF).ok()
    }
    let truncated = || io::Error::new(io::ErrorKind::InvalidData, "truncated name-value pair");
    let mut pairs = Vec::new();
    while !input.is_empty() {
        let name_len = length(&mut input).ok_or_else(truncated)?;
        let value_len = length(&mut input).ok_or_else(truncated)?;
        if input.len() < name_len || input.len() - name_len < value_len {
            return Err(truncated());
        }
        let (name, rest) = input.split_at(name_len);
        let (value, rest) = rest.split_at(value_len);
        pairs.push((name.to_vec(), value.to_vec()));
        input = rest;
    }
    Ok(pairs)
}

/// Writes `out` in pieces, sending a message on `progress` each time the kernel took one
/// (the receiver may be gone: the messages are then only dropped).
fn write_reporting(w: &mut impl Write, out: &[u8], progress: mpsc::Sender<()>) -> io::Result<()> {
    for piece in out.chunks(64 * 1024) {
        w.write_all(piece)?;
        let _ = progress.send(());
    }
    Ok(())
}
