//! Fill leases: one origin call per cold key, and no stale fill after a
//! purge (DESIGN.md 4.1 and 4.3).
//!
//! A GET that misses takes the entry's fill lease in the same round trip as
//! its lookup ([`Store::lookup`](crate::Store::lookup)). Only the lease
//! holder calls the origin and stores; it stores through
//! [`Store::fill`](crate::Store::fill), which writes only while its token
//! still holds the lease. Every purge drops the leases of what it purges, so
//! a fill whose origin call began before a write can never store its old
//! answer after the write's purge (the leases of memcache at Facebook,
//! NSDI 2013).
//!
//! Everyone else who misses while the lease is held (in this process or
//! another) waits, at most [`Builder::fill_wait`](crate::Builder::fill_wait),
//! to be told the fill has ended, then looks again: the entry is there (a
//! hit), or the lease is free and they take it. If the holder let the lease
//! go without storing (an uncacheable response), or the wait runs out, they
//! call the origin themselves and store nothing.
//!
//! A [`LeaseGuard`] owns a held lease. Whatever happens to the request
//! (the response is not cacheable, the inner service fails, the client goes
//! away, the future is dropped), the guard releases the lease when it is
//! dropped, so waiters are woken at once rather than at the lease's TTL.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::entry::Entry;
use crate::key::EntryKey;
use crate::layer::Config;
use crate::service::MissContext;
use crate::store::{FillEnd, LeaseRequest, LeaseToken, Lookup, Store};

/// A held fill lease; released on drop unless it was used to fill. Used by
/// the layer and by the typed [`Cache`](crate::Cache) alike.
pub(crate) struct LeaseGuard {
    store: Arc<dyn Store>,
    timeout: Duration,
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
    pub(crate) fn new(
        store: Arc<dyn Store>,
        timeout: Duration,
        key: EntryKey,
        token: LeaseToken,
    ) -> LeaseGuard {
        LeaseGuard {
            store,
            timeout,
            key,
            token: Some(token),
        }
    }

    /// Hands the token over for a fill: the guard no longer releases it.
    pub(crate) fn take_token(mut self) -> Option<LeaseToken> {
        self.token.take()
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
        let (store, key, timeout) = (self.store.clone(), self.key.clone(), self.timeout);
        runtime.spawn(async move {
            // On failure the lease ends at its TTL.
            if let Ok(Err(error)) = tokio::time::timeout(timeout, store.release(&key, &token)).await
            {
                tracing::warn!(target: "tower_cache_aside", %error, "lease release failed");
            }
        });
    }
}

/// The guard of a lease this request just took.
fn guard(config: &Config, miss: &MissContext, token: LeaseToken) -> LeaseGuard {
    LeaseGuard::new(
        config.store.clone(),
        config.store_timeout,
        miss.key.key.clone(),
        token,
    )
}

/// What a GET's lookup found.
#[derive(Debug)]
pub(crate) enum Found {
    /// A fresh entry, and the wall-clock time (ms) it was judged at.
    Fresh(Entry, u64),
    /// An entry within its stale-while-revalidate window: serve it; when
    /// `miss.lease` is set, this request refreshes it in the background.
    Stale(Entry, u64),
    /// Nothing to serve: call the origin (storing only with `miss.lease`;
    /// falling back on `miss.stale` if the origin fails).
    Nothing,
}

/// Looks `miss.key` up for a GET: an entry to serve, or the lease (then
/// `miss.lease` is set), or, after waiting on another holder, a reason to
/// call the origin without storing (`Err(detail)`, or `Nothing` with
/// `miss.detail` set).
pub(crate) async fn find(
    config: &Arc<Config>,
    miss: &mut MissContext,
) -> Result<Found, &'static str> {
    // The wait on another holder's fill is bounded from the first time
    // this request finds one (a hit never reads the clock for it).
    let mut deadline = None;
    let request = LeaseRequest {
        token: LeaseToken::new(),
        ttl: config.lease_ttl,
    };
    // An unusable entry is removed and looked up once more, which takes
    // the lease so that the fresh answer gets stored.
    let mut removed_one = false;
    loop {
        let found = match config
            .store_call(|store| store.lookup(&miss.key.key, &request))
            .await
        {
            Ok(found) => found,
            Err(error) => {
                // The lookup may have run on Redis and taken the lease
                // after all: let it go, or everyone waits for its TTL.
                release_unclaimed(
                    config.store.clone(),
                    miss.key.key.clone(),
                    request.token,
                    config.store_timeout,
                );
                return Err(detail_of(error));
            }
        };
        match found {
            Lookup::Hit(value) => match usable(config, miss, value) {
                Ok((entry, Freshness::Fresh, now)) => return Ok(Found::Fresh(entry, now)),
                Ok((entry, freshness, now)) => {
                    // Stale: whoever takes the lease refreshes it.
                    let lease = config.store_call(|store| store.lease(&miss.key.key, &request));
                    match lease.await {
                        Ok(true) => miss.lease = Some(guard(config, miss, request.token)),
                        Ok(false) => {}
                        Err(_) => release_unclaimed(
                            config.store.clone(),
                            miss.key.key.clone(),
                            request.token,
                            config.store_timeout,
                        ),
                    }
                    if freshness == Freshness::StaleWhileRevalidate {
                        return Ok(Found::Stale(entry, now));
                    }
                    miss.stale = Some(Box::new(entry));
                    return Ok(Found::Nothing);
                }
                Err(detail) => {
                    remove(config, miss).await;
                    miss.detail = detail;
                    if removed_one {
                        return Ok(Found::Nothing);
                    }
                    removed_one = true;
                }
            },
            Lookup::Lease => {
                miss.lease = Some(guard(config, miss, request.token));
                return Ok(Found::Nothing);
            }
            Lookup::Unleased => {
                miss.detail = Some("store-refuses-writes");
                return Ok(Found::Nothing);
            }
            Lookup::Busy(wait) => {
                miss.collapsed = true;
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + config.fill_wait);
                match tokio::time::timeout_at(deadline, wait).await {
                    // The holder stored, or its lease went: look again.
                    Ok(FillEnd::Filled) => continue,
                    Ok(FillEnd::Released) => {
                        miss.detail = Some("fill-released");
                        return Ok(Found::Nothing);
                    }
                    Err(_) => {
                        miss.detail = Some("fill-wait");
                        return Ok(Found::Nothing);
                    }
                }
            }
        }
    }
}

/// Looks `miss.key` up without a lease (HEAD): an entry to serve (fresh,
/// or stale within stale-while-revalidate) or nothing.
pub(crate) async fn get(
    config: &Arc<Config>,
    miss: &mut MissContext,
) -> Result<Found, &'static str> {
    match config.store_call(|store| store.get(&miss.key.key)).await {
        Ok(None) => Ok(Found::Nothing),
        Ok(Some(value)) => match usable(config, miss, value) {
            Ok((entry, Freshness::Fresh, now)) => Ok(Found::Fresh(entry, now)),
            Ok((entry, Freshness::StaleWhileRevalidate, now)) => Ok(Found::Stale(entry, now)),
            Ok((_, Freshness::StaleIfError, _)) => Ok(Found::Nothing),
            Err(detail) => {
                remove(config, miss).await;
                miss.detail = detail;
                Ok(Found::Nothing)
            }
        },
        Err(error) => Err(detail_of(error)),
    }
}

/// The `Cache-Status` detail of a failed store call.
fn detail_of(error: crate::Error) -> &'static str {
    match error {
        crate::Error::Timeout(_) => "store-timeout",
        _ => "store-error",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    Fresh,
    /// Past its freshness, within the stale-while-revalidate window.
    StaleWhileRevalidate,
    /// Past that, within the stale-if-error window.
    StaleIfError,
}

/// Decodes a stored value and checks that it may answer this request: its
/// fingerprint is the request's key material, and it is fresh or within a
/// stale window. Returns it with the wall-clock time (ms) it was judged at;
/// `Err` holds the `Cache-Status` detail to report, if any.
fn usable(
    config: &Config,
    miss: &MissContext,
    value: bytes::Bytes,
) -> Result<(Entry, Freshness, u64), Option<&'static str>> {
    let tag = xxhash_rust::xxh3::xxh3_64(miss.key.key.variant_bytes());
    let entry = config.heads.decode(tag, value).map_err(|error| {
        tracing::warn!(target: "tower_cache_aside", %error, "removing an entry that does not decode");
        Some("bad-entry")
    })?;
    if entry.fingerprint[..] != miss.key.fingerprint[..] {
        // A hash collision, or a value planted under this key.
        return Err(None);
    }
    let expires_at = entry.stored_at_ms.saturating_add(entry.ttl_ms);
    let now = crate::service::now_ms();
    if now < expires_at {
        return Ok((entry, Freshness::Fresh, now));
    }
    let past = Duration::from_millis(now - expires_at);
    if past < config.stale_while_revalidate {
        Ok((entry, Freshness::StaleWhileRevalidate, now))
    } else if past < config.stale_if_error {
        Ok((entry, Freshness::StaleIfError, now))
    } else {
        Err(None)
    }
}

/// Removes the entry at `miss.key`, under the store deadline. Done before
/// the inner call starts, so it cannot race the write of the fresh answer.
async fn remove(config: &Arc<Config>, miss: &MissContext) {
    let _ = config.store_call(|store| store.remove(&miss.key.key)).await;
}

/// Releases a lease that a failed or late call may have taken with `token`
/// without the caller knowing. The release only deletes a lease that token
/// holds, so it is harmless when none was taken. It is sent twice, the
/// second time a moment later, in case the late call, on another pooled
/// connection, reaches Redis after the first.
pub(crate) fn release_unclaimed(
    store: Arc<dyn crate::Store>,
    key: crate::EntryKey,
    token: LeaseToken,
    timeout: Duration,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        for delay in [Duration::ZERO, Duration::from_secs(1)] {
            tokio::time::sleep(delay).await;
            let _ = tokio::time::timeout(
                timeout.max(Duration::from_millis(500)),
                store.release(&key, &token),
            )
            .await;
        }
    });
}

/// Defaults: a lease outlives any sane origin call; waiting is bounded well
/// below a client's patience.
pub(crate) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_FILL_WAIT: Duration = Duration::from_secs(3);
