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

use std::sync::Arc;

pub(crate) mod backend;
mod deadline;
pub(crate) mod guarded;
mod hints;
mod memory;
mod redis;
mod waiters;

pub use crate::key::{EntryKey, ResourceKey, ResourcePattern};

pub use self::backend::{
    FillEnd, FillWait, LeaseRequest, LeaseToken, Lookup, Store, StoreFuture, VariedFill, VaryRecord,
};
pub use self::memory::MemoryStore;
pub use self::redis::{RedisStore, RedisStoreBuilder, TlsBackend};

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
