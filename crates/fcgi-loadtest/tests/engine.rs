//! The real engine against small fake servers on 127.0.0.1 (each run about a second).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use fcgi_loadtest::stats::Report;
use fcgi_loadtest::{Config, Protocol, run};
use fcgi_proto::ProtocolStatus;
use fcgi_proto::nv::encode_pair;
use fcgi_proto::record::{
    HEADER_LEN, Header, RecordType, encode_end_request, encode_record, encode_stream,
    encode_stream_end,
};

#[derive(Clone, Copy)]
struct FakeFcgi {
    /// The CGI response (STDOUT) every request gets.
    stdout: &'static [u8],
    /// FCGI_MPXS_CONNS answered to GET_VALUES; `None`: GET_VALUES gets no answer.
    mpxs: Option<&'static [u8]>,
}

const HELLO: &[u8] = b"Content-Type: text/plain\r\n\r\nHello, World!";

/// Starts a fake FastCGI application: one thread per connection, answering each request when
/// its STDIN ends, closing after END_REQUEST unless KEEP_CONN was set.
fn fake_fcgi(fake: FakeFcgi) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_fcgi(stream, fake));
        }
    });
    addr
}

fn serve_fcgi(mut stream: impl Read + Write, fake: FakeFcgi) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut keep = [false; 65536];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        let mut close = false;
        let mut at = 0;
        while buf.len() - at >= HEADER_LEN {
            let h = Header::parse(buf[at..at + HEADER_LEN].try_into().unwrap());
            let end = at + HEADER_LEN + h.body_len();
            if end > buf.len() {
                break;
            }
            let content = &buf[at + HEADER_LEN..at + HEADER_LEN + h.content_length as usize];
            let id = h.request_id;
            match h.known_type() {
                Some(RecordType::BeginRequest) => keep[id as usize] = content[2] & 1 != 0,
                Some(RecordType::Stdin) if content.is_empty() => {
                    encode_stream(&mut out, RecordType::Stdout, id, fake.stdout);
                    encode_stream_end(&mut out, RecordType::Stdout, id);
                    encode_end_request(&mut out, id, 0, ProtocolStatus::RequestComplete);
                    close |= !keep[id as usize];
                }
                Some(RecordType::GetValues) => {
                    if let Some(mpxs) = fake.mpxs {
                        let mut pairs = Vec::new();
                        encode_pair(&mut pairs, b"FCGI_MPXS_CONNS", mpxs);
                        encode_record(&mut out, RecordType::GetValuesResult, 0, &pairs);
                    }
                }
                _ => {}
            }
            at = end;
        }
        buf.drain(..at);
        if stream.write_all(&out).is_err() || close {
            return;
        }
    }
}

/// Starts a fake HTTP/1.1 server answering every request (no body) with `response`.
fn fake_http(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_http(stream, response));
        }
    });
    addr
}

fn serve_http(mut stream: TcpStream, response: &[u8]) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            out.extend_from_slice(response);
        }
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

fn config(protocol: Protocol, addr: SocketAddr) -> Config {
    let mut cfg = Config::new(protocol, addr.into_addr(), "/hello");
    cfg.duration = Duration::from_secs(1);
    cfg.warmup = Duration::from_millis(200);
    cfg.expect_body = Some("Hello, World!".into());
    cfg
}

trait IntoAddr {
    fn into_addr(self) -> fcgi_uring::Addr;
}

impl IntoAddr for SocketAddr {
    fn into_addr(self) -> fcgi_uring::Addr {
        fcgi_uring::Addr::Tcp(self)
    }
}

fn assert_clean(r: &Report) {
    assert!(r.requests > 0, "no requests: {}", r.to_text());
    assert_eq!(r.errors, 0, "{}", r.to_text());
    assert!(r.p50_us > 0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
}

const MPXS: FakeFcgi = FakeFcgi {
    stdout: HELLO,
    mpxs: Some(b"1"),
};

#[test]
fn fastcgi_depth_1() {
    let mut cfg = config(Protocol::Fastcgi, fake_fcgi(MPXS));
    cfg.conns = 4;
    cfg.threads = 2;
    let r = run(&cfg).unwrap();
    assert_clean(&r);
    assert_eq!((r.conns, r.depth, r.threads), (4, 1, 2));
}

#[test]
fn fastcgi_depth_4_multiplexed() {
    let mut cfg = config(Protocol::Fastcgi, fake_fcgi(MPXS));
    cfg.conns = 2;
    cfg.depth = 4;
    assert_clean(&run(&cfg).unwrap());
}

#[test]
fn fastcgi_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("fcgi-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_fcgi(stream, MPXS));
        }
    });
    let mut cfg = config(Protocol::Fastcgi, "127.0.0.1:1".parse().unwrap());
    cfg.addr = format!("unix:{}", path.display()).parse().unwrap();
    cfg.conns = 2;
    cfg.depth = 2;
    let r = run(&cfg).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_clean(&r);
    assert!(r.addr.starts_with("unix:"));
}

#[test]
fn fastcgi_post_body() {
    let mut cfg = config(Protocol::Fastcgi, fake_fcgi(MPXS));
    cfg.body_bytes = 100_000; // Two STDIN records.
    assert_clean(&run(&cfg).unwrap());
}

#[test]
fn fastcgi_connection_per_request() {
    let mut cfg = config(Protocol::Fastcgi, fake_fcgi(MPXS));
    cfg.keep_conn = false;
    cfg.conns = 2;
    assert_clean(&run(&cfg).unwrap());
}

#[test]
fn fastcgi_status_500_counts_as_errors() {
    let fake = FakeFcgi {
        stdout: b"Status: 500 Internal Server Error\r\n\r\nHello, World!",
        mpxs: Some(b"1"),
    };
    let r = run(&config(Protocol::Fastcgi, fake_fcgi(fake))).unwrap();
    assert_eq!(r.requests, 0);
    assert!(r.errors_by_kind.status > 0);
    assert_eq!(r.errors, r.errors_by_kind.status);
}

#[test]
fn fastcgi_wrong_body_counts_as_errors() {
    let mut cfg = config(Protocol::Fastcgi, fake_fcgi(MPXS));
    cfg.expect_body = Some("Goodbye".into());
    let r = run(&cfg).unwrap();
    assert_eq!(r.requests, 0);
    assert!(r.errors_by_kind.body > 0);
}

#[test]
fn fastcgi_depth_refused_without_multiplexing() {
    for mpxs in [Some(&b"0"[..]), None] {
        let fake = FakeFcgi {
            stdout: HELLO,
            mpxs,
        };
        let mut cfg = config(Protocol::Fastcgi, fake_fcgi(fake));
        cfg.depth = 4;
        let err = run(&cfg).unwrap_err();
        assert!(err.contains("FCGI_MPXS_CONNS"), "{err}");
    }
}

#[test]
fn connect_failures_are_counted() {
    // A port nothing listens on, below the ephemeral range so no other test's bind(:0) takes it.
    let addr = SocketAddr::from(([127, 0, 0, 1], fcgi_loadtest::child::free_port().unwrap()));
    let mut cfg = config(Protocol::Fastcgi, addr);
    cfg.duration = Duration::from_millis(300);
    let r = run(&cfg).unwrap();
    assert_eq!(r.requests, 0);
    assert!(r.errors_by_kind.connect > 0, "{}", r.to_text());
}

#[test]
fn open_loop_keeps_the_rate() {
    let mut cfg = config(Protocol::Fastcgi, fake_fcgi(MPXS));
    cfg.conns = 2;
    cfg.rate = Some(500.0);
    let r = run(&cfg).unwrap();
    assert_eq!(r.errors, 0);
    // 500 requests due in the 1 s window.
    assert!((400..=600).contains(&r.requests), "{}", r.to_text());
}

#[test]
fn server_cpu_per_request() {
    let mut cfg = config(Protocol::Fastcgi, fake_fcgi(MPXS));
    // The fake server runs in this process.
    cfg.server_pid = Some(std::process::id());
    let r = run(&cfg).unwrap();
    assert_clean(&r);
    assert!(r.server_cpu_s.is_some());
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert!(v["server_cpu_us_per_req"].as_f64().is_some());
    for key in [
        "rps",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "requests",
        "errors",
        "client_cpu_pct",
        "conns",
        "depth",
        "protocol",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
}

const HTTP_OK: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

#[test]
fn http1_keep_alive_and_pipelined() {
    for depth in [1, 4] {
        let mut cfg = config(Protocol::Http1, fake_http(HTTP_OK));
        cfg.conns = 2;
        cfg.depth = depth;
        let r = run(&cfg).unwrap();
        assert_clean(&r);
        assert_eq!(r.protocol, "http1");
    }
}

#[test]
fn http1_errors_by_status() {
    let fake = fake_http(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
    let r = run(&config(Protocol::Http1, fake)).unwrap();
    assert_eq!(r.requests, 0);
    assert!(r.errors_by_kind.status > 0);
}
