//! The `Cache-Status` response header (RFC 9211) and `Age`.
//!
//! Every response the layer handles says what the cache did with it, under
//! the cache name `tower-cache-aside`:
//!
//! | outcome | value |
//! | --- | --- |
//! | served from the store | `tower-cache-aside; hit; ttl=41` |
//! | served from the store after waiting on another request's fill | `tower-cache-aside; hit; ttl=41; collapsed` |
//! | served stale while one request refreshes it | `tower-cache-aside; hit; fwd=stale; ttl=-3` |
//! | served stale because the origin failed | `tower-cache-aside; hit; fwd=stale; ttl=-40; detail=stale-if-error` |
//! | missed, response stored | `tower-cache-aside; fwd=miss; stored` |
//! | missed, not stored | `tower-cache-aside; fwd=miss; detail=set-cookie` |
//! | not looked up | `tower-cache-aside; fwd=bypass; detail=authorization` |
//! | a successful write, and the entries it purged | `tower-cache-aside; fwd=method; purged=3` |
//! | a successful write whose purge failed | `tower-cache-aside; fwd=method; purged=0; detail=purge-failed` |
//! | any other method, or a failed write | `tower-cache-aside; fwd=method` |
//!
//! The layer appends its member to a `Cache-Status` the inner service may
//! already have set (caches closer to the origin come first).

use http::{HeaderMap, HeaderName, HeaderValue};

/// `Cache-Status`, as an `http` header name.
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// What the layer did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Served from the store; seconds of freshness left (negative when
    /// stale), whether the request waited for another request's fill,
    /// whether the entry was stale, and why it was served stale.
    Hit {
        ttl: i64,
        collapsed: bool,
        stale: bool,
        detail: Option<&'static str>,
    },
    /// Forwarded after a lookup found nothing usable.
    Miss {
        stored: bool,
        detail: Option<&'static str>,
    },
    /// Forwarded without a lookup.
    Bypass(&'static str),
    /// Forwarded because of its method.
    Method,
    /// A successful unsafe request: entries purged, and whether any purge
    /// failed.
    Purged { removed: u64, failed: bool },
}

impl Outcome {
    /// Appends this outcome's `Cache-Status` member to `headers`.
    pub(crate) fn append_to(self, headers: &mut HeaderMap) {
        let value = match self {
            Outcome::Hit {
                ttl,
                collapsed,
                stale,
                detail,
            } => {
                let mut value = String::from("tower-cache-aside; hit");
                if stale {
                    value.push_str("; fwd=stale");
                }
                value.push_str(&format!("; ttl={ttl}"));
                if collapsed {
                    value.push_str("; collapsed");
                }
                if let Some(detail) = detail {
                    value.push_str("; detail=");
                    value.push_str(detail);
                }
                HeaderValue::try_from(value).ok()
            }
            Outcome::Miss { stored, detail } => {
                let mut value = String::from("tower-cache-aside; fwd=miss");
                if stored {
                    value.push_str("; stored");
                }
                if let Some(detail) = detail {
                    value.push_str("; detail=");
                    value.push_str(detail);
                }
                HeaderValue::try_from(value).ok()
            }
            Outcome::Bypass(detail) => {
                HeaderValue::try_from(format!("tower-cache-aside; fwd=bypass; detail={detail}"))
                    .ok()
            }
            Outcome::Method => Some(HeaderValue::from_static("tower-cache-aside; fwd=method")),
            Outcome::Purged { removed, failed } => {
                let detail = if failed { "; detail=purge-failed" } else { "" };
                HeaderValue::try_from(format!(
                    "tower-cache-aside; fwd=method; purged={removed}{detail}"
                ))
                .ok()
            }
        };
        if let Some(value) = value {
            // Appending fails only past the header map's capacity (32768
            // fields); then the header is left out rather than failing.
            let _ = headers.try_append(CACHE_STATUS, value);
        }
    }

    /// A short label for logs and traces.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Hit { .. } => "hit",
            Outcome::Miss { stored: true, .. } => "miss-stored",
            Outcome::Miss { stored: false, .. } => "miss",
            Outcome::Bypass(_) => "bypass",
            Outcome::Method => "method",
            Outcome::Purged { failed: false, .. } => "purged",
            Outcome::Purged { failed: true, .. } => "purge-failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(outcome: Outcome) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_STATUS, HeaderValue::from_static("origin-cache; hit"));
        outcome.append_to(&mut headers);
        let values: Vec<_> = headers
            .get_all(CACHE_STATUS)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(values[0], "origin-cache; hit", "existing member kept first");
        values[1].clone()
    }

    #[test]
    fn renders_each_outcome() {
        assert_eq!(
            render(Outcome::Hit {
                ttl: 41,
                collapsed: false,
                stale: false,
                detail: None,
            }),
            "tower-cache-aside; hit; ttl=41"
        );
        assert_eq!(
            render(Outcome::Hit {
                ttl: 5,
                collapsed: true,
                stale: false,
                detail: None,
            }),
            "tower-cache-aside; hit; ttl=5; collapsed"
        );
        assert_eq!(
            render(Outcome::Hit {
                ttl: -3,
                collapsed: false,
                stale: true,
                detail: Some("stale-if-error"),
            }),
            "tower-cache-aside; hit; fwd=stale; ttl=-3; detail=stale-if-error"
        );
        assert_eq!(
            render(Outcome::Miss {
                stored: true,
                detail: None
            }),
            "tower-cache-aside; fwd=miss; stored"
        );
        assert_eq!(
            render(Outcome::Miss {
                stored: false,
                detail: Some("set-cookie")
            }),
            "tower-cache-aside; fwd=miss; detail=set-cookie"
        );
        assert_eq!(
            render(Outcome::Bypass("cookie")),
            "tower-cache-aside; fwd=bypass; detail=cookie"
        );
        assert_eq!(render(Outcome::Method), "tower-cache-aside; fwd=method");
        assert_eq!(
            render(Outcome::Purged {
                removed: 3,
                failed: false
            }),
            "tower-cache-aside; fwd=method; purged=3"
        );
        assert_eq!(
            render(Outcome::Purged {
                removed: 0,
                failed: true
            }),
            "tower-cache-aside; fwd=method; purged=0; detail=purge-failed"
        );
    }
}
