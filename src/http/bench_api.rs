//! Thin wrappers of the per-request CPU work (key derivation, entry
//! encoding and decoding, policy checks) for the Criterion
//! micro-benchmarks in `benches/micro.rs`, which as an external crate can
//! reach only public items.
//!
//! Not part of the API: hidden from the docs, outside semver, and may
//! change or go away in any release.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, StatusCode};

use crate::entry::{Entry, EntryParts};
use crate::http::policy::PolicyConfig;
use crate::key::{KeyConfig, QueryKey};
use crate::settings::DEFAULT_STATUSES;

/// The layer's key derivation, on its default settings (prefix `tca:`,
/// authority in the key, every query parameter, no vary headers).
#[derive(Debug, Clone)]
pub struct KeyDeriver {
    config: KeyConfig,
}

impl Default for KeyDeriver {
    fn default() -> KeyDeriver {
        KeyDeriver::new()
    }
}

impl KeyDeriver {
    /// A deriver with the defaults of `CacheAsideLayer::builder`.
    pub fn new() -> KeyDeriver {
        KeyDeriver {
            config: KeyConfig {
                prefix: "tca:".into(),
                include_authority: true,
                query: QueryKey::All,
                vary_by: Vec::new(),
            },
        }
    }

    /// Derives the request's key as the layer does on a GET, and returns
    /// the length of its fingerprint (the key material); 0 for a target
    /// the layer passes through uncached.
    pub fn derive(&self, req: &Request<()>) -> usize {
        // Keeps the hashed variant and the resource from being optimised
        // away along with the rest of the key.
        match self.config.derive(req) {
            Ok(derived) => black_box(&derived).fingerprint.len(),
            Err(_) => 0,
        }
    }
}

/// Encodes a response into an entry as the layer stores it (no trailers),
/// or `None` when a length does not fit the format.
pub fn encode_entry(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[Bytes],
    fingerprint: &[u8],
) -> Option<Bytes> {
    EntryParts {
        status,
        headers,
        body,
        trailers: None,
        stored_at_ms: 1_700_000_000_000,
        ttl_ms: 60_000,
        stale: None,
        fingerprint,
    }
    .encode()
    .ok()
}

/// Decodes a stored value as a lookup does; `true` when it is a valid
/// entry.
pub fn decode_entry(bytes: Bytes) -> bool {
    match Entry::decode(bytes) {
        Ok(entry) => {
            black_box(&entry);
            true
        }
        Err(_) => false,
    }
}

/// A hit's decoding with the layer's table of decoded heads
/// (`head_cache.rs`): the first value read for an entry is decoded in full and
/// its head kept; a value that starts with the same bytes reuses it.
#[derive(Debug, Default)]
pub struct HeadDecoder {
    heads: crate::http::head_cache::HeadCache,
}

impl HeadDecoder {
    /// A decoder with the layer's default table.
    pub fn new() -> HeadDecoder {
        HeadDecoder::default()
    }

    /// Decodes a stored value of the entry `tag` as a lookup does; `true`
    /// when it is a valid entry.
    pub fn decode(&self, tag: u64, bytes: Bytes) -> bool {
        match self.heads.decode(tag, bytes) {
            Ok(entry) => {
                black_box(&entry);
                true
            }
            Err(_) => false,
        }
    }
}

/// The layer's request and response checks, on its default settings (no
/// vary headers, no route TTLs).
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    vary_by: Vec<HeaderName>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::new()
    }
}

impl Policy {
    /// A policy with the defaults of `CacheAsideLayer::builder` (TTL 60 s,
    /// negative TTL 10 s, the default statuses, 1 MiB body cap).
    pub fn new() -> Policy {
        Policy {
            config: PolicyConfig {
                ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(10),
                statuses: DEFAULT_STATUSES
                    .iter()
                    .filter_map(|code| StatusCode::from_u16(*code).ok())
                    .collect(),
                max_body_bytes: 1024 * 1024,
                freshness: crate::Freshness::Configured,
                targeted: Vec::new(),
                stale: crate::util::time::StaleWindows::NONE,
                stale_from_response: false,
                revalidation_window: Duration::ZERO,
            },
            vary_by: Vec::new(),
        }
    }

    /// Why the request skips the cache (its `Cache-Status` detail), or
    /// `None` when it may be looked up.
    pub fn request_bypass(&self, req: &Request<()>) -> Option<&'static str> {
        crate::http::policy::request_bypass(req, &self.vary_by)
    }

    /// How long the response would be stored fresh (its lifetime less
    /// its age), or `None` when it may not be stored. It is taken to have
    /// arrived the instant it was asked for.
    pub fn storable(&self, status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
        let now = crate::util::time::now_ms();
        let exchange = crate::http::policy::Exchange {
            requested_ms: now,
            received_ms: now,
        };
        self.config
            .storable(status, headers, &self.vary_by, Default::default(), exchange)
            .ok()
            .map(|storable| storable.resident())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn wrappers_do_the_real_work() {
        let req = Request::get("/users/42?b=2&a=1")
            .header("host", "example.com")
            .body(())
            .unwrap();
        // "/users/42" \0 "example.com" \0 "a=1&b=2"
        assert_eq!(KeyDeriver::new().derive(&req), 9 + 1 + 11 + 1 + 7);

        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let body = [Bytes::from_static(b"hello")];
        let encoded = encode_entry(StatusCode::OK, &headers, &body, b"/\0\0").unwrap();
        assert!(decode_entry(encoded.clone()));
        let heads = HeadDecoder::new();
        assert!(heads.decode(1, encoded.clone()));
        assert!(heads.decode(1, Bytes::from(encoded.to_vec())));
        assert!(!heads.decode(1, encoded.slice(..encoded.len() - 1)));
        assert!(!decode_entry(Bytes::from_static(
            b"not an entry at all, no"
        )));

        let policy = Policy::new();
        assert_eq!(policy.request_bypass(&req), None);
        assert_eq!(
            policy.storable(StatusCode::OK, &headers),
            Some(Duration::from_secs(60))
        );
        headers.insert("set-cookie", HeaderValue::from_static("a=b"));
        assert_eq!(policy.storable(StatusCode::OK, &headers), None);
    }
}
