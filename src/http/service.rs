//! [`CacheAside`]: classify each request, then look it up, bypass it, or
//! forward it.
//!
//! The request path, one way only:
//!
//! 1. `call` classifies the request: not GET/HEAD → forward; excluded route,
//!    credentials, `Range` or `Upgrade` → forward without lookup; otherwise
//!    derive its key and start the lookup (`future.rs`, `lookup.rs`).
//! 2. A usable entry becomes the response (`response::hit`); the inner
//!    service is not called.
//! 3. Otherwise the inner service answers, and `response::miss` decides
//!    whether its response may be stored; if so the body is recorded on its
//!    way to the client (`recorder.rs`).

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::http::body::ResponseBody;
use crate::http::cache_status::Outcome;
use crate::http::config::Route;
use crate::http::future::{ResponseFuture, Write};
use crate::http::lookup::Cacheable;
use crate::http::shared::Shared;
use crate::http::vary::Varying;
use crate::lease::Fill;

/// Caches the GET and HEAD responses of the service it wraps.
///
/// Made by [`CacheAsideLayer`](crate::CacheAsideLayer); see the
/// [crate docs](crate) for what it stores.
#[derive(Clone)]
pub struct CacheAside<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CacheAside<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheAside")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S> CacheAside<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        CacheAside { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CacheAside<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = self.shared.clone();
        let config = &shared.config;
        let is_head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            ref method if crate::purge::is_safe_method(method) => {
                return ResponseFuture::forward(self.inner.call(req), Outcome::Method, shared)
            }
            ref method => {
                let write = Write {
                    purges: shared.purges.for_write(method, req.uri().path()),
                    authority: crate::key::request_authority(&req).to_owned(),
                    path: req.uri().path().to_owned(),
                };
                return ResponseFuture::write(self.inner.call(req), write, shared);
            }
        };
        let route = config.route(req.uri().path());
        if route.is_some_and(|r| r.is_bypass()) {
            return ResponseFuture::forward(self.inner.call(req), Outcome::Bypass("route"), shared);
        }
        if let Some(detail) = crate::http::policy::request_bypass(&req, &config.keys.vary_by) {
            return ResponseFuture::forward(self.inner.call(req), Outcome::Bypass(detail), shared);
        }
        // Store calls and their deadlines run on Tokio; without a runtime the
        // layer steps aside rather than panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return ResponseFuture::forward(
                self.inner.call(req),
                Outcome::Bypass("no-runtime"),
                shared,
            );
        }
        let Ok(key) = config.keys.derive(&req) else {
            return ResponseFuture::forward(
                self.inner.call(req),
                Outcome::Bypass("target-encoding"),
                shared,
            );
        };
        // Boxed once here: the context is large (the key is held inline)
        // and travels through the lookup and, on a miss, to the response;
        // moving a pointer is cheaper than copying it at every step.
        // Under the variant this process saw the resource vary by, if any.
        let mut varying = Varying::of_base(&key);
        let key = match shared.vary.get(&varying.base) {
            Some(names) => {
                let key = varying.key_for(&key, Some(&names), req.headers());
                varying.names = Some(names);
                key
            }
            None => key,
        };
        let mut cacheable = Box::new(Cacheable {
            key,
            varying,
            is_head,
            route: route.map(Route::rules).unwrap_or_default(),
            // Set when the inner service is called.
            requested_ms: 0,
            revalidation: None,
            max_variants: route
                .and_then(Route::variants)
                .unwrap_or(config.max_variants),
            fill: Fill::default(),
        });
        // A purge of this path failed and awaits its retry: the store may
        // still hold what the write made stale, so do not read it.
        if shared.purges.pending_covers(cacheable.key.key.resource()) {
            cacheable.fill.detail = Some("purge-pending");
            cacheable.requested_ms = crate::util::time::now_ms();
            return ResponseFuture::miss(self.inner.call(req), cacheable, shared);
        }
        // The store has been failing: go straight to the origin. (Checked
        // only when a store call follows, so that a half-open breaker's
        // one probe is always a real call.)
        if !shared.leases.store().allow() {
            return ResponseFuture::forward(
                self.inner.call(req),
                Outcome::Bypass("store-unavailable"),
                shared,
            );
        }
        // The inner service is called only on a miss, after the lookup: take
        // the clone that `poll_ready` made ready, leave a fresh one behind.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::lookup(ready, req, cacheable, shared)
    }
}
