//! Params as each real front end sends them (as observed from nginx, Apache, HAProxy, Caddy and lighttpd), and the edge policies.

use super::*;
use fcgi_proto::PairAt;

fn params(pairs: &[(&str, &str)]) -> Params {
    Params::from_pairs(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

fn build(pairs: &[(&str, &str)]) -> Result<http::Request<()>, RequestError> {
    build_request(params(pairs), Role::Responder, ())
}

fn header_values<'a>(req: &'a http::Request<()>, name: &str) -> Vec<&'a str> {
    req.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

fn trusted(req: &http::Request<()>) -> &TrustedParams {
    req.extensions().get::<TrustedParams>().unwrap()
}

/// nginx 1.22 with the stock `fastcgi_params`: params first, then the client's headers, each
/// header line its own param (so two `Cookie:` lines give two HTTP_COOKIE).
#[test]
fn nginx_stock_fastcgi_params() {
    let req = build(&[
        ("QUERY_STRING", "x=1&y=2"),
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_TYPE", "application/json"),
        ("CONTENT_LENGTH", "13"),
        ("SCRIPT_NAME", "/api/items"),
        ("REQUEST_URI", "/api/items?x=1&y=2"),
        ("DOCUMENT_URI", "/api/items"),
        ("DOCUMENT_ROOT", "/var/www/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "https"),
        ("HTTPS", "on"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "nginx/1.22.1"),
        ("REMOTE_ADDR", "203.0.113.7"),
        ("REMOTE_PORT", "50412"),
        ("SERVER_ADDR", "192.0.2.1"),
        ("SERVER_PORT", "443"),
        ("SERVER_NAME", "example.com"),
        ("REDIRECT_STATUS", "200"),
        ("HTTP_HOST", "example.com"),
        ("HTTP_USER_AGENT", "curl/8.5.0"),
        ("HTTP_ACCEPT", "*/*"),
        ("HTTP_COOKIE", "a=1"),
        ("HTTP_COOKIE", "b=2"),
        ("HTTP_CONTENT_TYPE", "application/json"),
        ("HTTP_CONTENT_LENGTH", "13"),
    ])
    .unwrap();
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri(), "/api/items?x=1&y=2");
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(header_values(&req, "host"), ["example.com"]);
    assert_eq!(header_values(&req, "user-agent"), ["curl/8.5.0"]);
    assert_eq!(header_values(&req, "cookie"), ["a=1", "b=2"]);
    // Once each: the HTTP_CONTENT_* copies are ignored.
    assert_eq!(header_values(&req, "content-type"), ["application/json"]);
    assert_eq!(header_values(&req, "content-length"), ["13"]);
    assert_eq!(req.headers().len(), 7);
    let t = trusted(&req);
    assert!(t.https());
    assert_eq!(t.remote_addr(), Some("203.0.113.7".parse().unwrap()));
    assert_eq!(t.remote_port(), Some(50412));
    assert_eq!(t.server_name(), Some("example.com"));
    assert_eq!(t.role(), Role::Responder);
    // The role is no extension of its own: TrustedParams is the only one.
    assert_eq!(req.extensions().get::<Role>(), None);
    assert_eq!(req.extensions().len(), 1);
}

/// Apache mod_proxy_fcgi: client headers first, then the CGI variables; REQUEST_URI may come
/// without the query, which is only in QUERY_STRING.
#[test]
fn apache_request_uri_without_query() {
    let req = build(&[
        ("HTTP_HOST", "localhost"),
        ("HTTP_USER_AGENT", "curl/8.5.0"),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        (
            "SERVER_SIGNATURE",
            "<address>Apache/2.4.62 (Debian) Server</address>\n",
        ),
        ("SERVER_SOFTWARE", "Apache/2.4.62 (Debian)"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_ADDR", "::1"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "::1"),
        ("DOCUMENT_ROOT", "/var/www/html"),
        ("REQUEST_SCHEME", "http"),
        ("CONTEXT_PREFIX", ""),
        ("CONTEXT_DOCUMENT_ROOT", "/var/www/html"),
        ("SERVER_ADMIN", "webmaster@localhost"),
        ("SCRIPT_FILENAME", "proxy:fcgi://127.0.0.1:9000/hello"),
        ("REMOTE_PORT", "40022"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("QUERY_STRING", "name=caf%C3%A9"),
        ("REQUEST_URI", "/hello"),
        ("SCRIPT_NAME", "/hello"),
    ])
    .unwrap();
    assert_eq!(req.uri(), "/hello?name=caf%C3%A9");
    assert_eq!(req.uri().query(), Some("name=caf%C3%A9"));
    assert!(!trusted(&req).https());
    assert_eq!(trusted(&req).remote_addr(), Some("::1".parse().unwrap()));
    // SERVER_SIGNATURE and friends are not headers.
    assert_eq!(req.headers().len(), 2);
}

/// HAProxy fcgi-app sends REQUEST_URI as it holds it: absolute form for HTTP/2 clients.
#[test]
fn haproxy_absolute_form_request_uri() {
    let req = build(&[
        ("CONTENT_LENGTH", "0"),
        ("DOCUMENT_ROOT", "/srv"),
        ("DOCUMENT_URI", "/hello"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("QUERY_STRING", "x=1"),
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_SCHEME", "https"),
        ("REQUEST_URI", "https://example.com/hello?x=1"),
        ("REMOTE_ADDR", "198.51.100.4"),
        ("REMOTE_PORT", "61000"),
        ("SCRIPT_FILENAME", "/srv/hello"),
        ("SCRIPT_NAME", "/hello"),
        ("SERVER_NAME", "example.com"),
        ("SERVER_ADDR", "192.0.2.1"),
        ("SERVER_PORT", "443"),
        ("SERVER_PROTOCOL", "HTTP/2.0"),
        ("SERVER_SOFTWARE", "HAProxy"),
        ("HTTPS", "on"),
        ("HTTP_HOST", "example.com"),
        ("HTTP_COOKIE", "a=1"),
        ("HTTP_COOKIE", "b=2"),
    ])
    .unwrap();
    assert_eq!(req.uri(), "/hello?x=1");
    assert_eq!(req.uri().scheme(), None);
    assert_eq!(req.version(), Version::HTTP_2);
    assert_eq!(header_values(&req, "cookie"), ["a=1", "b=2"]);
    assert_eq!(header_values(&req, "content-length"), ["0"]);
}

#[test]
fn absolute_form_without_path_is_slash() {
    let req = build(&[
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "http://example.com"),
    ])
    .unwrap();
    assert_eq!(req.uri(), "/");
}

/// Caddy `php_fastcgi`: REQUEST_URI is the client's, SCRIPT_NAME/PATH_INFO the split after the
/// rewrite to the front controller; the request URI is the client's one.
#[test]
fn caddy_split_path_keeps_client_uri() {
    let req = build(&[
        ("AUTH_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("CONTENT_TYPE", ""),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("PATH_INFO", "/users/42"),
        ("QUERY_STRING", "full=1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_HOST", "127.0.0.1"),
        ("REMOTE_PORT", "38000"),
        ("REMOTE_IDENT", ""),
        ("REMOTE_USER", ""),
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_SCHEME", "http"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_SOFTWARE", "Caddy/v2.8.4"),
        ("DOCUMENT_ROOT", "/srv"),
        ("DOCUMENT_URI", "/index.php/users/42"),
        ("HTTP_HOST", "localhost"),
        ("REQUEST_URI", "/users/42?full=1"),
        ("SCRIPT_FILENAME", "/srv/index.php"),
        ("SCRIPT_NAME", "/index.php"),
        ("SERVER_PORT", "80"),
        ("HTTP_PROXY", "http://attacker.example:8080"),
    ])
    .unwrap();
    assert_eq!(req.uri(), "/users/42?full=1");
    // Empty CONTENT_TYPE/CONTENT_LENGTH give no header.
    assert!(req.headers().get("content-type").is_none());
    assert!(req.headers().get("content-length").is_none());
    // httpoxy: an ordinary header, never a trusted param.
    assert_eq!(
        header_values(&req, "proxy"),
        ["http://attacker.example:8080"]
    );
    assert_eq!(trusted(&req).get("HTTP_PROXY"), None);
    assert_eq!(trusted(&req).path_info(), Some("/users/42"));
}

/// Without REQUEST_URI (a minimal CGI front end): SCRIPT_NAME + PATH_INFO + ?QUERY_STRING,
/// percent-encoding the decoded CGI values.
#[test]
fn script_name_and_path_info_fallback() {
    let req = build(&[
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/index.php"),
        ("PATH_INFO", "/a b"),
        ("QUERY_STRING", "q=1"),
    ])
    .unwrap();
    assert_eq!(req.uri(), "/index.php/a%20b?q=1");

    let req = build(&[("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/app")]).unwrap();
    assert_eq!(req.uri(), "/app");
    let req = build(&[
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/x"),
        ("SCRIPT_NAME", "/"),
    ])
    .unwrap();
    assert_eq!(req.uri(), "/x");
    let req = build(&[("REQUEST_METHOD", "GET"), ("REQUEST_URI", "")]).unwrap();
    assert_eq!(req.uri(), "/");
    let req = build(&[("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "rel")]).unwrap();
    assert_eq!(req.uri(), "/rel");
}

/// lighttpd sends X-Forwarded-For twice when the client sent it twice: two header values.
#[test]
fn lighttpd_duplicate_forwarded_for() {
    let req = build(&[
        ("CONTENT_LENGTH", "0"),
        ("QUERY_STRING", ""),
        ("REQUEST_URI", "/"),
        ("REQUEST_METHOD", "GET"),
        ("SERVER_PROTOCOL", "HTTP/1.0"),
        ("SERVER_SOFTWARE", "lighttpd/1.4.69"),
        ("REMOTE_ADDR", "10.1.2.3"),
        ("HTTP_X_FORWARDED_FOR", "1.1.1.1"),
        ("HTTP_X_FORWARDED_FOR", "2.2.2.2"),
        ("HTTP_X_REAL_IP", "6.6.6.6"),
    ])
    .unwrap();
    assert_eq!(req.version(), Version::HTTP_10);
    assert_eq!(
        header_values(&req, "x-forwarded-for"),
        ["1.1.1.1", "2.2.2.2"]
    );
    // X-Real-IP is only a header: the trusted address is the proxy's REMOTE_ADDR.
    assert_eq!(header_values(&req, "x-real-ip"), ["6.6.6.6"]);
    assert_eq!(
        trusted(&req).remote_addr(),
        Some("10.1.2.3".parse().unwrap())
    );
    assert_eq!(trusted(&req).get("HTTP_X_REAL_IP"), None);
}

#[test]
fn unsafe_bytes_are_percent_encoded() {
    let cases: &[(&[u8], &str)] = &[
        (b"/a b", "/a%20b"),
        ("/caf\u{e9}".as_bytes(), "/caf%C3%A9"),
        (b"/\xff\xfe", "/%FF%FE"),
        (b"/{\"k\"}", "/%7B%22k%22%7D"),
        (b"/p?q=a b&j={\"x\"}", "/p?q=a%20b&j={%22x%22}"),
        (b"/p?a<b>c", "/p?a%3Cb%3Ec"),
        (b"/x#frag", "/x%23frag"),
        (b"/ok%20already?x=%41", "/ok%20already?x=%41"),
        (b"/tab\there", "/tab%09here"),
        (b"/q??x=1", "/q??x=1"),
        (b"*", "*"),
    ];
    for (raw, expected) in cases {
        let p = Params::from_pairs([
            (&b"REQUEST_METHOD"[..], &b"OPTIONS"[..]),
            (b"REQUEST_URI", raw),
        ]);
        let req = build_request(p.clone(), Role::Responder, ()).unwrap();
        assert_eq!(req.uri(), *expected, "{:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn bad_uri_and_method() {
    assert_eq!(
        build(&[("REQUEST_METHOD", "GET"), ("REQUEST_URI", "no-slash/x")]).unwrap_err(),
        RequestError::BadUri
    );
    assert_eq!(
        build(&[("REQUEST_URI", "/")]).unwrap_err(),
        RequestError::MissingMethod
    );
    assert_eq!(
        build(&[("REQUEST_METHOD", "GE T"), ("REQUEST_URI", "/")]).unwrap_err(),
        RequestError::BadMethod
    );
    assert_eq!(
        build(&[("REQUEST_METHOD", ""), ("REQUEST_URI", "/")]).unwrap_err(),
        RequestError::BadMethod
    );
    let req = build(&[("REQUEST_METHOD", "PURGE"), ("REQUEST_URI", "/")]).unwrap();
    assert_eq!(req.method().as_str(), "PURGE");
}

#[test]
fn versions() {
    for (protocol, version) in [
        ("HTTP/1.0", Version::HTTP_10),
        ("HTTP/1.1", Version::HTTP_11),
        ("HTTP/2", Version::HTTP_2),
        ("HTTP/2.0", Version::HTTP_2),
        ("HTTP/3", Version::HTTP_3),
        ("HTTP/3.0", Version::HTTP_3),
        ("INCLUDED", Version::HTTP_11),
        ("", Version::HTTP_11),
    ] {
        let req = build(&[
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", "/"),
            ("SERVER_PROTOCOL", protocol),
        ])
        .unwrap();
        assert_eq!(req.version(), version, "{protocol}");
    }
    let req = build(&[("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/")]).unwrap();
    assert_eq!(req.version(), Version::HTTP_11);
}

#[test]
fn content_length_only_when_a_plain_integer() {
    for (value, expected) in [
        ("0", Some("0")),
        ("1048576", Some("1048576")),
        ("", None),
        ("-1", None),
        ("+5", None),
        (" 5", None),
        ("5x", None),
        ("99999999999999999999999", None),
    ] {
        let req = build(&[
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/"),
            ("CONTENT_LENGTH", value),
        ])
        .unwrap();
        let got = req
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap());
        assert_eq!(got, expected, "{value:?}");
    }
}

#[test]
fn invalid_header_names_and_values_are_skipped() {
    let p = Params::from_pairs([
        (&b"REQUEST_METHOD"[..], &b"GET"[..]),
        (b"REQUEST_URI", b"/"),
        (b"HTTP_", b"empty name"),
        (b"HTTP_BAD NAME", b"x"),
        (b"HTTP_X_NEWLINE", b"a\r\nb"),
        (b"HTTP_X_OBS_TEXT", b"caf\xe9"),
        (b"HTTP_TRANSFER_ENCODING", b"chunked"),
        (b"HTTP_X_GOOD", b"ok"),
    ]);
    let req = build_request(p.clone(), Role::Responder, ()).unwrap();
    let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-obs-text", "x-good"]);
    assert_eq!(req.headers()["x-obs-text"].as_bytes(), b"caf\xe9");
}

/// The client's hop-by-hop headers describe its connection to the proxy: the app never sees
/// them (nginx's proxy_pass does not forward them either); end-to-end ones stay.
#[test]
fn hop_by_hop_request_headers_are_dropped() {
    let req = build(&[
        ("REQUEST_METHOD", "POST"),
        ("REQUEST_URI", "/"),
        ("HTTP_CONNECTION", "keep-alive, Upgrade"),
        ("HTTP_KEEP_ALIVE", "timeout=5"),
        ("HTTP_PROXY_CONNECTION", "keep-alive"),
        ("HTTP_TE", "trailers"),
        ("HTTP_UPGRADE", "websocket"),
        ("HTTP_EXPECT", "100-continue"),
        ("HTTP_UPGRADE_INSECURE_REQUESTS", "1"),
        ("HTTP_X_KEPT", "yes"),
    ])
    .unwrap();
    let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["upgrade-insecure-requests", "x-kept"]);
}

#[test]
fn long_header_names_are_converted() {
    let long = format!("HTTP_{}", "X_LONG".repeat(20));
    let req = build(&[
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/"),
        (&long, "v"),
    ])
    .unwrap();
    let expected = "x-long".repeat(20);
    assert_eq!(header_values(&req, &expected), ["v"]);
}

/// Header values and a clean URI are slices of the params buffer, not copies.
#[test]
fn values_are_not_copied() {
    let p = params(&[
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/zero/copy?x=1"),
        ("HTTP_USER_AGENT", "a-rather-long-user-agent/1.0"),
    ]);
    let req = build_request(p.clone(), Role::Authorizer, ()).unwrap();
    let ua = p.get(b"HTTP_USER_AGENT").unwrap();
    assert_eq!(req.headers()["user-agent"].as_bytes().as_ptr(), ua.as_ptr());
    let uri = p.get(b"REQUEST_URI").unwrap();
    assert_eq!(req.uri().path().as_ptr(), uri.as_ptr());
    assert_eq!(trusted(&req).role(), Role::Authorizer);
}

#[test]
fn errors_display() {
    assert!(
        RequestError::MissingMethod
            .to_string()
            .contains("REQUEST_METHOD")
    );
    assert!(RequestError::BadUri.to_string().contains("URI"));
}

/// Many `HTTP_*` params, each followed by another param: their headers, in their order.
#[test]
fn many_headers_keep_their_order() {
    for n in [1, 47, 48, 49, 144, 1000] {
        let mut pairs = vec![
            ("REQUEST_METHOD".to_owned(), "GET".to_owned()),
            ("REQUEST_URI".to_owned(), "/".to_owned()),
        ];
        for i in 0..n {
            pairs.push((format!("HTTP_X_H{i}"), format!("v{i}")));
            pairs.push((format!("OTHER_{i}"), "o".to_owned()));
        }
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (&a[..], &b[..])).collect();
        let req = build(&pairs).unwrap();
        let got: Vec<(String, &str)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap()))
            .collect();
        let expected: Vec<(String, String)> = (0..n)
            .map(|i| (format!("x-h{i}"), format!("v{i}")))
            .collect();
        let expected: Vec<(String, &str)> =
            expected.iter().map(|(k, v)| (k.clone(), &v[..])).collect();
        assert_eq!(got, expected, "{n} headers");
    }
}

/// Every name the fast path knows converts exactly as the general path would.
#[test]
fn common_header_names_match_the_general_conversion() {
    let names = [
        "DNT",
        "HOST",
        "ACCEPT",
        "COOKIE",
        "ORIGIN",
        "PRAGMA",
        "REFERER",
        "PRIORITY",
        "SEC_CH_UA",
        "X_REAL_IP",
        "USER_AGENT",
        "AUTHORIZATION",
        "CACHE_CONTROL",
        "IF_NONE_MATCH",
        "SEC_FETCH_DEST",
        "SEC_FETCH_MODE",
        "SEC_FETCH_SITE",
        "SEC_FETCH_USER",
        "ACCEPT_LANGUAGE",
        "ACCEPT_ENCODING",
        "X_FORWARDED_FOR",
        "SEC_CH_UA_MOBILE",
        "IF_MODIFIED_SINCE",
        "X_FORWARDED_PROTO",
        "SEC_CH_UA_PLATFORM",
        "UPGRADE_INSECURE_REQUESTS",
    ];
    for name in names {
        let general = HeaderName::from_bytes(name.replace('_', "-").as_bytes()).unwrap();
        assert_eq!(common_header(name.as_bytes()), Some(general), "{name}");
        // A near miss of the same length and first letter is not taken for it.
        let mut near = name.as_bytes().to_vec();
        if let Some(last) = near.last_mut() {
            *last = b'Q';
        }
        assert_eq!(common_header(&near), None, "{name}");
    }
}

/// The headers of a request are those of a plain reference conversion, whatever the names,
/// values, duplicates and order of the params.
mod reference {
    use super::*;
    use proptest::prelude::*;

    fn reference_headers(p: &Params) -> Vec<(String, Vec<u8>)> {
        let mut out = HeaderMap::new();
        for (name, value) in p.iter() {
            let Some(suffix) = name.strip_prefix(b"HTTP_") else {
                continue;
            };
            if matches!(
                suffix,
                b"CONTENT_TYPE"
                    | b"CONTENT_LENGTH"
                    | b"TRANSFER_ENCODING"
                    | b"CONNECTION"
                    | b"KEEP_ALIVE"
                    | b"PROXY_CONNECTION"
                    | b"TE"
                    | b"UPGRADE"
                    | b"EXPECT"
            ) {
                continue;
            }
            let dashed: Vec<u8> = suffix
                .iter()
                .map(|&b| if b == b'_' { b'-' } else { b })
                .collect();
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(&dashed),
                HeaderValue::from_bytes(value),
            ) {
                out.append(n, v);
            }
        }
        if let Some(v) = p.get(b"CONTENT_TYPE").filter(|v| !v.is_empty())
            && let Ok(v) = HeaderValue::from_bytes(v)
        {
            out.insert(CONTENT_TYPE, v);
        }
        if let Some(v) = p.get(b"CONTENT_LENGTH").filter(|v| is_decimal_u64(v)) {
            out.insert(CONTENT_LENGTH, HeaderValue::from_bytes(v).unwrap());
        }
        out.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"HTTP_HOST".to_vec()),
            Just(b"HTTP_ACCEPT".to_vec()),
            Just(b"HTTP_ACCEPT_ENCODING".to_vec()),
            Just(b"HTTP_SEC_FETCH_MODE".to_vec()),
            Just(b"HTTP_SEC_FETCH_MODX".to_vec()),
            Just(b"HTTP_CONTENT_TYPE".to_vec()),
            Just(b"HTTP_TRANSFER_ENCODING".to_vec()),
            Just(b"HTTP_CONNECTION".to_vec()),
            Just(b"HTTP_TE".to_vec()),
            Just(b"CONTENT_TYPE".to_vec()),
            Just(b"CONTENT_LENGTH".to_vec()),
            Just(b"REMOTE_ADDR".to_vec()),
            "HTTP_[A-Z_]{0,12}".prop_map(String::into_bytes),
            "HTTP_[ -~]{0,6}".prop_map(String::into_bytes),
            "[A-Z_]{1,16}".prop_map(String::into_bytes),
        ]
    }

    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(Vec::new()),
            Just(b"42".to_vec()),
            Just(b"-1".to_vec()),
            Just(b"a\r\nb".to_vec()),
            "[ -~]{0,12}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #[test]
        fn headers_match_the_reference(
            pairs in proptest::collection::vec((name(), value()), 0..96),
        ) {
            let mut all = vec![(b"REQUEST_METHOD".to_vec(), b"GET".to_vec())];
            all.push((b"REQUEST_URI".to_vec(), b"/".to_vec()));
            all.extend(pairs);
            let p = Params::from_pairs(all.iter().map(|(n, v)| (&n[..], &v[..])));
            let req = build_request(p.clone(), Role::Responder, ()).unwrap();
            let got: Vec<(String, Vec<u8>)> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
            prop_assert_eq!(got, reference_headers(&p));
        }
    }
}

/// The builder notes where the params read for every request are (the access log's, the
/// client's port); what it notes is what a search finds (the last of duplicates), and a client
/// header never becomes a trusted param by it.
#[test]
fn the_params_noted_while_building_match_a_search() {
    let pairs = [
        ("REMOTE_ADDR", "10.0.0.1"),
        ("REMOTE_PORT", "1"),
        ("HTTP_REMOTE_PORT", "3"),
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/x"),
        ("HTTP_USER_AGENT", "first"),
        ("HTTP_REFERER", "https://example.com/"),
        ("REMOTE_ADDR", "10.0.0.2"),
        ("HTTP_CONNECTION", "keep-alive"),
        ("HTTP_USER_AGENT", "second"),
        ("REMOTE_PORT", "2"),
    ];
    let req = build(&pairs).unwrap();
    let (built_params, built) = trusted(&req).for_access_log();
    let (searched_params, searched) = TrustedParams::new(params(&pairs)).for_access_log();
    let value =
        |p: &Params, at: Option<PairAt>| at.and_then(|at| p.pair_at(at)).map(|(_, v)| v.to_vec());
    for (b, s, want) in [
        (built.remote, searched.remote, &b"10.0.0.2"[..]),
        (built.remote_port, searched.remote_port, b"2"),
        (built.referer, searched.referer, b"https://example.com/"),
        (built.user_agent, searched.user_agent, b"second"),
    ] {
        assert_eq!(value(&built_params, b).as_deref(), Some(want));
        assert_eq!(value(&searched_params, s).as_deref(), Some(want));
    }
    assert_eq!(
        trusted(&req).remote_addr(),
        Some("10.0.0.2".parse().unwrap())
    );
    assert_eq!(trusted(&req).remote_port(), Some(2));
    assert_eq!(trusted(&req).get("HTTP_USER_AGENT"), None);
    let none = build(&[("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/")]).unwrap();
    let (_, log) = trusted(&none).for_access_log();
    assert_eq!(
        (log.remote, log.remote_port, log.referer, log.user_agent),
        (None, None, None, None)
    );
}

/// The byte table gives the sets of `escape_in_path` and `escape_in_query`: each byte in the
/// path, in the query, and after a second `?` (still the query).
#[test]
fn escape_check_follows_the_path_and_query_sets() {
    for b in 0..=255u8 {
        assert_eq!(
            needs_escape(&[b'/', b]),
            escape_in_path(b),
            "path byte {b:#x}"
        );
        assert_eq!(
            needs_escape(&[b'/', b'?', b]),
            escape_in_query(b),
            "query byte {b:#x}"
        );
        assert_eq!(
            needs_escape(&[b'/', b'?', b'?', b]),
            escape_in_query(b),
            "{b:#x} after ??"
        );
        assert_eq!(
            needs_escape(&[b, b'?']),
            escape_in_path(b),
            "{b:#x} before ?"
        );
    }
    assert!(!needs_escape(b""));
    assert!(!needs_escape(b"/a/b?c=d&e={f}"));
    assert!(needs_escape(b"/a{b}?c"));
}

/// The scan compares names as words (length, first and last 8 bytes): names that share a
/// looked-for name's first or last 8 bytes, or both with another length, are not taken for it,
/// and short `HTTP_*` names (under 8 bytes) are still headers.
#[test]
fn look_alike_names_are_not_the_names_looked_for() {
    let req = build(&[
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/real?q=1"),
        ("REQUEST_URIX", "/first-eight"),
        ("XREQUEST_URI", "/last-eight"),
        ("REQUEST_xxxxxUEST_URI", "/both-longer"),
        ("REQUEST_METHODS", "PUT"),
        ("SERVER_PROTOCOL_", "HTTP/1.0"),
        ("HTTP_REFERER_X", "no-referer"),
        ("HTTP_X", "short"),
        ("HTTP_DNT", "1"),
    ])
    .unwrap();
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(req.uri(), "/real?q=1");
    assert_eq!(req.version(), http::Version::HTTP_11);
    assert_eq!(header_values(&req, "x"), ["short"]);
    assert_eq!(header_values(&req, "dnt"), ["1"]);
    assert_eq!(header_values(&req, "referer-x"), ["no-referer"]);
    assert!(req.headers().get(http::header::REFERER).is_none());
}

#[test]
fn name_keys_are_equal_exactly_for_equal_names_of_8_to_16_bytes() {
    let names: [&[u8]; 8] = [
        b"REQUEST_URI",
        b"REQUEST_URL",
        b"AEQUEST_URI",
        b"REQUEST_METHOD",
        b"CONTENT_LENGTH",
        b"CONTENT_LENGTHS",
        b"HTTP_USER_AGENT",
        b"SIXTEEN_BYTES_XX",
    ];
    for a in names {
        for b in names {
            assert_eq!(NameKey::of(a) == NameKey::of(b), a == b, "{a:?} {b:?}");
        }
        assert_eq!(NameKey::of(a), Some(NameKey::of_const(a)));
    }
    assert_eq!(NameKey::of(b"HTTP_TE"), None);
    assert!(NameKey::HTTP_USER_AGENT.is_header());
    assert!(!NameKey::REQUEST_URI.is_header());
    assert!(!NameKey::of(b"HTTPS_ON").is_some_and(NameKey::is_header));
}
