//! FastCGI 1.0 records (spec section 3.3 and 8): header, types, fixed bodies, encoders.
//!
//! Guarantees: parsing never panics on any input (headers are fixed 8-byte views) and encoders
//! only append to the caller's buffer; stream encoders split at the spec's 65535-byte limit.

/// `FCGI_VERSION_1` (spec 8): the only version that exists.
pub const VERSION_1: u8 = 1;
/// `FCGI_HEADER_LEN` (spec 8).
pub const HEADER_LEN: usize = 8;
/// Largest `contentLength` a record can carry (u16).
pub const MAX_CONTENT_LEN: usize = u16::MAX as usize;
/// `FCGI_NULL_REQUEST_ID` (spec 8): management records use it.
pub const NULL_REQUEST_ID: u16 = 0;
/// `FCGI_KEEP_CONN` (spec 5.1): flag bit in BEGIN_REQUEST.
pub const FLAG_KEEP_CONN: u8 = 1;
/// Length of the BEGIN_REQUEST and END_REQUEST bodies (spec 5.1, 5.5).
pub const BEGIN_BODY_LEN: usize = 8;
/// Length of an END_REQUEST body (spec 5.5).
pub const END_BODY_LEN: usize = 8;

/// Record types (spec 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordType {
    BeginRequest = 1,
    AbortRequest = 2,
    EndRequest = 3,
    Params = 4,
    Stdin = 5,
    Stdout = 6,
    Stderr = 7,
    Data = 8,
    GetValues = 9,
    GetValuesResult = 10,
    UnknownType = 11,
}

impl RecordType {
    /// The record type for a type byte, `None` for a type this version does not define.
    pub fn from_u8(value: u8) -> Option<RecordType> {
        Some(match value {
            1 => RecordType::BeginRequest,
            2 => RecordType::AbortRequest,
            3 => RecordType::EndRequest,
            4 => RecordType::Params,
            5 => RecordType::Stdin,
            6 => RecordType::Stdout,
            7 => RecordType::Stderr,
            8 => RecordType::Data,
            9 => RecordType::GetValues,
            10 => RecordType::GetValuesResult,
            11 => RecordType::UnknownType,
            _ => return None,
        })
    }

    /// Management record types travel on request id 0 (spec 3.3).
    pub fn is_management(self) -> bool {
        matches!(
            self,
            RecordType::GetValues | RecordType::GetValuesResult | RecordType::UnknownType
        )
    }
}

/// Roles (spec 5.1, 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Role {
    Responder = 1,
    Authorizer = 2,
    Filter = 3,
}

impl Role {
    /// The role for a role number, `None` for one the spec does not define (answered with
    /// `FCGI_UNKNOWN_ROLE`).
    pub fn from_u16(value: u16) -> Option<Role> {
        match value {
            1 => Some(Role::Responder),
            2 => Some(Role::Authorizer),
            3 => Some(Role::Filter),
            _ => None,
        }
    }
}

/// `protocolStatus` of END_REQUEST (spec 5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProtocolStatus {
    RequestComplete = 0,
    CantMpxConn = 1,
    Overloaded = 2,
    UnknownRole = 3,
}

impl ProtocolStatus {
    /// The status for a status byte, `None` for an undefined one.
    pub fn from_u8(value: u8) -> Option<ProtocolStatus> {
        match value {
            0 => Some(ProtocolStatus::RequestComplete),
            1 => Some(ProtocolStatus::CantMpxConn),
            2 => Some(ProtocolStatus::Overloaded),
            3 => Some(ProtocolStatus::UnknownRole),
            _ => None,
        }
    }
}

/// A record header (spec 3.3), as raw fields: the version and type are not validated here so
/// that the caller can decide how to answer an unknown one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub record_type: u8,
    pub request_id: u16,
    pub content_length: u16,
    pub padding_length: u8,
}

impl Header {
    /// A version-1 header.
    pub fn new(record_type: RecordType, request_id: u16, content_length: u16) -> Header {
        Header {
            version: VERSION_1,
            record_type: record_type as u8,
            request_id,
            content_length,
            padding_length: 0,
        }
    }

    /// Reads the 8 header bytes. Never fails: every byte pattern is a header.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: bytes[0],
            record_type: bytes[1],
            request_id: u16::from_be_bytes([bytes[2], bytes[3]]),
            content_length: u16::from_be_bytes([bytes[4], bytes[5]]),
            padding_length: bytes[6],
        }
    }

    /// The 8 header bytes (the reserved byte is zero).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let id = self.request_id.to_be_bytes();
        let len = self.content_length.to_be_bytes();
        [
            self.version,
            self.record_type,
            id[0],
            id[1],
            len[0],
            len[1],
            self.padding_length,
            0,
        ]
    }

    /// The known record type, if any.
    pub fn known_type(&self) -> Option<RecordType> {
        RecordType::from_u8(self.record_type)
    }

    /// Bytes of content plus padding that follow this header.
    pub fn body_len(&self) -> usize {
        self.content_length as usize + self.padding_length as usize
    }
}

/// Appends one record with `content` (at most [`MAX_CONTENT_LEN`] bytes) and no padding.
///
/// # Panics
/// Never for content within the limit; longer content is the caller's bug and is split by
/// [`encode_stream`] instead, so this function truncates nothing and asserts in debug builds.
pub fn encode_record(out: &mut Vec<u8>, record_type: RecordType, request_id: u16, content: &[u8]) {
    debug_assert!(content.len() <= MAX_CONTENT_LEN);
    let len = content.len().min(MAX_CONTENT_LEN);
    out.extend_from_slice(&Header::new(record_type, request_id, len as u16).encode());
    out.extend_from_slice(&content[..len]);
}

/// Appends `data` as records of a stream (STDOUT, STDERR, PARAMS, STDIN, DATA), split into
/// records of at most [`MAX_CONTENT_LEN`] bytes. Empty `data` appends nothing: the stream's end
/// is written by [`encode_stream_end`] (spec 3.3, "Streams").
pub fn encode_stream(out: &mut Vec<u8>, record_type: RecordType, request_id: u16, data: &[u8]) {
    out.reserve(data.len() + HEADER_LEN * (data.len() / MAX_CONTENT_LEN + 1));
    for chunk in data.chunks(MAX_CONTENT_LEN) {
        encode_record(out, record_type, request_id, chunk);
    }
}

/// Appends the empty record that ends a stream.
pub fn encode_stream_end(out: &mut Vec<u8>, record_type: RecordType, request_id: u16) {
    encode_record(out, record_type, request_id, &[]);
}

/// Appends FCGI_BEGIN_REQUEST (spec 5.1) with the given role number (raw, so that a client can
/// send an undefined one) and KEEP_CONN flag.
pub fn encode_begin_request(out: &mut Vec<u8>, request_id: u16, role: u16, keep_conn: bool) {
    let r = role.to_be_bytes();
    let flags = if keep_conn { FLAG_KEEP_CONN } else { 0 };
    encode_record(
        out,
        RecordType::BeginRequest,
        request_id,
        &[r[0], r[1], flags, 0, 0, 0, 0, 0],
    );
}

/// Appends FCGI_ABORT_REQUEST (spec 5.4).
pub fn encode_abort_request(out: &mut Vec<u8>, request_id: u16) {
    encode_record(out, RecordType::AbortRequest, request_id, &[]);
}

/// Appends FCGI_END_REQUEST (spec 5.5).
pub fn encode_end_request(
    out: &mut Vec<u8>,
    request_id: u16,
    app_status: u32,
    status: ProtocolStatus,
) {
    let a = app_status.to_be_bytes();
    encode_record(
        out,
        RecordType::EndRequest,
        request_id,
        &[a[0], a[1], a[2], a[3], status as u8, 0, 0, 0],
    );
}

/// Appends FCGI_UNKNOWN_TYPE (spec 4.2) for the management record type `unknown`.
pub fn encode_unknown_type(out: &mut Vec<u8>, unknown: u8) {
    encode_record(
        out,
        RecordType::UnknownType,
        NULL_REQUEST_ID,
        &[unknown, 0, 0, 0, 0, 0, 0, 0],
    );
}

/// The body of FCGI_BEGIN_REQUEST (spec 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginRequestBody {
    /// Raw role number; see [`Role::from_u16`].
    pub role: u16,
    pub keep_conn: bool,
}

impl BeginRequestBody {
    /// Reads the 8-byte body.
    pub fn parse(body: &[u8; BEGIN_BODY_LEN]) -> BeginRequestBody {
        BeginRequestBody {
            role: u16::from_be_bytes([body[0], body[1]]),
            keep_conn: body[2] & FLAG_KEEP_CONN != 0,
        }
    }
}

/// The body of FCGI_END_REQUEST (spec 5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRequestBody {
    pub app_status: u32,
    /// Raw protocol status; see [`ProtocolStatus::from_u8`].
    pub protocol_status: u8,
}

impl EndRequestBody {
    /// Reads the 8-byte body.
    pub fn parse(body: &[u8; END_BODY_LEN]) -> EndRequestBody {
        EndRequestBody {
            app_status: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            protocol_status: body[4],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            version: 1,
            record_type: 5,
            request_id: 0xBEEF,
            content_length: 0x1234,
            padding_length: 7,
        };
        assert_eq!(h.encode(), [1, 5, 0xBE, 0xEF, 0x12, 0x34, 7, 0]);
        assert_eq!(Header::parse(&h.encode()), h);
        assert_eq!(h.body_len(), 0x1234 + 7);
    }

    #[test]
    fn end_request_bytes() {
        let mut out = Vec::new();
        encode_end_request(&mut out, 1, 0x01020304, ProtocolStatus::Overloaded);
        assert_eq!(out, [1, 3, 0, 1, 0, 8, 0, 0, 1, 2, 3, 4, 2, 0, 0, 0]);
    }

    #[test]
    fn begin_request_bytes() {
        let mut out = Vec::new();
        encode_begin_request(&mut out, 258, 1, true);
        assert_eq!(out, [1, 1, 1, 2, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
        let body: [u8; 8] = out[8..].try_into().unwrap();
        assert_eq!(
            BeginRequestBody::parse(&body),
            BeginRequestBody {
                role: 1,
                keep_conn: true
            }
        );
    }

    #[test]
    fn stream_splits_at_max_content_len() {
        let data = vec![7u8; MAX_CONTENT_LEN + 10];
        let mut out = Vec::new();
        encode_stream(&mut out, RecordType::Stdout, 3, &data);
        assert_eq!(out.len(), data.len() + 2 * HEADER_LEN);
        let first = Header::parse(out[..8].try_into().unwrap());
        assert_eq!(first.content_length as usize, MAX_CONTENT_LEN);
        let second_at = HEADER_LEN + MAX_CONTENT_LEN;
        let second = Header::parse(out[second_at..second_at + 8].try_into().unwrap());
        assert_eq!(second.content_length, 10);
        assert_eq!(second.request_id, 3);
    }

    #[test]
    fn empty_stream_writes_nothing_and_end_writes_empty_record() {
        let mut out = Vec::new();
        encode_stream(&mut out, RecordType::Stdout, 1, &[]);
        assert!(out.is_empty());
        encode_stream_end(&mut out, RecordType::Stdout, 1);
        assert_eq!(out, [1, 6, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn unknown_type_bytes() {
        let mut out = Vec::new();
        encode_unknown_type(&mut out, 200);
        assert_eq!(out, [1, 11, 0, 0, 0, 8, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0]);
    }
}
