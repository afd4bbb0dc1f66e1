//! The CGI response header block written at the start of STDOUT (RFC 3875 section 6.3).

/// Appends `Status: <code> <reason>\r\n`, every header as `Name: value\r\n`, a
/// `Content-Length` when `body_len` is known and the handler set none, and the blank line.
pub fn encode_head(parts: &http::response::Parts, body_len: Option<u64>, out: &mut Vec<u8>) {
    todo!()
}

/// Appends a header block for a bare status with a text/plain body of `body_len` bytes (used
/// for 400 and 500 answers the runtime makes itself).
pub fn encode_status_only(status: http::StatusCode, body_len: u64, out: &mut Vec<u8>) {
    todo!()
}
