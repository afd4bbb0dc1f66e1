//! An app mounted under a prefix: the request path with SCRIPT_NAME removed from its start
//! (opt-in, `server.strip_script_name`).
//!
//! Policy: SCRIPT_NAME (a trailing `/` ignored) is removed when the path equals it (the path
//! becomes `/`) or starts with it followed by `/`; the query is kept. Anything else (no
//! SCRIPT_NAME, an empty one, a path outside it, a prefix that only matches part of a segment:
//! `/application` under `/app`) leaves the URI as it is. The comparison is byte for byte on
//! the raw path: a SCRIPT_NAME that a client would have to percent-encode does not match.

use http::Uri;

/// The URI with `script_name` removed from the start of its path, or `None` to keep it.
pub fn strip_script_name(uri: &Uri, script_name: &str) -> Option<Uri> {
    let prefix = script_name.trim_end_matches('/');
    if prefix.is_empty() {
        return None;
    }
    let rest = uri.path().strip_prefix(prefix)?;
    let path = match rest {
        "" => "/",
        rest if rest.starts_with('/') => rest,
        _ => return None,
    };
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    Uri::try_from(target).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(uri: &str, script: &str) -> Option<String> {
        strip_script_name(&uri.parse().unwrap(), script).map(|u| u.to_string())
    }

    #[test]
    fn the_prefix_and_only_the_prefix_is_removed() {
        assert_eq!(
            strip("/app/users/7?x=1", "/app").as_deref(),
            Some("/users/7?x=1")
        );
        assert_eq!(strip("/app/users/7", "/app/").as_deref(), Some("/users/7"));
        assert_eq!(strip("/app", "/app").as_deref(), Some("/"));
        assert_eq!(strip("/app?q", "/app").as_deref(), Some("/?q"));
        assert_eq!(strip("/app/", "/app").as_deref(), Some("/"));
    }

    #[test]
    fn paths_outside_the_prefix_are_kept() {
        assert_eq!(strip("/application/x", "/app"), None);
        assert_eq!(strip("/other", "/app"), None);
        assert_eq!(strip("/app/x", ""), None);
        assert_eq!(strip("/app/x", "/"), None);
    }
}
