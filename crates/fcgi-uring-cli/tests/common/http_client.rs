//! A minimal HTTP/1.1 client for tests through real proxies (one request per connection).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Bytes after the header block as received (before de-chunking; 0 when there was no body).
    pub raw_body_len: usize,
    /// The client side's port of the connection (what the proxy should send as REMOTE_PORT).
    pub local_port: u16,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How to send a request body.
pub enum Upload<'a> {
    None,
    Fixed(&'a [u8]),
    /// Transfer-Encoding: chunked, in chunks of this size.
    Chunked(&'a [u8], usize),
}

/// One request on a new connection (`Host: localhost` unless `headers` has a Host).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    upload: Upload<'_>,
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect to proxy");
    s.set_read_timeout(Some(super::IO_TIMEOUT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str("Host: localhost\r\n");
    }
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    match &upload {
        Upload::None => {}
        Upload::Fixed(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
        Upload::Chunked(..) => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    match upload {
        Upload::None => {}
        Upload::Fixed(b) => s.write_all(b).unwrap(),
        Upload::Chunked(b, size) => {
            for chunk in b.chunks(size.max(1)) {
                s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .unwrap();
                s.write_all(chunk).unwrap();
                s.write_all(b"\r\n").unwrap();
            }
            s.write_all(b"0\r\n\r\n").unwrap();
        }
    }
    let local_port = s.local_addr().unwrap().port();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let mut r = parse(&raw, method == "HEAD");
    r.local_port = local_port;
    r
}

/// The final response in `raw`: interim 1xx responses before it (a proxy's `100 Continue` to an
/// `Expect: 100-continue`, sent or not depending on timing) are skipped, as RFC 9110 15.2 asks of
/// a client; 101 is final.
fn parse(mut raw: &[u8], head_only: bool) -> HttpResponse {
    loop {
        let r = parse_one(raw, head_only);
        if !(100..200).contains(&r.status) || r.status == 101 {
            return r;
        }
        raw = &raw[raw.len() - r.raw_body_len..];
    }
}

fn parse_one(raw: &[u8], head_only: bool) -> HttpResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if head_only {
        Vec::new()
    } else if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    HttpResponse {
        status,
        headers,
        body,
        raw_body_len: rest.len(),
        local_port: 0,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .expect("chunk size");
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
