//! The per-connection protocol state machine (spec 3, 4, 5, 6).
//!
//! Feed it received bytes cut anywhere; it emits [`Event`]s for the application and appends the
//! protocol's own answers (GET_VALUES_RESULT, UNKNOWN_TYPE, END_REQUEST with UNKNOWN_ROLE or
//! OVERLOADED) to the caller's output buffer. The application answers a request with the
//! encoders in [`super::record`] and ends it with [`Connection::end_request`], which guarantees
//! exactly one END_REQUEST per request.
//!
//! Guarantees:
//! - The events and output bytes do not depend on how the input was cut (header, content,
//!   padding and name-value length prefixes may all straddle calls). STDIN and DATA content is
//!   handed out as borrowed, never empty, slices of the input as it arrives.
//! - Exactly one END_REQUEST is written per activation of a request id, whoever ends it (the
//!   application through [`Connection::end_request`], or this layer for an abort before dispatch
//!   or a params limit). A BEGIN_REQUEST refused at once (unknown role, too many requests) gets
//!   its one END_REQUEST and never becomes active.
//! - Memory is bounded by [`Limits`]: at most `max_requests_per_conn` requests are tracked, each
//!   holding at most `max_params_bytes` of params; a GET_VALUES body is bounded by its record
//!   (64 KiB); everything else is streamed.
//! - No panics, no IO, no clock. After a [`ProtocolError`] the connection must be closed; later
//!   calls to [`Connection::receive`] return the same error.
//!
//! Policies the spec leaves open:
//! - BEGIN_REQUEST on an active id is a [`ProtocolError::DuplicateBegin`]: the peer and we no
//!   longer agree on that request's state, and neither continuing the old request nor starting
//!   a new one can be answered with the one END_REQUEST the peer expects, so the connection is
//!   closed (the peer then sees every open request fail, which it can retry).
//! - Any END_REQUEST written for a request whose BEGIN had KEEP_CONN = 0 (including a refusal
//!   or an abort before dispatch) makes [`Connection::should_close`] true (spec 5.1: the
//!   application closes the connection after responding to such a request); from then on new
//!   BEGIN_REQUESTs are ignored while active requests go on.
//! - GET_VALUES (spec 4.1) is answered at the end of its record with the known names in the
//!   order asked, each once. A malformed body (a pair cut by the record's end, or more than
//!   [`GET_VALUES_MAX_PAIRS`] pairs) is answered with the pairs decoded before the fault.

use super::nv::{NvDecoder, NvError, NvLimits, encode_pair};
use super::params::{Params, ParamsBuilder};
use super::record::{
    self, BEGIN_BODY_LEN, BeginRequestBody, HEADER_LEN, Header, MAX_CONTENT_LEN, ProtocolStatus,
    RecordType, Role, VERSION_1,
};

/// Most pairs decoded from one GET_VALUES record (the spec defines three names).
pub const GET_VALUES_MAX_PAIRS: usize = 64;

/// Bounds and advertised values for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Params name+value bytes per request.
    pub max_params_bytes: usize,
    /// Params pairs per request.
    pub max_params_pairs: usize,
    /// Longest params name.
    pub max_name_len: usize,
    /// Longest params value.
    pub max_value_len: usize,
    /// Requests active at once on this connection; a BEGIN past it gets OVERLOADED.
    pub max_requests_per_conn: usize,
    /// Advertised as FCGI_MAX_CONNS in GET_VALUES_RESULT.
    pub advertised_max_conns: u32,
    /// Advertised as FCGI_MAX_REQS in GET_VALUES_RESULT.
    pub advertised_max_reqs: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_params_bytes: 128 * 1024,
            max_params_pairs: 1024,
            max_name_len: 1024,
            max_value_len: 64 * 1024,
            max_requests_per_conn: 256,
            advertised_max_conns: 10_000,
            advertised_max_reqs: 100_000,
        }
    }
}

/// What the application must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The PARAMS stream of a new request is complete: dispatch it.
    Request {
        id: u16,
        role: Role,
        keep_conn: bool,
        params: Params,
    },
    /// STDIN bytes for request `id` (never empty).
    Stdin { id: u16, data: &'a [u8] },
    /// STDIN of request `id` ended (empty STDIN record).
    StdinEnd { id: u16 },
    /// DATA bytes (FILTER role) for request `id` (never empty).
    Data { id: u16, data: &'a [u8] },
    /// DATA of request `id` ended.
    DataEnd { id: u16 },
    /// The peer sent ABORT_REQUEST for a dispatched request: cancel the handler and call
    /// [`Connection::end_request`]. Its later STDIN and DATA are ignored.
    Abort { id: u16 },
    /// Informational: this layer answered request `id` with END_REQUEST itself (OVERLOADED or
    /// UNKNOWN_ROLE); the request was never dispatched, or is no longer tracked. For logging
    /// and counting only.
    Rejected { id: u16, reason: RejectReason },
}

/// Why this layer refused a request (see [`Event::Rejected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// BEGIN_REQUEST with an undefined role (answered UNKNOWN_ROLE).
    UnknownRole(u16),
    /// BEGIN_REQUEST while `max_requests_per_conn` were active (answered OVERLOADED).
    TooManyRequests,
    /// A params name longer than `max_name_len` (answered OVERLOADED).
    ParamNameTooLong,
    /// A params value longer than `max_value_len` (answered OVERLOADED).
    ParamValueTooLong,
    /// More than `max_params_bytes` of params (answered OVERLOADED).
    ParamsTooLarge,
    /// More than `max_params_pairs` params (answered OVERLOADED).
    TooManyParams,
}

impl RejectReason {
    /// The reason for a params limit error; `None` for a truncated stream, which is not a limit.
    fn from_nv(error: NvError) -> Option<RejectReason> {
        match error {
            NvError::NameTooLong { .. } => Some(RejectReason::ParamNameTooLong),
            NvError::ValueTooLong { .. } => Some(RejectReason::ParamValueTooLong),
            NvError::TooManyBytes => Some(RejectReason::ParamsTooLarge),
            NvError::TooManyPairs => Some(RejectReason::TooManyParams),
            NvError::Truncated => None,
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::UnknownRole(role) => write!(f, "unknown role {role}"),
            RejectReason::TooManyRequests => f.write_str("too many requests on the connection"),
            RejectReason::ParamNameTooLong => f.write_str("params name too long"),
            RejectReason::ParamValueTooLong => f.write_str("params value too long"),
            RejectReason::ParamsTooLarge => f.write_str("params too large"),
            RejectReason::TooManyParams => f.write_str("too many params"),
        }
    }
}

/// A violation after which the connection must be closed (after flushing output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    BadVersion(u8),
    BadBeginLength(u16),
    DuplicateBegin(u16),
    Params { id: u16, error: NvError },
    StdinBeforeParams(u16),
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::BadVersion(v) => write!(f, "FastCGI version {v} is not 1"),
            ProtocolError::BadBeginLength(len) => {
                write!(f, "BEGIN_REQUEST body of {len} bytes, expected 8")
            }
            ProtocolError::DuplicateBegin(id) => {
                write!(f, "BEGIN_REQUEST for request {id}, which is already active")
            }
            ProtocolError::Params { id, error } => write!(f, "request {id}: {error}"),
            ProtocolError::StdinBeforeParams(id) => {
                write!(f, "request {id}: STDIN or DATA before the end of PARAMS")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}


/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    limits: Limits,
    input: Input,
    requests: Table,
    max_active_seen: usize,
    /// A request without KEEP_CONN has been answered (spec 5.1).
    closing: bool,
    /// Sticky: the connection must be closed.
    failed: Option<ProtocolError>,
}

/// Where the reader is in the record stream (spec 3.3).
#[derive(Debug)]
enum Input {
    /// Reading a header; `have` bytes of it are in `bytes`.
    Header {
        bytes: [u8; HEADER_LEN],
        have: u8,
    },
    /// Reading `left` content bytes into `sink`, then `padding` bytes to skip.
    Content { sink: Sink, left: u16, padding: u8 },
    /// Skipping `left` padding bytes (spec 3.3: paddingLength).
    Padding { left: u8 },
}

impl Input {
    const START: Input = Input::Header {
        bytes: [0; HEADER_LEN],
        have: 0,
    };
}

/// What the content of the current record is for, decided from its header.
#[derive(Debug)]
enum Sink {
    /// Ignored (inactive id, type not for the application, stream already ended).
    Skip,
    /// BEGIN_REQUEST body being collected (spec 5.1).
    Begin {
        id: u16,
        body: [u8; BEGIN_BODY_LEN],
        have: u8,
    },
    /// GET_VALUES body being decoded (spec 4.1). Rare: boxed to keep `Input` small.
    GetValues(Box<GetValues>),
    /// PARAMS content of a request reading params (spec 5.2).
    Params(u16),
    /// STDIN content of a dispatched request (spec 5.3).
    Stdin(u16),
    /// DATA content of a dispatched request (spec 5.3, 6.4).
    Data(u16),
}

/// The two input streams after PARAMS (spec 5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdin,
    Data,
}

/// One active request.
#[derive(Debug)]
struct Request {
    id: u16,
    role: Role,
    keep_conn: bool,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// PARAMS stream still open.
    ReadingParams {
        decoder: NvDecoder,
        builder: ParamsBuilder,
    },
    /// `Event::Request` emitted; the streams still open are accepted.
    Dispatched { stdin_open: bool, data_open: bool },
    /// `Event::Abort` emitted; waiting for `end_request`, input ignored.
    Aborted,
}

impl Connection {
    pub fn new(limits: Limits) -> Connection {
        Connection {
            limits,
            input: Input::START,
            requests: Table::default(),
            max_active_seen: 0,
            closing: false,
            failed: None,
        }
    }

    /// Feeds received bytes; see the module doc.
    pub fn receive(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let result = self.run(input, out, on_event);
        if let Err(error) = result {
            self.failed = Some(error);
        }
        result
    }

    /// Ends request `id`: appends END_REQUEST (REQUEST_COMPLETE, `app_status`) and makes the id
    /// inactive. Returns false, writing nothing, if `id` is not active.
    pub fn end_request(&mut self, id: u16, app_status: u32, out: &mut Vec<u8>) -> bool {
        match self.requests.remove(id) {
            Some(request) => {
                self.write_end(
                    id,
                    request.keep_conn,
                    app_status,
                    ProtocolStatus::RequestComplete,
                    out,
                );
                true
            }
            None => false,
        }
    }

    /// Requests active now.
    pub fn active_requests(&self) -> usize {
        self.requests.len()
    }

    /// Most requests seen active at once on this connection.
    pub fn max_active_seen(&self) -> usize {
        self.max_active_seen
    }

    /// A request without KEEP_CONN has ended: close after flushing output.
    pub fn should_close(&self) -> bool {
        self.closing
    }

    /// Whether request `id` is active (begun and not yet ended).
    pub fn is_active(&self, id: u16) -> bool {
        self.requests.get(id).is_some()
    }

    /// The limits this connection was made with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs the reader over `input` until it is consumed and no record can complete without
    /// more bytes (so an empty record at the end of `input` is acted on now).
    fn run(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        loop {
            self.input = match std::mem::replace(&mut self.input, Input::START) {
                Input::Header { bytes, have } => {
                    if input.is_empty() {
                        self.input = Input::Header { bytes, have };
                        return Ok(());
                    }
                    match read_header(&mut input, bytes, have) {
                        Ok(header) => self.start_record(header, out, on_event)?,
                        Err(partial) => partial,
                    }
                }
                Input::Content {
                    sink,
                    left: 0,
                    padding,
                } => {
                    self.end_content(sink, out, on_event)?;
                    Input::Padding { left: padding }
                }
                Input::Content {
                    sink,
                    left,
                    padding,
                } => {
                    if input.is_empty() {
                        self.input = Input::Content {
                            sink,
                            left,
                            padding,
                        };
                        return Ok(());
                    }
                    let chunk = take(&mut input, usize::from(left));
                    let sink = self.content(sink, chunk, out, on_event)?;
                    let left = left.saturating_sub(u16::try_from(chunk.len()).unwrap_or(left));
                    Input::Content {
                        sink,
                        left,
                        padding,
                    }
                }
                Input::Padding { left: 0 } => Input::START,
                Input::Padding { left } => {
                    if input.is_empty() {
                        self.input = Input::Padding { left };
                        return Ok(());
                    }
                    let skipped = take(&mut input, usize::from(left)).len();
                    let left = left.saturating_sub(u8::try_from(skipped).unwrap_or(left));
                    Input::Padding { left }
                }
            };
        }
    }

    /// Acts on a complete header: answers what needs no content, and decides what the
    /// content is for.
    fn start_record(
        &mut self,
        header: Header,
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<Input, ProtocolError> {
        // Spec 3.3: FCGI_VERSION_1 is the only version.
        if header.version != VERSION_1 {
            return Err(ProtocolError::BadVersion(header.version));
        }
        let sink = if header.request_id == record::NULL_REQUEST_ID {
            self.management_record(header, out)
        } else {
            self.application_record(header, out, on_event)?
        };
        Ok(Input::Content {
            sink,
            left: header.content_length,
            padding: header.padding_length,
        })
    }

    /// Spec 4: records on request id 0.
    fn management_record(&mut self, header: Header, out: &mut Vec<u8>) -> Sink {
        if header.known_type() == Some(RecordType::GetValues) {
            Sink::GetValues(Box::default())
        } else {
            // Spec 4.2: any other type on id 0, even one defined for application records.
            record::encode_unknown_type(out, header.record_type);
            Sink::Skip
        }
    }

    /// Spec 5: records on a non-zero request id.
    fn application_record(
        &mut self,
        header: Header,
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<Sink, ProtocolError> {
        let id = header.request_id;
        let len = header.content_length;
        match header.known_type() {
            Some(RecordType::BeginRequest) => {
                if usize::from(len) != BEGIN_BODY_LEN {
                    return Err(ProtocolError::BadBeginLength(len));
                }
                Ok(Sink::Begin {
                    id,
                    body: [0; BEGIN_BODY_LEN],
                    have: 0,
                })
            }
            Some(RecordType::AbortRequest) => {
                self.abort(id, out, on_event);
                Ok(Sink::Skip)
            }
            Some(RecordType::Params) => self.params_record(id, len, on_event),
            Some(RecordType::Stdin) => self.stream_record(id, len, Stream::Stdin, on_event),
            Some(RecordType::Data) => self.stream_record(id, len, Stream::Data, on_event),
            // Management types off id 0, types the application sends (END_REQUEST, STDOUT,
            // STDERR) and undefined types: ignored (spec 3.3 says records for a request the
            // application does not expect are ignored).
            _ => Ok(Sink::Skip),
        }
    }

    /// Hands a piece of the current record's content to its sink; returns the sink for the
    /// rest of the content.
    fn content(
        &mut self,
        sink: Sink,
        chunk: &[u8],
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<Sink, ProtocolError> {
        Ok(match sink {
            Sink::Skip => Sink::Skip,
            Sink::Begin { id, body, have } => collect_begin(id, body, have, chunk),
            Sink::GetValues(mut values) => {
                values.feed(chunk);
                Sink::GetValues(values)
            }
            Sink::Params(id) => self.params_content(id, chunk, out, on_event)?,
            Sink::Stdin(id) => self.stream_content(id, Stream::Stdin, chunk, on_event),
            Sink::Data(id) => self.stream_content(id, Stream::Data, chunk, on_event),
        })
    }

    /// The current record's content is complete.
    fn end_content(
        &mut self,
        sink: Sink,
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        match sink {
            Sink::Begin { id, body, .. } => self.begin(id, body, out, on_event),
            Sink::GetValues(mut values) => {
                values.answer(&self.limits, out);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Spec 5.1: FCGI_BEGIN_REQUEST.
    fn begin(
        &mut self,
        id: u16,
        body: [u8; BEGIN_BODY_LEN],
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        if self.closing {
            return Ok(());
        }
        if self.is_active(id) {
            return Err(ProtocolError::DuplicateBegin(id));
        }
        let body = BeginRequestBody::parse(&body);
        let Some(role) = Role::from_u16(body.role) else {
            let reason = RejectReason::UnknownRole(body.role);
            self.refuse(id, body.keep_conn, ProtocolStatus::UnknownRole, reason, out, on_event);
            return Ok(());
        };
        if self.requests.len() >= self.limits.max_requests_per_conn {
            let reason = RejectReason::TooManyRequests;
            self.refuse(id, body.keep_conn, ProtocolStatus::Overloaded, reason, out, on_event);
            return Ok(());
        }
        self.requests.insert(Request {
            id,
            role,
            keep_conn: body.keep_conn,
            phase: Phase::ReadingParams {
                decoder: NvDecoder::new(self.nv_limits()),
                builder: ParamsBuilder::new(),
            },
        });
        self.max_active_seen = self.max_active_seen.max(self.requests.len());
        Ok(())
    }

    /// Spec 5.4: FCGI_ABORT_REQUEST.
    fn abort(&mut self, id: u16, out: &mut Vec<u8>, on_event: &mut impl FnMut(Event<'_>)) {
        let Some(request) = self.requests.get_mut(id) else {
            return;
        };
        match request.phase {
            Phase::ReadingParams { .. } => {
                // Not dispatched: the application never heard of it, so this layer ends it.
                let keep_conn = request.keep_conn;
                self.requests.remove(id);
                self.write_end(id, keep_conn, 0, ProtocolStatus::RequestComplete, out);
            }
            Phase::Dispatched { .. } => {
                request.phase = Phase::Aborted;
                on_event(Event::Abort { id });
            }
            Phase::Aborted => {}
        }
    }

    /// Spec 5.2: the header of a PARAMS record.
    fn params_record(
        &mut self,
        id: u16,
        len: u16,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<Sink, ProtocolError> {
        let limits = self.limits;
        let Some(request) = self.requests.get_mut(id) else {
            return Ok(Sink::Skip);
        };
        let Phase::ReadingParams { decoder, builder } = &mut request.phase else {
            // The stream has ended: later PARAMS are ignored.
            return Ok(Sink::Skip);
        };
        if len > 0 {
            let len = usize::from(len);
            let bytes = len.min(limits.max_params_bytes.saturating_sub(builder.byte_len()));
            let pairs = (len / 16 + 1)
                .min(limits.max_params_pairs.saturating_sub(builder.pair_count()));
            builder.reserve(bytes, pairs);
            return Ok(Sink::Params(id));
        }
        // Spec 3.3, Streams: the empty record ends the stream.
        decoder
            .finish()
            .map_err(|error| ProtocolError::Params { id, error })?;
        let params = std::mem::take(builder).finish();
        request.phase = Phase::Dispatched {
            stdin_open: true,
            data_open: true,
        };
        on_event(Event::Request {
            id,
            role: request.role,
            keep_conn: request.keep_conn,
            params,
        });
        Ok(Sink::Skip)
    }

    /// PARAMS content: decoded into the request's params, or the request refused at the
    /// first limit exceeded.
    fn params_content(
        &mut self,
        id: u16,
        chunk: &[u8],
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<Sink, ProtocolError> {
        let Some(Request {
            phase: Phase::ReadingParams { decoder, builder },
            keep_conn,
            ..
        }) = self.requests.get_mut(id)
        else {
            return Ok(Sink::Skip);
        };
        let Err(error) = decoder.feed(chunk, builder) else {
            return Ok(Sink::Params(id));
        };
        let Some(reason) = RejectReason::from_nv(error) else {
            return Err(ProtocolError::Params { id, error });
        };
        let keep_conn = *keep_conn;
        self.requests.remove(id);
        self.refuse(id, keep_conn, ProtocolStatus::Overloaded, reason, out, on_event);
        Ok(Sink::Skip)
    }

    /// Spec 5.3: the header of a STDIN or DATA record.
    fn stream_record(
        &mut self,
        id: u16,
        len: u16,
        stream: Stream,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<Sink, ProtocolError> {
        let Some(request) = self.requests.get_mut(id) else {
            return Ok(Sink::Skip);
        };
        let open = match &mut request.phase {
            Phase::ReadingParams { .. } => return Err(ProtocolError::StdinBeforeParams(id)),
            Phase::Aborted => return Ok(Sink::Skip),
            Phase::Dispatched { stdin_open, .. } if stream == Stream::Stdin => stdin_open,
            Phase::Dispatched { data_open, .. } => data_open,
        };
        if !*open {
            return Ok(Sink::Skip);
        }
        if len > 0 {
            return Ok(match stream {
                Stream::Stdin => Sink::Stdin(id),
                Stream::Data => Sink::Data(id),
            });
        }
        // Spec 3.3, Streams: the empty record ends the stream, once.
        *open = false;
        on_event(match stream {
            Stream::Stdin => Event::StdinEnd { id },
            Stream::Data => Event::DataEnd { id },
        });
        Ok(Sink::Skip)
    }

    /// STDIN or DATA content, passed on while the request still takes it.
    fn stream_content(
        &mut self,
        id: u16,
        stream: Stream,
        chunk: &[u8],
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Sink {
        let Some(Request {
            phase:
                Phase::Dispatched {
                    stdin_open,
                    data_open,
                },
            ..
        }) = self.requests.get(id)
        else {
            // Ended by the application or aborted since the header.
            return Sink::Skip;
        };
        match stream {
            Stream::Stdin if *stdin_open => {
                on_event(Event::Stdin { id, data: chunk });
                Sink::Stdin(id)
            }
            Stream::Data if *data_open => {
                on_event(Event::Data { id, data: chunk });
                Sink::Data(id)
            }
            _ => Sink::Skip,
        }
    }

    /// Answers a request this layer will not run: its one END_REQUEST, and an event to log.
    fn refuse(
        &mut self,
        id: u16,
        keep_conn: bool,
        status: ProtocolStatus,
        reason: RejectReason,
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) {
        self.write_end(id, keep_conn, 0, status, out);
        on_event(Event::Rejected { id, reason });
    }

    /// Spec 5.5: the one END_REQUEST of a request; spec 5.1: without KEEP_CONN the connection
    /// closes after it.
    fn write_end(
        &mut self,
        id: u16,
        keep_conn: bool,
        app_status: u32,
        status: ProtocolStatus,
        out: &mut Vec<u8>,
    ) {
        record::encode_end_request(out, id, app_status, status);
        if !keep_conn {
            self.closing = true;
        }
    }

    fn nv_limits(&self) -> NvLimits {
        NvLimits {
            max_name_len: self.limits.max_name_len,
            max_value_len: self.limits.max_value_len,
            max_total_bytes: self.limits.max_params_bytes,
            max_pairs: self.limits.max_params_pairs,
        }
    }
}

/// Reads header bytes from `input`: the header once complete, else the partial state.
fn read_header(
    input: &mut &[u8],
    mut bytes: [u8; HEADER_LEN],
    have: u8,
) -> Result<Header, Input> {
    if have == 0 {
        // Common case: the whole header is in this input.
        if let Some((whole, rest)) = input.split_first_chunk::<HEADER_LEN>() {
            *input = rest;
            return Ok(Header::parse(whole));
        }
    }
    let have = usize::from(have).min(HEADER_LEN);
    let piece = take(input, HEADER_LEN - have);
    if let Some(slot) = bytes.get_mut(have..have + piece.len()) {
        slot.copy_from_slice(piece);
    }
    let have = have + piece.len();
    if have == HEADER_LEN {
        Ok(Header::parse(&bytes))
    } else {
        Err(Input::Header {
            bytes,
            have: u8::try_from(have).unwrap_or(0),
        })
    }
}

/// Adds BEGIN_REQUEST body bytes.
fn collect_begin(id: u16, mut body: [u8; BEGIN_BODY_LEN], have: u8, chunk: &[u8]) -> Sink {
    let start = usize::from(have).min(BEGIN_BODY_LEN);
    let end = (start + chunk.len()).min(BEGIN_BODY_LEN);
    if let (Some(slot), Some(piece)) = (body.get_mut(start..end), chunk.get(..end - start)) {
        slot.copy_from_slice(piece);
    }
    Sink::Begin {
        id,
        body,
        have: u8::try_from(end).unwrap_or(0),
    }
}

/// Splits up to `n` bytes off the front of `input`.
fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (now, rest) = input
        .split_at_checked(n.min(input.len()))
        .unwrap_or((input, &[]));
    *input = rest;
    now
}

/// A GET_VALUES body being decoded (spec 4.1), bounded by its record (64 KiB) and
/// [`GET_VALUES_MAX_PAIRS`].
#[derive(Debug)]
struct GetValues {
    decoder: NvDecoder,
    names: ParamsBuilder,
}

impl Default for GetValues {
    fn default() -> GetValues {
        GetValues {
            decoder: NvDecoder::new(NvLimits {
                max_name_len: MAX_CONTENT_LEN,
                max_value_len: MAX_CONTENT_LEN,
                max_total_bytes: MAX_CONTENT_LEN,
                max_pairs: GET_VALUES_MAX_PAIRS,
            }),
            names: ParamsBuilder::new(),
        }
    }
}

/// The variable names of spec 4.1 this layer answers.
const KNOWN_VALUES: [&[u8]; 3] = [b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"];

impl GetValues {
    fn feed(&mut self, chunk: &[u8]) {
        // An error is sticky in the decoder: the pairs decoded before it are answered.
        let _ = self.decoder.feed(chunk, &mut self.names);
    }

    /// Appends one GET_VALUES_RESULT with the known names asked, in the order asked, once
    /// each; values sent in GET_VALUES are ignored (spec 4.1).
    fn answer(&mut self, limits: &Limits, out: &mut Vec<u8>) {
        let _ = self.decoder.finish();
        let names = std::mem::take(&mut self.names).finish();
        let mut answered = [false; KNOWN_VALUES.len()];
        let mut body = Vec::new();
        for (name, _) in names.iter() {
            let Some(known) = KNOWN_VALUES.iter().position(|k| *k == name) else {
                continue;
            };
            if let Some(done) = answered.get_mut(known).filter(|done| !**done) {
                *done = true;
                let value = match known {
                    0 => limits.advertised_max_conns.to_string(),
                    1 => limits.advertised_max_reqs.to_string(),
                    _ => "1".to_owned(),
                };
                encode_pair(&mut body, name, value.as_bytes());
            }
        }
        record::encode_record(out, RecordType::GetValuesResult, 0, &body);
    }
}

/// The active requests, by id: a sorted index into a slab. Lookups are a binary search over
/// at most `max_requests_per_conn` 4-byte entries; slots are reused, so a connection that
/// serves one request at a time allocates its table once.
#[derive(Debug, Default)]
struct Table {
    /// (request id, slot), sorted by id.
    index: Vec<(u16, u16)>,
    slots: Vec<Option<Request>>,
    free: Vec<u16>,
}

impl Table {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn slot(&self, id: u16) -> Option<usize> {
        let at = self.index.binary_search_by_key(&id, |&(id, _)| id).ok()?;
        self.index.get(at).map(|&(_, slot)| usize::from(slot))
    }

    fn get(&self, id: u16) -> Option<&Request> {
        self.slots.get(self.slot(id)?)?.as_ref()
    }

    fn get_mut(&mut self, id: u16) -> Option<&mut Request> {
        let slot = self.slot(id)?;
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Adds a request whose id is not in the table (the caller checked).
    fn insert(&mut self, request: Request) {
        let Err(at) = self.index.binary_search_by_key(&request.id, |&(id, _)| id) else {
            return;
        };
        let id = request.id;
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(entry) = self.slots.get_mut(usize::from(slot)) {
                    *entry = Some(request);
                }
                slot
            }
            None => {
                // At most one slot per distinct non-zero u16 id, so the index fits in u16.
                let Ok(slot) = u16::try_from(self.slots.len()) else {
                    return;
                };
                self.slots.push(Some(request));
                slot
            }
        };
        self.index.insert(at, (id, slot));
    }

    fn remove(&mut self, id: u16) -> Option<Request> {
        let at = self.index.binary_search_by_key(&id, |&(id, _)| id).ok()?;
        let (_, slot) = self.index.remove(at);
        self.free.push(slot);
        self.slots.get_mut(usize::from(slot))?.take()
    }
}
