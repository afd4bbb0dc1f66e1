//! The per-connection protocol state machine (spec 3, 4, 5, 6).
//!
//! Feed it received bytes cut anywhere; it emits [`Event`]s for the application and appends the
//! protocol's own answers (GET_VALUES_RESULT, UNKNOWN_TYPE, END_REQUEST with UNKNOWN_ROLE or
//! OVERLOADED) to the caller's output buffer. The application answers a request with the
//! encoders in [`crate::record`] and ends it with [`Connection::end_request`], which guarantees
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
use super::params::{Params, ParamsArena, ParamsBuilder};
use crate::record::{
    self, BEGIN_BODY_LEN, BeginRequestBody, HEADER_LEN, Header, MAX_CONTENT_LEN, ProtocolStatus,
    RecordType, Role, VERSION_1,
};
use std::sync::Arc;

/// Most pairs decoded from one GET_VALUES record (the spec defines three names).
pub const GET_VALUES_MAX_PAIRS: usize = 64;

/// Bounds and advertised values for one connection.
///
/// The defaults accept every request that nginx, Apache httpd, HAProxy, lighttpd and Caddy
/// forward with their stock limits (each boundary is tested through the real proxy in
/// `crates/fcgi-uring-cli/tests/proxy_limits.rs`), while keeping one request's params within a
/// stated bound; docs/limits.md has the figures and the worst case. A request past a limit is
/// answered END_REQUEST(OVERLOADED) without being dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Params name+value bytes per request (length prefixes not counted). Default 2 MiB: Caddy
    /// forwards up to 1 MiB + 4 KiB of request line and headers (Go's `MaxHeaderBytes`), which
    /// its params (`HTTP_` prefixes, the URI repeated in several params) turn into at most
    /// about 1.7 MB; Apache's 100 fields of 8190 bytes give about 0.85 MB. One request's
    /// params take at most `3 * (max_params_bytes + 8 * max_params_pairs)` bytes of heap while
    /// they arrive (12.6 MB with the defaults, 6.3 MB at most in fact; tests/default_limits.rs).
    pub max_params_bytes: usize,
    /// Params pairs per request. Default 262,144: Caddy forwards up to about 169,000 distinct
    /// 1- to 4-byte header names within its 1 MiB; nginx up to about 8,000 (as many as its one
    /// 64 KiB PARAMS record holds; 1,000 headers where `max_headers` exists). Bounds the length
    /// prefixes stored (up to 8 bytes a pair), which the byte limit alone does not: an empty
    /// pair costs no name or value byte.
    pub max_params_pairs: usize,
    /// Longest params name. Default 64 KiB: a stock proxy never sends a pair that does not fit
    /// one record (nginx and lighttpd send all params in one record, Caddy cuts values to fit
    /// 65,500 bytes, Apache skips pairs over 16 KiB, HAProxy's buffer is 16 KiB; php-fpm refuses
    /// a pair split across records), and `HTTP_` plus a header name must pass.
    pub max_name_len: usize,
    /// Longest params value. Default 64 KiB, for the same reason as `max_name_len`.
    pub max_value_len: usize,
    /// Requests active at once on this connection; a BEGIN past it gets OVERLOADED. Default
    /// 256. Only HAProxy multiplexes (`option mpxs-conns`), and with `option get-values` it
    /// keeps to the FCGI_MAX_REQS answered, which is `advertised_max_reqs`.
    pub max_requests_per_conn: usize,
    /// Advertised as FCGI_MAX_CONNS in GET_VALUES_RESULT (no proxy above acts on it).
    pub advertised_max_conns: u32,
    /// Advertised as FCGI_MAX_REQS in GET_VALUES_RESULT. HAProxy takes it as the number of
    /// requests it may have in flight on one connection, so it must not exceed
    /// `max_requests_per_conn`; the default equals it (256).
    pub advertised_max_reqs: u32,
}

impl Limits {
    /// Default of [`Limits::max_requests_per_conn`] and [`Limits::advertised_max_reqs`].
    const DEFAULT_REQUESTS_PER_CONN: u16 = 256;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_params_bytes: 2 * 1024 * 1024,
            max_params_pairs: 256 * 1024,
            max_name_len: 64 * 1024,
            max_value_len: 64 * 1024,
            max_requests_per_conn: usize::from(Limits::DEFAULT_REQUESTS_PER_CONN),
            advertised_max_conns: 10_000,
            advertised_max_reqs: u32::from(Limits::DEFAULT_REQUESTS_PER_CONN),
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
    /// BEGIN_REQUEST while a request was active on a connection that takes one at a time
    /// (`max_requests_per_conn` = 1; answered CANT_MPX_CONN, as the spec says).
    NotMultiplexed,
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
            RejectReason::TooManyRequests => {
                f.write_str("too many requests on the connection (limits.max_requests_per_conn)")
            }
            RejectReason::NotMultiplexed => f.write_str(
                "a second request on a connection that takes one at a time \
                 (limits.max_requests_per_conn = 1): the proxy multiplexes (HAProxy \
                 option mpxs-conns); turn that off or raise the limit",
            ),
            RejectReason::ParamNameTooLong => {
                f.write_str("a param name longer than limits.max_name_len")
            }
            RejectReason::ParamValueTooLong => {
                f.write_str("a param value longer than limits.max_value_len")
            }
            RejectReason::ParamsTooLarge => {
                f.write_str("params larger than limits.max_params_bytes")
            }
            RejectReason::TooManyParams => f.write_str("more params than limits.max_params_pairs"),
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
    /// Shared by the connections of a server (an idle connection's state stays small).
    limits: Arc<Limits>,
    input: Input,
    requests: Table,
    max_active_seen: usize,
    /// A request without KEEP_CONN has been answered (spec 5.1).
    closing: bool,
    /// Sticky: the connection must be closed.
    failed: Option<ProtocolError>,
    /// Where params are built ([`ParamsBuilder::in_arena`]); see
    /// [`Connection::swap_params_arena`]. Made on first use when no arena is lent.
    arena: Option<Box<ParamsArena>>,
    /// The request whose params builder took the arena last (it holds the arena's buffer
    /// until its params end): while it does, the params of the others are built apart, each in
    /// a buffer of its own size, not each in a block of [`crate::params::ARENA_BLOCK`].
    arena_holder: Option<u16>,
    /// Stamped on each request begun by the input that follows ([`Connection::stamp_input`]).
    stamp: u64,
}

/// Where the reader is in the record stream (spec 3.3).
#[derive(Debug)]
enum Input {
    /// Reading a header; `have` bytes of it are in `bytes`.
    Header { bytes: [u8; HEADER_LEN], have: u8 },
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

impl Sink {
    /// Whether [`Connection::end_content`] acts on this sink: only BEGIN_REQUEST and
    /// GET_VALUES are handled once their content is complete.
    fn acts_at_end(&self) -> bool {
        matches!(self, Sink::Begin { .. } | Sink::GetValues(_))
    }
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
        /// The stamp of the input that began it ([`Connection::stamp_input`]).
        began: u64,
        decoder: NvDecoder,
        /// Made at the first PARAMS content, in the arena (none before: a placeholder builder
        /// would be made and dropped for nothing).
        builder: Option<ParamsBuilder>,
    },
    /// `Event::Request` emitted; the streams still open are accepted.
    Dispatched { stdin_open: bool, data_open: bool },
    /// `Event::Abort` emitted; waiting for `end_request`, input ignored.
    Aborted,
}

impl Connection {
    /// A connection bounded by `limits` (a [`Limits`], or an `Arc` of one that connections
    /// share).
    pub fn new(limits: impl Into<Arc<Limits>>) -> Connection {
        Connection {
            limits: limits.into(),
            input: Input::START,
            requests: Table::default(),
            max_active_seen: 0,
            closing: false,
            failed: None,
            arena: None,
            arena_holder: None,
            stamp: 0,
        }
    }

    /// Swaps the buffer whose spare capacity the params of new requests are stored in with
    /// `arena` (none at first: one is made on first use; each request then takes its bytes
    /// from the arena's block, see [`crate::params::ARENA_BLOCK`], whose rest stays for the
    /// next ones). A server with many connections swaps one arena in before and out after
    /// each [`Connection::receive`], so that connections share it and an idle connection holds
    /// none. A request whose params are still arriving when the arena is given away keeps its
    /// bytes in a buffer of their own size, not the arena's block: pending params on any number
    /// of connections hold about their bytes.
    pub fn swap_params_arena(&mut self, arena: &mut Option<Box<ParamsArena>>) {
        if self.arena.is_some() {
            self.detach_arena_holder();
        }
        std::mem::swap(&mut self.arena, arena);
    }

    /// Moves the params of the request building in the arena, if it is still reading them,
    /// out of the arena's block (see [`ParamsBuilder::leave_arena`]).
    fn detach_arena_holder(&mut self) {
        let (Some(holder), Some(arena)) = (self.arena_holder.take(), self.arena.as_deref_mut())
        else {
            return;
        };
        if let Some(Request {
            phase:
                Phase::ReadingParams {
                    builder: Some(builder),
                    ..
                },
            ..
        }) = self.requests.get_mut(holder)
        {
            builder.leave_arena(arena);
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
            Some(keep_conn) => {
                self.write_end(
                    id,
                    keep_conn,
                    app_status,
                    ProtocolStatus::RequestComplete,
                    out,
                );
                true
            }
            None => false,
        }
    }

    /// Ends dispatched request `id` with a protocol status other than REQUEST_COMPLETE (the
    /// application refuses it, e.g. OVERLOADED when its own capacity is exhausted). Returns
    /// false, writing nothing, if `id` is not active.
    pub fn refuse_request(&mut self, id: u16, status: ProtocolStatus, out: &mut Vec<u8>) -> bool {
        match self.requests.remove(id) {
            Some(keep_conn) => {
                self.write_end(id, keep_conn, 0, status, out);
                true
            }
            None => false,
        }
    }

    /// Requests active now.
    pub fn active_requests(&self) -> usize {
        self.requests.len()
    }

    /// Stamps the requests that the following input begins with `stamp`, an opaque value (a
    /// caller's clock reading, say; this layer reads no clock). See
    /// [`Connection::oldest_reading_params`].
    pub fn stamp_input(&mut self, stamp: u64) {
        self.stamp = stamp;
    }

    /// Stamps the requests still reading their params with `stamp` where theirs is older: for a
    /// caller that stopped reading the connection for a while, so that the time it did not read
    /// does not count against those params. Linear in the active requests.
    pub fn restamp_reading_params(&mut self, stamp: u64) {
        for request in self.requests.iter_mut() {
            if let Phase::ReadingParams { began, .. } = &mut request.phase {
                *began = (*began).max(stamp);
            }
        }
    }

    /// The smallest stamp ([`Connection::stamp_input`]) among the requests whose params have
    /// not ended; none when no request is reading params. Linear in the active requests.
    pub fn oldest_reading_params(&self) -> Option<u64> {
        self.requests
            .iter()
            .filter_map(|r| match r.phase {
                Phase::ReadingParams { began, .. } => Some(began),
                _ => None,
            })
            .min()
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
            if let Input::Header { have: 0, .. } = self.input {
                self.whole_records(&mut input, out, on_event)?;
                if input.is_empty() {
                    // All of it was whole records: the reader is between records, as it was.
                    return Ok(());
                }
            }
            self.input = match std::mem::replace(&mut self.input, Input::START) {
                Input::Header { bytes, have } => {
                    if input.is_empty() {
                        self.input = Input::Header { bytes, have };
                        return Ok(());
                    }
                    match read_header(&mut input, bytes, have) {
                        Ok(header) => Input::Content {
                            sink: self.start_record(header, out, on_event)?,
                            left: header.content_length,
                            padding: header.padding_length,
                        },
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

    /// Fast path: handles the records that lie whole at the front of `input` exactly as the
    /// reader in [`Connection::run`] would, without storing the reader's state between steps.
    fn whole_records(
        &mut self,
        input: &mut &[u8],
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        while let Some((header, rest)) = input.split_first_chunk::<HEADER_LEN>() {
            let header = Header::parse(header);
            let Some((content, rest)) = rest.split_at_checked(usize::from(header.content_length))
            else {
                break;
            };
            let Some(rest) = rest.get(usize::from(header.padding_length)..) else {
                break;
            };
            *input = rest;
            self.whole_record(header, content, out, on_event)?;
        }
        Ok(())
    }

    /// A record whose content is all in `content`: what [`Connection::start_record`],
    /// [`Connection::content`] and [`Connection::end_content`] do for it in turn, with the
    /// streams' content handed straight to their request (their end does nothing).
    #[inline]
    fn whole_record(
        &mut self,
        header: Header,
        content: &[u8],
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        let sink = self.start_record(header, out, on_event)?;
        if content.is_empty() {
            // The empty records that end a stream: nothing to do at their end, and no call.
            if sink.acts_at_end() {
                return self.end_content(sink, out, on_event);
            }
            return Ok(());
        }
        match sink {
            Sink::Skip => Ok(()),
            Sink::Params(id) => self.params_content(id, content, out, on_event).map(drop),
            Sink::Stdin(id) => {
                self.stream_content(id, Stream::Stdin, content, on_event);
                Ok(())
            }
            Sink::Data(id) => {
                self.stream_content(id, Stream::Data, content, on_event);
                Ok(())
            }
            // The body is all of `content` (start_record checked its length): taken as it is,
            // not collected.
            Sink::Begin { id, body, have } => match <[u8; BEGIN_BODY_LEN]>::try_from(content) {
                Ok(whole) if have == 0 => self.begin(id, whole, out, on_event),
                _ => {
                    let sink = collect_begin(id, body, have, content);
                    self.end_content(sink, out, on_event)
                }
            },
            sink => {
                let sink = self.content(sink, content, out, on_event)?;
                self.end_content(sink, out, on_event)
            }
        }
    }

    /// Acts on a complete header: answers what needs no content, and decides what the
    /// content is for.
    fn start_record(
        &mut self,
        header: Header,
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<Sink, ProtocolError> {
        // Spec 3.3: FCGI_VERSION_1 is the only version.
        if header.version != VERSION_1 {
            return Err(ProtocolError::BadVersion(header.version));
        }
        if header.request_id == record::NULL_REQUEST_ID {
            Ok(self.management_record(header, out))
        } else {
            self.application_record(header, out, on_event)
        }
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

    /// The current record's content is complete (see [`Sink::acts_at_end`]).
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
            self.refuse(
                id,
                body.keep_conn,
                ProtocolStatus::UnknownRole,
                reason,
                out,
                on_event,
            );
            return Ok(());
        };
        if self.requests.len() >= self.limits.max_requests_per_conn {
            // A connection that takes one request at a time does not multiplex: the spec's
            // answer to a concurrent request there is CANT_MPX_CONN, not OVERLOADED.
            let (reason, status) = if self.limits.max_requests_per_conn == 1 {
                (RejectReason::NotMultiplexed, ProtocolStatus::CantMpxConn)
            } else {
                (RejectReason::TooManyRequests, ProtocolStatus::Overloaded)
            };
            self.refuse(id, body.keep_conn, status, reason, out, on_event);
            return Ok(());
        }
        self.requests.insert(Request {
            id,
            role,
            keep_conn: body.keep_conn,
            phase: Phase::ReadingParams {
                began: self.stamp,
                decoder: NvDecoder::new(self.nv_limits()),
                builder: None,
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
        let limits = &self.limits;
        let arena_held = self.arena_held_by_another(id);
        let Some(request) = self.requests.get_mut(id) else {
            return Ok(Sink::Skip);
        };
        let Phase::ReadingParams {
            decoder, builder, ..
        } = &mut request.phase
        else {
            // The stream has ended: later PARAMS are ignored.
            return Ok(Sink::Skip);
        };
        if len > 0 {
            let builder = builder.get_or_insert_with(|| {
                if arena_held {
                    return ParamsBuilder::new();
                }
                self.arena_holder = Some(id);
                ParamsBuilder::in_arena(self.arena.get_or_insert_default())
            });
            let len = usize::from(len);
            // What the record can add: its own bytes and the length prefixes of a pair begun
            // in an earlier one (8 at most), within what the limits leave (names and values,
            // and at most 8 prefix bytes a pair).
            let pairs_left = limits.max_params_pairs.saturating_sub(builder.pair_count());
            let room = limits
                .max_params_bytes
                .saturating_sub(builder.byte_len())
                .saturating_add(pairs_left.saturating_mul(8));
            builder.reserve(len.saturating_add(8).min(room));
            return Ok(Sink::Params(id));
        }
        // Spec 3.3, Streams: the empty record ends the stream.
        decoder
            .finish()
            .map_err(|error| ProtocolError::Params { id, error })?;
        let params = builder
            .take()
            .unwrap_or_default()
            .finish_into(self.arena.get_or_insert_default());
        if self.arena_holder == Some(id) {
            // Given back: the next request's check finds no holder without a lookup.
            self.arena_holder = None;
        }
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

    /// Whether a request other than `id` is still building its params in the arena.
    fn arena_held_by_another(&self, id: u16) -> bool {
        self.arena_holder.is_some_and(|holder| {
            holder != id
                && self.requests.get(holder).is_some_and(|r| {
                    matches!(&r.phase, Phase::ReadingParams { builder: Some(b), .. } if b.holds_arena())
                })
        })
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
            phase: Phase::ReadingParams {
                decoder, builder, ..
            },
            keep_conn,
            ..
        }) = self.requests.get_mut(id)
        else {
            return Ok(Sink::Skip);
        };
        // Always made by params_record before content is routed here.
        let builder = builder.get_or_insert_with(ParamsBuilder::new);
        let Err(error) = decoder.feed(chunk, builder) else {
            return Ok(Sink::Params(id));
        };
        let Some(reason) = RejectReason::from_nv(error) else {
            return Err(ProtocolError::Params { id, error });
        };
        let keep_conn = *keep_conn;
        self.requests.remove(id);
        self.refuse(
            id,
            keep_conn,
            ProtocolStatus::Overloaded,
            reason,
            out,
            on_event,
        );
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
fn read_header(input: &mut &[u8], mut bytes: [u8; HEADER_LEN], have: u8) -> Result<Header, Input> {
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
                    // Always 1, with FCGI_MAX_REQS saying how many: HAProxy 2.6 keeps to
                    // FCGI_MAX_REQS = 1 when told "1", but sends concurrent requests anyway
                    // when told FCGI_MPXS_CONNS = 0 (tests/misconfigured.rs).
                    _ => "1".to_owned(),
                };
                encode_pair(&mut body, name, value.as_bytes());
            }
        }
        record::encode_record(out, RecordType::GetValuesResult, 0, &body);
    }
}

/// The active requests, by id. A connection's first request lies in the table itself, so a
/// connection that carries one request at a time (nearly all: nginx and Apache never multiplex)
/// reads and writes no memory but the connection's own to begin, find and end it. Requests
/// beyond it go to [`Spill`], made at the first one and kept for the next burst.
#[derive(Debug, Default)]
struct Table {
    one: Option<Request>,
    more: Option<Box<Spill>>,
}

impl Table {
    fn len(&self) -> usize {
        usize::from(self.one.is_some()) + self.more.as_ref().map_or(0, |m| m.len())
    }

    /// The active requests, in no particular order.
    fn iter(&self) -> impl Iterator<Item = &Request> {
        self.one
            .iter()
            .chain(self.more.iter().flat_map(|m| m.slots.iter().flatten()))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Request> {
        self.one.iter_mut().chain(
            self.more
                .iter_mut()
                .flat_map(|m| m.slots.iter_mut().flatten()),
        )
    }

    fn get(&self, id: u16) -> Option<&Request> {
        match &self.one {
            Some(r) if r.id == id => Some(r),
            _ => self.more.as_ref()?.get(id),
        }
    }

    fn get_mut(&mut self, id: u16) -> Option<&mut Request> {
        match &mut self.one {
            Some(r) if r.id == id => Some(r),
            _ => self.more.as_mut()?.get_mut(id),
        }
    }

    /// Adds a request whose id is not in the table (the caller checked).
    fn insert(&mut self, request: Request) {
        if self.one.is_none() {
            self.one = Some(request);
        } else {
            self.more.get_or_insert_default().insert(request);
        }
    }

    /// Removes request `id`, dropping it where it lies (no move of the struct out); returns its
    /// KEEP_CONN flag.
    fn remove(&mut self, id: u16) -> Option<bool> {
        match &self.one {
            Some(r) if r.id == id => {
                let keep_conn = r.keep_conn;
                self.one = None;
                Some(keep_conn)
            }
            _ => self.more.as_mut()?.remove(id),
        }
    }
}

/// The requests of a multiplexing connection past the first: a sorted index into a slab.
/// Lookups are a binary search over at most `max_requests_per_conn` 4-byte entries; slots are
/// reused, so a connection that keeps about as many requests in flight allocates once.
#[derive(Debug, Default)]
struct Spill {
    /// (request id, slot), sorted by id.
    index: Vec<(u16, u16)>,
    slots: Vec<Option<Request>>,
    free: Vec<u16>,
}

impl Spill {
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

    fn remove(&mut self, id: u16) -> Option<bool> {
        let at = self.index.binary_search_by_key(&id, |&(id, _)| id).ok()?;
        let (_, slot) = self.index.remove(at);
        self.free.push(slot);
        let entry = self.slots.get_mut(usize::from(slot))?;
        let keep_conn = entry.as_ref()?.keep_conn;
        *entry = None;
        Some(keep_conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode_begin_request, encode_end_request, encode_record};

    /// An owned copy of an event, for comparison.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Request(u16, Role, bool, Params),
        Stdin(u16, Vec<u8>),
        StdinEnd(u16),
        Data(u16, Vec<u8>),
        DataEnd(u16),
        Abort(u16),
        Rejected(u16, RejectReason),
    }

    impl From<Event<'_>> for Ev {
        fn from(event: Event<'_>) -> Ev {
            match event {
                Event::Request {
                    id,
                    role,
                    keep_conn,
                    params,
                } => Ev::Request(id, role, keep_conn, params),
                Event::Stdin { id, data } => {
                    assert!(!data.is_empty());
                    Ev::Stdin(id, data.to_vec())
                }
                Event::StdinEnd { id } => Ev::StdinEnd(id),
                Event::Data { id, data } => {
                    assert!(!data.is_empty());
                    Ev::Data(id, data.to_vec())
                }
                Event::DataEnd { id } => Ev::DataEnd(id),
                Event::Abort { id } => Ev::Abort(id),
                Event::Rejected { id, reason } => Ev::Rejected(id, reason),
            }
        }
    }

    struct Harness {
        conn: Connection,
        out: Vec<u8>,
        events: Vec<Ev>,
    }

    impl Harness {
        fn new(limits: Limits) -> Harness {
            Harness {
                conn: Connection::new(limits),
                out: Vec::new(),
                events: Vec::new(),
            }
        }

        fn feed(&mut self, input: &[u8]) -> Result<(), ProtocolError> {
            let events = &mut self.events;
            self.conn
                .receive(input, &mut self.out, &mut |e| events.push(Ev::from(e)))
        }

        /// Takes the events and output so far.
        fn drain(&mut self) -> (Vec<Ev>, Vec<u8>) {
            (
                std::mem::take(&mut self.events),
                std::mem::take(&mut self.out),
            )
        }
    }

    /// Joins consecutive STDIN (or DATA) events of one id.
    fn merge(events: Vec<Ev>) -> Vec<Ev> {
        let mut merged: Vec<Ev> = Vec::new();
        for event in events {
            match (merged.last_mut(), event) {
                (Some(Ev::Stdin(a, acc)), Ev::Stdin(b, data)) if *a == b => acc.extend(data),
                (Some(Ev::Data(a, acc)), Ev::Data(b, data)) if *a == b => acc.extend(data),
                (_, event) => merged.push(event),
            }
        }
        merged
    }

    fn rec(record_type: u8, id: u16, content: &[u8], padding: u8) -> Vec<u8> {
        let mut out = Header {
            version: 1,
            record_type,
            request_id: id,
            content_length: content.len() as u16,
            padding_length: padding,
        }
        .encode()
        .to_vec();
        out.extend_from_slice(content);
        out.extend(std::iter::repeat_n(0xEE, padding as usize));
        out
    }

    fn begin(id: u16, role: u16, keep_conn: bool) -> Vec<u8> {
        let mut out = Vec::new();
        encode_begin_request(&mut out, id, role, keep_conn);
        out
    }

    fn pairs(list: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in list {
            encode_pair(&mut out, n, v);
        }
        out
    }

    fn end(id: u16, app_status: u32, status: ProtocolStatus) -> Vec<u8> {
        let mut out = Vec::new();
        encode_end_request(&mut out, id, app_status, status);
        out
    }

    const PARAMS: &[(&[u8], &[u8])] = &[
        (b"REQUEST_METHOD", b"GET"),
        (b"SCRIPT_NAME", b"/hello"),
        (b"HTTP_HOST", b"example.com"),
    ];

    /// BEGIN, PARAMS padded to 8, empty PARAMS: request `id` dispatched.
    fn request(id: u16, keep_conn: bool) -> Vec<u8> {
        let body = pairs(PARAMS);
        let padding = ((8 - body.len() % 8) % 8) as u8;
        [
            begin(id, 1, keep_conn),
            rec(4, id, &body, padding),
            rec(4, id, &[], 0),
        ]
        .concat()
    }

    fn dispatched(id: u16, keep_conn: bool) -> Ev {
        Ev::Request(
            id,
            Role::Responder,
            keep_conn,
            Params::from_pairs(PARAMS.iter().copied()),
        )
    }

    fn nginx_stream() -> Vec<u8> {
        [request(1, true), rec(5, 1, &[], 0)].concat()
    }

    #[test]
    fn nginx_request_in_one_slice() {
        let mut h = Harness::new(Limits::default());
        h.feed(&nginx_stream()).unwrap();
        let (events, out) = h.drain();
        assert_eq!(events, [dispatched(1, true), Ev::StdinEnd(1)]);
        assert!(out.is_empty());
        assert_eq!(h.conn.active_requests(), 1);
        assert!(h.conn.end_request(1, 0, &mut h.out));
        assert_eq!(h.out, end(1, 0, ProtocolStatus::RequestComplete));
        assert_eq!(h.conn.active_requests(), 0);
        assert!(!h.conn.should_close());
    }

    #[test]
    fn a_lent_arena_goes_back_with_the_rest_of_its_block_and_the_connection_keeps_none() {
        let mut h = Harness::new(Limits::default());
        let mut lent = Some(Box::<ParamsArena>::default());
        h.conn.swap_params_arena(&mut lent);
        assert!(lent.is_none());
        h.feed(&nginx_stream()).unwrap();
        h.conn.swap_params_arena(&mut lent);
        assert!(h.conn.arena.is_none(), "the idle connection holds no arena");
        let arena = lent.expect("the arena came back");
        assert!(
            arena.spare_capacity() > 0,
            "the block's rest stays for the next requests"
        );
        let (events, _) = h.drain();
        assert_eq!(events, [dispatched(1, true), Ev::StdinEnd(1)]);
    }

    /// Params cut anywhere across two receives, with the arena given to another connection
    /// (which builds a whole request in it) between them, come out as from one receive; the
    /// request left waiting holds none of the arena's block meanwhile.
    #[test]
    fn params_cut_across_receives_leave_the_arena_between_them() {
        let stream = nginx_stream();
        let mut whole = Harness::new(Limits::default());
        whole.feed(&stream).unwrap();
        let expected = whole.drain();
        for cut in 1..stream.len() {
            let mut lent = Some(Box::<ParamsArena>::default());
            let mut h = Harness::new(Limits::default());
            h.conn.swap_params_arena(&mut lent);
            h.feed(&stream[..cut]).unwrap();
            h.conn.swap_params_arena(&mut lent);
            assert!(
                h.conn.arena_holder.is_none(),
                "cut at {cut}: no holder left"
            );
            let mut other = Harness::new(Limits::default());
            other.conn.swap_params_arena(&mut lent);
            other.feed(&stream).unwrap();
            other.conn.swap_params_arena(&mut lent);
            assert_eq!(
                other.drain(),
                expected,
                "the other connection, cut at {cut}"
            );
            h.conn.swap_params_arena(&mut lent);
            h.feed(&stream[cut..]).unwrap();
            h.conn.swap_params_arena(&mut lent);
            assert_eq!(h.drain(), expected, "cut at {cut}");
        }
    }

    #[test]
    fn byte_at_a_time_and_every_two_way_split_agree() {
        let stream = [nginx_stream(), rec(5, 1, b"ignored after end", 3)].concat();
        let mut whole = Harness::new(Limits::default());
        whole.feed(&stream).unwrap();
        let expected = whole.drain();
        let mut bytes = Harness::new(Limits::default());
        for b in &stream {
            bytes.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(bytes.drain(), expected);
        for cut in 0..=stream.len() {
            let mut h = Harness::new(Limits::default());
            h.feed(&stream[..cut]).unwrap();
            h.feed(&stream[cut..]).unwrap();
            assert_eq!(h.drain(), expected, "cut at {cut}");
        }
    }

    #[test]
    fn stdin_and_data_are_passed_as_they_arrive() {
        let mut h = Harness::new(Limits::default());
        h.feed(&request(7, true)).unwrap();
        h.drain();
        let stdin = rec(5, 7, b"hello world", 5);
        h.feed(&stdin[..12]).unwrap();
        h.feed(&stdin[12..13]).unwrap();
        h.feed(&stdin[13..]).unwrap();
        h.feed(&rec(8, 7, b"file", 0)).unwrap();
        h.feed(&rec(8, 7, &[], 0)).unwrap();
        h.feed(&rec(8, 7, b"late", 0)).unwrap();
        h.feed(&rec(5, 7, b"!", 0)).unwrap();
        h.feed(&rec(5, 7, &[], 0)).unwrap();
        h.feed(&rec(5, 7, b"late", 0)).unwrap();
        h.feed(&rec(5, 7, &[], 0)).unwrap();
        let (events, out) = h.drain();
        assert_eq!(
            events,
            [
                Ev::Stdin(7, b"hell".to_vec()),
                Ev::Stdin(7, b"o".to_vec()),
                Ev::Stdin(7, b" world".to_vec()),
                Ev::Data(7, b"file".to_vec()),
                Ev::DataEnd(7),
                Ev::Stdin(7, b"!".to_vec()),
                Ev::StdinEnd(7),
            ]
        );
        assert!(out.is_empty());
    }

    #[test]
    fn bad_version_closes_and_sticks() {
        let mut h = Harness::new(Limits::default());
        let mut stream = begin(1, 1, true);
        stream[0] = 2;
        assert_eq!(h.feed(&stream), Err(ProtocolError::BadVersion(2)));
        assert_eq!(h.feed(&nginx_stream()), Err(ProtocolError::BadVersion(2)));
        assert!(h.drain().0.is_empty());
    }

    #[test]
    fn get_values_answers_known_names_once_in_order_asked() {
        let limits = Limits {
            advertised_max_conns: 12,
            advertised_max_reqs: 345,
            ..Limits::default()
        };
        let mut h = Harness::new(limits);
        let asked = pairs(&[
            (b"FCGI_MPXS_CONNS", b"ignored"),
            (b"FCGI_UNKNOWN", b""),
            (b"FCGI_MAX_REQS", b""),
            (b"FCGI_MAX_CONNS", b""),
            (b"FCGI_MAX_REQS", b""),
        ]);
        let stream = rec(9, 0, &asked, 3);
        for b in stream.chunks(1) {
            h.feed(b).unwrap();
        }
        let answer = pairs(&[
            (b"FCGI_MPXS_CONNS", b"1"),
            (b"FCGI_MAX_REQS", b"345"),
            (b"FCGI_MAX_CONNS", b"12"),
        ]);
        assert_eq!(h.drain(), (vec![], rec(10, 0, &answer, 0)));
    }

    #[test]
    fn one_request_per_connection_is_advertised_in_max_reqs() {
        let limits = Limits {
            max_requests_per_conn: 1,
            advertised_max_reqs: 1,
            ..Limits::default()
        };
        let mut h = Harness::new(limits);
        let asked = pairs(&[(b"FCGI_MPXS_CONNS", b""), (b"FCGI_MAX_REQS", b"")]);
        h.feed(&rec(9, 0, &asked, 0)).unwrap();
        let answer = pairs(&[(b"FCGI_MPXS_CONNS", b"1"), (b"FCGI_MAX_REQS", b"1")]);
        assert_eq!(h.drain(), (vec![], rec(10, 0, &answer, 0)));
    }

    #[test]
    fn get_values_empty_and_malformed() {
        let mut h = Harness::new(Limits::default());
        h.feed(&rec(9, 0, &[], 0)).unwrap();
        assert_eq!(h.drain().1, rec(10, 0, &[], 0));
        // Policy: a pair cut by the record's end is dropped; the pairs before it are answered.
        let mut body = pairs(&[(b"FCGI_MPXS_CONNS", b"")]);
        body.extend_from_slice(&[14, 0, b'F']);
        h.feed(&rec(9, 0, &body, 0)).unwrap();
        let answer = pairs(&[(b"FCGI_MPXS_CONNS", b"1")]);
        assert_eq!(h.drain().1, rec(10, 0, &answer, 0));
        // A 2 GiB announced name stops decoding without allocating it.
        h.feed(&rec(9, 0, &[0xFF, 0xFF, 0xFF, 0xFF, 0], 0)).unwrap();
        assert_eq!(h.drain().1, rec(10, 0, &[], 0));
        // Too many pairs: those before the limit are answered.
        let mut many = pairs(&[(b"FCGI_MAX_CONNS", b"")]);
        for _ in 0..GET_VALUES_MAX_PAIRS {
            many.extend_from_slice(&pairs(&[(b"FCGI_MPXS_CONNS", b"")]));
        }
        h.feed(&rec(9, 0, &many, 0)).unwrap();
        let answer = pairs(&[(b"FCGI_MAX_CONNS", b"10000"), (b"FCGI_MPXS_CONNS", b"1")]);
        assert_eq!(h.drain().1, rec(10, 0, &answer, 0));
        assert!(h.feed(&nginx_stream()).is_ok());
    }

    #[test]
    fn other_types_on_id_0_get_unknown_type() {
        let mut h = Harness::new(Limits::default());
        for t in [1u8, 2, 3, 4, 5, 10, 11, 12, 255] {
            h.feed(&rec(t, 0, b"body", 4)).unwrap();
            let mut expected = Vec::new();
            record::encode_unknown_type(&mut expected, t);
            assert_eq!(h.drain(), (vec![], expected), "type {t}");
        }
    }

    #[test]
    fn types_not_for_the_application_are_ignored_on_nonzero_ids() {
        let mut h = Harness::new(Limits::default());
        h.feed(&request(3, true)).unwrap();
        h.drain();
        for t in [3u8, 6, 7, 9, 10, 11, 12, 200] {
            h.feed(&rec(t, 3, b"some body", 7)).unwrap();
            h.feed(&rec(t, 4, b"", 0)).unwrap();
        }
        h.feed(&rec(5, 3, b"x", 0)).unwrap();
        assert_eq!(h.drain(), (vec![Ev::Stdin(3, b"x".to_vec())], vec![]));
    }

    #[test]
    fn records_for_inactive_ids_are_ignored() {
        let mut h = Harness::new(Limits::default());
        for t in [2u8, 4, 5, 8] {
            h.feed(&rec(t, 9, b"body", 1)).unwrap();
            h.feed(&rec(t, 9, b"", 0)).unwrap();
        }
        assert_eq!(h.drain(), (vec![], vec![]));
        assert!(!h.conn.end_request(9, 0, &mut h.out));
        assert!(h.out.is_empty());
    }

    #[test]
    fn begin_with_wrong_length_closes() {
        let mut h = Harness::new(Limits::default());
        assert_eq!(
            h.feed(&rec(1, 1, &[0, 1, 1, 0, 0, 0, 0], 0)),
            Err(ProtocolError::BadBeginLength(7))
        );
        let mut h = Harness::new(Limits::default());
        assert_eq!(
            h.feed(&rec(1, 1, &[0; 9], 0)),
            Err(ProtocolError::BadBeginLength(9))
        );
    }

    #[test]
    fn duplicate_begin_closes() {
        let mut h = Harness::new(Limits::default());
        h.feed(&begin(5, 1, true)).unwrap();
        assert_eq!(
            h.feed(&begin(5, 1, true)),
            Err(ProtocolError::DuplicateBegin(5))
        );
        // Also once dispatched.
        let mut h = Harness::new(Limits::default());
        h.feed(&request(5, true)).unwrap();
        assert_eq!(
            h.feed(&begin(5, 2, true)),
            Err(ProtocolError::DuplicateBegin(5))
        );
    }

    #[test]
    fn unknown_role_is_answered_and_stays_inactive() {
        let mut h = Harness::new(Limits::default());
        h.feed(&begin(2, 9, true)).unwrap();
        h.feed(&rec(4, 2, &pairs(PARAMS), 0)).unwrap();
        h.feed(&rec(4, 2, &[], 0)).unwrap();
        assert_eq!(
            h.drain(),
            (
                vec![Ev::Rejected(2, RejectReason::UnknownRole(9))],
                end(2, 0, ProtocolStatus::UnknownRole)
            )
        );
        assert_eq!(h.conn.active_requests(), 0);
        assert!(!h.conn.should_close());
        // The id may begin again.
        h.feed(&request(2, true)).unwrap();
        assert_eq!(h.drain().0, [dispatched(2, true)]);
    }

    #[test]
    fn too_many_requests_get_overloaded() {
        let limits = Limits {
            max_requests_per_conn: 2,
            ..Limits::default()
        };
        let mut h = Harness::new(limits);
        h.feed(&[request(1, true), request(3, true), request(5, true)].concat())
            .unwrap();
        assert_eq!(
            h.drain(),
            (
                vec![
                    dispatched(1, true),
                    dispatched(3, true),
                    Ev::Rejected(5, RejectReason::TooManyRequests)
                ],
                end(5, 0, ProtocolStatus::Overloaded)
            )
        );
        assert_eq!(h.conn.active_requests(), 2);
        assert!(h.conn.end_request(1, 0, &mut h.out));
        h.feed(&request(5, true)).unwrap();
        assert_eq!(h.drain().0, [dispatched(5, true)]);
        assert_eq!(h.conn.max_active_seen(), 2);
    }

    #[test]
    fn a_second_request_where_one_is_allowed_gets_cant_mpx_conn() {
        let limits = Limits {
            max_requests_per_conn: 1,
            advertised_max_reqs: 1,
            ..Limits::default()
        };
        let mut h = Harness::new(limits);
        h.feed(&[request(1, true), request(3, true)].concat())
            .unwrap();
        assert_eq!(
            h.drain(),
            (
                vec![
                    dispatched(1, true),
                    Ev::Rejected(3, RejectReason::NotMultiplexed)
                ],
                end(3, 0, ProtocolStatus::CantMpxConn)
            )
        );
    }

    /// The first request lies in the table, the others in its spill, and each is found, counted
    /// and removed wherever it lies; an inline place freed while others are in flight takes the
    /// next request.
    #[test]
    fn the_request_table_finds_each_request_inline_or_spilled() {
        let entry = |id: u16| Request {
            id,
            role: Role::Responder,
            keep_conn: id.is_multiple_of(2),
            phase: Phase::Aborted,
        };
        let ids = |t: &Table| {
            let mut ids: Vec<u16> = t.iter().map(|r| r.id).collect();
            ids.sort_unstable();
            ids
        };
        let mut t = Table::default();
        assert_eq!((t.len(), t.remove(1)), (0, None));
        for id in [7, 3, 9] {
            t.insert(entry(id));
        }
        assert_eq!(t.one.as_ref().map(|r| r.id), Some(7));
        assert_eq!((t.len(), ids(&t)), (3, vec![3, 7, 9]));
        // The inline request ends first; the next one takes its place.
        assert_eq!(t.remove(7), Some(false));
        assert!(t.get(7).is_none());
        t.insert(entry(4));
        assert_eq!(t.one.as_ref().map(|r| r.id), Some(4));
        assert_eq!((t.len(), ids(&t)), (3, vec![3, 4, 9]));
        for id in [3, 4, 9] {
            assert_eq!(t.get(id).map(|r| r.id), Some(id));
            assert_eq!(
                t.get_mut(id).map(|r| r.keep_conn),
                Some(id.is_multiple_of(2))
            );
        }
        assert_eq!(t.iter_mut().count(), 3);
        // A spilled request ends, then the inline one: the spill is reused.
        assert_eq!(t.remove(9), Some(false));
        assert_eq!(t.remove(4), Some(true));
        assert_eq!(t.remove(4), None);
        assert_eq!((t.len(), ids(&t)), (1, vec![3]));
        t.insert(entry(10));
        t.insert(entry(12));
        assert_eq!((t.len(), ids(&t)), (3, vec![3, 10, 12]));
        for id in [12, 3, 10] {
            assert!(t.remove(id).is_some());
        }
        assert_eq!((t.len(), t.iter().count()), (0, 0));
    }

    /// Multiplexed requests on one connection, the first of them ended before the others and a
    /// new one begun in its place: each record reaches its own request.
    #[test]
    fn records_reach_their_request_when_the_first_ends_before_the_others() {
        let mut h = Harness::new(Limits::default());
        h.feed(&[request(1, true), request(2, true), request(3, true)].concat())
            .unwrap();
        h.drain();
        assert!(h.conn.end_request(1, 0, &mut h.out));
        h.drain();
        h.feed(&request(4, true)).unwrap();
        h.feed(
            &[
                rec(5, 3, b"three", 0),
                rec(5, 2, b"two", 0),
                rec(5, 4, b"four", 0),
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(
            h.drain().0,
            vec![
                dispatched(4, true),
                Ev::Stdin(3, b"three".to_vec()),
                Ev::Stdin(2, b"two".to_vec()),
                Ev::Stdin(4, b"four".to_vec()),
            ]
        );
        assert_eq!(h.conn.active_requests(), 3);
        for id in [2, 3, 4] {
            assert!(h.conn.end_request(id, 0, &mut h.out));
        }
        assert_eq!(h.conn.active_requests(), 0);
    }

    #[test]
    fn zero_requests_allowed_refuses_all() {
        let limits = Limits {
            max_requests_per_conn: 0,
            ..Limits::default()
        };
        let mut h = Harness::new(limits);
        h.feed(&request(1, true)).unwrap();
        assert_eq!(h.drain().1, end(1, 0, ProtocolStatus::Overloaded));
    }

    #[test]
    fn keep_conn_0_closes_after_its_end_and_ignores_new_begins() {
        let mut h = Harness::new(Limits::default());
        h.feed(&[request(1, false), request(2, true)].concat())
            .unwrap();
        h.drain();
        assert!(!h.conn.should_close());
        assert!(h.conn.end_request(1, 7, &mut h.out));
        assert!(h.conn.should_close());
        h.feed(&[request(3, true), rec(5, 2, b"still", 0)].concat())
            .unwrap();
        let (events, out) = h.drain();
        assert_eq!(events, [Ev::Stdin(2, b"still".to_vec())]);
        assert_eq!(out, end(1, 7, ProtocolStatus::RequestComplete));
        assert!(!h.conn.is_active(3));
        // An ignored BEGIN for an active id is not a duplicate once closing.
        h.feed(&begin(2, 1, true)).unwrap();
        assert!(h.conn.end_request(2, 0, &mut h.out));
    }

    #[test]
    fn keep_conn_0_refusal_closes_too() {
        let mut h = Harness::new(Limits::default());
        h.feed(&begin(1, 0, false)).unwrap();
        assert!(h.conn.should_close());
        assert_eq!(h.drain().1, end(1, 0, ProtocolStatus::UnknownRole));
    }

    #[test]
    fn params_limits_reject_one_request_only() {
        let limits = Limits {
            max_name_len: 8,
            max_value_len: 8,
            max_params_bytes: 20,
            max_params_pairs: 2,
            ..Limits::default()
        };
        let cases: [(&[u8], RejectReason); 4] = [
            (
                &pairs(&[(b"NINE_BYTE", b"")]),
                RejectReason::ParamNameTooLong,
            ),
            (
                &pairs(&[(b"N", b"123456789")]),
                RejectReason::ParamValueTooLong,
            ),
            (
                &pairs(&[(b"AAAAAAAA", b"12345678"), (b"B", b"12345")]),
                RejectReason::ParamsTooLarge,
            ),
            (
                &pairs(&[(b"A", b""), (b"B", b""), (b"C", b"")]),
                RejectReason::TooManyParams,
            ),
        ];
        for (body, reason) in cases {
            let mut h = Harness::new(limits);
            h.feed(&[begin(1, 1, true), begin(2, 1, true)].concat())
                .unwrap();
            h.feed(&rec(4, 1, body, 1)).unwrap();
            h.feed(&[rec(4, 1, &[], 0), rec(5, 1, b"x", 0), rec(2, 1, &[], 0)].concat())
                .unwrap();
            assert_eq!(
                h.drain(),
                (
                    vec![Ev::Rejected(1, reason)],
                    end(1, 0, ProtocolStatus::Overloaded)
                ),
                "{reason}"
            );
            assert!(!h.conn.end_request(1, 0, &mut h.out));
            h.feed(&[rec(4, 2, &pairs(&[(b"OK", b"1")]), 0), rec(4, 2, &[], 0)].concat())
                .unwrap();
            assert!(matches!(h.drain().0.as_slice(), [Ev::Request(2, ..)]));
        }
    }

    #[test]
    fn a_2_gib_param_name_is_rejected_before_allocation() {
        let mut h = Harness::new(Limits::default());
        h.feed(&begin(1, 1, true)).unwrap();
        h.feed(&rec(4, 1, &[0xFF, 0xFF, 0xFF, 0xFF, 0x00], 3))
            .unwrap();
        assert_eq!(
            h.drain(),
            (
                vec![Ev::Rejected(1, RejectReason::ParamNameTooLong)],
                end(1, 0, ProtocolStatus::Overloaded)
            )
        );
    }

    #[test]
    fn params_cut_inside_a_pair_close() {
        let mut h = Harness::new(Limits::default());
        let body = pairs(PARAMS);
        h.feed(&[begin(1, 1, true), rec(4, 1, &body[..body.len() - 1], 0)].concat())
            .unwrap();
        assert_eq!(
            h.feed(&rec(4, 1, &[], 0)),
            Err(ProtocolError::Params {
                id: 1,
                error: NvError::Truncated
            })
        );
    }

    #[test]
    fn a_pair_may_straddle_params_records() {
        let body = pairs(PARAMS);
        let mut h = Harness::new(Limits::default());
        h.feed(&begin(1, 1, true)).unwrap();
        for piece in body.chunks(3) {
            h.feed(&rec(4, 1, piece, 2)).unwrap();
        }
        h.feed(&[rec(4, 1, &[], 0), rec(4, 1, b"\x01\x01AB", 0)].concat())
            .unwrap();
        assert_eq!(h.drain(), (vec![dispatched(1, true)], vec![]));
    }

    #[test]
    fn stdin_or_data_before_params_end_close() {
        for t in [5u8, 8] {
            let mut h = Harness::new(Limits::default());
            h.feed(&begin(4, 3, true)).unwrap();
            assert_eq!(
                h.feed(&rec(t, 4, b"", 0)),
                Err(ProtocolError::StdinBeforeParams(4))
            );
        }
    }

    #[test]
    fn abort_at_every_stage() {
        let mut h = Harness::new(Limits::default());
        // Inactive: ignored.
        h.feed(&rec(2, 1, &[], 0)).unwrap();
        assert_eq!(h.drain(), (vec![], vec![]));
        // Before BEGIN's body is complete, then while reading params: ended by the layer.
        let stream = [begin(1, 1, true), rec(2, 1, &[], 0)].concat();
        h.feed(&stream[..12]).unwrap();
        h.feed(&stream[12..]).unwrap();
        assert_eq!(
            h.drain(),
            (vec![], end(1, 0, ProtocolStatus::RequestComplete))
        );
        assert!(!h.conn.end_request(1, 0, &mut h.out));
        // Mid-params: same, and the rest of the params is ignored.
        h.feed(&[begin(1, 1, true), rec(4, 1, &pairs(PARAMS)[..5], 0)].concat())
            .unwrap();
        h.feed(&[rec(2, 1, &[], 0), rec(4, 1, &[], 0)].concat())
            .unwrap();
        assert_eq!(
            h.drain(),
            (vec![], end(1, 0, ProtocolStatus::RequestComplete))
        );
        // Dispatched: one Abort event, input ignored, the application ends it once.
        h.feed(&request(1, true)).unwrap();
        h.feed(&[rec(5, 1, b"a", 0), rec(2, 1, &[], 0)].concat())
            .unwrap();
        h.feed(&[rec(2, 1, &[], 0), rec(5, 1, b"b", 0), rec(5, 1, b"", 0)].concat())
            .unwrap();
        h.feed(&rec(8, 1, b"", 0)).unwrap();
        assert_eq!(
            h.drain(),
            (
                vec![
                    dispatched(1, true),
                    Ev::Stdin(1, b"a".to_vec()),
                    Ev::Abort(1)
                ],
                vec![]
            )
        );
        assert_eq!(h.conn.active_requests(), 1);
        assert!(h.conn.end_request(1, 2, &mut h.out));
        assert!(!h.conn.end_request(1, 2, &mut h.out));
        // After END: ignored.
        h.feed(&rec(2, 1, &[], 0)).unwrap();
        assert_eq!(
            h.drain(),
            (vec![], end(1, 2, ProtocolStatus::RequestComplete))
        );
        // After STDIN ended, before END: still an Abort.
        h.feed(&[request(1, true), rec(5, 1, &[], 0), rec(2, 1, &[], 0)].concat())
            .unwrap();
        assert_eq!(
            h.drain().0,
            [dispatched(1, true), Ev::StdinEnd(1), Ev::Abort(1)]
        );
    }

    #[test]
    fn abort_before_dispatch_without_keep_conn_closes() {
        let mut h = Harness::new(Limits::default());
        h.feed(&[begin(1, 1, false), rec(2, 1, &[], 0)].concat())
            .unwrap();
        assert!(h.conn.should_close());
    }

    #[test]
    fn end_request_mid_record_drops_the_rest() {
        let mut h = Harness::new(Limits::default());
        h.feed(&request(1, true)).unwrap();
        let stdin = rec(5, 1, b"abcdef", 2);
        h.feed(&stdin[..10]).unwrap();
        assert!(h.conn.end_request(1, 0, &mut h.out));
        h.feed(&stdin[10..]).unwrap();
        h.feed(&request(1, true)).unwrap();
        assert_eq!(
            h.drain().0,
            [
                dispatched(1, true),
                Ev::Stdin(1, b"ab".to_vec()),
                dispatched(1, true)
            ]
        );
    }

    #[test]
    fn full_id_range_and_hundreds_multiplexed() {
        let limits = Limits {
            max_requests_per_conn: 300,
            ..Limits::default()
        };
        let mut h = Harness::new(limits);
        let ids: Vec<u16> = (0..300u16).map(|i| 65535 - i * 211).collect();
        for &id in &ids {
            h.feed(&request(id, true)).unwrap();
        }
        assert_eq!(h.conn.active_requests(), 300);
        assert_eq!(h.conn.max_active_seen(), 300);
        for &id in ids.iter().rev() {
            h.feed(&rec(5, id, &id.to_be_bytes(), 0)).unwrap();
        }
        let (events, _) = h.drain();
        let stdin: Vec<Ev> = events.into_iter().skip(300).collect();
        let expected: Vec<Ev> = ids
            .iter()
            .rev()
            .map(|&id| Ev::Stdin(id, id.to_be_bytes().to_vec()))
            .collect();
        assert_eq!(stdin, expected);
        for &id in ids.iter().step_by(2) {
            assert!(h.conn.end_request(id, 0, &mut h.out));
        }
        assert_eq!(h.conn.active_requests(), 150);
        for &id in &ids {
            assert_eq!(
                h.conn.is_active(id),
                !ids.iter().step_by(2).any(|&i| i == id)
            );
        }
        assert_eq!(h.conn.max_active_seen(), 300);
    }

    #[test]
    fn padding_is_skipped_wherever_cut() {
        let stream = [
            begin(1, 1, true),
            rec(4, 1, &pairs(PARAMS), 255),
            rec(4, 1, &[], 7),
            rec(5, 1, b"body", 255),
            rec(5, 1, &[], 1),
        ]
        .concat();
        let mut h = Harness::new(Limits::default());
        for piece in stream.chunks(13) {
            h.feed(piece).unwrap();
        }
        assert_eq!(
            merge(h.drain().0),
            [
                dispatched(1, true),
                Ev::Stdin(1, b"body".to_vec()),
                Ev::StdinEnd(1)
            ]
        );
    }

    #[test]
    fn empty_input_does_nothing() {
        let mut h = Harness::new(Limits::default());
        h.feed(&[]).unwrap();
        assert_eq!(h.drain(), (vec![], vec![]));
    }

    #[test]
    fn filter_and_authorizer_roles() {
        let mut h = Harness::new(Limits::default());
        let mut stream = begin(1, 3, true);
        stream.extend(rec(4, 1, &[], 0));
        stream.extend(begin(2, 2, false));
        stream.extend(rec(4, 2, &[], 0));
        h.feed(&stream).unwrap();
        assert_eq!(
            h.drain().0,
            [
                Ev::Request(1, Role::Filter, true, Params::default()),
                Ev::Request(2, Role::Authorizer, false, Params::default())
            ]
        );
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            ProtocolError::BadVersion(3).to_string(),
            "FastCGI version 3 is not 1"
        );
        let params = ProtocolError::Params {
            id: 4,
            error: NvError::Truncated,
        };
        assert!(params.to_string().starts_with("request 4: "));
        assert_eq!(RejectReason::UnknownRole(7).to_string(), "unknown role 7");
        assert_eq!(
            RejectReason::TooManyParams.to_string(),
            "more params than limits.max_params_pairs"
        );
    }

    #[test]
    fn end_request_writes_app_status() {
        let mut h = Harness::new(Limits::default());
        h.feed(&request(9, true)).unwrap();
        assert!(h.conn.end_request(9, 0xDEAD_BEEF, &mut h.out));
        let mut expected = Vec::new();
        encode_record(
            &mut expected,
            RecordType::EndRequest,
            9,
            &[0xDE, 0xAD, 0xBE, 0xEF, 0, 0, 0, 0],
        );
        assert_eq!(h.out, expected);
    }
}
