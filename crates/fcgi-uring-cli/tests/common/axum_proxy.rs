//! nginx and Apache configured as the axum guide (docs/axum.md) says, for the axum tests:
//! `nginx_site` / `apache_site` take the site's lines; everything else is as in `proxy.rs`.
#![allow(dead_code)]

use crate::common::proxy::{Proxy, apache_conf, nginx_http};

/// nginx with `site` (upstreams, `server` blocks) inside `http {}`; `{port}` in `site` is the
/// port it listens on, `{params}` the stock fastcgi_params file.
pub fn nginx_site(site: &str) -> Option<Proxy> {
    let site = site.replace("{params}", "/etc/nginx/fastcgi_params");
    nginx_http(&format!(
        "    types {{ text/html html; text/css css; application/javascript js; }}\n{site}"
    ))
}

/// Apache httpd (one process) with mod_proxy_fcgi and `site` as its last lines.
pub fn apache_site(site: &str) -> Option<Proxy> {
    let m = "/usr/lib/apache2/modules";
    apache_conf(&format!(
        "LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule proxy_module {m}/mod_proxy.so
LoadModule proxy_fcgi_module {m}/mod_proxy_fcgi.so
LoadModule setenvif_module {m}/mod_setenvif.so
Timeout 20
{site}"
    ))
}
