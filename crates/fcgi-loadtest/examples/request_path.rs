//! The worker's request path without IO, for callgrind: `request_path WORKLOAD ROUNDS` runs
//! 64 warm-up receives, then ROUNDS receives of WORKLOAD (`hello`, `hello16`, `echo64k`; see
//! `tests/support/request_path.rs`) through `fcgi_uring::bench::Harness` with the demo app,
//! and prints the requests and allocations of the measured rounds (`run_rounds`; the warm-up
//! runs outside it, so callgrind's `--toggle-collect` counts the measured rounds only).
//!
//! Instructions per request, counted in the measured rounds only:
//!
//! ```sh
//! cargo build --release -p fcgi-loadtest --example request_path
//! valgrind --tool=callgrind --toggle-collect='*run_rounds*' --callgrind-out-file=/tmp/rp.out \
//!     target/release/examples/request_path hello 2000
//! callgrind_annotate /tmp/rp.out | head -30   # PROGRAM TOTALS / requests
//! ```

#[path = "../tests/support/request_path.rs"]
mod support;

use support::{Counting, Workload, allocations, demo_worker, run_rounds};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "hello".to_owned());
    let Some(workload) = Workload::parse(&name) else {
        eprintln!("request_path: unknown workload {name:?} (hello, hello16, echo64k)");
        std::process::exit(2);
    };
    let rounds: u64 = match args.next().map(|a| a.parse()) {
        None => 1000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("request_path: rounds: {e}");
            std::process::exit(2);
        }
    };
    let (input, per_round) = workload.input();
    let mut worker = demo_worker();
    warm_up(&mut worker, &input);
    let before = allocations();
    let last = run_rounds(&mut worker, &input, rounds);
    let allocs = allocations() - before;
    let requests = rounds * per_round;
    println!(
        "workload={name} requests={requests} allocations={allocs} per_request={:.2} last_output_bytes={}",
        allocs as f64 / requests.max(1) as f64,
        last.len()
    );
}

/// The first rounds (first allocations of the connection, the arena, the handler slot), kept
/// out of `run_rounds` so that they are not counted.
#[inline(never)]
fn warm_up(worker: &mut fcgi_uring::bench::Harness<impl fcgi_uring::HttpService>, input: &[u8]) {
    let mut out = Vec::new();
    for _ in 0..64 {
        out.clear();
        worker.round(input, &mut out);
    }
}
