//! Real proxies started as the test's own processes, with configs in a temporary directory.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The proxy binary, or `None` to skip outside CI. In CI (`CI=true`) a missing proxy fails the
/// test: it never silently skips there.
pub fn find_binary(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let found = candidates.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "{name} is required in CI but was not found at {candidates:?} (.ci/run installs it)"
            );
        }
        eprintln!("SKIPPED: {name} not installed (install it or run .ci/run)");
    }
    found
}

/// A free loopback port (bound and released; the tiny race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// Spawns `cmd` and waits until `addr` accepts connections.
    pub fn spawn(mut cmd: Command, addr: SocketAddr, dir: tempfile::TempDir) -> Proxy {
        cmd.stdin(Stdio::null());
        let child = cmd.spawn().expect("start proxy");
        let proxy = Proxy { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "proxy did not listen on {addr}; log: {}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// The proxy's error log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx in front of `backend` (`127.0.0.1:PORT` or `unix:/path`), with upstream keepalive and
/// `fastcgi_keep_conn on`, as README documents.
pub fn nginx(backend: &str) -> Option<Proxy> {
    let bin = find_binary("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"])?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let params = fastcgi_params_path().display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
    upstream app {{
        server {backend};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include {params};
            fastcgi_pass app;
            fastcgi_keep_conn on;
        }}
    }}
}}
"#
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf_path);
    cmd.arg("-e").arg(dir.path().join("error.log"));
    Some(Proxy::spawn(
        cmd,
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    ))
}

fn fastcgi_params_path() -> &'static Path {
    Path::new("/etc/nginx/fastcgi_params")
}
