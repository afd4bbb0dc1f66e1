//! A blocking FastCGI client: for the `fcgi-uring request` command, tests and load tools.

/// The params nginx's stock `fastcgi_params` sends for a request (same names, same order), for
/// `method` and `request_uri` (path and query as the client sent them), `headers` as the
/// client sent them (turned into `HTTP_*`; `Content-Type` and `Content-Length` become
/// CONTENT_TYPE and CONTENT_LENGTH), `body_len` bytes of body (CONTENT_LENGTH, empty when None,
/// as nginx sends for a chunked upload it does not buffer).
pub fn nginx_params(
    method: &str,
    request_uri: &str,
    headers: &[(String, String)],
    body_len: Option<usize>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let _ = (method, request_uri, headers, body_len);
    todo!()
}
