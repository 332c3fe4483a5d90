//! Cache-aside response caching in Redis for any Tower HTTP service (axum,
//! tonic, hyper), with no proxy in front of the app.
//!
//! Add one layer; GET and HEAD responses are then looked up in the store
//! under a key derived from the route, and on a miss the response streams
//! to the client while a bounded copy is stored with a TTL.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use bytes::Bytes;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_cache_aside::{CacheAsideLayer, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In production: CacheAsideLayer::new(fred_client), or a RedisStore.
//! let layer = CacheAsideLayer::new(MemoryStore::new());
//! let app = ServiceBuilder::new().layer(layer).service(service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
//! }));
//!
//! let first = app.clone().oneshot(Request::get("/greeting").body(())?).await?;
//! assert_eq!(first.headers()["cache-status"], "tower-cache-aside; fwd=miss; stored");
//! first.into_body().collect().await?; // the entry is stored once the body has ended
//! # tokio::task::yield_now().await;
//!
//! let second = app.oneshot(Request::get("/greeting").body(())?).await?;
//! assert!(second.headers()["cache-status"].to_str()?.starts_with("tower-cache-aside; hit"));
//! assert_eq!(second.into_body().collect().await?.to_bytes(), "hello");
//! # Ok(()) }
//! ```
//!
//! # What is stored
//!
//! A response is stored only when all of these hold; otherwise it passes
//! through untouched and `Cache-Status` says why:
//!
//! - the request is GET (HEAD is served from GET's entries, never stores);
//! - the request has no `Authorization` or `Cookie` (unless the builder
//!   keys on that header: [`Builder::vary_by`]), no `Range`, no `Upgrade`,
//!   and its path is not excluded by a [`Route`];
//! - the status is in the stored set (200, 203, 204, 300, 301, 308, 404,
//!   410 by default; 404 and 410 with the shorter negative TTL);
//! - the response has no `Set-Cookie`, no `Cache-Control` `private`,
//!   `no-store` or `no-cache`, and no `Vary: *` (a `Vary` naming request
//!   headers stores a variant per their values);
//! - its body ends normally and is within the size cap (1 MiB by default).
//!
//! The TTL is the route's or the default, shortened by the response's
//! `s-maxage`, `max-age` or `Expires`. The client's own `Cache-Control` is
//! ignored, so no client can force load onto the origin.
//!
//! # When the store fails
//!
//! Every store call has a deadline ([`Builder::store_timeout`], 50 ms by
//! default). A failed or late lookup is a miss; a failed write is skipped.
//! Bytes that do not decode as an entry are a miss and are removed. The
//! client never sees an error the inner service did not produce.
//!
//! The layer needs a Tokio runtime with its time driver (as axum, hyper and
//! tonic servers have); without one it passes every request through.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub, missing_debug_implementations)]
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod aside;
mod entry;
mod error;
pub mod http;
mod key;
mod lease;
mod purge;
mod settings;
pub mod store;
mod util;

#[cfg(feature = "_internal")]
#[doc(hidden)]
pub use self::http::bench_api;

pub use self::aside::codec;
pub use self::aside::{Cache, CacheBuilder};
pub use self::error::Error;
pub use self::http::config::Route;
pub use self::http::layer::{Builder, CacheAsideLayer};
pub use self::http::policy::Freshness;
pub use self::purge::Purger;
pub use self::store::{IntoStore, MemoryStore, RedisStore, Store};
