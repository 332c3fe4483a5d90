//! The harness shared by the fuzz targets of `tower-cache-aside`.
//!
//! The entry decoder (`Entry::decode`) is private to the crate, so the
//! targets drive it through the public API: a [`ServeStore`] answers every
//! lookup with the bytes under test, a [`CacheAsideLayer`] wraps a
//! `service_fn` origin, and one GET and one HEAD go through it on a
//! current-thread Tokio runtime, each body read to its end.
//!
//! What must hold, for any stored bytes:
//!
//! - nothing panics;
//! - the response is the origin's (status, body, no trailers) or was
//!   decoded from the stored bytes: its status is the stored status (or
//!   `304` for a matching `If-None-Match` on a stored `200`), its body,
//!   headers and trailers are the stored ones. The layer never makes up a
//!   status, so no 5xx appears when the origin answered 200;
//! - the layer serves exactly what an independent decoder of the format
//!   ([`reference`]) accepts: bytes it rejects are a miss with
//!   `detail=bad-entry`; a valid entry under another key's material is a
//!   miss; a valid, fresh entry under the request's material is a hit; the
//!   stale windows are honoured.
//!
//! Two targets use it: `decode_entry` serves the fuzz input as it is;
//! `decode_entry_mutated` first records real entries (one miss each through
//! the layer over a [`CapturingStore`]) and serves them mutated by the
//! fuzz input ([`MutationInput`]), which reaches the header, body and
//! trailer decoding that random bytes rarely get to.

pub mod reference;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_cache_aside::{CacheAsideLayer, MemoryStore, Store};
use tower_cache_aside::store::{EntryKey, LeaseRequest, LeaseToken, Lookup, ResourceKey, ResourcePattern, StoreFuture};

use crate::reference::RefEntry;

/// The body of every origin response in the scenarios.
pub const ORIGIN_BODY: &[u8] = b"fresh from the origin";
/// A header only the origin's responses carry.
pub const ORIGIN_MARK: &str = "x-fuzz-origin";
/// The `If-None-Match` a scenario may send; the first recorded base
/// carries this `ETag`.
pub const ETAG: &str = "\"v1\"";
/// Stale windows of the scenarios that turn grace on.
pub const STALE_WHILE_REVALIDATE: Duration = Duration::from_secs(30);
pub const STALE_IF_ERROR: Duration = Duration::from_secs(120);
/// Freshness of the recorded bases: long enough for any fuzz run.
const BASE_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Clock slack around freshness boundaries, where either answer is right.
const MARGIN_MS: u64 = 2_000;
/// The largest value a mutation may grow to.
const MAX_MUTATED_LEN: usize = 1 << 16;

// ---------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------

/// A [`Store`] that holds one value and returns it for every key; every
/// other call succeeds and changes nothing.
#[derive(Debug, Clone)]
pub struct ServeStore {
    value: Bytes,
}

impl ServeStore {
    pub fn new(value: Bytes) -> ServeStore {
        ServeStore { value }
    }
}

impl Store for ServeStore {
    fn get<'a>(&'a self, _key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(async move { Ok(Some(self.value.clone())) })
    }

    fn put<'a>(&'a self, _key: &'a EntryKey, _value: Bytes, _ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn lookup<'a>(
        &'a self,
        _key: &'a EntryKey,
        _lease: &'a LeaseRequest,
    ) -> StoreFuture<'a, Lookup> {
        Box::pin(async move { Ok(Lookup::Hit(self.value.clone())) })
    }

    fn lease<'a>(&'a self, _key: &'a EntryKey, _lease: &'a LeaseRequest) -> StoreFuture<'a, bool> {
        Box::pin(async { Ok(true) })
    }

    fn fill<'a>(
        &'a self,
        _key: &'a EntryKey,
        _value: Bytes,
        _ttl: Duration,
        _token: &'a LeaseToken,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async { Ok(true) })
    }

    fn release<'a>(&'a self, _key: &'a EntryKey, _token: &'a LeaseToken) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(&'a self, _key: &'a EntryKey) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn purge_resource<'a>(&'a self, _resource: &'a ResourceKey) -> StoreFuture<'a, u64> {
        Box::pin(async { Ok(0) })
    }

    fn purge_pattern<'a>(&'a self, _pattern: &'a ResourcePattern) -> StoreFuture<'a, u64> {
        Box::pin(async { Ok(0) })
    }
}

/// A [`MemoryStore`] that also keeps the last value written by `fill` or
/// `put`: a real entry, encoded by the crate.
#[derive(Debug, Clone, Default)]
pub struct CapturingStore {
    inner: MemoryStore,
    captured: Arc<Mutex<Option<Bytes>>>,
}

impl CapturingStore {
    fn record(&self, value: &Bytes) {
        *self.captured.lock().unwrap_or_else(|e| e.into_inner()) = Some(value.clone());
    }

    /// The last value written, if any.
    pub fn captured(&self) -> Option<Bytes> {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Store for CapturingStore {
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        self.inner.get(key)
    }

    fn put<'a>(&'a self, key: &'a EntryKey, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        self.record(&value);
        self.inner.put(key, value, ttl)
    }

    fn lookup<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, Lookup> {
        self.inner.lookup(key, lease)
    }

    fn lease<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, bool> {
        self.inner.lease(key, lease)
    }

    fn fill<'a>(
        &'a self,
        key: &'a EntryKey,
        value: Bytes,
        ttl: Duration,
        token: &'a LeaseToken,
    ) -> StoreFuture<'a, bool> {
        self.record(&value);
        self.inner.fill(key, value, ttl, token)
    }

    fn release<'a>(&'a self, key: &'a EntryKey, token: &'a LeaseToken) -> StoreFuture<'a, ()> {
        self.inner.release(key, token)
    }

    fn remove<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, ()> {
        self.inner.remove(key)
    }

    fn purge_resource<'a>(&'a self, resource: &'a ResourceKey) -> StoreFuture<'a, u64> {
        self.inner.purge_resource(resource)
    }

    fn purge_pattern<'a>(&'a self, pattern: &'a ResourcePattern) -> StoreFuture<'a, u64> {
        self.inner.purge_pattern(pattern)
    }
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// The request both methods are sent as.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Path and query.
    pub uri: &'static str,
    /// The `Host` header, if any.
    pub host: Option<&'static str>,
    /// The key material the layer derives for it (path, authority and
    /// canonical query, NUL-separated): what a servable entry's
    /// fingerprint must be.
    pub fingerprint: &'static [u8],
}

/// `GET /` without a `Host`: the shortest key material (`/\0\0`), which a
/// fuzzer can find from scratch.
pub const ROOT: Target = Target {
    uri: "/",
    host: None,
    fingerprint: b"/\0\0",
};

/// The request the recorded bases are stored under.
pub const USER: Target = Target {
    uri: "/users/7?b=2&a=1",
    host: Some("example.test"),
    fingerprint: b"/users/7\0example.test\0a=1&b=2",
};

/// One run: the stored value, the request, and how the origin and the
/// layer are set up.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub value: Bytes,
    pub target: Target,
    /// Send `If-None-Match: "v1"`.
    pub if_none_match: bool,
    /// What the origin answers (always with [`ORIGIN_BODY`]).
    pub origin_status: StatusCode,
    /// Turn on stale-while-revalidate and stale-if-error.
    pub grace: bool,
}

impl Scenario {
    /// The `decode_entry` scenario: `data` as the stored value, `GET /`,
    /// a 200 origin, default settings (`CacheAsideLayer::new`).
    pub fn raw(data: &[u8]) -> Scenario {
        Scenario {
            value: Bytes::copy_from_slice(data),
            target: ROOT,
            if_none_match: false,
            origin_status: StatusCode::OK,
            grace: false,
        }
    }
}

/// Runs a scenario on a fresh current-thread runtime and checks every
/// property; a violated one panics with the details (a crash to the fuzzer).
pub fn run(scenario: &Scenario) {
    if let Err(problem) = try_run(scenario) {
        panic!("{problem}\nscenario: {scenario:?}");
    }
}

/// What one request of a scenario got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub method: Method,
    pub status: StatusCode,
    /// The layer's `Cache-Status` member.
    pub cache_status: String,
}

/// [`run`], with the first violated property as an error, and what each
/// request got otherwise.
pub fn try_run(scenario: &Scenario) -> Result<Vec<Outcome>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(drive(scenario))
}

async fn drive(scenario: &Scenario) -> Result<Vec<Outcome>, String> {
    let store = ServeStore::new(scenario.value.clone());
    let layer = if scenario.grace {
        CacheAsideLayer::builder(store)
            .stale_while_revalidate(STALE_WHILE_REVALIDATE)
            .stale_if_error(STALE_IF_ERROR)
            .build()
            .map_err(|e| format!("layer: {e}"))?
    } else {
        CacheAsideLayer::new(store)
    };
    let origin_status = scenario.origin_status;
    let service = ServiceBuilder::new().layer(layer).service(service_fn(
        move |_request: Request<()>| async move {
            let response = Response::builder()
                .status(origin_status)
                .header(ORIGIN_MARK, "1")
                .body(Full::new(Bytes::from_static(ORIGIN_BODY)))
                .expect("a valid response");
            Ok::<_, Infallible>(response)
        },
    ));
    let reference = reference::decode(&scenario.value);
    let mut outcomes = Vec::with_capacity(2);
    for method in [Method::GET, Method::HEAD] {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(scenario.target.uri);
        if let Some(host) = scenario.target.host {
            request = request.header(header::HOST, host);
        }
        if scenario.if_none_match {
            request = request.header(header::IF_NONE_MATCH, ETAG);
        }
        let request = request.body(()).map_err(|e| format!("request: {e}"))?;
        let before = now_ms();
        let response = match service.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let collected = match body.collect().await {
            Ok(collected) => collected,
            Err(never) => match never {},
        };
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        let after = now_ms();
        let seen = Seen {
            method: &method,
            status: parts.status,
            headers: &parts.headers,
            body: &body,
            trailers: trailers.as_ref(),
            before,
            after,
        };
        check(scenario, reference.as_ref(), &seen).map_err(|problem| {
            format!(
                "{method}: {problem}\nresponse: {parts:?}\nbody: {body:?}\ntrailers: {trailers:?}"
            )
        })?;
        outcomes.push(Outcome {
            cache_status: parts
                .headers
                .get_all("cache-status")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            method,
            status: parts.status,
        });
    }
    Ok(outcomes)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One response, as the client saw it.
struct Seen<'a> {
    method: &'a Method,
    status: StatusCode,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    trailers: Option<&'a HeaderMap>,
    /// The clock just before the request and just after its body ended.
    before: u64,
    after: u64,
}

/// What the reference decoder says the layer must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The bytes are not an entry: a miss, `detail=bad-entry`.
    BadEntry,
    /// A valid entry the layer must not serve: a miss without that detail.
    Miss,
    /// A fresh hit.
    Fresh,
    /// A stale hit (stale-while-revalidate).
    Stale,
    /// GET: the origin answers; if it fails, a stale hit
    /// (stale-if-error). HEAD: a miss.
    StaleIfError,
    /// Too close to a freshness boundary to tell.
    Either,
}

fn expect(scenario: &Scenario, reference: Option<&RefEntry>, seen: &Seen<'_>) -> Expect {
    let Some(entry) = reference else {
        return Expect::BadEntry;
    };
    if entry.fingerprint != scenario.target.fingerprint {
        return Expect::Miss;
    }
    let expires_at = entry.expires_at_ms();
    if expires_at > seen.after.saturating_add(MARGIN_MS) {
        return Expect::Fresh;
    }
    if expires_at.saturating_add(MARGIN_MS) > seen.before {
        return Expect::Either;
    }
    // Past its freshness by at least MARGIN_MS, at most `latest`.
    let (earliest, latest) = (seen.before - expires_at, seen.after - expires_at);
    let (swr, sie) = if scenario.grace {
        (
            duration_ms(STALE_WHILE_REVALIDATE),
            duration_ms(STALE_IF_ERROR),
        )
    } else {
        (0, 0)
    };
    let within = |window: u64| latest.saturating_add(MARGIN_MS) < window;
    let beyond = |window: u64| earliest > window.saturating_add(MARGIN_MS);
    if within(swr) {
        Expect::Stale
    } else if beyond(swr) && within(sie) {
        Expect::StaleIfError
    } else if beyond(swr) && beyond(sie) {
        Expect::Miss
    } else {
        Expect::Either
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn check(scenario: &Scenario, reference: Option<&RefEntry>, seen: &Seen<'_>) -> Result<(), String> {
    let ours = seen
        .headers
        .get_all("cache-status")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .ok_or("no cache-status")?;
    let expected = expect(scenario, reference, seen);
    let is_get = *seen.method == Method::GET;
    if ours.starts_with("tower-cache-aside; hit") {
        let entry = reference
            .ok_or_else(|| format!("served `{ours}` from bytes the reference decoder rejects"))?;
        if entry.fingerprint != scenario.target.fingerprint {
            return Err(format!("served `{ours}` from an entry of another key"));
        }
        let stale = ours.contains("fwd=stale");
        let stale_if_error = ours.contains("detail=stale-if-error");
        match expected {
            Expect::Fresh if stale => return Err(format!("fresh entry served as `{ours}`")),
            Expect::Stale if !stale || stale_if_error => {
                return Err(format!(
                    "entry within stale-while-revalidate served as `{ours}`"
                ))
            }
            Expect::StaleIfError if !(is_get && stale_if_error) => {
                return Err(format!(
                    "entry within stale-if-error only served as `{ours}`"
                ))
            }
            Expect::Miss | Expect::BadEntry => {
                return Err(format!("expected a miss ({expected:?}), got `{ours}`"))
            }
            _ => {}
        }
        if stale_if_error && !(is_get && scenario.origin_status.is_server_error()) {
            return Err(format!(
                "`{ours}` although the origin answered {}",
                scenario.origin_status
            ));
        }
        check_hit(scenario, entry, seen)
    } else if ours.starts_with("tower-cache-aside; fwd=miss") {
        match expected {
            Expect::Fresh | Expect::Stale => {
                return Err(format!("expected a hit ({expected:?}), got `{ours}`"))
            }
            Expect::StaleIfError if is_get && scenario.origin_status.is_server_error() => {
                return Err(format!("expected a stale-if-error hit, got `{ours}`"))
            }
            Expect::BadEntry if !ours.contains("detail=bad-entry") => {
                return Err(format!("rejected bytes reported as `{ours}`"))
            }
            Expect::Miss if ours.contains("detail=bad-entry") => {
                return Err(format!("a valid entry reported as `{ours}`"))
            }
            _ => {}
        }
        check_origin(scenario, seen)
    } else {
        Err(format!(
            "unexpected cache-status `{ours}` for a healthy store"
        ))
    }
}

/// The response is the origin's, untouched.
fn check_origin(scenario: &Scenario, seen: &Seen<'_>) -> Result<(), String> {
    if seen.status != scenario.origin_status {
        return Err(format!(
            "a miss answered {} where the origin answered {}",
            seen.status, scenario.origin_status
        ));
    }
    if seen.headers.get(ORIGIN_MARK).is_none() {
        return Err("a miss without the origin's header".into());
    }
    if seen.body.as_ref() != ORIGIN_BODY || seen.trailers.is_some() {
        return Err("a miss whose body is not the origin's".into());
    }
    Ok(())
}

/// The response is the stored entry, as `hit_response` builds it.
fn check_hit(scenario: &Scenario, entry: &RefEntry, seen: &Seen<'_>) -> Result<(), String> {
    let is_get = *seen.method == Method::GET;
    if seen.headers.get_all(header::AGE).iter().count() != 1 {
        return Err("a hit without exactly one age".into());
    }
    if seen.status == StatusCode::NOT_MODIFIED && entry.status != StatusCode::NOT_MODIFIED {
        // A 304 the layer made: only for a stored 200 whose ETag the
        // request named.
        if entry.status != StatusCode::OK
            || !scenario.if_none_match
            || entry.headers.get(header::ETAG).is_none()
        {
            return Err(format!("304 made from a stored {}", entry.status));
        }
        if !seen.body.is_empty() || seen.trailers.is_some() {
            return Err("a 304 with a body or trailers".into());
        }
        const KEPT: [HeaderName; 7] = [
            header::CACHE_CONTROL,
            header::CONTENT_LOCATION,
            header::DATE,
            header::ETAG,
            header::EXPIRES,
            header::VARY,
            header::LAST_MODIFIED,
        ];
        for name in seen.headers.keys() {
            if *name == header::AGE || name == "cache-status" {
                continue;
            }
            if !KEPT.contains(name) {
                return Err(format!("a 304 carries {name}"));
            }
            let got: Vec<_> = seen.headers.get_all(name).iter().collect();
            let want: Vec<_> = entry.headers.get_all(name).iter().collect();
            if got != want {
                return Err(format!("a 304's {name} differs from the stored one"));
            }
        }
        return Ok(());
    }
    if seen.status != entry.status {
        return Err(format!(
            "a hit answered {} where the entry holds {} (origin: {})",
            seen.status, entry.status, scenario.origin_status
        ));
    }
    let (want_body, want_trailers): (&[u8], Option<&HeaderMap>) = if is_get {
        (&entry.body, entry.trailers.as_ref())
    } else {
        (&[], None)
    };
    if seen.body.as_ref() != want_body {
        return Err("a hit's body differs from the stored one".into());
    }
    if seen.trailers != want_trailers {
        return Err("a hit's trailers differ from the stored ones".into());
    }
    // Content-Length: the stored body's length, except on 204 and 304.
    let content_length: Vec<_> = seen
        .headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .collect();
    if entry.status == StatusCode::NO_CONTENT || entry.status == StatusCode::NOT_MODIFIED {
        if !content_length.is_empty() {
            return Err("content-length on a 204 or 304 hit".into());
        }
    } else {
        let want = HeaderValue::from(entry.body.len());
        if content_length != [&want] {
            return Err(format!(
                "content-length {content_length:?}, stored body is {} bytes",
                entry.body.len()
            ));
        }
    }
    // Cache-Status: the stored members, then the layer's.
    let got_status: Vec<_> = seen.headers.get_all("cache-status").iter().collect();
    let want_status: Vec<_> = entry.headers.get_all("cache-status").iter().collect();
    if got_status.len() != want_status.len() + 1
        || got_status[..want_status.len()] != want_status[..]
    {
        return Err("a hit's cache-status does not extend the stored one".into());
    }
    // Every other header as stored.
    let strip = |map: &HeaderMap| {
        let mut map = map.clone();
        map.remove(header::CONTENT_LENGTH);
        map.remove(header::AGE);
        map.remove("cache-status");
        map
    };
    if strip(seen.headers) != strip(&entry.headers) {
        return Err("a hit's headers differ from the stored ones".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Recorded bases and their mutation
// ---------------------------------------------------------------------------

type OriginBody = BoxBody<Bytes, Infallible>;

/// The origin responses recorded as bases, by index.
fn base_response(index: usize) -> Response<OriginBody> {
    let builder = Response::builder();
    let full = |bytes: &'static [u8]| Full::new(Bytes::from_static(bytes)).boxed();
    let response = match index {
        0 => builder
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ETAG, ETAG)
            .header(header::CACHE_CONTROL, "public")
            .header(header::LAST_MODIFIED, "Tue, 15 Nov 1994 08:12:31 GMT")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .body(full(
                br#"{"id":7,"name":"Grace","email":"grace@example.test"}"#,
            )),
        1 => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("x-digest", HeaderValue::from_static("sha-256=abc"));
            builder
                .header(header::CONTENT_TYPE, "application/grpc")
                .body(
                    Full::new(Bytes::from_static(b"\0\0\0\0\x05hello"))
                        .with_trailers(std::future::ready(Some(Ok(trailers))))
                        .boxed(),
                )
        }
        2 => builder
            .status(StatusCode::NOT_FOUND)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(full(b"user 7 not found")),
        3 => builder
            .status(StatusCode::NO_CONTENT)
            .header(header::ETAG, "W/\"v2\"")
            .body(full(b"")),
        _ => builder
            .status(StatusCode::MOVED_PERMANENTLY)
            .header(header::LOCATION, "/users/7/")
            .header(
                "x-obs-text",
                HeaderValue::from_bytes(b"caf\xe9").expect("obs-text"),
            )
            .body(full(b"moved")),
    };
    response.expect("a valid base response")
}

/// How many bases [`bases`] records.
pub const BASE_COUNT: usize = 5;

/// Records base `index` under `target`: one real miss through the layer
/// over a [`CapturingStore`], body read to its end, fill awaited.
pub fn record_base(index: usize, target: Target) -> Bytes {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = CapturingStore::default();
        let layer = CacheAsideLayer::builder(store.clone())
            .ttl(BASE_TTL)
            .negative_ttl(BASE_TTL)
            .build()
            .expect("layer");
        let service = ServiceBuilder::new().layer(layer).service(service_fn(
            move |_request: Request<()>| async move { Ok::<_, Infallible>(base_response(index)) },
        ));
        let mut request = Request::get(target.uri);
        if let Some(host) = target.host {
            request = request.header(header::HOST, host);
        }
        let response = service
            .oneshot(request.body(()).expect("request"))
            .await
            .unwrap_or_else(|never| match never {});
        let status = response.headers()["cache-status"].clone();
        assert_eq!(
            status, "tower-cache-aside; fwd=miss; stored",
            "base {index}"
        );
        let _ = response.into_body().collect().await;
        // The fill runs on a task spawned when the body ended.
        for _ in 0..1000 {
            if let Some(value) = store.captured() {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("base {index} was never stored");
    })
}

/// The bases, recorded once per process under [`USER`].
pub fn bases() -> &'static [Bytes] {
    static BASES: OnceLock<Vec<Bytes>> = OnceLock::new();
    BASES.get_or_init(|| (0..BASE_COUNT).map(|i| record_base(i, USER)).collect())
}

/// One edit of a recorded value; offsets wrap around its length.
#[derive(Debug, Clone, arbitrary::Arbitrary)]
pub enum Op {
    Xor {
        at: u16,
        mask: u8,
    },
    Set {
        at: u16,
        byte: u8,
    },
    /// A big-endian u16 (name lengths, the status).
    SetU16 {
        at: u16,
        value: u16,
    },
    /// A big-endian u32 (lengths and counts).
    SetU32 {
        at: u16,
        value: u32,
    },
    /// A big-endian u64 (stored_at, ttl).
    SetU64 {
        at: u16,
        value: u64,
    },
    Insert {
        at: u16,
        bytes: Vec<u8>,
    },
    Remove {
        at: u16,
        len: u16,
    },
    Truncate {
        at: u16,
    },
    /// A copy of a range to another place (duplicates a header, say).
    Splice {
        from: u16,
        len: u16,
        to: u16,
    },
}

/// The `decode_entry_mutated` input.
#[derive(Debug, Clone, arbitrary::Arbitrary)]
pub struct MutationInput {
    pub base: u8,
    pub if_none_match: bool,
    pub origin_fails: bool,
    pub grace: bool,
    pub ops: Vec<Op>,
}

/// Applies `ops` to `value`, keeping it at most [`MAX_MUTATED_LEN`] long.
pub fn mutate(value: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut v = value.to_vec();
    let wrap = |at: u16, len: usize| usize::from(at) % len.max(1);
    let put = |v: &mut Vec<u8>, at: u16, bytes: &[u8]| {
        if v.is_empty() {
            return;
        }
        let start = wrap(at, v.len());
        for (i, b) in bytes.iter().enumerate() {
            if let Some(slot) = v.get_mut(start + i) {
                *slot = *b;
            }
        }
    };
    for op in ops {
        match op {
            Op::Xor { at, mask } => {
                if !v.is_empty() {
                    let i = wrap(*at, v.len());
                    v[i] ^= mask;
                }
            }
            Op::Set { at, byte } => put(&mut v, *at, &[*byte]),
            Op::SetU16 { at, value } => put(&mut v, *at, &value.to_be_bytes()),
            Op::SetU32 { at, value } => put(&mut v, *at, &value.to_be_bytes()),
            Op::SetU64 { at, value } => put(&mut v, *at, &value.to_be_bytes()),
            Op::Insert { at, bytes } => {
                let i = usize::from(*at) % (v.len() + 1);
                let room = MAX_MUTATED_LEN.saturating_sub(v.len());
                let bytes = &bytes[..bytes.len().min(room)];
                v.splice(i..i, bytes.iter().copied());
            }
            Op::Remove { at, len } => {
                if !v.is_empty() {
                    let i = wrap(*at, v.len());
                    let end = (i + usize::from(*len)).min(v.len());
                    v.drain(i..end);
                }
            }
            Op::Truncate { at } => {
                let i = usize::from(*at) % (v.len() + 1);
                v.truncate(i);
            }
            Op::Splice { from, len, to } => {
                if !v.is_empty() {
                    let i = wrap(*from, v.len());
                    let end = (i + usize::from(*len)).min(v.len());
                    let copy = v[i..end].to_vec();
                    let room = MAX_MUTATED_LEN.saturating_sub(v.len());
                    let copy = &copy[..copy.len().min(room)];
                    let to = usize::from(*to) % (v.len() + 1);
                    v.splice(to..to, copy.iter().copied());
                }
            }
        }
    }
    v
}

impl MutationInput {
    /// The scenario this input describes: a recorded base, mutated.
    pub fn scenario(&self) -> Scenario {
        let bases = bases();
        let base = &bases[usize::from(self.base) % bases.len()];
        Scenario {
            value: Bytes::from(mutate(base, &self.ops)),
            target: USER,
            if_none_match: self.if_none_match,
            origin_status: if self.origin_fails {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            },
            grace: self.grace,
        }
    }
}

#[cfg(test)]
mod tests;
