//! One worker's request path (connection core, dispatcher, a service) fed a script of mostly
//! valid but hostile FastCGI records — BEGIN_REQUEST with any role and flags, reused ids,
//! PARAMS, STDIN and DATA of any size, padding, ABORT_REQUEST, management and stray records,
//! arbitrary raw bytes — cut into arbitrary receives through [`fcgi_uring::bench::Harness`].
//!
//! The service reads its body (all of it, one frame, or none), or answers a large body, or
//! fails, and names the request it answers (a tag the script put in REQUEST_URI) with a digest
//! of what it read.
//!
//! Invariants checked on the output:
//! - it is whole, well-formed records of the types a server sends (version 1, END_REQUEST
//!   and UNKNOWN_TYPE bodies of 8 bytes, STDOUT and END_REQUEST on a non-zero id);
//! - no STDOUT or END_REQUEST for an id with no BEGIN_REQUEST outstanding (never more
//!   END_REQUESTs for an id than BEGIN_REQUESTs sent for it), and each tagged request ends
//!   once, on its own id;
//! - while the script is in sync (no raw bytes sent yet, and no BEGIN_REQUEST without
//!   KEEP_CONN, after whose end later BEGIN_REQUESTs are ignored): a handler that read a whole
//!   body got exactly the STDIN the peer sent that request, and only after the peer ended it;
//!   one that read one frame got a prefix of it; a large response arrives byte for byte;
//! - no hang: when a probe request sent last is answered (the connection is open and not
//!   closing), every request that could complete has its END_REQUEST (a body with a
//!   CONTENT_LENGTH reaches its reader once all announced bytes are in, or at its end).
//!
//! The harness takes every send whole, reads with `on_bytes` (not the owned-buffer path of
//! kept bodies) and does not move the clock: those are `conn::hostile_model`'s.
//!
//! Run from `crates/fcgi-uring`: `cargo +nightly fuzz run worker`.
#![no_main]

use bytes::Bytes;
use fcgi_proto::record::{HEADER_LEN, Header};
use fcgi_uring::bench::Harness;
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

/// The ids requests use (the probe's is none of them).
const IDS: [u16; 4] = [1, 2, 3, 0xFFFF];
const PROBE: u16 = 9;
/// A large response body: past the output queue's shared-chunk threshold and one record.
const BIG: usize = 70_000;
/// Bytes the script may send at most (well under `max_body_buffer`, so no read pauses).
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

/// Runs the worker's local tasks, then a round with no input (flushing what they wrote).
async fn drive<S: fcgi_uring::HttpService>(h: &mut Harness<S>, out: &mut Vec<u8>) {
    for _ in 0..3 {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        h.round(&[], out);
    }
}

fn run(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, script(data));
}

async fn script(data: &[u8]) {
    let mut s = Script(data);
    let mut h = Harness::new(fcgi_uring::service_fn(app));
    let mut m = Model::default();
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut truncated = false;
    while !s.is_empty() && m.sent < MAX_SENT {
        let op = s.byte();
        let padding = if op & 0x80 != 0 { (op >> 4) & 7 } else { 0 };
        let id = IDS[usize::from(s.byte() % 4)];
        match op % 12 {
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
            _ => {
                // Send what is pending in up to four receives cut anywhere.
                let pieces = 1 + usize::from(s.byte() % 4);
                let mut rest = &pending[..];
                for i in 0..pieces {
                    let len = if i + 1 == pieces {
                        rest.len()
                    } else {
                        let r = usize::from(s.byte()) * 3;
                        r.min(rest.len())
                    };
                    let (now, later) = rest.split_at(len);
                    rest = later;
                    h.round(now, &mut out);
                    m.check(&out);
                }
                m.sent += pending.len();
                pending.clear();
                drive(&mut h, &mut out).await;
                m.check(&out);
                assert_eq!(m.checked, out.len(), "output ends within a record");
            }
        }
    }
    if !pending.is_empty() {
        // A record cut short at the end leaves the probe inside it.
        truncated = m.desynced;
        m.sent += pending.len();
        h.round(&pending, &mut out);
        drive(&mut h, &mut out).await;
        m.check(&out);
    }
    if !m.desynced && !truncated {
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
        h.round(&probe, &mut out);
        drive(&mut h, &mut out).await;
        m.check(&out);
        m.check_no_hang();
    }
    assert_eq!(m.checked, out.len(), "output ends within a record");
}

fuzz_target!(|data: &[u8]| run(data));
