//! What may be stored, and for how long.
//!
//! A shared cache that stores something private leaks it to every other
//! user, so every rule here errs towards passing through: a request or a
//! response that might be personal, or whose caching rules cannot be read,
//! goes to the origin and is not stored.
//!
//! Requests are checked before any store call ([`request_bypass`]),
//! responses when the inner service answers ([`PolicyConfig::storable`]).

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderName, Request, StatusCode};

/// The storage part of the layer's configuration.
#[derive(Debug, Clone)]
pub(crate) struct PolicyConfig {
    pub(crate) ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) max_body_bytes: usize,
}

/// Why a request skips the cache, as a `Cache-Status` detail, or `None` when
/// it may be looked up. `vary_by` is the configured key headers: keying on
/// `Authorization` or `Cookie` is an explicit opt-in that makes those
/// requests cacheable, one entry per credential.
pub(crate) fn request_bypass<B>(req: &Request<B>, vary_by: &[HeaderName]) -> Option<&'static str> {
    // One pass over the request's field names (most requests carry a
    // handful), rather than a hashed look-up for each field that matters;
    // the reasons are then given in a fixed order.
    let (mut authorization, mut cookie, mut range, mut upgrade) = (false, false, false, false);
    for name in req.headers().keys() {
        if name == header::AUTHORIZATION {
            authorization = true;
        } else if name == header::COOKIE {
            cookie = true;
        } else if name == header::RANGE {
            range = true;
        } else if name == header::UPGRADE {
            upgrade = true;
        }
    }
    let keyed = |name: &HeaderName| vary_by.iter().any(|v| v == name);
    if authorization && !keyed(&header::AUTHORIZATION) {
        return Some("authorization");
    }
    if cookie && !keyed(&header::COOKIE) {
        return Some("cookie");
    }
    if range {
        return Some("range");
    }
    if upgrade {
        return Some("upgrade");
    }
    None
}

impl PolicyConfig {
    /// Decides whether a response may be stored: `Ok(ttl)` or `Err(detail)`.
    ///
    /// `route_ttl` and `route_negative_ttl` override the defaults for the
    /// matched route. The response's own `s-maxage`, `max-age` or `Expires`
    /// can only shorten the lifetime, never extend it.
    pub(crate) fn storable(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        vary_by: &[HeaderName],
        route_ttl: Option<Duration>,
        route_negative_ttl: Option<Duration>,
    ) -> Result<Duration, &'static str> {
        if !self.statuses.contains(&status) {
            return Err("status");
        }
        if headers.contains_key(header::SET_COOKIE) {
            return Err("set-cookie");
        }
        let cc = CacheControl::parse(headers);
        if cc.no_store {
            return Err("no-store");
        }
        if cc.private {
            return Err("private");
        }
        if cc.no_cache {
            return Err("no-cache");
        }
        vary_is_keyed(headers, vary_by)?;
        if let Some(len) = content_length(headers) {
            if len > self.max_body_bytes as u64 {
                return Err("too-large");
            }
        }

        let negative = status == StatusCode::NOT_FOUND || status == StatusCode::GONE;
        let base = if negative {
            route_negative_ttl.unwrap_or(self.negative_ttl)
        } else {
            route_ttl.unwrap_or(self.ttl)
        };
        let ttl = match cc.s_maxage.or(cc.max_age) {
            Some(seconds) => base.min(Duration::from_secs(seconds)),
            None => match expires_in(headers) {
                Some(left) => base.min(left),
                None => base,
            },
        };
        if ttl.is_zero() {
            return Err("expired");
        }
        Ok(ttl)
    }
}

/// Every name in the response's `Vary` must be part of the key; `Vary: *`
/// never is.
fn vary_is_keyed(headers: &HeaderMap, vary_by: &[HeaderName]) -> Result<(), &'static str> {
    for value in headers.get_all(header::VARY) {
        let Ok(value) = value.to_str() else {
            return Err("vary");
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return Err("vary");
            }
            if !vary_by
                .iter()
                .any(|k| k.as_str().eq_ignore_ascii_case(name))
            {
                return Err("vary");
            }
        }
    }
    Ok(())
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Time left until `Expires`, measured from `Date` when present (so clock
/// skew with the origin does not matter) or from now. An invalid `Expires`
/// means already expired (RFC 9111 section 5.3).
fn expires_in(headers: &HeaderMap) -> Option<Duration> {
    let expires = headers.get(header::EXPIRES)?;
    let parse = |v: &http::HeaderValue| httpdate::parse_http_date(v.to_str().ok()?).ok();
    let Some(expires) = parse(expires) else {
        return Some(Duration::ZERO);
    };
    let base = headers
        .get(header::DATE)
        .and_then(parse)
        .unwrap_or_else(SystemTime::now);
    Some(expires.duration_since(base).unwrap_or(Duration::ZERO))
}

/// The response directives of `Cache-Control` that decide storage.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
}

impl CacheControl {
    /// Reads every `Cache-Control` field line. Unreadable bytes make the
    /// response `no-store`; an unparsable age counts as 0 (RFC 9111
    /// section 4.2.1: a cache treats it as stale).
    pub(crate) fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                cc.no_store = true;
                continue;
            };
            for directive in split_directives(value) {
                let (name, arg) = match directive.split_once('=') {
                    Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let age = || arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
                if name.eq_ignore_ascii_case("no-store") {
                    cc.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    cc.no_cache = true;
                } else if name.eq_ignore_ascii_case("private") {
                    cc.private = true;
                } else if name.eq_ignore_ascii_case("max-age") {
                    cc.max_age = Some(cc.max_age.map_or(age(), |m| m.min(age())));
                } else if name.eq_ignore_ascii_case("s-maxage") {
                    cc.s_maxage = Some(cc.s_maxage.map_or(age(), |m| m.min(age())));
                }
            }
        }
        cc
    }
}

/// Splits a `Cache-Control` value on commas outside quoted strings.
fn split_directives(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = value;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let mut in_quotes = false;
            let mut escaped = false;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if in_quotes => escaped = true,
                    '"' => in_quotes = !in_quotes,
                    ',' if !in_quotes => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let item = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or("");
            if !item.trim().is_empty() {
                return Some(item);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::DEFAULT_STATUSES;
    use http::HeaderValue;

    fn cfg() -> PolicyConfig {
        PolicyConfig {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            statuses: DEFAULT_STATUSES
                .iter()
                .filter_map(|s| StatusCode::from_u16(*s).ok())
                .collect(),
            max_body_bytes: 1024,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn storable(
        status: u16,
        pairs: &[(&'static str, &'static str)],
    ) -> Result<Duration, &'static str> {
        cfg().storable(
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            &[header::ACCEPT_LANGUAGE],
            None,
            None,
        )
    }

    #[test]
    fn plain_200_is_stored_with_default_ttl() {
        assert_eq!(storable(200, &[]), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn negative_statuses_use_the_negative_ttl() {
        assert_eq!(storable(404, &[]), Ok(Duration::from_secs(5)));
        assert_eq!(storable(410, &[]), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn statuses_outside_the_set_are_not_stored() {
        assert_eq!(storable(500, &[]), Err("status"));
        assert_eq!(storable(206, &[]), Err("status"));
        assert_eq!(storable(302, &[]), Err("status"));
    }

    #[test]
    fn private_responses_are_not_stored() {
        assert_eq!(storable(200, &[("set-cookie", "a=b")]), Err("set-cookie"));
        assert_eq!(
            storable(200, &[("cache-control", "no-store")]),
            Err("no-store")
        );
        assert_eq!(
            storable(200, &[("cache-control", "Private")]),
            Err("private")
        );
        assert_eq!(
            storable(200, &[("cache-control", "private=\"x-user\"")]),
            Err("private")
        );
        assert_eq!(
            storable(200, &[("cache-control", "no-cache")]),
            Err("no-cache")
        );
        assert_eq!(storable(200, &[("vary", "*")]), Err("vary"));
        assert_eq!(storable(200, &[("vary", "Accept-Encoding")]), Err("vary"));
        assert_eq!(
            storable(200, &[("vary", "accept-language")]),
            Ok(Duration::from_secs(60))
        );
    }

    #[test]
    fn response_ages_only_shorten_the_ttl() {
        assert_eq!(
            storable(200, &[("cache-control", "public, max-age=10")]),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(
            storable(200, &[("cache-control", "max-age=10, s-maxage=20")]),
            Ok(Duration::from_secs(20))
        );
        assert_eq!(
            storable(200, &[("cache-control", "s-maxage=3600")]),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            storable(200, &[("cache-control", "max-age=0")]),
            Err("expired")
        );
        assert_eq!(
            storable(200, &[("cache-control", "max-age=abc")]),
            Err("expired")
        );
    }

    #[test]
    fn expires_is_measured_from_date() {
        assert_eq!(
            storable(
                200,
                &[
                    ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ("expires", "Sun, 06 Nov 1994 08:49:47 GMT")
                ]
            ),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(storable(200, &[("expires", "0")]), Err("expired"));
    }

    #[test]
    fn declared_oversize_bodies_are_not_stored() {
        assert_eq!(
            storable(200, &[("content-length", "1025")]),
            Err("too-large")
        );
        assert!(storable(200, &[("content-length", "1024")]).is_ok());
    }

    #[test]
    fn quoted_commas_do_not_split_directives() {
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            "no-cache=\"a, b\", max-age=5",
        )]));
        assert!(cc.no_cache);
        assert_eq!(cc.max_age, Some(5));
    }

    #[test]
    fn credentials_bypass_unless_keyed() {
        let req = Request::get("/")
            .header("authorization", "Bearer x")
            .body(())
            .unwrap();
        assert_eq!(request_bypass(&req, &[]), Some("authorization"));
        assert_eq!(request_bypass(&req, &[header::AUTHORIZATION]), None);
        let req = Request::get("/").header("cookie", "s=1").body(()).unwrap();
        assert_eq!(request_bypass(&req, &[]), Some("cookie"));
        let req = Request::get("/")
            .header("range", "bytes=0-1")
            .body(())
            .unwrap();
        assert_eq!(request_bypass(&req, &[]), Some("range"));
    }

    #[test]
    fn bypass_reasons_keep_their_order_whatever_the_fields_order() {
        let req = Request::get("/")
            .header("upgrade", "websocket")
            .header("range", "bytes=0-1")
            .header("x-other", "1")
            .header("cookie", "s=1")
            .header("authorization", "Bearer x")
            .body(())
            .unwrap();
        assert_eq!(request_bypass(&req, &[]), Some("authorization"));
        assert_eq!(
            request_bypass(&req, &[header::AUTHORIZATION]),
            Some("cookie")
        );
        let keyed = [header::AUTHORIZATION, header::COOKIE];
        assert_eq!(request_bypass(&req, &keyed), Some("range"));
        let req = Request::get("/")
            .header("x-other", "1")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert_eq!(request_bypass(&req, &[]), Some("upgrade"));
        let req = Request::get("/")
            .header("accept", "*/*")
            .header("host", "a")
            .body(())
            .unwrap();
        assert_eq!(request_bypass(&req, &[]), None);
    }
}
