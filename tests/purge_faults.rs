//! Purges when the store fails: a Redis server that stops answering, and
//! stores that fail or hold a purge past its deadline. The write's response is returned
//! unchanged, this instance stops serving what the failed purge covers, and
//! a background retry removes the entries once the store answers again.
//!
//! The paused-Redis test runs a `redis-server` of its own; the others run
//! against both stores (`redis::*` on a shared server, `memory::*`), behind
//! a [`FaultyStore`] that decides the fate of each purge call.

#[macro_use]
mod support;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fred::interfaces::ClientLike;
use fred::types::{CustomCommand, Value};
use http::{Method, Response, StatusCode};
use tower::Layer;
use tower_cache_aside::store::{
    EntryKey, LeaseRequest, LeaseToken, Lookup, ResourceKey, ResourcePattern, StoreFuture,
};
use tower_cache_aside::{Builder, CacheAsideLayer, Error, RedisStore, Store};

use support::{
    assert_hit, cached_fields, fred_client, get, head, read_field, request, scan_keys, send,
    Backend, CountingStore, Harness, Origin, RedisServer, TestBody, CACHE, MISS, SIGNAL_TIMEOUT,
    STORED,
};

suite!(
    purger_calls_fail_when_the_store_fails_and_are_retried,
    a_failed_purge_fences_only_what_it_covers,
    a_retry_in_flight_still_fences_this_instance,
);

/// `Cache-Status` of a write whose purges did not all go through.
fn purge_failed(removed: u64) -> String {
    format!("{CACHE}; fwd=method; purged={removed}; detail=purge-failed")
}

/// `Cache-Status` of a request not looked up because a failed purge covers
/// it; GET responses are still stored, HEAD ones never are.
/// A read of a path a failed purge still covers: answered by the origin,
/// not looked up, and not stored (it holds no fill lease).
fn pending() -> String {
    format!("{CACHE}; fwd=miss; detail=purge-pending")
}

/// An origin with a version per path: a GET answers `<path> v<n>`, where
/// `n` counts the writes to that path so far; any other method bumps the
/// version and answers `200 wrote <path> v<n>` with `x-origin: write`.
fn versioned() -> Origin {
    let versions: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    Origin::new(move |req| {
        let path = req.uri().path().to_owned();
        let mut versions = versions.lock().unwrap();
        let version = versions.entry(path.clone()).or_default();
        match *req.method() {
            Method::GET => Response::new(TestBody::full(format!("{path} v{version}"))),
            Method::HEAD => Response::new(TestBody::full("")),
            _ => {
                *version += 1;
                Response::builder()
                    .header("x-origin", "write")
                    .header("etag", format!("\"{version}\""))
                    .body(TestBody::full(format!("wrote {path} v{version}")))
                    .unwrap()
            }
        }
    })
}

// ---------------------------------------------------------------------------
// A Redis server that stops answering
// ---------------------------------------------------------------------------

async fn command(client: &fred::clients::Client, name: &'static str, args: &[&str]) -> Value {
    client
        .custom(
            CustomCommand::new_static(name, None, false),
            args.iter()
                .map(|a| (*a).to_owned())
                .collect::<Vec<String>>(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} {args:?}: {e}"))
}

/// The layer's purge of `/users/1` meets a Redis that holds every script
/// call (`CLIENT PAUSE … WRITE`: scripts wait, plain reads such as the
/// test's `EXISTS` go on, and the data stays). The write is answered as the
/// origin answered it, flagged `purge-failed`; this instance then fetches
/// `/users/1` from the origin rather than from the cache; once Redis
/// answers, the background retry removes the entry, so another instance
/// (its own `RedisStore`, no failed purges of its own) misses and gets the
/// new value.
///
/// `DEBUG SLEEP` would need `enable-debug-command` in the server's
/// configuration and would freeze the test's own reads too; `CLIENT PAUSE
/// WRITE` needs neither, and `CLIENT UNPAUSE` ends it when the test says.
#[tokio::test]
async fn a_purge_while_redis_is_paused_fails_fences_this_instance_and_is_retried() {
    let server = RedisServer::launch();
    let prefix = "t:paused:";
    let origin = versioned();

    // The instance that writes: short deadlines.
    let store = CountingStore::new(Arc::new(RedisStore::connect(&server.url()).await.unwrap()));
    let writer = CacheAsideLayer::builder(store.as_dyn())
        .prefix(prefix)
        .store_timeout(Duration::from_millis(100))
        .purge_timeout(Duration::from_millis(200))
        .build()
        .unwrap()
        .layer(origin.service());
    // Another instance on the same Redis.
    let other_store =
        CountingStore::new(Arc::new(RedisStore::connect(&server.url()).await.unwrap()));
    let other = CacheAsideLayer::builder(other_store.as_dyn())
        .prefix(prefix)
        .store_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(origin.service());
    let control = fred_client(&server.url()).await;

    // v0 is cached, and shared.
    let first = send(&other, get("/users/1")).await;
    assert_eq!(first.cache_status(), STORED);
    assert_eq!(first.text(), "/users/1 v0");
    other_store.wait_puts(1).await;
    let shared = send(&other, get("/users/1")).await;
    assert_hit(&shared);
    assert_eq!(shared.text(), "/users/1 v0");
    let keys = cached_fields(&control, &format!("{prefix}{{/users/1}}")).await;
    assert_eq!(keys.len(), 1, "the entry: {keys:?}");
    let entry_key = keys[0].clone();

    assert_eq!(
        command(&control, "CLIENT", &["PAUSE", "60000", "WRITE"]).await,
        Value::from("OK")
    );
    let purges_ok = store.stats().purges_ok;

    // The write: the origin's answer, unchanged but for Cache-Status.
    let write = send(&writer, request(Method::PUT, "/users/1", &[])).await;
    assert_eq!(write.status, StatusCode::OK);
    assert_eq!(write.text(), "wrote /users/1 v1");
    assert_eq!(write.header("x-origin"), Some("write"));
    assert_eq!(write.header("etag"), Some("\"1\""));
    assert_eq!(write.cache_status(), purge_failed(0));

    // The stale entry is still in Redis ...
    assert!(
        read_field(&control, &entry_key).await.is_some(),
        "Redis kept the entry"
    );
    // ... but this instance does not read it: the origin answers. (These
    // two requests go out before the first retry, 200 ms after the write
    // answered: a retry in flight lifts the fence, see
    // `a_retry_in_flight_still_fences_this_instance`.)
    let gets = origin.calls_for("/users/1");
    let puts_started = store.stats().puts_started;
    let read = send(&writer, get("/users/1")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.text(), "/users/1 v1");
    assert_eq!(read.cache_status(), pending());
    let headed = send(&writer, head("/users/1")).await;
    assert_eq!(headed.cache_status(), pending());
    assert_eq!(origin.calls_for("/users/1"), gets + 2);
    support::flush_spawned().await;
    assert_eq!(
        store.stats().puts_started,
        puts_started,
        "no write without a lease"
    );

    assert_eq!(
        command(&control, "CLIENT", &["UNPAUSE"]).await,
        Value::from("OK")
    );
    // The retry goes through. Every command of the writer's connection
    // sent before it (the timed-out purges, the write above) has then run.
    let stats = store
        .wait_until("a purge retried with success", |s| s.purges_ok > purges_ok)
        .await;
    assert!(stats.purges_ok > purges_ok);
    let left = scan_keys(&control, &format!("{prefix}{{/users/1}}*")).await;
    assert_eq!(left, Vec::<String>::new(), "no entry, no expiry set");

    // The other instance misses and gets the new value.
    let fresh = send(&other, get("/users/1")).await;
    assert_eq!(fresh.cache_status(), STORED);
    assert_eq!(fresh.text(), "/users/1 v1");
    other_store.wait_puts(2).await;
    let hit = send(&other, get("/users/1")).await;
    assert_hit(&hit);
    assert_eq!(hit.text(), "/users/1 v1");
    // And the writer no longer fences the path.
    let status = send(&writer, head("/users/1")).await.cache_status();
    assert!(!status.contains("purge-pending"), "{status}");
}

// ---------------------------------------------------------------------------
// A store whose purges fail on demand
// ---------------------------------------------------------------------------

/// What a purge call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Goes to the inner store.
    Pass,
    /// Fails at once.
    Fail,
    /// Waits until [`FaultyStore::open_gate`], then goes to the inner store.
    Gated,
}

struct Faults {
    /// Modes for the next purge calls, in order, before the defaults.
    plan: VecDeque<Mode>,
    resources: Mode,
    patterns: Mode,
}

/// Forwards everything to an inner store, but decides the fate of each
/// purge call, and tells how many purge calls started.
struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Mutex<Faults>,
    started: tokio::sync::watch::Sender<usize>,
    gate: tokio::sync::watch::Sender<bool>,
}

impl FaultyStore {
    fn new(inner: Arc<dyn Store>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            faults: Mutex::new(Faults {
                plan: VecDeque::new(),
                resources: Mode::Pass,
                patterns: Mode::Pass,
            }),
            started: tokio::sync::watch::Sender::new(0),
            gate: tokio::sync::watch::Sender::new(false),
        })
    }

    fn set(&self, resources: Mode, patterns: Mode) {
        let mut faults = self.faults.lock().unwrap();
        faults.resources = resources;
        faults.patterns = patterns;
    }

    fn plan(&self, modes: impl IntoIterator<Item = Mode>) {
        self.faults.lock().unwrap().plan.extend(modes);
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    async fn wait_started(&self, n: usize) {
        let mut rx = self.started.subscribe();
        tokio::time::timeout(SIGNAL_TIMEOUT, rx.wait_for(|s| *s >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} purge calls never started"))
            .expect("the sender lives in self");
    }

    fn next(&self, pattern: bool) -> Mode {
        self.started.send_modify(|n| *n += 1);
        let mut faults = self.faults.lock().unwrap();
        let fallback = if pattern {
            faults.patterns
        } else {
            faults.resources
        };
        faults.plan.pop_front().unwrap_or(fallback)
    }

    async fn apply(&self, mode: Mode) -> Result<(), Error> {
        match mode {
            Mode::Pass => Ok(()),
            Mode::Fail => Err(Error::Store("purges are failing".into())),
            Mode::Gated => {
                let mut rx = self.gate.subscribe();
                rx.wait_for(|open| *open).await.expect("the gate lives");
                Ok(())
            }
        }
    }
}

impl Store for FaultyStore {
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        self.inner.get(key)
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
        self.inner.fill(key, value, ttl, token)
    }

    fn release<'a>(&'a self, key: &'a EntryKey, token: &'a LeaseToken) -> StoreFuture<'a, ()> {
        self.inner.release(key, token)
    }

    fn put<'a>(&'a self, key: &'a EntryKey, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        self.inner.put(key, value, ttl)
    }

    fn remove<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, ()> {
        self.inner.remove(key)
    }

    fn purge_resource<'a>(&'a self, resource: &'a ResourceKey) -> StoreFuture<'a, u64> {
        let mode = self.next(false);
        Box::pin(async move {
            self.apply(mode).await?;
            self.inner.purge_resource(resource).await
        })
    }

    fn purge_pattern<'a>(&'a self, pattern: &'a ResourcePattern) -> StoreFuture<'a, u64> {
        let mode = self.next(true);
        Box::pin(async move {
            self.apply(mode).await?;
            self.inner.purge_pattern(pattern).await
        })
    }
}

/// The harness's store behind a [`FaultyStore`], and a builder over it.
fn faulty(h: &Harness, purge_timeout: Duration) -> (Arc<FaultyStore>, Builder) {
    let faulty = FaultyStore::new(h.store.as_dyn());
    let builder = CacheAsideLayer::builder(faulty.clone() as Arc<dyn Store>)
        .prefix(h.prefix.clone())
        .store_timeout(Duration::from_secs(5))
        .purge_timeout(purge_timeout);
    (faulty, builder)
}

/// Sends `GET path` once per path (each a stored miss) and waits for the
/// writes.
async fn cache<S>(h: &Harness, svc: &S, paths: &[&str])
where
    S: tower::Service<
            http::Request<()>,
            Response = Response<tower_cache_aside::http::ResponseBody<TestBody>>,
            Error = std::convert::Infallible,
        > + Clone,
{
    let before = h.store.stats().puts_ok;
    for path in paths {
        assert_eq!(send(svc, get(path)).await.cache_status(), STORED, "{path}");
    }
    h.store.wait_puts(before + paths.len()).await;
}

async fn purger_calls_fail_when_the_store_fails_and_are_retried(backend: Backend, name: &str) {
    let purge_timeout = Duration::from_millis(300);
    let h = backend.harness(name).await;
    let (store, builder) = faulty(&h, purge_timeout);
    let layer = builder
        .purge_on(Method::PUT, "/users/{id}", ["/users"])
        .build()
        .unwrap();
    let purger = layer.purger();
    let origin = versioned();
    let svc = layer.layer(origin.service());
    let fenced = ["/users/7", "/users", "/users/8", "/reports/1", "/reports/2"];
    cache(&h, &svc, &fenced).await;
    cache(&h, &svc, &["/teams/1"]).await;

    // The store fails at once: every call says so.
    store.set(Mode::Fail, Mode::Fail);
    let error = purger.purge_path("/users/8").await.unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    let error = purger.purge_glob("/reports/*").await.unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    let error = purger
        .purge_for(&Method::PUT, "/users/7")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PurgeFailed), "{error:?}");

    // Until the retry goes through, this instance does not serve what the
    // failed purges cover; the rest is still served. (Retries against a
    // store that fails at once are over within one poll of their task, so
    // none is in flight while this current-thread test probes.)
    for path in fenced {
        let reply = send(&svc, head(path)).await;
        assert_eq!(reply.cache_status(), pending(), "{path}");
    }
    assert_hit(&send(&svc, get("/teams/1")).await);

    // The store holds purges past the deadline: the calls time out.
    store.set(Mode::Gated, Mode::Gated);
    let error = purger.clone().purge_path("/users/8").await.unwrap_err();
    assert!(
        matches!(error, Error::Timeout(t) if t == purge_timeout),
        "{error:?}"
    );
    let error = purger
        .purge_for(&Method::PUT, "/users/7")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PurgeFailed), "{error:?}");
    assert_eq!(h.store.stats().purges, 0, "no purge reached the store");

    // The store heals (held calls go on): the retries remove every entry
    // the failed purges covered, and the fence is lifted.
    store.set(Mode::Pass, Mode::Pass);
    store.open_gate();
    let stats = h
        .store
        .wait_until("the failed purges retried", |s| {
            s.purged >= fenced.len() as u64
        })
        .await;
    assert_eq!(stats.purges_failed, 0, "{stats:?}");
    for path in fenced {
        assert_eq!(unfenced(&svc, path).await, MISS, "{path}");
    }
    assert_eq!(h.store.stats().purged, fenced.len() as u64);
    assert_hit(&send(&svc, get("/teams/1")).await);
    // Calls succeed again, and say what they removed.
    assert_eq!(purger.purge_path("/teams/1").await.unwrap(), 1);
    assert_eq!(purger.purge_for(&Method::PUT, "/users/7").await.unwrap(), 0);
}

/// The `Cache-Status` of `HEAD path` once no failed purge covers `path`:
/// polls (bounded) while the retries that cover it finish.
async fn unfenced<S>(svc: &S, path: &str) -> String
where
    S: tower::Service<
            http::Request<()>,
            Response = Response<tower_cache_aside::http::ResponseBody<TestBody>>,
            Error = std::convert::Infallible,
        > + Clone,
{
    let deadline = tokio::time::Instant::now() + SIGNAL_TIMEOUT;
    for _ in 0..400 {
        let status = send(svc, head(path)).await.cache_status();
        if status != pending() || tokio::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pending()
}

async fn a_failed_purge_fences_only_what_it_covers(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let (store, builder) = faulty(&h, Duration::from_secs(5));
    let layer = builder
        .purge_on(Method::PUT, "/users/{id}", ["/users", "/teams/*/members"])
        .build()
        .unwrap();
    let origin = versioned();
    let svc = layer.layer(origin.service());
    let covered = ["/teams/1/members", "/teams/2/members"];
    let uncovered = ["/teams/1", "/users/8", "/teams/1/members/x"];
    cache(&h, &svc, &["/users/7", "/users"]).await;
    cache(&h, &svc, &covered).await;
    cache(&h, &svc, &uncovered).await;

    // Exact purges go through, the pattern fails.
    store.set(Mode::Pass, Mode::Fail);
    let write = send(&svc, request(Method::PUT, "/users/7", &[])).await;
    assert_eq!(write.status, StatusCode::OK);
    assert_eq!(write.text(), "wrote /users/7 v1");
    assert_eq!(write.cache_status(), purge_failed(2));

    // What the pattern covers comes from the origin; the rest is served.
    for path in covered {
        let reply = send(&svc, head(path)).await;
        assert_eq!(reply.cache_status(), pending(), "{path}");
    }
    for path in uncovered {
        assert_hit(&send(&svc, get(path)).await);
    }
    for path in ["/users/7", "/users"] {
        assert_eq!(send(&svc, head(path)).await.cache_status(), MISS, "{path}");
    }

    let before = h.store.stats();
    store.set(Mode::Pass, Mode::Pass);
    let stats = h
        .store
        .wait_until("the pattern purge retried", |s| {
            s.purges_ok > before.purges_ok
        })
        .await;
    assert_eq!(stats.purged - before.purged, covered.len() as u64);
    for path in covered {
        assert_eq!(send(&svc, head(path)).await.cache_status(), MISS, "{path}");
    }
    for path in uncovered {
        assert_hit(&send(&svc, get(path)).await);
    }
}

/// While the background retry of a failed purge is in flight, the store may
/// still hold the stale entry: this instance must go on fetching the path
/// from the origin until the retry has gone through, as `purge.rs` says
/// ("Until then, this instance does not serve the affected paths"). A retry
/// may be in flight for long: each gets up to 60 s, and a pattern purge
/// over a large keyspace takes about that much (see the README's "Purge
/// cost").
async fn a_retry_in_flight_still_fences_this_instance(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let (store, builder) = faulty(&h, Duration::from_secs(10));
    let origin = versioned();
    let svc = builder.build().unwrap().layer(origin.service());
    cache(&h, &svc, &["/users/1"]).await;

    // The write's purge fails; its retry is held until the gate opens.
    store.plan([Mode::Fail, Mode::Gated]);
    let write = send(&svc, request(Method::PUT, "/users/1", &[])).await;
    assert_eq!(write.text(), "wrote /users/1 v1");
    assert_eq!(write.cache_status(), purge_failed(0));
    store.wait_started(2).await;

    // The retry has started and not finished: the stale v0 is still stored.
    let headed = send(&svc, head("/users/1")).await.cache_status();
    let read = send(&svc, get("/users/1")).await;
    store.open_gate();
    h.store
        .wait_until("the retry to go through", |s| s.purges_ok >= 1)
        .await;
    assert_eq!(headed, pending(), "HEAD while the retry is in flight");
    assert_eq!(
        (read.cache_status(), read.text()),
        (pending(), "/users/1 v1"),
        "GET while the retry is in flight"
    );
    assert_eq!(send(&svc, head("/users/1")).await.cache_status(), MISS);
}
