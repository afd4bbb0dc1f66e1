//! The handler side of the core: a response's head and body encoded as STDOUT records straight
//! into the connection's output queue, the request ended with END_REQUEST, and backpressure
//! for streaming handlers.
//!
//! Guarantees: a handler writes only to its own live request (a later request that reuses the
//! id is never reached); a HEAD request's body is never sent (RFC 3875 4.3.3); a handler waits
//! while its connection's backlog is at `max_output_buffer`.

use super::io::{MAX_SHARED, OutBuf, SHARE_MIN};
use super::requests::{ReqEntry, ReqKey};
use super::state::Conn;
use super::{ConnKey, Core};
use crate::stats::Counter;
use crate::stats::metrics::EndStatus;
use bytes::{Buf, Bytes};
use fcgi_proto::record;
use std::task::{Context, Poll};

impl Core {
    /// Runs `f` on the request if it is still in flight.
    fn with_request<R>(&self, rk: ReqKey, f: impl FnOnce(&mut Conn, &Core) -> R) -> Option<R> {
        let mut conns = self.conns.borrow_mut();
        let conn = conns.get_mut(rk.conn)?;
        conn.live_request(rk)?;
        Some(f(conn, self))
    }

    /// Runs `f` on the entry of `rk` if the request is still live (see `with_request`).
    fn with_entry<R>(&self, rk: ReqKey, f: impl FnOnce(&mut ReqEntry) -> R) -> Option<R> {
        let mut conns = self.conns.borrow_mut();
        conns.get_mut(rk.conn)?.live_request(rk).map(f)
    }

    /// Writes `head` (if any) followed by `data` as STDOUT, then, if `last`, ends the request
    /// as [`Core::finish`] with app status 0 does. Returns false when the request is gone
    /// (aborted, connection closed): the caller stops producing.
    pub fn write_stdout(
        &self,
        rk: ReqKey,
        head: Option<Head<'_>>,
        data: &mut impl Buf,
        last: bool,
    ) -> bool {
        let mut conns = self.conns.borrow_mut();
        let Some(conn) = conns.get_mut(rk.conn) else {
            return false;
        };
        // One lookup for the liveness check and both flags.
        let Some((entry, out)) = conn.live_request_and_output(rk) else {
            return false;
        };
        if entry.head_only {
            data.advance(data.remaining());
        }
        let body_len = data.remaining();
        entry.body_bytes += body_len as u64;
        if let Some(head) = &head {
            entry.head_sent = true;
            let status = head.status();
            entry.status = status.as_u16();
            self.stats.shared.metrics.response(status);
            if let Some(info) = entry.info.as_mut()
                && self
                    .settings
                    .logs
                    .as_ref()
                    .is_some_and(|l| l.slow.is_some())
            {
                info.first_byte = Some(std::time::Instant::now());
            }
        }
        if body_len >= SHARE_MIN && out.shared_chunks() < MAX_SHARED {
            // Sent from the handler's buffer: `copy_to_bytes` of a `Bytes` is a slice of it.
            out.bytes_mut()
                .reserve(stdout_room(0, head.is_some(), last) + records_room(body_len));
            encode_stdout_shared(out, rk.id, head, data.copy_to_bytes(body_len));
        } else {
            encode_stdout_copied(out.bytes_mut(), rk.id, head, data, last);
        }
        if last {
            self.end_stdout(rk, conn, 0);
        } else {
            self.mark_dirty(rk.conn, conn);
        }
        true
    }

    /// Marks a HEAD request: its response body is not sent (RFC 3875 4.3.3).
    pub fn set_head_only(&self, rk: ReqKey) {
        self.with_entry(rk, |e| e.head_only = true);
    }

    /// Ends the request: STDOUT end, END_REQUEST with `app_status`, entry removed.
    pub fn finish(&self, rk: ReqKey, app_status: u32) {
        self.with_request(rk, |conn, core| core.end_stdout(rk, conn, app_status));
    }

    /// STDOUT end, then END_REQUEST with `app_status` (see [`Core::end_request`]).
    fn end_stdout(&self, rk: ReqKey, conn: &mut Conn, app_status: u32) {
        record::encode_stream_end(conn.output(), record::RecordType::Stdout, rk.id);
        self.end_request(rk.conn, conn, rk.id, app_status);
    }

    /// Ends the request after a handler error or panic: a 500 if nothing was sent yet, else
    /// the response is cut short.
    pub fn fail(&self, rk: ReqKey) {
        self.stats.count(Counter::HandlerFailed);
        self.cut_or(rk, http::StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// Ends a request whose handler was cancelled at its deadline: a 504 if nothing was sent
    /// yet, else the response is cut short.
    pub fn time_out(&self, rk: ReqKey) {
        self.cut_or(rk, http::StatusCode::GATEWAY_TIMEOUT);
    }

    fn cut_or(&self, rk: ReqKey, status: http::StatusCode) {
        let head_sent = self.with_entry(rk, |e| e.head_sent).unwrap_or(true);
        if !head_sent {
            self.write_status(rk, status);
            return;
        }
        self.finish(rk, 1);
    }

    /// Answers with a bare status and its reason as the body, then ends the request.
    pub fn write_status(&self, rk: ReqKey, status: http::StatusCode) {
        let reason = status.canonical_reason().unwrap_or("Error");
        let head = Head::Status(status, reason.len() as u64);
        self.write_stdout(rk, Some(head), &mut reason.as_bytes(), true);
    }

    /// END_REQUEST for `id` (after its STDOUT end was written), entry removed, connection
    /// state updated for KEEP_CONN=0.
    pub(super) fn end_request(&self, key: ConnKey, conn: &mut Conn, id: u16, app_status: u32) {
        let was_active = conn.end_request(id, app_status, self.now_ms(), |entry| {
            self.active.set(self.active.get().saturating_sub(1));
            if entry.head_sent {
                self.response_ended(entry.params_done);
            }
            if let Some(ended) = super::oplog::Ended::of(entry, key.token())
                && let Some(log) = self.log.borrow_mut().as_mut()
            {
                log.end(ended);
            }
        });
        if was_active {
            self.stats
                .shared
                .metrics
                .end_request(EndStatus::RequestComplete);
        }
        self.mark_dirty(key, conn);
    }

    /// Ready when the connection has room for more response bytes (or the request is gone).
    pub fn poll_writable(&self, rk: ReqKey, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.settings.max_output_buffer;
        let room = self.with_request(rk, |conn, _| {
            if conn.backlog() < limit {
                true
            } else {
                conn.wait_writable(cx.waker());
                false
            }
        });
        match room {
            Some(false) => Poll::Pending,
            _ => Poll::Ready(()),
        }
    }
}

/// The CGI response head that starts a request's STDOUT, encoded straight into the
/// connection's output.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Head<'a> {
    /// A handler's response head and its body length, when known (see [`crate::cgi::encode_head`]).
    Response(&'a http::response::Parts, Option<u64>),
    /// A bare status answered by the runtime, with a text/plain body of this many bytes.
    Status(http::StatusCode, u64),
}

impl Head<'_> {
    fn status(&self) -> http::StatusCode {
        match self {
            Head::Response(parts, _) => parts.status,
            Head::Status(status, _) => *status,
        }
    }

    fn encode(self, out: &mut Vec<u8>) {
        match self {
            Head::Response(parts, body_len) => crate::cgi::encode_head(parts, body_len, out),
            Head::Status(status, body_len) => crate::cgi::encode_status_only(status, body_len, out),
        }
    }
}

/// A CGI head's usual size at most, for reserving output room before it is encoded.
const HEAD_ROOM: usize = 256;

/// Output bytes for `body_len` bytes of STDOUT (with the head's usual room, and the stream's
/// end and END_REQUEST when `last`).
fn stdout_room(body_len: usize, head: bool, last: bool) -> usize {
    let records = body_len / record::MAX_CONTENT_LEN + 2;
    let head = if head { HEAD_ROOM } else { 0 };
    let end = if last { 2 * record::HEADER_LEN + 8 } else { 0 };
    body_len + head + records * record::HEADER_LEN + end
}

/// Record headers for `body_len` bytes of STDOUT.
fn records_room(body_len: usize) -> usize {
    (body_len / record::MAX_CONTENT_LEN + 2) * record::HEADER_LEN
}

/// Encodes `head` (if any) and `data` as STDOUT records copied into `out`.
fn encode_stdout_copied(
    out: &mut Vec<u8>,
    id: u16,
    head: Option<Head<'_>>,
    data: &mut impl Buf,
    last: bool,
) {
    // Room for all of it at once: a queue that grows while a large body is encoded copies
    // what it holds at every step.
    out.reserve(stdout_room(data.remaining(), head.is_some(), last));
    if let Some(head) = head {
        let first = data.chunk();
        encode_stdout2(out, id, head, first);
        let n = first.len();
        data.advance(n);
    }
    while data.has_remaining() {
        let chunk = data.chunk();
        record::encode_stream(out, record::RecordType::Stdout, id, chunk);
        let n = chunk.len();
        data.advance(n);
    }
}

/// The same records as [`encode_stdout2`] (or, without a head, `encode_stream`) writes, with
/// the body's large parts shared rather than copied (see [`OutBuf::push_chunk`]).
fn encode_stdout_shared(out: &mut OutBuf, id: u16, head: Option<Head<'_>>, mut body: Bytes) {
    if let Some(head) = head {
        let bytes = out.bytes_mut();
        let start = bytes.len();
        bytes.extend_from_slice(&[0; record::HEADER_LEN]);
        head.encode(bytes);
        let content_at = start + record::HEADER_LEN;
        let head_len = bytes.len() - content_at;
        match record::MAX_CONTENT_LEN.checked_sub(head_len) {
            Some(room) => {
                let first = body.split_to(room.min(body.len()));
                let len = u16::try_from(head_len + first.len()).unwrap_or(u16::MAX);
                let header = record::Header::new(record::RecordType::Stdout, id, len).encode();
                if let Some(slot) = bytes.get_mut(start..content_at) {
                    slot.copy_from_slice(&header);
                }
                out.push_chunk(first);
            }
            None => {
                // A head too large for one record (rare): a stream of its own.
                let head = bytes.split_off(content_at);
                bytes.truncate(start);
                record::encode_stream(bytes, record::RecordType::Stdout, id, &head);
            }
        }
    }
    while !body.is_empty() {
        let part = body.split_to(record::MAX_CONTENT_LEN.min(body.len()));
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        let header = record::Header::new(record::RecordType::Stdout, id, len).encode();
        out.bytes_mut().extend_from_slice(&header);
        out.push_chunk(part);
    }
}

/// Encodes `head ++ body` as STDOUT records of at most 65535 bytes, the first one filled with
/// the head and as much of the body as fits; the head is encoded in place, behind a record
/// header written once its length is known.
fn encode_stdout2(out: &mut Vec<u8>, id: u16, head: Head<'_>, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; record::HEADER_LEN]);
    head.encode(out);
    let content_at = start + record::HEADER_LEN;
    let head_len = out.len() - content_at;
    let Some(room) = record::MAX_CONTENT_LEN.checked_sub(head_len) else {
        // A head too large for one record (rare): a stream of its own, then the body's.
        let head = out.split_off(content_at);
        out.truncate(start);
        record::encode_stream(out, record::RecordType::Stdout, id, &head);
        record::encode_stream(out, record::RecordType::Stdout, id, body);
        return;
    };
    let (first, rest) = body.split_at(room.min(body.len()));
    let len = u16::try_from(head_len + first.len()).unwrap_or(u16::MAX);
    let header = record::Header::new(record::RecordType::Stdout, id, len).encode();
    if let Some(slot) = out.get_mut(start..content_at) {
        slot.copy_from_slice(&header);
    }
    out.extend_from_slice(first);
    // Most bodies fit the head's record: no call for an empty rest.
    if !rest.is_empty() {
        record::encode_stream(out, record::RecordType::Stdout, id, rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_head_and_body_share_one_record() {
        let mut out = b"queued".to_vec();
        let (parts, ()) = http::Response::new(()).into_parts();
        encode_stdout2(&mut out, 1, Head::Response(&parts, None), b"hi");
        assert_eq!(&out[..6], b"queued");
        assert_eq!(&out[6..14], &[1, 6, 0, 1, 0, 20, 0, 0]);
        assert_eq!(&out[14..], b"Status: 200 OK\r\n\r\nhi");
    }

    #[test]
    fn a_head_and_chunk_too_large_for_one_record_are_packed_into_full_records() {
        for body_len in [
            record::MAX_CONTENT_LEN - 40,
            65_536,
            3 * record::MAX_CONTENT_LEN + 7,
        ] {
            let mut out = b"queued".to_vec();
            let body: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();
            let head = Head::Status(http::StatusCode::OK, body.len() as u64);
            encode_stdout2(&mut out, 1, head, &body);
            let mut head_bytes = Vec::new();
            head.encode(&mut head_bytes);
            let mut expected = b"queued".to_vec();
            record::encode_stream(
                &mut expected,
                record::RecordType::Stdout,
                1,
                &[head_bytes, body].concat(),
            );
            // The same records as one stream of head ++ body: every record but the last full.
            assert_eq!(out, expected, "body of {body_len}");
        }
    }

    fn flat(out: &OutBuf) -> Vec<u8> {
        let mut all = Vec::new();
        out.append_to(&mut all);
        all
    }

    #[test]
    fn a_large_body_is_shared_in_the_same_records_as_a_copied_one() {
        let mut big_head = http::Response::new(()).into_parts().0;
        let value = http::HeaderValue::from_bytes(&vec![b'v'; 70_000]).unwrap();
        big_head.headers.insert("x-big", value);
        let small_head = http::Response::new(()).into_parts().0;
        for body_len in [
            SHARE_MIN,
            65_536,
            record::MAX_CONTENT_LEN - 20,
            3 * record::MAX_CONTENT_LEN + 7,
        ] {
            let body = Bytes::from((0..body_len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            for head in [
                None,
                Some(Head::Response(&small_head, Some(body_len as u64))),
                Some(Head::Response(&big_head, None)),
            ] {
                let mut copied = b"queued".to_vec();
                encode_stdout_copied(&mut copied, 3, head, &mut body.clone(), false);
                let mut shared = OutBuf::from(b"queued".to_vec());
                encode_stdout_shared(&mut shared, 3, head, body.clone());
                assert_eq!(flat(&shared), copied, "body of {body_len}");
                assert!(shared.shared_chunks() > 0, "body of {body_len} copied");
                // What was copied: record headers and the head, and at most the small first
                // part of a body behind a head that left less than SHARE_MIN of its record.
                let copied_bytes = shared.bytes_mut().len();
                assert!(
                    copied_bytes < 6 + 72_000 + SHARE_MIN,
                    "{copied_bytes} bytes copied for a body of {body_len}"
                );
            }
        }
    }

    #[test]
    fn a_head_too_large_for_one_record_gets_a_stream_of_its_own() {
        let mut out = Vec::new();
        let mut parts = http::Response::new(()).into_parts().0;
        let value = http::HeaderValue::from_bytes(&vec![b'v'; 70_000]).unwrap();
        parts.headers.insert("x-big", value);
        let head = Head::Response(&parts, None);
        encode_stdout2(&mut out, 1, head, b"body");
        let mut head_bytes = Vec::new();
        head.encode(&mut head_bytes);
        let mut expected = Vec::new();
        record::encode_stream(&mut expected, record::RecordType::Stdout, 1, &head_bytes);
        record::encode_stream(&mut expected, record::RecordType::Stdout, 1, b"body");
        assert_eq!(out, expected);
    }
}
