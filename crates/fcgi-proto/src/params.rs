//! The name-value pairs of one request's PARAMS stream (spec 5.2), stored in one shared buffer.
//!
//! Guarantees: [`Params`] is immutable; its bytes live in one `Bytes` buffer, so values can be
//! handed out as zero-copy [`Bytes`] slices. Lookups by name return the **last** occurrence, the way
//! php-fpm and CGI environments resolve duplicates; [`Params::get_all`] sees every one.

use bytes::{Bytes, BytesMut};
use std::ops::Range;

/// Byte ranges of one pair inside the shared buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PairIndex {
    name_start: u32,
    name_end: u32,
    value_end: u32,
}

/// Bytes of one [`PairIndex`] stored after the name and value bytes of [`Params`].
const INDEX_LEN: usize = 12;

impl PairIndex {
    fn encode(&self) -> [u8; INDEX_LEN] {
        let mut out = [0; INDEX_LEN];
        out[..4].copy_from_slice(&self.name_start.to_le_bytes());
        out[4..8].copy_from_slice(&self.name_end.to_le_bytes());
        out[8..].copy_from_slice(&self.value_end.to_le_bytes());
        out
    }

    fn decode(b: &[u8; INDEX_LEN]) -> PairIndex {
        PairIndex {
            name_start: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            name_end: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            value_end: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }

    /// Decodes a slice of [`INDEX_LEN`] bytes (any other length gives an empty pair).
    fn decode_slice(bytes: &[u8]) -> PairIndex {
        match <&[u8; INDEX_LEN]>::try_from(bytes) {
            Ok(b) => PairIndex::decode(b),
            Err(_) => PairIndex {
                name_start: 0,
                name_end: 0,
                value_end: 0,
            },
        }
    }

    fn name(&self) -> Range<usize> {
        self.name_start as usize..self.name_end as usize
    }
    fn value(&self) -> Range<usize> {
        self.name_end as usize..self.value_end as usize
    }
}

/// Accumulates pairs while a PARAMS stream is decoded. Bounded by its caller (the decoder checks
/// limits before appending).
#[derive(Debug, Default)]
pub struct ParamsBuilder {
    /// Name and value bytes; also the length prefixes of pairs copied as a block (see
    /// [`ParamsBuilder::append_pairs`]), which no pair index covers.
    buf: BytesMut,
    /// Name and value bytes stored (what the limits count).
    content_len: usize,
    /// The pair indexes, encoded ([`INDEX_LEN`] bytes each): copied behind the name and value
    /// bytes in one piece by [`ParamsBuilder::finish_into`].
    pairs: Vec<u8>,
    /// Start of the pair being appended (its name bytes come first, then its value bytes).
    open_pair: Option<(u32, u32)>,
    /// The end of the furthest pair indexed with [`ParamsBuilder::append_pairs`] (pairs stored
    /// any other way are always inside `buf`).
    indexed_end: usize,
    /// `buf` was taken from an arena ([`ParamsBuilder::in_arena`]).
    in_arena: bool,
}

/// Where params are built one request after another (see [`ParamsBuilder::in_arena`]): the
/// spare capacity of a shared buffer and a pair list reused for each request.
#[derive(Debug, Default)]
pub struct ParamsArena {
    bytes: BytesMut,
    pairs: Vec<u8>,
}

/// The size of a new arena block: many requests' params share one allocation (nginx's params
/// for a plain GET are about 600 bytes). A request whose params are still referenced (by a
/// long-running handler) keeps its block allocated, so this is also what one such request can
/// hold at most beyond its own params.
pub const ARENA_BLOCK: usize = 8 * 1024;

impl ParamsArena {
    /// Bytes the next requests' params can take before a new block is allocated.
    #[cfg(test)]
    pub(crate) fn spare_capacity(&self) -> usize {
        self.bytes.capacity() - self.bytes.len()
    }
}

impl ParamsBuilder {
    pub fn new() -> ParamsBuilder {
        ParamsBuilder::default()
    }

    /// Total name and value bytes stored so far.
    pub fn byte_len(&self) -> usize {
        self.content_len
    }

    /// Nothing stored and no buffer yet (a builder fresh from [`ParamsBuilder::new`]).
    pub fn is_unused(&self) -> bool {
        !self.in_arena && self.buf.capacity() == 0 && self.pairs.is_empty()
    }

    /// Number of complete pairs so far.
    pub fn pair_count(&self) -> usize {
        self.pairs.len() / INDEX_LEN
    }

    /// Makes room for `bytes` more name and value bytes and `pairs` more pairs, so that a PARAMS
    /// record costs one allocation of each. The caller bounds both by its limits.
    pub fn reserve(&mut self, bytes: usize, pairs: usize) {
        if self.in_arena {
            // With room for the pair index written at the end (see `finish_into`).
            self.reserve_in_arena(bytes.saturating_add(pairs.saturating_mul(INDEX_LEN)));
        } else if self.buf.capacity() == 0 {
            // The first record allocates directly: growing an empty buffer takes the longer path.
            self.buf = BytesMut::with_capacity(bytes);
        } else {
            self.buf.reserve(bytes);
        }
        let index = pairs.saturating_mul(INDEX_LEN);
        if self.pairs.capacity() == 0 {
            self.pairs = Vec::with_capacity(index);
        } else {
            self.pairs.reserve(index);
        }
    }

    /// A builder that stores its bytes in the spare capacity of `arena` (taken; give it back
    /// with [`ParamsBuilder::finish_into`]). Params built one after another in one arena share
    /// its allocation, which is reused once every `Params` made from it is dropped, so that in
    /// the steady state building params allocates nothing for their bytes.
    pub fn in_arena(arena: &mut ParamsArena) -> ParamsBuilder {
        let mut buf = std::mem::take(&mut arena.bytes);
        buf.clear();
        let mut pairs = std::mem::take(&mut arena.pairs);
        pairs.clear();
        ParamsBuilder {
            buf,
            pairs,
            in_arena: true,
            ..ParamsBuilder::default()
        }
    }

    /// Room for `bytes` more in an arena's buffer: its spare capacity, else its whole block
    /// reclaimed when no earlier params use it any more, else a new block.
    fn reserve_in_arena(&mut self, bytes: usize) {
        if self.buf.capacity() - self.buf.len() >= bytes || self.buf.try_reclaim(bytes) {
            return;
        }
        let need = self.buf.len().saturating_add(bytes);
        // Doubling, so that params spanning many records are copied O(n) times in all.
        let grown = self.buf.capacity().saturating_mul(2);
        let mut block = BytesMut::with_capacity(need.max(grown).max(ARENA_BLOCK));
        block.extend_from_slice(&self.buf);
        self.buf = block;
    }

    /// Adds a whole pair.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        self.content_len += name.len() + value.len();
        let name_start = self.buf.len() as u32;
        self.buf.extend_from_slice(name);
        let name_end = self.buf.len() as u32;
        self.buf.extend_from_slice(value);
        self.pairs.extend_from_slice(
            &PairIndex {
                name_start,
                name_end,
                value_end: self.buf.len() as u32,
            }
            .encode(),
        );
        self.open_pair = None;
    }

    /// Starts a pair whose bytes arrive in pieces: `extend_name`*, `end_name`, `extend_value`*,
    /// `end_pair`.
    pub fn begin_pair(&mut self) {
        let at = self.buf.len() as u32;
        self.open_pair = Some((at, at));
    }

    pub fn extend_name(&mut self, bytes: &[u8]) {
        self.content_len += bytes.len();
        self.buf.extend_from_slice(bytes);
    }

    pub fn end_name(&mut self) {
        if let Some((start, _)) = self.open_pair {
            self.open_pair = Some((start, self.buf.len() as u32));
        }
    }

    pub fn extend_value(&mut self, bytes: &[u8]) {
        self.content_len += bytes.len();
        self.buf.extend_from_slice(bytes);
    }

    /// Indexes the pairs that `next_pair` finds at the front of `block`, then appends the bytes
    /// they span verbatim (length prefixes included): one copy for many pairs. Returns how many
    /// bytes of `block` were appended.
    ///
    /// `next_pair(rest, pairs, bytes)` is given what follows the pairs found so far and the
    /// builder's pair count and name and value bytes as they would be with them; it returns the
    /// pair at the front of `rest` as (length prefix bytes, name length, value length), which
    /// must lie within `rest`, or `None` to stop. Pairs it describes past `block` are dropped
    /// by [`ParamsBuilder::finish`].
    pub fn append_pairs(
        &mut self,
        block: &[u8],
        mut next_pair: impl FnMut(&[u8], usize, usize) -> Option<(usize, usize, usize)>,
    ) -> usize {
        let base = self.buf.len();
        let mut rest = block;
        // Where `rest` starts in the buffer once the block is appended.
        let mut at = base;
        let mut pairs = self.pair_count();
        let mut content_len = self.content_len;
        while let Some((prefix_len, name_len, value_len)) = next_pair(rest, pairs, content_len) {
            let len = prefix_len + name_len + value_len;
            let Some(after) = rest.get(len..) else {
                break;
            };
            let name_start = at + prefix_len;
            let name_end = name_start + name_len;
            at += len;
            self.pairs.extend_from_slice(
                &PairIndex {
                    name_start: name_start as u32,
                    name_end: name_end as u32,
                    value_end: at as u32,
                }
                .encode(),
            );
            pairs += 1;
            content_len += name_len + value_len;
            rest = after;
        }
        let used = block.len() - rest.len();
        self.content_len = content_len;
        self.indexed_end = self.indexed_end.max(at);
        match block.get(..used) {
            Some(bytes) => {
                self.buf.extend_from_slice(bytes);
                used
            }
            None => 0,
        }
    }

    pub fn end_pair(&mut self) {
        if let Some((name_start, name_end)) = self.open_pair.take() {
            self.pairs.extend_from_slice(
                &PairIndex {
                    name_start,
                    name_end,
                    value_end: self.buf.len() as u32,
                }
                .encode(),
            );
        }
    }

    /// Freezes the complete pairs (an unfinished pair is dropped).
    pub fn finish(self) -> Params {
        self.finish_into(&mut ParamsArena::default())
    }

    /// Like [`ParamsBuilder::finish`]; the spare capacity of the buffer goes (back) to `arena`
    /// unless `arena` has more.
    ///
    /// The pair index is stored after the name and value bytes, in the same buffer: a
    /// `Params` is one shared buffer.
    pub fn finish_into(mut self, arena: &mut ParamsArena) -> Params {
        // Indexes past the end can only come from a caller that broke the block contract;
        // drop them rather than hand out ranges that would panic later.
        if self.indexed_end > self.buf.len() {
            let len = self.buf.len() as u32;
            let kept: Vec<u8> = self
                .pairs
                .chunks_exact(INDEX_LEN)
                .filter(|p| PairIndex::decode_slice(p).value_end <= len)
                .flatten()
                .copied()
                .collect();
            self.pairs = kept;
        }
        let data_len = self.buf.len();
        if self.in_arena {
            self.reserve_in_arena(self.pairs.len());
        }
        self.buf.extend_from_slice(&self.pairs);
        let count = self.pairs.len() / INDEX_LEN;
        let buf = if self.in_arena {
            let filled = self.buf.split().freeze();
            // The rest of a block grown for large params is not kept: it would hold the whole
            // block for as long as the worker lives.
            if filled.len() <= ARENA_BLOCK && self.buf.capacity() > arena.bytes.capacity() {
                arena.bytes = self.buf;
            }
            if self.pairs.capacity() > arena.pairs.capacity() {
                arena.pairs = self.pairs;
            }
            filled
        } else {
            self.buf.freeze()
        };
        Params {
            buf,
            data_len,
            count,
            content_len: self.content_len,
        }
    }
}

/// The complete params of one request. Two `Params` are equal when they hold the same pairs in
/// the same order, however their bytes are laid out.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// Name and value bytes (and maybe length prefixes) up to `data_len`, then `count` pair
    /// indexes of [`INDEX_LEN`] bytes.
    buf: Bytes,
    data_len: usize,
    count: usize,
    /// Name and value bytes (`buf` may also hold length prefixes).
    content_len: usize,
}

impl PartialEq for Params {
    fn eq(&self, other: &Params) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Params {}

impl Params {
    /// Builds params from pairs (for tests and clients).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Params {
        let mut b = ParamsBuilder::new();
        for (n, v) in pairs {
            b.push(n, v);
        }
        b.finish()
    }

    /// The pair indexes, in arrival order.
    fn pairs(&self) -> impl DoubleEndedIterator<Item = PairIndex> + '_ {
        self.buf
            .get(self.data_len..)
            .unwrap_or_default()
            .chunks_exact(INDEX_LEN)
            .map(PairIndex::decode_slice)
    }

    /// Number of pairs, duplicates included.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Name and value bytes in all.
    pub fn byte_len(&self) -> usize {
        self.content_len
    }

    /// Every pair in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.pairs()
            .map(|p| (&self.buf[p.name()], &self.buf[p.value()]))
    }

    /// The pair at `index` in arrival order (the `index`th of [`Params::iter`]).
    pub fn pair(&self, index: usize) -> Option<(&[u8], &[u8])> {
        let at = index.checked_mul(INDEX_LEN)?.checked_add(self.data_len)?;
        let p = PairIndex::decode_slice(self.buf.get(at..at.checked_add(INDEX_LEN)?)?);
        Some((self.buf.get(p.name())?, self.buf.get(p.value())?))
    }

    /// Every pair in arrival order as zero-copy slices of the shared buffer.
    pub fn iter_bytes(&self) -> impl Iterator<Item = (Bytes, Bytes)> + '_ {
        self.pairs()
            .map(|p| (self.buf.slice(p.name()), self.buf.slice(p.value())))
    }

    /// A zero-copy `Bytes` for `part`, which must be a slice obtained from this `Params` (from
    /// [`Params::iter`] or [`Params::get`]); `None` for any other slice.
    pub fn share(&self, part: &[u8]) -> Option<Bytes> {
        let start = (part.as_ptr() as usize).checked_sub(self.buf.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= self.data_len).then(|| self.buf.slice(start..end))
    }

    /// The value of the last pair named `name` (exact, case-sensitive match as in CGI).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.pairs()
            .rev()
            .find(|p| &self.buf[p.name()] == name)
            .map(|p| &self.buf[p.value()])
    }

    /// Like [`Params::get`], as a zero-copy slice.
    pub fn get_bytes(&self, name: &[u8]) -> Option<Bytes> {
        self.pairs()
            .rev()
            .find(|p| &self.buf[p.name()] == name)
            .map(|p| self.buf.slice(p.value()))
    }

    /// The value of the last pair named `name` if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of pairs named `name`, in arrival order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_and_whole_pairs_agree() {
        let mut b = ParamsBuilder::new();
        b.begin_pair();
        b.extend_name(b"REQ");
        b.extend_name(b"UEST_METHOD");
        b.end_name();
        b.extend_value(b"GE");
        b.extend_value(b"T");
        b.end_pair();
        b.push(b"EMPTY", b"");
        let p = b.finish();
        assert_eq!(
            p,
            Params::from_pairs([(&b"REQUEST_METHOD"[..], &b"GET"[..]), (b"EMPTY", b"")])
        );
        assert_eq!(p.get(b"REQUEST_METHOD"), Some(&b"GET"[..]));
        assert_eq!(p.get(b"EMPTY"), Some(&b""[..]));
        assert_eq!(p.get(b"NOPE"), None);
    }

    #[test]
    fn share_slices_only_its_own_bytes() {
        let p = Params::from_pairs([(&b"A"[..], &b"value"[..])]);
        let v = p.get(b"A").unwrap();
        assert_eq!(p.share(v).unwrap(), Bytes::from_static(b"value"));
        assert_eq!(p.share(b"value"), None);
    }

    #[test]
    fn last_duplicate_wins_and_all_are_listed() {
        let p = Params::from_pairs([(&b"A"[..], &b"1"[..]), (b"A", b"2")]);
        assert_eq!(p.get(b"A"), Some(&b"2"[..]));
        assert_eq!(p.get_all(b"A").collect::<Vec<_>>(), [&b"1"[..], b"2"]);
        assert_eq!(p.get_bytes(b"A").unwrap(), Bytes::from_static(b"2"));
    }

    /// Params built one after another in an arena: each keeps its own pairs while later ones
    /// are built, and a block is reused only once nothing refers to it.
    #[test]
    fn params_in_an_arena_stay_intact() {
        let mut arena = ParamsArena::default();
        let build = |arena: &mut ParamsArena, n: usize| {
            let mut b = ParamsBuilder::in_arena(arena);
            let value = vec![b'v'; n % 700];
            b.reserve(4 + value.len(), 1);
            b.push(format!("P{n}").as_bytes(), &value);
            b.push(b"N", n.to_string().as_bytes());
            b.finish_into(arena)
        };
        let kept: Vec<Params> = (0..64).map(|n| build(&mut arena, n)).collect();
        for (n, p) in kept.iter().enumerate() {
            assert_eq!(p.len(), 2);
            assert_eq!(p.get_str("N"), Some(n.to_string().as_str()));
            assert_eq!(p.pair(0).map(|(_, v)| v.len()), Some(n % 700));
            assert_eq!(p.pair(2), None);
            let value = p.get(format!("P{n}").as_bytes()).unwrap();
            assert_eq!(p.share(value).map(|b| b.len()), Some(n % 700));
        }
        // The index after the values is not a value.
        let p = &kept[1];
        let whole = p.buf.as_ref();
        assert_eq!(p.share(&whole[whole.len() - 4..]), None);
        drop(kept);
        let again = build(&mut arena, 3);
        assert_eq!(
            again,
            Params::from_pairs([(&b"P3"[..], &b"vvv"[..]), (b"N", b"3")])
        );
    }

    /// Params much larger than a block, built record by record: the block grows by doubling,
    /// and what is left of it is not kept in the arena.
    #[test]
    fn large_params_do_not_stay_in_the_arena() {
        let mut arena = ParamsArena::default();
        let mut b = ParamsBuilder::in_arena(&mut arena);
        let value = vec![b'x'; 60_000];
        for n in 0..20 {
            b.reserve(value.len() + 8, 1);
            b.push(format!("P{n:02}").as_bytes(), &value);
        }
        let p = b.finish_into(&mut arena);
        assert_eq!(p.len(), 20);
        assert_eq!(p.get(b"P19").map(<[u8]>::len), Some(60_000));
        assert_eq!(arena.bytes.capacity(), 0, "nothing of the large block kept");
        let small = ParamsBuilder::in_arena(&mut arena).finish_into(&mut arena);
        assert!(small.is_empty());
    }

    #[test]
    fn unfinished_pair_is_dropped() {
        let mut b = ParamsBuilder::new();
        b.push(b"A", b"1");
        b.begin_pair();
        b.extend_name(b"HALF");
        assert_eq!(b.finish().len(), 1);
    }

    #[test]
    fn append_pairs_indexes_what_it_is_told_and_copies_the_span() {
        let mut b = ParamsBuilder::new();
        b.push(b"A", b"1");
        let block = [1, 1, b'B', b'2', 2, 0, b'C', b'D', 9];
        let mut seen = Vec::new();
        let used = b.append_pairs(&block, |rest, pairs, bytes| {
            seen.push((pairs, bytes));
            match rest.first() {
                Some(1) => Some((2, 1, 1)),
                Some(2) => Some((2, 2, 0)),
                _ => None,
            }
        });
        assert_eq!(used, 8);
        assert_eq!(seen, [(1, 2), (2, 4), (3, 6)]);
        assert_eq!(b.byte_len(), 6);
        let p = b.finish();
        assert_eq!(
            p,
            Params::from_pairs([(&b"A"[..], &b"1"[..]), (b"B", b"2"), (b"CD", b"")])
        );
    }

    #[test]
    fn append_pairs_past_the_block_are_dropped() {
        let mut b = ParamsBuilder::new();
        let mut first = true;
        let used = b.append_pairs(&[1, 1, b'A', b'1'], |_, _, _| {
            std::mem::take(&mut first).then_some((2, 1, 9))
        });
        assert_eq!(used, 0);
        assert!(b.finish().is_empty());
    }
}
