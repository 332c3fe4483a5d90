//! The Tower layer: what is stored, and when it is served.
//!
//! [`CacheAsideLayer`](crate::CacheAsideLayer) makes a [`CacheAside`]
//! service around the app; its future is a [`ResponseFuture`] and its body
//! a [`ResponseBody`]. Users name these types (in a type alias, a boxed
//! service) but never build them.
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::service_fn;
//! use tower::Layer;
//! use tower_cache_aside::http::{CacheAside, ResponseBody};
//! use tower_cache_aside::{CacheAsideLayer, MemoryStore};
//!
//! fn cached<S>(service: S) -> CacheAside<S> {
//!     CacheAsideLayer::new(MemoryStore::new()).layer(service)
//! }
//!
//! let service = cached(service_fn(|_: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi"))))
//! }));
//! // Its responses have bodies of type ResponseBody<Full<Bytes>>.
//! let _: Option<ResponseBody<Full<Bytes>>> = None;
//! # drop(service);
//! ```

#[cfg(feature = "_internal")]
#[doc(hidden)]
pub mod bench_api;
mod body;
pub(crate) mod cache_status;
pub(crate) mod config;
mod future;
pub(crate) mod head_cache;
pub(crate) mod layer;
pub(crate) mod lookup;
pub(crate) mod policy;
mod recorder;
pub(crate) mod response;
mod service;
mod shared;
pub(crate) mod vary;

pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::service::CacheAside;
pub use crate::purge::PurgePaths;
