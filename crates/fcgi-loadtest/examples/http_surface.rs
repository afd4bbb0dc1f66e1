//! What the `http::Request` / `tower::Service` surface alone costs per request, for callgrind:
//! `http_surface ROUNDS` serves ROUNDS `GET /hello` requests to the demo app (the one
//! `request_path` measures) with no protocol at all, doing only what any server that hands the
//! app an `http::Request` must do, each step as cheaply as the `http` crate allows (the steps
//! are listed in [`fcgi_loadtest::surface`]).
//!
//! It is a floor for the request path's instruction count: `request_path hello` does all of
//! this plus the FastCGI side (records, params, the connection state).
//!
//! ```sh
//! cargo build --release -p fcgi-loadtest --example http_surface
//! valgrind --tool=callgrind --toggle-collect='*run_surface*' --callgrind-out-file=/tmp/hs.out \
//!     target/release/examples/http_surface 2000
//! callgrind_annotate /tmp/hs.out | head -30   # PROGRAM TOTALS / 2000
//! ```

use fcgi_loadtest::surface::Surface;
use fcgi_uring::HttpService;

#[global_allocator]
static GLOBAL: fcgi_uring::alloc::MiMalloc = fcgi_uring::alloc::MiMalloc;

fn main() {
    let rounds: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("http_surface: rounds: {e}");
            std::process::exit(2);
        }
    };
    let mut state = Surface::new(fcgi_uring::service_fn(fcgi_uring_cli::demo::app));
    // Warm-up: the first requests allocate the maps and buffers the later ones reuse.
    let mut out = Vec::with_capacity(4096);
    for _ in 0..64 {
        out.clear();
        state.serve(&mut out);
    }
    let last = run_surface(&mut state, rounds);
    println!(
        "requests={rounds} last_output_bytes={} last_output={:?}",
        last.len(),
        String::from_utf8_lossy(&last)
    );
}

/// Serves `rounds` requests; returns the output of the last.
#[inline(never)]
fn run_surface<S: HttpService<ResBody = fcgi_uring_cli::demo::DemoBody>>(
    state: &mut Surface<S>,
    rounds: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    for _ in 0..rounds {
        out.clear();
        state.serve(std::hint::black_box(&mut out));
    }
    out
}
