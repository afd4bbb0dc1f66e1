//! The connection core driven by hostile peers, checked against a model of what they sent.
//!
//! Each case is a sequence of operations on one connection: the peer queues whole requests
//! (bodies of up to 40,000 bytes in records of any size, announced or not, ended or not) and
//! single records (BEGIN_REQUEST with any role, flags and id, reused ids included; PARAMS,
//! STDIN and DATA of any size, padded or not; empty records; ABORT_REQUEST; GET_VALUES, unknown
//! types and records only a server sends; raw bytes), the IO delivers what is queued in
//! receives cut anywhere (borrowed, as `on_bytes`, or in a buffer of its own, as
//! `on_bytes_owned`; alone or several in one batch before dispatch) while a receive is armed
//! (or one racing its cancel), the loop flushes, sends are taken whole, in part, not at all or fail, the clock moves and
//! deadlines expire, handlers read their bodies in part, wholly or not at all and answer (small
//! or large writes, a finish, a failure), the peer goes away, the server drains.
//!
//! After every step:
//! - what the peer received is well-formed FastCGI records of the types a server sends
//!   (version 1; STDOUT and END_REQUEST on a non-zero id; END_REQUEST and UNKNOWN_TYPE bodies
//!   of 8 bytes; GET_VALUES_RESULT and UNKNOWN_TYPE on id 0);
//! - no STDOUT or END_REQUEST for an id with no request outstanding (never more END_REQUESTs
//!   for an id than BEGIN_REQUESTs sent on it);
//! - a handler's answer reaches the peer on its own request's id, once, byte for byte what the
//!   handler wrote (no byte missing, added or moved);
//! - the requests and sends the core counts in flight are those in its table and the IO's hands;
//! - while the peer's records are known (no raw bytes sent, no BEGIN_REQUEST without KEEP_CONN,
//!   after whose end later BEGIN_REQUESTs are ignored): the bytes a handler read are a
//!   prefix of the STDIN the peer sent that request, and all of it when the body ended, which
//!   happens only after the peer ended it (an AUTHORIZER's body is empty);
//! - bounded output: after a flush, a connection whose queued output is past
//!   `max_output_buffer` has no receive armed, and the queue never exceeds the limit by more
//!   than one handler write plus the protocol's own answers to what was received since the
//!   queue was last under it;
//! - bounded input: each body of the connection holds (unread by its handler, or staged before
//!   dispatch) at most `max_body_buffer` plus one receive;
//! - once every byte a body announced (CONTENT_LENGTH) was received, its reader can read them
//!   all without the end of STDIN;
//! - when everything that can finish has finished (handlers read what came and answer ended
//!   bodies, sends complete), a connection that still takes requests reads again;
//! - at the end of a case, with the connection still open and its peer's records known, a probe
//!   request is sent: when it is answered, every request that could complete (params ended and
//!   its body ended, or not read, or aborted) has its END_REQUEST (no hang); once everything is
//!   dropped, no body is left counted as held in a receive buffer.
//!
//! Cases are cheap (one connection, a few dozen steps); `PROPTEST_CASES` runs more of them.
//!
//! The fuzz target `crates/fcgi-uring/fuzz` runs the same cases with the operations read from
//! its input ([`fuzz`], exposed as `fcgi_uring::bench::core_model` with `bench-internals`).

use super::input::{BODY_SHARE_MIN, Sent};
use super::state::Reading;
use super::*;
use super::{test_core as core_with, test_settings as settings};
use crate::body::RequestBody;
use fcgi_proto::record::{HEADER_LEN, Header};
#[cfg(test)]
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

/// The ids requests use (the probe's is none of them).
const IDS: [u16; 4] = [1, 2, 3, 0xFFFF];
const PROBE: u16 = 9;
/// Most bytes one handler write carries (past the output queue's shared-chunk threshold).
const MAX_WRITE: usize = 70_000;
/// Bytes of output the runtime may queue besides handler writes for one answer: a status head
/// and reason (a 500, a 504), STDOUT end, END_REQUEST.
const ANSWER_SLACK: usize = 256;

/// The IO: one connection; sends are taken whole or kept in flight until the test reports
/// them; the peer's view is every byte reported sent.
#[derive(Default)]
struct ModelIo {
    whole: bool,
    in_flight: Option<Vec<u8>>,
    /// A short send was reported: the rest waits for [`Io::resend`].
    resend_due: bool,
    delivered: Vec<u8>,
    /// Our write side was shut down (FIN sent).
    shut_down: bool,
    /// Sends asked for after that (they cannot reach the peer).
    sends_after_shutdown: usize,
    armed: bool,
    cancelling: bool,
    closed: bool,
}

impl Io for ModelIo {
    fn send(&mut self, _key: ConnKey, out: &mut OutQueue) -> Sending {
        assert!(
            self.in_flight.is_none(),
            "a second send while one is in flight"
        );
        assert!(!self.closed, "send on a closed connection");
        self.sends_after_shutdown += usize::from(self.shut_down);
        if self.whole {
            out.queued().append_to(&mut self.delivered);
            out.copied();
            Sending::Done
        } else {
            let mut bytes = Vec::new();
            out.take().append_to(&mut bytes);
            self.in_flight = Some(bytes);
            Sending::Started
        }
    }

    fn resend(&mut self, _key: ConnKey) {
        assert!(self.in_flight.is_some(), "resend with nothing held");
        self.resend_due = false;
    }

    fn arm_recv(&mut self, _key: ConnKey) {
        assert!(!self.closed && !self.armed, "receive armed twice");
        self.armed = true;
    }

    fn cancel_recv(&mut self, _key: ConnKey) {
        self.armed = false;
        self.cancelling = true;
    }

    fn shutdown_write(&mut self, _key: ConnKey) {
        self.shut_down = true;
    }

    fn cork(&mut self, _key: ConnKey) {}

    fn close(&mut self, _key: ConnKey, _abort: bool) {
        self.closed = true;
        self.armed = false;
    }
}

#[derive(Debug, Clone)]
enum HAct {
    /// Polls its body up to this many frames.
    Read(u8),
    /// Writes this many bytes if the connection has room (the head with the first write).
    Write(u32, bool),
    Finish,
    Fail,
    DropBody,
}

#[derive(Debug, Clone)]
enum Op {
    /// A whole request at once: BEGIN_REQUEST, tagged PARAMS (with a CONTENT_LENGTH: none, the
    /// body's, or 16 KiB or more), their end, `len` bytes of STDIN in records of `piece`
    /// bytes, and its end if `end`.
    Request {
        id: u8,
        role: u16,
        keep: bool,
        len: u16,
        piece: u16,
        announce: u8,
        end: bool,
        pad: u8,
    },
    /// Everything that can finish finishes (as at the end of a case).
    Settle,
    Begin {
        id: u8,
        role: u16,
        flags: u8,
        pad: u8,
    },
    Params {
        id: u8,
        mode: u8,
        announce: u16,
        cut: u8,
        pad: u8,
    },
    ParamsEnd {
        id: u8,
        pad: u8,
    },
    Stdin {
        id: u8,
        len: u16,
        pad: u8,
    },
    StdinEnd {
        id: u8,
        pad: u8,
    },
    Data {
        id: u8,
        len: u8,
        end: bool,
    },
    Abort {
        id: u8,
    },
    Stray {
        kind: u8,
        id0: bool,
        len: u8,
    },
    Raw(Vec<u8>),
    /// A receive of up to `len` queued bytes; with `hold`, the requests it completes wait for
    /// the next receive's (one batch of receives, as the io_uring backend parses several
    /// before it dispatches).
    Deliver {
        len: u16,
        owned: bool,
        hold: bool,
    },
    Flush {
        whole: bool,
    },
    SentAll,
    SentPart(u16),
    SentFailed,
    RecvEnded,
    Clock(u16),
    Handler(u8, HAct),
    Resume,
    PeerGone,
    Drain,
}

#[cfg(test)]
fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..4;
    let pad = prop_oneof![3 => Just(0u8), 1 => any::<u8>()];
    let hact = prop_oneof![
        3 => (1u8..4).prop_map(HAct::Read),
        2 => (prop_oneof![0u32..200, 1000u32..5000, Just(MAX_WRITE as u32)], any::<bool>())
            .prop_map(|(n, last)| HAct::Write(n, last)),
        1 => Just(HAct::Finish),
        1 => Just(HAct::Fail),
        1 => Just(HAct::DropBody),
    ];
    let request = (
        id.clone(),
        prop_oneof![8 => Just(1u16), 1 => Just(2), 1 => Just(3)],
        prop_oneof![8 => Just(true), 1 => Just(false)],
        prop_oneof![Just(0u16), 1u16..100, 1000u16..40_000],
        prop_oneof![Just(u16::MAX), 1u16..100, 1000u16..40_000],
        0u8..3,
        prop_oneof![3 => Just(true), 1 => Just(false)],
        prop_oneof![3 => Just(0u8), 1 => any::<u8>()],
    )
        .prop_map(
            |(id, role, keep, len, piece, announce, end, pad)| Op::Request {
                id,
                role,
                keep,
                len,
                piece,
                announce,
                end,
                pad,
            },
        );
    prop_oneof![
        6 => request,
        1 => Just(Op::Settle),
        4 => (id.clone(), prop_oneof![6 => Just(1u16), 1 => Just(2), 1 => Just(3), 1 => 0u16..9], prop_oneof![4 => Just(1u8), 1 => any::<u8>()], pad.clone())
            .prop_map(|(id, role, flags, pad)| Op::Begin { id, role, flags, pad }),
        4 => (id.clone(), 0u8..6, prop_oneof![Just(0u16), 1u16..120, any::<u16>()], any::<u8>(), pad.clone())
            .prop_map(|(id, mode, announce, cut, pad)| Op::Params { id, mode, announce, cut, pad }),
        3 => (id.clone(), pad.clone()).prop_map(|(id, pad)| Op::ParamsEnd { id, pad }),
        5 => (id.clone(), prop_oneof![1u16..40, 1u16..3000, 16_000u16..30_000], pad.clone())
            .prop_map(|(id, len, pad)| Op::Stdin { id, len, pad }),
        3 => (id.clone(), pad).prop_map(|(id, pad)| Op::StdinEnd { id, pad }),
        1 => (id.clone(), any::<u8>(), any::<bool>()).prop_map(|(id, len, end)| Op::Data { id, len, end }),
        1 => id.clone().prop_map(|id| Op::Abort { id }),
        1 => (any::<u8>(), any::<bool>(), 0u8..20).prop_map(|(kind, id0, len)| Op::Stray { kind, id0, len }),
        1 => proptest::collection::vec(any::<u8>(), 1..12).prop_map(Op::Raw),
        8 => (prop_oneof![1u16..20, 1u16..500, Just(u16::MAX)], any::<bool>())
            .prop_map(|(len, owned)| Op::Deliver {
                len,
                owned,
                hold: false,
            }),
        2 => (prop_oneof![1u16..500, Just(u16::MAX)], any::<bool>()).prop_map(|(len, owned)| {
            Op::Deliver {
                len,
                owned,
                hold: true,
            }
        }),
        5 => any::<bool>().prop_map(|whole| Op::Flush { whole }),
        3 => Just(Op::SentAll),
        1 => any::<u16>().prop_map(Op::SentPart),
        1 => Just(Op::SentFailed),
        2 => Just(Op::RecvEnded),
        2 => prop_oneof![0u16..100, 0u16..3000].prop_map(Op::Clock),
        8 => (any::<u8>(), hact).prop_map(|(i, a)| Op::Handler(i, a)),
        1 => Just(Op::Resume),
        1 => prop_oneof![10 => Just(Op::Stdin { id: 0, len: 1, pad: 0 }), 1 => Just(Op::PeerGone)],
        1 => prop_oneof![10 => Just(Op::Flush { whole: true }), 1 => Just(Op::Drain)],
    ]
}

/// What a case's core is set up with.
#[derive(Debug, Clone)]
struct Setup {
    small_limits: bool,
    max_output: usize,
    max_body: usize,
    max_requests: usize,
    handler_timeout: bool,
}

#[cfg(test)]
fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<bool>(),
        prop_oneof![Just(1024usize), Just(65_536)],
        prop_oneof![Just(2048usize), Just(1 << 20)],
        prop_oneof![Just(2usize), Just(64)],
        any::<bool>(),
    )
        .prop_map(
            |(small_limits, max_output, max_body, max_requests, handler_timeout)| Setup {
                small_limits,
                max_output,
                max_body,
                max_requests,
                handler_timeout,
            },
        )
}

/// One BEGIN_REQUEST the peer sent, as the model knows it.
#[derive(Debug, Default)]
struct Inc {
    id: u16,
    role: u16,
    tagged: bool,
    /// Its CONTENT_LENGTH, if its params carry one (a body's bytes reach its reader in buffers
    /// filled up to it, or at the end of STDIN).
    announced: Option<usize>,
    params_ended: bool,
    body: Vec<u8>,
    stdin_ended: bool,
    aborted: bool,
}

/// A handler: what it read and wrote.
struct Handler {
    rk: ReqKey,
    tag: Option<usize>,
    body: Option<RequestBody>,
    read: Vec<u8>,
    saw_end: bool,
    saw_error: bool,
    head_sent: bool,
    written: Vec<u8>,
    done: bool,
}

struct Run {
    core: Core,
    io: ModelIo,
    key: ConnKey,
    max_output: usize,
    pending: Vec<u8>,
    /// Receives delivered while the receive was being cancelled (at most one).
    late_receive: bool,
    incs: Vec<Inc>,
    current: HashMap<u16, usize>,
    begins: HashMap<u16, usize>,
    ends: HashMap<u16, usize>,
    desynced: bool,
    /// A BEGIN_REQUEST without KEEP_CONN was sent: once such a request ends, later
    /// BEGIN_REQUESTs are ignored and the records that follow them go to the request that held
    /// the id before (the model no longer knows whose body is whose).
    nokeep: bool,
    handlers: Vec<Handler>,
    /// Requests completed by the receives of a batch, not yet dispatched.
    batch: Vec<Staged>,
    /// Peer-side parse of the output.
    checked: usize,
    stdout: HashMap<u16, Vec<u8>>,
    answered: HashMap<usize, bool>,
    probe_answered: bool,
    /// Bytes received since the output queue was last within its limit.
    received_over: usize,
    /// The largest receive: a body's unread bytes (or those staged before its dispatch) may
    /// pass `max_body_buffer` by one receive, parsed whole before the pause it causes is acted
    /// on (`docs/limits.md`).
    max_receive: usize,
    gone: bool,
}

fn record(out: &mut Vec<u8>, kind: u8, id: u16, content: &[u8], padding: u8) {
    out.extend_from_slice(&[1, kind]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.extend_from_slice(&[padding, 0]);
    out.extend_from_slice(content);
    out.extend(std::iter::repeat_n(0xEE, usize::from(padding)));
}

/// The STDIN bytes of request `tag` from offset `at`.
fn stdin_bytes(tag: usize, at: usize, len: usize) -> Vec<u8> {
    (at..at + len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (tag as u8).wrapping_mul(7) ^ (i >> 8) as u8)
        .collect()
}

fn tag_of(params: &fcgi_proto::Params) -> Option<usize> {
    let uri = params.get(b"REQUEST_URI")?;
    let uri = std::str::from_utf8(uri).ok()?;
    uri.strip_prefix("/t")?.parse().ok()
}

impl Run {
    fn new(setup: &Setup) -> Run {
        let mut s = settings();
        if setup.small_limits {
            s.limits = Arc::new(fcgi_proto::Limits {
                max_params_bytes: 200,
                max_params_pairs: 6,
                max_name_len: 40,
                max_value_len: 100,
                max_requests_per_conn: 3,
                advertised_max_conns: 10,
                advertised_max_reqs: 3,
            });
        }
        s.max_output_buffer = setup.max_output;
        s.max_body_buffer = setup.max_body;
        s.max_requests = setup.max_requests;
        s.timeouts = Timeouts {
            idle: Duration::from_secs(5),
            params: Duration::from_secs(3),
            body: Duration::from_secs(2),
            handler: if setup.handler_timeout {
                Duration::from_secs(4)
            } else {
                Duration::ZERO
            },
            write: Duration::from_secs(2),
            linger: Duration::from_secs(1),
        };
        let core = core_with(s);
        core.set_driver_waker(std::task::Waker::noop());
        let mut io = ModelIo::default();
        let key = core.accept(None).expect("accepted");
        core.flush(&mut io);
        assert!(io.armed);
        Run {
            core,
            io,
            key,
            max_output: setup.max_output,
            pending: Vec::new(),
            late_receive: false,
            incs: Vec::new(),
            current: HashMap::new(),
            begins: HashMap::new(),
            ends: HashMap::new(),
            desynced: false,
            nokeep: false,
            handlers: Vec::new(),
            batch: Vec::new(),
            checked: 0,
            stdout: HashMap::new(),
            answered: HashMap::new(),
            probe_answered: false,
            received_over: 0,
            max_receive: 0,
            gone: false,
        }
    }

    fn inc(&mut self, id: u16) -> Option<&mut Inc> {
        let at = *self.current.get(&id)?;
        self.incs.get_mut(at)
    }

    fn open(&self) -> bool {
        self.core.conn_count() == 1
    }

    fn backlog(&self) -> usize {
        let mut conns = self.core.conns.borrow_mut();
        conns.get_mut(self.key).map_or(0, |c| c.backlog())
    }

    /// How the connection reads, while it still takes requests (`is_open`: afterwards what it
    /// reads is dropped).
    fn reading(&self) -> Option<Reading> {
        let mut conns = self.core.conns.borrow_mut();
        conns
            .get_mut(self.key)
            .filter(|c| c.is_open())
            .map(|c| c.reading())
    }

    fn step(&mut self, op: &Op) {
        if !matches!(op, Op::Deliver { hold: true, .. }) {
            self.dispatch();
        }
        match *op {
            Op::Request {
                id,
                role,
                keep,
                len,
                piece,
                announce,
                end,
                pad,
            } => {
                let flags = u8::from(keep);
                self.step(&Op::Begin {
                    id,
                    role,
                    flags,
                    pad,
                });
                let announce = match announce {
                    0 => 0,
                    1 => len,
                    _ => len.max(BODY_SHARE_MIN as u16),
                };
                self.step(&Op::Params {
                    id,
                    mode: 1,
                    announce,
                    cut: pad,
                    pad,
                });
                self.step(&Op::ParamsEnd { id, pad });
                let mut left = len;
                while left > 0 {
                    let now = left.min(piece.max(1));
                    self.step(&Op::Stdin { id, len: now, pad });
                    left -= now;
                }
                if end {
                    self.step(&Op::StdinEnd { id, pad });
                }
            }
            Op::Settle => self.settle(),
            Op::Begin {
                id,
                role,
                flags,
                pad,
            } => {
                let id = IDS[usize::from(id)];
                let mut body = [0u8; 8];
                body[..2].copy_from_slice(&role.to_be_bytes());
                body[2] = flags;
                record(&mut self.pending, 1, id, &body, pad);
                self.nokeep |= flags & 1 == 0;
                *self.begins.entry(id).or_default() += 1;
                self.current.insert(id, self.incs.len());
                self.incs.push(Inc {
                    id,
                    role,
                    ..Inc::default()
                });
            }
            Op::Params {
                id,
                mode,
                announce,
                cut,
                pad,
            } => {
                let id = IDS[usize::from(id)];
                let tag = self.current.get(&id).copied();
                let mut params = Vec::new();
                match self.inc(id) {
                    Some(inc) if !inc.tagged && !inc.params_ended && mode > 0 => {
                        inc.tagged = true;
                        inc.announced = (announce > 0).then_some(usize::from(announce));
                        fcgi_proto::nv::encode_pair(&mut params, b"REQUEST_METHOD", b"POST");
                        let uri = format!("/t{}", tag.unwrap_or(0));
                        fcgi_proto::nv::encode_pair(&mut params, b"REQUEST_URI", uri.as_bytes());
                        if announce > 0 {
                            let len = announce.to_string();
                            fcgi_proto::nv::encode_pair(
                                &mut params,
                                b"CONTENT_LENGTH",
                                len.as_bytes(),
                            );
                        }
                    }
                    _ => {
                        let value = vec![b'v'; usize::from(announce % 300)];
                        fcgi_proto::nv::encode_pair(&mut params, b"HTTP_X", &value);
                    }
                }
                let cut = usize::from(cut) % (params.len() + 1);
                let (a, b) = params.split_at(cut);
                for part in [a, b] {
                    if !part.is_empty() {
                        record(&mut self.pending, 4, id, part, pad);
                    }
                }
            }
            Op::ParamsEnd { id, pad } => {
                let id = IDS[usize::from(id)];
                record(&mut self.pending, 4, id, &[], pad);
                if let Some(inc) = self.inc(id) {
                    inc.params_ended = true;
                }
            }
            Op::Stdin { id, len, pad } => {
                let id = IDS[usize::from(id)];
                let tag = self.current.get(&id).copied().unwrap_or(usize::MAX);
                let at = self.inc(id).map_or(0, |i| i.body.len());
                let content = stdin_bytes(tag, at, usize::from(len));
                record(&mut self.pending, 5, id, &content, pad);
                if let Some(inc) = self.inc(id)
                    && !inc.stdin_ended
                    && !inc.aborted
                {
                    inc.body.extend_from_slice(&content);
                }
            }
            Op::StdinEnd { id, pad } => {
                let id = IDS[usize::from(id)];
                record(&mut self.pending, 5, id, &[], pad);
                if let Some(inc) = self.inc(id)
                    && !inc.aborted
                {
                    inc.stdin_ended = true;
                }
            }
            Op::Data { id, len, end } => {
                let id = IDS[usize::from(id)];
                record(&mut self.pending, 8, id, &vec![b'd'; usize::from(len)], 0);
                if end {
                    record(&mut self.pending, 8, id, &[], 0);
                }
            }
            Op::Abort { id } => {
                let id = IDS[usize::from(id)];
                record(&mut self.pending, 2, id, &[], 0);
                if let Some(inc) = self.inc(id) {
                    inc.aborted = true;
                }
            }
            Op::Stray { kind, id0, len } => {
                let id = if id0 { 0 } else { 1 };
                let kind = match kind % 8 {
                    0..=2 => 9,
                    3 => 6,
                    4 => 3,
                    5 => 10,
                    _ => kind.max(12),
                };
                let mut content = Vec::new();
                if kind == 9 {
                    for name in [&b"FCGI_MAX_CONNS"[..], b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"] {
                        if len & 1 == 1 {
                            fcgi_proto::nv::encode_pair(&mut content, name, b"");
                        }
                    }
                } else {
                    content.resize(usize::from(len), 0x42);
                }
                record(&mut self.pending, kind, id, &content, 0);
            }
            Op::Raw(ref bytes) => {
                self.desynced = true;
                self.pending.extend_from_slice(bytes);
            }
            Op::Deliver { len, owned, hold } => {
                self.deliver(usize::from(len), owned, hold);
                self.check_announced();
            }
            Op::Flush { whole } => {
                self.io.whole = whole;
                self.flush();
            }
            Op::SentAll => {
                if !self.io.resend_due
                    && let Some(bytes) = self.io.in_flight.take()
                {
                    self.io.delivered.extend_from_slice(&bytes);
                    self.core.on_sent(self.key, Sent::All(Some(bytes)));
                }
            }
            Op::SentPart(n) => {
                if !self.io.resend_due
                    && let Some(bytes) = self.io.in_flight.as_mut()
                    && bytes.len() > 1
                {
                    let n = 1 + usize::from(n) % (bytes.len() - 1);
                    let rest = bytes.split_off(n);
                    self.io.delivered.extend_from_slice(bytes);
                    *bytes = rest;
                    self.io.resend_due = true;
                    self.core.on_sent(self.key, Sent::Part(n));
                }
            }
            Op::SentFailed => {
                if !self.io.resend_due && self.io.in_flight.take().is_some() {
                    self.core.on_sent(self.key, Sent::Failed);
                    self.gone = true;
                }
            }
            Op::RecvEnded => {
                if self.io.cancelling {
                    self.io.cancelling = false;
                    self.late_receive = false;
                    self.core.on_recv_ended(self.key);
                }
            }
            Op::Clock(ms) => {
                self.core
                    .clock
                    .advance(Duration::from_millis(u64::from(ms)));
                expire(&self.core);
            }
            Op::Handler(i, ref act) => {
                let live: Vec<usize> = (0..self.handlers.len())
                    .filter(|&h| !self.handlers[h].done)
                    .collect();
                if let Some(&h) = live.get(usize::from(i) % live.len().max(1)) {
                    self.handle(h, act);
                }
            }
            Op::Resume => {
                self.core.resume_paused();
                self.replay();
            }
            Op::PeerGone => {
                self.io.armed = false;
                self.core.on_peer_gone(self.key);
                self.gone = true;
            }
            Op::Drain => self.core.begin_drain(),
        }
        self.check();
    }

    /// Delivers up to `len` pending bytes in one receive, if the IO has one armed (or one
    /// last receive racing its cancel).
    fn deliver(&mut self, len: usize, owned: bool, hold: bool) {
        if self.pending.is_empty() || !self.open() || self.io.closed {
            return;
        }
        if !self.io.armed {
            if !self.io.cancelling || self.late_receive {
                return;
            }
            self.late_receive = true;
        }
        let len = len.min(self.pending.len());
        let now: Vec<u8> = self.pending.drain(..len).collect();
        let mut staged = std::mem::take(&mut self.batch);
        if owned {
            let mut buf = bytes::BytesMut::from(&now[..]);
            self.core.on_bytes_owned(self.key, &mut buf, &mut staged);
        } else {
            self.core.on_bytes(self.key, &now, &mut staged);
        }
        self.received_over += now.len();
        self.max_receive = self.max_receive.max(now.len());
        self.batch = staged;
        if !hold {
            self.dispatch();
        }
    }

    /// What a worker's turn does after `resume_paused`: feeds what the core held while the
    /// connection was not to be read, and dispatches the requests that completes (with those
    /// of the batch so far: the turn's dispatch).
    fn replay(&mut self) {
        let mut staged = std::mem::take(&mut self.batch);
        self.core.replay_held(&mut staged);
        self.batch = staged;
        self.dispatch();
    }

    /// Dispatches the requests the receives of the batch completed.
    fn dispatch(&mut self) {
        for s in std::mem::take(&mut self.batch) {
            let tag = tag_of(&s.params);
            let Some((body, _data)) = self.core.take_body(&s) else {
                continue;
            };
            if let Some(tag) = tag
                && !self.desynced
            {
                let inc = &self.incs[tag];
                assert_eq!(
                    inc.id, s.rk.id,
                    "request tagged {tag} staged on the wrong id"
                );
            }
            self.handlers.push(Handler {
                rk: s.rk,
                tag,
                body: Some(body),
                read: Vec::new(),
                saw_end: false,
                saw_error: false,
                head_sent: false,
                written: Vec::new(),
                done: false,
            });
        }
    }

    fn flush(&mut self) {
        self.core.flush(&mut self.io);
        let backlog = self.backlog();
        if backlog > self.max_output {
            assert_ne!(
                self.reading(),
                Some(Reading::Armed),
                "output queue of {backlog} bytes over its limit, yet reading"
            );
        }
    }

    fn handle(&mut self, h: usize, act: &HAct) {
        let core = &self.core;
        let handler = &mut self.handlers[h];
        match *act {
            HAct::Read(frames) => {
                use http_body::Body as _;
                let Some(body) = handler.body.as_mut() else {
                    return;
                };
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                for _ in 0..frames {
                    match std::pin::Pin::new(&mut *body).poll_frame(&mut cx) {
                        std::task::Poll::Ready(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data() {
                                assert!(!handler.saw_end, "bytes after the body's end");
                                handler.read.extend_from_slice(&data);
                            }
                        }
                        std::task::Poll::Ready(Some(Err(_))) => {
                            handler.saw_error = true;
                            break;
                        }
                        std::task::Poll::Ready(None) => {
                            handler.saw_end = true;
                            break;
                        }
                        std::task::Poll::Pending => break,
                    }
                }
            }
            HAct::Write(n, last) => {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                if core.poll_writable(handler.rk, &mut cx).is_pending() {
                    return;
                }
                let mut data = Vec::new();
                if !handler.head_sent {
                    data.extend_from_slice(format!("T{};", handler.rk.serial).as_bytes());
                }
                let at = handler.written.len() + data.len();
                data.extend((at..at + n as usize).map(|i| (i % 251) as u8));
                let head = (!handler.head_sent).then_some(Head::Status(http::StatusCode::OK, 0));
                let mut buf = bytes::Bytes::from(data.clone());
                if core.write_stdout(handler.rk, head, &mut buf, last) {
                    handler.head_sent = true;
                    handler.written.extend_from_slice(&data);
                    handler.done |= last;
                } else {
                    handler.done = true;
                }
            }
            HAct::Finish => {
                if !handler.head_sent {
                    // Its answer is the status alone, with no tag to match: not checked.
                    handler.written.clear();
                }
                core.finish(handler.rk, 0);
                handler.done = true;
            }
            HAct::Fail => {
                core.fail(handler.rk);
                handler.done = true;
            }
            HAct::DropBody => handler.body = None,
        }
        let (tag, read, saw_end) = (handler.tag, handler.read.clone(), handler.saw_end);
        if let Some(tag) = tag
            && !self.desynced
            && !self.nokeep
        {
            let inc = &self.incs[tag];
            let want: &[u8] = if inc.role == 2 { &[] } else { &inc.body };
            assert!(
                want.starts_with(&read),
                "request tagged {tag}: read {} bytes that are not a prefix of the {} sent",
                read.len(),
                want.len()
            );
            if saw_end {
                assert!(
                    inc.stdin_ended || inc.role == 2,
                    "request tagged {tag}: its body ended before the peer ended it"
                );
                assert_eq!(
                    read.len(),
                    want.len(),
                    "request tagged {tag}: body cut short"
                );
            }
        }
    }

    /// Checks the output the peer received so far, and the queue's bound.
    fn check(&mut self) {
        let out = std::mem::take(&mut self.io.delivered);
        while let Some(head) = out.get(self.checked..self.checked + HEADER_LEN) {
            let header = Header::parse(head.try_into().expect("8 bytes"));
            let start = self.checked + HEADER_LEN;
            let end = start + usize::from(header.content_length);
            if out.len() < end + usize::from(header.padding_length) {
                break;
            }
            let content = &out[start..end];
            self.checked = end + usize::from(header.padding_length);
            assert_eq!(header.version, 1, "output record version");
            let id = header.request_id;
            let begun = self.begins.get(&id).copied().unwrap_or(0);
            match header.record_type {
                6 => {
                    assert_ne!(id, 0, "STDOUT on id 0");
                    let ended = self.ends.get(&id).copied().unwrap_or(0);
                    assert!(begun > ended, "STDOUT for id {id}, no request outstanding");
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
                    assert!(
                        *ends <= begun,
                        "END_REQUEST {} for id {id}, {begun} begun",
                        *ends
                    );
                    let stdout = self.stdout.remove(&id).unwrap_or_default();
                    self.answer(id, &stdout);
                }
                10 => assert_eq!(id, 0, "GET_VALUES_RESULT off id 0"),
                11 => {
                    assert_eq!(id, 0, "UNKNOWN_TYPE off id 0");
                    assert_eq!(content.len(), 8, "UNKNOWN_TYPE body");
                }
                other => panic!("record type {other} in the output"),
            }
        }
        self.io.delivered = out;
        let live = {
            let mut conns = self.core.conns.borrow_mut();
            conns.get_mut(self.key).map_or(0, |c| c.requests().count())
        };
        self.check_held_input();
        assert_eq!(self.core.active.get(), live, "requests counted in flight");
        let in_flight = usize::from(self.io.in_flight.is_some() && !self.io.resend_due);
        assert_eq!(self.core.sends.get(), in_flight, "sends counted in flight");
        let backlog = self.backlog();
        if backlog <= self.max_output {
            self.received_over = 0;
        }
        let bound = self.max_output + MAX_WRITE + 64 + ANSWER_SLACK * 8 + 2 * self.received_over;
        assert!(
            backlog <= bound,
            "output queue of {backlog} bytes, bound {bound}"
        );
    }

    /// Bounded input: the bytes each body of the connection holds (unread by its handler, or
    /// staged before dispatch) are within `max_body_buffer` plus one receive.
    fn check_held_input(&mut self) {
        let Some(holds) = self.core.holdings(self.key) else {
            return;
        };
        let max_body = self.core.settings.max_body_buffer;
        assert!(
            holds.body <= max_body + self.max_receive,
            "a body holds {} bytes, limit {max_body} + one receive of at most {}",
            holds.body,
            self.max_receive
        );
    }

    /// An answer the peer received whole: a handler's, on its own id, byte for byte.
    fn answer(&mut self, id: u16, stdout: &[u8]) {
        let Some(split) = stdout.windows(4).position(|w| w == b"\r\n\r\n") else {
            return;
        };
        let body = &stdout[split + 4..];
        if id == PROBE && body == b"probe" {
            self.probe_answered = true;
            return;
        }
        let Some(rest) = body.strip_prefix(b"T") else {
            return;
        };
        let Some(semi) = rest.iter().position(|&b| b == b';') else {
            return;
        };
        let serial = std::str::from_utf8(&rest[..semi])
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let Some(h) = self
            .handlers
            .iter()
            .position(|h| Some(h.rk.serial) == serial)
        else {
            panic!(
                "an answer on id {id} that no handler wrote: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        };
        assert_eq!(self.handlers[h].rk.id, id, "an answer on the wrong id");
        assert!(
            !self.answered.contains_key(&h),
            "request {:?} answered twice",
            self.handlers[h].rk
        );
        let handler = &self.handlers[h];
        self.answered.insert(h, true);
        assert!(
            body == handler.written,
            "answer of request {} on id {id}: {} bytes received, {} written",
            handler.rk.serial,
            body.len(),
            handler.written.len()
        );
    }

    /// Lets everything that can finish finish: handlers read and answer, sends complete,
    /// receives deliver what is pending.
    fn settle(&mut self) {
        let progress = |run: &Run| {
            let read: usize = run.handlers.iter().map(|h| h.read.len()).sum();
            let done = run.handlers.iter().filter(|h| h.done).count();
            let io = &run.io;
            let sending = (io.in_flight.as_ref().map(Vec::len), io.resend_due);
            let receiving = (io.armed, io.cancelling, run.reading());
            let handlers = (read, done, run.handlers.len());
            (
                run.pending.len(),
                io.delivered.len(),
                sending,
                receiving,
                handlers,
            )
        };
        let mut before = None;
        for _ in 0..1000 {
            let now = Some(progress(self));
            if now == before {
                break;
            }
            before = now;
            if self.open() && !self.io.closed {
                self.io.whole = true;
                if self.io.in_flight.is_some() {
                    self.step(&Op::SentAll);
                }
                if self.io.cancelling {
                    self.step(&Op::RecvEnded);
                }
                self.core.resume_paused();
                self.replay();
                self.flush();
                self.step(&Op::Deliver {
                    len: u16::MAX,
                    owned: false,
                    hold: false,
                });
            }
            for h in 0..self.handlers.len() {
                if self.handlers[h].done {
                    continue;
                }
                self.handle(h, &HAct::Read(200));
                let handler = &self.handlers[h];
                // Params that make no request are answered at once (a 400, in the dispatcher).
                let untagged = handler.tag.is_none();
                if untagged || handler.saw_end || handler.saw_error || handler.body.is_none() {
                    self.handle(h, &HAct::Write(3, true));
                    if !self.handlers[h].done {
                        self.handle(h, &HAct::Finish);
                    }
                }
            }
            // The driver is woken when a handler drains its body.
            self.core.resume_paused();
            self.replay();
            self.flush();
            self.check();
        }
        self.check_announced();
    }

    /// Once every byte a body announced was received, its reader has them (it does not wait
    /// for the end of STDIN), unless the core holds some of them (received after the
    /// connection was paused, in the same batch: they reach the body once its reader has
    /// made room, see `Core::replay_held`).
    fn check_announced(&mut self) {
        let reads = self.open() && self.reading() == Some(Reading::Armed);
        let holds = self.core.held.borrow().contains_key(&self.key);
        if !self.pending.is_empty() || !reads || holds || self.desynced || self.nokeep {
            return;
        }
        for h in 0..self.handlers.len() {
            let handler = &self.handlers[h];
            let Some(tag) = handler.tag else {
                continue;
            };
            let inc = &self.incs[tag];
            let Some(announced) = inc.announced else {
                continue;
            };
            if handler.done || handler.body.is_none() || handler.saw_error || inc.role != 1 {
                continue;
            }
            let sent = inc.body.len();
            if sent >= announced && !inc.aborted {
                self.handle(h, &HAct::Read(200));
                let handler = &self.handlers[h];
                assert!(
                    handler.saw_error || handler.read.len() >= announced,
                    "request tagged {tag}: {} of its {announced} announced bytes read, {sent} sent",
                    handler.read.len(),
                );
            }
        }
    }

    /// At the end: a probe request, and if it is answered, no request that could end was left
    /// without its END_REQUEST.
    fn finish(mut self) {
        self.settle();
        // Every handler has read what it was sent (or dropped its body) and every send is
        // done: a connection that still takes requests reads again.
        if let Some(reading) = self.reading() {
            assert_eq!(reading, Reading::Armed, "an open connection left unread");
        }
        let quiet_input = self.pending.is_empty() && !self.desynced;
        if quiet_input && self.open() && !self.gone {
            let mut probe = Vec::new();
            fcgi_proto::record::encode_begin_request(&mut probe, PROBE, 1, true);
            let mut params = Vec::new();
            fcgi_proto::nv::encode_pair(&mut params, b"REQUEST_METHOD", b"GET");
            record(&mut probe, 4, PROBE, &params, 0);
            record(&mut probe, 4, PROBE, &[], 0);
            record(&mut probe, 5, PROBE, &[], 0);
            *self.begins.entry(PROBE).or_default() += 1;
            self.pending = probe;
            let before = self.handlers.len();
            self.step(&Op::Deliver {
                len: u16::MAX,
                owned: false,
                hold: false,
            });
            if let Some(probe) = self.handlers.get_mut(before) {
                let head = Head::Status(http::StatusCode::OK, 5);
                self.core
                    .write_stdout(probe.rk, Some(head), &mut &b"probe"[..], true);
                probe.done = true;
            }
            self.settle();
        }
        if self.probe_answered {
            for (id, begun) in self.begins.iter().filter(|(id, _)| **id != PROBE) {
                let ended = self.ends.get(id).copied().unwrap_or(0);
                let open = self.incs.iter().filter(|i| i.id == *id).skip(ended);
                assert_eq!(open.clone().count(), begun - ended);
                for inc in open {
                    // Its handler waits for the end of its body.
                    let waits = matches!(inc.role, 1 | 3) && inc.tagged && !inc.stdin_ended;
                    let could_end = inc.aborted || inc.params_ended && !waits;
                    assert!(!could_end, "request {inc:?} never ended (probe answered)");
                }
            }
        }
        // Everything dropped: no body left counted as held in a receive buffer.
        let shared = self.core.shared_bodies.clone();
        drop(self.handlers);
        self.core.on_peer_gone(self.key);
        self.core.flush(&mut self.io);
        if self.io.in_flight.take().is_some() && !self.io.resend_due {
            self.core.on_sent(self.key, Sent::Failed);
        }
        assert!(self.core.is_quiet(), "requests or sends left counted");
        assert_eq!(self.core.conn_count(), 0, "the connection left the table");
        drop(self.core);
        assert_eq!(
            shared.load(Ordering::Relaxed),
            0,
            "shared bodies left counted"
        );
    }
}

/// Fuzz input read as choices: a byte at a time, zeros once it is exhausted.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Most steps of one fuzz case, and most bytes its peer queues (a case stays cheap).
const FUZZ_STEPS: usize = 400;
const FUZZ_BYTES: usize = 1 << 20;

/// One operation chosen by fuzz input, with about the weights of [`op`]'s strategy.
fn op_of(c: &mut Choices<'_>) -> Op {
    let id = |c: &mut Choices<'_>| c.u8() % 4;
    let pad = |c: &mut Choices<'_>| {
        let b = c.u8();
        if b & 3 == 0 { b >> 2 } else { 0 }
    };
    let len_of = |c: &mut Choices<'_>, ranges: &[(u16, u16)]| {
        let pick = usize::from(c.u8()) % ranges.len();
        let (lo, hi) = ranges[pick];
        lo + c.u16() % (hi - lo).max(1)
    };
    match c.u8() % 64 {
        0..6 => {
            let (id, role) = (
                id(c),
                [1, 1, 1, 1, 1, 1, 1, 1, 2, 3][usize::from(c.u8() % 10)],
            );
            let keep = !c.u8().is_multiple_of(9);
            let len = len_of(c, &[(0, 1), (1, 100), (1000, 40_000)]);
            // At most 256 records for the body (cases stay cheap).
            let piece = len_of(c, &[(u16::MAX, u16::MAX), (1, 100), (1000, 40_000)]).max(len / 256);
            Op::Request {
                id,
                role,
                keep,
                len,
                piece,
                announce: c.u8() % 3,
                end: !c.u8().is_multiple_of(4),
                pad: pad(c),
            }
        }
        6 => Op::Settle,
        7..11 => {
            let id = id(c);
            let role = match c.u8() % 9 {
                0..6 => 1,
                6 => 2,
                7 => 3,
                _ => u16::from(c.u8() % 9),
            };
            let flags = if c.u8().is_multiple_of(5) { c.u8() } else { 1 };
            Op::Begin {
                id,
                role,
                flags,
                pad: pad(c),
            }
        }
        11..15 => Op::Params {
            id: id(c),
            mode: c.u8() % 6,
            announce: len_of(c, &[(0, 1), (1, 120), (0, u16::MAX)]),
            cut: c.u8(),
            pad: pad(c),
        },
        15..18 => Op::ParamsEnd {
            id: id(c),
            pad: pad(c),
        },
        18..23 => Op::Stdin {
            id: id(c),
            len: len_of(c, &[(1, 40), (1, 3000), (16_000, 30_000)]),
            pad: pad(c),
        },
        23..26 => Op::StdinEnd {
            id: id(c),
            pad: pad(c),
        },
        26 => Op::Data {
            id: id(c),
            len: c.u8(),
            end: c.bool(),
        },
        27 => Op::Abort { id: id(c) },
        28 => Op::Stray {
            kind: c.u8(),
            id0: c.bool(),
            len: c.u8() % 20,
        },
        29 => {
            let n = 1 + usize::from(c.u8() % 12);
            Op::Raw((0..n).map(|_| c.u8()).collect())
        }
        30..40 => {
            let hold = c.u8().is_multiple_of(5);
            let len = len_of(c, &[(1, 20), (1, 500), (u16::MAX, u16::MAX)]);
            Op::Deliver {
                len,
                owned: c.bool(),
                hold,
            }
        }
        40..45 => Op::Flush { whole: c.bool() },
        45..48 => Op::SentAll,
        48..50 => Op::SentPart(c.u16()),
        50 => Op::SentFailed,
        51..53 => Op::RecvEnded,
        53..56 => Op::Clock(len_of(c, &[(0, 100), (0, 3000), (0, 12_000)])),
        56..62 => {
            let i = c.u8();
            let act = match c.u8() % 8 {
                0..3 => HAct::Read(1 + c.u8() % 3),
                3..5 => {
                    let n = len_of(c, &[(0, 200), (1000, 5000), (u16::MAX, u16::MAX)]);
                    let n = if n == u16::MAX {
                        MAX_WRITE as u32
                    } else {
                        u32::from(n)
                    };
                    HAct::Write(n, c.bool())
                }
                5 => HAct::Finish,
                6 => HAct::Fail,
                _ => HAct::DropBody,
            };
            Op::Handler(i, act)
        }
        62 => Op::Resume,
        _ => {
            if c.bool() {
                Op::PeerGone
            } else {
                Op::Drain
            }
        }
    }
}

/// One fuzz case: the core set up and driven as a case of the model test (the operations and
/// checks of `Run`), chosen by `data` instead of proptest. Deterministic: the clock moves
/// only by hand.
pub fn fuzz(data: &[u8]) {
    let mut c = Choices(data);
    let b = c.u8();
    let setup = Setup {
        small_limits: b & 1 != 0,
        max_output: if b & 2 != 0 { 65_536 } else { 1024 },
        max_body: if b & 4 != 0 { 1 << 20 } else { 2048 },
        max_requests: if b & 8 != 0 { 64 } else { 2 },
        handler_timeout: b & 16 != 0,
    };
    let mut run = Run::new(&setup);
    let mut queued = 0;
    for _ in 0..FUZZ_STEPS {
        if c.is_empty() {
            break;
        }
        let op = op_of(&mut c);
        let before = run.pending.len();
        run.step(&op);
        queued += run.pending.len().saturating_sub(before);
        if queued > FUZZ_BYTES {
            break;
        }
    }
    run.finish();
}

#[cfg(test)]
fn run(setup: &Setup, ops: &[Op]) {
    let mut run = Run::new(setup);
    for op in ops {
        run.step(op);
    }
    run.finish();
}

#[cfg(test)]
proptest! {
    // 128 cases by default (a few seconds); `PROPTEST_CASES` asks for more (or fewer).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(128),
        ..ProptestConfig::default()
    })]
    #[test]
    fn a_hostile_peer_gets_well_formed_answers(
        setup in setup(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(&setup, &ops);
    }
}

/// Found by fuzzing: an AUTHORIZER gets no STDIN (spec 6.3; the runtime starts its body
/// ended), yet STDIN a peer sent for one in the receive that completed its params was added to
/// that ended body and handed to the handler; the same bytes one receive later were dropped.
#[test]
fn an_authorizer_gets_no_stdin_sent_with_its_params() {
    let core = core_with(settings());
    let mut io = ModelIo::default();
    let key = core.accept(None).expect("accepted");
    core.flush(&mut io);
    let mut bytes = Vec::new();
    fcgi_proto::record::encode_begin_request(&mut bytes, 1, 2, true);
    record(&mut bytes, 4, 1, &[], 0);
    record(&mut bytes, 5, 1, b"x", 0);
    for owned in [false, true] {
        let mut staged = Vec::new();
        if owned {
            core.on_bytes_owned(key, &mut bytes::BytesMut::from(&bytes[..]), &mut staged);
        } else {
            core.on_bytes(key, &bytes, &mut staged);
        }
        let (body, _) = core.take_body(&staged[0]).expect("live");
        let got = super::tests::frames(body).concat();
        assert!(got.is_empty(), "the authorizer got {got:?} as its body");
        core.finish(staged[0].rk, 0);
    }
}

/// The bytes a body's reader gets now (without its end), polled without a runtime.
#[cfg(test)]
fn read_now(body: &mut RequestBody) -> Vec<u8> {
    use http_body::Body as _;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    while let std::task::Poll::Ready(Some(Ok(frame))) =
        std::pin::Pin::new(&mut *body).poll_frame(&mut cx)
    {
        out.extend_from_slice(&frame.into_data().unwrap_or_default());
    }
    out
}

/// A body announcing 60 bytes whose first 55 came before dispatch, in two records of one
/// receive (its staged buffer grew past 60 bytes of room), and whose last 5 came next: its
/// reader gets all 60 with the last one, not only at the empty STDIN record.
#[test]
fn an_announced_body_whose_staged_buffer_grew_reaches_its_reader_with_its_last_byte() {
    let core = core_with(settings());
    let mut io = ModelIo::default();
    let key = core.accept(None).expect("accepted");
    core.flush(&mut io);
    let mut bytes = Vec::new();
    fcgi_proto::record::encode_begin_request(&mut bytes, 1, 1, true);
    let mut params = Vec::new();
    fcgi_proto::nv::encode_pair(&mut params, b"REQUEST_METHOD", b"POST");
    fcgi_proto::nv::encode_pair(&mut params, b"CONTENT_LENGTH", b"60");
    record(&mut bytes, 4, 1, &params, 0);
    record(&mut bytes, 4, 1, &[], 0);
    record(&mut bytes, 5, 1, &[1; 5], 0);
    record(&mut bytes, 5, 1, &[2; 50], 0);
    let mut staged = Vec::new();
    core.on_bytes(key, &bytes, &mut staged);
    let (mut body, _) = core.take_body(&staged[0]).expect("live");
    let mut got = read_now(&mut body);
    let mut last = Vec::new();
    record(&mut last, 5, 1, &[3; 5], 0);
    core.on_bytes(key, &last, &mut Vec::new());
    got.extend(read_now(&mut body));
    assert_eq!(got.len(), 60, "the announced body's bytes the reader has");
}

/// A body sent a byte a record to a handler that does not read it: past half the body buffer
/// limit every byte was handed on as a frame of its own (`Channel::settle`), each costing a
/// `Bytes`, its allocation and a queue slot (some 60 bytes), so up to the pause at the limit a
/// body held about 30 times its bytes (30 MiB at the default 1 MiB limit). Its bytes are held in
/// buffers of many bytes, as below half the limit.
#[test]
fn a_body_sent_a_byte_a_record_past_half_its_limit_is_not_held_a_frame_a_byte() {
    for announced in [false, true] {
        let mut s = settings();
        s.max_body_buffer = 64 * 1024;
        let core = core_with(s);
        core.set_driver_waker(std::task::Waker::noop());
        let mut io = ModelIo::default();
        let key = core.accept(None).expect("accepted");
        core.flush(&mut io);
        let mut bytes = Vec::new();
        fcgi_proto::record::encode_begin_request(&mut bytes, 1, 1, true);
        let mut params = Vec::new();
        fcgi_proto::nv::encode_pair(&mut params, b"REQUEST_METHOD", b"POST");
        if announced {
            fcgi_proto::nv::encode_pair(&mut params, b"CONTENT_LENGTH", b"10000000");
        }
        record(&mut bytes, 4, 1, &params, 0);
        record(&mut bytes, 4, 1, &[], 0);
        let mut staged = Vec::new();
        core.on_bytes(key, &bytes, &mut staged);
        let (mut body, _) = core.take_body(&staged[0]).expect("live");
        // Receives of 16 KiB of one-byte records until the connection stops reading.
        let mut receive = Vec::new();
        for _ in 0..(16 * 1024 / 9) {
            record(&mut receive, 5, 1, b"x", 0);
        }
        let mut sent = 0;
        while io.armed {
            core.on_bytes(key, &receive, &mut Vec::new());
            sent += 16 * 1024 / 9;
            core.flush(&mut io);
        }
        use http_body::Body as _;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let (mut frames, mut got) = (0, 0);
        while let std::task::Poll::Ready(Some(Ok(frame))) =
            std::pin::Pin::new(&mut body).poll_frame(&mut cx)
        {
            frames += 1;
            got += frame.into_data().map_or(0, |d| d.len());
        }
        // A body of announced length keeps filling its last buffer (of at most MIN_FILL
        // bytes, as it is under half the limit now) until it is full.
        let filling = if announced { crate::body::MIN_FILL } else { 0 };
        assert!(
            got <= sent && got + filling >= sent,
            "announced {announced}: {got} of {sent} bytes read"
        );
        assert!(
            frames <= sent / 1024,
            "announced {announced}: {sent} bytes held in {frames} frames"
        );
    }
}

/// A core with one connection accepted and flushed, its sends taken whole.
#[cfg(test)]
fn opened() -> (Core, ModelIo, ConnKey) {
    opened_with(core_with(settings()))
}

/// `core` with one connection accepted and flushed, its sends taken whole.
#[cfg(test)]
fn opened_with(core: Core) -> (Core, ModelIo, ConnKey) {
    let mut io = ModelIo {
        whole: true,
        ..ModelIo::default()
    };
    let key = core.accept(None).expect("accepted");
    core.flush(&mut io);
    (core, io, key)
}

/// Request 1 (KEEP_CONN=1) and request 2 (KEEP_CONN=0) in flight on one connection; request 2
/// is answered first. The protocol layer ignores new BEGIN_REQUESTs from then on while the
/// active requests go on (fcgi_proto::conn), and the connection stays open, with every
/// deadline, until request 1 is answered too: only then is the write side shut down (it was
/// shut down as soon as the output was idle, and request 1's answer handed to the IO after
/// the FIN, where it could never reach the peer).
#[test]
fn a_keep_conn_0_answer_does_not_cut_off_another_request_in_flight() {
    let (core, mut io, key) = opened();
    let mut bytes = Vec::new();
    for (id, keep) in [(1u16, true), (2, false)] {
        fcgi_proto::record::encode_begin_request(&mut bytes, id, 1, keep);
        let mut params = Vec::new();
        fcgi_proto::nv::encode_pair(&mut params, b"REQUEST_METHOD", b"GET");
        record(&mut bytes, 4, id, &params, 0);
        record(&mut bytes, 4, id, &[], 0);
        record(&mut bytes, 5, id, &[], 0);
    }
    let mut staged = Vec::new();
    core.on_bytes(key, &bytes, &mut staged);
    assert_eq!(staged.len(), 2);
    core.write_status(staged[1].rk, http::StatusCode::OK);
    core.flush(&mut io);
    core.write_status(staged[0].rk, http::StatusCode::OK);
    core.flush(&mut io);
    assert_eq!(
        io.sends_after_shutdown, 0,
        "request 1's answer was sent after the write side was shut down"
    );
}

/// A BEGIN_REQUEST without KEEP_CONN that the runtime refuses (an unknown role or a params
/// limit in the protocol layer, OVERLOADED at `max_requests_per_worker` in `Core::feed`, an
/// abort before its params ended) gets its END_REQUEST, after which the protocol layer ignores
/// every new BEGIN_REQUEST (`should_close`): the connection then closes as after an answer
/// (it stayed open and reading, and a later request on it got no answer at all until the idle
/// deadline).
#[test]
fn a_refused_keep_conn_0_request_does_not_leave_its_connection_deaf() {
    let (core, mut io, key) = opened();
    // Role 7 is no role: END_REQUEST(UNKNOWN_ROLE), and this request had no KEEP_CONN.
    let mut bytes = Vec::new();
    fcgi_proto::record::encode_begin_request(&mut bytes, 1, 7, false);
    core.on_bytes(key, &bytes, &mut Vec::new());
    core.flush(&mut io);
    // A later request on the connection: served, or the connection is closing.
    let mut later = Vec::new();
    fcgi_proto::record::encode_begin_request(&mut later, 2, 1, true);
    record(&mut later, 4, 2, &[], 0);
    let mut staged = Vec::new();
    core.on_bytes(key, &later, &mut staged);
    core.flush(&mut io);
    let open = {
        let mut conns = core.conns.borrow_mut();
        conns.get_mut(key).is_some_and(|c| c.is_open())
    };
    assert!(
        !staged.is_empty() || !open,
        "request 2 ignored on a connection left open"
    );
}

/// A core whose bodies are held to `max_body_buffer` = 2,048 bytes, its driver waker set, and
/// one connection accepted and reading (sends taken whole).
#[cfg(test)]
fn reading_with_2k_bodies() -> (Core, ModelIo, ConnKey) {
    let mut s = settings();
    s.max_body_buffer = 2048;
    let core = core_with(s);
    core.set_driver_waker(std::task::Waker::noop());
    opened_with(core)
}

/// Request 1 with the one param `name` = `value`, its params ended, and 3,000 bytes of STDIN
/// (past a 2,048-byte limit), not ended.
#[cfg(test)]
fn over_2k_body(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    fcgi_proto::record::encode_begin_request(&mut bytes, 1, 1, true);
    let mut params = Vec::new();
    fcgi_proto::nv::encode_pair(&mut params, name, value);
    record(&mut bytes, 4, 1, &params, 0);
    record(&mut bytes, 4, 1, &[], 0);
    record(&mut bytes, 5, 1, &[1; 3000], 0);
    bytes
}

/// Found by fuzzing: a body's bytes that came before its handler was dispatched (staged in
/// the receive, or the receives of one batch, that completed its params) were not held to
/// `max_body_buffer`: a body dispatched over its limit left its connection reading, and the
/// next receive added to it (a body held its limit plus two receives, or a whole batch plus
/// one, not plus one receive as `docs/limits.md` says). Staged bytes past the limit stop the
/// reading as bytes in the handler's channel do.
#[test]
fn a_body_over_its_limit_before_dispatch_stops_the_reading() {
    for owned in [false, true] {
        let (core, mut io, key) = reading_with_2k_bodies();
        let bytes = over_2k_body(b"REQUEST_METHOD", b"POST");
        let mut staged = Vec::new();
        if owned {
            core.on_bytes_owned(key, &mut bytes::BytesMut::from(&bytes[..]), &mut staged);
        } else {
            core.on_bytes(key, &bytes, &mut staged);
        }
        let (body, _) = core.take_body(&staged[0]).expect("live");
        core.flush(&mut io);
        // The next receive (the one racing the cancel, if the reading stopped).
        let mut more = Vec::new();
        record(&mut more, 5, 1, &[2; 3000], 0);
        core.on_bytes(key, &more, &mut Vec::new());
        core.flush(&mut io);
        let held = core.holdings(key).expect("open").body;
        assert!(
            held <= 2048 + more.len(),
            "owned {owned}: a body holds {held} bytes, limit 2048 + one receive of {}",
            more.len()
        );
        drop(body);
    }
}

/// Found by fuzzing: a connection paused for a staged body over its limit was resumed by a
/// look at the paused connections made before that body's dispatch (a staged body counted as
/// ready for more), and its next receive added to it: the body held its limit plus two
/// receives. The worker loops dispatch what a turn staged before the next turn's look, but the
/// core no longer depends on it: a staged body over its limit keeps its connection paused
/// until it is dispatched, and then until its handler drains it.
#[test]
fn a_staged_body_over_its_limit_keeps_its_connection_paused_until_dispatched() {
    let (core, mut io, key) = reading_with_2k_bodies();
    let bytes = over_2k_body(b"CONTENT_LENGTH", b"20000");
    let mut staged = Vec::new();
    core.on_bytes(key, &bytes, &mut staged);
    core.flush(&mut io);
    assert!(!io.armed, "paused: the staged body is over its limit");
    // The cancelled receive ends.
    core.on_recv_ended(key);
    core.flush(&mut io);
    // A look at the paused connections before the dispatch (a batch not dispatched yet).
    core.resume_paused();
    core.flush(&mut io);
    assert!(!io.armed, "still paused before the dispatch");
    assert_eq!(staged.len(), 1);
    let (body, _) = core.take_body(&staged[0]).expect("live");
    // Dispatched, the bytes are its handler's, unread: paused until the handler drains them.
    core.resume_paused();
    core.flush(&mut io);
    assert!(!io.armed, "still paused while the handler has not read");
    let held = core.holdings(key).expect("open").body;
    assert!(held <= 2048 + bytes.len(), "a body holds {held} bytes");
    drop(body);
    core.resume_paused();
    core.flush(&mut io);
    assert!(io.armed, "read again once nobody holds the body");
}

/// To read a crash of the fuzz target's core mode: `FUZZ_INPUT=<file> cargo test -p
/// fcgi-uring --lib fuzz_input -- --nocapture` prints the operations the file makes and runs
/// them (without `FUZZ_INPUT`, nothing).
#[test]
fn fuzz_input_replayed() {
    let Some(path) = std::env::var_os("FUZZ_INPUT") else {
        return;
    };
    let data = std::fs::read(path).expect("FUZZ_INPUT names a readable file");
    // The fuzz target's first byte chose this mode; the next one the setup.
    let data = data.get(1..).unwrap_or_default();
    let mut c = Choices(data.get(1..).unwrap_or_default());
    eprintln!("setup byte {:#x}", data.first().copied().unwrap_or(0));
    while !c.is_empty() {
        eprintln!("{:?}", op_of(&mut c));
    }
    fuzz(data);
}
