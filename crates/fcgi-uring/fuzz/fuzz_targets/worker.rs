//! Two fuzz targets in one, chosen by the input's first byte (odd: the second).
//!
//! **The worker.** One worker's request path (connection core, dispatcher, a service) fed a
//! script of mostly valid but hostile FastCGI records — BEGIN_REQUEST with any role and flags,
//! reused ids, PARAMS, STDIN and DATA of any size, padding, ABORT_REQUEST, management and
//! stray records, arbitrary raw bytes — through a scripted [`fcgi_uring::bench::Harness`]: the
//! script also chooses the limits (body and output buffers small or default) and deadlines,
//! cuts what it sent into receives borrowed (as epoll reads) or in a buffer handed to the core
//! (as io_uring's provided buffers and direct receives), delivered only while the connection
//! reads (or one racing its cancel); sends taken whole, left in flight (the socket is full),
//! completed in part (the core resends the rest) or failed (a reset); the clock moved by hand
//! (params, body, idle, write, handler deadlines fire); the peer's EOF or reset, and the
//! cancelled receive's last completion.
//!
//! The service reads its body (all of it, one frame, or none), or answers a large body, or
//! fails, and names the request it answers (a tag the script put in REQUEST_URI) with a digest
//! of what it read.
//!
//! Invariants checked after every step:
//! - the output is whole, well-formed records of the types a server sends (version 1,
//!   END_REQUEST and UNKNOWN_TYPE bodies of 8 bytes, STDOUT and END_REQUEST on a non-zero id);
//! - no STDOUT or END_REQUEST for an id with no BEGIN_REQUEST outstanding (never more
//!   END_REQUESTs for an id than BEGIN_REQUESTs sent for it), and each tagged request ends
//!   once, on its own id;
//! - while the script is in sync (no raw bytes sent yet, and no BEGIN_REQUEST without
//!   KEEP_CONN, after whose end later BEGIN_REQUESTs are ignored): a handler that read a whole
//!   body got exactly the STDIN the peer sent that request, and only after the peer ended it;
//!   one that read one frame got a prefix of it; a large response arrives byte for byte;
//! - bounded memory ([`Bounds`]): the output queue within `max_output_buffer` plus one
//!   handler write and the protocol's answers to what came since it was last within it; each
//!   body within `max_body_buffer` plus one receive;
//!
//! and at the end, once everything that can finish has (sends complete, pending bytes received
//! as the connection reads, handlers run):
//! - no send left in flight, the output ends on a record boundary (unless a send was cut by a
//!   reset, an EOF or a close);
//! - a peer gone (EOF, reset, failed send): every request cancelled, the connection closed;
//!   a connection closed for any reason: no request or send left counted;
//! - an open connection reads;
//! - no hang: when a probe request sent last is answered (the connection is open and not
//!   closing), every request that could complete has its END_REQUEST (a body with a
//!   CONTENT_LENGTH reaches its reader once all announced bytes are in, or at its end).
//!
//! **The connection core alone**, driven and checked as `conn::hostile_model`'s proptest does
//! (operations read from the input instead: [`fcgi_uring::bench::core_model`]): handlers of
//! its own polled by hand (reading in part, wholly or not at all, writing, failing, dropping
//! their bodies), several receives in one batch, draining.
//!
//! Deterministic: the clock moves only by hand.
//!
//! Run from `crates/fcgi-uring`: `cargo +nightly fuzz run worker`.
#![no_main]

use bytes::Bytes;
use fcgi_proto::record::{HEADER_LEN, Header};
use fcgi_uring::bench::Harness;
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::time::Duration;

/// The ids requests use (the probe's is none of them).
const IDS: [u16; 4] = [1, 2, 3, 0xFFFF];
const PROBE: u16 = 9;
/// A large response body: past the output queue's shared-chunk threshold and one record.
const BIG: usize = 70_000;
/// Bytes the script may send at most.
const MAX_SENT: usize = 400_000;

/// Reads the fuzz input as commands (zeros once it is exhausted).
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (now, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        now
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What the handler does, from the URI the script sent: `/t<tag>/<mode>`.
async fn app(request: fcgi_uring::Request) -> Result<http::Response<Full<Bytes>>, std::io::Error> {
    let path = request.uri().path().to_owned();
    if path == "/probe" {
        return Ok(http::Response::new(Full::new(Bytes::from_static(b"probe"))));
    }
    let Some((tag, mode)) = path
        .strip_prefix("/t")
        .and_then(|rest| rest.split_once('/'))
    else {
        return Ok(http::Response::new(Full::new(Bytes::from_static(b"other"))));
    };
    let tag = tag.to_owned();
    let mut body = request.into_body();
    let answer = match mode {
        "a" => {
            let mut all = Vec::new();
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            all.extend_from_slice(&data);
                        }
                    }
                    Some(Err(_)) => return Ok(http::Response::new(Full::new(Bytes::new()))),
                    None => break,
                }
            }
            format!("T{tag} a {} {:x}", all.len(), fnv(&all)).into_bytes()
        }
        "p" => {
            let first = match body.frame().await {
                Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
                Some(Err(_)) => return Ok(http::Response::new(Full::new(Bytes::new()))),
                None => Bytes::new(),
            };
            format!("T{tag} p {} {:x}", first.len(), fnv(&first)).into_bytes()
        }
        "b" => {
            let mut out = format!("T{tag} b ").into_bytes();
            out.resize(out.len() + BIG, b'x');
            out
        }
        "e" => return Err(std::io::Error::other("handler error")),
        _ => format!("T{tag} n").into_bytes(),
    };
    Ok(http::Response::new(Full::new(Bytes::from(answer))))
}

/// One BEGIN_REQUEST as the model knows it.
#[derive(Debug, Default)]
struct Inc {
    id: u16,
    role: u16,
    mode: u8,
    tagged: bool,
    /// The CONTENT_LENGTH its params carry, if any.
    announced: Option<usize>,
    params_ended: bool,
    body: Vec<u8>,
    stdin_ended: bool,
    aborted: bool,
    /// Its tagged answer came.
    answered: bool,
}

#[derive(Default)]
struct Model {
    incs: Vec<Inc>,
    current: HashMap<u16, usize>,
    /// Raw bytes were sent: the model no longer knows what the peer's records are.
    desynced: bool,
    /// A BEGIN_REQUEST without KEEP_CONN was sent: once such a request ends, later
    /// BEGIN_REQUESTs are ignored and the records that follow them go to the request that
    /// held the id before (the model no longer knows whose body is whose).
    nokeep: bool,
    begins: HashMap<u16, usize>,
    ends: HashMap<u16, usize>,
    /// STDOUT bytes per id since its last END_REQUEST.
    stdout: HashMap<u16, Vec<u8>>,
    checked: usize,
    probe_answered: bool,
    sent: usize,
}

fn record(out: &mut Vec<u8>, kind: u8, id: u16, content: &[u8], padding: u8) {
    let len = u16::try_from(content.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&[1, kind]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[padding, 0]);
    out.extend_from_slice(&content[..usize::from(len)]);
    out.extend(std::iter::repeat_n(0xEE, usize::from(padding)));
}

fn pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    fcgi_proto::nv::encode_pair(out, name, value);
}

impl Model {
    fn inc(&mut self, id: u16) -> Option<&mut Inc> {
        let at = *self.current.get(&id)?;
        self.incs.get_mut(at)
    }

    /// Checks the output records not yet checked.
    fn check(&mut self, out: &[u8]) {
        while let Some(head) = out.get(self.checked..self.checked + HEADER_LEN) {
            let header = Header::parse(head.try_into().unwrap());
            let start = self.checked + HEADER_LEN;
            let end = start + usize::from(header.content_length);
            let Some(content) = out.get(start..end) else {
                break;
            };
            if out.len() < end + usize::from(header.padding_length) {
                break;
            }
            self.checked = end + usize::from(header.padding_length);
            assert_eq!(header.version, 1, "output record version");
            let id = header.request_id;
            match header.record_type {
                6 => {
                    assert_ne!(id, 0, "STDOUT on id 0");
                    let begun = self.begins.get(&id).copied().unwrap_or(0);
                    let ended = self.ends.get(&id).copied().unwrap_or(0);
                    assert!(
                        begun > ended,
                        "STDOUT for id {id} with no request outstanding"
                    );
                    self.stdout
                        .entry(id)
                        .or_default()
                        .extend_from_slice(content);
                }
                3 => {
                    assert_ne!(id, 0, "END_REQUEST on id 0");
                    assert_eq!(content.len(), 8, "END_REQUEST body");
                    let ends = self.ends.entry(id).or_default();
                    *ends += 1;
                    let begun = self.begins.get(&id).copied().unwrap_or(0);
                    assert!(
                        *ends <= begun,
                        "END_REQUEST {} for id {id}, {begun} begun",
                        *ends
                    );
                    let stdout = self.stdout.remove(&id).unwrap_or_default();
                    self.answer(id, content, &stdout);
                }
                10 => assert_eq!(id, 0, "GET_VALUES_RESULT off id 0"),
                11 => {
                    assert_eq!(id, 0, "UNKNOWN_TYPE off id 0");
                    assert_eq!(content.len(), 8, "UNKNOWN_TYPE body");
                }
                other => panic!("record type {other} in the output"),
            }
        }
    }

    /// Checks an answer (the STDOUT of a request that just ended).
    fn answer(&mut self, id: u16, end: &[u8], stdout: &[u8]) {
        let Some(split) = stdout.windows(4).position(|w| w == b"\r\n\r\n") else {
            return;
        };
        let body = &stdout[split + 4..];
        if id == PROBE && body == b"probe" {
            self.probe_answered = true;
            return;
        }
        // Raw bytes may have made requests of any URI on any id.
        if self.desynced {
            return;
        }
        let Some(rest) = body.strip_prefix(b"T") else {
            return;
        };
        let text_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let Some(tag) = std::str::from_utf8(&rest[..text_end])
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
        else {
            panic!("answer on id {id} with a bad tag: {body:?}");
        };
        assert_eq!(end[4], 0, "a tagged answer ends REQUEST_COMPLETE");
        let Some(inc) = self.incs.get_mut(tag) else {
            panic!("answer on id {id} for tag {tag}, never sent");
        };
        assert_eq!(inc.id, id, "answer for tag {tag} on the wrong id");
        assert!(!inc.answered, "tag {tag} answered twice");
        inc.answered = true;
        if self.nokeep {
            return;
        }
        let words: Vec<&[u8]> = rest.splitn(4, |&b| b == b' ').collect();
        let want: &[u8] = if inc.role == 2 { &[] } else { &inc.body };
        match words.get(1).copied() {
            Some(b"a") => {
                assert!(
                    inc.stdin_ended || inc.role == 2,
                    "tag {tag}: a whole body delivered before the peer ended it"
                );
                let got = format!("{} {:x}", want.len(), fnv(want));
                let have = [words[2], b" ", words[3]].concat();
                assert_eq!(
                    String::from_utf8_lossy(&have),
                    got,
                    "tag {tag}: body differs from what the peer sent"
                );
            }
            Some(b"p") => {
                let len: usize = std::str::from_utf8(words[2]).unwrap().parse().unwrap();
                assert!(
                    len <= want.len(),
                    "tag {tag}: first frame longer than the body"
                );
                let got = format!("{:x}", fnv(&want[..len]));
                assert_eq!(
                    String::from_utf8_lossy(words[3]),
                    got,
                    "tag {tag}: first frame is not a prefix of the body"
                );
            }
            Some(b"b") => {
                let big = words.get(2).copied().unwrap_or_default();
                assert_eq!(big.len(), BIG, "tag {tag}: large response length");
                assert!(
                    big.iter().all(|&b| b == b'x'),
                    "tag {tag}: large response bytes"
                );
            }
            _ => {}
        }
    }

    /// After the probe was answered: every request that could complete has ended.
    fn check_no_hang(&self) {
        if !self.probe_answered || self.desynced {
            return;
        }
        for (id, begun) in &self.begins {
            let ended = self.ends.get(id).copied().unwrap_or(0);
            let open: Vec<&Inc> = self
                .incs
                .iter()
                .filter(|i| i.id == *id)
                .skip(ended)
                .collect();
            assert_eq!(open.len(), begun - ended);
            for inc in open {
                let reads = matches!(inc.role, 1 | 3) && inc.tagged;
                let waits = reads
                    && match inc.mode {
                        b'a' => !inc.stdin_ended,
                        // Its first frame comes once the announced bytes are all in.
                        b'p' => {
                            !inc.stdin_ended
                                && (inc.body.is_empty()
                                    || inc.announced.is_some_and(|n| inc.body.len() < n))
                        }
                        _ => false,
                    };
                let could_end = inc.aborted || inc.params_ended && !waits;
                assert!(!could_end, "request {inc:?} never ended (probe answered)");
            }
        }
    }
}

/// Runs the worker's local tasks, then a turn with no input (flushing what they wrote).
async fn drive<S: fcgi_uring::HttpService>(h: &mut Harness<S>) {
    for _ in 0..3 {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        h.turn(&[], false);
    }
}

fn run(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, script(data));
}

/// Deadlines of a case (short, as the clock moves by hand): handler's on or off.
fn timeouts(handler: bool) -> fcgi_uring::Timeouts {
    let s = Duration::from_secs;
    let mut t = fcgi_uring::Timeouts::OFF;
    t.idle = s(5);
    t.params = s(3);
    t.body = s(2);
    t.handler = if handler { s(4) } else { Duration::ZERO };
    t.write = s(2);
    t.linger = s(1);
    t
}

/// Output a connection may queue past `max_output_buffer`: one handler write (a large
/// response and its head), the protocol's own answers (END_REQUESTs, 500s, 504s, management
/// records: a few hundred bytes each) to what was received since the queue was last within its
/// limit (counted twice: an 8-byte record may be answered by a 16-byte one), and record headers.
fn output_bound(max_output: usize, received_over: usize) -> usize {
    max_output + BIG + 4096 + 2 * received_over
}

/// The checks after each step: the output so far, and the bytes the connection holds.
struct Bounds {
    max_output: usize,
    max_body: usize,
    /// Bytes received since the output queue was last within its limit.
    received_over: usize,
    /// The largest receive: a body's unread bytes (or those staged before its dispatch) may
    /// pass `max_body_buffer` by one receive, parsed whole before the pause it causes is acted
    /// on (`docs/limits.md`).
    max_receive: usize,
}

impl Bounds {
    fn check<S: fcgi_uring::HttpService>(&mut self, h: &Harness<S>) {
        let (output, body, input) = h.held();
        if output <= self.max_output {
            self.received_over = 0;
        }
        let bound = output_bound(self.max_output, self.received_over);
        assert!(output <= bound, "output queue of {output} bytes, bound {bound}");
        let _ = input;
        assert!(
            body <= self.max_body + self.max_receive,
            "a body holds {body} bytes, limit {} + one receive of at most {}",
            self.max_body,
            self.max_receive
        );
    }

    fn received(&mut self, n: usize) {
        self.received_over += n;
        self.max_receive = self.max_receive.max(n);
    }
}

/// `FUZZ_TRACE` set: the worker script prints its steps (to read a crash).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

async fn script(data: &[u8]) {
    let mut s = Script(data);
    let setup = s.byte();
    let max_body = if setup & 1 == 0 { 1 << 20 } else { 4096 };
    let max_output = if setup & 2 == 0 { 65_536 } else { 1024 };
    let mut h = Harness::scripted(
        fcgi_uring::service_fn(app),
        max_body,
        max_output,
        timeouts(setup & 4 != 0),
    );
    let mut bounds = Bounds {
        max_output,
        max_body,
        received_over: 0,
        max_receive: 0,
    };
    let mut m = Model::default();
    let mut pending: Vec<u8> = Vec::new();
    // The peer went away (EOF, reset) or a send failed: the connection must close.
    let mut gone = false;
    while !s.is_empty() && m.sent + pending.len() < MAX_SENT {
        let op = s.byte();
        if trace() {
            eprintln!(
                "op {} (byte {op:#04x}), pending {}, output {}, sending {}, reading {}, open {}",
                op % 16,
                pending.len(),
                h.output().len(),
                h.sending(),
                h.reading(),
                h.is_open()
            );
        }
        let padding = if op & 0x80 != 0 { (op >> 4) & 7 } else { 0 };
        let id = IDS[usize::from(s.byte() % 4)];
        match op % 16 {
            0 | 1 => {
                let role = [1, 1, 1, 2, 3, 0, 7, 1][usize::from(s.byte() % 8)];
                let flags = s.byte();
                let flags = if flags & 0xF0 == 0 { flags } else { 1 };
                let mut body = [0u8; 8];
                body[..2].copy_from_slice(&u16::to_be_bytes(role));
                body[2] = flags;
                record(&mut pending, 1, id, &body, padding);
                m.nokeep |= flags & 1 == 0;
                *m.begins.entry(id).or_default() += 1;
                m.current.insert(id, m.incs.len());
                m.incs.push(Inc {
                    id,
                    role,
                    ..Inc::default()
                });
            }
            2 => {
                let mode = b"aapnbe"[usize::from(s.byte() % 6)];
                let mut params = Vec::new();
                let tag = m.current.get(&id).copied();
                match m.inc(id) {
                    Some(inc) if !inc.tagged && !inc.params_ended => {
                        inc.tagged = true;
                        inc.mode = mode;
                        pair(&mut params, b"REQUEST_METHOD", b"POST");
                        let uri = format!("/t{}/{}", tag.unwrap_or(0), mode as char);
                        pair(&mut params, b"REQUEST_URI", uri.as_bytes());
                        // A body of announced length is handed on in buffers filled to it
                        // (or to the end of STDIN): only one of unknown length is read as
                        // it comes.
                        let len = usize::from(s.byte()) * 200;
                        inc.announced = (len > 0).then_some(len);
                        if len > 0 {
                            pair(&mut params, b"CONTENT_LENGTH", len.to_string().as_bytes());
                        }
                    }
                    _ => pair(&mut params, b"HTTP_X", s.bytes(8)),
                }
                let cut = usize::from(s.byte()) % (params.len() + 1);
                let (a, b) = params.split_at(cut);
                for part in [a, b] {
                    if !part.is_empty() {
                        record(&mut pending, 4, id, part, padding);
                    }
                }
            }
            3 => {
                record(&mut pending, 4, id, &[], padding);
                if let Some(inc) = m.inc(id) {
                    inc.params_ended = true;
                }
            }
            4 | 5 => {
                let n = usize::from(s.byte()) * [1, 3, 97][usize::from(s.byte() % 3)];
                let base = m.sent as u8;
                let content: Vec<u8> = (0..n)
                    .map(|i| base.wrapping_add((i * 7 % 251) as u8))
                    .collect();
                if n == 0 {
                    continue;
                }
                record(&mut pending, 5, id, &content, padding);
                if let Some(inc) = m.inc(id)
                    && !inc.stdin_ended
                    && !inc.aborted
                {
                    inc.body.extend_from_slice(&content);
                }
            }
            6 => {
                record(&mut pending, 5, id, &[], padding);
                if let Some(inc) = m.inc(id)
                    && !inc.aborted
                {
                    inc.stdin_ended = true;
                }
            }
            7 => {
                let n = usize::from(s.byte());
                record(&mut pending, 8, id, &vec![b'd'; n], padding);
            }
            8 => {
                record(&mut pending, 2, id, &[], padding);
                if let Some(inc) = m.inc(id) {
                    inc.aborted = true;
                }
            }
            9 => {
                // Management and stray records: GET_VALUES, unknown types on id 0 or a
                // request's id, records only a server sends.
                let kind = [9, 9, 12, 200, 6, 3, 10, 11][usize::from(s.byte() % 8)];
                let on = if s.byte() & 1 == 0 { 0 } else { id };
                let mut content = Vec::new();
                if kind == 9 {
                    for name in [
                        &b"FCGI_MAX_CONNS"[..],
                        b"FCGI_MAX_REQS",
                        b"FCGI_MPXS_CONNS",
                        b"X",
                    ] {
                        if s.byte() & 1 == 1 {
                            pair(&mut content, name, b"");
                        }
                    }
                } else {
                    let n = usize::from(s.byte() % 16);
                    content.extend_from_slice(s.bytes(n));
                }
                record(&mut pending, kind, on, &content, padding);
            }
            10 => {
                // Raw bytes: the model loses track of the peer's records from here on.
                let n = usize::from(s.byte() % 32);
                let raw = s.bytes(n).to_vec();
                if !raw.is_empty() {
                    m.desynced = true;
                    pending.extend_from_slice(&raw);
                }
            }
            11 => {
                // Send what is pending in up to four receives cut anywhere, each borrowed
                // (epoll) or in a buffer handed over (io_uring), while the connection reads;
                // what it does not read yet stays with the peer.
                let pieces = 1 + usize::from(s.byte() % 4);
                for i in 0..pieces {
                    let b = s.byte();
                    let len = if i + 1 == pieces {
                        pending.len()
                    } else {
                        (usize::from(b >> 1) * 7).min(pending.len())
                    };
                    if len == 0 || !h.turn(&pending[..len], b & 1 == 1) {
                        break;
                    }
                    bounds.received(len);
                    m.sent += len;
                    pending.drain(..len);
                    m.check(h.output());
                    bounds.check(&h);
                }
                drive(&mut h).await;
                m.check(h.output());
                bounds.check(&h);
                if !h.sending() && !gone && !h.was_cut() {
                    assert_eq!(m.checked, h.output().len(), "output ends within a record");
                }
            }
            12 => {
                // The send in flight completes, in part, or fails; or sends are taken whole,
                // or left in flight (the socket's buffer is full), from now on.
                let b = s.byte();
                if trace() {
                    eprintln!("  send op {b:#04x}");
                }
                match b % 8 {
                    0 => h.set_whole_sends(b & 8 != 0),
                    1 | 2 => {
                        h.sent(Some(usize::MAX));
                    }
                    3..=6 => {
                        let n = usize::from(s.byte()) * [1, 17, 300][usize::from(b >> 6) % 3];
                        h.sent(Some(n));
                    }
                    _ => {
                        if b & 0xF0 == 0xF0 && h.sent(None) {
                            gone = true;
                        }
                    }
                }
                drive(&mut h).await;
                m.check(h.output());
                bounds.check(&h);
            }
            13 => {
                // The clock moves on: deadlines (params, body, idle, write, handler) fire.
                let ms = u64::from(s.byte()) * [10, 50, 200][usize::from(s.byte() % 3)];
                h.advance(Duration::from_millis(ms));
                drive(&mut h).await;
                m.check(h.output());
                bounds.check(&h);
            }
            14 => {
                let b = s.byte();
                if b % 8 == 0 {
                    // The peer closes (EOF) or resets the connection.
                    h.peer_gone();
                    gone = true;
                } else {
                    // A cancelled receive's last completion.
                    h.recv_ended();
                }
                drive(&mut h).await;
                m.check(h.output());
                bounds.check(&h);
            }
            _ => {
                drive(&mut h).await;
                m.check(h.output());
                bounds.check(&h);
            }
        }
    }
    // Everything that can finish finishes: sends complete, the peer's bytes are received as
    // the connection reads them, handlers run.
    h.set_whole_sends(true);
    for _ in 0..64 {
        let before = (h.output().len(), pending.len(), h.sending(), h.reading());
        h.sent(Some(usize::MAX));
        h.recv_ended();
        if !pending.is_empty() && h.turn(&pending, false) {
            bounds.received(pending.len());
            m.sent += pending.len();
            pending.clear();
        }
        drive(&mut h).await;
        m.check(h.output());
        bounds.check(&h);
        if before == (h.output().len(), pending.len(), h.sending(), h.reading()) {
            break;
        }
    }
    assert!(!h.sending(), "a send left in flight");
    if !gone && !h.was_cut() {
        // (A send cut short by a reset, an EOF or a close leaves part of a record.)
        assert_eq!(m.checked, h.output().len(), "output ends within a record");
    }
    if gone {
        // The peer is gone: every request cancelled, the connection closed.
        assert!(h.is_quiet(), "requests or sends left counted after the peer went");
        assert!(h.is_closed(), "the connection outlived its peer");
    }
    if h.is_closed() {
        // However it closed (deadline, protocol error, KEEP_CONN=0): no request left counted.
        assert!(h.is_quiet(), "requests or sends left counted on a closed connection");
    }
    if h.is_open() {
        // Nothing left to wait for: an open connection reads.
        assert!(h.reading(), "an open connection left unread");
    }
    if !m.desynced && pending.is_empty() && h.is_open() {
        let mut probe = Vec::new();
        fcgi_proto::record::encode_begin_request(&mut probe, PROBE, 1, true);
        let mut params = Vec::new();
        pair(&mut params, b"REQUEST_METHOD", b"GET");
        pair(&mut params, b"REQUEST_URI", b"/probe");
        record(&mut probe, 4, PROBE, &params, 0);
        record(&mut probe, 4, PROBE, &[], 0);
        record(&mut probe, 5, PROBE, &[], 0);
        *m.begins.entry(PROBE).or_default() += 1;
        m.incs.push(Inc {
            id: PROBE,
            role: 1,
            params_ended: true,
            stdin_ended: true,
            answered: true,
            ..Inc::default()
        });
        h.turn(&probe, false);
        drive(&mut h).await;
        m.check(h.output());
        m.check_no_hang();
        assert_eq!(m.checked, h.output().len(), "output ends within a record");
    }
}

fuzz_target!(|data: &[u8]| match data.split_first() {
    // The connection core alone, driven and checked as `conn::hostile_model` does.
    Some((&mode, rest)) if mode & 1 == 1 => fcgi_uring::bench::core_model(rest),
    Some((_, rest)) => run(rest),
    None => {}
});
