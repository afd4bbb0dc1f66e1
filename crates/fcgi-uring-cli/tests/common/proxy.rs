//! Real proxies started as the test's own processes, with configs in a temporary directory.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// A free loopback port for a process the test starts (a proxy, a server given an address),
/// below the kernel's ephemeral range: see [`fcgi_loadtest::child::free_port`].
pub fn free_port() -> u16 {
    fcgi_loadtest::child::free_port().unwrap_or_else(|e| panic!("{e}"))
}

/// A child process killed when dropped.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// Spawns `cmd` and waits until the proxy answers on `addr`: a connection the kernel
    /// accepted is not enough (a proxy that fails its start after binding, or another
    /// listener, would pass that), so the proxy must answer a malformed request itself.
    pub fn spawn(mut cmd: Command, addr: SocketAddr, dir: tempfile::TempDir) -> Proxy {
        cmd.stdin(Stdio::null());
        let child = cmd.spawn().expect("start proxy");
        let mut proxy = Proxy { child, addr, dir };
        let answering = super::holds_within(super::HANG_GUARD, || answers(addr));
        let exited = proxy.child.try_wait().ok().flatten();
        assert!(
            answering && exited.is_none(),
            "proxy did not answer on {addr} (exited: {exited:?}); log: {}",
            proxy.log()
        );
        proxy
    }

    /// The proxy's error log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// Whether an HTTP server on `addr` answers a malformed request line (with its own 400; no
/// proxy forwards it to the backend).
fn answers(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let mut byte = [0u8; 1];
    s.set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .is_ok()
        && s.write_all(b"NOT A REQUEST\r\n\r\n").is_ok()
        && matches!(s.read(&mut byte), Ok(1))
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
    let params = fastcgi_params_path().display();
    nginx_http(&format!(
        r#"    client_max_body_size 64m;
    upstream app {{
        server {backend};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{{port}};
        server_name localhost;
        location / {{
            include {params};
            fastcgi_pass app;
            fastcgi_keep_conn on;
        }}
    }}"#
    ))
}

/// nginx (one process, in the foreground, its files in a temporary directory) with `lines`
/// inside `http {}`; `{port}` in `lines` is the port it listens on.
pub fn nginx_http(lines: &str) -> Option<Proxy> {
    let bin = find_binary("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"])?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let lines = lines.replace("{port}", &port.to_string());
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
{lines}
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

/// A backend address as the tests pass it: `127.0.0.1:PORT` or `unix:/path`.
enum Backend<'a> {
    Tcp { host: &'a str, port: &'a str },
    Unix(&'a str),
}

fn backend(spec: &str) -> Backend<'_> {
    match spec.strip_prefix("unix:") {
        Some(path) => Backend::Unix(path),
        None => {
            let (host, port) = spec.rsplit_once(':').expect("host:port");
            Backend::Tcp { host, port }
        }
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Apache httpd (mpm_event, one process: `-X`) with mod_proxy_fcgi in front of `backend`,
/// `enablereuse=on`. `extra` is added inside the server config (used by the AUTHORIZER test).
pub fn apache(backend_spec: &str) -> Option<Proxy> {
    apache_with(backend_spec, "")
}

pub fn apache_with(backend_spec: &str, extra: &str) -> Option<Proxy> {
    let m = "/usr/lib/apache2/modules";
    let target = match backend(backend_spec) {
        Backend::Tcp { host, port } => format!("fcgi://{host}:{port}/"),
        Backend::Unix(path) => format!("unix:{path}|fcgi://localhost/"),
    };
    apache_conf(&format!(
        r#"LoadModule authn_core_module {m}/mod_authn_core.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule auth_basic_module {m}/mod_auth_basic.so
LoadModule authnz_fcgi_module {m}/mod_authnz_fcgi.so
LoadModule proxy_module {m}/mod_proxy.so
LoadModule proxy_fcgi_module {m}/mod_proxy_fcgi.so
ThreadLimit 200
ThreadsPerChild 200
MaxRequestWorkers 200
Timeout 20
{extra}
ProxyPass "/" "{target}" enablereuse=on"#
    ))
}

/// Apache httpd (mpm_event, one process: `-X`, its files in a temporary directory) with `lines`
/// (modules to load, the site) after its server settings.
pub fn apache_conf(lines: &str) -> Option<Proxy> {
    let bin = find_binary("apache2", &["/usr/sbin/apache2", "/usr/sbin/httpd"])?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let m = "/usr/lib/apache2/modules";
    // Apache refuses to serve requests as root: its (single) process switches to www-data.
    let user = if is_root() {
        "User www-data\nGroup www-data\n"
    } else {
        ""
    };
    let conf = format!(
        r#"ServerRoot "{d}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {d}/httpd.pid
DefaultRuntimeDir {d}
Mutex file:{d} default
ErrorLog {d}/error.log
LogLevel warn
{user}LoadModule mpm_event_module {m}/mod_mpm_event.so
{lines}
"#
    );
    let conf_path = dir.path().join("httpd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-X").arg("-f").arg(&conf_path);
    Some(Proxy::spawn(
        cmd,
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    ))
}

/// HAProxy (`-db`: foreground) with an `fcgi-app` that multiplexes: `option keep-conn`,
/// `option get-values`, `option mpxs-conns`, `option max-reqs 100`, `http-reuse always`.
pub fn haproxy(backend_spec: &str) -> Option<Proxy> {
    haproxy_with(backend_spec, "")
}

/// [`haproxy`] with `extra` lines in the backend section.
pub fn haproxy_with(backend_spec: &str, extra: &str) -> Option<Proxy> {
    haproxy_fcgi_app(backend_spec, MULTIPLEXING, extra)
}

/// The `fcgi-app` options that make HAProxy multiplex requests on its backend connections.
pub const MULTIPLEXING: &str =
    "    option get-values\n    option mpxs-conns\n    option max-reqs 100\n";

/// HAProxy with `option keep-conn` and the `fcgi-app` options `app_options` (e.g.
/// [`MULTIPLEXING`], or none: one request at a time per connection), then `extra` in the backend.
pub fn haproxy_fcgi_app(backend_spec: &str, app_options: &str, extra: &str) -> Option<Proxy> {
    let bin = find_binary("haproxy", &["/usr/sbin/haproxy", "/usr/bin/haproxy"])?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let server = match backend(backend_spec) {
        Backend::Tcp { host, port } => format!("{host}:{port}"),
        Backend::Unix(path) => path.to_owned(),
    };
    let conf = format!(
        r#"global
    log stderr format raw local0 info
    maxconn 1024
    pidfile {d}/haproxy.pid
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 20s
    timeout server 20s
fcgi-app app
    docroot /srv
    option keep-conn
{app_options}frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    use-fcgi-app app
    http-reuse always
    server s1 {server} proto fcgi maxconn 1000
{extra}"#
    );
    let conf_path = dir.path().join("haproxy.cfg");
    std::fs::write(&conf_path, conf).unwrap();
    let log = std::fs::File::create(dir.path().join("error.log")).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-db").arg("-f").arg(&conf_path);
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    Some(Proxy::spawn(
        cmd,
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    ))
}

/// Caddy (`admin off`, `auto_https off`) with `reverse_proxy` over `transport fastcgi`. The site
/// is `http://:PORT` bound to 127.0.0.1: a site address `http://127.0.0.1:PORT` also matches on
/// the Host header, and Caddy answers any other Host (`localhost`) with an empty 200.
pub fn caddy(backend_spec: &str) -> Option<Proxy> {
    let bin = find_binary("caddy", &["/usr/bin/caddy", "/usr/local/bin/caddy"])?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let upstream = match backend(backend_spec) {
        Backend::Tcp { host, port } => format!("{host}:{port}"),
        Backend::Unix(path) => format!("unix/{path}"),
    };
    let conf = format!(
        r#"{{
    admin off
    auto_https off
    storage file_system {d}/data
    log {{
        output stderr
        level WARN
    }}
}}
http://:{port} {{
    bind 127.0.0.1
    reverse_proxy {upstream} {{
        transport fastcgi {{
            root /srv
        }}
    }}
}}
"#
    );
    let conf_path = dir.path().join("Caddyfile");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&conf_path)
        .arg("--adapter")
        .arg("caddyfile");
    cmd.env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"));
    let log = std::fs::File::create(dir.path().join("error.log")).unwrap();
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    Some(Proxy::spawn(
        cmd,
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    ))
}

/// lighttpd (`-D`: foreground) with mod_fastcgi, `check-local` off. The request body is
/// buffered (the default): with `server.stream-request-body` set, lighttpd answers a chunked
/// upload to a FastCGI backend with 411 Length Required (CGI needs CONTENT_LENGTH).
pub fn lighttpd(backend_spec: &str) -> Option<Proxy> {
    let bin = find_binary("lighttpd", &["/usr/sbin/lighttpd", "/usr/bin/lighttpd"])?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let host = match backend(backend_spec) {
        Backend::Tcp { host, port } => format!(r#""host" => "{host}", "port" => {port}"#),
        Backend::Unix(path) => format!(r#""socket" => "{path}""#),
    };
    let conf = format!(
        r#"server.modules = ("mod_fastcgi")
server.document-root = "{d}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{d}/error.log"
server.pid-file = "{d}/lighttpd.pid"
server.max-request-size = 65536
server.stream-response-body = 2
fastcgi.server = ("/" => ((
    {host},
    "check-local" => "disable",
    "max-procs" => 1
)))
"#
    );
    let conf_path = dir.path().join("lighttpd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-D").arg("-f").arg(&conf_path);
    Some(Proxy::spawn(
        cmd,
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    ))
}
