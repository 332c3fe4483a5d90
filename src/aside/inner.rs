//! What a [`Cache`](crate::Cache) and its clones share: the leases over
//! the guarded store, the key settings, and how a value is stored and
//! judged when read back.

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::Codec;
use super::value;
use crate::key::KeyConfig;
use crate::lease::{Judged, LeaseGuard, Leases};
use crate::store::guarded::Guarded;
use crate::util::time::{millis, Freshness, StaleWindows, Stand};

/// A cache's settings and state.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) leases: Leases,
    pub(super) keys: KeyConfig,
    pub(super) negative_ttl: Duration,
    pub(super) stale_while_revalidate: Duration,
    pub(super) ttl_jitter: f64,
}

impl Inner {
    /// The store, behind its deadline and circuit breaker.
    pub(super) fn store(&self) -> &Guarded {
        self.leases.store()
    }

    /// The stored bytes of a value (or of the negative marker) and how
    /// long to keep them; `None` when the value does not encode.
    pub(super) fn encode<C: Codec, T: Serialize>(
        &self,
        key: &str,
        value: Option<&T>,
        ttl: Duration,
    ) -> Option<(Bytes, Duration)> {
        let ttl = crate::util::time::jittered(
            if value.is_some() {
                ttl
            } else {
                self.negative_ttl
            },
            self.ttl_jitter,
        );
        let payload = match value {
            Some(value) => match C::encode(value) {
                Ok(payload) => Some(payload),
                Err(error) => {
                    tracing::warn!(target: "tower_cache_aside", %error, key, "value not cached: it does not encode");
                    return None;
                }
            },
            None => None,
        };
        let bytes = value::encode(
            C::ID,
            payload.as_deref(),
            crate::util::time::now_ms(),
            millis(ttl),
            key,
        )?;
        Some((bytes, ttl + self.stale_while_revalidate))
    }

    /// Judges a stored value read back for `key`: unusable when it is
    /// another codec's, another key's, expired, or not a value at all.
    pub(super) fn judge<C: Codec, T: DeserializeOwned>(
        &self,
        key: &str,
        bytes: Bytes,
    ) -> Judged<Option<T>> {
        let Some(stored) = value::decode(bytes) else {
            return Judged::Unusable(None);
        };
        if stored.codec != C::ID || stored.key != key.as_bytes() {
            return Judged::Unusable(None);
        }
        let value = match stored.payload {
            None => None,
            Some(payload) => match C::decode::<T>(&payload) {
                Ok(value) => Some(value),
                Err(_) => return Judged::Unusable(None),
            },
        };
        let freshness = Freshness::now(stored.stored_at_ms, stored.ttl_ms);
        match freshness.stand(StaleWindows {
            while_revalidate: self.stale_while_revalidate,
            if_error: Duration::ZERO,
        }) {
            Stand::Fresh => Judged::Fresh(value),
            Stand::StaleWhileRevalidate => Judged::Stale(value),
            Stand::StaleIfError | Stand::Expired => Judged::Unusable(None),
        }
    }

    /// Stores a fetch's result under its lease, or lets the lease go when
    /// there is nothing to store (the fetch failed, or its value does not
    /// encode). Store errors are logged, never returned.
    pub(super) fn finish_fill<C: Codec, T: Serialize>(
        &self,
        key: &str,
        mut lease: LeaseGuard,
        fetched: Option<&Option<T>>,
        ttl: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Encoded at once, so the future holds no `&T`.
        let encoded = fetched.and_then(|value| self.encode::<C, T>(key, value.as_ref(), ttl));
        async move {
            match encoded {
                Some((bytes, keep)) => {
                    let _ = lease.fill(bytes, keep).await;
                }
                None => lease.release().await,
            }
        }
    }
}
