//! The in-process store: a bounded [moka] cache.
//!
//! Used where there is no Redis (development, tests, a single instance). It
//! keeps the same contract as the Redis store, but nothing is shared between
//! processes. Memory is bounded by a byte budget over keys and values;
//! moka evicts by its TinyLFU policy when the budget is reached, and drops
//! each entry at its own TTL.
//!
//! [moka]: https://docs.rs/moka

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::sync::Cache;
use moka::Expiry;

use super::{Store, StoreFuture};
use crate::key::{EntryKey, ResourceKey, ResourcePattern};

/// Default byte budget of a [`MemoryStore`]: 64 MiB.
const DEFAULT_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Value {
    bytes: Bytes,
    ttl: Duration,
}

/// Expires each entry after the TTL it was put with.
struct PerEntryTtl;

impl Expiry<(ResourceKey, String), Value> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &(ResourceKey, String),
        value: &Value,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &(ResourceKey, String),
        value: &Value,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// An in-process, bounded [`Store`].
///
/// ```
/// use tower_cache_aside::{CacheAsideLayer, MemoryStore};
///
/// let layer = CacheAsideLayer::new(MemoryStore::with_capacity_bytes(8 * 1024 * 1024));
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<(ResourceKey, String), Value>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.entry_count())
            .field("weighted_bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// A store with a 64 MiB budget.
    pub fn new() -> MemoryStore {
        MemoryStore::with_capacity_bytes(DEFAULT_CAPACITY_BYTES)
    }

    /// A store that keeps at most about `bytes` of keys and values.
    pub fn with_capacity_bytes(bytes: u64) -> MemoryStore {
        let cache = Cache::builder()
            .max_capacity(bytes)
            .weigher(|key: &(ResourceKey, String), value: &Value| {
                let size =
                    key.0.prefix().len() + key.0.resource().len() + key.1.len() + value.bytes.len();
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        MemoryStore { cache }
    }

    fn cache_key(key: &EntryKey) -> (ResourceKey, String) {
        (key.resource().clone(), key.variant().to_owned())
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        let value = self.cache.get(&Self::cache_key(key)).map(|v| v.bytes);
        Box::pin(async move { Ok(value) })
    }

    fn put<'a>(&'a self, key: &'a EntryKey, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        self.cache
            .insert(Self::cache_key(key), Value { bytes: value, ttl });
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, ()> {
        self.cache.invalidate(&Self::cache_key(key));
        Box::pin(async { Ok(()) })
    }

    /// Scans the in-process map: O(entries), which for a bounded local map
    /// is cheap next to a network round trip.
    fn purge_resource<'a>(&'a self, resource: &'a ResourceKey) -> StoreFuture<'a, u64> {
        let removed = self.remove_where(|key| key == resource);
        Box::pin(async move { Ok(removed) })
    }

    fn purge_pattern<'a>(&'a self, pattern: &'a ResourcePattern) -> StoreFuture<'a, u64> {
        let removed = self.remove_where(|key| {
            key.prefix() == pattern.prefix() && pattern.matches(key.resource())
        });
        Box::pin(async move { Ok(removed) })
    }
}

impl MemoryStore {
    fn remove_where(&self, doomed: impl Fn(&ResourceKey) -> bool) -> u64 {
        let keys: Vec<Arc<(ResourceKey, String)>> = self
            .cache
            .iter()
            .filter(|(key, _)| doomed(&key.0))
            .map(|(key, _)| key)
            .collect();
        keys.iter()
            .filter(|key| self.cache.remove(key.as_ref()).is_some())
            .count() as u64
    }
}
