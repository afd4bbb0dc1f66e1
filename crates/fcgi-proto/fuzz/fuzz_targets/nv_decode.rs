//! Arbitrary bytes through the name-value decoder, whole and cut: the same pairs or error,
//! never more than the limits stored.
#![no_main]

use fcgi_proto::ParamsBuilder;
use fcgi_proto::nv::{NvDecoder, NvLimits};
use libfuzzer_sys::fuzz_target;

const LIMITS: NvLimits = NvLimits {
    max_name_len: 200,
    max_value_len: 1000,
    max_total_bytes: 2000,
    max_pairs: 50,
};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = decode(stream, &[]);
    // Cut points derived from the seed byte, a deterministic walk over the input.
    let mut cuts = Vec::new();
    let mut at = 0usize;
    let step = usize::from(seed % 17) + 1;
    while at < stream.len() {
        cuts.push(at);
        at += step + (at * usize::from(seed)) % 5;
    }
    assert_eq!(decode(stream, &cuts), whole);
});

/// Decoded pairs, or the error's text.
type Decoded = Result<Vec<(Vec<u8>, Vec<u8>)>, String>;

fn decode(stream: &[u8], cuts: &[usize]) -> Decoded {
    let mut decoder = NvDecoder::new(LIMITS);
    let mut builder = ParamsBuilder::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let result = decoder.feed(&stream[at..cut], &mut builder);
        assert!(builder.byte_len() <= LIMITS.max_total_bytes);
        assert!(builder.pair_count() <= LIMITS.max_pairs);
        result.map_err(|e| e.to_string())?;
        at = cut;
    }
    decoder.finish().map_err(|e| e.to_string())?;
    let params = builder.finish();
    for (name, value) in params.iter() {
        assert!(name.len() <= LIMITS.max_name_len);
        assert!(value.len() <= LIMITS.max_value_len);
    }
    Ok(params
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect())
}
