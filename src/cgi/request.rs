//! Building an `http::Request` from a request's params.

use crate::protocol::{Params, Role};

/// Why params could not form a request (answered with 400 by the runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    MissingMethod,
    BadMethod,
    BadUri,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        todo!()
    }
}

impl std::error::Error for RequestError {}

/// Builds the request: method from REQUEST_METHOD; URI from REQUEST_URI, else SCRIPT_NAME +
/// PATH_INFO + QUERY_STRING; headers from `HTTP_*` (plus CONTENT_TYPE and CONTENT_LENGTH);
/// extensions: [`super::TrustedParams`] and the [`Role`].
pub fn build_request<B>(
    params: &Params,
    role: Role,
    body: B,
) -> Result<http::Request<B>, RequestError> {
    todo!()
}
