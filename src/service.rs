//! [`CacheAside`]: classify each request, then look it up, bypass it, or
//! forward it.
//!
//! The request path, one way only:
//!
//! 1. `call` classifies the request: not GET/HEAD → forward; excluded route,
//!    credentials, `Range` or `Upgrade` → forward without lookup; otherwise
//!    derive its key and start the lookup ([`crate::future`]).
//! 2. A usable entry becomes the response ([`hit_response`]); the inner
//!    service is not called.
//! 3. Otherwise the inner service answers, and [`miss_response`] decides
//!    whether its response may be stored; if so the body is recorded on its
//!    way to the client ([`crate::body`]).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use crate::body::{Recorder, ResponseBody};
use crate::cache_status::{Outcome, CACHE_STATUS};
use crate::entry::Entry;
use crate::future::ResponseFuture;
use crate::key::DerivedKey;
use crate::layer::Config;
use crate::lease::LeaseGuard;

/// Caches the GET and HEAD responses of the service it wraps.
///
/// Made by [`CacheAsideLayer`](crate::CacheAsideLayer); see the
/// [crate docs](crate) for what it stores.
#[derive(Clone)]
pub struct CacheAside<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CacheAside<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheAside")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S> CacheAside<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        CacheAside { inner, config }
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
        let config = self.config.clone();
        let is_head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            ref method if crate::purge::is_safe(method) => {
                return ResponseFuture::forward(self.inner.call(req), Outcome::Method, config)
            }
            ref method => {
                let write = WriteContext {
                    purges: config.purges_for(method, req.uri().path()),
                    authority: crate::key::request_authority(&req).to_owned(),
                    path: req.uri().path().to_owned(),
                };
                return ResponseFuture::write(self.inner.call(req), write, config);
            }
        };
        let route = config.route(req.uri().path());
        if route.is_some_and(|r| r.is_bypass()) {
            return ResponseFuture::forward(self.inner.call(req), Outcome::Bypass("route"), config);
        }
        if let Some(detail) = crate::policy::request_bypass(&req, &config.keys.vary_by) {
            return ResponseFuture::forward(self.inner.call(req), Outcome::Bypass(detail), config);
        }
        // Store calls and their deadlines run on Tokio; without a runtime the
        // layer steps aside rather than panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return ResponseFuture::forward(
                self.inner.call(req),
                Outcome::Bypass("no-runtime"),
                config,
            );
        }
        let key = config.keys.derive(&req);
        // Boxed once here: the context is large (the key is held inline)
        // and travels through the lookup and, on a miss, to the response;
        // moving a pointer is cheaper than copying it at every step.
        let mut miss = Box::new(MissContext {
            key,
            is_head,
            route_ttls: route.map(|r| r.ttls()).unwrap_or_default(),
            detail: None,
            lease: None,
            collapsed: false,
            stale: None,
        });
        // A purge of this path failed and awaits its retry: the store may
        // still hold what the write made stale, so do not read it.
        if config.pending.covers(miss.key.key.resource()) {
            miss.detail = Some("purge-pending");
            return ResponseFuture::miss(self.inner.call(req), miss, config);
        }
        // The store has been failing: go straight to the origin. (Checked
        // only when a store call follows, so that a half-open breaker's
        // one probe is always a real call.)
        if !config.breaker.allow() {
            return ResponseFuture::forward(
                self.inner.call(req),
                Outcome::Bypass("store-unavailable"),
                config,
            );
        }
        // The inner service is called only on a miss, after the lookup: take
        // the clone that `poll_ready` made ready, leave a fresh one behind.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::lookup(ready, req, miss, config)
    }
}

/// What a request with an unsafe method carries over to its response.
#[derive(Debug)]
pub(crate) struct WriteContext {
    /// The request path and the matching rules' targets.
    pub(crate) purges: Vec<crate::purge::Purge>,
    pub(crate) authority: String,
    pub(crate) path: String,
}

/// What a lookup that did not hit carries over to the inner response.
#[derive(Debug)]
pub(crate) struct MissContext {
    pub(crate) key: DerivedKey,
    pub(crate) is_head: bool,
    pub(crate) route_ttls: (Option<Duration>, Option<Duration>),
    /// Why the lookup found nothing usable, when it is worth saying.
    pub(crate) detail: Option<&'static str>,
    /// The fill lease, when this request holds it: only then is its
    /// response stored.
    pub(crate) lease: Option<LeaseGuard>,
    /// Whether the request waited on another request's fill.
    pub(crate) collapsed: bool,
    /// A stale entry to answer with if the origin fails (stale-if-error).
    pub(crate) stale: Option<Box<Entry>>,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Turns a usable stored entry (see [`crate::lease`]) into the response
/// for `req`.
///
/// `now` is the wall-clock time (ms) its age and ttl are counted at;
/// `conditional` are the request headers when a 304 may answer (not for a
/// stale-if-error answer); `stale` says why a stale entry is served.
pub(crate) fn hit_response<B>(
    miss: &MissContext,
    entry: Entry,
    now: u64,
    conditional: Option<&HeaderMap>,
    stale: Option<Option<&'static str>>,
) -> Response<ResponseBody<B>> {
    let expires_at = entry.stored_at_ms.saturating_add(entry.ttl_ms);
    let ttl_left = if now < expires_at {
        i64::try_from((expires_at - now) / 1000).unwrap_or(i64::MAX)
    } else {
        // Stale: how long ago it expired, rounded up, as a negative ttl.
        -i64::try_from((now - expires_at).div_ceil(1000)).unwrap_or(i64::MAX)
    };
    let age = now.saturating_sub(entry.stored_at_ms) / 1000;

    let Entry {
        status,
        mut headers,
        body,
        trailers,
        hit_ready,
        ..
    } = entry;
    let not_modified = status == StatusCode::OK
        && conditional.is_some_and(|request| etag_matches(request, &headers));
    let mut response = if not_modified {
        headers = not_modified_headers(&headers);
        let mut response = Response::new(ResponseBody::cached(Bytes::new(), None));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        // Entries are stored with theirs and a hit-ready map has it set;
        // this is for any other.
        if !hit_ready {
            crate::entry::set_content_length(status, &mut headers, body.len());
        }
        let mut response = if miss.is_head || bodiless {
            Response::new(ResponseBody::cached(Bytes::new(), None))
        } else {
            Response::new(ResponseBody::cached(body, trailers))
        };
        *response.status_mut() = status;
        response
    };
    let age_value = crate::cache_status::number_value(age);
    let status_value = Outcome::Hit {
        ttl: ttl_left,
        collapsed: miss.collapsed,
        stale: stale.is_some(),
        detail: stale.flatten(),
    }
    .value();
    if hit_ready && !not_modified {
        // The map holds `Age` and `Cache-Status` once each, as
        // placeholders (see `Entry::hit_ready`): their values are replaced
        // where they stand, with no look-up by name. (A hit's member always
        // fits; the placeholder, a plain hit's member, is what would stay.)
        let (mut age_value, mut status_value) = (Some(age_value), status_value);
        for (name, value) in headers.iter_mut() {
            if name == header::AGE {
                if let Some(age) = age_value.take() {
                    *value = age;
                }
            } else if name == CACHE_STATUS {
                if let Some(status) = status_value.take() {
                    *value = status;
                }
            }
        }
    } else {
        // Entries hold at most 1024 fields, so these fit; a failure would
        // only leave the field out. Both replace what is there.
        let _ = headers.try_insert(header::AGE, age_value);
        if let Some(status) = status_value {
            let _ = headers.try_insert(CACHE_STATUS, status);
        }
    }
    *response.headers_mut() = headers;
    tracing::debug!(
        target: "tower_cache_aside",
        outcome = "hit",
        resource = miss.key.key.resource().resource(),
        age,
        ttl = ttl_left,
        "served from cache"
    );
    response
}

/// Adds `Cache-Status` to the inner service's response and, when it may be
/// stored, sets up its recording.
pub(crate) fn miss_response<B: Body>(
    config: &Arc<Config>,
    response: Response<B>,
    miss: MissContext,
) -> Response<ResponseBody<B>> {
    let (mut parts, body) = response.into_parts();
    let verdict = if miss.is_head || miss.lease.is_none() {
        Err(None)
    } else {
        config
            .policy
            .storable(
                parts.status,
                &parts.headers,
                &config.keys.vary_by,
                miss.route_ttls.0,
                miss.route_ttls.1,
            )
            .map(|ttl| config.jittered(ttl))
            .map_err(Some)
    };
    let outcome = Outcome::Miss {
        stored: verdict.is_ok(),
        detail: miss.detail.or(verdict.err().flatten()),
    };
    tracing::debug!(
        target: "tower_cache_aside",
        outcome = outcome.label(),
        resource = miss.key.key.resource().resource(),
        status = parts.status.as_u16(),
        "forwarded"
    );
    // Not storable: dropping the lease guard releases the lease, and
    // the requests waiting on it go to the origin themselves.
    let recorder = match (verdict, miss.lease) {
        (Ok(ttl), Some(lease)) => {
            let mut headers = parts.headers.clone();
            strip_unstorable(&mut headers);
            Some(Recorder::new(
                config.clone(),
                miss.key,
                lease,
                parts.status,
                headers,
                ttl,
            ))
        }
        _ => None,
    };
    outcome.append_to(&mut parts.headers);
    Response::from_parts(parts, ResponseBody::recorded(body, recorder))
}

/// Refreshes a stale entry in the background: the request that found it
/// holds the lease (`miss.lease`) and is answered from the stale entry; this
/// task calls the origin with it and stores the answer as a miss would. An
/// origin failure or 5xx keeps the stale entry (the lease is released).
pub(crate) fn refresh_in_background<S, ReqBody, ResBody>(
    config: Arc<Config>,
    mut service: S,
    request: Request<ReqBody>,
    miss: MissContext,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let Ok(response) = service.call(request).await else {
            return;
        };
        if response.status().is_server_error() {
            return;
        }
        let body = miss_response(&config, response, miss).into_body();
        let mut body = std::pin::pin!(body);
        // Drive the body to its end: the recorder stores it there.
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if frame.is_err() {
                return;
            }
        }
    });
}

/// Adds `Cache-Status` to a response the layer only forwarded.
pub(crate) fn forwarded_response<B>(
    response: Response<B>,
    outcome: Outcome,
) -> Response<ResponseBody<B>> {
    let (mut parts, body) = response.into_parts();
    outcome.append_to(&mut parts.headers);
    tracing::trace!(target: "tower_cache_aside", outcome = outcome.label(), "forwarded");
    Response::from_parts(parts, ResponseBody::passthrough(body))
}

/// Removes what must not be replayed from a stored response: hop-by-hop
/// fields, those the `Connection` field names, and the fields the layer
/// computes on each hit.
fn strip_unstorable(headers: &mut HeaderMap) {
    let named: Vec<http::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::AGE,
        CACHE_STATUS,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// Whether the request's `If-None-Match` matches the stored `ETag` (weak
/// comparison, RFC 9110 section 13.1.2).
fn etag_matches(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let etag = opaque(etag);
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|candidate| candidate.trim() == "*" || opaque(candidate) == etag)
}

/// The fields a 304 carries (RFC 9110 section 15.4.5).
fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for value in stored.get_all(&name) {
            let _ = kept.try_append(name.clone(), value.clone());
        }
    }
    kept
}
