//! [`CacheBuilder`]: the typed cache's settings, validated once.

use std::marker::PhantomData;
use std::sync::Arc;

use super::codec::{Codec, Json};
use super::inner::Inner;
use crate::key::{KeyConfig, QueryKey};
use crate::lease::Leases;
use crate::settings::{self, Common};
use crate::store::guarded::{Breaker, Guarded};
use crate::store::Store;
use crate::Error;

/// Configures a [`Cache`](crate::Cache); [`CacheBuilder::build`] validates
/// it.
///
/// ```
/// use std::time::Duration;
/// use tower_cache_aside::{Cache, MemoryStore};
///
/// let cache = Cache::builder(MemoryStore::new())
///     .prefix("users:")
///     .negative_ttl(Duration::from_secs(5))
///     .stale_while_revalidate(Duration::from_secs(30))
///     .circuit_breaker(3, Duration::from_secs(1))
///     .build()?;
/// # Ok::<(), tower_cache_aside::Error>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct CacheBuilder<C = Json> {
    store: Arc<dyn Store>,
    common: Common,
    codec: PhantomData<fn() -> C>,
}

impl<C> std::fmt::Debug for CacheBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("prefix", &self.common.prefix)
            .finish_non_exhaustive()
    }
}

impl CacheBuilder<Json> {
    pub(super) fn new(store: Arc<dyn Store>) -> CacheBuilder<Json> {
        CacheBuilder {
            store,
            common: Common::with_prefix(settings::DEFAULT_CACHE_PREFIX),
            codec: PhantomData,
        }
    }
}

impl<C: Codec> CacheBuilder<C> {
    settings::common_setters!("the cache");

    /// How long a `None` from `fetch` is cached (default 10 s).
    pub fn negative_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.common.negative_ttl = ttl;
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
            common: self.common,
            codec: PhantomData,
        }
    }

    /// The validated settings, made into the cache's state.
    pub(super) fn validated(self) -> Result<Inner, Error> {
        self.common.validate()?;
        Ok(self.assemble())
    }

    /// The settings, unchecked (they are the defaults).
    pub(super) fn assemble(self) -> Inner {
        let common = self.common;
        let (failures, cool_down) = common.breaker;
        let store = Guarded::new(
            self.store,
            common.store_timeout,
            Breaker::new(failures, cool_down),
        );
        Inner {
            leases: Leases::new(Arc::new(store), common.lease_ttl, common.fill_wait),
            keys: KeyConfig {
                prefix: Arc::from(common.prefix),
                include_authority: false,
                query: QueryKey::All,
                vary_by: Vec::new(),
            },
            negative_ttl: common.negative_ttl,
            stale_while_revalidate: common.stale_while_revalidate,
            ttl_jitter: common.ttl_jitter,
        }
    }
}
