//! WebSockets cannot cross FastCGI: the WebSocket routes of an app served by fcgi-uring are
//! served by `axum::serve` on an HTTP port of the same process, and nginx sends their location
//! there with the lines docs/axum.md gives (read from that file).

#[path = "common/axum_proxy.rs"]
mod axum_proxy;
mod common;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing;
use common::*;
use fcgi_uring::Server;
use std::future::IntoFuture;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

async fn echo(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(Message::Text(text))) = socket.recv().await {
            if socket.send(Message::Text(text)).await.is_err() {
                break;
            }
        }
    })
}

fn app() -> Router {
    Router::new()
        .route("/", routing::get(|| async { "home" }))
        .route("/ws", routing::get(echo))
}

/// The `location /ws` block of docs/axum.md, for the HTTP listener at `http_backend`.
fn documented_ws_location(http_backend: &str) -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/axum.md"))
            .expect("read docs/axum.md");
    let marker = "<!-- parity: websocket -->\n```nginx\n";
    let start = doc.find(marker).expect("websocket block in docs/axum.md") + marker.len();
    let len = doc[start..].find("```").expect("end of the block");
    doc[start..start + len].replace("127.0.0.1:3000", http_backend)
}

/// Sends a WebSocket handshake for `/ws`; returns the status and, on 101, the stream.
fn handshake(addr: std::net::SocketAddr) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        // read_exact retries a read interrupted by a signal (a socket with a read timeout
        // fails with EINTR even under SA_RESTART; CI met one here).
        s.read_exact(&mut byte)
            .unwrap_or_else(|e| panic!("head cut short ({e}): {head:?}"));
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    (status, s)
}

/// One masked text frame out, its echo back.
fn echo_once(s: &mut TcpStream, text: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x81, "an unfragmented text frame");
    let mut payload = vec![0; usize::from(head[1] & 0x7f)];
    s.read_exact(&mut payload).unwrap();
    payload
}

#[test]
fn websocket_routes_go_to_an_http_listener_of_the_same_process() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let http_addr = listener.local_addr().unwrap();
    rt.spawn(axum::serve(listener, app()).into_future());
    let fcgi = Server::new(test_config()).start(app()).unwrap();

    let site = format!(
        "upstream app {{ server {}; keepalive 16; }}\n\
         server {{\n listen 127.0.0.1:{{port}};\n{}\n location / {{ include {{params}}; \
         fastcgi_pass app; fastcgi_keep_conn on; }}\n}}",
        fcgi.local_addr(),
        documented_ws_location(&http_addr.to_string())
    );
    let Some(nginx) = axum_proxy::nginx_site(&site) else {
        return;
    };
    let (status, mut ws) = handshake(nginx.addr);
    assert_eq!(status, 101, "{}", nginx.log());
    assert_eq!(echo_once(&mut ws, b"over http"), b"over http");

    // The same handshake over FastCGI is refused, as behind a proxy_pass without the upgrade
    // lines: the hop-by-hop headers never reach the app.
    let site = format!(
        "upstream app {{ server {}; }}\n\
         server {{ listen 127.0.0.1:{{port}}; location / {{ include {{params}}; fastcgi_pass app; }} }}",
        fcgi.local_addr()
    );
    let Some(nginx) = axum_proxy::nginx_site(&site) else {
        return;
    };
    let (status, _) = handshake(nginx.addr);
    assert_eq!(status, 400);
}
