//! One realistic axum app (`common/axum_app.rs`) behind the same nginx twice: `axum::serve`
//! with `proxy_pass`, and fcgi-uring with `fastcgi_pass`, each with the configuration
//! docs/axum.md gives (read from that file). The same requests go to both; status, headers
//! (except `Date`) and bodies must be identical, except the inherent differences listed in
//! [`DIFFERENCES`] (and in docs/axum.md), each of which must still show.

#[path = "common/axum_app.rs"]
mod axum_app;
#[path = "common/axum_proxy.rs"]
mod axum_proxy;
mod common;

use common::http_client::{HttpResponse, Upload, request};
use common::proxy::Proxy;
use common::*;
use fcgi_uring::Server;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;

/// The nginx block of docs/axum.md that follows `<!-- parity: NAME -->`, made to run here:
/// the backend address, a free port, the stock fastcgi_params path.
fn documented_site(name: &str, backend: &str) -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/axum.md"))
            .expect("read docs/axum.md");
    let marker = format!("<!-- parity: {name} -->\n```nginx\n");
    let start = doc.find(&marker).expect("parity marker in docs/axum.md") + marker.len();
    let len = doc[start..].find("```").expect("end of the nginx block");
    let site = &doc[start..start + len];
    let documented_backend = if name == "http" {
        "127.0.0.1:3000"
    } else {
        "127.0.0.1:9000"
    };
    assert!(site.contains(documented_backend) && site.contains("listen 80;"));
    site.replace(documented_backend, backend)
        .replace("listen 80;", "listen 127.0.0.1:{port};")
        .replace("include fastcgi_params;", "include {params};")
}

/// One request of the comparison.
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

enum Body {
    None,
    Fixed(Vec<u8>),
    Chunked(Vec<u8>),
}

impl Req {
    fn new(method: &'static str, path: &str) -> Req {
        Req {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Body::None,
        }
    }

    fn get(path: &str) -> Req {
        Req::new("GET", path)
    }

    fn header(mut self, name: &'static str, value: &str) -> Req {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn body(mut self, content_type: &str, body: Vec<u8>) -> Req {
        self.body = Body::Fixed(body);
        self.header("Content-Type", content_type)
    }

    /// `METHOD /path`, the headers it sends (values cut at 40 characters) and the size of its
    /// body, if any.
    fn label(&self) -> String {
        let mut label = format!("{} {}", self.method, self.path);
        let names: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.chars().take(40).collect::<String>()))
            .collect();
        if !names.is_empty() {
            label += &format!(" [{}]", names.join(", "));
        }
        match &self.body {
            Body::None => {}
            Body::Fixed(b) => label += &format!(" {} bytes", b.len()),
            Body::Chunked(b) => label += &format!(" {} bytes chunked", b.len()),
        }
        label
    }

    fn send(&self, proxy: &Proxy) -> HttpResponse {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (*n, &v[..])).collect();
        let upload = match &self.body {
            Body::None => Upload::None,
            Body::Fixed(b) => Upload::Fixed(b),
            Body::Chunked(b) => Upload::Chunked(b, 16 << 10),
        };
        request(proxy.addr, self.method, &self.path, &headers, upload)
    }
}

/// What is compared: status, headers but `Date` (sorted: the order of distinct names is not
/// part of HTTP), body. A gzip body is compared decompressed: where the compressor flushes
/// depends on how the file's chunks arrive, which differs from run to run even on one server.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn answer(r: HttpResponse) -> Answer {
    let mut headers: Vec<(String, String)> = r
        .headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .filter(|(n, _)| n != "date")
        .collect();
    // Stable: several values of one name (Set-Cookie) keep their order.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let gzip = headers
        .iter()
        .any(|(n, v)| n == "content-encoding" && v == "gzip");
    let body = if gzip { gunzip(&r.body) } else { r.body };
    Answer {
        status: r.status,
        headers,
        body,
    }
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a valid gzip body");
    out
}

/// An inherent difference (docs/axum.md lists them too): the request, why, and what the two
/// answers must then be (checked, so that the list stays true).
struct Difference {
    label: &'static str,
    why: &'static str,
    holds: fn(http: &Answer, fcgi: &Answer) -> bool,
}

const DIFFERENCES: &[Difference] = &[Difference {
    label: "POST /echo [Content-Type: application/octet-stream] 7340032 bytes",
    why: "a body over the app's limit: hyper answers 413 before reading it and closes the \
          connection, so nginx, still sending the body, may answer 502 instead; over FastCGI \
          the 413 always arrives",
    holds: |http, fcgi| fcgi.status == 413 && matches!(http.status, 413 | 502),
}];

fn multipart(boundary: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nholiday\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend((0..5 << 20).map(axum_app::big_byte));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

fn requests(last_modified: &str) -> Vec<Req> {
    let boundary = "parity-boundary-7d3f";
    let json = "application/json";
    vec![
        Req::get("/"),
        Req::get("/greet/world"),
        Req::get("/greet/%C3%A9t%C3%A9"),
        Req::get("/api/users/7"),
        Req::get("/api/users/7/posts/hello-world"),
        Req::get("/api/users/not-a-number"),
        Req::new("POST", "/api/users").body(json, br#"{"name":"ann"}"#.to_vec()),
        Req::new("POST", "/api/users").body(json, b"{not json".to_vec()),
        Req::new("POST", "/api/users").body("text/plain", b"ann".to_vec()),
        Req::get("/api/hits"),
        Req::get("/api/hits?again"),
        Req::get("/api/missing"),
        Req::get("/missing"),
        Req::get("/search?q=rust&page=2"),
        Req::get("/search?q=a%20b&x=%26"),
        Req::new("POST", "/form").body(
            "application/x-www-form-urlencoded",
            b"name=ann+lee&city=K%C3%B6ln".to_vec(),
        ),
        Req::new("POST", "/upload").body(
            &format!("multipart/form-data; boundary={boundary}"),
            multipart(boundary),
        ),
        Req::new("POST", "/echo").body("application/octet-stream", vec![b'x'; 7 << 20]),
        Req::new("POST", "/echo")
            .body("text/plain", b"expecting".to_vec())
            .header("Expect", "100-continue"),
        Req {
            body: Body::Chunked((0..1 << 20).map(axum_app::big_byte).collect()),
            ..Req::new("POST", "/echo").header("Content-Type", "application/octet-stream")
        },
        Req::get("/download/10"),
        Req::get("/download/10").header("Accept-Encoding", "gzip"),
        Req::new("HEAD", "/download/10"),
        Req::get("/stream/10"),
        Req::new("HEAD", "/stream/10"),
        Req::get("/events"),
        Req::get("/cookies/set"),
        Req::get("/cookies").header("Cookie", "theme=dark; session=abc123"),
        Req::get("/old"),
        Req::get("/elsewhere"),
        Req::get("/slow"),
        Req::get("/ip"),
        Req::get("/headers")
            .header("Accept", "*/*")
            .header("X-Forwarded-For", "203.0.113.66")
            .header("X-Real-IP", "203.0.113.66")
            .header("X-Forwarded-Proto", "https")
            .header("TE", "trailers")
            .header("Upgrade", "websocket"),
        Req::get("/no-content"),
        Req::get("/server-header"),
        Req::get("/static/style.css"),
        Req::get("/static/style.css").header("Accept-Encoding", "gzip"),
        Req::get("/static/style.css").header("If-Modified-Since", last_modified),
        Req::get("/static/style.css").header("Range", "bytes=0-99"),
        Req::new("HEAD", "/static/style.css"),
        Req::get("/static/"),
        Req::get("/static/missing.txt"),
        Req::new("OPTIONS", "/api/users")
            .header("Origin", axum_app::ALLOWED_ORIGIN)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type"),
        Req::get("/api/users/1").header("Origin", axum_app::ALLOWED_ORIGIN),
        Req::get("/").header("X-Block", "1"),
        Req::new("HEAD", "/"),
        Req::new("HEAD", "/api/users/7"),
        Req::new("PUT", "/api/users/7").body(json, b"{}".to_vec()),
        Req::new("DELETE", "/greet/world"),
        Req::get("/greet/world/"),
        Req::get("/api/users/7%2F8"),
        Req::get("/search?tag=a&tag=b"),
        Req::get("/search?q=%ZZ"),
        Req::new("POST", "/form").body("text/plain", b"name=ann".to_vec()),
        Req::new("POST", "/upload").body("multipart/form-data", b"no boundary".to_vec()),
        Req::get("/cookies")
            .header("Cookie", "a=1")
            .header("Cookie", "b=2"),
        Req::get("/static"),
        Req::new("HEAD", "/static/"),
        Req::get("/static/index.html").header("If-None-Match", "\"nope\""),
        Req::get("/static/style.css").header("Range", "bytes=999999-"),
        Req::get("/static/style.css").header("If-Modified-Since", "not a date"),
        Req::new("OPTIONS", "/api/users")
            .header("Origin", "https://evil.example")
            .header("Access-Control-Request-Method", "POST"),
        Req::get("/download/1").header("Accept-Encoding", "br;q=1, gzip;q=0.5"),
        Req::get("/events").header("Accept-Encoding", "gzip"),
        Req::get("/headers").header("X-Long", &"v".repeat(6000)),
    ]
}

fn static_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>static</title>",
    )
    .unwrap();
    let css: String = (0..4000)
        .map(|i| format!(".c{i} {{ color: #{:06x}; }}\n", i * 97))
        .collect();
    std::fs::write(dir.path().join("style.css"), css).unwrap();
    dir
}

#[test]
fn the_same_app_answers_the_same_over_http_and_fastcgi() {
    let files = static_files();

    // axum::serve, as the app ran before the switch.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let http_addr = listener.local_addr().unwrap();
    rt.spawn(
        axum::serve(
            listener,
            axum_app::app(files.path()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .into_future(),
    );
    // fcgi-uring, after the switch: the same Router, cloned per worker.
    let config = test_config().into_builder().workers(2).build().unwrap();
    let fcgi = Server::new(config)
        .start(axum_app::app(files.path()))
        .unwrap();

    let Some(over_http) = axum_proxy::nginx_site(&documented_site("http", &http_addr.to_string()))
    else {
        return;
    };
    let Some(over_fcgi) =
        axum_proxy::nginx_site(&documented_site("fastcgi", &fcgi.local_addr().to_string()))
    else {
        return;
    };

    let probe = Req::get("/static/style.css").send(&over_http);
    let last_modified = probe
        .header("last-modified")
        .expect("ServeDir sends Last-Modified")
        .to_owned();
    let requests = requests(&last_modified);
    let mut labels: Vec<String> = requests.iter().map(Req::label).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(
        labels.len(),
        requests.len(),
        "every request has its own label"
    );
    let mut same = 0;
    let mut report = Vec::new();
    for req in requests {
        let http = answer(req.send(&over_http));
        let fcgi = answer(req.send(&over_fcgi));
        let label = req.label();
        match DIFFERENCES.iter().find(|d| d.label == label) {
            None if http == fcgi => same += 1,
            None => report.push(describe(&label, &http, &fcgi)),
            Some(d) if (d.holds)(&http, &fcgi) => {}
            Some(d) => report.push(format!(
                "{} (documented: {}):{}",
                label,
                d.why,
                describe("", &http, &fcgi)
            )),
        }
    }
    assert!(
        report.is_empty(),
        "{} answers identical; differences:\n{}\nnginx (http) log: {}\nnginx (fastcgi) log: {}",
        same,
        report.join("\n"),
        over_http.log(),
        over_fcgi.log()
    );
}

fn describe(label: &str, http: &Answer, fcgi: &Answer) -> String {
    let mut out = format!("{label}:");
    if http.status != fcgi.status {
        out += &format!(" status {} vs {}", http.status, fcgi.status);
    }
    if http.headers != fcgi.headers {
        out += &format!(
            "\n  http headers:   {:?}\n  fastcgi headers: {:?}",
            http.headers, fcgi.headers
        );
    }
    if http.body != fcgi.body {
        let show = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
        out += &format!(
            "\n  http body ({} bytes): {:?}\n  fastcgi body ({} bytes): {:?}",
            http.body.len(),
            show(&http.body),
            fcgi.body.len(),
            show(&fcgi.body)
        );
    }
    out
}
