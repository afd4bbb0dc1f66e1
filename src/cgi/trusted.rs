//! The params the proxy vouches for, apart from client headers.

use crate::protocol::Params;

/// The request's non-`HTTP_*` params (REMOTE_ADDR, HTTPS, SERVER_NAME, SSL_*...), set by the
/// proxy itself. A client header can never appear here: `HTTP_*` names are refused by every
/// accessor (so `HTTP_PROXY`, from a client's `Proxy:` header, is never trusted).
#[derive(Debug, Clone)]
pub struct TrustedParams {
    params: Params,
}

impl TrustedParams {
    pub fn new(params: Params) -> TrustedParams {
        TrustedParams { params }
    }
}
