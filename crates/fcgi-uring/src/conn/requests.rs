//! The in-flight requests of one connection and where their body bytes go.
//!
//! Guarantees: a request is named by its id and a serial unique for the life of the worker
//! ([`ReqKey`]), so a handler of an ended request never reaches a later one that reuses its id;
//! a connection carrying one request at a time allocates nothing for its table.

use crate::body::{BodyError, Channel, Flow, RequestBody, reserve_for};
use bytes::Bytes;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;
use tokio::task::AbortHandle;

use super::ConnKey;
use crate::wheel::Millis;

/// One request of one connection, unique for the life of the worker (ids are reused by
/// proxies; the serial is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReqKey {
    pub conn: ConnKey,
    pub id: u16,
    pub serial: u64,
}

/// Where STDIN bytes of a request go.
#[derive(Debug)]
pub(crate) enum BodyIn {
    /// Not dispatched yet: bytes collected during this receive batch, in one buffer (handed
    /// to the handler as they are: no second copy to join records).
    Staged { bytes: Vec<u8>, ended: bool },
    /// Not dispatched yet, and complete: the whole body arrived in one receive and is a slice
    /// of its buffer (see `Core::on_bytes_owned`). Boxed: the entry of every request, and of
    /// an idle connection, stays as small as without it.
    Shared(Box<Bytes>),
    /// Dispatched with a streaming body.
    Stream(Arc<Channel>),
    /// Dispatched with a complete body, or the handler no longer wants bytes.
    Done,
}

impl BodyIn {
    /// A stream that has not been dispatched yet; `ended` when it will carry nothing.
    pub fn staged(ended: bool) -> BodyIn {
        BodyIn::Staged {
            bytes: Vec::new(),
            ended,
        }
    }

    /// Not dispatched, and no byte nor end received yet.
    pub fn is_fresh(&self) -> bool {
        matches!(self, BodyIn::Staged { bytes, ended: false } if bytes.capacity() == 0)
    }

    /// Adds received bytes; `Flow::Pause` when the bytes the handler has not read (or that wait
    /// for its dispatch) are over `limit` (`max_body_buffer`).
    ///
    /// The first bytes of a staged body reserve room for `expected()` bytes (the body's
    /// announced length, if any), but at most [`crate::body::RESERVE_FACTOR`] times what
    /// arrived: an announced length costs nothing until bytes come, and cannot make a few bytes
    /// reserve much more.
    pub fn push(
        &mut self,
        data: &[u8],
        expected: impl FnOnce() -> Option<usize>,
        limit: usize,
    ) -> Flow {
        match self {
            // An AUTHORIZER's STDIN starts ended (spec 6.3): what a peer sends on it anyway is
            // dropped, as it is once dispatched (`Done`), whichever receive it comes in.
            BodyIn::Staged { ended: true, .. } => Flow::Continue,
            BodyIn::Staged { bytes, .. } => {
                if bytes.capacity() == 0 {
                    bytes.reserve_exact(reserve_for(data.len(), expected(), usize::MAX));
                }
                bytes.extend_from_slice(data);
                // Its handler gets these bytes unread at dispatch: past the limit, the
                // connection stops reading now, as it would once they are in its channel (else
                // the receives after dispatch added to a body already over it).
                if bytes.len() > limit {
                    Flow::Pause
                } else {
                    Flow::Continue
                }
            }
            BodyIn::Stream(ch) => ch.push(data),
            // Complete already: the protocol ends a stream once.
            BodyIn::Shared(_) | BodyIn::Done => Flow::Continue,
        }
    }

    /// Bytes this body holds for its handler: staged, shared, or unread in its channel.
    #[cfg(any(test, feature = "bench-internals"))]
    pub fn held_bytes(&self) -> usize {
        match self {
            BodyIn::Staged { bytes, .. } => bytes.len(),
            BodyIn::Shared(bytes) => bytes.len(),
            BodyIn::Stream(ch) => ch.buffered(),
            BodyIn::Done => 0,
        }
    }

    /// The stream's empty record arrived.
    pub fn end(&mut self) {
        match self {
            BodyIn::Staged { ended, .. } => *ended = true,
            BodyIn::Stream(ch) => ch.end(),
            BodyIn::Shared(_) | BodyIn::Done => {}
        }
    }

    /// The stream cannot complete.
    // Inline: on the end of every request, where its bodies are nearly always done already.
    #[inline]
    pub fn fail(&self, why: BodyError) {
        if let BodyIn::Stream(ch) = self {
            ch.fail(why);
        }
    }

    /// True unless this body is over its limit: a handler's buffer (then `driver` is woken
    /// when it drains), or bytes staged for a handler not called yet past `limit` (they wait
    /// for the dispatch, which makes them a buffer of the handler's; every loop turn dispatches
    /// what it staged and looks at the paused connections again at the next).
    pub fn wants_more(&self, driver: &Waker, limit: usize) -> bool {
        match self {
            BodyIn::Stream(ch) => ch.wants_more(driver),
            BodyIn::Staged {
                bytes,
                ended: false,
            } => bytes.len() <= limit,
            _ => true,
        }
    }

    /// Hands the stream to the handler: complete bytes if it already ended, else a channel
    /// that later bytes go to (sized for the `announced` length, if the body has one; asked
    /// only then).
    pub fn dispatch(
        &mut self,
        limit: usize,
        announced: impl FnOnce() -> Option<usize>,
    ) -> RequestBody {
        let (bytes, ended) = match std::mem::replace(self, BodyIn::Done) {
            BodyIn::Staged { bytes, ended } => (bytes, ended),
            BodyIn::Shared(bytes) => return RequestBody::full(*bytes),
            _ => return RequestBody::empty(),
        };
        if ended {
            // Most requests have no body: no `Bytes` made for nothing.
            if bytes.is_empty() {
                return RequestBody::empty();
            }
            return RequestBody::full(Bytes::from(bytes));
        }
        let left = announced().map(|n| n.saturating_sub(bytes.len()));
        let channel = Arc::new(Channel::new(limit, bytes, left));
        *self = BodyIn::Stream(channel.clone());
        RequestBody::streaming(channel)
    }
}

/// An in-flight request.
#[derive(Debug)]
pub(crate) struct ReqEntry {
    pub(super) id: u16,
    pub(super) serial: u64,
    /// Where its [`super::Staged`] was put in the receive batch's list (read only while that
    /// batch is parsed: its params are found there without a search). `u16::MAX` past the
    /// 65,535th request of a batch (whose params are then not looked up: CONTENT_LENGTH is
    /// only a hint for sizing the body's buffer). Two bytes: the entry of an idle connection
    /// stays as small as without it.
    pub(super) staged_at: u16,
    /// When it was dispatched (worker clock).
    pub(super) started: Millis,
    /// When its params were complete (for the response-time histogram).
    pub(super) params_done: Instant,
    /// STDIN.
    pub(super) body: BodyIn,
    /// DATA (FILTER role only, boxed to keep the entry small; others discard it).
    pub(super) data: Option<Box<BodyIn>>,
    /// The spawned task driving the handler, if it did not finish on its first poll.
    pub(super) task: Option<AbortHandle>,
    /// Response bytes (the CGI head) have been written.
    pub(super) head_sent: bool,
    /// The HTTP status sent (0 until the head is written).
    pub(super) status: u16,
    /// Response body bytes written.
    pub(super) body_bytes: u64,
    /// What the access and slow logs say about it (only when one of them is on).
    pub(super) info: Option<Box<super::oplog::ReqInfo>>,
    /// Its method and URI, for the status page, when it outlived its first poll and no log
    /// keeps them in `info`.
    pub(super) line: Option<Box<(http::Method, super::Target)>>,
    /// A HEAD request: the CGI head is sent, body bytes are dropped (RFC 3875 4.3.3: the
    /// script must not send a body for HEAD; HAProxy answers 502 when one comes).
    pub(super) head_only: bool,
}

impl ReqEntry {
    /// A request just dispatched at `now`. An AUTHORIZER gets no STDIN (spec 6.3); only a
    /// FILTER gets DATA (6.4).
    pub(super) fn new(
        id: u16,
        serial: u64,
        role: fcgi_proto::Role,
        now: Millis,
        params_done: Instant,
        staged_at: u16,
    ) -> ReqEntry {
        ReqEntry {
            id,
            serial,
            staged_at,
            started: now,
            params_done,
            body: BodyIn::staged(role == fcgi_proto::Role::Authorizer),
            data: (role == fcgi_proto::Role::Filter).then(|| Box::new(BodyIn::staged(false))),
            task: None,
            head_sent: false,
            status: 0,
            body_bytes: 0,
            info: None,
            line: None,
            // Set at dispatch, once the method is parsed.
            head_only: false,
        }
    }
}

impl ReqEntry {
    /// Its STDIN and, for a FILTER, its DATA.
    pub(super) fn bodies(&self) -> impl Iterator<Item = &BodyIn> {
        std::iter::once(&self.body).chain(self.data.as_deref())
    }

    pub(super) fn bodies_mut(&mut self) -> impl Iterator<Item = &mut BodyIn> {
        std::iter::once(&mut self.body).chain(self.data.as_deref_mut())
    }

    /// Tells the handler's bodies that they cannot complete.
    pub(super) fn fail_bodies(&self, why: BodyError) {
        self.bodies().for_each(|b| b.fail(why));
    }

    /// Its method and URI, if kept.
    pub(super) fn request_line(&self) -> Option<(&http::Method, &super::Target)> {
        match (&self.info, &self.line) {
            (Some(i), _) => Some((&i.method, &i.target)),
            (None, Some(l)) => Some((&l.0, &l.1)),
            _ => None,
        }
    }
}

/// Hashes a request id: ids are small integers chosen by the proxy, and the table is bounded by
/// `max_requests_per_conn`, so a multiplicative hash is enough (no SipHash per lookup).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u16(&mut self, id: u16) {
        self.0 = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The in-flight requests of one connection by request id. The first request is stored inline,
/// so a connection that carries one request at a time (nginx, Apache, Caddy, lighttpd) never
/// allocates for its table; multiplexed requests spill into a hash map (made on the first
/// spill, boxed so that a connection that never multiplexes stays small), shrunk again once a
/// large burst is over.
#[derive(Debug, Default)]
pub(crate) struct ReqTable {
    one: Option<ReqEntry>,
    more: Option<Box<SpillMap>>,
}

type SpillMap = HashMap<u16, ReqEntry, BuildHasherDefault<IdHasher>>;

/// A spill map that empties is shrunk to room for this many entries: a connection that keeps
/// about as many requests in flight reuses its table, a large burst's table is given back.
const SPILL_KEEP: usize = 16;

impl ReqTable {
    pub fn get_mut(&mut self, id: &u16) -> Option<&mut ReqEntry> {
        match &mut self.one {
            Some(e) if e.id == *id => Some(e),
            _ => self.more.as_mut()?.get_mut(id),
        }
    }

    /// Adds `entry` under its id, replacing one with the same id.
    pub fn insert(&mut self, entry: ReqEntry) {
        let id = entry.id;
        match &mut self.one {
            Some(e) if e.id == id => *e = entry,
            None if !self.more.as_ref().is_some_and(|m| m.contains_key(&id)) => {
                self.one = Some(entry)
            }
            _ => {
                self.more.get_or_insert_default().insert(id, entry);
            }
        }
    }

    pub fn remove(&mut self, id: &u16) -> Option<ReqEntry> {
        if self.one.as_ref().is_some_and(|e| e.id == *id) {
            return self.one.take();
        }
        let more = self.more.as_mut()?;
        let removed = more.remove(id);
        if more.is_empty() {
            // A no-op unless the table is larger than needed for SPILL_KEEP entries.
            more.shrink_to(SPILL_KEEP);
        }
        removed
    }

    pub fn len(&self) -> usize {
        usize::from(self.one.is_some()) + self.more.as_ref().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.one.is_none() && self.more.as_ref().is_none_or(|m| m.is_empty())
    }

    pub fn values(&self) -> impl Iterator<Item = &ReqEntry> {
        self.one
            .iter()
            .chain(self.more.iter().flat_map(|m| m.values()))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut ReqEntry> {
        self.one
            .iter_mut()
            .chain(self.more.iter_mut().flat_map(|m| m.values_mut()))
    }

    pub fn drain(&mut self) -> impl Iterator<Item = ReqEntry> + '_ {
        self.one
            .take()
            .into_iter()
            .chain(self.more.iter_mut().flat_map(|m| m.drain().map(|(_, e)| e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u16, serial: u64) -> ReqEntry {
        ReqEntry {
            id,
            serial,
            staged_at: 0,
            started: 0,
            params_done: Instant::now(),
            body: BodyIn::Done,
            data: None,
            task: None,
            head_sent: false,
            status: 0,
            body_bytes: 0,
            info: None,
            line: None,
            head_only: false,
        }
    }

    fn staged_capacity(body: &BodyIn) -> usize {
        match body {
            BodyIn::Staged { bytes, .. } => bytes.capacity(),
            other => panic!("not staged: {other:?}"),
        }
    }

    #[test]
    fn a_staged_body_is_one_buffer_sized_from_its_announced_length() {
        let mut body = BodyIn::staged(false);
        body.push(&[1; 1000], || Some(1500), usize::MAX);
        assert_eq!(
            staged_capacity(&body),
            1500,
            "room for the announced length"
        );
        body.push(
            &[2; 500],
            || panic!("looked up for the first bytes only"),
            usize::MAX,
        );
        assert_eq!(staged_capacity(&body), 1500, "no growth");
        body.end();
        let mut got = body.dispatch(1 << 20, || None);
        let frame = std::pin::pin!(&mut got);
        let mut cx = std::task::Context::from_waker(Waker::noop());
        let std::task::Poll::Ready(Some(Ok(frame))) = http_body::Body::poll_frame(frame, &mut cx)
        else {
            panic!("one data frame");
        };
        let data = frame.into_data().expect("data");
        assert_eq!(data.len(), 1500);
        assert!(data[..1000].iter().all(|&b| b == 1) && data[1000..].iter().all(|&b| b == 2));
    }

    #[test]
    fn an_announced_length_reserves_at_most_a_few_times_the_first_bytes() {
        let mut body = BodyIn::staged(false);
        body.push(&[0; 10], || Some(1 << 30), usize::MAX);
        assert_eq!(staged_capacity(&body), 10 * crate::body::RESERVE_FACTOR);
        let mut none = BodyIn::staged(false);
        none.push(&[0; 10], || None, usize::MAX);
        assert_eq!(staged_capacity(&none), 10);
        let mut short = BodyIn::staged(false);
        short.push(&[0; 10], || Some(3), usize::MAX);
        assert_eq!(staged_capacity(&short), 10, "never less than what arrived");
    }

    #[test]
    fn request_table_keeps_one_inline_and_spills_the_rest() {
        let mut t = ReqTable::default();
        t.insert(entry(1, 10));
        assert!(t.more.is_none(), "one request allocates nothing");
        t.insert(entry(3, 30));
        t.insert(entry(5, 50));
        assert_eq!(t.len(), 3);
        assert_eq!(t.get_mut(&3).map(|e| e.serial), Some(30));
        assert_eq!(t.remove(&1).map(|e| e.serial), Some(10));
        // The inline slot is free again; a new id goes there unless the map holds it.
        t.insert(entry(7, 70));
        assert_eq!(t.get_mut(&7).map(|e| e.serial), Some(70));
        assert!(t.one.as_ref().is_some_and(|e| e.id == 7));
        t.insert(entry(3, 31));
        assert_eq!(
            t.get_mut(&3).map(|e| e.serial),
            Some(31),
            "same id replaced"
        );
        assert_eq!(t.values().count(), 3);
        let mut drained: Vec<u16> = t.drain().map(|e| e.id).collect();
        drained.sort();
        assert_eq!(drained, [3, 5, 7]);
        assert_eq!(t.len(), 0);
        for id in 0..100 {
            t.insert(entry(id, u64::from(id)));
        }
        for id in 0..100 {
            assert_eq!(t.remove(&id).map(|e| e.serial), Some(u64::from(id)));
        }
        let spill = t.more.as_ref().map_or(0, |m| m.capacity());
        assert!(
            (SPILL_KEEP..2 * SPILL_KEEP).contains(&spill),
            "a big spill map is shrunk when it empties"
        );
    }
}
