//! The per-connection protocol state machine (spec 3, 4, 5, 6).
//!
//! Feed it received bytes cut anywhere; it emits [`Event`]s for the application and appends the
//! protocol's own answers (GET_VALUES_RESULT, UNKNOWN_TYPE, END_REQUEST with UNKNOWN_ROLE or
//! OVERLOADED) to the caller's output buffer. The application answers a request with the
//! encoders in [`super::record`] and ends it with [`Connection::end_request`], which guarantees
//! exactly one END_REQUEST per request.

use super::nv::NvError;
use super::params::Params;
use super::record::Role;

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
    /// [`Connection::end_request`].
    Abort { id: u16 },
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
        todo!()
    }
}

impl std::error::Error for ProtocolError {}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    limits: Limits,
}

impl Connection {
    pub fn new(limits: Limits) -> Connection {
        todo!()
    }

    /// Feeds received bytes; see the module doc.
    pub fn receive(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        todo!()
    }

    /// Ends request `id`: appends END_REQUEST (REQUEST_COMPLETE, `app_status`) and makes the id
    /// inactive. Returns false, writing nothing, if `id` is not active.
    pub fn end_request(&mut self, id: u16, app_status: u32, out: &mut Vec<u8>) -> bool {
        todo!()
    }

    /// Requests active now.
    pub fn active_requests(&self) -> usize {
        todo!()
    }

    /// Most requests seen active at once on this connection.
    pub fn max_active_seen(&self) -> usize {
        todo!()
    }

    /// A request without KEEP_CONN has ended: close after flushing output.
    pub fn should_close(&self) -> bool {
        todo!()
    }
}
