//! The default [`Limits`] against what stock front ends forward, and the memory one request at
//! those limits can take (the worst case docs/limits.md states).
//!
//! - The largest params a stock proxy sends (Caddy's 1 MiB of headers as ~169,000 pairs, a
//!   64 KiB name or value) are dispatched intact; one byte or pair past a limit is answered
//!   OVERLOADED.
//! - GET_VALUES answers FCGI_MAX_REQS = `max_requests_per_conn`, and exactly that many requests
//!   are accepted at once on a connection (HAProxy with `option get-values` keeps to it).
//! - A hostile params stream shaped to cost the most memory per counted byte stays below
//!   `3 * (max_params_bytes + 8 * max_params_pairs)` bytes of heap.

use fcgi_proto::nv::encode_pair;
use fcgi_proto::record::{
    MAX_CONTENT_LEN, ProtocolStatus, RecordType, encode_begin_request, encode_record,
    encode_stream, encode_stream_end,
};
use fcgi_proto::{Connection, Event, Limits, Params, RejectReason};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts the live heap bytes of this thread and their peak.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(by: usize) {
    let live = LIVE.with(|l| {
        l.set(l.get() + by);
        l.get()
    });
    PEAK.with(|p| p.set(p.get().max(live)));
}

fn shrank(by: usize) {
    LIVE.with(|l| l.set(l.get().saturating_sub(by)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        shrank(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What a connection did with the input fed to it.
#[derive(Default)]
struct Outcome {
    params: Vec<Params>,
    rejected: Vec<RejectReason>,
    out: Vec<u8>,
}

/// BEGIN_REQUEST (responder, KEEP_CONN) and `pairs` as a PARAMS stream cut into full records.
fn request(id: u16, pairs: &[u8]) -> Vec<u8> {
    let mut input = Vec::new();
    encode_begin_request(&mut input, id, 1, true);
    encode_stream(&mut input, RecordType::Params, id, pairs);
    encode_stream_end(&mut input, RecordType::Params, id);
    input
}

fn feed(conn: &mut Connection, input: &[u8]) -> Outcome {
    let mut got = Outcome::default();
    let (params, rejected) = (&mut got.params, &mut got.rejected);
    conn.receive(input, &mut got.out, &mut |event| match event {
        Event::Request { params: p, .. } => params.push(p),
        Event::Rejected { reason, .. } => rejected.push(reason),
        _ => {}
    })
    .expect("no protocol error");
    got
}

fn one_request(pairs: &[u8]) -> Outcome {
    feed(&mut Connection::new(Limits::default()), &request(1, pairs))
}

/// The params Caddy sends for a request of 1 MiB + 4 KiB (Go's `MaxHeaderBytes` plus its read
/// slack): its own ~20 params and one `HTTP_*` pair per distinct header name, the names as
/// short as the header budget allows (1, 2, 3, then 4 bytes from the 50 characters that stay
/// distinct once Go and Caddy have changed their case and `-` to `_`), values empty.
fn caddy_at_its_header_limit() -> (Vec<u8>, usize) {
    const HEAD_BUDGET: usize = 1024 * 1024 + 4096 - 64;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+.^_`|~";
    let mut pairs = Vec::new();
    let mut count = 0;
    for (name, value) in [
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/params"),
        ("SCRIPT_NAME", "/params"),
        ("SCRIPT_FILENAME", "/srv/params"),
        ("DOCUMENT_ROOT", "/srv"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("HTTP_HOST", "127.0.0.1:8080"),
    ] {
        encode_pair(&mut pairs, name.as_bytes(), value.as_bytes());
        count += 1;
    }
    let mut head = 0;
    'names: for len in 1..=4u32 {
        for i in 0..alphabet.len().pow(len) {
            // A header line `name:\r\n` costs the name plus 3 bytes of the client's budget.
            if head + len as usize + 3 > HEAD_BUDGET {
                break 'names;
            }
            head += len as usize + 3;
            let mut name = b"HTTP_".to_vec();
            let mut rest = i;
            for _ in 0..len {
                name.push(alphabet[rest % alphabet.len()].to_ascii_uppercase());
                rest /= alphabet.len();
            }
            encode_pair(&mut pairs, &name, b"");
            count += 1;
        }
    }
    (pairs, count)
}

#[test]
fn the_most_pairs_caddy_forwards_are_dispatched() {
    let (pairs, count) = caddy_at_its_header_limit();
    assert!(count > 165_000, "{count} pairs");
    let got = one_request(&pairs);
    assert!(got.rejected.is_empty(), "{:?}", got.rejected);
    let params = &got.params[0];
    assert_eq!(params.len(), count);
    assert_eq!(params.get(b"REQUEST_URI"), Some(&b"/params"[..]));
    eprintln!("{count} pairs, {} bytes", params.byte_len());
}

#[test]
fn a_64_kib_name_and_value_pass_and_one_byte_more_is_overloaded() {
    let limits = Limits::default();
    let name = vec![b'N'; limits.max_name_len];
    let value = vec![b'v'; limits.max_value_len];
    let mut pairs = Vec::new();
    encode_pair(&mut pairs, &name, b"1");
    encode_pair(&mut pairs, b"HTTP_X", &value);
    let got = one_request(&pairs);
    assert!(got.rejected.is_empty());
    assert_eq!(got.params[0].get(&name), Some(&b"1"[..]));
    assert_eq!(got.params[0].get(b"HTTP_X"), Some(&value[..]));

    let mut pairs = Vec::new();
    encode_pair(&mut pairs, &[b'N'; 64 * 1024 + 1], b"1");
    assert_eq!(
        one_request(&pairs).rejected,
        [RejectReason::ParamNameTooLong]
    );
    let mut pairs = Vec::new();
    encode_pair(&mut pairs, b"HTTP_X", &[b'v'; 64 * 1024 + 1]);
    assert_eq!(
        one_request(&pairs).rejected,
        [RejectReason::ParamValueTooLong]
    );
}

#[test]
fn params_of_2_mib_pass_and_one_byte_more_is_overloaded() {
    let limits = Limits::default();
    let value = vec![b'v'; limits.max_value_len];
    let whole = limits.max_params_bytes / (value.len() + 8);
    let mut pairs = Vec::new();
    for i in 0..whole {
        encode_pair(&mut pairs, format!("HTTP_{i:03}").as_bytes(), &value);
    }
    let rest = limits.max_params_bytes - whole * (value.len() + 8) - 8;
    encode_pair(&mut pairs, b"HTTP_END", &value[..rest]);
    let got = one_request(&pairs);
    assert!(got.rejected.is_empty());
    assert_eq!(got.params[0].byte_len(), limits.max_params_bytes);

    encode_pair(&mut pairs, b"X", b"");
    assert_eq!(one_request(&pairs).rejected, [RejectReason::ParamsTooLarge]);
}

#[test]
fn the_pair_limit_is_exact() {
    let limits = Limits::default();
    let mut pairs = Vec::new();
    for _ in 0..limits.max_params_pairs {
        encode_pair(&mut pairs, b"", b"");
    }
    let got = one_request(&pairs);
    assert!(got.rejected.is_empty());
    assert_eq!(got.params[0].len(), limits.max_params_pairs);

    encode_pair(&mut pairs, b"", b"");
    assert_eq!(one_request(&pairs).rejected, [RejectReason::TooManyParams]);
}

/// The FCGI_MAX_REQS value of a GET_VALUES_RESULT in `out`.
fn advertised_max_reqs(out: &[u8]) -> u32 {
    let name = b"FCGI_MAX_REQS";
    let at = out
        .windows(name.len())
        .position(|w| w == name)
        .expect("FCGI_MAX_REQS answered");
    // One-byte name and value lengths precede the name: `13, len, FCGI_MAX_REQS, value`.
    let value_len = usize::from(out[at - 1]);
    let value = &out[at + name.len()..at + name.len() + value_len];
    std::str::from_utf8(value).unwrap().parse().unwrap()
}

#[test]
fn fcgi_max_reqs_is_what_one_connection_accepts() {
    let limits = Limits::default();
    let mut conn = Connection::new(limits);
    let mut query = Vec::new();
    encode_pair(&mut query, b"FCGI_MAX_REQS", b"");
    let mut input = Vec::new();
    encode_record(&mut input, RecordType::GetValues, 0, &query);
    let advertised = advertised_max_reqs(&feed(&mut conn, &input).out);
    assert_eq!(advertised as usize, limits.max_requests_per_conn);

    let mut input = Vec::new();
    for id in 1..=advertised as u16 + 1 {
        encode_begin_request(&mut input, id, 1, true);
    }
    let got = feed(&mut conn, &input);
    assert_eq!(got.rejected, [RejectReason::TooManyRequests]);
    assert_eq!(conn.active_requests(), advertised as usize);
    // The one END_REQUEST written is the refusal of the last id.
    assert_eq!(got.out.len(), 16);
    assert_eq!(got.out[12], ProtocolStatus::Overloaded as u8);
}

/// Heap bytes held while one request's params are read, peak over the whole stream: `input`
/// fed one record at a time, as a proxy sends it.
fn peak_heap_of(input: &[u8]) -> usize {
    let mut conn = Connection::new(Limits::default());
    let mut out = Vec::with_capacity(64);
    let mut params = Vec::new();
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    for record in input.chunks(MAX_CONTENT_LEN + 8) {
        conn.receive(record, &mut out, &mut |event| {
            if let Event::Request { params: p, .. } = event {
                params.push(p);
            }
        })
        .unwrap();
    }
    assert_eq!(params.len(), 1, "dispatched");
    PEAK.with(Cell::get) - start
}

#[test]
fn one_request_at_the_limits_stays_within_the_stated_worst_case() {
    let limits = Limits::default();
    let bound = 3 * (limits.max_params_bytes + 8 * limits.max_params_pairs);
    // Empty pairs with four-byte length prefixes: 8 stored bytes each for no counted byte;
    // then values filling the byte limit.
    let mut pairs = Vec::new();
    let empty_wide = [0x80, 0, 0, 0, 0x80, 0, 0, 0];
    for _ in 0..limits.max_params_pairs - 40 {
        pairs.extend_from_slice(&empty_wide);
    }
    let value = vec![b'v'; limits.max_value_len];
    for i in 0..limits.max_params_bytes / (value.len() + 8) {
        encode_pair(&mut pairs, format!("HTTP_{i:03}").as_bytes(), &value);
    }
    let input = request(1, &pairs);
    let peak = peak_heap_of(&input);
    eprintln!("peak {peak} bytes for a request of {} bytes", input.len());
    assert!(peak <= bound, "peak {peak} > bound {bound}");

    // A request as Caddy sends at its limit, for the record.
    let (pairs, _) = caddy_at_its_header_limit();
    let input = request(1, &pairs);
    let peak = peak_heap_of(&input);
    eprintln!(
        "peak {peak} bytes for Caddy's largest request ({} bytes)",
        input.len()
    );
    assert!(peak <= bound, "peak {peak} > bound {bound}");
}
