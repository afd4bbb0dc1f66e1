//! The hot path allocates nothing once a connection's params arena is warm: a typical nginx
//! request (BEGIN, one PARAMS record padded to 8, empty PARAMS, empty STDIN) in one input
//! slice, its params dropped before the next one arrives.
//!
//! The first request allocates the arena (its block and the shared header that
//! `bytes::Bytes` allocates when a block is first split); later requests reuse the block once
//! the params made from it are dropped. Requests whose params are still arriving hold about
//! their bytes, not a block each.

use fcgi_proto::nv::encode_pair;
use fcgi_proto::record::{RecordType, encode_begin_request, encode_stream_end};
use fcgi_proto::{Connection, Event, Limits};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        BYTES.with(|n| n.set(n.get() + layout.size()));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        BYTES.with(|n| n.set(n.get() + new_size));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// Bytes allocated so far (frees not subtracted).
fn bytes_allocated() -> usize {
    BYTES.with(Cell::get)
}

fn nginx_request() -> Vec<u8> {
    let mut params = Vec::new();
    for (name, value) in [
        ("QUERY_STRING", ""),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/hello"),
        ("REQUEST_URI", "/hello"),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "52814"),
        ("HTTP_HOST", "localhost:8080"),
        (
            "HTTP_USER_AGENT",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0",
        ),
    ] {
        encode_pair(&mut params, name.as_bytes(), value.as_bytes());
    }
    let padding = (8 - params.len() % 8) % 8;
    let mut out = Vec::new();
    encode_begin_request(&mut out, 1, 1, true);
    out.extend_from_slice(&[1, 4, 0, 1]);
    out.extend_from_slice(&(params.len() as u16).to_be_bytes());
    out.extend_from_slice(&[padding as u8, 0]);
    out.extend_from_slice(&params);
    out.extend(std::iter::repeat_n(0, padding));
    encode_stream_end(&mut out, RecordType::Params, 1);
    encode_stream_end(&mut out, RecordType::Stdin, 1);
    out
}

/// Allocations made by one `receive` of the whole request.
fn receive_allocations(conn: &mut Connection, input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut params = None;
    let mut ended = false;
    let before = allocations();
    conn.receive(input, out, &mut |event| match event {
        Event::Request { params: p, .. } => params = Some(p),
        Event::StdinEnd { .. } => ended = true,
        _ => {}
    })
    .unwrap();
    let made = allocations() - before;
    assert!(ended);
    assert_eq!(params.map(|p| p.len()), Some(10));
    made
}

#[test]
fn a_typical_request_allocates_only_the_params_buffer() {
    let input = nginx_request();
    let mut out = Vec::with_capacity(64);
    let mut conn = Connection::new(Limits::default());
    // First request on a connection: the arena (itself, made on first use when none is lent;
    // its block, shared header). The request lies in the connection's own table.
    let first = receive_allocations(&mut conn, &input, &mut out);
    assert_eq!(first, 3);
    assert!(conn.end_request(1, 0, &mut out));
    out.clear();
    for _ in 0..20 {
        // The params in the arena's block, reclaimed.
        assert_eq!(receive_allocations(&mut conn, &input, &mut out), 0);
        assert!(conn.end_request(1, 0, &mut out));
        out.clear();
    }
}

/// 256 requests on one connection, each with one byte of params (the first length prefix of a
/// pair) and its params never ended: one of them builds in the arena, the others each in a
/// buffer of about their bytes. (Each taking a block of its own would be 2 MiB for 6 KiB of
/// input.)
#[test]
fn pending_params_hold_about_their_bytes() {
    let mut input = Vec::new();
    for id in 1..=256u16 {
        encode_begin_request(&mut input, id, 1, true);
        input.extend_from_slice(&[1, 4]);
        input.extend_from_slice(&id.to_be_bytes());
        input.extend_from_slice(&[0, 1, 0, 0, 5]);
    }
    let mut out = Vec::new();
    let mut conn = Connection::new(Limits::default());
    let before = bytes_allocated();
    conn.receive(&input, &mut out, &mut |event| {
        panic!("no request completes: {event:?}")
    })
    .unwrap();
    assert_eq!(conn.active_requests(), 256);
    let made = bytes_allocated() - before;
    assert!(
        made < 256 * 1024,
        "{made} bytes allocated for {} bytes of input",
        input.len()
    );
}

/// The same across connections that share one arena, as a server's connections do (each
/// swaps it in for its receive and out after): one byte of params pending on each of 256
/// connections holds about its bytes, not a block each.
#[test]
fn pending_params_on_many_connections_hold_about_their_bytes() {
    let mut input = Vec::new();
    encode_begin_request(&mut input, 1, 1, true);
    input.extend_from_slice(&[1, 4, 0, 1, 0, 1, 0, 0, 5]);
    let mut arena = None;
    let mut conns: Vec<Connection> = Vec::new();
    let mut out = Vec::new();
    // The arena's first block, made by the first receive, is not what is measured.
    let mut warm = Connection::new(Limits::default());
    warm.swap_params_arena(&mut arena);
    warm.receive(&nginx_request(), &mut out, &mut |_| {})
        .unwrap();
    warm.swap_params_arena(&mut arena);
    let before = bytes_allocated();
    for _ in 0..256 {
        let mut conn = Connection::new(Limits::default());
        conn.swap_params_arena(&mut arena);
        conn.receive(&input, &mut out, &mut |event| {
            panic!("no request completes: {event:?}")
        })
        .unwrap();
        conn.swap_params_arena(&mut arena);
        conns.push(conn);
    }
    let made = bytes_allocated() - before;
    assert!(
        made < 256 * 1024,
        "{made} bytes allocated for 256 connections' {} bytes of input each",
        input.len()
    );
    // The arena still serves a whole request on a connection of its own, which allocates
    // nothing for it: the params go to the lent arena, the request lies in the connection.
    let mut conn = Connection::new(Limits::default());
    conn.swap_params_arena(&mut arena);
    out.clear();
    assert_eq!(
        receive_allocations(&mut conn, &nginx_request(), &mut out),
        0
    );
}
