//! The fill protocol: one origin call per cold key, and no stale fill
//! after a purge. The layer and the typed
//! [`Cache`](crate::Cache) both look values up through [`Leases::find`].
//!
//! A caller that misses takes the entry's fill lease in the same round trip
//! as its lookup ([`Store::lookup`]). Only the lease holder calls the origin
//! and stores; it stores through [`Store::fill`] (or
//! [`Store::fill_varied`], for a response whose `Vary` puts it under
//! another variant of the resource), which writes only while its token
//! still holds the lease. Every purge drops the leases of what it
//! purges, so a fill whose origin call began before a write can never store
//! its old answer after the write's purge (the leases of memcache at
//! Facebook, NSDI 2013).
//!
//! Everyone else who misses while the lease is held (in this process or
//! another) waits, at most `fill_wait`, to be told the fill has ended, then
//! looks again: the value is there (a hit), or the lease is free and they
//! take it. If the holder let the lease go without storing (an uncacheable
//! answer), or the wait runs out, they call the origin themselves and store
//! nothing.
//!
//! A [`LeaseGuard`] owns a held lease. Whatever happens to its holder (the
//! answer is not cacheable, the origin fails, the client goes away, the
//! future is dropped), the guard releases the lease when it is dropped, so
//! waiters are woken at once rather than at the lease's TTL.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::key::{EntryKey, VaryNames};
use crate::store::backend::{
    FillEnd, LeaseRequest, LeaseToken, Lookup, Store, VariedFill, VaryRecord,
};
use crate::store::guarded::Guarded;
use crate::Error;

/// How a caller judged a stored value it read back.
#[derive(Debug)]
pub(crate) enum Judged<T> {
    /// Serve it.
    Fresh(T),
    /// Serve it, and refresh it in the background (stale-while-revalidate).
    Stale(T),
    /// Call the origin, and answer with this if the origin fails
    /// (stale-if-error).
    Fallback(T),
    /// It may not answer (another key's, expired, does not decode): it is
    /// removed. The detail, if any, is worth reporting.
    Unusable(Option<&'static str>),
    /// It is the resource's vary record: the entry is under the variant
    /// these request fields give.
    Varies(VaryNames),
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Found<T> {
    /// A fresh value.
    Fresh(T),
    /// A value within its stale-while-revalidate window: serve it; when
    /// the [`Fill`] holds the lease, refresh it in the background.
    Stale(T),
    /// Nothing to serve: call the origin, storing only with the lease.
    Miss,
    /// The resource's responses vary on these request fields: look up the
    /// variant they give. No lease was taken.
    Varies(VaryNames),
}

/// What a lookup leaves its caller for the origin call that may follow.
#[derive(Debug)]
pub(crate) struct Fill<T> {
    /// The fill lease, when this caller holds it: only then is the
    /// origin's answer stored.
    pub(crate) lease: Option<LeaseGuard>,
    /// A stale value to answer with if the origin fails.
    pub(crate) fallback: Option<Box<T>>,
    /// Whether the caller waited on another caller's fill.
    pub(crate) collapsed: bool,
    /// Whether the fill this caller waited on ended "filled" and yet left
    /// nothing here: the holder stored elsewhere (a response whose `Vary`
    /// put it under another variant), or a purge followed.
    pub(crate) filled_elsewhere: bool,
    /// Why nothing usable was found, when it is worth saying (a
    /// `Cache-Status` detail).
    pub(crate) detail: Option<&'static str>,
}

impl<T> Default for Fill<T> {
    fn default() -> Self {
        Fill {
            lease: None,
            fallback: None,
            collapsed: false,
            filled_elsewhere: false,
            detail: None,
        }
    }
}

/// Lookups with fill leases over one guarded store.
#[derive(Debug)]
pub(crate) struct Leases {
    store: Arc<Guarded>,
    ttl: Duration,
    fill_wait: Duration,
}

impl Leases {
    /// Leases of `ttl`, waits on other holders of at most `fill_wait`.
    pub(crate) fn new(store: Arc<Guarded>, ttl: Duration, fill_wait: Duration) -> Leases {
        Leases {
            store,
            ttl,
            fill_wait,
        }
    }

    /// The store the leases are taken in.
    pub(crate) fn store(&self) -> &Arc<Guarded> {
        &self.store
    }

    /// A request for a lease, with a new token.
    pub(crate) fn request(&self) -> LeaseRequest {
        LeaseRequest {
            token: LeaseToken::new(),
            ttl: self.ttl,
            max_entries: None,
        }
    }

    /// Looks `key` up: a value to serve (judged by `judge`), or the lease
    /// (then `fill.lease` is set), or, after waiting on another holder or
    /// a store failure, a miss with `fill.detail` saying why.
    ///
    /// A value `judge` finds unusable is removed and looked up once more,
    /// which takes the lease, so that the fresh answer gets stored.
    ///
    /// `max_entries` bounds the entries of the key's resource: past it, a
    /// new entry is not started (a miss with `fill.detail` saying so).
    pub(crate) async fn find<T>(
        &self,
        key: &EntryKey,
        max_entries: Option<usize>,
        fill: &mut Fill<T>,
        mut judge: impl FnMut(Bytes) -> Judged<T>,
    ) -> Found<T> {
        // The wait on another holder's fill is bounded from the first time
        // this caller finds one (a hit never reads the clock for it).
        let mut deadline = None;
        let mut request = self.request();
        request.max_entries = max_entries;
        let mut removed_one = false;
        let mut woken_filled = false;
        loop {
            let found = match self.store.call(|store| store.lookup(key, &request)).await {
                Ok(found) => found,
                Err(error) => {
                    // The lookup may have run and taken the lease after
                    // all: let it go, or everyone waits for its TTL.
                    self.release_unclaimed(key, request.token);
                    fill.detail = Some(detail_of(&error));
                    return Found::Miss;
                }
            };
            match found {
                Lookup::Hit(value) => match judge(value) {
                    Judged::Fresh(value) => return Found::Fresh(value),
                    Judged::Stale(value) => {
                        fill.lease = self.take(key, &request).await;
                        return Found::Stale(value);
                    }
                    Judged::Fallback(value) => {
                        fill.lease = self.take(key, &request).await;
                        fill.fallback = Some(Box::new(value));
                        return Found::Miss;
                    }
                    Judged::Varies(names) => return Found::Varies(names),
                    Judged::Unusable(detail) => {
                        self.remove(key).await;
                        fill.detail = detail;
                        if removed_one {
                            return Found::Miss;
                        }
                        removed_one = true;
                    }
                },
                Lookup::Lease => {
                    fill.lease = Some(self.lease_guard(key, request.token));
                    fill.filled_elsewhere = woken_filled;
                    return Found::Miss;
                }
                Lookup::Unleased => {
                    fill.detail = Some("store-refuses-writes");
                    return Found::Miss;
                }
                Lookup::Full => {
                    fill.detail = Some("too-many-variants");
                    return Found::Miss;
                }
                Lookup::Busy(wait) => {
                    fill.collapsed = true;
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.fill_wait);
                    match tokio::time::timeout_at(deadline, wait).await {
                        // The holder stored, or its lease went: look again.
                        Ok(FillEnd::Filled) => {
                            woken_filled = true;
                            continue;
                        }
                        Ok(FillEnd::Released) => {
                            fill.detail = Some("fill-released");
                            return Found::Miss;
                        }
                        Err(_) => {
                            fill.detail = Some("fill-wait");
                            return Found::Miss;
                        }
                    }
                }
            }
        }
    }

    /// Looks `key` up without taking a lease (a HEAD request): a value to
    /// serve (fresh, or within stale-while-revalidate) or a miss.
    pub(crate) async fn read<T>(
        &self,
        key: &EntryKey,
        fill: &mut Fill<T>,
        judge: impl FnOnce(Bytes) -> Judged<T>,
    ) -> Found<T> {
        match self.store.call(|store| store.get(key)).await {
            Ok(None) => Found::Miss,
            Ok(Some(value)) => match judge(value) {
                Judged::Fresh(value) => Found::Fresh(value),
                Judged::Stale(value) => Found::Stale(value),
                Judged::Fallback(_) => Found::Miss,
                Judged::Varies(names) => Found::Varies(names),
                Judged::Unusable(detail) => {
                    self.remove(key).await;
                    fill.detail = detail;
                    Found::Miss
                }
            },
            Err(error) => {
                fill.detail = Some(detail_of(&error));
                Found::Miss
            }
        }
    }

    /// Takes the lease of `key` whether or not a value exists (to refresh
    /// a stale one, or to fence a batch's writes); `None` when another
    /// caller holds it or the store failed.
    pub(crate) async fn take(&self, key: &EntryKey, request: &LeaseRequest) -> Option<LeaseGuard> {
        match self.store.call(|store| store.lease(key, request)).await {
            Ok(true) => Some(self.lease_guard(key, request.token)),
            Ok(false) => None,
            Err(_) => {
                self.release_unclaimed(key, request.token);
                None
            }
        }
    }

    /// Removes the value at `key`, under the store deadline. Done before
    /// the origin is called, so it cannot race the write of the fresh
    /// answer.
    async fn remove(&self, key: &EntryKey) {
        let _ = self.store.call(|store| store.remove(key)).await;
    }

    fn lease_guard(&self, key: &EntryKey, token: LeaseToken) -> LeaseGuard {
        LeaseGuard {
            store: self.store.clone(),
            key: key.clone(),
            token: Some(token),
        }
    }

    /// Releases a lease that a failed or late call may have taken with
    /// `token` without the caller knowing. The release only deletes a
    /// lease that token holds, so it is harmless when none was taken. It is
    /// sent twice, the second time a moment later, in case the late call,
    /// on another pooled connection, reaches the store after the first.
    fn release_unclaimed(&self, key: &EntryKey, token: LeaseToken) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, key) = (self.store.clone(), key.clone());
        let timeout = store.timeout().max(Duration::from_millis(500));
        runtime.spawn(async move {
            for delay in [Duration::ZERO, Duration::from_secs(1)] {
                tokio::time::sleep(delay).await;
                let _ = store
                    .raw_within(timeout, |store| store.release(&key, &token))
                    .await;
            }
        });
    }
}

/// The `Cache-Status` detail of a failed store call.
fn detail_of(error: &Error) -> &'static str {
    match error {
        Error::Timeout(_) => "store-timeout",
        _ => "store-error",
    }
}

/// A held fill lease; released on drop unless it was used to fill.
pub(crate) struct LeaseGuard {
    store: Arc<Guarded>,
    key: EntryKey,
    token: Option<LeaseToken>,
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("key", &self.key)
            .field("held", &self.token.is_some())
            .finish()
    }
}

impl LeaseGuard {
    /// The key the lease is for.
    pub(crate) fn key(&self) -> &EntryKey {
        &self.key
    }

    /// Stores `value` for `keep` if the lease still holds: `Ok(false)` when
    /// it was lost (purged, expired) and nothing was written. On an error
    /// the lease is released. The lease is used up either way.
    pub(crate) async fn fill(&mut self, value: Bytes, keep: Duration) -> Result<bool, Error> {
        let Some(token) = self.token.take() else {
            return Ok(false);
        };
        let (store, key) = (&self.store, &self.key);
        let result = store.call(|s| s.fill(key, value, keep, &token)).await;
        if result.is_err() {
            let _ = store.call(|s| s.release(key, &token)).await;
        }
        result
    }

    /// Stores `value` for `keep` under `entry`, a variant of the leased
    /// entry's resource, and the resource's vary `record` (its base variant
    /// and the record), if the lease still holds and what it adds keeps the
    /// resource within `max_entries`: as [`fill`](Self::fill) does for the
    /// leased entry.
    pub(crate) async fn fill_varied(
        &mut self,
        entry: &EntryKey,
        value: Bytes,
        keep: Duration,
        record: Option<(&EntryKey, Bytes)>,
        max_entries: Option<usize>,
    ) -> Result<bool, Error> {
        let Some(token) = self.token.take() else {
            return Ok(false);
        };
        let (store, key) = (&self.store, &self.key);
        let result = store
            .call(|s| {
                s.fill_varied(VariedFill {
                    lease: key,
                    token: &token,
                    entry,
                    value,
                    ttl: keep,
                    record: match record {
                        Some((at, value)) => VaryRecord::Set { at, value },
                        None => VaryRecord::Keep,
                    },
                    max_entries,
                })
            })
            .await;
        if result.is_err() {
            let _ = store.call(|s| s.release(key, &token)).await;
        }
        result
    }

    /// Lets the lease go now, waking whoever waits on it.
    pub(crate) async fn release(mut self) {
        if let Some(token) = self.token.take() {
            let (store, key) = (&self.store, &self.key);
            let _ = store.call(|s| s.release(key, &token)).await;
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, key) = (self.store.clone(), self.key.clone());
        runtime.spawn(async move {
            // On failure the lease ends at its TTL.
            let timeout = store.timeout();
            if let Err(error) = store
                .raw_within(timeout, |s: &dyn Store| s.release(&key, &token))
                .await
            {
                tracing::warn!(target: "tower_cache_aside", %error, "lease release failed");
            }
        });
    }
}
