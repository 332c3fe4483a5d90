//! Where entries live: the [`Store`] trait and its two implementations.
//!
//! A store knows nothing of HTTP. It keeps opaque values under
//! [`EntryKey`]s, grouped by [`ResourceKey`] so that every variant of a
//! resource can be purged together, and it owns its key layout: the rest of
//! the crate never builds a store key by hand.
//!
//! - [`RedisStore`] (fred): the shared cache for production, standalone or
//!   Cluster. Keys of one resource share a hash tag.
//! - [`MemoryStore`] (moka): in-process and bounded, for development, tests
//!   and single-instance apps.
//!
//! Any other backend can implement [`Store`]; the layer wraps every call in
//! its own deadline, so an implementation does not need one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::key::{EntryKey, ResourceKey, ResourcePattern};
use crate::Error;

mod memory;
mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// The future a [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// A key-value store for cached entries.
///
/// Values are opaque bytes, encoded and validated by the layer. Every method
/// may fail; the layer treats a failure as a miss (reads) or a skipped write.
pub trait Store: Send + Sync + 'static {
    /// Reads one entry; `Ok(None)` when there is none.
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>>;

    /// Writes one entry, replacing any previous value, expiring after `ttl`.
    fn put<'a>(&'a self, key: &'a EntryKey, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()>;

    /// Removes one entry (for instance one that did not decode).
    fn remove<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, ()>;

    /// Removes every variant of a resource; returns how many entries went.
    /// Costs O(the resource's variants).
    fn purge_resource<'a>(&'a self, resource: &'a ResourceKey) -> StoreFuture<'a, u64>;

    /// Removes every variant of every resource the pattern matches; returns
    /// how many entries went. May scan the keyspace (in bounded batches).
    fn purge_pattern<'a>(&'a self, pattern: &'a ResourcePattern) -> StoreFuture<'a, u64>;
}

/// Anything the layer can cache in: a [`Store`], an `Arc<dyn Store>`, or a
/// fred [`Client`](fred::clients::Client) or [`Pool`](fred::clients::Pool)
/// (wrapped in a [`RedisStore`]).
pub trait IntoStore {
    /// Turns `self` into a shareable store.
    fn into_store(self) -> Arc<dyn Store>;
}

impl<T: Store> IntoStore for T {
    fn into_store(self) -> Arc<dyn Store> {
        Arc::new(self)
    }
}

impl IntoStore for Arc<dyn Store> {
    fn into_store(self) -> Arc<dyn Store> {
        self
    }
}

impl IntoStore for fred::clients::Client {
    fn into_store(self) -> Arc<dyn Store> {
        Arc::new(RedisStore::from(self))
    }
}

impl IntoStore for fred::clients::Pool {
    fn into_store(self) -> Arc<dyn Store> {
        Arc::new(RedisStore::from(self))
    }
}
