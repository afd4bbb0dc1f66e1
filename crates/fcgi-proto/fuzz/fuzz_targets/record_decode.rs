//! Arbitrary bytes as a record stream: header parsing and the connection state machine must
//! never panic, and whatever they accept must not depend on how the input was cut.
#![no_main]

use fcgi_proto::record::{HEADER_LEN, Header};
use fcgi_proto::{Connection, Event, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks(HEADER_LEN) {
        if let Ok(bytes) = <&[u8; HEADER_LEN]>::try_from(chunk) {
            let header = Header::parse(bytes);
            assert_eq!(&header.encode()[..7], &bytes[..7]);
        }
    }
    // The first byte picks a cut length; the rest is the stream.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_requests_per_conn: 4,
        max_params_bytes: 512,
        max_name_len: 64,
        max_value_len: 256,
        max_params_pairs: 16,
        ..Limits::default()
    };
    let whole = run(limits, stream, stream.len().max(1));
    let split = run(limits, stream, usize::from(cut).max(1));
    assert_eq!(whole, split);
});

fn run(limits: Limits, stream: &[u8], piece: usize) -> (Vec<u8>, usize, bool) {
    let mut conn = Connection::new(limits);
    let mut out = Vec::new();
    let mut events = 0;
    let mut failed = false;
    for chunk in stream.chunks(piece) {
        let result = conn.receive(chunk, &mut out, &mut |e: Event<'_>| {
            if !matches!(e, Event::Stdin { .. } | Event::Data { .. }) {
                events += 1;
            }
        });
        assert!(conn.active_requests() <= limits.max_requests_per_conn);
        if result.is_err() {
            failed = true;
            break;
        }
    }
    (out, events, failed)
}
