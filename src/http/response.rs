//! The responses the layer builds: a hit (or a 304) from a stored entry,
//! a miss's response with its recording set up, a forwarded response, and
//! the background refresh of a stale entry.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use crate::entry::Entry;
use crate::http::body::ResponseBody;
use crate::http::cache_status::{Outcome, CACHE_STATUS};
use crate::http::lookup::{Cacheable, Usable};
use crate::http::policy::Exchange;
use crate::http::recorder::{Lifetime, Recorder};
use crate::http::shared::Shared;

/// Turns a usable stored entry into the response for the request.
///
/// Its age and ttl are counted at the time it was judged;
/// `conditional` are the request headers when a 304 may answer (not for a
/// stale-if-error answer); `stale` says why a stale entry is served.
pub(crate) fn hit<B>(
    cacheable: &Cacheable,
    usable: Usable,
    conditional: Option<&HeaderMap>,
    stale: Option<Option<&'static str>>,
) -> Response<ResponseBody<B>> {
    let Usable { entry, freshness } = usable;
    let ttl_left = freshness.ttl_secs();
    let age = freshness.age_secs();

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
        let mut response = if cacheable.is_head || bodiless {
            Response::new(ResponseBody::cached(Bytes::new(), None))
        } else {
            Response::new(ResponseBody::cached(body, trailers))
        };
        *response.status_mut() = status;
        response
    };
    let age_value = crate::util::decimal::header_value(age);
    let status_value = Outcome::Hit {
        ttl: ttl_left,
        collapsed: cacheable.fill.collapsed,
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
        resource = cacheable.key.key.resource().resource(),
        age,
        ttl = ttl_left,
        "served from cache"
    );
    response
}

/// Adds `Cache-Status` to the inner service's response and, when it may be
/// stored, sets up its recording.
pub(crate) fn miss<B: Body>(
    shared: &Shared,
    response: Response<B>,
    cacheable: Cacheable,
) -> Response<ResponseBody<B>> {
    let (mut parts, body) = response.into_parts();
    let config = &shared.config;
    let Cacheable {
        key,
        is_head,
        route,
        requested_ms,
        fill,
        ..
    } = cacheable;
    let received_ms = crate::util::time::now_ms();
    let verdict = if is_head || fill.lease.is_none() {
        Err(None)
    } else {
        let exchange = Exchange {
            requested_ms,
            received_ms,
        };
        config
            .policy
            .storable(
                parts.status,
                &parts.headers,
                &config.keys.vary_by,
                route,
                exchange,
            )
            .map_err(Some)
    };
    config.policy.strip_own_fields(&mut parts.headers);
    let outcome = Outcome::Miss {
        stored: verdict.is_ok(),
        detail: fill.detail.or(verdict.err().flatten()),
    };
    tracing::debug!(
        target: "tower_cache_aside",
        outcome = outcome.label(),
        resource = key.key.resource().resource(),
        status = parts.status.as_u16(),
        "forwarded"
    );
    // Not storable: dropping the lease guard releases the lease, and
    // the requests waiting on it go to the origin themselves.
    let recorder = match (verdict, fill.lease) {
        (Ok(storable), Some(lease)) => {
            let mut headers = parts.headers.clone();
            strip_unstorable(&mut headers);
            // The jitter shortens the time it stays fresh here, not the
            // age it arrived with.
            let resident = crate::util::time::jittered(storable.resident(), config.ttl_jitter);
            let age_ms = crate::util::time::millis(storable.age);
            let lifetime = Lifetime {
                born_ms: received_ms.saturating_sub(age_ms),
                ttl: storable.age + resident,
                grace: storable.stale.unwrap_or(config.policy.stale).longest(),
                stale: storable.stale,
            };
            Some(Recorder::new(
                key,
                lease,
                parts.status,
                headers,
                lifetime,
                config.policy.max_body_bytes,
            ))
        }
        _ => None,
    };
    outcome.append_to(&mut parts.headers);
    Response::from_parts(parts, ResponseBody::recorded(body, recorder))
}

/// Refreshes a stale entry in the background: the request that found it
/// holds the lease (`cacheable.fill.lease`) and is answered from the stale
/// entry; this task calls the origin with it and stores the answer as a
/// miss would. An origin failure or 5xx keeps the stale entry (the lease is
/// released).
pub(crate) fn refresh_in_background<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut service: S,
    request: Request<ReqBody>,
    cacheable: Cacheable,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut cacheable = cacheable;
    runtime.spawn(async move {
        cacheable.requested_ms = crate::util::time::now_ms();
        let Ok(response) = service.call(request).await else {
            return;
        };
        if response.status().is_server_error() {
            return;
        }
        let body = miss(&shared, response, cacheable).into_body();
        let mut body = std::pin::pin!(body);
        // Drive the body to its end: the recorder stores it there.
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if frame.is_err() {
                return;
            }
        }
    });
}

/// Adds `Cache-Status` to a response the layer only forwarded (and
/// removes the targeted fields meant for the layer alone).
pub(crate) fn forwarded<B>(
    shared: &Shared,
    response: Response<B>,
    outcome: Outcome,
) -> Response<ResponseBody<B>> {
    let (mut parts, body) = response.into_parts();
    shared.config.policy.strip_own_fields(&mut parts.headers);
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
