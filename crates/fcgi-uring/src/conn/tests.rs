//! The connection core driven with byte vectors, a fake IO that records what it is asked, and
//! the worker clock moved by hand: no socket, no ring.

use super::input::{BODY_SHARE_MIN, MAX_SHARED_BODIES};
use super::state::{Lifecycle, Reading, Writing};
use super::*;
use crate::body::RequestBody;
use fcgi_proto::record::{self, RecordType};
use std::time::Duration;

/// What the core asked of the IO.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Send(Vec<u8>),
    Resend,
    ArmRecv,
    CancelRecv,
    ShutdownWrite,
    Cork,
    Close { abort: bool },
}

/// Records every action, taking the bytes of each send.
#[derive(Default)]
struct FakeIo {
    actions: Vec<(ConnKey, Action)>,
    /// Sends are taken whole at once ([`Sending::Done`], as a non-blocking send the socket
    /// has room for); otherwise they are under way until the test reports them.
    whole: bool,
}

impl FakeIo {
    /// The actions since the last call, for `key`.
    fn take(&mut self, key: ConnKey) -> Vec<Action> {
        let all = std::mem::take(&mut self.actions);
        all.into_iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, a)| a)
            .collect()
    }
}

impl Io for FakeIo {
    fn send(&mut self, key: ConnKey, out: &mut OutQueue) -> Sending {
        let mut bytes = Vec::new();
        let sending = if self.whole {
            out.queued().append_to(&mut bytes);
            out.copied();
            Sending::Done
        } else {
            out.take().append_to(&mut bytes);
            Sending::Started
        };
        self.actions.push((key, Action::Send(bytes)));
        sending
    }

    fn resend(&mut self, key: ConnKey) {
        self.actions.push((key, Action::Resend));
    }

    fn arm_recv(&mut self, key: ConnKey) {
        self.actions.push((key, Action::ArmRecv));
    }

    fn cancel_recv(&mut self, key: ConnKey) {
        self.actions.push((key, Action::CancelRecv));
    }

    fn shutdown_write(&mut self, key: ConnKey) {
        self.actions.push((key, Action::ShutdownWrite));
    }

    fn cork(&mut self, key: ConnKey) {
        self.actions.push((key, Action::Cork));
    }

    fn close(&mut self, key: ConnKey, abort: bool) {
        self.actions.push((key, Action::Close { abort }));
    }
}

pub(crate) use super::{test_core as core_with, test_settings as settings};

/// A responder request `id` with no params and an empty body.
fn request(id: u16, keep_conn: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    record::encode_begin_request(&mut bytes, id, 1, keep_conn);
    record::encode_stream_end(&mut bytes, RecordType::Params, id);
    record::encode_stream_end(&mut bytes, RecordType::Stdin, id);
    bytes
}

/// The records that end request `id` after its response: STDOUT end, END_REQUEST(0).
fn end_of(id: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    record::encode_stream_end(&mut bytes, RecordType::Stdout, id);
    record::encode_end_request(
        &mut bytes,
        id,
        0,
        fcgi_proto::ProtocolStatus::RequestComplete,
    );
    bytes
}

/// A connection accepted and flushed once (its receive armed).
fn open(core: &Core, io: &mut FakeIo) -> ConnKey {
    let key = core.accept(None).expect("accepted");
    core.flush(io);
    assert_eq!(io.take(key), [Action::ArmRecv]);
    key
}

/// Feeds `bytes`; returns the requests that became complete.
fn receive(core: &Core, key: ConnKey, bytes: &[u8]) -> Vec<ReqKey> {
    let mut staged = Vec::new();
    core.on_bytes(key, bytes, &mut staged);
    staged.iter().map(|s| s.rk).collect()
}

fn state(core: &Core, key: ConnKey) -> Option<(Lifecycle, Reading, Writing)> {
    let mut conns = core.conns.borrow_mut();
    let conn = conns.get_mut(key)?;
    Some((conn.lifecycle(), conn.reading(), conn.writing()))
}

/// Our write side is shut down (FIN sent) and the connection still reads to the peer's EOF.
fn shut_down_still_reading(core: &Core, key: ConnKey) -> bool {
    matches!(
        state(core, key),
        Some((
            Lifecycle::Draining {
                shutdown_at: Some(_)
            },
            Reading::Armed,
            _
        ))
    )
}

fn the_send(actions: &[Action]) -> Vec<u8> {
    match actions {
        [Action::Send(bytes), ..] => bytes.clone(),
        other => panic!("expected a send first, got {other:?}"),
    }
}

/// A request aborted in the receive that completed its params stays in that batch's staged
/// list, but it has ended: its dispatch takes no body (so starts no handler), and the peer gets
/// one END_REQUEST for it. Many aborts in one batch cost no search of the list each.
#[test]
fn a_request_aborted_in_the_receive_that_staged_it_is_not_dispatched() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let mut bytes = request(1, true);
    bytes.extend(request(2, true));
    record::encode_abort_request(&mut bytes, 1);
    let mut staged = Vec::new();
    core.on_bytes(key, &bytes, &mut staged);
    assert_eq!(staged.len(), 2, "both were staged");
    assert!(
        core.take_body(&staged[0]).is_none(),
        "the aborted one is gone"
    );
    assert!(core.take_body(&staged[1]).is_some(), "the other is live");
    core.flush(&mut io);
    let mut end = Vec::new();
    record::encode_end_request(&mut end, 1, 0, fcgi_proto::ProtocolStatus::RequestComplete);
    assert_eq!(the_send(&io.take(key)), end, "END_REQUEST alone, once");
}

#[test]
fn a_request_in_gives_a_send_of_its_response() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let staged = receive(&core, key, &request(1, true));
    assert_eq!(staged.len(), 1, "one request complete");
    let rk = staged[0];
    core.flush(&mut io);
    assert_eq!(
        io.take(key),
        [],
        "nothing to send before the handler answers"
    );

    core.write_status(rk, http::StatusCode::OK);
    core.flush(&mut io);
    let sent = the_send(&io.take(key));
    let mut head = Vec::new();
    crate::cgi::encode_status_only(http::StatusCode::OK, 2, &mut head);
    let mut want = Vec::new();
    record::encode_stream(
        &mut want,
        RecordType::Stdout,
        1,
        &[head, b"OK".to_vec()].concat(),
    );
    want.extend_from_slice(&end_of(1));
    assert_eq!(sent, want);
    assert!(!core.is_quiet(), "the send is in flight");

    core.on_sent(key, Sent::All(Some(sent)));
    core.flush(&mut io);
    assert_eq!(io.take(key), [], "still reading, nothing more to do");
    assert!(core.is_quiet());
    let (lifecycle, reading, writing) = state(&core, key).expect("open");
    assert_eq!(
        (lifecycle, reading, writing),
        (Lifecycle::Open, Reading::Armed, Writing::Idle)
    );
}

/// A connection whose IO takes every send whole, after request 1 (`keep_conn`) was answered
/// and flushed: the core, the IO, the connection and what that flush asked of the IO.
fn answered_whole(settings: Settings, keep_conn: bool) -> (Core, FakeIo, ConnKey, Vec<Action>) {
    let core = core_with(settings);
    let mut io = FakeIo {
        whole: true,
        ..FakeIo::default()
    };
    let key = open(&core, &mut io);
    let rk = receive(&core, key, &request(1, keep_conn))[0];
    core.write_status(rk, http::StatusCode::OK);
    core.flush(&mut io);
    let actions = io.take(key);
    assert!(the_send(&actions).ends_with(&end_of(1)));
    (core, io, key, actions)
}

#[test]
fn a_send_taken_whole_is_settled_in_the_flush_that_made_it() {
    let (core, mut io, key, actions) = answered_whole(settings(), true);
    assert_eq!(actions.len(), 1, "the send only: {actions:?}");
    assert!(!core.has_dirty(), "nothing left for a second flush");
    assert!(core.is_quiet(), "no send in flight");
    assert_eq!(
        state(&core, key),
        Some((Lifecycle::Open, Reading::Armed, Writing::Idle))
    );
    // The next answer goes out at once: the connection is not waiting for a report.
    let rk = receive(&core, key, &request(2, true))[0];
    core.write_status(rk, http::StatusCode::OK);
    core.flush(&mut io);
    assert!(the_send(&io.take(key)).ends_with(&end_of(2)));
}

#[test]
fn keep_conn_0_shuts_down_in_the_flush_whose_send_was_taken_whole() {
    let (core, _io, key, actions) = answered_whole(settings(), false);
    assert_eq!(
        actions[1..],
        [Action::ShutdownWrite],
        "FIN in the same flush"
    );
    assert!(shut_down_still_reading(&core, key));
    assert_eq!(state(&core, key).map(|s| s.2), Some(Writing::Idle));
}

#[test]
fn a_send_taken_whole_leaves_no_write_deadline() {
    let mut s = settings();
    s.timeouts.write = Duration::from_secs(3);
    s.timeouts.idle = Duration::from_secs(60);
    let (core, mut io, key, _) = answered_whole(s, true);
    core.clock.advance(Duration::from_millis(3100));
    expire(&core);
    core.flush(&mut io);
    assert_eq!(io.take(key), [], "the answer is out: nothing to time out");
    assert_eq!(core.conn_count(), 1);
}

#[test]
fn a_short_send_is_resent_before_newer_output() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let rk = receive(&core, key, &request(1, true))[0];
    core.write_status(rk, http::StatusCode::OK);
    core.flush(&mut io);
    let sent = the_send(&io.take(key));
    core.on_sent(key, Sent::Part(5));
    core.flush(&mut io);
    assert_eq!(io.take(key), [Action::Resend]);
    let mut conns = core.conns.borrow_mut();
    let conn = conns.get_mut(key).expect("open");
    assert_eq!(conn.backlog(), sent.len() - 5, "the rest is still owed");
}

#[test]
fn peer_eof_closes_the_connection() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    core.on_peer_gone(key);
    core.flush(&mut io);
    assert_eq!(
        io.take(key),
        [Action::CancelRecv, Action::Close { abort: false }]
    );
    assert_eq!(core.conn_count(), 0, "dropped once closed");
    // Late completions of the dropped connection are harmless.
    core.on_recv_ended(key);
    core.on_sent(key, Sent::Failed);
    core.flush(&mut io);
    assert_eq!(io.take(key), []);
}

#[test]
fn keep_conn_0_flushes_shuts_down_reads_to_eof_and_closes() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let rk = receive(&core, key, &request(1, false))[0];
    core.write_status(rk, http::StatusCode::OK);
    core.flush(&mut io);
    let sent = the_send(&io.take(key));
    assert!(sent.ends_with(&end_of(1)));
    assert!(matches!(
        state(&core, key),
        Some((Lifecycle::Draining { shutdown_at: None }, Reading::Armed, _))
    ));

    core.on_sent(key, Sent::All(None));
    core.flush(&mut io);
    assert_eq!(
        io.take(key),
        [Action::ShutdownWrite],
        "FIN once all is sent"
    );
    assert!(shut_down_still_reading(&core, key));
    // What the peer still sends is read and dropped.
    assert_eq!(receive(&core, key, &request(2, true)), []);
    core.flush(&mut io);
    assert_eq!(io.take(key), []);

    core.on_recv_ended(key);
    core.on_peer_gone(key);
    core.flush(&mut io);
    assert_eq!(io.take(key), [Action::Close { abort: false }]);
    assert_eq!(core.conn_count(), 0);
}

#[test]
fn an_output_backlog_over_its_limit_stops_reading_until_it_drains() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let rk = receive(&core, key, &request(1, true))[0];
    let body = vec![b'x'; 4096];
    let head = Head::Status(http::StatusCode::OK, body.len() as u64);
    assert!(core.write_stdout(rk, Some(head), &mut &body[..], false));
    core.flush(&mut io);
    let actions = io.take(key);
    assert!(the_send(&actions).len() > 4096);
    assert_eq!(
        actions[1..],
        [Action::CancelRecv],
        "not read while over the limit"
    );

    core.on_recv_ended(key);
    core.on_sent(key, Sent::All(None));
    core.flush(&mut io);
    assert_eq!(io.take(key), [Action::ArmRecv], "read again once sent");
}

/// `n` records of the unknown type `kind` (management records, id 0, no content): each gets an
/// UNKNOWN_TYPE answer of 16 bytes naming `kind`.
fn unknown_records(kind: u8, n: usize) -> Vec<u8> {
    [1, kind, 0, 0, 0, 0, 0, 0].repeat(n)
}

/// The types named by the UNKNOWN_TYPE answers in `sent`, in order.
fn unknown_types_answered(sent: &[u8]) -> Vec<u8> {
    assert_eq!(sent.len() % 16, 0, "whole UNKNOWN_TYPE records");
    sent.chunks(16)
        .map(|r| {
            assert_eq!(r[1], 11, "an UNKNOWN_TYPE record");
            r[8]
        })
        .collect()
}

fn backlog(core: &Core, key: ConnKey) -> usize {
    core.conns
        .borrow_mut()
        .get_mut(key)
        .expect("open")
        .backlog()
}

/// What the IO still delivers once the output is over its limit (io_uring receives completed
/// before the receive was cancelled) is held unparsed, not answered: the output stays within
/// the limit plus the answers to one receive. Once the output drains, the held bytes are fed
/// in arrival order, and only then is the connection read again.
#[test]
fn bytes_received_over_the_output_limit_wait_unparsed_and_keep_their_order() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let mut staged = Vec::new();
    core.on_bytes(key, &unknown_records(20, 100), &mut staged);
    assert_eq!(backlog(&core, key), 1600, "over the 1024-byte limit");
    core.on_bytes(key, &unknown_records(30, 100), &mut staged);
    assert_eq!(backlog(&core, key), 1600, "held, not answered");
    core.flush(&mut io);
    let actions = io.take(key);
    let mut sent = the_send(&actions);
    assert_eq!(actions[1..], [Action::CancelRecv]);
    core.on_bytes(key, &unknown_records(40, 100), &mut staged);
    core.on_recv_ended(key);
    assert_eq!(backlog(&core, key), 1600, "held after the cancel too");

    core.on_sent(key, Sent::All(None));
    core.flush(&mut io);
    assert_eq!(io.take(key), [], "not read while bytes are held");
    assert!(
        core.has_dirty(),
        "a turn to feed them comes before any wait"
    );
    // One receive at a time, each while the output is within its limit.
    for _ in 0..2 {
        core.replay_held(&mut staged);
        assert_eq!(backlog(&core, key), 1600, "fed until the output is full");
        core.flush(&mut io);
        sent.extend(the_send(&io.take(key)));
        core.on_sent(key, Sent::All(None));
    }
    core.flush(&mut io);
    assert_eq!(
        io.take(key),
        [Action::ArmRecv],
        "read again once all is fed"
    );
    assert!(core.held.borrow().is_empty());
    let want: Vec<u8> = [20u8, 30, 40].iter().flat_map(|&t| [t; 100]).collect();
    assert_eq!(unknown_types_answered(&sent), want);
    assert!(staged.is_empty());
}

/// A connection paused on a full body holds what still arrives instead of pushing it into the
/// body past its limit; the handler that reads gets it after what it had, in order.
#[test]
fn bytes_received_while_a_full_body_pauses_the_connection_follow_in_order() {
    let mut s = settings();
    s.max_body_buffer = 1024;
    let core = core_with(s);
    core.set_driver_waker(std::task::Waker::noop());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let mut staged = Vec::new();
    core.on_bytes(key, &upload_head(1, 5000), &mut staged);
    let (mut body, _) = core.take_body(&staged[0]).expect("live");
    staged.clear();
    let (first, second) = (pattern(2000, 1), pattern(3000, 2));
    core.on_bytes(key, &stdin_records(1, &first, 2000, false), &mut staged);
    let mut rest = stdin_records(1, &second, 1000, true);
    record::encode_stream_end(&mut rest, RecordType::Stdin, 1);
    core.on_bytes(key, &rest, &mut staged);
    core.flush(&mut io);
    assert_eq!(io.take(key), [Action::CancelRecv]);
    let mut got = frames_now(&mut body).concat();
    assert_eq!(got, first, "the body past its limit by no later receive");

    core.resume_paused();
    core.replay_held(&mut staged);
    core.flush(&mut io);
    got.extend(frames_now(&mut body).concat());
    core.resume_paused();
    core.replay_held(&mut staged);
    core.flush(&mut io);
    got.extend(frames_now(&mut body).concat());
    assert_eq!(got, [first, second].concat());
    assert_eq!(
        io.take(key),
        [],
        "the receive ended before it is armed again"
    );
    core.on_recv_ended(key);
    core.flush(&mut io);
    assert_eq!(io.take(key), [Action::ArmRecv]);
}

/// Held bytes go with their connection: a peer gone while it held some leaves nothing behind.
#[test]
fn held_bytes_are_dropped_with_their_connection() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let mut staged = Vec::new();
    core.on_bytes(key, &unknown_records(20, 100), &mut staged);
    core.on_bytes(key, &unknown_records(30, 100), &mut staged);
    assert_eq!(core.held.borrow().len(), 1);
    core.on_peer_gone(key);
    core.flush(&mut io);
    core.on_sent(key, Sent::All(None));
    core.flush(&mut io);
    assert_eq!(core.conn_count(), 0);
    assert!(core.held.borrow().is_empty());
}

#[test]
fn a_protocol_error_flushes_then_closes() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    // A record of version 2.
    assert_eq!(receive(&core, key, &[2, 1, 0, 1, 0, 8, 0, 0]), []);
    core.flush(&mut io);
    assert_eq!(
        io.take(key),
        [Action::CancelRecv, Action::Close { abort: false }]
    );
    assert_eq!(core.conn_count(), 0);
}

#[test]
fn an_idle_connection_is_closed_at_its_deadline() {
    let mut s = settings();
    s.timeouts.idle = Duration::from_secs(2);
    let core = core_with(s);
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    closed_2s_idle(&core, &mut io, key);
    assert_eq!(core.conn_count(), 0);
}

/// Connection `key`, idle from now with an idle timeout of 2 s: open at 1.9 s, closed (aborted:
/// no answer to carry the FIN) at 2.1 s.
fn closed_2s_idle(core: &Core, io: &mut FakeIo, key: ConnKey) {
    core.clock.advance(Duration::from_millis(1900));
    expire(core);
    core.flush(io);
    assert_eq!(io.take(key), [], "not yet");
    core.clock.advance(Duration::from_millis(200));
    assert!(expire(core));
    core.flush(io);
    assert_eq!(
        io.take(key),
        [Action::CancelRecv, Action::Close { abort: true }]
    );
}

/// An answer whose send ends later (a ring send) leaves the connection to the idle timeout from
/// its answer on, though no flush passes over it at the send's end, and though the write
/// timeout it had while the send was under way is much later; a send's end that leaves work
/// (output queued meanwhile) still goes through the flush.
#[test]
fn a_send_that_ends_later_leaves_the_idle_timeout_from_the_answer() {
    let mut s = settings();
    s.timeouts.idle = Duration::from_secs(2);
    s.timeouts.write = Duration::from_secs(30);
    s.timeouts.handler = Duration::ZERO;
    let core = core_with(s);
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let rk = receive(&core, key, &request(1, true))[0];
    core.flush(&mut io);
    // The handler runs past the entry the connection's start left in the wheel (its idle
    // timeout, which does not apply while a request runs): the connection has no deadline.
    core.clock.advance(Duration::from_millis(2100));
    expire(&core);
    core.flush(&mut io);
    assert_eq!(io.take(key), []);
    // Answered at 2.1 s: the send's write timeout (32.1 s) is its only deadline while the
    // send is under way.
    let head = Head::Status(http::StatusCode::OK, 2);
    assert!(core.write_stdout(rk, Some(head), &mut &b"hi"[..], true));
    core.flush(&mut io);
    assert!(!the_send(&io.take(key)).is_empty());
    core.on_sent(key, Sent::All(None));
    assert!(!core.has_dirty(), "nothing left for a flush");
    // Closed at the idle timeout from the answer, not at the write timeout's 32.1 s.
    closed_2s_idle(&core, &mut io, key);

    // Output queued while a send was under way: its end goes through the flush, which sends it.
    let key = open(&core, &mut io);
    for id in [1, 2] {
        let rk = receive(&core, key, &request(id, true))[0];
        let head = Head::Status(http::StatusCode::OK, 2);
        assert!(core.write_stdout(rk, Some(head), &mut &b"hi"[..], true));
        if id == 1 {
            core.flush(&mut io);
            assert_eq!(io.take(key).len(), 1, "request 1's answer sent");
        }
    }
    core.on_sent(key, Sent::All(None));
    assert!(core.has_dirty());
    core.flush(&mut io);
    assert!(
        matches!(io.take(key)[..], [Action::Send(_)]),
        "request 2's answer sent"
    );
}

/// The params deadline of a request runs from the receive that began it, however many other
/// requests on its connection complete meanwhile (each completing one does not restart it).
#[test]
fn params_that_never_end_are_closed_at_their_deadline_whatever_completes_meanwhile() {
    let mut s = settings();
    s.timeouts.params = Duration::from_secs(2);
    s.timeouts.idle = Duration::from_secs(60);
    let core = core_with(s);
    let mut io = FakeIo {
        whole: true,
        ..FakeIo::default()
    };
    let key = open(&core, &mut io);
    // Request 1 begins, with one byte of params, and never ends them.
    let mut begun = Vec::new();
    record::encode_begin_request(&mut begun, 1, 1, true);
    begun.extend_from_slice(&[1, 4, 0, 1, 0, 1, 0, 0, 5]);
    assert_eq!(receive(&core, key, &begun), []);
    // Every 450 ms another request completes and is answered.
    for id in 2..=5u16 {
        core.clock.advance(Duration::from_millis(450));
        assert!(!expire(&core), "not yet at {id}");
        let rk = receive(&core, key, &request(id, true))[0];
        core.write_status(rk, http::StatusCode::OK);
        core.flush(&mut io);
        the_send(&io.take(key));
    }
    core.clock.advance(Duration::from_millis(300));
    assert!(expire(&core), "2.1 s after request 1 began");
    core.flush(&mut io);
    assert_eq!(
        io.take(key),
        [Action::CancelRecv, Action::Close { abort: true }]
    );
}

/// While the server does not read a connection because a handler's body buffer is full (no
/// fault of the peer), the params deadline of a request on it stands still; it restarts when
/// reading resumes.
#[test]
fn the_params_deadline_stands_still_while_a_full_body_pauses_the_connection() {
    let mut s = settings();
    s.timeouts.params = Duration::from_secs(2);
    s.timeouts.idle = Duration::from_secs(60);
    s.timeouts.body = Duration::ZERO;
    s.max_body_buffer = 1024;
    let core = core_with(s);
    core.set_driver_waker(std::task::Waker::noop());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    // Request 1 is dispatched with a streaming body; its handler does not read yet.
    let mut staged = Vec::new();
    core.on_bytes(key, &upload_head(1, 100_000), &mut staged);
    let (body, _) = core.take_body(&staged[0]).expect("live");
    // More than the limit of its body, and request 2 beginning its params, in one receive.
    let mut bytes = stdin_records(1, &[7; 2000], 2000, false);
    record::encode_begin_request(&mut bytes, 2, 1, true);
    bytes.extend_from_slice(&[1, 4, 0, 2, 0, 1, 0, 0, 5]);
    assert!(receive(&core, key, &bytes).is_empty());
    core.flush(&mut io);
    core.clock.advance(Duration::from_secs(5));
    assert!(!expire(&core), "paused: the params deadline stands still");
    // The handler reads its body: reading resumes, and the params deadline restarts.
    assert_eq!(
        frames_so_far(body).iter().map(|f| f.len()).sum::<usize>(),
        2000
    );
    core.resume_paused();
    core.flush(&mut io);
    core.clock.advance(Duration::from_millis(1900));
    assert!(!expire(&core), "1.9 s after resuming");
    core.clock.advance(Duration::from_millis(200));
    assert!(expire(&core), "2.1 s after resuming");
}

/// The frames a streaming body holds now, without waiting for more.
fn frames_so_far(mut body: RequestBody) -> Vec<bytes::Bytes> {
    frames_now(&mut body)
}

/// [`frames_so_far`], leaving the body to be read on.
fn frames_now(body: &mut RequestBody) -> Vec<bytes::Bytes> {
    use http_body::Body as _;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    while let std::task::Poll::Ready(Some(Ok(frame))) =
        std::pin::Pin::new(&mut *body).poll_frame(&mut cx)
    {
        out.extend(frame.into_data().ok());
    }
    out
}

/// The idle wait's bound, counted in the wheel's milliseconds, is the time to the next deadline's
/// instant or at most a millisecond more, and zero once it is due.
#[test]
fn the_time_to_the_next_deadline_is_the_wheels_to_the_millisecond() {
    let mut s = settings();
    s.timeouts.idle = Duration::from_secs(2);
    let core = core_with(s);
    assert_eq!(
        core.until_next_deadline(),
        None,
        "no connection, no deadline"
    );
    let mut io = FakeIo::default();
    open(&core, &mut io);
    for step in [0, 700, 1234, 1] {
        core.clock.advance(Duration::from_micros(step * 1000 + 321));
        let exact = core.next_deadline().expect("the idle deadline") - core.now();
        let bound = core.until_next_deadline().expect("a bound");
        assert!(
            bound >= exact && bound - exact < Duration::from_millis(1),
            "{bound:?} against {exact:?}"
        );
    }
    core.clock.advance(Duration::from_secs(1));
    assert_eq!(core.until_next_deadline(), Some(Duration::ZERO), "due");
}

#[test]
fn a_peer_that_stops_reading_is_closed_at_the_write_deadline() {
    let mut s = settings();
    s.timeouts.write = Duration::from_secs(3);
    let core = core_with(s);
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let rk = receive(&core, key, &request(1, true))[0];
    core.write_status(rk, http::StatusCode::OK);
    core.flush(&mut io);
    the_send(&io.take(key));
    core.clock.advance(Duration::from_millis(3100));
    assert!(expire(&core));
    core.flush(&mut io);
    assert_eq!(
        io.take(key),
        [Action::CancelRecv, Action::Close { abort: true }],
        "both directions shut down so that the stuck send ends"
    );
    assert!(!core.is_quiet(), "the stuck send is still counted");
    core.on_sent(key, Sent::Failed);
    assert!(core.is_quiet());
}

#[test]
fn a_handler_past_its_deadline_gets_a_504() {
    let mut s = settings();
    s.timeouts.handler = Duration::from_secs(1);
    let core = core_with(s);
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let rk = receive(&core, key, &request(1, true))[0];
    core.flush(&mut io);
    core.clock.advance(Duration::from_millis(1100));
    assert!(expire(&core));
    core.flush(&mut io);
    let sent = the_send(&io.take(key));
    assert!(sent.windows(12).any(|w| w == b"Status: 504 "));
    assert!(
        !core.write_stdout(rk, None, &mut &b"late"[..], true),
        "gone"
    );
}

/// Serves request 1 on `key` to the end (answer sent and confirmed); what the IO was asked
/// after the send.
fn serve_one(core: &Core, io: &mut FakeIo, key: ConnKey) -> Vec<Action> {
    let rk = receive(core, key, &request(1, true))[0];
    core.write_status(rk, http::StatusCode::OK);
    core.flush(io);
    let actions = io.take(key);
    let skip = usize::from(actions.first() == Some(&Action::Cork));
    let _ = the_send(&actions[skip..]);
    core.on_sent(key, Sent::All(None));
    core.flush(io);
    io.take(key)
}

fn drained_closes(core: &Core) -> u64 {
    core.stats
        .shared
        .metrics
        .snapshot()
        .closed(crate::stats::metrics::CloseReason::Drain)
}

#[test]
fn a_drain_answers_the_request_in_flight_then_shuts_down_between_requests() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let busy = open(&core, &mut io);
    let rk = receive(&core, busy, &request(1, true))[0];
    core.begin_drain();
    assert!(core.is_draining());
    core.flush(&mut io);
    assert_eq!(
        io.take(busy),
        [],
        "a request in flight: the connection stays"
    );
    core.write_status(rk, http::StatusCode::OK);
    core.flush(&mut io);
    let actions = io.take(busy);
    assert_eq!(
        actions.first(),
        Some(&Action::Cork),
        "corked before its last answer, so the FIN rides in its last segment"
    );
    let sent = the_send(&actions[1..]);
    assert!(
        sent.ends_with(&end_of(1)),
        "the request in flight is answered"
    );
    assert!(!core.is_drained());
    core.on_sent(busy, Sent::All(None));
    core.flush(&mut io);
    assert_eq!(
        io.take(busy),
        [Action::ShutdownWrite],
        "FIN once its last answer is sent"
    );
    // A request that crossed the FIN is read and dropped: it never runs.
    assert_eq!(receive(&core, busy, &request(2, true)), []);
    core.on_recv_ended(busy);
    core.on_peer_gone(busy);
    core.flush(&mut io);
    assert_eq!(io.take(busy), [Action::Close { abort: false }]);
    assert!(core.is_drained());
    assert_eq!(drained_closes(&core), 1);
}

#[test]
fn a_drain_leaves_an_idle_connection_a_moment_to_bring_a_request() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let served = open(&core, &mut io);
    assert_eq!(serve_one(&core, &mut io, served), []);
    let fresh = open(&core, &mut io);
    let silent = open(&core, &mut io);
    core.begin_drain();
    core.flush(&mut io);
    for key in [served, fresh, silent] {
        assert_eq!(io.take(key), [], "idle, not closed at once");
    }
    core.clock.advance(deadlines::DRAIN_IDLE / 2);
    expire(&core);
    core.flush(&mut io);
    // A request within the moment is served, and the FIN rides with its answer.
    for key in [served, fresh] {
        assert_eq!(
            serve_one(&core, &mut io, key),
            [Action::ShutdownWrite],
            "served, then shut down"
        );
    }
    core.clock
        .advance(deadlines::DRAIN_IDLE / 2 + Duration::from_millis(50));
    assert!(expire(&core));
    core.flush(&mut io);
    assert_eq!(
        io.take(silent),
        [Action::ShutdownWrite],
        "nothing came: closed after the moment"
    );
}

/// The status page's request line survives the copy that replaces the `Uri`'s reference
/// counts: a short target from the reused buffer, a long one by reference, none once cleared.
#[test]
fn a_noted_request_line_is_kept_short_or_long() {
    let request = |target: &str| {
        http::Request::builder()
            .method(http::Method::PUT)
            .uri(target)
            .body(crate::body::RequestBody::empty())
            .unwrap()
    };
    let long = format!("/{}?q=1", "x".repeat(super::oplog::SHORT_TARGET));
    for target in ["/", "/a/b?c=d", long.as_str()] {
        let mut line = super::PendingLine::default();
        line.note(&request(target));
        let (method, kept) = line.take().expect("a noted line");
        assert_eq!(
            (method, kept.to_string()),
            (http::Method::PUT, target.to_owned())
        );
        assert_eq!(kept.bytes(), target.as_bytes());
        assert!(line.take().is_none(), "taken once");
        line.note(&request(target));
        line.clear();
        assert!(line.take().is_none(), "cleared");
    }
}

/// A connection's state is what 10,000 idle keep-alive connections cost besides their kernel
/// sockets (docs/performance.md, "Memory of idle connections"): the limits are shared, the
/// params arena is the worker's, and DATA, the multiplexing tables and the output's shared
/// chunks are boxed. The protocol state's first request (136 bytes) lies inline: a connection
/// that has served a request would otherwise hold it, and its table, on the heap.
#[test]
fn an_idle_connections_state_stays_small() {
    assert!(
        std::mem::size_of::<Conn>() <= 504,
        "Conn is {} bytes",
        std::mem::size_of::<Conn>()
    );
}

/// The head of an upload of `len` bytes by request `id`: BEGIN_REQUEST and PARAMS with its
/// CONTENT_LENGTH (see [`upload`]).
fn upload_head(id: u16, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode_begin_request(&mut out, id, 1, true);
    let mut params = Vec::new();
    fcgi_proto::nv::encode_pair(&mut params, b"CONTENT_LENGTH", len.to_string().as_bytes());
    record::encode_stream(&mut out, RecordType::Params, id, &params);
    record::encode_stream_end(&mut out, RecordType::Params, id);
    out
}

/// Request `id` announcing `body`'s length, its STDIN in records of at most `piece` bytes,
/// each padded to a multiple of 8 when `pad` (as nginx pads).
fn upload(id: u16, body: &[u8], piece: usize, pad: bool) -> Vec<u8> {
    let mut out = upload_head(id, body.len());
    out.extend(stdin_records(id, body, piece, pad));
    record::encode_stream_end(&mut out, RecordType::Stdin, id);
    out
}

/// `body` as STDIN records of request `id` (see [`upload`]), without the stream's end.
fn stdin_records(id: u16, body: &[u8], piece: usize, pad: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(piece) {
        let padding = if pad { (8 - chunk.len() % 8) % 8 } else { 0 };
        let len = u16::try_from(chunk.len()).expect("a record's length");
        out.extend_from_slice(&[1, 5]);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&[padding as u8, 0]);
        out.extend_from_slice(chunk);
        out.extend(std::iter::repeat_n(0xEE, padding));
    }
    out
}

/// `len` bytes that differ by position (a misplaced piece shows).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Feeds `bytes` as a buffer handed over by the IO; returns the bodies shared, the requests
/// that became complete, and where the buffer lay.
fn receive_owned(
    core: &Core,
    key: ConnKey,
    bytes: &[u8],
) -> (usize, Vec<Staged>, std::ops::Range<usize>) {
    let mut buf = bytes::BytesMut::from(bytes);
    let at = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let mut staged = Vec::new();
    let shared = core.on_bytes_owned(key, &mut buf, &mut staged);
    (shared, staged, at)
}

/// The frames of a complete body, polled without a runtime.
pub(super) fn frames(mut body: RequestBody) -> Vec<bytes::Bytes> {
    use http_body::Body as _;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    loop {
        match std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                out.extend(frame.into_data().ok());
            }
            std::task::Poll::Ready(None) => return out,
            other => panic!("a complete body should not wait or fail: {other:?}"),
        }
    }
}

#[test]
fn a_body_that_comes_whole_in_an_owned_receive_is_a_slice_of_it() {
    // One record; the largest record and one byte (a 64 KiB body); nginx's 32 KiB records,
    // padded.
    for (len, piece, pad) in [
        (40_000, 65_535, false),
        (65_536, 65_535, false),
        (70_001, 32_768, true),
    ] {
        let core = core_with(settings());
        let mut io = FakeIo::default();
        let key = open(&core, &mut io);
        let body = pattern(len, len as u8);
        let (shared, staged, at) = receive_owned(&core, key, &upload(1, &body, piece, pad));
        assert_eq!(shared, 1, "{len} bytes in records of {piece}");
        assert_eq!(core.shared_bodies.load(Ordering::Relaxed), 1);
        let (got, _) = core.take_body(&staged[0]).expect("request live");
        let got = frames(got);
        assert_eq!(got.len(), 1, "one frame");
        assert!(
            got[0] == body,
            "{len} bytes in records of {piece}: body differs"
        );
        assert!(
            at.contains(&(got[0].as_ptr() as usize)),
            "not a slice of the receive"
        );
        // The body counts against the bound for as long as it is held.
        core.finish(staged[0].rk, 0);
        assert_eq!(core.shared_bodies.load(Ordering::Relaxed), 1);
        drop(got);
        assert_eq!(core.shared_bodies.load(Ordering::Relaxed), 0);
    }
}

/// nginx sends the first bytes of a body, those it read with the request's head, in a record of
/// their own, then records of 32 KiB: the joined body is the records' bytes in order, and its
/// largest record's bytes are not moved (only the smaller ones are copied to them).
#[test]
fn a_body_is_joined_around_its_largest_record() {
    for sizes in [
        &[900, 32_768, 31_868][..],
        &[100, 200, 40_000],
        &[40_000, 3, 5],
        &[7, 20_000, 9, 20_000, 11],
    ] {
        let core = core_with(settings());
        let mut io = FakeIo::default();
        let key = open(&core, &mut io);
        let len: usize = sizes.iter().sum();
        let body = pattern(len, 9);
        let mut bytes = upload_head(1, len);
        // Where the first largest record's bytes lie, and how far into the body they start.
        let largest = sizes.iter().copied().max().unwrap_or(0);
        let mut anchor = None;
        let mut offset = 0;
        for &size in sizes {
            let records = stdin_records(1, &body[offset..][..size], size, true);
            if anchor.is_none() && size == largest {
                anchor = Some((bytes.len() + 8, offset));
            }
            bytes.extend(records);
            offset += size;
        }
        record::encode_stream_end(&mut bytes, RecordType::Stdin, 1);
        let (shared, staged, at) = receive_owned(&core, key, &bytes);
        assert_eq!(shared, 1, "records of {sizes:?}");
        let (got, _) = core.take_body(&staged[0]).expect("request live");
        let got = frames(got);
        assert_eq!(got.len(), 1, "one frame");
        assert!(got[0] == body, "records of {sizes:?}: body differs");
        let (lies_at, starts_at) = anchor.expect("a largest record");
        assert_eq!(
            got[0].as_ptr() as usize + starts_at,
            at.start + lies_at,
            "records of {sizes:?}: the largest record's bytes were moved"
        );
    }
}

/// A receive cut into one-byte records, two bodies' records interleaved and a third body's
/// one after another: each body arrives whole and in order, the third one shared.
#[test]
fn bodies_in_one_byte_records_arrive_whole() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let len = 20_000;
    let (a, b, c) = (pattern(len, 1), pattern(len, 2), pattern(len, 3));
    let mut bytes = Vec::new();
    for id in 1..=3 {
        bytes.extend(upload_head(id, len));
    }
    for i in 0..len {
        bytes.extend(stdin_records(1, &a[i..=i], 1, false));
        bytes.extend(stdin_records(2, &b[i..=i], 1, false));
    }
    bytes.extend(stdin_records(3, &c, 1, false));
    for id in 1..=3 {
        record::encode_stream_end(&mut bytes, RecordType::Stdin, id);
    }
    let (shared, staged, _) = receive_owned(&core, key, &bytes);
    assert_eq!(shared, 1, "the body not interleaved is shared");
    for (staged, want) in staged.iter().zip([&a, &b, &c]) {
        let (got, _) = core.take_body(staged).expect("request live");
        let got: Vec<u8> = frames(got).concat();
        assert!(&got == want, "body of request {} differs", staged.rk.id);
    }
}

/// One receive with more shareable bodies than the bound leaves room for: as many as there is
/// room for are shared, the others copied.
#[test]
fn bodies_past_the_room_left_in_one_receive_are_copied() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    core.shared_bodies
        .store(MAX_SHARED_BODIES - 2, Ordering::Relaxed);
    let bodies: Vec<Vec<u8>> = (1..=4).map(|seed| pattern(20_000, seed)).collect();
    let mut bytes = Vec::new();
    for (id, body) in (1u16..).zip(&bodies) {
        bytes.extend(upload(id, body, 65_535, false));
    }
    let (shared, staged, at) = receive_owned(&core, key, &bytes);
    assert_eq!(shared, 2);
    assert_eq!(
        core.shared_bodies.load(Ordering::Relaxed),
        MAX_SHARED_BODIES
    );
    for (i, (staged, want)) in staged.iter().zip(&bodies).enumerate() {
        let (got, _) = core.take_body(staged).expect("request live");
        let got = frames(got);
        let whole = got.concat();
        assert!(&whole == want, "body of request {} differs", staged.rk.id);
        let in_receive = at.contains(&(got[0].as_ptr() as usize));
        assert_eq!(in_receive, i < 2, "body of request {}", staged.rk.id);
    }
}

/// A receive's bytes are split off the IO's buffer only when a body keeps them: the bytes of a
/// plain GET stay where they are (the next receive overwrites them, no reference counted), an
/// upload's body takes them and leaves the buffer empty.
#[test]
fn an_owned_receive_is_split_off_only_for_a_body_kept_in_it() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let get = request(1, true);
    let mut buf = bytes::BytesMut::from(&get[..]);
    let mut staged = Vec::new();
    assert_eq!(core.on_bytes_owned(key, &mut buf, &mut staged), 0);
    assert_eq!(staged.len(), 1);
    assert_eq!(&buf[..], &get[..], "a GET's bytes are left in the buffer");
    let body = pattern(40_000, 7);
    let mut buf = bytes::BytesMut::from(&upload(2, &body, 65_535, false)[..]);
    assert_eq!(core.on_bytes_owned(key, &mut buf, &mut staged), 1);
    assert!(buf.is_empty(), "a kept body's bytes are split off");
}

#[test]
fn bodies_that_cannot_be_shared_are_copied_whole_and_in_order() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let check = |staged: &Staged, want: &[u8]| {
        let (got, _) = core.take_body(staged).expect("request live");
        let got: Vec<u8> = frames(got).concat();
        assert!(got == want, "body of request {} differs", staged.rk.id);
    };

    // Two bodies whose records interleave: joining either would overwrite the other's.
    let (a, b) = (pattern(50_000, 1), pattern(50_000, 2));
    let mut params = Vec::new();
    fcgi_proto::nv::encode_pair(&mut params, b"CONTENT_LENGTH", b"50000");
    let mut bytes = Vec::new();
    for id in [1u16, 2] {
        record::encode_begin_request(&mut bytes, id, 1, true);
        record::encode_stream(&mut bytes, RecordType::Params, id, &params);
        record::encode_stream_end(&mut bytes, RecordType::Params, id);
    }
    for half in 0..2 {
        for (id, body) in [(1u16, &a), (2, &b)] {
            bytes.extend(stdin_records(
                id,
                &body[half * 25_000..][..25_000],
                25_000,
                true,
            ));
        }
    }
    for id in [1u16, 2] {
        record::encode_stream_end(&mut bytes, RecordType::Stdin, id);
    }
    let (shared, staged, _) = receive_owned(&core, key, &bytes);
    assert_eq!(shared, 0);
    check(&staged[0], &a);
    check(&staged[1], &b);
    for s in &staged {
        core.finish(s.rk, 0);
    }

    // A body split between two receives.
    let body = pattern(60_000, 3);
    let bytes = upload(3, &body, 65_535, false);
    let (first, second) = bytes.split_at(30_000);
    let (shared, staged, _) = receive_owned(&core, key, first);
    assert_eq!(shared, 0);
    let (shared, more, _) = receive_owned(&core, key, second);
    assert_eq!((shared, more.len()), (0, 0));
    check(&staged[0], &body);
    core.finish(staged[0].rk, 0);

    // A small body, and one past the bound of shared bodies.
    let small = pattern(BODY_SHARE_MIN - 1, 4);
    let (shared, staged, _) = receive_owned(&core, key, &upload(4, &small, 65_535, false));
    assert_eq!(shared, 0);
    check(&staged[0], &small);
    core.finish(staged[0].rk, 0);
    core.shared_bodies
        .store(MAX_SHARED_BODIES, Ordering::Relaxed);
    let big = pattern(40_000, 5);
    let (shared, staged, _) = receive_owned(&core, key, &upload(5, &big, 65_535, false));
    assert_eq!(shared, 0);
    check(&staged[0], &big);
    assert_eq!(
        core.shared_bodies.load(Ordering::Relaxed),
        MAX_SHARED_BODIES
    );
}

/// A request aborted in one receive, its id reused by a new request in the next receive of the
/// same batch (io_uring parses several receives of a connection before it dispatches): the
/// first is not dispatched, the second gets its own body, whole.
#[test]
fn an_id_reused_across_receives_of_one_batch_gets_its_own_body() {
    let core = core_with(settings());
    let mut io = FakeIo::default();
    let key = open(&core, &mut io);
    let (first, second) = (pattern(30_000, 1), pattern(40_000, 2));
    let mut staged = Vec::new();
    let mut bytes = upload(1, &first, 65_535, false);
    record::encode_abort_request(&mut bytes, 1);
    core.on_bytes_owned(key, &mut bytes::BytesMut::from(&bytes[..]), &mut staged);
    let mut bytes = upload(1, &second, 7_000, true);
    bytes.extend(upload(3, &first, 65_535, false));
    let shared = core.on_bytes_owned(key, &mut bytes::BytesMut::from(&bytes[..]), &mut staged);
    assert_eq!((staged.len(), shared), (3, 2));
    assert!(core.take_body(&staged[0]).is_none(), "the aborted one");
    for (staged, want) in staged[1..].iter().zip([&second, &first]) {
        let (got, _) = core.take_body(staged).expect("live");
        assert!(&frames(got).concat() == want, "request {}", staged.rk.id);
    }
}

mod kept_bodies {
    //! Bodies kept in the IO's buffers, whatever their records: sizes from one byte to 20 KiB,
    //! several bodies' records interleaved in any order, any padding, ends anywhere, the bytes
    //! cut into one to three receives of one batch, and the bound of shared bodies nearly or
    //! wholly taken. Each body arrives whole and in order, and every shared body is given back.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Case {
        /// Each body's record sizes, and whether it announces at least the sharing minimum.
        bodies: Vec<(Vec<usize>, bool)>,
        /// Which body sends its next record (or, once it has sent them all, its end) next;
        /// what is left follows body by body.
        order: Vec<usize>,
        pads: Vec<u8>,
        /// Where the bytes are cut into receives, in thousandths.
        cuts: Vec<usize>,
        /// Bodies already shared on the worker.
        shared_before: usize,
    }

    fn case() -> impl Strategy<Value = Case> {
        (1usize..5).prop_flat_map(|n| {
            let sizes = prop_oneof![1usize..20, 1usize..70, 1000usize..20_000];
            (
                proptest::collection::vec(
                    (proptest::collection::vec(sizes, 1..6), any::<bool>()),
                    n,
                ),
                proptest::collection::vec(0..n, 0..60),
                proptest::collection::vec(0u8..8, 64),
                proptest::collection::vec(0usize..1000, 0..3),
                prop_oneof![
                    Just(0),
                    Just(MAX_SHARED_BODIES - 2),
                    Just(MAX_SHARED_BODIES)
                ],
            )
                .prop_map(|(bodies, order, pads, cuts, shared_before)| Case {
                    bodies,
                    order,
                    pads,
                    cuts,
                    shared_before,
                })
        })
    }

    /// One STDIN record of request `id` with `pad` bytes of padding.
    fn stdin(id: u16, data: &[u8], pad: u8) -> Vec<u8> {
        let mut out = vec![1, 5];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&[pad, 0]);
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0xEE, usize::from(pad)));
        out
    }

    /// The bytes of a case, and each body.
    fn encode(case: &Case) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut bytes = Vec::new();
        let mut bodies = Vec::new();
        for (i, (sizes, big)) in case.bodies.iter().enumerate() {
            let len: usize = sizes.iter().sum();
            bodies.push(pattern(len, i as u8 * 17 + 3));
            let announced = if *big { len.max(BODY_SHARE_MIN) } else { len };
            bytes.extend(upload_head(i as u16 + 1, announced));
        }
        // Per body: the next record to send (its end once past the last), and the offset.
        let mut next = vec![0; bodies.len()];
        let mut offset = vec![0; bodies.len()];
        let mut pads = case.pads.iter().cycle();
        let mut send = |b: usize, bytes: &mut Vec<u8>| {
            let sizes = &case.bodies[b].0;
            let id = b as u16 + 1;
            if let Some(&size) = sizes.get(next[b]) {
                let data = &bodies[b][offset[b]..offset[b] + size];
                bytes.extend(stdin(id, data, *pads.next().unwrap_or(&0)));
                offset[b] += size;
            } else if next[b] == sizes.len() {
                record::encode_stream_end(bytes, RecordType::Stdin, id);
            }
            next[b] += 1;
        };
        for &b in &case.order {
            send(b, &mut bytes);
        }
        for (b, (sizes, _)) in case.bodies.iter().enumerate() {
            for _ in 0..=sizes.len() {
                send(b, &mut bytes);
            }
        }
        (bytes, bodies)
    }

    fn check(case: &Case) {
        let core = core_with(settings());
        let mut io = FakeIo::default();
        let key = open(&core, &mut io);
        core.shared_bodies
            .store(case.shared_before, Ordering::Relaxed);
        let (bytes, bodies) = encode(case);
        let mut cuts: Vec<usize> = case.cuts.iter().map(|c| c * bytes.len() / 1000).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut staged = Vec::new();
        let mut from = 0;
        for cut in cuts.into_iter().filter(|&c| c > 0) {
            let mut buf = bytes::BytesMut::from(&bytes[from..cut]);
            core.on_bytes_owned(key, &mut buf, &mut staged);
            from = cut;
        }
        assert_eq!(staged.len(), bodies.len());
        for (staged, want) in staged.iter().zip(&bodies) {
            let (got, _) = core.take_body(staged).expect("live");
            assert!(
                &frames(got).concat() == want,
                "body of request {} differs",
                staged.rk.id
            );
        }
        for s in &staged {
            core.finish(s.rk, 0);
        }
        assert_eq!(
            core.shared_bodies.load(Ordering::Relaxed),
            case.shared_before,
            "every shared body given back"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn kept_bodies_arrive_whole(case in case()) {
            check(&case);
        }
    }
}
