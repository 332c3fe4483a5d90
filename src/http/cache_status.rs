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
//! | stale, the origin said unchanged (`304`), refreshed and stored | `tower-cache-aside; fwd=stale; fwd-status=304; ttl=30; stored` |
//! | missed, response stored | `tower-cache-aside; fwd=miss; stored` |
//! | missed, not stored | `tower-cache-aside; fwd=miss; detail=set-cookie` |
//! | not looked up | `tower-cache-aside; fwd=bypass; detail=authorization` |
//! | a successful write, and the entries it purged | `tower-cache-aside; fwd=method; purged=3` |
//! | a successful write whose purge failed | `tower-cache-aside; fwd=method; purged=0; detail=purge-failed` |
//! | any other method, or a failed write | `tower-cache-aside; fwd=method` |
//!
//! The layer appends its member to a `Cache-Status` the inner service may
//! already have set (caches closer to the origin come first).

use std::sync::OnceLock;

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
    /// A stale entry the inner service said is unchanged (a `304`),
    /// served with its refreshed headers: seconds of freshness left, and
    /// whether it was stored again.
    Revalidated { ttl: i64, stored: bool },
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
        if let Some(value) = self.value() {
            append(headers, value);
        }
    }

    /// This outcome's member, as a header value (`None` only if it did
    /// not fit its buffer, which no member comes near).
    pub(crate) fn value(self) -> Option<HeaderValue> {
        if let Some(value) = self.plain_hit() {
            return Some(value);
        }
        let mut member = Member::new();
        match self {
            Outcome::Hit {
                ttl,
                collapsed,
                stale,
                detail,
            } => {
                member.push("tower-cache-aside; hit");
                if stale {
                    member.push("; fwd=stale");
                }
                member.push("; ttl=");
                member.push_number(ttl.unsigned_abs(), ttl < 0);
                if collapsed {
                    member.push("; collapsed");
                }
                member.push_detail(detail);
            }
            Outcome::Revalidated { ttl, stored } => {
                member.push("tower-cache-aside; fwd=stale; fwd-status=304; ttl=");
                member.push_number(ttl.unsigned_abs(), ttl < 0);
                if stored {
                    member.push("; stored");
                }
            }
            Outcome::Miss { stored, detail } => {
                member.push("tower-cache-aside; fwd=miss");
                if stored {
                    member.push("; stored");
                }
                member.push_detail(detail);
            }
            Outcome::Bypass(detail) => {
                member.push("tower-cache-aside; fwd=bypass");
                member.push_detail(Some(detail));
            }
            Outcome::Method => {
                return Some(HeaderValue::from_static("tower-cache-aside; fwd=method"));
            }
            Outcome::Purged { removed, failed } => {
                member.push("tower-cache-aside; fwd=method; purged=");
                member.push_number(removed, false);
                if failed {
                    member.push("; detail=purge-failed");
                }
            }
        }
        member.value()
    }

    /// The value of a plain fresh hit (no stale, collapse or detail) with
    /// less than `PLAIN_HIT_TTLS` seconds left: most hits. Each is written
    /// once per process and then costs a copy of a pointer, where building
    /// it costs a copy of its text into a new allocation on every hit.
    fn plain_hit(self) -> Option<HeaderValue> {
        let Outcome::Hit {
            ttl,
            collapsed: false,
            stale: false,
            detail: None,
        } = self
        else {
            return None;
        };
        let slot = PLAIN_HITS.get(usize::try_from(ttl).ok()?)?;
        let value = slot.get_or_init(|| {
            let text = format!("tower-cache-aside; hit; ttl={ttl}");
            // At most PLAIN_HITS short strings, once per process: a static
            // value is cloned without touching a shared reference count.
            HeaderValue::from_static(Box::leak(text.into_boxed_str()))
        });
        Some(value.clone())
    }

    /// A short label for logs and traces.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Hit { .. } => "hit",
            Outcome::Revalidated { .. } => "revalidated",
            Outcome::Miss { stored: true, .. } => "miss-stored",
            Outcome::Miss { stored: false, .. } => "miss",
            Outcome::Bypass(_) => "bypass",
            Outcome::Method => "method",
            Outcome::Purged { failed: false, .. } => "purged",
            Outcome::Purged { failed: true, .. } => "purge-failed",
        }
    }
}

/// A member written on the stack, then copied once into its header value
/// (a hit's member is built on every hit). Every member fits: the longest
/// is well under the buffer's size; one that did not would be left out.
struct Member {
    buffer: [u8; 192],
    len: usize,
    overflow: bool,
}

impl Member {
    fn new() -> Member {
        Member {
            buffer: [0; 192],
            len: 0,
            overflow: false,
        }
    }

    fn push(&mut self, text: &str) {
        match self.buffer.get_mut(self.len..self.len + text.len()) {
            Some(room) => {
                room.copy_from_slice(text.as_bytes());
                self.len += text.len();
            }
            None => self.overflow = true,
        }
    }

    fn push_number(&mut self, number: u64, negative: bool) {
        if negative {
            self.push("-");
        }
        self.push(crate::util::decimal::Decimal::new(number).as_str());
    }

    fn push_detail(&mut self, detail: Option<&str>) {
        if let Some(detail) = detail {
            self.push("; detail=");
            self.push(detail);
        }
    }

    fn value(&self) -> Option<HeaderValue> {
        if self.overflow {
            return None;
        }
        HeaderValue::from_bytes(&self.buffer[..self.len]).ok()
    }
}

fn append(headers: &mut HeaderMap, value: HeaderValue) {
    // Appending fails only past the header map's capacity (32768 fields);
    // then the header is left out rather than failing.
    let _ = headers.try_append(CACHE_STATUS, value);
}

/// How many plain hit values (`ttl=0` to `ttl=299`) are kept once made.
const PLAIN_HIT_TTLS: usize = 300;

/// The plain hit values, each made the first time a hit needs it.
static PLAIN_HITS: [OnceLock<HeaderValue>; PLAIN_HIT_TTLS] =
    [const { OnceLock::new() }; PLAIN_HIT_TTLS];

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

    /// A fresh hit with `ttl` seconds left, nothing else said.
    fn plain(ttl: i64) -> Outcome {
        Outcome::Hit {
            ttl,
            collapsed: false,
            stale: false,
            detail: None,
        }
    }

    #[test]
    fn plain_hits_kept_once_made_say_what_a_built_value_says() {
        // Twice over the kept range and past it: the second time each value
        // comes from the table.
        for _ in 0..2 {
            for ttl in (-2..PLAIN_HIT_TTLS as i64 + 2).chain([i64::MAX]) {
                assert_eq!(
                    render(plain(ttl)),
                    format!("tower-cache-aside; hit; ttl={ttl}")
                );
            }
        }
        assert!(plain(7).plain_hit().is_some());
        for other in [
            Outcome::Hit {
                ttl: 7,
                collapsed: true,
                stale: false,
                detail: None,
            },
            Outcome::Hit {
                ttl: 7,
                collapsed: false,
                stale: true,
                detail: None,
            },
            Outcome::Hit {
                ttl: 7,
                collapsed: false,
                stale: false,
                detail: Some("x"),
            },
        ] {
            assert!(other.plain_hit().is_none(), "{other:?}");
        }
    }

    #[test]
    fn renders_extreme_numbers() {
        for ttl in [0, -1, 9, 10, -10, i64::MAX, i64::MIN] {
            assert_eq!(
                render(plain(ttl)),
                format!("tower-cache-aside; hit; ttl={ttl}")
            );
        }
        assert_eq!(
            render(Outcome::Purged {
                removed: u64::MAX,
                failed: true
            }),
            format!(
                "tower-cache-aside; fwd=method; purged={}; detail=purge-failed",
                u64::MAX
            )
        );
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
