//! Name-value pairs (spec 3.4): a length-prefixed encoder and a streaming, bounded decoder.
//!
//! Lengths are one byte below 128, else four bytes with the top bit set. The decoder accepts the
//! stream cut anywhere (even inside a length prefix) and checks each announced length against
//! its limits before storing a byte (the libfcgi heap overflow, CVE-2025-23016, came from not
//! doing so).

use super::params::ParamsBuilder;

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
        todo!()
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

fn encode_len(out: &mut Vec<u8>, len: usize) {
    debug_assert!(len <= MAX_LEN);
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
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
}

impl NvDecoder {
    pub fn new(limits: NvLimits) -> NvDecoder {
        todo!()
    }

    /// Decodes `input` (any piece of the stream), appending pairs to `params`.
    pub fn feed(&mut self, input: &[u8], params: &mut ParamsBuilder) -> Result<(), NvError> {
        todo!()
    }

    /// The stream ended (empty PARAMS record): fails if a pair is unfinished.
    pub fn finish(&mut self) -> Result<(), NvError> {
        todo!()
    }
}
