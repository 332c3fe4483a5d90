//! The GET and HEAD lookup, over the fill protocol of [`crate::lease`]:
//! what a cacheable request carries from its classification to its
//! response ([`Cacheable`]), and how a stored entry is judged for it.
//!
//! An entry is served only if it decodes, its fingerprint equals the
//! request's key material, and it is fresh, or within a stale window. An
//! entry that does not decode, or belongs to another key, is removed before
//! the inner service is called.

use bytes::Bytes;
use http::HeaderMap;

use crate::entry::Entry;
use crate::http::policy::{has_validator, RouteRules};
use crate::http::shared::Shared;
use crate::http::vary::Varying;
use crate::key::{DerivedKey, VaryNames};
use crate::lease::{Fill, Found, Judged};
use crate::util::time::{Freshness, StaleWindows, Stand};

/// A GET or HEAD request the layer looks up, on its way to its response.
#[derive(Debug)]
pub(crate) struct Cacheable {
    pub(crate) key: DerivedKey,
    pub(crate) is_head: bool,
    /// What the matching route sets for storing.
    pub(crate) route: RouteRules,
    /// When the inner service was called for it (ms since the epoch):
    /// the start of the response's age.
    pub(crate) requested_ms: u64,
    /// Set when the inner service is asked whether the stale entry in
    /// `fill.fallback` changed: the client's own `If-None-Match`, taken
    /// off the request for the layer's, to answer it with after a `304`.
    pub(crate) revalidation: Option<HeaderMap>,
    /// The most entries the resource may hold (the route's or the
    /// layer's bound).
    pub(crate) max_variants: usize,
    /// Which of the resource's `Vary` variants `key` is.
    pub(crate) varying: Varying,
    /// The lease, the stale fallback and what the lookup found out.
    pub(crate) fill: Fill<Usable>,
}

/// An entry that may answer the request, and how fresh it is.
#[derive(Debug, Clone)]
pub(crate) struct Usable {
    pub(crate) entry: Entry,
    pub(crate) freshness: Freshness,
    /// Whether it may answer in place of an origin that fails (within its
    /// stale-if-error window); a fallback that is not is kept only to be
    /// revalidated.
    pub(crate) on_error: bool,
}

impl Usable {
    /// Whether, counted now, it may still answer in place of an origin
    /// that failed: a fallback for that, within its windows (`layer`'s
    /// unless it has its own). The origin call may have been long.
    pub(crate) fn answers_errors_now(&self, layer: StaleWindows) -> bool {
        let freshness = Freshness::now(self.entry.stored_at_ms, self.entry.ttl_ms);
        self.on_error && freshness.stand(self.entry.stale.unwrap_or(layer)) != Stand::Expired
    }

    /// The same entry with its age and freshness counted now: a
    /// stale-if-error fallback is served after the origin call, not when
    /// it was judged.
    pub(crate) fn recounted(self) -> Usable {
        let freshness = Freshness::now(self.entry.stored_at_ms, self.entry.ttl_ms);
        Usable {
            entry: self.entry,
            freshness,
            on_error: self.on_error,
        }
    }
}

/// Looks the request up: GET with the fill lease, HEAD without.
pub(crate) async fn look_up(shared: &Shared, cacheable: &mut Cacheable) -> Found<Usable> {
    let Cacheable {
        key,
        fill,
        max_variants,
        ..
    } = cacheable;
    let is_base = cacheable.varying.names.is_none();
    let judge = |value| judge(shared, key, is_base, value);
    if cacheable.is_head {
        shared.leases.read(&key.key, fill, judge).await
    } else {
        let max = Some(*max_variants);
        shared.leases.find(&key.key, max, fill, judge).await
    }
}

/// Decodes a stored value and says whether, and how, it may answer.
/// `is_base`: whether `key` is a base variant, the only kind that holds a
/// vary record.
fn judge(shared: &Shared, key: &DerivedKey, is_base: bool, value: Bytes) -> Judged<Usable> {
    if VaryNames::is_record(&value) {
        return match VaryNames::from_record(&value).filter(|_| is_base) {
            Some(names) => Judged::Varies(names),
            None => {
                tracing::warn!(target: "tower_cache_aside", "removing a vary record that does not decode");
                Judged::Unusable(Some("bad-entry"))
            }
        };
    }
    let tag = xxhash_rust::xxh3::xxh3_64(key.key.variant_bytes());
    let entry = match shared.heads.decode(tag, value) {
        Ok(entry) => entry,
        Err(error) => {
            tracing::warn!(target: "tower_cache_aside", %error, "removing an entry that does not decode");
            return Judged::Unusable(Some("bad-entry"));
        }
    };
    if entry.fingerprint[..] != key.fingerprint[..] {
        // A hash collision, or a value planted under this key.
        return Judged::Unusable(None);
    }
    let freshness = Freshness::now(entry.stored_at_ms, entry.ttl_ms);
    // The entry's own windows where its response set them, else the
    // layer's.
    let policy = &shared.config.policy;
    let windows = entry.stale.unwrap_or(policy.stale);
    let stand = freshness.stand(windows);
    // Past every window, an entry with a validator is kept a while longer
    // to be revalidated (and a no-cache one is revalidated at every use).
    let revalidatable = stand == Stand::Expired
        && !policy.revalidation_window.is_zero()
        && has_validator(entry.status, &entry.headers)
        && freshness
            .past_freshness()
            .is_some_and(|past| past < windows.longest().max(policy.revalidation_window));
    let usable = |on_error| Usable {
        entry,
        freshness,
        on_error,
    };
    match stand {
        Stand::Fresh => Judged::Fresh(usable(false)),
        Stand::StaleWhileRevalidate => Judged::Stale(usable(false)),
        Stand::StaleIfError => Judged::Fallback(usable(true)),
        Stand::Expired if revalidatable => Judged::Fallback(usable(false)),
        Stand::Expired => Judged::Unusable(None),
    }
}
