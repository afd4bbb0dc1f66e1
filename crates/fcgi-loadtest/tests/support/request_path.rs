//! Shared by the allocation test and the `request_path` example: a global allocator that counts
//! allocations, and recorded requests driven through the worker's request path without IO
//! ([`fcgi_uring::bench::Harness`]).

use fcgi_loadtest::fcgi::nginx_request;
use fcgi_uring::bench::Harness;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

/// Counts allocations (including reallocations) per thread and passes them on to
/// `fcgi_uring::alloc::MiMalloc`, the allocator of the `fcgi-uring` binary.
pub struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|n| n.set(n.get() + 1));
}

/// Allocations and reallocations so far on this thread (the harness runs on one thread; the
/// test runner's own threads are not counted).
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards to mimalloc's `GlobalAlloc` with the caller's arguments, so
// mimalloc's guarantees are this allocator's; the counter has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { fcgi_uring::alloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on unchanged.
        unsafe { fcgi_uring::alloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from mimalloc, with `layout`.
        unsafe { fcgi_uring::alloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from mimalloc with `layout`; the caller's contract is passed on.
        unsafe { fcgi_uring::alloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// The recorded workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // each user picks some
pub enum Workload {
    /// `GET /hello` as `fcgi-loadtest` sends it (nginx's params), one request per receive.
    Hello,
    /// 16 multiplexed `GET /hello` (ids 1..=16) in one receive.
    Hello16,
    /// `POST /echo` with a 64 KiB body, one request per receive.
    Echo64k,
}

impl Workload {
    #[allow(dead_code)]
    pub fn parse(name: &str) -> Option<Workload> {
        Some(match name {
            "hello" => Workload::Hello,
            "hello16" => Workload::Hello16,
            "echo64k" => Workload::Echo64k,
            _ => return None,
        })
    }

    /// The bytes of one receive and how many requests they hold.
    pub fn input(self) -> (Vec<u8>, u64) {
        let host = "127.0.0.1:9000";
        let mut bytes = Vec::new();
        match self {
            Workload::Hello => {
                nginx_request("GET", "/hello", host, b"", true).append(&mut bytes, 1);
                (bytes, 1)
            }
            Workload::Hello16 => {
                let t = nginx_request("GET", "/hello", host, b"", true);
                for id in 1..=16 {
                    t.append(&mut bytes, id);
                }
                (bytes, 16)
            }
            Workload::Echo64k => {
                let body = vec![b'x'; 64 * 1024];
                nginx_request("POST", "/echo", host, &body, true).append(&mut bytes, 1);
                (bytes, 1)
            }
        }
    }

    /// The response body each request gets.
    #[allow(dead_code)]
    pub fn answer(self) -> Vec<u8> {
        match self {
            Workload::Hello | Workload::Hello16 => b"Hello, World!".to_vec(),
            Workload::Echo64k => vec![b'x'; 64 * 1024],
        }
    }
}

/// A worker serving the demo app (`fcgi-uring serve`'s) through `service_fn`.
pub fn demo_worker() -> Harness<impl fcgi_uring::HttpService> {
    Harness::new(fcgi_uring::service_fn(fcgi_uring_cli::demo::app))
}

/// Runs `rounds` receives of `input`; returns the bytes sent in the last one.
#[inline(never)]
pub fn run_rounds(
    worker: &mut Harness<impl fcgi_uring::HttpService>,
    input: &[u8],
    rounds: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 << 17);
    for _ in 0..rounds {
        out.clear();
        worker.round(std::hint::black_box(input), &mut out);
    }
    out
}
