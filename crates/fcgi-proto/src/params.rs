//! The name-value pairs of one request's PARAMS stream (spec 5.2), stored in one shared buffer.
//!
//! Guarantees: [`Params`] is immutable; its bytes live in one `Bytes` buffer, so values can be
//! handed out as zero-copy [`Bytes`] slices. Lookups by name return the **last** occurrence, the way
//! php-fpm and CGI environments resolve duplicates; [`Params::get_all`] sees every one.
//!
//! The buffer holds the pairs encoded as in a PARAMS stream (spec 3.4: length prefixes, name,
//! value), so that the decoder stores whole pairs by copying the stream's bytes and nothing
//! else; the pairs are read from it again when walked. Only complete pairs whose lengths the
//! decoder checked are ever stored, and every read is checked, so a walk ends (never panics)
//! even on bytes it did not write.

use bytes::{Bytes, BytesMut};

use crate::nv::{encode_len, read_prefixes};

/// Accumulates pairs while a PARAMS stream is decoded. Bounded by its caller (the decoder checks
/// limits before appending).
#[derive(Debug, Default)]
pub struct ParamsBuilder {
    /// The pairs stored so far, encoded (spec 3.4); an unfinished pair's bytes after
    /// `complete_end`.
    buf: BytesMut,
    /// Name and value bytes stored (what the limits count).
    content_len: usize,
    /// Complete pairs.
    count: usize,
    /// The end of the last complete pair in `buf`, and the name and value bytes up to it.
    complete_end: usize,
    complete_content: usize,
    /// `buf` was taken from an arena ([`ParamsBuilder::in_arena`]).
    in_arena: bool,
}

/// Where params are built one request after another (see [`ParamsBuilder::in_arena`]): the
/// spare capacity of a shared buffer reused for each request.
#[derive(Debug, Default)]
pub struct ParamsArena {
    bytes: BytesMut,
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

    /// Its bytes are stored in an arena's buffer ([`ParamsBuilder::in_arena`]).
    pub fn holds_arena(&self) -> bool {
        self.in_arena
    }

    /// Nothing stored and no buffer yet (a builder fresh from [`ParamsBuilder::new`]).
    pub fn is_unused(&self) -> bool {
        !self.in_arena && self.buf.capacity() == 0
    }

    /// Number of complete pairs so far.
    pub fn pair_count(&self) -> usize {
        self.count
    }

    /// Makes room for `bytes` more bytes (names, values and their length prefixes), so that a
    /// PARAMS record costs at most one allocation. The caller bounds it by its limits.
    pub fn reserve(&mut self, bytes: usize) {
        if self.in_arena {
            self.reserve_in_arena(bytes);
        } else if self.buf.capacity() == 0 {
            // The first record allocates directly: growing an empty buffer takes the longer path.
            self.buf = BytesMut::with_capacity(bytes);
        } else {
            self.buf.reserve(bytes);
        }
    }

    /// A builder that stores its bytes in the spare capacity of `arena` (taken; give it back
    /// with [`ParamsBuilder::finish_into`]). Params built one after another in one arena share
    /// its allocation, which is reused once every `Params` made from it is dropped, so that in
    /// the steady state building params allocates nothing for their bytes.
    pub fn in_arena(arena: &mut ParamsArena) -> ParamsBuilder {
        let mut buf = std::mem::take(&mut arena.bytes);
        buf.clear();
        ParamsBuilder {
            buf,
            in_arena: true,
            ..ParamsBuilder::default()
        }
    }

    /// Moves the bytes stored so far out of the arena's buffer into one of their own size, and
    /// gives the arena its buffer back (for a builder whose params are still arriving when the
    /// arena goes to another connection). Nothing changes for a builder not in an arena.
    pub fn leave_arena(&mut self, arena: &mut ParamsArena) {
        if !self.in_arena {
            return;
        }
        let own = BytesMut::from(&self.buf[..]);
        let mut block = std::mem::replace(&mut self.buf, own);
        block.clear();
        if block.capacity() > arena.bytes.capacity() {
            arena.bytes = block;
        }
        self.in_arena = false;
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

    /// Adds a whole pair (any unfinished one is dropped).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        self.buf.truncate(self.complete_end);
        self.content_len = self.complete_content;
        encode_len(&mut self.buf, name.len());
        encode_len(&mut self.buf, value.len());
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(value);
        self.content_len += name.len() + value.len();
        self.end_pair();
    }

    /// Starts a pair whose name and value bytes arrive in pieces: `begin_pair`, then
    /// `extend_pair` with the name bytes and the value bytes (`name_len + value_len` in all),
    /// then `end_pair`.
    pub fn begin_pair(&mut self, name_len: usize, value_len: usize) {
        encode_len(&mut self.buf, name_len);
        encode_len(&mut self.buf, value_len);
    }

    /// Name or value bytes of the pair begun.
    pub fn extend_pair(&mut self, bytes: &[u8]) {
        self.content_len += bytes.len();
        self.buf.extend_from_slice(bytes);
    }

    /// The pair begun is complete.
    pub fn end_pair(&mut self) {
        self.count += 1;
        self.complete_end = self.buf.len();
        self.complete_content = self.content_len;
    }

    /// Appends every pair that lies whole at the front of `block` verbatim (length prefixes
    /// included), with no limit checked: for a caller that knows no pair in `block` can break
    /// one. Returns how many bytes of `block` were appended.
    pub fn append_whole_pairs(&mut self, block: &[u8]) -> usize {
        let mut rest = block;
        let (mut pairs, mut content_len) = (0, 0);
        while let Some((name_len, value_len, data)) = read_prefixes(rest) {
            let data_len = name_len.saturating_add(value_len);
            let Some(after) = data.get(data_len..) else {
                break;
            };
            pairs += 1;
            content_len += data_len;
            rest = after;
        }
        let used = block.len() - rest.len();
        self.append_walked(
            block,
            used,
            self.count + pairs,
            self.content_len + content_len,
        )
    }

    /// Appends the pairs that `next_pair` finds at the front of `block` verbatim (length
    /// prefixes included): one copy for many pairs. Returns how many bytes of `block` were
    /// appended.
    ///
    /// `next_pair(rest, pairs, bytes)` is given what follows the pairs found so far and the
    /// builder's pair count and name and value bytes as they would be with them; it returns the
    /// pair at the front of `rest` as (length prefix bytes, name length, value length), as
    /// encoded there, or `None` to stop. A pair it describes past the end of `rest` stops the
    /// walk too.
    pub fn append_pairs(
        &mut self,
        block: &[u8],
        mut next_pair: impl FnMut(&[u8], usize, usize) -> Option<(usize, usize, usize)>,
    ) -> usize {
        let mut rest = block;
        let mut pairs = self.count;
        let mut content_len = self.content_len;
        while let Some((prefix_len, name_len, value_len)) = next_pair(rest, pairs, content_len) {
            let Some(after) = rest.get(prefix_len + name_len + value_len..) else {
                break;
            };
            pairs += 1;
            content_len += name_len + value_len;
            rest = after;
        }
        let used = block.len() - rest.len();
        self.append_walked(block, used, pairs, content_len)
    }

    /// Appends the first `used` bytes of `block`, whole pairs found by a walk, which leave
    /// the builder with `count` pairs and `content_len` name and value bytes. Returns the
    /// bytes appended.
    fn append_walked(
        &mut self,
        block: &[u8],
        used: usize,
        count: usize,
        content_len: usize,
    ) -> usize {
        let Some(bytes) = block.get(..used).filter(|b| !b.is_empty()) else {
            return 0;
        };
        self.buf.truncate(self.complete_end);
        self.buf.extend_from_slice(bytes);
        self.count = count;
        self.content_len = content_len;
        self.complete_end = self.buf.len();
        self.complete_content = content_len;
        used
    }

    /// Freezes the complete pairs (an unfinished pair is dropped).
    pub fn finish(self) -> Params {
        self.finish_into(&mut ParamsArena::default())
    }

    /// Like [`ParamsBuilder::finish`]; the spare capacity of the buffer goes (back) to `arena`
    /// unless `arena` has more.
    pub fn finish_into(mut self, arena: &mut ParamsArena) -> Params {
        self.buf.truncate(self.complete_end);
        let buf = if self.in_arena {
            let filled = self.buf.split().freeze();
            // The rest of a block grown for large params is not kept: it would hold the whole
            // block for as long as the worker lives.
            if filled.len() <= ARENA_BLOCK && self.buf.capacity() > arena.bytes.capacity() {
                arena.bytes = self.buf;
            }
            filled
        } else {
            self.buf.freeze()
        };
        Params {
            buf,
            count: self.count,
            content_len: self.complete_content,
        }
    }
}

/// The complete params of one request. Two `Params` are equal when they hold the same pairs in
/// the same order, however their length prefixes were encoded.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// The pairs, encoded (spec 3.4).
    buf: Bytes,
    count: usize,
    /// Name and value bytes (`buf` also holds the length prefixes).
    content_len: usize,
}

impl PartialEq for Params {
    fn eq(&self, other: &Params) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Params {}

/// Where a pair lies in its [`Params`] (from [`Params::iter_at`]): a way back to it without a
/// search, meaningful for those params only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairAt(usize);

/// The pairs of a [`Params`] in arrival order, read from its buffer.
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    /// What follows the pairs read so far.
    rest: &'a [u8],
    /// The length of the whole buffer (`rest` is its end).
    len: usize,
}

impl<'a> Pairs<'a> {
    /// Where the pair the next call to `next` returns lies.
    pub fn at(&self) -> PairAt {
        PairAt(self.len - self.rest.len())
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (name_len, value_len, rest) = read_prefixes(self.rest)?;
        let (name, rest) = rest.split_at_checked(name_len)?;
        let (value, rest) = rest.split_at_checked(value_len)?;
        self.rest = rest;
        Some((name, value))
    }
}

impl Params {
    /// Builds params from pairs (for tests and clients).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Params {
        let mut b = ParamsBuilder::new();
        for (n, v) in pairs {
            b.push(n, v);
        }
        b.finish()
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
    pub fn iter(&self) -> Pairs<'_> {
        Pairs {
            rest: &self.buf,
            len: self.buf.len(),
        }
    }

    /// Every pair in arrival order with where it lies (see [`Params::pair_at`]).
    pub fn iter_at(&self) -> impl Iterator<Item = (PairAt, &[u8], &[u8])> + '_ {
        let mut pairs = self.iter();
        std::iter::from_fn(move || {
            let at = pairs.at();
            pairs.next().map(|(name, value)| (at, name, value))
        })
    }

    /// The pair that lies `at` (from [`Params::iter_at`] or [`Pairs::at`] over these params).
    pub fn pair_at(&self, at: PairAt) -> Option<(&[u8], &[u8])> {
        Pairs {
            rest: self.buf.get(at.0..)?,
            len: self.buf.len(),
        }
        .next()
    }

    /// Every pair in arrival order as zero-copy slices of the shared buffer.
    pub fn iter_bytes(&self) -> impl Iterator<Item = (Bytes, Bytes)> + '_ {
        self.iter()
            .filter_map(|(name, value)| Some((self.share(name)?, self.share(value)?)))
    }

    /// A zero-copy `Bytes` for `part`, which must be a slice obtained from this `Params` (from
    /// [`Params::iter`] or [`Params::get`]); `None` for a slice of anything else.
    pub fn share(&self, part: &[u8]) -> Option<Bytes> {
        let start = (part.as_ptr() as usize).checked_sub(self.buf.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= self.buf.len()).then(|| self.buf.slice(start..end))
    }

    /// The value of the last pair named `name` (exact, case-sensitive match as in CGI).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .last()
    }

    /// Like [`Params::get`], as a zero-copy slice.
    pub fn get_bytes(&self, name: &[u8]) -> Option<Bytes> {
        self.get(name).and_then(|value| self.share(value))
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
        b.begin_pair(14, 3);
        b.extend_pair(b"REQ");
        b.extend_pair(b"UEST_METHOD");
        b.extend_pair(b"GE");
        b.extend_pair(b"T");
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
            b.reserve(8 + value.len());
            b.push(format!("P{n}").as_bytes(), &value);
            b.push(b"N", n.to_string().as_bytes());
            b.finish_into(arena)
        };
        let kept: Vec<Params> = (0..64).map(|n| build(&mut arena, n)).collect();
        for (n, p) in kept.iter().enumerate() {
            assert_eq!(p.len(), 2);
            assert_eq!(p.get_str("N"), Some(n.to_string().as_str()));
            assert_eq!(p.iter().next().map(|(_, v)| v.len()), Some(n % 700));
            assert_eq!(p.iter().nth(2), None);
            let value = p.get(format!("P{n}").as_bytes()).unwrap();
            assert_eq!(p.share(value).map(|b| b.len()), Some(n % 700));
        }
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
            b.reserve(value.len() + 8);
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
        b.begin_pair(4, 1);
        b.extend_pair(b"HALF");
        let p = b.finish();
        assert_eq!(p, Params::from_pairs([(&b"A"[..], &b"1"[..])]));
        assert_eq!(
            p.byte_len() + 2,
            p.buf.len(),
            "the half pair's bytes are not kept"
        );
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

    /// Whole pairs of either prefix form are taken; a pair cut by the end of the block, or a
    /// prefix cut there, is left for the caller.
    #[test]
    fn append_whole_pairs_stops_at_the_first_pair_cut() {
        let long = vec![b'v'; 200];
        let mut block = Vec::new();
        crate::nv::encode_pair(&mut block, b"A", b"1");
        crate::nv::encode_pair(&mut block, b"B", &long);
        block.extend_from_slice(&[0x80, 0, 0, 1, 0, b'C']);
        let whole = block.len();
        for cut in [&[][..], &[3, 1, b'D'], &[0x80, 0], &[1]] {
            let mut input = block.clone();
            input.extend_from_slice(cut);
            let mut b = ParamsBuilder::new();
            b.push(b"Z", b"0");
            assert_eq!(b.append_whole_pairs(&input), whole, "{cut:?}");
            assert_eq!(b.pair_count(), 4);
            assert_eq!(b.byte_len(), 2 + 2 + 201 + 1);
            let p = b.finish();
            assert_eq!(
                p,
                Params::from_pairs([
                    (&b"Z"[..], &b"0"[..]),
                    (b"A", b"1"),
                    (b"B", &long),
                    (b"C", b""),
                ])
            );
        }
        assert_eq!(ParamsBuilder::new().append_whole_pairs(&[2, 0, b'x']), 0);
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

    #[test]
    fn a_pair_is_found_again_where_it_lies() {
        let long = vec![b'v'; 300];
        let p = Params::from_pairs([(&b"A"[..], &b"1"[..]), (b"B", &long), (b"C", b"3")]);
        let found: Vec<_> = p.iter_at().collect();
        assert_eq!(found.len(), 3);
        for (at, name, value) in found {
            assert_eq!(p.pair_at(at), Some((name, value)));
        }
        assert_eq!(p.pair_at(PairAt(p.buf.len())), None);
        assert_eq!(p.pair_at(PairAt(usize::MAX)), None);
    }

    /// Bytes that are no pairs (a caller of `append_pairs` that misdescribed its block) end the
    /// walk; nothing panics.
    #[test]
    fn a_walk_over_bytes_that_are_no_pairs_ends() {
        for block in [
            &[0x80, 0, 0][..],
            &[0x80, 0, 0, 9, 1, b'x'],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            &[5, 0, b'a'],
            &[1],
        ] {
            let mut b = ParamsBuilder::new();
            let mut once = true;
            let used = b.append_pairs(block, |_, _, _| {
                std::mem::take(&mut once).then_some((block.len(), 0, 0))
            });
            assert_eq!(used, block.len());
            let p = b.finish();
            assert_eq!(p.iter().count(), 0, "{block:?}");
            assert_eq!(p.get(b"x"), None);
            assert_eq!(p.iter_at().count(), 0);
        }
    }
}
