//! Grouping the application's records by request, and parsing the CGI response (RFC 3875
//! section 6) they carry.

use std::collections::BTreeMap;
use std::io;

use super::conn::Record;
use fcgi_proto::record::{EndRequestBody, VERSION_1};
use fcgi_proto::{ProtocolStatus, RecordType};

/// A response as the application sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// From the `Status` header; 302 for a `Location` without one (RFC 3875 6.2.3), else 200.
    pub status: u16,
    /// Header lines in order, `Status` excluded, values as written (lossy UTF-8).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub stderr: Vec<u8>,
    pub app_status: u32,
    pub protocol_status: u8,
}

impl Response {
    /// Parses `stdout` (header block, blank line, body). Header lines end in CRLF or LF; a
    /// missing blank line, a line without `:`, an empty or spaced name, a folded line or a bad
    /// `Status` is an `InvalidData` error. An application that refused the request (protocol
    /// status other than REQUEST_COMPLETE) and sent no STDOUT is an error naming the status.
    pub fn parse(stdout: &[u8], stderr: &[u8], end: EndRequestBody) -> io::Result<Response> {
        if end.protocol_status != ProtocolStatus::RequestComplete as u8 && stdout.is_empty() {
            return Err(io::Error::other(format!(
                "application refused the request: protocol status {} ({})",
                end.protocol_status,
                protocol_status_name(end.protocol_status)
            )));
        }
        let (headers, body_at) = parse_head(stdout)?;
        let mut status = None;
        let mut kept = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("status") {
                if status.is_some() {
                    return Err(invalid("more than one Status header".to_owned()));
                }
                status = Some(parse_status(&value)?);
            } else {
                kept.push((name, value));
            }
        }
        let has_location = kept.iter().any(|(n, _)| n.eq_ignore_ascii_case("location"));
        let status = status.unwrap_or(if has_location { 302 } else { 200 });
        Ok(Response {
            status,
            headers: kept,
            body: stdout[body_at..].to_vec(),
            stderr: stderr.to_vec(),
            app_status: end.app_status,
            protocol_status: end.protocol_status,
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The spec name of a protocol status.
pub(crate) fn protocol_status_name(status: u8) -> &'static str {
    match ProtocolStatus::from_u8(status) {
        Some(ProtocolStatus::RequestComplete) => "REQUEST_COMPLETE",
        Some(ProtocolStatus::CantMpxConn) => "CANT_MPX_CONN",
        Some(ProtocolStatus::Overloaded) => "OVERLOADED",
        Some(ProtocolStatus::UnknownRole) => "UNKNOWN_ROLE",
        None => "undefined",
    }
}

/// The spec name of a record type (spec 8, without `FCGI_`).
fn name(record_type: RecordType) -> &'static str {
    match record_type {
        RecordType::BeginRequest => "BEGIN_REQUEST",
        RecordType::AbortRequest => "ABORT_REQUEST",
        RecordType::EndRequest => "END_REQUEST",
        RecordType::Params => "PARAMS",
        RecordType::Stdin => "STDIN",
        RecordType::Stdout => "STDOUT",
        RecordType::Stderr => "STDERR",
        RecordType::Data => "DATA",
        RecordType::GetValues => "GET_VALUES",
        RecordType::GetValuesResult => "GET_VALUES_RESULT",
        RecordType::UnknownType => "UNKNOWN_TYPE",
    }
}

/// Header lines up to the blank line, and where the body starts.
fn parse_head(stdout: &[u8]) -> io::Result<(Vec<(String, String)>, usize)> {
    let mut headers = Vec::new();
    let mut at = 0;
    loop {
        let Some(nl) = stdout[at..].iter().position(|&b| b == b'\n') else {
            return Err(invalid(format!(
                "CGI header block not terminated by a blank line ({} bytes of STDOUT)",
                stdout.len()
            )));
        };
        let line = &stdout[at..at + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at += nl + 1;
        if line.is_empty() {
            return Ok((headers, at));
        }
        headers.push(parse_header_line(line)?);
    }
}

fn parse_header_line(line: &[u8]) -> io::Result<(String, String)> {
    let shown = || String::from_utf8_lossy(line).into_owned();
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(invalid(format!(
            "CGI header line without ':': {:?}",
            shown()
        )));
    };
    let name = &line[..colon];
    let is_token = |b: &u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(b);
    if name.is_empty() || !name.iter().all(is_token) {
        return Err(invalid(format!("invalid CGI header name in {:?}", shown())));
    }
    let value = line[colon + 1..].trim_ascii();
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// `404`, `404 Not Found`: three digits, then the end or a space.
fn parse_status(value: &str) -> io::Result<u16> {
    let code = value.split(' ').next().unwrap_or_default();
    match code.parse::<u16>() {
        Ok(code) if code.to_string().len() == 3 && code >= 100 => Ok(code),
        _ => Err(invalid(format!("invalid Status header {value:?}"))),
    }
}

/// What the application sent for one request id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exchange {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// STDOUT records received, the empty one included.
    pub stdout_records: usize,
    pub stdout_closed: bool,
    pub stderr_closed: bool,
    pub end: Option<EndRequestBody>,
}

impl Exchange {
    /// The parsed response; an error when END_REQUEST has not come or STDOUT is malformed.
    pub fn response(&self) -> io::Result<Response> {
        let end = self
            .end
            .ok_or_else(|| io::Error::other("request has no END_REQUEST yet"))?;
        Response::parse(&self.stdout, &self.stderr, end)
    }
}

/// The application's records grouped by request id, for multiplexing tests: which ids ended,
/// in which order, and every way the application broke the protocol.
#[derive(Debug, Clone, Default)]
pub struct Responses {
    exchanges: BTreeMap<u16, Exchange>,
    end_order: Vec<u16>,
    management: Vec<Record>,
    violations: Vec<String>,
}

impl Responses {
    pub fn new() -> Responses {
        Responses::default()
    }

    /// Files one record; returns its id when it is an END_REQUEST.
    pub fn push(&mut self, record: Record) -> Option<u16> {
        let id = record.id();
        if record.header.version != VERSION_1 {
            self.violate(format!("record with version {}", record.header.version));
        }
        let Some(record_type) = record.record_type() else {
            self.violate(format!(
                "record of undefined type {}",
                record.header.record_type
            ));
            return None;
        };
        if record_type.is_management() || id == 0 {
            if !record_type.is_management() || id != 0 {
                self.violate(format!("{} record on request id {id}", name(record_type)));
            }
            self.management.push(record);
            return None;
        }
        let ended = self.is_ended(id);
        if ended {
            self.violate(format!(
                "{} for request {id} after its END_REQUEST",
                name(record_type)
            ));
        }
        let exchange = self.exchanges.entry(id).or_default();
        let mut violations = Vec::new();
        match record_type {
            RecordType::Stdout | RecordType::Stderr => {
                let is_stdout = record_type == RecordType::Stdout;
                let (data, closed) = if is_stdout {
                    exchange.stdout_records += 1;
                    (&mut exchange.stdout, &mut exchange.stdout_closed)
                } else {
                    (&mut exchange.stderr, &mut exchange.stderr_closed)
                };
                if *closed {
                    violations.push(format!(
                        "{} for request {id} after its end",
                        name(record_type)
                    ));
                }
                if record.content.is_empty() {
                    *closed = true;
                }
                data.extend_from_slice(&record.content);
            }
            RecordType::EndRequest => {
                if !ended && !exchange.stdout_closed {
                    violations.push(format!("END_REQUEST for request {id} before STDOUT ended"));
                }
                match record.end_request() {
                    Some(body) if exchange.end.is_none() => exchange.end = Some(body),
                    Some(_) => {}
                    None => violations.push(format!("short END_REQUEST for request {id}")),
                }
                if !ended {
                    self.end_order.push(id);
                }
                self.violations.extend(violations);
                return Some(id);
            }
            other => violations.push(format!("{} record sent by the application", name(other))),
        }
        self.violations.extend(violations);
        None
    }

    fn violate(&mut self, message: String) {
        self.violations.push(message);
    }

    /// What request `id` has received so far.
    pub fn get(&self, id: u16) -> Option<&Exchange> {
        self.exchanges.get(&id)
    }

    /// Removes and returns request `id`'s records (its END_REQUEST stays counted).
    pub fn take(&mut self, id: u16) -> Option<Exchange> {
        self.exchanges.remove(&id)
    }

    /// Whether request `id` received its END_REQUEST.
    pub fn is_ended(&self, id: u16) -> bool {
        self.end_order.contains(&id)
    }

    /// Ids in the order their END_REQUEST arrived.
    pub fn end_order(&self) -> &[u16] {
        &self.end_order
    }

    /// Management records (GET_VALUES_RESULT, UNKNOWN_TYPE) received.
    pub fn management(&self) -> &[Record] {
        &self.management
    }

    /// Protocol violations by the application, in arrival order (empty for a correct one).
    pub fn violations(&self) -> &[String] {
        &self.violations
    }
}
