//! The access log and the slow-request log, as one worker records them.
//!
//! Guarantees: with both logs off, a request costs nothing here beyond a `None` check. With the
//! access log on, a request that ends (END_REQUEST written) appends one line to this worker's
//! own buffer; once [`HANDOVER_BYTES`] are pending (or the oldest line is [`HANDOVER_DELAY`]
//! old) the buffer is handed to the log writer thread without blocking (`try_send` on a
//! bounded channel), and the writer hands written buffers back for reuse ([`SpareBuffers`]),
//! so that a worker does not allocate and fault in a fresh buffer per handover. If the writer
//! falls behind, the buffer is kept and grows up to [`MAX_PENDING`], past which lines are
//! dropped and counted ([`Counter::AccessLogDropped`]): a worker never waits for the log and
//! its memory stays bounded. A slow request (`slow_log.threshold`) is logged when it ends with its timing
//! breakdown, and once while still running past the threshold.

use super::requests::ReqEntry;
use crate::cgi::NotedParams;
use crate::config::AccessLogFormat;
use crate::stats::Counter;
use fcgi_proto::PairAt;
use std::io::Write as _;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most bytes of lines a worker keeps while the writer is behind.
pub(crate) const MAX_PENDING: usize = 1 << 20;

/// Written buffers kept for reuse (all workers together).
const MAX_SPARE: usize = 16;

/// Chunks of lines queued to the writer thread (all workers together): at most 8 MiB of
/// lines.
pub(crate) const CHANNEL_CHUNKS: usize = 64;

/// A worker hands its lines over once this many bytes are pending (each handover wakes the
/// writer thread, on the worker's core when both are pinned to it)...
const HANDOVER_BYTES: usize = 128 * 1024;

/// ...or once the oldest pending line is this old (waking the writer thread once per loop turn
/// would cost a context switch each time).
const HANDOVER_DELAY: Duration = Duration::from_millis(50);

/// Room for a few lines past [`HANDOVER_BYTES`] in a fresh buffer.
const LINE_ROOM: usize = 4 * 1024;

/// What the log writer thread receives.
#[derive(Debug)]
pub(crate) enum LogMsg {
    /// Complete lines.
    Lines(Vec<u8>),
    /// Reopen the file (after a rename by logrotate): lines sent before go to the old file.
    Reopen,
    /// Write what is queued and exit.
    Stop,
}

/// Buffers the writer has written, emptied, for the workers to fill again. Touched once per
/// handover (about every [`HANDOVER_BYTES`] of lines), never per request, and never waited
/// for: a worker that finds it locked allocates a buffer instead.
#[derive(Debug, Default)]
pub(crate) struct SpareBuffers(Mutex<Vec<Vec<u8>>>);

impl SpareBuffers {
    /// An empty buffer with room for a handover's lines.
    fn take(&self) -> Vec<u8> {
        let spare = self.0.try_lock().ok().and_then(|mut s| s.pop());
        spare.unwrap_or_else(|| Vec::with_capacity(HANDOVER_BYTES + LINE_ROOM))
    }

    /// Keeps a written buffer for reuse (dropped when enough are kept, or if it grew past a
    /// handover's size while the writer was behind).
    pub fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() > HANDOVER_BYTES + LINE_ROOM {
            return;
        }
        buf.clear();
        if let Ok(mut spare) = self.0.lock()
            && spare.len() < MAX_SPARE
        {
            spare.push(buf);
        }
    }
}

/// Where the workers' access-log lines go.
#[derive(Debug)]
pub(crate) struct AccessSink {
    pub tx: SyncSender<LogMsg>,
    pub format: AccessLogFormat,
    pub spare: Arc<SpareBuffers>,
}

/// The operator logs' settings shared by every worker.
#[derive(Debug)]
pub(crate) struct OpLogs {
    /// The access log's writer, if the access log is on.
    pub access: Option<AccessSink>,
    /// `slow_log.threshold`, if on.
    pub slow: Option<Duration>,
    /// The admin listener's `/status` shows each worker's oldest request in flight.
    pub status: bool,
}

impl OpLogs {
    /// Whether every request needs its [`ReqInfo`] (the status page needs only the method
    /// and URI of requests still running after their first poll: see `Core::note_line`).
    pub fn wants_info(&self) -> bool {
        self.access.is_some() || self.slow.is_some()
    }
}

/// A worker's oldest request in flight, published about once a second for `/status`.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// When its params were complete.
    pub since: Instant,
    pub method: String,
    pub uri: String,
}

/// Most bytes of a request target [`Target`] copies; a longer one is kept by reference.
pub(crate) const SHORT_TARGET: usize = 120;

/// A request's target (path and query) as the logs and `/status` show it: a short one copied
/// into a buffer of its own (reused with the [`ReqInfo`] box it is in), so that the usual
/// request touches no reference count for it; a long one kept by reference.
#[derive(Clone)]
pub(crate) struct Target {
    short: [u8; SHORT_TARGET],
    short_len: usize,
    long: Option<http::uri::PathAndQuery>,
}

impl Default for Target {
    /// Empty, until [`Target::set`].
    fn default() -> Target {
        Target {
            short: [0; SHORT_TARGET],
            short_len: 0,
            long: None,
        }
    }
}

impl Target {
    /// Becomes `uri`'s path and query (`/` when it has none).
    pub fn set(&mut self, uri: &http::Uri) {
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        match self.short.get_mut(..target.len()) {
            Some(short) => {
                short.copy_from_slice(target.as_bytes());
                self.short_len = target.len();
                self.long = None;
            }
            None => self.long = uri.path_and_query().cloned(),
        }
    }

    /// Drops the reference to a long target (which may hold the request's params).
    pub fn release(&mut self) {
        self.long = None;
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.long {
            Some(long) => long.as_str().as_bytes(),
            None => self.short.get(..self.short_len).unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.bytes()))
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.bytes()))
    }
}

/// What the logs say about a request, kept from its dispatch to its end (only when a log is
/// on).
#[derive(Debug)]
pub(crate) struct ReqInfo {
    pub method: http::Method,
    pub target: Target,
    /// Only with the access log on.
    pub access: Option<AccessFields>,
    pub handler_started: Instant,
    pub first_byte: Option<Instant>,
    /// Logged as still running past the threshold.
    pub reported_running: bool,
}

/// What only the access log needs: the request's params (a reference count, no copy) and
/// where in them the remote address, referer and user agent are.
#[derive(Debug)]
pub(crate) struct AccessFields {
    version: http::Version,
    params: Option<(fcgi_proto::Params, NotedParams)>,
}

impl AccessFields {
    fn of(req: &http::Request<crate::body::RequestBody>) -> AccessFields {
        AccessFields {
            version: req.version(),
            params: req
                .extensions()
                .get::<crate::cgi::TrustedParams>()
                .map(|t| t.for_access_log()),
        }
    }

    /// The protocol with what surrounds it in the combined format (` HTTP/1.1" `), in one
    /// piece.
    fn protocol_and_quote(&self) -> &'static str {
        match self.version {
            http::Version::HTTP_10 => " HTTP/1.0\" ",
            http::Version::HTTP_2 => " HTTP/2.0\" ",
            http::Version::HTTP_3 => " HTTP/3.0\" ",
            _ => " HTTP/1.1\" ",
        }
    }

    /// The protocol alone, as the JSON format writes it.
    fn protocol(&self) -> &'static str {
        let quoted = self.protocol_and_quote();
        quoted.get(1..quoted.len() - 2).unwrap_or(quoted)
    }

    fn value(&self, at: fn(&NotedParams) -> Option<PairAt>) -> Option<&[u8]> {
        let (params, log) = self.params.as_ref()?;
        params.pair_at(at(log)?).map(|(_, v)| v)
    }

    fn remote(&self) -> Option<&[u8]> {
        self.value(|l| l.remote)
    }

    fn referer(&self) -> Option<&[u8]> {
        self.value(|l| l.referer)
    }

    fn user_agent(&self) -> Option<&[u8]> {
        self.value(|l| l.user_agent)
    }
}

impl ReqInfo {
    /// An empty box to [`ReqInfo::set`].
    fn boxed(now: Instant) -> Box<ReqInfo> {
        Box::new(ReqInfo {
            method: http::Method::GET,
            target: Target::default(),
            access: None,
            handler_started: now,
            first_byte: None,
            reported_running: false,
        })
    }

    /// Becomes what the logs keep of `req`, called at `now`.
    fn set(&mut self, logs: &OpLogs, req: &http::Request<crate::body::RequestBody>, now: Instant) {
        self.method.clone_from(req.method());
        self.target.set(req.uri());
        self.access = logs.access.is_some().then(|| AccessFields::of(req));
        self.handler_started = now;
        self.first_byte = None;
        self.reported_running = false;
    }

    /// Drops the references it holds (the request's params go back to their arena), keeping
    /// the box.
    fn clear(&mut self) {
        self.access = None;
        self.target.release();
    }
}

/// Boxes of ended requests' [`ReqInfo`] a worker keeps for reuse.
const MAX_SPARE_INFOS: usize = 256;

/// One worker's side of the logs.
#[derive(Debug)]
pub(crate) struct WorkerLog {
    pub logs: Arc<OpLogs>,
    worker: usize,
    /// ` worker=N conn=`, as every combined line of this worker has it.
    worker_part: Vec<u8>,
    pending: Vec<u8>,
    /// When running requests were last looked at for the slow log.
    last_scan: Option<Instant>,
    dates: DateCache,
    /// When the oldest pending line was written.
    pending_since: Option<Instant>,
    /// Emptied boxes of ended requests' [`ReqInfo`], so that a request does not allocate one
    /// (boxes, not values: a request entry holds its info boxed).
    #[allow(clippy::vec_box)]
    spare_infos: Vec<Box<ReqInfo>>,
    /// Requests that ended since the last flush, logged at the flush (one clock read for all).
    ended: Vec<Ended>,
}

/// A request that ended, for its log lines.
#[derive(Debug)]
pub(crate) struct Ended {
    pub info: Box<ReqInfo>,
    pub conn: u64,
    pub id: u16,
    /// The HTTP status sent (0: none).
    pub status: u16,
    pub bytes: u64,
    /// When its params were complete.
    pub start: Instant,
}

impl Ended {
    /// What the logs say of `entry`, which ended on connection `conn` (`None` unless a log is
    /// on).
    pub fn of(entry: &mut ReqEntry, conn: u64) -> Option<Ended> {
        Some(Ended {
            info: entry.info.take()?,
            conn,
            id: entry.id,
            status: entry.status,
            bytes: entry.body_bytes,
            start: entry.params_done,
        })
    }
}

impl WorkerLog {
    pub fn new(logs: Arc<OpLogs>, worker: usize) -> WorkerLog {
        WorkerLog {
            logs,
            worker,
            worker_part: format!(" worker={worker} conn=").into_bytes(),
            pending: Vec::new(),
            last_scan: None,
            dates: DateCache::default(),
            pending_since: None,
            spare_infos: Vec::new(),
            ended: Vec::new(),
        }
    }

    /// Logs `e` at the next [`WorkerLog::write_ended`].
    pub fn end(&mut self, e: Ended) {
        self.ended.push(e);
    }

    /// Whether requests ended since the last [`WorkerLog::write_ended`].
    pub fn has_ended(&self) -> bool {
        !self.ended.is_empty()
    }

    /// Logs the requests that ended, as of `now` (when their answers go to the kernel).
    /// Returns how many access-log lines were dropped.
    pub fn write_ended(&mut self, now: Instant) -> u64 {
        let mut ended = std::mem::take(&mut self.ended);
        let mut dropped = 0;
        for e in ended.drain(..) {
            dropped += u64::from(self.ended_one(&e, now));
            self.recycle(e.info);
        }
        self.ended = ended;
        dropped
    }

    /// What the logs keep of `req`, in a box an ended request left (a fresh one if none is
    /// left).
    pub fn info(
        &mut self,
        req: &http::Request<crate::body::RequestBody>,
        now: Instant,
    ) -> Box<ReqInfo> {
        let mut info = self
            .spare_infos
            .pop()
            .unwrap_or_else(|| ReqInfo::boxed(now));
        info.set(&self.logs, req, now);
        info
    }

    /// Keeps an ended request's box for [`WorkerLog::info`], its references dropped now.
    pub fn recycle(&mut self, mut info: Box<ReqInfo>) {
        if self.spare_infos.len() < MAX_SPARE_INFOS {
            info.clear();
            self.spare_infos.push(info);
        }
    }

    /// Logs the end of a request: its access-log line, and a slow-log line if it was slow.
    /// Returns whether an access-log line was dropped.
    fn ended_one(&mut self, e: &Ended, now: Instant) -> bool {
        let info = &e.info;
        let total = now.saturating_duration_since(e.start);
        if let Some(threshold) = self.logs.slow
            && total >= threshold
        {
            slow_line(self.worker, e, now, total);
        }
        let (Some(AccessSink { format, .. }), Some(fields)) = (&self.logs.access, &info.access)
        else {
            return false;
        };
        if self.pending.len() >= MAX_PENDING {
            return true;
        }
        let line = Line {
            worker: self.worker,
            conn: e.conn,
            id: e.id,
            status: e.status,
            bytes: e.bytes,
            micros: total.as_micros() as u64,
            info,
            fields,
        };
        if self.pending_since.is_none() {
            self.pending_since = Some(now);
        }
        let json = matches!(format, AccessLogFormat::Json);
        let date = self.dates.get(now, json);
        match format {
            AccessLogFormat::Json => line.json(&mut self.pending, date),
            _ => line.combined(&mut self.pending, date.clf_part, &self.worker_part),
        }
        false
    }

    /// Hands the pending lines to the writer without blocking, once [`HANDOVER_BYTES`] are
    /// pending or the oldest is [`HANDOVER_DELAY`] old (kept for a later turn if the writer's
    /// queue is full).
    pub fn flush(&mut self, now: Instant) {
        if !self.handover_due(now) {
            return;
        }
        let Some(sink) = &self.logs.access else {
            return;
        };
        // The next lines go to a buffer of the size handed over, so that it is not grown
        // (and copied) line by line.
        let chunk = std::mem::replace(&mut self.pending, sink.spare.take());
        match sink.tx.try_send(LogMsg::Lines(chunk)) {
            Err(TrySendError::Full(LogMsg::Lines(chunk))) => {
                sink.spare
                    .give_back(std::mem::replace(&mut self.pending, chunk));
            }
            _ => self.pending_since = None,
        }
    }

    /// Whether [`WorkerLog::flush`] would hand lines over at `now`.
    fn handover_due(&self, now: Instant) -> bool {
        self.logs.access.is_some()
            && self.pending_since.is_some_and(|since| {
                self.pending.len() >= HANDOVER_BYTES
                    || now.saturating_duration_since(since) >= HANDOVER_DELAY
            })
    }

    /// Whether a flush has work here at `now` even with no connection changed: ended
    /// requests to log, lines due for the writer, running requests due for a look.
    pub fn due(&self, now: Instant) -> bool {
        self.has_ended() || self.handover_due(now) || self.scan_is_due(now)
    }

    /// When pending lines are due to be handed over (`None`: none pending).
    pub fn next_handover(&self) -> Option<Instant> {
        self.pending_since.map(|t| t + HANDOVER_DELAY)
    }

    /// Whether running requests are due to be looked at for the slow log and `/status` (about
    /// once a second).
    pub fn scan_due(&mut self, now: Instant) -> bool {
        let due = self.scan_is_due(now);
        if due {
            self.last_scan = Some(now);
        }
        due
    }

    fn scan_is_due(&self, now: Instant) -> bool {
        self.scans()
            && self
                .last_scan
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
    }

    /// Running requests are looked at: the slow log or `/status` is on.
    fn scans(&self) -> bool {
        self.logs.slow.is_some() || self.logs.status
    }

    /// When running requests are next due to be looked at (`None`: never).
    pub fn next_scan(&self) -> Option<Instant> {
        if !self.scans() {
            return None;
        }
        Some(
            self.last_scan
                .map_or_else(Instant::now, |t| t + Duration::from_secs(1)),
        )
    }

    /// The older of `oldest` and `entry` (for `/status`; only requests whose method and URI
    /// were kept count).
    pub fn older<'a>(oldest: Option<&'a ReqEntry>, entry: &'a ReqEntry) -> Option<&'a ReqEntry> {
        if entry.request_line().is_none() {
            return oldest;
        }
        match oldest {
            Some(o) if o.params_done <= entry.params_done => Some(o),
            _ => Some(entry),
        }
    }

    /// Logs `entry` once if it has been running past the threshold.
    pub fn check_running(&self, entry: &mut ReqEntry, conn: u64, now: Instant) {
        let (Some(threshold), Some(info)) = (self.logs.slow, entry.info.as_mut()) else {
            return;
        };
        let age = now.saturating_duration_since(entry.params_done);
        if age < threshold || info.reported_running {
            return;
        }
        info.reported_running = true;
        tracing::warn!(
            "slow request still running: {} {} running {:.3} s (worker {}, conn {conn}, id {}; handler started {:.3} s after params, first byte {})",
            info.method,
            info.target,
            age.as_secs_f64(),
            self.worker,
            entry.id,
            info.handler_started
                .saturating_duration_since(entry.params_done)
                .as_secs_f64(),
            since(info.first_byte, entry.params_done),
        );
    }
}

impl Drop for WorkerLog {
    /// At the worker's exit: the last lines go to the writer, waiting for room if need be.
    fn drop(&mut self) {
        self.write_ended(Instant::now());
        if let Some(sink) = &self.logs.access
            && !self.pending.is_empty()
        {
            let _ = sink
                .tx
                .send(LogMsg::Lines(std::mem::take(&mut self.pending)));
        }
    }
}

/// `+0.000123 s` after `start`, or `-` when it did not happen.
fn since(t: Option<Instant>, start: Instant) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| format!("{:.6} s", t.saturating_duration_since(start).as_secs_f64()),
    )
}

fn slow_line(worker: usize, e: &Ended, now: Instant, total: Duration) {
    let (info, start) = (&e.info, e.start);
    tracing::warn!(
        "slow request: {} {} took {:.6} s (worker {worker}, conn {}, id {}, status {}): params complete at 0, handler started {}, first response byte {}, last byte {}",
        info.method,
        info.target,
        total.as_secs_f64(),
        e.conn,
        e.id,
        e.status,
        since(Some(info.handler_started), start),
        since(info.first_byte, start),
        since(Some(now), start),
    );
}

/// One access-log line's fields.
struct Line<'a> {
    worker: usize,
    conn: u64,
    id: u16,
    status: u16,
    bytes: u64,
    micros: u64,
    info: &'a ReqInfo,
    fields: &'a AccessFields,
}

/// A header value's bytes, or `-`.
fn value_or_dash(v: Option<&[u8]>) -> &[u8] {
    match v {
        Some(v) if !v.is_empty() => v,
        _ => b"-",
    }
}

impl Line<'_> {
    /// `REMOTE - - [10/Oct/2000:13:55:36 +0000] "GET /x HTTP/1.1" 200 13 "referer" "agent"
    /// 123 worker=0 conn=5 id=1`: the combined log format, then the request time in
    /// microseconds, the worker, the connection and the request id. Written straight into
    /// `out`.
    /// The constant pieces come whole: the date with the separators around it (formatted once
    /// a second), the protocol with its closing quote, `worker=N conn=` (once per worker).
    fn combined(&self, out: &mut Vec<u8>, date_part: &str, worker_part: &[u8]) {
        let (i, f) = (self.info, self.fields);
        match f.remote() {
            Some(ip) if !ip.is_empty() => quoted(out, ip),
            _ => out.push(b'-'),
        }
        out.extend_from_slice(date_part.as_bytes());
        // A method is a token: nothing in it needs escaping.
        out.extend_from_slice(i.method.as_str().as_bytes());
        out.push(b' ');
        quoted(out, i.target.bytes());
        out.extend_from_slice(f.protocol_and_quote().as_bytes());
        push_status(out, self.status);
        push_u64(out, self.bytes);
        out.extend_from_slice(b" \"");
        quoted(out, value_or_dash(f.referer()));
        out.extend_from_slice(b"\" \"");
        quoted(out, value_or_dash(f.user_agent()));
        out.extend_from_slice(b"\" ");
        push_u64(out, self.micros);
        out.extend_from_slice(worker_part);
        push_u64(out, self.conn);
        out.extend_from_slice(b" id=");
        push_u64(out, self.id.into());
        out.push(b'\n');
    }

    fn json(&self, out: &mut Vec<u8>, date: Dated<'_>) {
        let (i, f) = (self.info, self.fields);
        let _ = write!(
            out,
            "{{\"time\":\"{}.{:03}Z\",\"remote\":\"",
            date.iso_second, date.millis
        );
        if let Some(ip) = f.remote() {
            json_escaped(out, ip);
        }
        let _ = write!(out, "\",\"method\":\"");
        json_escaped(out, i.method.as_str().as_bytes());
        out.extend_from_slice(b"\",\"uri\":\"");
        json_escaped(out, i.target.bytes());
        let _ = write!(
            out,
            "\",\"protocol\":\"{}\",\"status\":{},\"bytes\":{},\"referer\":\"",
            f.protocol(),
            self.status,
            self.bytes
        );
        json_escaped(out, f.referer().unwrap_or_default());
        out.extend_from_slice(b"\",\"user_agent\":\"");
        json_escaped(out, f.user_agent().unwrap_or_default());
        let _ = writeln!(
            out,
            "\",\"request_time_us\":{},\"worker\":{},\"conn\":{},\"id\":{}}}",
            self.micros, self.worker, self.conn, self.id
        );
    }
}

/// Appends a status and a space (`-` for none): three digits in one piece.
fn push_status(out: &mut Vec<u8>, status: u16) {
    match u8::try_from(status / 100) {
        Ok(hundreds @ 1..=9) => {
            let digit = |n: u16| b'0' + (n % 10) as u8;
            out.extend_from_slice(&[b'0' + hundreds, digit(status / 10), digit(status), b' ']);
        }
        _ if status == 0 => out.extend_from_slice(b"- "),
        _ => {
            push_u64(out, status.into());
            out.push(b' ');
        }
    }
}

/// Appends `n` in decimal.
fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The bytes [`quoted`] copies as they are: printable ASCII but `"` and `\`.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

/// `s` with `"`, `\`, control bytes and bytes over 0x7e escaped (`\"`, `\\`, `\xHH`), so that
/// a field cannot break its quotes or its line. A field that needs no escape (the usual one) is
/// checked eight bytes at a time and copied whole.
#[inline]
fn quoted(out: &mut Vec<u8>, s: &[u8]) {
    if all_plain(s) {
        out.extend_from_slice(s);
    } else {
        escaped(out, s);
    }
}

/// [`quoted`] for a field with bytes to escape: one pass, runs of plain bytes copied whole.
#[cold]
fn escaped(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        if PLAIN[usize::from(b)] {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
    }
    out.extend_from_slice(&s[start..]);
}

/// Whether every byte of `s` is [`PLAIN`], eight at a time (a field usually is).
fn all_plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `w` is zero: no false negative (a false positive only means the slow path).
    let zero_byte = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    let plain_word = |w: u64| {
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
        let over_7e = (w.wrapping_add(ONES) | w) & HIGHS;
        control
            | over_7e
            | zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\')))
            == 0
    };
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let Ok(bytes) = <[u8; 8]>::try_from(word) else {
            return false;
        };
        if !plain_word(u64::from_le_bytes(bytes)) {
            return false;
        }
    }
    // The last bytes: the string's last word when it has one (overlapping bytes already
    // checked), else the bytes padded with plain ones.
    let rest = words.remainder();
    if rest.is_empty() {
        return true;
    }
    let last = match s.len().checked_sub(8) {
        Some(at) => s.get(at..).and_then(|w| <[u8; 8]>::try_from(w).ok()),
        None => {
            let mut padded = [b'a'; 8];
            padded[..rest.len()].copy_from_slice(rest);
            Some(padded)
        }
    };
    last.is_some_and(|w| plain_word(u64::from_le_bytes(w)))
}

/// `s` as the inside of a JSON string (bytes that are not UTF-8 become U+FFFD).
fn json_escaped(out: &mut Vec<u8>, s: &[u8]) {
    for c in String::from_utf8_lossy(s).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// The wall-clock time of a monotonic instant, and its formatted forms, recomputed once a
/// second (no wall-clock read per line; a line within the second formatted last costs two
/// comparisons and one subtraction).
#[derive(Debug, Default)]
struct DateCache {
    /// A monotonic instant and the wall-clock time read with it.
    base: Option<(Instant, SystemTime)>,
    /// The monotonic instants where the formatted second starts and ends.
    span: Option<(Instant, Instant)>,
    second: u64,
    /// ` - - [10/Oct/2000:13:55:36 +0000] "`: the date with what surrounds it in the combined
    /// format.
    clf_part: String,
    iso: String,
}

/// A line's time, in the forms the formats use.
#[derive(Clone, Copy)]
struct Dated<'a> {
    /// ` - - [10/Oct/2000:13:55:36 +0000] "`
    clf_part: &'a str,
    /// `2000-10-10T13:55:36` (JSON adds `.mmmZ`)
    iso_second: &'a str,
    millis: u32,
}

impl DateCache {
    /// The time of `at` (both forms are formatted once a second; nothing is allocated per line).
    /// Its milliseconds only `with_millis` (else 0: the combined format has none).
    fn get(&mut self, at: Instant, with_millis: bool) -> Dated<'_> {
        if let Some((start, end)) = self.span
            && at >= start
            && at < end
        {
            return Dated {
                clf_part: &self.clf_part,
                iso_second: &self.iso,
                millis: if with_millis {
                    at.duration_since(start).subsec_millis()
                } else {
                    0
                },
            };
        }
        let base = match self.base {
            Some((i, w)) if at >= i && at.duration_since(i) < Duration::from_secs(1) => (i, w),
            _ => {
                let b = (Instant::now(), SystemTime::now());
                self.base = Some(b);
                b
            }
        };
        let t = match at.checked_duration_since(base.0) {
            Some(d) => base.1 + d,
            None => base.1 - base.0.duration_since(at),
        };
        let into_second = t.duration_since(UNIX_EPOCH).map_or(Duration::ZERO, |d| {
            Duration::from_nanos(d.subsec_nanos().into())
        });
        self.span = at
            .checked_sub(into_second)
            .map(|start| (start, start + Duration::from_secs(1)));
        self.format(t)
    }

    fn format(&mut self, t: SystemTime) -> Dated<'_> {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        if d.as_secs() != self.second || self.clf_part.is_empty() {
            self.second = d.as_secs();
            self.clf_part = format!(" - - [{}] \"", clf_time(t));
            self.iso = iso_second(t);
        }
        Dated {
            clf_part: &self.clf_part,
            iso_second: &self.iso,
            millis: d.subsec_millis(),
        }
    }
}

/// Civil date (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn utc(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (y, m, day) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    (y, m, day, s / 3600, s / 60 % 60, s % 60, d.subsec_millis())
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `10/Oct/2000:13:55:36 +0000`.
fn clf_time(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, _) = utc(t);
    let month = MONTHS.get(m as usize - 1).copied().unwrap_or("Jan");
    format!("{d:02}/{month}/{y}:{hh:02}:{mm:02}:{ss:02} +0000")
}

/// `2000-10-10T13:55:36` (to the second).
fn iso_second(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, _) = utc(t);
    format!("{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}")
}

/// Counts a dropped line.
pub(crate) fn count_drop(stats: &crate::stats::Recorder) {
    stats.count(Counter::AccessLogDropped);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker_log(access: bool, slow: bool) -> (WorkerLog, std::sync::mpsc::Receiver<LogMsg>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let access = access.then(|| AccessSink {
            tx,
            format: AccessLogFormat::Combined,
            spare: Arc::default(),
        });
        let slow = slow.then_some(Duration::from_secs(1));
        let logs = Arc::new(OpLogs {
            access,
            slow,
            status: false,
        });
        (WorkerLog::new(logs, 0), rx)
    }

    #[test]
    fn the_logs_turn_is_due_when_a_flush_would_do_something() {
        let t0 = Instant::now();
        let (mut log, _rx) = worker_log(false, true);
        assert!(log.due(t0), "first look at running requests");
        assert!(log.scan_due(t0));
        assert!(!log.due(t0 + Duration::from_millis(999)));
        assert!(log.due(t0 + Duration::from_secs(1)), "a second later");

        let (mut log, rx) = worker_log(true, false);
        assert!(!log.due(t0), "no line pending");
        log.pending.extend_from_slice(b"a line\n");
        log.pending_since = Some(t0);
        assert!(
            !log.due(t0 + HANDOVER_DELAY / 2),
            "the line waits for company"
        );
        assert!(log.due(t0 + HANDOVER_DELAY));
        log.flush(t0 + HANDOVER_DELAY);
        assert!(matches!(rx.try_recv(), Ok(LogMsg::Lines(l)) if l == b"a line\n"));
        assert!(!log.due(t0 + HANDOVER_DELAY * 2), "handed over");
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(971_186_136_123);
        let mut cache = DateCache::default();
        let d = cache.format(t);
        assert_eq!(
            (d.clf_part, d.iso_second, d.millis),
            (
                " - - [10/Oct/2000:13:55:36 +0000] \"",
                "2000-10-10T13:55:36",
                123
            )
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        let d = cache.format(leap);
        assert_eq!((d.iso_second, d.millis), ("2000-02-29T00:00:00", 0));
        // An instant maps to the wall clock read with the cache's base.
        let before = SystemTime::now();
        let now = Instant::now();
        let after = SystemTime::now();
        let iso = cache.get(now, true).iso_second.to_owned();
        let second = |t| DateCache::default().format(t).iso_second.to_owned();
        assert!([second(before), second(after)].contains(&iso), "{iso}");
    }

    #[test]
    fn statuses_in_three_digits_or_a_dash() {
        let mut out = Vec::new();
        for status in [200, 404, 100, 999, 0, 99, 1000, 65535] {
            push_status(&mut out, status);
        }
        assert_eq!(out, b"200 404 100 999 - 99 1000 65535 ");
    }

    #[test]
    fn integers_in_decimal() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            push_u64(&mut out, n);
            out.push(b' ');
        }
        assert_eq!(out, b"0 7 10 1234567890 18446744073709551615 ");
    }

    #[test]
    fn fields_cannot_break_their_quotes_or_line() {
        let mut out = Vec::new();
        quoted(&mut out, b"a\"b\\c\nd\xff");
        assert_eq!(out, b"a\\\"b\\\\c\\x0ad\\xff");
        // The word-at-a-time check agrees with the table for every byte at every position.
        for len in [1, 7, 8, 9, 16, 17] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(
                        all_plain(&s),
                        PLAIN[usize::from(b)],
                        "{b:#x} at {at} of {len}"
                    );
                    let mut out = Vec::new();
                    quoted(&mut out, &s);
                    assert_eq!(out.len() == len, PLAIN[usize::from(b)], "{b:#x}");
                }
            }
        }
        let mut out = Vec::new();
        json_escaped(&mut out, "a\"\n\u{1}é".as_bytes());
        assert_eq!(String::from_utf8(out).unwrap(), "a\\\"\\n\\u0001é");
    }

    proptest::proptest! {
        #[test]
        fn the_word_check_agrees_with_the_table(s in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            proptest::prop_assert_eq!(all_plain(&s), s.iter().all(|&b| PLAIN[usize::from(b)]));
        }
    }
}
