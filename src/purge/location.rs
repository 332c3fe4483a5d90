//! The paths a write's `Location` and `Content-Location` name on its own
//! authority (RFC 9111 section 4.4), resolved as a client would.

use http::{header, HeaderMap};

use crate::key::authority_form;

/// The paths of `Location` and `Content-Location` that are on the request's
/// authority, resolved against the request path.
pub(super) fn location_paths(
    headers: &HeaderMap,
    request_authority: &str,
    request_path: &str,
) -> Vec<String> {
    let mut paths = Vec::new();
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let value = value.trim();
        // Drop the fragment and the query: a purge covers every query.
        let value = value.split(['#', '?']).next().unwrap_or("");
        // An absolute URI (`https://host/path`) or a network-path
        // reference (`//host/path`): only on the request's authority.
        let remote = value
            .split_once("://")
            .map(|(scheme, rest)| (Some(scheme), rest))
            .or_else(|| value.strip_prefix("//").map(|rest| (None, rest)));
        let path = if let Some((scheme, rest)) = remote {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            // Compared as keys compare them: case and default ports aside.
            if authority_form(authority, scheme) != authority_form(request_authority, None) {
                continue;
            }
            if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            }
        } else if value.starts_with('/') {
            value.to_owned()
        } else if value.is_empty() {
            continue;
        } else {
            // A relative reference: resolve against the request's directory.
            let dir = request_path.rfind('/').map_or("/", |i| &request_path[..=i]);
            format!("{dir}{value}")
        };
        paths.push(remove_dot_segments(&path));
    }
    paths
}

/// Removes `.` and `..` segments from an absolute path (RFC 3986 section
/// 5.2.4), as clients do before they send it.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let trailing_dot = matches!(segments.last(), Some(&".") | Some(&".."));
    for segment in segments {
        match segment {
            "." => {}
            ".." => {
                out.pop();
            }
            segment => out.push(segment),
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if trailing_dot && !result.ends_with('/') {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn locations_on_the_same_authority_are_resolved() {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("/users/3"));
        headers.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("https://EXAMPLE.com/users/3?x=1"),
        );
        assert_eq!(
            location_paths(&headers, "example.com", "/users"),
            ["/users/3", "/users/3"]
        );
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("https://other.example/users/3"),
        );
        headers.insert(header::CONTENT_LOCATION, HeaderValue::from_static("4"));
        assert_eq!(
            location_paths(&headers, "example.com", "/users/"),
            ["/users/4"]
        );
        // Default ports aside, as keys compare authorities.
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("https://example.com/users/5"),
        );
        assert_eq!(
            location_paths(&headers, "Example.com:443", "/users/"),
            ["/users/5", "/users/4"]
        );
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("https://example.com:8443/users/6"),
        );
        assert_eq!(
            location_paths(&headers, "example.com", "/users/"),
            ["/users/4"]
        );
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(remove_dot_segments("/users/./5"), "/users/5");
        assert_eq!(
            remove_dot_segments("/users/new/../teams/1"),
            "/users/teams/1"
        );
        assert_eq!(remove_dot_segments("/a/../../x"), "/x");
        assert_eq!(remove_dot_segments("/a/b/.."), "/a/");
        assert_eq!(remove_dot_segments("/a//b"), "/a//b");
    }
}
