//! The params the proxy vouches for, apart from client headers, and the request's FastCGI role.
//!
//! Guarantees: no accessor returns the value of a param whose name starts with `HTTP_` (in any
//! letter case: `http_proxy` is refused too), so a client header such as `Proxy:` (`HTTP_PROXY`)
//! or `X-Real-IP` can never be read as a trusted setting. Duplicate params: the **last** one
//! wins, as in php-fpm; [`TrustedParams::iter`] shows them all.

use bytes::Bytes;
use std::net::IpAddr;

use fcgi_proto::{PairAt, Params, Role};

/// The request's non-`HTTP_*` params (REMOTE_ADDR, HTTPS, SERVER_NAME, SSL_*...), set by the
/// proxy itself, and its FastCGI [`Role`] (from BEGIN_REQUEST). A client header can never
/// appear here: `HTTP_*` names are refused by every accessor (so `HTTP_PROXY`, from a client's
/// `Proxy:` header, is never trusted).
///
/// It is the one extension the runtime adds to every request:
/// `req.extensions().get::<TrustedParams>()`.
#[derive(Debug, Clone)]
pub struct TrustedParams {
    params: Params,
    role: Role,
    /// Where the params read for every request are, when the request builder noted them in
    /// its pass over the params (`None`: made by [`TrustedParams::new`], looked up on demand).
    noted: Option<NotedParams>,
}

/// Where the request builder found the params read for every request (by the access log, and
/// by axum's `ConnectInfo`): each where the last pair of that name lies ([`Params::iter_at`]).
/// `referer` and `user_agent` are client headers (`HTTP_REFERER`, `HTTP_USER_AGENT`): only the
/// access log reads them through this, never a [`TrustedParams`] accessor.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NotedParams {
    pub remote: Option<PairAt>,
    pub remote_port: Option<PairAt>,
    pub referer: Option<PairAt>,
    pub user_agent: Option<PairAt>,
}

/// Whether `name` is a client header param (`HTTP_*`, any case).
fn is_client_header(name: &[u8]) -> bool {
    name.len() >= 5 && name[..5].eq_ignore_ascii_case(b"HTTP_")
}

impl TrustedParams {
    /// The params of a RESPONDER request (see [`TrustedParams::with_role`]).
    pub fn new(params: Params) -> TrustedParams {
        TrustedParams {
            params,
            role: Role::Responder,
            noted: None,
        }
    }

    /// The same params for a request of `role`.
    pub fn with_role(self, role: Role) -> TrustedParams {
        TrustedParams { role, ..self }
    }

    /// With the positions of the params read for every request already found.
    pub(crate) fn with_noted_params(
        params: Params,
        role: Role,
        noted: NotedParams,
    ) -> TrustedParams {
        TrustedParams {
            params,
            role,
            noted: Some(noted),
        }
    }

    /// The request's FastCGI role (spec 6): [`Role::Responder`] for what proxies send,
    /// [`Role::Authorizer`] or [`Role::Filter`] otherwise.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The params, and where the access log's are (for the access log only: a clone of the
    /// params is one reference count).
    pub(crate) fn for_access_log(&self) -> (Params, NotedParams) {
        let noted = self.noted.unwrap_or_else(|| {
            let last = |name: &[u8]| {
                self.params
                    .iter_at()
                    .filter(|(_, n, _)| *n == name)
                    .last()
                    .map(|(at, _, _)| at)
            };
            NotedParams {
                remote: last(b"REMOTE_ADDR"),
                remote_port: last(b"REMOTE_PORT"),
                referer: last(b"HTTP_REFERER"),
                user_agent: last(b"HTTP_USER_AGENT"),
            }
        });
        (self.params.clone(), noted)
    }

    /// The value of a param read for every request (`name`, where `noted` finds it when the
    /// request builder noted it), as the proxy sent it.
    fn noted_value(&self, name: &[u8], noted: fn(&NotedParams) -> Option<PairAt>) -> Option<&[u8]> {
        match &self.noted {
            None => self.params.get(name),
            Some(found) => noted(found)
                .and_then(|at| self.params.pair_at(at))
                .map(|(_, v)| v),
        }
    }

    /// The value of the last param `name` if it is UTF-8; `None` for any `HTTP_*` name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_raw(name.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of the last param `name` as a zero-copy slice; `None` for any `HTTP_*` name.
    pub fn get_bytes(&self, name: &str) -> Option<Bytes> {
        if is_client_header(name.as_bytes()) {
            return None;
        }
        self.params.get_bytes(name.as_bytes())
    }

    /// Every non-`HTTP_*` pair in arrival order, duplicates included.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.params.iter().filter(|(n, _)| !is_client_header(n))
    }

    fn get_raw(&self, name: &[u8]) -> Option<&[u8]> {
        if is_client_header(name) {
            return None;
        }
        self.params.get(name)
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    /// REMOTE_ADDR: the client's address as the proxy saw it (`None` when absent or not an IP,
    /// e.g. nginx's `unix:` for a UNIX-socket client).
    pub fn remote_addr(&self) -> Option<IpAddr> {
        self.noted_value(b"REMOTE_ADDR", |n| n.remote)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(parse_ip)
    }

    /// REMOTE_PORT.
    pub fn remote_port(&self) -> Option<u16> {
        self.noted_value(b"REMOTE_PORT", |n| n.remote_port)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok())
    }

    /// Whether the client reached the proxy over TLS: HTTPS is `on` or `1` (any case), or
    /// REQUEST_SCHEME is `https`.
    pub fn https(&self) -> bool {
        let https = self
            .get_raw(b"HTTPS")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"on") || v == b"1");
        https
            || self
                .get_raw(b"REQUEST_SCHEME")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"https"))
    }

    /// SERVER_NAME.
    pub fn server_name(&self) -> Option<&str> {
        self.get("SERVER_NAME")
    }

    /// SERVER_ADDR: the address the proxy accepted the client on.
    pub fn server_addr(&self) -> Option<IpAddr> {
        self.get("SERVER_ADDR").and_then(parse_ip)
    }

    /// SERVER_PORT.
    pub fn server_port(&self) -> Option<u16> {
        self.parsed("SERVER_PORT")
    }

    /// SERVER_PROTOCOL, e.g. `HTTP/1.1`.
    pub fn server_protocol(&self) -> Option<&str> {
        self.get("SERVER_PROTOCOL")
    }

    /// AUTH_TYPE, e.g. `Basic`, when the proxy authenticated the client.
    pub fn auth_type(&self) -> Option<&str> {
        self.get("AUTH_TYPE")
    }

    /// REMOTE_USER: the user the proxy authenticated (nginx sends it empty when none).
    pub fn remote_user(&self) -> Option<&str> {
        self.get("REMOTE_USER")
    }

    /// An `SSL_*` param: `ssl("CLIENT_S_DN")` reads SSL_CLIENT_S_DN (a name already starting
    /// with `SSL_` is read as is). Allocates nothing.
    pub fn ssl(&self, name: &str) -> Option<&str> {
        let name = name.strip_prefix("SSL_").unwrap_or(name).as_bytes();
        self.params
            .iter()
            .filter(|(n, _)| n.len() == 4 + name.len() && n.starts_with(b"SSL_") && &n[4..] == name)
            .last()
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// SCRIPT_NAME (decoded path of the script, CGI style).
    pub fn script_name(&self) -> Option<&str> {
        self.get("SCRIPT_NAME")
    }

    /// PATH_INFO (decoded path after the script).
    pub fn path_info(&self) -> Option<&str> {
        self.get("PATH_INFO")
    }

    /// DOCUMENT_ROOT.
    pub fn document_root(&self) -> Option<&str> {
        self.get("DOCUMENT_ROOT")
    }

    /// QUERY_STRING.
    pub fn query_string(&self) -> Option<&str> {
        self.get("QUERY_STRING")
    }
}

/// An IP address, also in brackets (`[::1]`) as some front ends write IPv6.
fn parse_ip(value: &str) -> Option<IpAddr> {
    let value = value.trim();
    let value = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(pairs: &[(&str, &str)]) -> TrustedParams {
        TrustedParams::new(Params::from_pairs(
            pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        ))
    }

    #[test]
    fn client_headers_are_never_trusted() {
        let t = trusted(&[
            ("HTTP_PROXY", "http://evil:8080"),
            ("http_proxy", "http://evil:8080"),
            ("HTTP_HOST", "example.com"),
            ("HTTP_X_REAL_IP", "6.6.6.6"),
            ("HTTP_HTTPS", "on"),
            ("REMOTE_ADDR", "10.0.0.1"),
        ]);
        assert_eq!(t.get("HTTP_PROXY"), None);
        assert_eq!(t.get("http_proxy"), None);
        assert_eq!(t.get_bytes("HTTP_PROXY"), None);
        assert_eq!(t.get("HTTP_HOST"), None);
        assert_eq!(t.get("HTTP_X_REAL_IP"), None);
        assert!(!t.https());
        assert_eq!(t.remote_addr(), Some("10.0.0.1".parse().unwrap()));
        let names: Vec<&[u8]> = t.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"REMOTE_ADDR"[..]]);
    }

    #[test]
    fn last_duplicate_wins() {
        let t = trusted(&[("REMOTE_ADDR", "10.0.0.1"), ("REMOTE_ADDR", "10.0.0.2")]);
        assert_eq!(t.remote_addr(), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(t.iter().count(), 2);
    }

    #[test]
    fn typed_accessors() {
        let t = trusted(&[
            ("REMOTE_ADDR", "2001:db8::1"),
            ("REMOTE_PORT", "51234"),
            ("SERVER_ADDR", "[::1]"),
            ("SERVER_PORT", "443"),
            ("SERVER_NAME", "example.com"),
            ("SERVER_PROTOCOL", "HTTP/2.0"),
            ("AUTH_TYPE", "Basic"),
            ("REMOTE_USER", "alice"),
            ("SSL_CLIENT_S_DN", "CN=alice"),
            ("SCRIPT_NAME", "/index.php"),
            ("PATH_INFO", "/a b"),
            ("DOCUMENT_ROOT", "/srv"),
            ("QUERY_STRING", "x=1"),
        ]);
        assert_eq!(t.remote_addr(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(t.remote_port(), Some(51234));
        assert_eq!(t.server_addr(), Some("::1".parse().unwrap()));
        assert_eq!(t.server_port(), Some(443));
        assert_eq!(t.server_name(), Some("example.com"));
        assert_eq!(t.server_protocol(), Some("HTTP/2.0"));
        assert_eq!(t.auth_type(), Some("Basic"));
        assert_eq!(t.remote_user(), Some("alice"));
        assert_eq!(t.ssl("CLIENT_S_DN"), Some("CN=alice"));
        assert_eq!(t.ssl("SSL_CLIENT_S_DN"), Some("CN=alice"));
        assert_eq!(t.ssl("CLIENT_I_DN"), None);
        assert_eq!(t.script_name(), Some("/index.php"));
        assert_eq!(t.path_info(), Some("/a b"));
        assert_eq!(t.document_root(), Some("/srv"));
        assert_eq!(t.query_string(), Some("x=1"));
        assert_eq!(t.get_bytes("DOCUMENT_ROOT").unwrap(), "/srv");
        assert_eq!(t.role(), Role::Responder);
        assert_eq!(t.with_role(Role::Filter).role(), Role::Filter);
    }

    #[test]
    fn unparsable_values_are_none() {
        let t = trusted(&[
            ("REMOTE_ADDR", "unix:"),
            ("REMOTE_PORT", "70000"),
            ("SERVER_PORT", ""),
        ]);
        assert_eq!(t.remote_addr(), None);
        assert_eq!(t.remote_port(), None);
        assert_eq!(t.server_port(), None);
        assert_eq!(t.server_name(), None);
    }

    #[test]
    fn https_detection() {
        for (pairs, expected) in [
            (&[("HTTPS", "on")][..], true),
            (&[("HTTPS", "ON")][..], true),
            (&[("HTTPS", "1")][..], true),
            (&[("HTTPS", "off")][..], false),
            (&[("HTTPS", "")][..], false),
            (&[("REQUEST_SCHEME", "https")][..], true),
            (&[("REQUEST_SCHEME", "HTTPS")][..], true),
            (&[("REQUEST_SCHEME", "http")][..], false),
            (&[][..], false),
        ] {
            assert_eq!(trusted(pairs).https(), expected, "{pairs:?}");
        }
    }
}
