//! The in-process store: a bounded [moka] cache.
//!
//! Used where there is no Redis (development, tests, a single instance). It
//! keeps the same contract as the Redis store, but nothing is shared between
//! processes. Memory is bounded by a byte budget over keys and values;
//! moka evicts by its TinyLFU policy when the budget is reached, and drops
//! each entry at its own TTL.
//!
//! [moka]: https://docs.rs/moka

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::sync::Cache;
use moka::Expiry;

use super::backend::{
    FillEnd, LeaseRequest, LeaseToken, Lookup, Store, StoreFuture, VariedFill, VaryRecord,
};
use super::waiters::Waiters;
use crate::key::{EntryKey, ResourceKey, ResourcePattern};

/// Default byte budget of a [`MemoryStore`]: 64 MiB.
const DEFAULT_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Value {
    bytes: Bytes,
    ttl: Duration,
    /// When it was written (its expiry is `written + ttl`).
    written: Instant,
    /// Which write this is (see [`Variants`]).
    generation: u64,
}

/// The variants each resource holds in the cache, for the bound on them:
/// each variant with the generation of its value. A value leaving the
/// cache (expired, evicted, purged, replaced) takes its variant out only
/// if the variant still has that value's generation, so the common race
/// (a value replaced while the removal of the one before it is delivered)
/// leaves the replacement counted. Two unfenced `put`s of one key that
/// interleave can leave it uncounted, one variant too few, until it
/// leaves the cache; the layer's writes are fills, serialised under the
/// lease lock, and never race that way.
#[derive(Debug, Default)]
struct Variants {
    by_resource: Mutex<HashMap<ResourceKey, HashMap<String, u64>>>,
    next: AtomicU64,
}

impl Variants {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ResourceKey, HashMap<String, u64>>> {
        self.by_resource
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a value about to be written for `key`; its generation.
    fn stored(&self, key: &(ResourceKey, String)) -> u64 {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone(), generation);
        generation
    }

    /// The value of `generation` left the cache.
    fn gone(&self, key: &(ResourceKey, String), generation: u64) {
        let mut by_resource = self.lock();
        if let Some(variants) = by_resource.get_mut(&key.0) {
            if variants.get(&key.1) == Some(&generation) {
                variants.remove(&key.1);
                if variants.is_empty() {
                    by_resource.remove(&key.0);
                }
            }
        }
    }
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
    leases: Arc<Leases>,
    variants: Arc<Variants>,
}

/// Fill leases, and the callers waiting on them.
#[derive(Debug, Default)]
struct Leases {
    held: Mutex<HashMap<(ResourceKey, String), (LeaseToken, Instant)>>,
    waiters: Waiters,
}

/// Whether `token` (any token when `None`) holds the lease of `key`
/// unexpired, and whether a lease of `key` is there but expired.
fn lease_state(
    held: &HashMap<(ResourceKey, String), (LeaseToken, Instant)>,
    key: &(ResourceKey, String),
    token: Option<&LeaseToken>,
) -> (bool, bool) {
    match held.get(key) {
        Some((t, expires)) if *expires > Instant::now() => {
            (token.map_or(true, |token| t == token), false)
        }
        Some(_) => (false, true),
        None => (false, false),
    }
}

fn lease_name(key: &(ResourceKey, String)) -> String {
    format!("{}{}\0{}", key.0.prefix(), key.0.resource(), key.1)
}

impl Leases {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(ResourceKey, String), (LeaseToken, Instant)>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops the lease of `key` if `token` holds it (any lease when `None`)
    /// and wakes its waiters; whether it was held.
    fn drop_lease(
        &self,
        key: &(ResourceKey, String),
        token: Option<&LeaseToken>,
        end: FillEnd,
    ) -> bool {
        let mut held = self.lock();
        let (holds, dead) = lease_state(&held, key, token);
        // A dead lease goes too, whoever asks: nobody can fill it.
        if holds || token.is_none() || dead {
            held.remove(key);
        }
        drop(held);
        self.waiters.wake(&lease_name(key), end);
        holds
    }
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
        let variants = Arc::new(Variants::default());
        let cache = Cache::builder()
            .max_capacity(bytes)
            .weigher(|key: &(ResourceKey, String), value: &Value| {
                let size =
                    key.0.prefix().len() + key.0.resource().len() + key.1.len() + value.bytes.len();
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .eviction_listener({
                let variants = variants.clone();
                move |key: Arc<(ResourceKey, String)>, value: Value, _cause| {
                    variants.gone(&key, value.generation)
                }
            })
            .build();
        MemoryStore {
            cache,
            leases: Arc::default(),
            variants,
        }
    }

    /// Writes `value` under `key`.
    fn write(&self, key: (ResourceKey, String), bytes: Bytes, ttl: Duration) {
        let generation = self.variants.stored(&key);
        self.cache.insert(
            key,
            Value {
                bytes,
                ttl,
                written: Instant::now(),
                generation,
            },
        );
    }

    /// Whether a new variant of `key`'s resource would pass `max`, counting
    /// the leases of variants being filled (under the lease lock `held`).
    fn is_full(
        &self,
        key: &(ResourceKey, String),
        max: Option<usize>,
        held: &HashMap<(ResourceKey, String), (LeaseToken, Instant)>,
        now: Instant,
    ) -> bool {
        let Some(max) = max else {
            return false;
        };
        // Under the lease lock already: leases, then variants, as
        // everywhere.
        let by_resource = self.variants.lock();
        let variants = by_resource.get(&key.0);
        let stored = |variant: &str| variants.is_some_and(|v| v.contains_key(variant));
        let count = variants.map_or(0, HashMap::len);
        if stored(&key.1) || count + held.len() < max {
            // There, or room even if every lease were this resource's.
            return false;
        }
        let filling = held
            .iter()
            .filter(|(k, (_, expires))| k.0 == key.0 && *expires > now && !stored(&k.1))
            .count();
        count + filling >= max
    }

    /// Whether writing `entry` (and the vary record of `base`, which
    /// replaces `base`'s entry) keeps its resource within `max` values.
    fn fits(
        &self,
        entry: &(ResourceKey, String),
        base: Option<&(ResourceKey, String)>,
        max: usize,
    ) -> bool {
        let by_resource = self.variants.lock();
        let Some(variants) = by_resource.get(&entry.0) else {
            return true;
        };
        let there = |key: &(ResourceKey, String)| variants.contains_key(&key.1);
        let mut adding = isize::from(!there(entry));
        if let Some(base) = base {
            adding += isize::from(!there(&Self::record_key(base))) - isize::from(there(base));
        }
        adding <= 0 || variants.len().saturating_add(adding.unsigned_abs()) <= max
    }

    fn cache_key(key: &EntryKey) -> (ResourceKey, String) {
        (key.resource().clone(), key.variant().to_owned())
    }

    /// Where the vary record of `key`'s variant is kept: the variant with
    /// a mark no variant starts with.
    fn record_key(key: &(ResourceKey, String)) -> (ResourceKey, String) {
        (key.0.clone(), format!("{RECORD_MARK}{}", key.1))
    }

    /// The entry at `key`, else its variant's vary record.
    fn read(&self, key: &(ResourceKey, String)) -> Option<Bytes> {
        self.cache
            .get(key)
            .or_else(|| self.cache.get(&Self::record_key(key)))
            .map(|v| v.bytes)
    }

    /// Writes an entry, which ends its variant's vary record.
    fn write_entry(&self, key: (ResourceKey, String), bytes: Bytes, ttl: Duration) {
        self.cache.invalidate(&Self::record_key(&key));
        self.write(key, bytes, ttl);
    }
}

/// Marks a vary record's key (variants are hex digits).
const RECORD_MARK: char = 'm';

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        let value = self.read(&Self::cache_key(key));
        Box::pin(async move { Ok(value) })
    }

    fn put<'a>(&'a self, key: &'a EntryKey, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        self.write_entry(Self::cache_key(key), value, ttl);
        Box::pin(async { Ok(()) })
    }

    fn lookup<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, Lookup> {
        let key = Self::cache_key(key);
        let found = if let Some(value) = self.read(&key) {
            Lookup::Hit(value)
        } else {
            let now = Instant::now();
            let mut held = self.leases.lock();
            match held.get(&key) {
                Some((_, expires)) if *expires > now => {
                    let wait = self.leases.waiters.register(&lease_name(&key));
                    Lookup::Busy(wait)
                }
                // A dead lease of this key is no room of its own: the
                // bound is checked as for a new variant.
                _ if self.is_full(&key, lease.max_entries, &held, now) => Lookup::Full,
                _ => {
                    held.insert(key, (lease.token, now + lease.ttl));
                    Lookup::Lease
                }
            }
        };
        Box::pin(async move { Ok(found) })
    }

    fn lease<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, bool> {
        let key = Self::cache_key(key);
        let now = Instant::now();
        let mut held = self.leases.lock();
        let taken = match held.get(&key) {
            Some((_, expires)) if *expires > now => false,
            _ => {
                held.insert(key, (lease.token, now + lease.ttl));
                true
            }
        };
        Box::pin(async move { Ok(taken) })
    }

    fn fill<'a>(
        &'a self,
        key: &'a EntryKey,
        value: Bytes,
        ttl: Duration,
        token: &'a LeaseToken,
    ) -> StoreFuture<'a, bool> {
        let key = Self::cache_key(key);
        // Written under the lease lock, so that a purge cannot fall between
        // the check and the write.
        let mut held = self.leases.lock();
        let (holds, dead) = lease_state(&held, &key, Some(token));
        if holds || dead {
            held.remove(&key);
        }
        if holds {
            self.write_entry(key.clone(), value, ttl);
        }
        drop(held);
        self.leases.waiters.wake(&lease_name(&key), FillEnd::Filled);
        Box::pin(async move { Ok(holds) })
    }

    fn fill_varied<'a>(&'a self, fill: VariedFill<'a>) -> StoreFuture<'a, bool> {
        if !fill.is_one_resource() {
            return Box::pin(async { Err(super::backend::across_resources()) });
        }
        let VariedFill {
            lease,
            token,
            entry,
            value,
            ttl,
            record,
            max_entries,
        } = fill;
        let (lease, entry) = (Self::cache_key(lease), Self::cache_key(entry));
        let base = match record {
            VaryRecord::Set { at, value } => Some((Self::cache_key(at), value)),
            _ => None,
        };
        let mut held = self.leases.lock();
        let (holds, dead) = lease_state(&held, &lease, Some(token));
        if holds || dead {
            held.remove(&lease);
        }
        let base = base.filter(|(at, _)| *at != entry);
        let fits = max_entries.map_or(true, |max| {
            self.fits(&entry, base.as_ref().map(|(at, _)| at), max)
        });
        let wrote = holds && fits;
        if wrote {
            self.write_entry(entry.clone(), value, ttl);
            if let Some((at, record)) = base {
                let record_key = Self::record_key(&at);
                // Kept at least as long as the entry, and as long as the
                // old record had left.
                let left = |old: Value| old.ttl.saturating_sub(old.written.elapsed());
                let keep = self
                    .cache
                    .get(&record_key)
                    .map_or(ttl, |old| left(old).max(ttl));
                self.write(record_key, record, keep);
                self.cache.invalidate(&at);
            }
        }
        drop(held);
        let end = if wrote {
            FillEnd::Filled
        } else {
            FillEnd::Released
        };
        self.leases.waiters.wake(&lease_name(&lease), end);
        Box::pin(async move { Ok(wrote) })
    }

    fn release<'a>(&'a self, key: &'a EntryKey, token: &'a LeaseToken) -> StoreFuture<'a, ()> {
        let key = Self::cache_key(key);
        if self.leases.drop_lease(&key, Some(token), FillEnd::Released) {
            tracing::trace!(target: "tower_cache_aside", "lease released");
        }
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, ()> {
        let key = Self::cache_key(key);
        self.cache.invalidate(&Self::record_key(&key));
        self.cache.invalidate(&key);
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
        // Leases first, under their lock: a fill that began before this
        // purge can no longer write.
        let mut held = self.leases.lock();
        let dropped: Vec<(ResourceKey, String)> =
            held.keys().filter(|key| doomed(&key.0)).cloned().collect();
        for key in &dropped {
            held.remove(key);
        }
        let removed = self.remove_entries_where(&doomed);
        drop(held);
        for key in &dropped {
            self.leases.waiters.wake(&lease_name(key), FillEnd::Filled);
        }
        removed
    }

    fn remove_entries_where(&self, doomed: &impl Fn(&ResourceKey) -> bool) -> u64 {
        let keys: Vec<Arc<(ResourceKey, String)>> = self
            .cache
            .iter()
            .filter(|(key, _)| doomed(&key.0))
            .map(|(key, _)| key)
            .collect();
        // Vary records go too, but are not entries to count.
        keys.iter()
            .filter(|key| self.cache.remove(key.as_ref()).is_some())
            .filter(|key| !key.1.starts_with(RECORD_MARK))
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use http::Request;

    use super::*;
    use crate::key::{KeyConfig, QueryKey};

    fn key(uri: &str) -> EntryKey {
        let keys = KeyConfig {
            prefix: Arc::from("t:"),
            include_authority: false,
            query: QueryKey::All,
            vary_by: Vec::new(),
        };
        let request = Request::get(uri).body(()).unwrap();
        keys.derive(&request).unwrap().key
    }

    fn lease(ttl: Duration) -> LeaseRequest {
        LeaseRequest {
            token: LeaseToken::new(),
            ttl,
            max_entries: Some(1),
        }
    }

    /// A lease that died unfilled is no room of its own: asking for its
    /// variant again is checked against the bound like a new variant.
    #[tokio::test]
    async fn a_dead_lease_does_not_widen_the_bound() {
        let store = MemoryStore::new();
        let (first, second) = (key("/p?a=1"), key("/p?a=2"));
        let short = lease(Duration::from_millis(1));
        assert!(matches!(
            store.lookup(&first, &short).await,
            Ok(Lookup::Lease)
        ));
        // Waits for a lease TTL to pass, not for a signal.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let long = lease(Duration::from_secs(60));
        assert!(matches!(
            store.lookup(&second, &long).await,
            Ok(Lookup::Lease)
        ));
        assert!(matches!(
            store.lookup(&first, &long).await,
            Ok(Lookup::Full)
        ));
        assert!(store
            .leases
            .lock()
            .get(&MemoryStore::cache_key(&first))
            .is_some());
        // Releasing the dead lease, whoever asks, drops it.
        store.release(&first, &LeaseToken::new()).await.unwrap();
        assert!(store
            .leases
            .lock()
            .get(&MemoryStore::cache_key(&first))
            .is_none());
    }
}
