//! What a backend implements: the [`Store`] trait and the types its
//! methods take and return.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::key::{EntryKey, ResourceKey, ResourcePattern};
use crate::Error;

/// The future a [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// A fill lease's token: random, so that only its holder can fill or
/// release it.
///
/// 128 random bits held as 32 hex digits inline: taking one (every lookup
/// does, in case it misses) allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken([u8; 32]);

impl LeaseToken {
    /// A new random token (128 bits).
    pub fn new() -> LeaseToken {
        LeaseToken(crate::key::hex32(fastrand::u128(..)))
    }

    /// The token's text: 32 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into the array.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The token's text as bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LeaseToken").field(&self.as_str()).finish()
    }
}

impl Default for LeaseToken {
    fn default() -> Self {
        LeaseToken::new()
    }
}

/// Asks a [`Store::lookup`] for the fill lease of a missing entry.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeaseRequest {
    /// The token the lease is taken with.
    pub token: LeaseToken,
    /// How long the lease holds if never released (a crashed holder).
    pub ttl: Duration,
    /// The most entries the key's resource may hold, with the leases of
    /// entries being filled: a lookup that would start one more answers
    /// [`Lookup::Full`] instead of taking the lease. `None`: no bound.
    pub max_entries: Option<usize>,
}

/// How a fill that another caller holds ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillEnd {
    /// The holder wrote the entry: look it up again.
    Filled,
    /// The holder let the lease go without writing (the response was not
    /// cacheable, or the holder failed or went away).
    Released,
}

/// Resolves when a fill held elsewhere ends. It may never resolve (a
/// holder that crashed, a lost notification): callers bound the wait.
pub type FillWait = Pin<Box<dyn Future<Output = FillEnd> + Send>>;

/// What a [`Store::lookup`] found.
#[non_exhaustive]
pub enum Lookup {
    /// The entry.
    Hit(Bytes),
    /// No entry; the caller now holds its fill lease and must
    /// [`fill`](Store::fill) or [`release`](Store::release) it.
    Lease,
    /// No entry, and another caller holds the fill lease.
    Busy(FillWait),
    /// No entry, and no lease could be taken because the store refuses
    /// writes (a full `maxmemory`): call the origin, store nothing.
    Unleased,
    /// No entry, and the resource holds
    /// [`max_entries`](LeaseRequest::max_entries) already: call the origin,
    /// store nothing.
    Full,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Hit(value) => f.debug_tuple("Hit").field(&value.len()).finish(),
            Lookup::Lease => f.write_str("Lease"),
            Lookup::Busy(_) => f.write_str("Busy"),
            Lookup::Unleased => f.write_str("Unleased"),
            Lookup::Full => f.write_str("Full"),
        }
    }
}

/// What a [`Store::fill_varied`] writes.
#[derive(Debug)]
#[non_exhaustive]
pub struct VariedFill<'a> {
    /// The entry whose lease fences the write.
    pub lease: &'a EntryKey,
    /// The token that must still hold it.
    pub token: &'a LeaseToken,
    /// Where the entry goes: a variant of `lease`'s resource.
    pub entry: &'a EntryKey,
    /// The entry.
    pub value: Bytes,
    /// How long the entry is kept.
    pub ttl: Duration,
    /// What becomes of the resource's vary record.
    pub record: VaryRecord<'a>,
    /// The most fields the resource may hold (as
    /// [`LeaseRequest::max_entries`]): a fill that would add a variant or
    /// a record past it writes nothing and releases the lease. `None`: no
    /// bound.
    pub max_entries: Option<usize>,
}

impl VariedFill<'_> {
    /// Whether the entry and the record are of the leased entry's
    /// resource: one hash holds a resource's variants, so one lease fences
    /// them all; another resource's could not.
    pub(crate) fn is_one_resource(&self) -> bool {
        let resource = self.lease.resource();
        self.entry.resource() == resource
            && match &self.record {
                VaryRecord::Set { at, .. } => at.resource() == resource,
                VaryRecord::Keep => true,
            }
    }
}

/// The error of a varied fill across resources.
pub(crate) fn across_resources() -> crate::Error {
    crate::Error::Store("a varied fill names another resource's variant".into())
}

/// What a varied fill does to a resource's vary record.
#[derive(Debug)]
#[non_exhaustive]
pub enum VaryRecord<'a> {
    /// Leaves records as they are (but for the one of the entry's own
    /// variant, which any write of an entry removes).
    Keep,
    /// Writes the record `value` under the variant `at` (the resource's
    /// base variant), kept at least `ttl`, and removes the entry that
    /// variant held: the resource's responses now vary.
    Set {
        /// The base variant.
        at: &'a EntryKey,
        /// The record.
        value: Bytes,
    },
}

/// A key-value store for cached entries.
///
/// Values are opaque bytes, encoded and validated by the layer. Every method
/// may fail; the layer treats a failure as a miss (reads) or a skipped write.
pub trait Store: Send + Sync + 'static {
    /// Reads one entry; `Ok(None)` when there is none.
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>>;

    /// Writes one entry, replacing any previous value, expiring after `ttl`.
    fn put<'a>(&'a self, key: &'a EntryKey, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()>;

    /// Reads one entry; when there is none, takes its fill lease with
    /// `lease`, or reports that someone else holds it, or that the
    /// resource is full (`lease.max_entries`). Leases are per entry
    /// key, and every purge of a resource also drops its leases: so a fill
    /// that began before a purge can never be written after it.
    fn lookup<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, Lookup>;

    /// Takes the fill lease of an entry whether or not the entry exists (to
    /// refresh a stale one); `Ok(false)` when someone else holds it.
    fn lease<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, bool>;

    /// Writes an entry only if `token` still holds its lease, then drops
    /// the lease and wakes the callers waiting on it. `Ok(false)` when the
    /// lease was lost (purged, expired): nothing was written.
    fn fill<'a>(
        &'a self,
        key: &'a EntryKey,
        value: Bytes,
        ttl: Duration,
        token: &'a LeaseToken,
    ) -> StoreFuture<'a, bool>;

    /// A [`fill`](Store::fill) for a response that varies on request
    /// fields the lookup did not know (its `Vary`): while `token` holds
    /// the lease of `fill.lease`, writes the entry under `fill.entry`, a
    /// variant of the same resource, and the resource's vary record as
    /// `fill.record` says; then drops the lease and wakes the callers
    /// waiting on it. All or nothing: `Ok(false)` when the lease was lost.
    ///
    /// Writing an entry removes the vary record its own variant held. A
    /// store that keeps vary records returns a variant's record from
    /// [`get`](Store::get) and [`lookup`](Store::lookup) (as a hit) when
    /// the variant has no entry, and removes it with
    /// [`remove`](Store::remove); purges remove records with the entries
    /// and do not count them.
    ///
    /// The default, for a store that keeps no records, writes nothing and
    /// releases the lease (the response is served, not stored), unless the
    /// fill is a plain one. A store that wraps another must forward this
    /// method, as it forwards [`fill`](Store::fill).
    fn fill_varied<'a>(&'a self, fill: VariedFill<'a>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if fill.entry == fill.lease && matches!(fill.record, VaryRecord::Keep) {
                return self
                    .fill(fill.lease, fill.value, fill.ttl, fill.token)
                    .await;
            }
            tracing::debug!(
                target: "tower_cache_aside",
                "the store keeps no vary records: a varied response is not stored"
            );
            self.release(fill.lease, fill.token).await?;
            Ok(false)
        })
    }

    /// Drops a lease that `token` holds without writing, and wakes the
    /// callers waiting on it.
    fn release<'a>(&'a self, key: &'a EntryKey, token: &'a LeaseToken) -> StoreFuture<'a, ()>;

    /// Reads several entries at once, in the order of `keys`. The default
    /// calls [`get`](Store::get) for each, concurrently; the Redis store
    /// sends one script per Cluster slot, which reads each entry as `get`
    /// does.
    fn get_many<'a>(&'a self, keys: &'a [EntryKey]) -> StoreFuture<'a, Vec<Option<Bytes>>> {
        Box::pin(async move {
            futures_util::future::join_all(keys.iter().map(|key| self.get(key)))
                .await
                .into_iter()
                .collect()
        })
    }

    /// Removes one entry (for instance one that did not decode).
    fn remove<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, ()>;

    /// Removes every variant of a resource, and their leases; returns how
    /// many entries went. Costs O(the resource's variants).
    fn purge_resource<'a>(&'a self, resource: &'a ResourceKey) -> StoreFuture<'a, u64>;

    /// Removes every variant (and lease) of every resource the pattern
    /// matches; returns how many entries went. May scan the keyspace (in bounded batches).
    fn purge_pattern<'a>(&'a self, pattern: &'a ResourcePattern) -> StoreFuture<'a, u64>;

    /// This store with every call bounded by `timeout` by the store itself,
    /// failing with [`Error::Timeout`] when it runs out; or `None` (the
    /// default) when the store cannot do that.
    ///
    /// The layer and the typed [`Cache`](crate::Cache) bound each of their
    /// store calls. They ask for such a view once, when they are built:
    /// with one, they arm no timer of their own on every call. The Redis
    /// store keeps a hit's deadline with one watchdog thread per store and
    /// gives its other commands the time their call has left as fred's
    /// timeout, so a hit arms no timer and other calls one, not two.
    fn bounded(&self, timeout: Duration) -> Option<Arc<dyn Store>> {
        let _ = timeout;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::LeaseToken;

    #[test]
    fn lease_tokens_are_32_hex_digits_and_distinct() {
        let tokens: Vec<LeaseToken> = (0..1000).map(|_| LeaseToken::new()).collect();
        for token in &tokens {
            assert_eq!(token.as_str().len(), 32);
            assert!(token
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert_eq!(token.as_bytes(), token.as_str().as_bytes());
        }
        let distinct: std::collections::HashSet<&str> =
            tokens.iter().map(LeaseToken::as_str).collect();
        assert_eq!(distinct.len(), tokens.len());
    }
}
