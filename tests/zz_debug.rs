mod common;
use common::http_client::{request, Upload};
#[test]
fn dbg() {
    let s = common::app::start_tcp();
    let p = common::proxy::haproxy(&s.local_addr().to_string()).unwrap();
    for size in [1000usize, 10_000, 15_000, 20_000, 300_000] {
        let body = vec![b'x'; size];
        let r = request(p.addr, "POST", "/echo", &[], Upload::Chunked(&body, 7000));
        eprintln!("chunked {size}: {} len {}", r.status, r.body.len());
    }
}
