//! The typed cache-aside API: [`Cache`], for values outside HTTP (a row a
//! handler reads, a result a job computes).
//!
//! It runs on the same [`Store`](crate::Store) as the layer, with the same
//! guarantees: one fetch per cold key across every instance (fill leases),
//! fills fenced against invalidations, negative caching, stale-while-
//! revalidate, TTL jitter, and fail-open (when the store is down, `fetch`
//! is called and its value returned).
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use tower_cache_aside::{Cache, MemoryStore};
//!
//! #[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
//! struct User { id: u64, name: String }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::new(MemoryStore::new()); // or a RedisStore, or a fred client
//! let user = cache
//!     .get_or_fetch("user:1", Duration::from_secs(60), || async {
//!         // the database read the cache spares
//!         Ok::<_, std::io::Error>(Some(User { id: 1, name: "Alice".into() }))
//!     })
//!     .await?;
//! assert_eq!(user.map(|u| u.name), Some("Alice".to_owned()));
//! cache.invalidate("user:1").await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::breaker::{Breaker, Timed};
use crate::key::{EntryKey, KeyConfig, QueryKey};
use crate::lease::LeaseGuard;
use crate::store::{FillEnd, IntoStore, LeaseRequest, LeaseToken, Lookup, Store, StoreFuture};
use crate::Error;

pub mod codec;
mod value;

use self::codec::{Codec, Json};

const DEFAULT_PREFIX: &str = "tca:obj:";

struct Inner {
    /// The store, for background lease releases (under a deadline of
    /// their own).
    store: Arc<dyn Store>,
    /// The store the cache's calls go to, within `store_timeout`.
    timed: Timed,
    keys: KeyConfig,
    negative_ttl: Duration,
    store_timeout: Duration,
    lease_ttl: Duration,
    fill_wait: Duration,
    stale_while_revalidate: Duration,
    ttl_jitter: f64,
    breaker: Breaker,
}

impl Inner {
    async fn call<'a, T>(
        &'a self,
        call: impl FnOnce(&'a dyn Store) -> StoreFuture<'a, T>,
    ) -> Result<T, Error> {
        self.timed.run(&self.breaker, call).await
    }

    fn jittered(&self, ttl: Duration) -> Duration {
        crate::layer::jittered(ttl, self.ttl_jitter)
    }
}

/// A typed cache-aside cache over a [`Store`]. Cheap to clone.
///
/// `C` is the [`Codec`] values are stored with (JSON by default).
pub struct Cache<C = Json> {
    inner: Arc<Inner>,
    codec: PhantomData<fn() -> C>,
}

impl<C> Clone for Cache<C> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            codec: PhantomData,
        }
    }
}

impl<C> std::fmt::Debug for Cache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("prefix", &self.inner.keys.prefix)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Cache`]; [`CacheBuilder::build`] validates it.
#[must_use = "a builder does nothing until `build` is called"]
pub struct CacheBuilder<C = Json> {
    store: Arc<dyn Store>,
    prefix: String,
    negative_ttl: Duration,
    store_timeout: Duration,
    lease_ttl: Duration,
    fill_wait: Duration,
    stale_while_revalidate: Duration,
    ttl_jitter: f64,
    codec: PhantomData<fn() -> C>,
}

impl<C> std::fmt::Debug for CacheBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Cache<Json> {
    /// A JSON cache with the default settings over `store` (a fred `Client`
    /// or `Pool`, a `RedisStore`, a `MemoryStore`, or any `Store`).
    ///
    /// ```
    /// use tower_cache_aside::{Cache, MemoryStore};
    /// let cache = Cache::new(MemoryStore::new());
    /// ```
    pub fn new(store: impl IntoStore) -> Cache<Json> {
        CacheBuilder::new(store.into_store()).assemble()
    }

    /// A builder over `store`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_cache_aside::{Cache, MemoryStore};
    ///
    /// let cache = Cache::builder(MemoryStore::new())
    ///     .prefix("users:")
    ///     .negative_ttl(Duration::from_secs(5))
    ///     .stale_while_revalidate(Duration::from_secs(30))
    ///     .build()?;
    /// # Ok::<(), tower_cache_aside::Error>(())
    /// ```
    pub fn builder(store: impl IntoStore) -> CacheBuilder<Json> {
        CacheBuilder::new(store.into_store())
    }
}

impl CacheBuilder<Json> {
    fn new(store: Arc<dyn Store>) -> CacheBuilder<Json> {
        CacheBuilder {
            store,
            prefix: DEFAULT_PREFIX.to_owned(),
            negative_ttl: Duration::from_secs(10),
            store_timeout: Duration::from_millis(50),
            lease_ttl: crate::lease::DEFAULT_LEASE_TTL,
            fill_wait: crate::lease::DEFAULT_FILL_WAIT,
            stale_while_revalidate: Duration::ZERO,
            ttl_jitter: 0.0,
            codec: PhantomData,
        }
    }
}

impl<C: Codec> CacheBuilder<C> {
    /// Prefix of every key (default `tca:obj:`). Same rules as the layer's.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a `None` from `fetch` is cached (default 10 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Deadline of each store call (default 50 ms); past it the cache
    /// fails open.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// How long a fill lease holds if never released (default 10 s).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long a caller waits for another caller's fetch (default 3 s).
    pub fn fill_wait(mut self, wait: Duration) -> Self {
        self.fill_wait = wait;
        self
    }

    /// Return a value up to `window` past its TTL while one caller
    /// refreshes it in the background (default off).
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// Shorten each TTL by a random fraction of at most `fraction` (0 to 1).
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.ttl_jitter = fraction;
        self
    }

    /// Store values with another codec.
    ///
    /// ```
    /// # #[cfg(feature = "postcard")] {
    /// use tower_cache_aside::{codec::Postcard, Cache, MemoryStore};
    /// let cache = Cache::builder(MemoryStore::new()).codec::<Postcard>().build()?;
    /// # }
    /// # Ok::<(), tower_cache_aside::Error>(())
    /// ```
    pub fn codec<C2: Codec>(self) -> CacheBuilder<C2> {
        CacheBuilder {
            store: self.store,
            prefix: self.prefix,
            negative_ttl: self.negative_ttl,
            store_timeout: self.store_timeout,
            lease_ttl: self.lease_ttl,
            fill_wait: self.fill_wait,
            stale_while_revalidate: self.stale_while_revalidate,
            ttl_jitter: self.ttl_jitter,
            codec: PhantomData,
        }
    }

    /// Validates the settings and builds the cache.
    pub fn build(self) -> Result<Cache<C>, Error> {
        crate::layer::check_prefix(&self.prefix)?;
        if self.negative_ttl.is_zero() || self.store_timeout.is_zero() || self.lease_ttl.is_zero() {
            return Err(Error::InvalidConfig(
                "negative_ttl, store_timeout and lease_ttl must be above zero".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.ttl_jitter) {
            return Err(Error::InvalidConfig(format!(
                "ttl_jitter is a fraction from 0 to 1, not {}",
                self.ttl_jitter
            )));
        }
        Ok(self.assemble())
    }

    fn assemble(self) -> Cache<C> {
        Cache {
            inner: Arc::new(Inner {
                timed: Timed::new(&self.store, self.store_timeout),
                store: self.store,
                keys: KeyConfig {
                    prefix: Arc::from(self.prefix),
                    include_authority: false,
                    query: QueryKey::All,
                    vary_by: Vec::new(),
                },
                negative_ttl: self.negative_ttl,
                store_timeout: self.store_timeout,
                lease_ttl: self.lease_ttl,
                fill_wait: self.fill_wait,
                stale_while_revalidate: self.stale_while_revalidate,
                ttl_jitter: self.ttl_jitter,
                breaker: Breaker::new(5, Duration::from_secs(2)),
            }),
            codec: PhantomData,
        }
    }
}

/// A stored value read back, classified.
enum Read<T> {
    Fresh(Option<T>),
    Stale(Option<T>),
    /// Not usable: another codec, another key, expired, or not a value.
    Unusable,
}

impl<C: Codec> Cache<C> {
    /// Escapes `text` for [`invalidate_pattern`](Self::invalidate_pattern),
    /// so that a `*` or `\` in it is literal.
    ///
    /// ```
    /// use tower_cache_aside::{Cache, MemoryStore};
    /// assert_eq!(Cache::<tower_cache_aside::codec::Json>::escape("a*b\\c"), "a\\*b\\\\c");
    /// ```
    pub fn escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if matches!(c, '*' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    /// Returns the cached value of `key`, or calls `fetch`, caches what it
    /// returns for `ttl` (a `None` for the negative TTL) and returns it.
    ///
    /// Only one caller fetches a cold key, across every instance sharing
    /// the store; the others wait for its value. An error from `fetch` is
    /// returned as is and nothing is cached; a store error never replaces
    /// a value `fetch` returned (the cache fails open).
    ///
    /// `fetch` runs on a background task when it refreshes a stale value,
    /// so it must own what it uses (`move` an `Arc` in).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_cache_aside::{Cache, MemoryStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), std::io::Error> {
    /// let cache = Cache::new(MemoryStore::new());
    /// let missing: Option<String> = cache
    ///     .get_or_fetch("user:404", Duration::from_secs(60), || async { Ok::<_, std::io::Error>(None) })
    ///     .await?;
    /// assert_eq!(missing, None); // and cached as absent for the negative TTL
    /// # Ok(()) }
    /// ```
    pub async fn get_or_fetch<T, F, Fut, E>(
        &self,
        key: &str,
        ttl: Duration,
        fetch: F,
    ) -> Result<Option<T>, E>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Send + 'static,
    {
        let inner = &self.inner;
        if !inner.breaker.allow() {
            return fetch().await;
        }
        let entry = inner.keys.named_key(key);
        let request = LeaseRequest {
            token: LeaseToken::new(),
            ttl: inner.lease_ttl,
        };
        let deadline = Instant::now() + inner.fill_wait;
        let mut removed_one = false;
        loop {
            let found = match inner.call(|store| store.lookup(&entry, &request)).await {
                Ok(found) => found,
                Err(_) => {
                    crate::lease::release_unclaimed(
                        inner.store.clone(),
                        entry,
                        request.token,
                        inner.store_timeout,
                    );
                    return fetch().await;
                }
            };
            match found {
                Lookup::Hit(bytes) => match self.read::<T>(key, bytes) {
                    Read::Fresh(value) => return Ok(value),
                    Read::Stale(value) => {
                        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                            return Ok(value);
                        };
                        let taken = inner.call(|store| store.lease(&entry, &request)).await;
                        if taken.is_err() {
                            crate::lease::release_unclaimed(
                                inner.store.clone(),
                                entry.clone(),
                                request.token,
                                inner.store_timeout,
                            );
                        }
                        if let Ok(true) = taken {
                            // The refresh owns the lease; a fetch that
                            // panics releases it through the guard.
                            let guard = LeaseGuard::new(
                                inner.store.clone(),
                                inner.store_timeout,
                                entry.clone(),
                                request.token,
                            );
                            let (cache, key) = (self.clone(), key.to_owned());
                            runtime.spawn(async move {
                                let result = fetch().await;
                                if let Some(token) = guard.take_token() {
                                    let encoded = result
                                        .as_ref()
                                        .ok()
                                        .and_then(|value| cache.encode(&key, value.as_ref(), ttl));
                                    cache.finish_fill(&key, token, encoded).await;
                                }
                            });
                        }
                        return Ok(value);
                    }
                    Read::Unusable => {
                        let _ = inner.call(|store| store.remove(&entry)).await;
                        if removed_one {
                            return fetch().await;
                        }
                        removed_one = true;
                    }
                },
                Lookup::Lease => {
                    let guard = LeaseGuard::new(
                        inner.store.clone(),
                        inner.store_timeout,
                        entry.clone(),
                        request.token,
                    );
                    let result = fetch().await;
                    if let Some(token) = guard.take_token() {
                        let encoded = result
                            .as_ref()
                            .ok()
                            .and_then(|value| self.encode(key, value.as_ref(), ttl));
                        self.finish_fill(key, token, encoded).await;
                    }
                    return result;
                }
                Lookup::Unleased => return fetch().await,
                Lookup::Busy(wait) => match tokio::time::timeout_at(deadline, wait).await {
                    Ok(FillEnd::Filled) => continue,
                    Ok(FillEnd::Released) | Err(_) => return fetch().await,
                },
            }
        }
    }

    /// Stores an encoded fetch result under a held lease (or releases the
    /// lease when there is none: the fetch failed, or its value does not
    /// encode). Store errors are logged, never returned.
    async fn finish_fill(&self, key: &str, token: LeaseToken, encoded: Option<(Bytes, Duration)>) {
        let inner = &self.inner;
        let entry = inner.keys.named_key(key);
        match encoded {
            Some((bytes, keep)) => {
                let _ = inner
                    .call(|store| store.fill(&entry, bytes, keep, &token))
                    .await;
            }
            None => {
                let _ = inner.call(|store| store.release(&entry, &token)).await;
            }
        }
    }

    /// The stored bytes of a value (or of the negative marker) and how long
    /// to keep them.
    fn encode<T: Serialize>(
        &self,
        key: &str,
        value: Option<&T>,
        ttl: Duration,
    ) -> Option<(Bytes, Duration)> {
        let inner = &self.inner;
        let ttl = inner.jittered(if value.is_some() {
            ttl
        } else {
            inner.negative_ttl
        });
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
            crate::service::now_ms(),
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            key,
        )?;
        Some((bytes, ttl + inner.stale_while_revalidate))
    }

    fn read<T: DeserializeOwned>(&self, key: &str, bytes: Bytes) -> Read<T> {
        let Some(stored) = value::decode(bytes) else {
            return Read::Unusable;
        };
        if stored.codec != C::ID || stored.key != key.as_bytes() {
            return Read::Unusable;
        }
        let value = match stored.payload {
            None => None,
            Some(payload) => match C::decode::<T>(&payload) {
                Ok(value) => Some(value),
                Err(_) => return Read::Unusable,
            },
        };
        let expires_at = stored.stored_at_ms.saturating_add(stored.ttl_ms);
        let now = crate::service::now_ms();
        if now < expires_at {
            Read::Fresh(value)
        } else if Duration::from_millis(now - expires_at) < self.inner.stale_while_revalidate {
            Read::Stale(value)
        } else {
            Read::Unusable
        }
    }

    /// Returns the values of `keys` in their order: the cached ones from
    /// one multi-key read, the others from one call of `fetch_many` with
    /// only the missing keys (each once), cached by one batch of writes.
    /// Keys `fetch_many` leaves out are `None` (and cached as absent).
    ///
    /// ```
    /// # use std::{collections::HashMap, time::Duration};
    /// # use tower_cache_aside::{Cache, MemoryStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), std::io::Error> {
    /// let cache = Cache::new(MemoryStore::new());
    /// let names: Vec<Option<String>> = cache
    ///     .get_many_or_fetch(&["user:1", "user:2", "user:1"], Duration::from_secs(60), |missing| async move {
    ///         assert_eq!(missing, ["user:1", "user:2"]); // each missing key once
    ///         Ok::<_, std::io::Error>(HashMap::from([("user:1".to_owned(), "Alice".to_owned())]))
    ///     })
    ///     .await?;
    /// assert_eq!(names, [Some("Alice".to_owned()), None, Some("Alice".to_owned())]);
    /// # Ok(()) }
    /// ```
    pub async fn get_many_or_fetch<K, T, F, Fut, E>(
        &self,
        keys: &[K],
        ttl: Duration,
        fetch_many: F,
    ) -> Result<Vec<Option<T>>, E>
    where
        K: AsRef<str>,
        T: Serialize + DeserializeOwned + Clone,
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Result<HashMap<String, T>, E>>,
    {
        let inner = &self.inner;
        // Each key once, in first-seen order.
        let mut unique: Vec<&str> = Vec::new();
        for key in keys {
            if !unique.contains(&key.as_ref()) {
                unique.push(key.as_ref());
            }
        }
        let entries: Vec<EntryKey> = unique.iter().map(|k| inner.keys.named_key(k)).collect();
        let reachable = inner.breaker.allow();
        let stored = if reachable {
            inner
                .call(|store| store.get_many(&entries))
                .await
                .unwrap_or_else(|_| vec![None; entries.len()])
        } else {
            vec![None; entries.len()]
        };
        let mut found: HashMap<&str, Option<T>> = HashMap::new();
        let mut missing: Vec<usize> = Vec::new();
        for (i, value) in stored.into_iter().enumerate() {
            // A stale value is fetched again with the missing ones: a batch
            // has no caller to answer first and refresh after.
            match value.map(|bytes| self.read::<T>(unique[i], bytes)) {
                Some(Read::Fresh(value)) => {
                    found.insert(unique[i], value);
                }
                _ => missing.push(i),
            }
        }
        if !missing.is_empty() {
            // Leases for the missing keys, so that the writes are fenced.
            let request = &LeaseRequest {
                token: LeaseToken::new(),
                ttl: inner.lease_ttl,
            };
            let entries = &entries;
            let held: Vec<bool> = if reachable {
                futures_util::future::join_all(
                    missing
                        .iter()
                        .map(|&i| inner.call(move |store| store.lease(&entries[i], request))),
                )
                .await
                .into_iter()
                .zip(&missing)
                .map(|(result, &i)| {
                    if result.is_err() {
                        crate::lease::release_unclaimed(
                            inner.store.clone(),
                            entries[i].clone(),
                            request.token,
                            inner.store_timeout,
                        );
                    }
                    matches!(result, Ok(true))
                })
                .collect()
            } else {
                vec![false; missing.len()]
            };
            let asked: Vec<String> = missing.iter().map(|&i| unique[i].to_owned()).collect();
            let mut fetched = match fetch_many(asked).await {
                Ok(fetched) => fetched,
                Err(error) => {
                    let releases =
                        missing
                            .iter()
                            .zip(&held)
                            .filter(|(_, held)| **held)
                            .map(|(&i, _)| {
                                inner.call(move |store| store.release(&entries[i], &request.token))
                            });
                    futures_util::future::join_all(releases).await;
                    return Err(error);
                }
            };
            let mut writes = Vec::new();
            for (&i, held) in missing.iter().zip(&held) {
                let value = fetched.remove(unique[i]);
                if *held {
                    match self.encode(unique[i], value.as_ref(), ttl) {
                        Some((bytes, keep)) => writes.push(inner.call(move |store| {
                            store.fill(&entries[i], bytes, keep, &request.token)
                        })),
                        None => {
                            let _ = inner
                                .call(|store| store.release(&entries[i], &request.token))
                                .await;
                        }
                    }
                }
                found.insert(unique[i], value);
            }
            futures_util::future::join_all(writes).await;
        }
        Ok(keys
            .iter()
            .map(|key| found.get(key.as_ref()).cloned().flatten())
            .collect())
    }

    /// Removes the cached value of `key`; returns how many entries went (0
    /// or 1). A fetch of `key` in flight will not store its value.
    ///
    /// ```
    /// # use tower_cache_aside::{Cache, MemoryStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_cache_aside::Error> {
    /// let cache = Cache::new(MemoryStore::new());
    /// assert_eq!(cache.invalidate("user:1").await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn invalidate(&self, key: &str) -> Result<u64, Error> {
        let entry = self.inner.keys.named_key(key);
        let inner = &self.inner;
        inner
            .call(|store| store.purge_resource(entry.resource()))
            .await
    }

    /// Removes the cached values of `keys`, concurrently; returns how many
    /// entries went.
    ///
    /// ```
    /// # use tower_cache_aside::{Cache, MemoryStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_cache_aside::Error> {
    /// let cache = Cache::new(MemoryStore::new());
    /// assert_eq!(cache.invalidate_many(&["user:1", "user:2"]).await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<u64, Error> {
        let entries: Vec<EntryKey> = keys
            .iter()
            .map(|k| self.inner.keys.named_key(k.as_ref()))
            .collect();
        let inner = &self.inner;
        let mut removed = 0;
        for result in futures_util::future::join_all(
            entries
                .iter()
                .map(|e| inner.call(|store| store.purge_resource(e.resource()))),
        )
        .await
        {
            removed += result?;
        }
        Ok(removed)
    }

    /// Removes every cached value whose key matches `glob`: `*` matches any
    /// run of characters, `\*` and `\\` are a literal `*` and `\`, every
    /// other character is literal. Scans in batches on every primary, never
    /// `KEYS`. Put user text through [`escape`](Self::escape).
    ///
    /// ```
    /// # use tower_cache_aside::{Cache, MemoryStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_cache_aside::Error> {
    /// let cache = Cache::new(MemoryStore::new());
    /// let team = "a*b"; // user text
    /// cache.invalidate_pattern(&format!("team:{}:*", Cache::<tower_cache_aside::codec::Json>::escape(team))).await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_pattern(&self, glob: &str) -> Result<u64, Error> {
        let mut pieces: Vec<Option<String>> = vec![Some(String::new())];
        let mut chars = glob.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let literal = chars.next().unwrap_or('\\');
                    push_literal(&mut pieces, literal);
                }
                '*' => {
                    pieces.push(None);
                    pieces.push(Some(String::new()));
                }
                c => push_literal(&mut pieces, c),
            }
        }
        let pattern = self
            .inner
            .keys
            .resource_pattern(pieces.iter().map(|p| p.as_deref()));
        let inner = &self.inner;
        inner.call(|store| store.purge_pattern(&pattern)).await
    }
}

fn push_literal(pieces: &mut [Option<String>], c: char) {
    if let Some(Some(last)) = pieces.last_mut() {
        last.push(c);
    }
}
