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

use serde::de::DeserializeOwned;
use serde::Serialize;

use self::codec::{Codec, Json};
use self::inner::Inner;
use crate::key::EntryKey;
use crate::lease::{Fill, Found};
use crate::store::IntoStore;
use crate::Error;

mod batch;
mod builder;
pub mod codec;
mod inner;
mod value;

pub use self::builder::CacheBuilder;

/// A typed cache-aside cache over a [`Store`](crate::Store). Cheap to clone.
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

impl<C> Cache<C> {
    fn from_inner(inner: Inner) -> Cache<C> {
        Cache {
            inner: Arc::new(inner),
            codec: PhantomData,
        }
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
        Cache::from_inner(CacheBuilder::new(store.into_store()).assemble())
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

impl<C: Codec> CacheBuilder<C> {
    /// Validates the settings and builds the cache.
    pub fn build(self) -> Result<Cache<C>, Error> {
        Ok(Cache::from_inner(self.validated()?))
    }
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
        if !inner.store().allow() {
            return fetch().await;
        }
        let entry = inner.keys.named_key(key);
        let mut fill = Fill::default();
        let found = inner
            .leases
            .find(&entry, None, &mut fill, |bytes| {
                inner.judge::<C, T>(key, bytes)
            })
            .await;
        match found {
            Found::Fresh(value) => Ok(value),
            Found::Stale(value) => {
                // Whoever took the lease refreshes the value, on a task of
                // its own; a fetch that panics releases it through the
                // guard.
                if let (Some(lease), Ok(runtime)) =
                    (fill.lease, tokio::runtime::Handle::try_current())
                {
                    let (inner, key) = (self.inner.clone(), key.to_owned());
                    runtime.spawn(async move {
                        let result = fetch().await;
                        inner
                            .finish_fill::<C, T>(&key, lease, result.as_ref().ok(), ttl)
                            .await;
                    });
                }
                Ok(value)
            }
            // The typed cache writes no vary records: a value that reads as
            // one is another program's, and was not served.
            Found::Miss | Found::Varies(_) => {
                let result = fetch().await;
                if let Some(lease) = fill.lease {
                    inner
                        .finish_fill::<C, T>(key, lease, result.as_ref().ok(), ttl)
                        .await;
                }
                result
            }
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
        batch::get_many::<C, K, T, F, Fut, E>(&self.inner, keys, ttl, fetch_many).await
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
        self.inner
            .store()
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
        for result in futures_util::future::join_all(entries.iter().map(|e| {
            inner
                .store()
                .call(|store| store.purge_resource(e.resource()))
        }))
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
        inner
            .store()
            .call(|store| store.purge_pattern(&pattern))
            .await
    }
}

fn push_literal(pieces: &mut [Option<String>], c: char) {
    if let Some(Some(last)) = pieces.last_mut() {
        last.push(c);
    }
}
