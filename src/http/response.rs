//! The responses the layer builds: a hit (or a 304) from a stored entry,
//! a miss's response with its recording set up, a forwarded response, and
//! the background refresh of a stale entry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use crate::entry::Entry;
use crate::http::body::ResponseBody;
use crate::http::cache_status::{Outcome, CACHE_STATUS};
use crate::http::lookup::{Cacheable, Usable};
use crate::http::policy::{Exchange, PolicyConfig, Storable};
use crate::http::recorder::{Lifetime, Recorder};
use crate::http::shared::Shared;
use crate::http::vary;

/// How a stored entry came to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// Fresh.
    Fresh,
    /// Stale, and why (`None`: while it is refreshed).
    Stale(Option<&'static str>),
    /// Stale, and the inner service said it is unchanged; whether it was
    /// stored again.
    Revalidated { stored: bool },
}

/// Turns a usable stored entry into the response for the request.
///
/// Its age and ttl are counted at the time it was judged;
/// `conditional` are the request headers when a 304 may answer (not for a
/// stale-if-error answer); `served` says how the entry came to answer.
pub(crate) fn hit<B>(
    policy: &PolicyConfig,
    cacheable: &Cacheable,
    usable: Usable,
    conditional: Option<&HeaderMap>,
    served: Served,
) -> Response<ResponseBody<B>> {
    let Usable {
        entry, freshness, ..
    } = usable;
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
    let status_value = match served {
        Served::Revalidated { stored } => Outcome::Revalidated {
            ttl: ttl_left,
            stored,
        },
        Served::Fresh | Served::Stale(_) => Outcome::Hit {
            ttl: ttl_left,
            collapsed: cacheable.fill.collapsed,
            stale: served != Served::Fresh,
            detail: match served {
                Served::Stale(detail) => detail,
                _ => None,
            },
        },
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
    // Stored without them; an entry written before they were configured,
    // or by another instance, may hold them still.
    policy.strip_own_fields(&mut headers);
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
        varying,
        max_variants,
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
            .and_then(|storable| {
                let placement =
                    vary::place(&shared.vary, key.clone(), &varying, storable.vary.as_ref());
                placement.map(|p| (storable, p)).ok_or(Some("vary"))
            })
    };
    config.policy.strip_own_fields(&mut parts.headers);
    let outcome = Outcome::Miss {
        stored: verdict.is_ok(),
        detail: fill.detail.or(verdict.as_ref().err().copied().flatten()),
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
        (Ok((storable, placement)), Some(lease)) => {
            let mut headers = parts.headers.clone();
            strip_unstorable(&mut headers);
            let lifetime = lifetime_of(config, &storable, parts.status, &headers, received_ms);
            Some(
                Recorder::new(
                    placement.key,
                    lease,
                    parts.status,
                    headers,
                    lifetime,
                    config.policy.max_body_bytes,
                )
                .varied(placement.record, max_variants),
            )
        }
        _ => None,
    };
    outcome.append_to(&mut parts.headers);
    Response::from_parts(parts, ResponseBody::recorded(body, recorder))
}

/// Turns the request into one that asks whether `stored` changed: the
/// client's `If-None-Match` and `If-Modified-Since` are taken off (and
/// returned, to answer the client with once the entry is refreshed) and
/// the stored `ETag` and `Last-Modified` put in their place.
pub(crate) fn ask_if_changed(request: &mut HeaderMap, stored: &HeaderMap) -> HeaderMap {
    let mut client = HeaderMap::new();
    for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
        for value in request.get_all(&name) {
            let _ = client.try_append(name.clone(), value.clone());
        }
        request.remove(&name);
    }
    for (validator, condition) in [
        (header::ETAG, header::IF_NONE_MATCH),
        (header::LAST_MODIFIED, header::IF_MODIFIED_SINCE),
    ] {
        if let Some(value) = stored.get(validator) {
            let _ = request.try_insert(condition, value.clone());
        }
    }
    client
}

/// Answers a request whose stale entry the inner service said is
/// unchanged (`not_modified`, a 304): the stored response with its header
/// fields updated from the 304's (RFC 9111 section 4.3.4), stored again
/// under the request's lease when it may be, and served to the client (a
/// 304 of its own if its `If-None-Match` matches).
pub(crate) fn revalidated<B>(
    shared: &Shared,
    not_modified: Response<B>,
    mut cacheable: Cacheable,
) -> Response<ResponseBody<B>> {
    let Some(stale) = cacheable.fill.fallback.take() else {
        return forwarded(
            shared,
            not_modified,
            Outcome::Miss {
                stored: false,
                detail: None,
            },
        );
    };
    let config = &shared.config;
    let received_ms = crate::util::time::now_ms();
    let update = not_modified.into_parts().0.headers;
    let entry = stale.entry;
    let mut headers = entry.headers;
    strip_unstorable(&mut headers);
    // Every field the 304 carries replaces the stored one, but for what
    // describes the stored body's bytes (section 3.2).
    let mut fresh = update.clone();
    strip_unstorable(&mut fresh);
    for name in fresh.keys() {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_ENCODING {
            headers.remove(name);
        }
    }
    for (name, value) in fresh.iter() {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_ENCODING {
            let _ = headers.try_append(name.clone(), value.clone());
        }
    }
    let exchange = Exchange {
        requested_ms: cacheable.requested_ms,
        received_ms,
    };
    let verdict = config.policy.storable(
        entry.status,
        &headers,
        &config.keys.vary_by,
        cacheable.route,
        exchange,
    );
    config.policy.strip_own_fields(&mut headers);
    let (born_ms, ttl, stale_windows) = match &verdict {
        Ok(storable) => {
            let lifetime = lifetime_of(config, storable, entry.status, &headers, received_ms);
            (lifetime.born_ms, lifetime.ttl, lifetime.stale)
        }
        // Not to be stored: served once, stale.
        Err(_) => (received_ms, Duration::ZERO, None),
    };
    let placement = verdict.as_ref().ok().and_then(|storable| {
        let key = cacheable.key.clone();
        vary::place(
            &shared.vary,
            key,
            &cacheable.varying,
            storable.vary.as_ref(),
        )
    });
    let stored = match (verdict, placement, cacheable.fill.lease.take()) {
        (Ok(storable), Some(placement), Some(lease)) => {
            let lifetime = Lifetime {
                born_ms,
                ttl,
                grace: config.policy.grace(&storable, entry.status, &headers),
                stale: stale_windows,
            };
            let mut recorder = Recorder::new(
                placement.key,
                lease,
                entry.status,
                headers.clone(),
                lifetime,
                config.policy.max_body_bytes,
            )
            .varied(placement.record, cacheable.max_variants);
            let mut whole = recorder.record(&http_body::Frame::data(entry.body.clone()));
            if let Some(trailers) = &entry.trailers {
                whole &= recorder.record(&http_body::Frame::trailers(trailers.clone()));
            }
            if whole {
                recorder.finish();
            }
            whole
        }
        _ => false,
    };
    let ttl_ms = crate::util::time::millis(ttl);
    let refreshed = Usable {
        freshness: crate::util::time::Freshness::now(born_ms, ttl_ms),
        entry: Entry {
            headers,
            stored_at_ms: born_ms,
            ttl_ms,
            stale: stale_windows,
            hit_ready: false,
            ..entry
        },
        on_error: false,
    };
    let client = cacheable.revalidation.take();
    hit(
        &config.policy,
        &cacheable,
        refreshed,
        client.as_ref(),
        Served::Revalidated { stored },
    )
}

/// When a storable response was made, and how long it is fresh and kept.
fn lifetime_of(
    config: &crate::http::config::Config,
    storable: &Storable,
    status: StatusCode,
    headers: &HeaderMap,
    received_ms: u64,
) -> Lifetime {
    // The jitter shortens the time it stays fresh here, not the age it
    // arrived with (and leaves an entry revalidated on every use so).
    let resident = match storable.resident() {
        Duration::ZERO => Duration::ZERO,
        resident => crate::util::time::jittered(resident, config.ttl_jitter),
    };
    Lifetime {
        born_ms: received_ms.saturating_sub(crate::util::time::millis(storable.age)),
        ttl: storable.age + resident,
        grace: config.policy.grace(storable, status, headers),
        stale: storable.stale,
    }
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
    let (mut cacheable, mut request) = (cacheable, request);
    runtime.spawn(async move {
        cacheable.varying.request = Some(request.headers().clone());
        // The client's own conditions are not the refresh's: a 304 to
        // them would store nothing. With the stale entry kept (it has a
        // validator), ask whether it changed instead: a 304 stores it
        // again, fresh, without its body sent.
        let none = HeaderMap::new();
        let stored = cacheable.fill.fallback.as_deref().map(|s| &s.entry.headers);
        let client = ask_if_changed(request.headers_mut(), stored.unwrap_or(&none));
        if stored.is_some() {
            cacheable.revalidation = Some(client);
        }
        cacheable.requested_ms = crate::util::time::now_ms();
        let Ok(response) = service.call(request).await else {
            return;
        };
        if response.status().is_server_error() {
            return;
        }
        if response.status() == StatusCode::NOT_MODIFIED && cacheable.revalidation.is_some() {
            drop(revalidated(&shared, response, cacheable));
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
