//! nginx and Apache configured as the axum guide (docs/axum.md) says, for the axum tests:
//! `http_block` / `apache_conf` take the site's lines; everything else is as in `proxy.rs`.
#![allow(dead_code)]

use crate::common::proxy::{Proxy, find_binary, free_port};
use std::net::SocketAddr;
use std::process::Command;

/// nginx with `site` (upstreams, `server` blocks) inside `http {}`; `{port}` in `site` is the
/// port it listens on, `{params}` the stock fastcgi_params file.
pub fn nginx_site(site: &str) -> Option<Proxy> {
    let bin = find_binary("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"])?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let site = site
        .replace("{port}", &port.to_string())
        .replace("{params}", "/etc/nginx/fastcgi_params");
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
    types {{ text/html html; text/css css; application/javascript js; }}
{site}
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

/// Apache httpd (one process) with mod_proxy_fcgi and `site` as its last lines.
pub fn apache_site(site: &str) -> Option<Proxy> {
    let bin = find_binary("apache2", &["/usr/sbin/apache2", "/usr/sbin/httpd"])?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let m = "/usr/lib/apache2/modules";
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
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule proxy_module {m}/mod_proxy.so
LoadModule proxy_fcgi_module {m}/mod_proxy_fcgi.so
LoadModule setenvif_module {m}/mod_setenvif.so
Timeout 20
{site}
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

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
