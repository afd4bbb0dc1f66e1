//! Name-value pairs (spec 3.4): a length-prefixed encoder and a streaming, bounded decoder.
//!
//! Lengths are one byte below 128, else four bytes with the top bit set. The decoder accepts the
//! stream cut anywhere (even inside a length prefix) and checks each announced length against
//! its limits before storing a byte (the libfcgi heap overflow, CVE-2025-23016, came from not
//! doing so).
//!
//! Guarantees of [`NvDecoder`]:
//! - the pairs appended and the result do not depend on how the stream was cut;
//! - every announced length is checked against [`NvLimits`] before the first byte of that pair is
//!   stored, so the builder never holds more than `max_total_bytes` name and value bytes nor more
//!   than `max_pairs` pairs;
//! - it never panics; after an error it keeps returning that error.

use super::params::ParamsBuilder;
use bytes::BufMut;

/// Bounds on one request's params.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvLimits {
    /// Longest name accepted.
    pub max_name_len: usize,
    /// Longest value accepted.
    pub max_value_len: usize,
    /// Most name and value bytes in all.
    pub max_total_bytes: usize,
    /// Most pairs.
    pub max_pairs: usize,
}

/// Why a params stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NvError {
    NameTooLong {
        len: u32,
    },
    ValueTooLong {
        len: u32,
    },
    TooManyBytes,
    TooManyPairs,
    /// The stream ended inside a pair.
    Truncated,
}

impl std::fmt::Display for NvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NvError::NameTooLong { len } => write!(f, "params name of {len} bytes is too long"),
            NvError::ValueTooLong { len } => write!(f, "params value of {len} bytes is too long"),
            NvError::TooManyBytes => f.write_str("params exceed the byte limit"),
            NvError::TooManyPairs => f.write_str("params exceed the pair limit"),
            NvError::Truncated => f.write_str("params stream ended inside a name-value pair"),
        }
    }
}

impl std::error::Error for NvError {}

/// Largest length a four-byte prefix can carry (2^31 - 1).
pub const MAX_LEN: usize = 0x7FFF_FFFF;

/// Appends one pair. Lengths above [`MAX_LEN`] cannot be encoded and are the caller's bug
/// (checked in debug builds).
pub fn encode_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(encoded_len(name, value));
    encode_len(out, name.len());
    encode_len(out, value.len());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// Appends one length prefix (spec 3.4).
pub(crate) fn encode_len(out: &mut impl BufMut, len: usize) {
    debug_assert!(len <= MAX_LEN);
    if len < 128 {
        out.put_u8(len as u8);
    } else {
        out.put_u32((len as u32) | 0x8000_0000);
    }
}

/// Bytes [`encode_pair`] appends for this pair.
pub fn encoded_len(name: &[u8], value: &[u8]) -> usize {
    let prefix = |len: usize| if len < 128 { 1 } else { 4 };
    prefix(name.len()) + prefix(value.len()) + name.len() + value.len()
}

/// Streaming decoder for one PARAMS stream.
#[derive(Debug)]
pub struct NvDecoder {
    limits: NvLimits,
    state: State,
}

/// Where the decoder is inside the pair sequence (spec 3.4: nameLength, valueLength, nameData,
/// valueData).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the name length prefix.
    NameLen(Prefix),
    /// Reading the value length prefix; the name length is known and checked.
    ValueLen { name_len: u32, prefix: Prefix },
    /// Storing name bytes; the pair is checked and begun.
    Name { left: u32, value_len: u32 },
    /// Storing value bytes.
    Value { left: u32 },
    /// A limit was exceeded or the stream was truncated: sticky.
    Failed(NvError),
}

impl State {
    /// A name or value whose last byte has been stored can be closed without more input.
    fn completes_without_input(self) -> bool {
        matches!(self, State::Name { left: 0, .. } | State::Value { left: 0 })
    }
}

/// The bytes of a length prefix read so far (spec 3.4: one byte `0xxxxxxx`, or four bytes with
/// the top bit of the first set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Prefix {
    bytes: [u8; 4],
    have: u8,
}

impl Prefix {
    /// Consumes prefix bytes from `input`; returns the length once complete.
    fn take(&mut self, input: &mut &[u8]) -> Option<u32> {
        while let Some((&byte, rest)) = input.split_first() {
            *input = rest;
            if self.have == 0 && byte & 0x80 == 0 {
                return Some(u32::from(byte));
            }
            if let Some(slot) = self.bytes.get_mut(usize::from(self.have)) {
                *slot = byte;
            }
            self.have += 1;
            if usize::from(self.have) == self.bytes.len() {
                return Some(u32::from_be_bytes(self.bytes) & 0x7FFF_FFFF);
            }
        }
        None
    }
}

impl NvDecoder {
    pub fn new(limits: NvLimits) -> NvDecoder {
        NvDecoder {
            limits,
            state: State::NameLen(Prefix::default()),
        }
    }

    /// Decodes `input` (any piece of the stream), appending pairs to `params`.
    ///
    /// On a limit error nothing of the offending pair has been stored.
    pub fn feed(&mut self, mut input: &[u8], params: &mut ParamsBuilder) -> Result<(), NvError> {
        loop {
            if self.state == State::NameLen(Prefix::default()) {
                self.whole_pairs(&mut input, params);
            }
            if input.is_empty() && !self.state.completes_without_input() {
                return Ok(());
            }
            match self.step(&mut input, params) {
                Ok(next) => self.state = next,
                Err(error) => {
                    self.state = State::Failed(error);
                    return Err(error);
                }
            }
        }
    }

    /// Fast path between pairs: stores the pairs that lie whole at the front of `input` and
    /// are within the limits. It stops at the first pair cut by the end of `input` or over a
    /// limit, leaving that pair to [`NvDecoder::step`], which stores it or reports the error.
    ///
    /// The pairs found are copied in one block, length prefixes included, rather than pair by
    /// pair: one copy for a whole PARAMS record.
    fn whole_pairs(&self, input: &mut &[u8], params: &mut ParamsBuilder) {
        // No pair inside `input` can break a limit when all of `input` could not: a pair takes
        // at least two bytes (its prefixes), and a name or value is no longer than `input`.
        let within = |limit: usize, used: usize, more: usize| used.saturating_add(more) <= limit;
        let limits = &self.limits;
        let len = input.len();
        let unchecked = within(limits.max_total_bytes, params.byte_len(), len)
            && within(limits.max_pairs, params.pair_count(), len / 2)
            && len <= limits.max_name_len
            && len <= limits.max_value_len;
        // Two loops, so that the common one has no limit check in it at all.
        let used = if unchecked {
            params.append_whole_pairs(input)
        } else {
            params.append_pairs(input, |rest, pairs, bytes| {
                let pair = WholePair::read(rest)?;
                self.admits(&pair, pairs, bytes).then_some((
                    pair.prefix_len,
                    widen(pair.name_len),
                    widen(pair.value_len),
                ))
            })
        };
        *input = input.get(used..).unwrap_or_default();
    }

    /// Whether `pair` passes [`NvDecoder::check_name`] and [`NvDecoder::check_value`], with
    /// `pairs` pairs and `bytes` name and value bytes stored before it.
    fn admits(&self, pair: &WholePair, pairs: usize, bytes: usize) -> bool {
        self.check_name(pair.name_len, pairs, bytes).is_ok()
            && self
                .check_value(pair.name_len, pair.value_len, bytes)
                .is_ok()
    }

    /// The stream ended (empty PARAMS record): fails if a pair is unfinished.
    pub fn finish(&mut self) -> Result<(), NvError> {
        match self.state {
            State::NameLen(Prefix { have: 0, .. }) => Ok(()),
            State::Failed(error) => Err(error),
            _ => {
                self.state = State::Failed(NvError::Truncated);
                Err(NvError::Truncated)
            }
        }
    }

    /// One transition, consuming what it needs from `input`.
    fn step(&self, input: &mut &[u8], params: &mut ParamsBuilder) -> Result<State, NvError> {
        Ok(match self.state {
            State::NameLen(mut prefix) => match prefix.take(input) {
                None => State::NameLen(prefix),
                Some(name_len) => {
                    self.check_name(name_len, params.pair_count(), params.byte_len())?;
                    State::ValueLen {
                        name_len,
                        prefix: Prefix::default(),
                    }
                }
            },
            State::ValueLen {
                name_len,
                mut prefix,
            } => match prefix.take(input) {
                None => State::ValueLen { name_len, prefix },
                Some(value_len) => {
                    self.check_value(name_len, value_len, params.byte_len())?;
                    params.begin_pair(widen(name_len), widen(value_len));
                    State::Name {
                        left: name_len,
                        value_len,
                    }
                }
            },
            State::Name { left, value_len } => {
                let left = left - store(input, left, |b| params.extend_pair(b));
                if left > 0 {
                    State::Name { left, value_len }
                } else {
                    State::Value { left: value_len }
                }
            }
            State::Value { left } => {
                let left = left - store(input, left, |b| params.extend_pair(b));
                if left > 0 {
                    State::Value { left }
                } else {
                    params.end_pair();
                    State::NameLen(Prefix::default())
                }
            }
            State::Failed(error) => return Err(error),
        })
    }

    /// Checks a pair's name length before anything of the pair is stored.
    fn check_name(&self, name_len: u32, pairs: usize, bytes: usize) -> Result<(), NvError> {
        if pairs >= self.limits.max_pairs {
            return Err(NvError::TooManyPairs);
        }
        if widen(name_len) > self.limits.max_name_len {
            return Err(NvError::NameTooLong { len: name_len });
        }
        if bytes.saturating_add(widen(name_len)) > self.limits.max_total_bytes {
            return Err(NvError::TooManyBytes);
        }
        Ok(())
    }

    /// Checks a pair's value length before anything of the pair is stored.
    fn check_value(&self, name_len: u32, value_len: u32, bytes: usize) -> Result<(), NvError> {
        if widen(value_len) > self.limits.max_value_len {
            return Err(NvError::ValueTooLong { len: value_len });
        }
        let total = bytes
            .saturating_add(widen(name_len))
            .saturating_add(widen(value_len));
        if total > self.limits.max_total_bytes {
            return Err(NvError::TooManyBytes);
        }
        Ok(())
    }
}

/// A pair (spec 3.4) whose prefixes, name and value all lie in the input it was read from.
struct WholePair {
    /// Bytes of the two length prefixes (the name starts here).
    prefix_len: usize,
    name_len: u32,
    value_len: u32,
}

impl WholePair {
    /// Reads the pair at the front of `input` if it is whole there.
    fn read(input: &[u8]) -> Option<WholePair> {
        let (name_len, value_len, rest) = read_prefixes(input)?;
        let data_len = name_len.saturating_add(value_len);
        (data_len <= rest.len()).then_some(WholePair {
            prefix_len: input.len() - rest.len(),
            // Lengths read from a prefix: below 2^31.
            name_len: u32::try_from(name_len).ok()?,
            value_len: u32::try_from(value_len).ok()?,
        })
    }
}

/// Reads the two length prefixes of the pair at the front of `input` (spec 3.4), if both are
/// whole there: the name's and the value's lengths, and what follows the prefixes. Each
/// length is below 2^31; callers that add the two do so with `saturating_add`, so the sum
/// cannot wrap on a 32-bit `usize` either.
#[inline(always)]
pub(crate) fn read_prefixes(input: &[u8]) -> Option<(usize, usize, &[u8])> {
    // Most pairs have two one-byte prefixes (names and values under 128 bytes): one test.
    if let Some((&[name_len, value_len], rest)) = input.split_first_chunk::<2>()
        && (name_len | value_len) & 0x80 == 0
    {
        return Some((usize::from(name_len), usize::from(value_len), rest));
    }
    let (name_len, rest) = read_len(input)?;
    let (value_len, rest) = read_len(rest)?;
    Some((widen(name_len), widen(value_len), rest))
}

/// Reads a whole length prefix (spec 3.4) from the front of `input`, if there.
fn read_len(input: &[u8]) -> Option<(u32, &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first & 0x80 == 0 {
        return Some((u32::from(first), rest));
    }
    let (bytes, rest) = input.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*bytes) & 0x7FFF_FFFF, rest))
}

/// A decoded length as `usize` (saturating on targets narrower than 32 bits).
pub(crate) fn widen(len: u32) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

/// Hands up to `left` bytes of `input` to `sink`; returns how many.
fn store(input: &mut &[u8], left: u32, sink: impl FnOnce(&[u8])) -> u32 {
    let n = input.len().min(widen(left));
    let (now, rest) = input.split_at_checked(n).unwrap_or((input, &[]));
    sink(now);
    *input = rest;
    // n <= left, so it fits in u32.
    u32::try_from(n).unwrap_or(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    const WIDE: NvLimits = NvLimits {
        max_name_len: 1 << 20,
        max_value_len: 1 << 20,
        max_total_bytes: 1 << 21,
        max_pairs: 1000,
    };

    fn decode(limits: NvLimits, pieces: &[&[u8]]) -> Result<Params, NvError> {
        let mut decoder = NvDecoder::new(limits);
        let mut builder = ParamsBuilder::new();
        for piece in pieces {
            decoder.feed(piece, &mut builder)?;
        }
        decoder.finish()?;
        Ok(builder.finish())
    }

    fn pairs(list: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in list {
            encode_pair(&mut out, n, v);
        }
        out
    }

    #[test]
    fn one_byte_lengths() {
        let bytes = [4, 3, b'N', b'A', b'M', b'E', b'v', b'a', b'l'];
        let p = decode(WIDE, &[&bytes]).unwrap();
        assert_eq!(p, Params::from_pairs([(&b"NAME"[..], &b"val"[..])]));
    }

    #[test]
    fn four_byte_lengths() {
        let value = vec![b'x'; 200];
        let mut bytes = vec![3, 0x80, 0, 0, 200];
        bytes.extend_from_slice(b"BIG");
        bytes.extend_from_slice(&value);
        let p = decode(WIDE, &[&bytes]).unwrap();
        assert_eq!(p.get(b"BIG"), Some(&value[..]));
        assert_eq!(bytes, pairs(&[(b"BIG", &value)]));
    }

    #[test]
    fn a_four_byte_prefix_may_encode_a_small_length() {
        // Spec 3.4 allows the long form for any length.
        let bytes = [0x80, 0, 0, 1, 0, b'A'];
        let p = decode(WIDE, &[&bytes]).unwrap();
        assert_eq!(p.get(b"A"), Some(&b""[..]));
    }

    #[test]
    fn empty_names_and_values() {
        let bytes = pairs(&[(b"", b""), (b"A", b""), (b"", b"v")]);
        let p = decode(WIDE, &[&bytes]).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.get(b""), Some(&b"v"[..]));
    }

    #[test]
    fn every_split_gives_the_same_params() {
        let long = vec![b'y'; 300];
        let bytes = pairs(&[(b"A", b"1"), (&long, b"x"), (b"B", &long), (b"", b"")]);
        let whole = decode(WIDE, &[&bytes]).unwrap();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(decode(WIDE, &[a, b]).unwrap(), whole, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode(WIDE, &singles).unwrap(), whole);
    }

    #[test]
    fn length_prefix_straddling_calls() {
        let value = vec![b'z'; 1000];
        let bytes = pairs(&[(b"K", &value)]);
        // Name length, then the 4-byte value length cut 1+3, then the rest.
        let p = decode(WIDE, &[&bytes[..2], &bytes[2..5], &bytes[5..]]).unwrap();
        assert_eq!(p.get(b"K"), Some(&value[..]));
    }

    #[test]
    fn a_2_gib_name_is_rejected_before_allocation() {
        let mut decoder = NvDecoder::new(WIDE);
        let mut builder = ParamsBuilder::new();
        let announced = [0xFF, 0xFF, 0xFF, 0xFF, 1];
        let err = decoder.feed(&announced, &mut builder).unwrap_err();
        assert_eq!(err, NvError::NameTooLong { len: 0x7FFF_FFFF });
        assert_eq!(builder.byte_len(), 0);
        // Sticky.
        assert_eq!(decoder.feed(b"more", &mut builder), Err(err));
        assert_eq!(decoder.finish(), Err(err));
    }

    #[test]
    fn limits_are_exact() {
        let limits = NvLimits {
            max_name_len: 4,
            max_value_len: 3,
            max_total_bytes: 10,
            max_pairs: 2,
        };
        let ok = pairs(&[(b"ABCD", b"123"), (b"EF", b"1")]);
        assert_eq!(decode(limits, &[&ok]).unwrap().byte_len(), 10);
        let name = pairs(&[(b"ABCDE", b"")]);
        assert_eq!(
            decode(limits, &[&name]),
            Err(NvError::NameTooLong { len: 5 })
        );
        let value = pairs(&[(b"A", b"1234")]);
        assert_eq!(
            decode(limits, &[&value]),
            Err(NvError::ValueTooLong { len: 4 })
        );
        let total = pairs(&[(b"ABCD", b"123"), (b"EF", b"12")]);
        assert_eq!(decode(limits, &[&total]), Err(NvError::TooManyBytes));
        let count = pairs(&[(b"A", b""), (b"B", b""), (b"C", b"")]);
        assert_eq!(decode(limits, &[&count]), Err(NvError::TooManyPairs));
    }

    /// The fast path over whole pairs and the byte-by-byte path refuse at the same pair with
    /// the same error.
    #[test]
    fn limits_agree_on_every_split() {
        let limits = NvLimits {
            max_name_len: 4,
            max_value_len: 3,
            max_total_bytes: 10,
            max_pairs: 2,
        };
        let cases = [
            pairs(&[(b"ABCD", b"123"), (b"EF", b"1")]),
            pairs(&[(b"AB", b""), (b"ABCDE", b"")]),
            pairs(&[(b"A", b"1"), (b"B", b"1234")]),
            pairs(&[(b"ABCD", b"123"), (b"EF", b"12")]),
            pairs(&[(b"ABCD", b"123"), (b"EFGH", b"")]),
            pairs(&[(b"A", b""), (b"B", b""), (b"C", b"")]),
        ];
        for bytes in cases {
            let whole = decode(limits, &[&bytes]);
            for cut in 0..=bytes.len() {
                let (a, b) = bytes.split_at(cut);
                assert_eq!(decode(limits, &[a, b]), whole, "{bytes:?} cut at {cut}");
            }
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(decode(limits, &singles), whole, "{bytes:?} byte by byte");
        }
    }

    mod splits {
        use super::*;
        use proptest::prelude::*;

        fn pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
            let bytes = |max| proptest::collection::vec(any::<u8>(), 0..max);
            (bytes(6), prop_oneof![bytes(6), bytes(200)])
        }

        proptest! {
            /// With limits that refuse at random points, the fast path over whole pairs and
            /// the byte-by-byte path agree on the params or the error, however the stream is
            /// cut.
            #[test]
            fn limits_agree_with_byte_by_byte(
                list in proptest::collection::vec(pair(), 0..8),
                max_name_len in 0usize..7,
                max_value_len in 0usize..210,
                max_total_bytes in 0usize..600,
                max_pairs in 0usize..9,
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            ) {
                let limits = NvLimits { max_name_len, max_value_len, max_total_bytes, max_pairs };
                let refs: Vec<(&[u8], &[u8])> =
                    list.iter().map(|(n, v)| (&n[..], &v[..])).collect();
                let bytes = pairs(&refs);
                let singles: Vec<&[u8]> = bytes.chunks(1).collect();
                let expected = decode(limits, &singles);
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
                at.sort_unstable();
                let mut pieces = Vec::new();
                let mut start = 0;
                for end in at.into_iter().chain([bytes.len()]) {
                    pieces.push(&bytes[start..end]);
                    start = end;
                }
                prop_assert_eq!(decode(limits, &pieces), expected);
            }
        }
    }

    #[test]
    fn truncation_is_reported_at_finish() {
        let bytes = pairs(&[(b"NAME", b"value")]);
        for cut in 1..bytes.len() {
            assert_eq!(
                decode(WIDE, &[&bytes[..cut]]),
                Err(NvError::Truncated),
                "cut at {cut}"
            );
        }
        assert!(decode(WIDE, &[&bytes, &[0x80, 0]]).is_err());
        assert!(decode(WIDE, &[]).unwrap().is_empty());
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            NvError::NameTooLong { len: 9 }.to_string(),
            "params name of 9 bytes is too long"
        );
        assert!(NvError::Truncated.to_string().contains("inside"));
    }
}
