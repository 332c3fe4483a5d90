//! Shared test support:
//!
//! - [`RedisServer`]: a `redis-server` child process on a free loopback port,
//!   awaited by its "Ready to accept connections" line and killed on drop;
//!   [`shared_redis`] shares one among the tests of a binary that run at the
//!   same time.
//! - [`CountingStore`]: a [`Store`] wrapper that counts every call and lets a
//!   test await the completion of the background writes of the layer.
//! - [`Origin`] and [`TestBody`]: an inner `service_fn` that counts its calls
//!   and answers with a body made of given frames (data, trailers, errors).
//! - [`send`] and [`Reply`]: drive a service once and read the whole response.
//! - [`SlowProxy`]: a loopback TCP proxy in front of a server whose replies
//!   a test can delay or hold back, then let through again.
#![allow(dead_code)]

/// Runs every listed case, an `async fn(Backend, &str)`, against both
/// stores: `redis::<case>` on a real redis-server, `memory::<case>` on
/// `MemoryStore`. Use with `#[macro_use] mod support;`.
#[allow(unused_macros)]
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Redis, stringify!($case)).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Memory, stringify!($case)).await;
                }
            )*
        }
    };
}

pub mod cluster;
pub mod pki;
mod redis_server;
mod slow_proxy;
#[allow(unused_imports)]
pub use redis_server::{free_port, shared_redis, RedisServer, Sentinel};
#[allow(unused_imports)]
pub use slow_proxy::SlowProxy;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Debug;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fred::interfaces::ClientLike;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Service, ServiceExt};
use tower_cache_aside::store::{
    EntryKey, LeaseRequest, LeaseToken, Lookup, ResourceKey, ResourcePattern, StoreFuture,
    VariedFill,
};
use tower_cache_aside::{Builder, CacheAsideLayer, MemoryStore, RedisStore, Store};

/// The name every `Cache-Status` member of the layer starts with.
pub const CACHE: &str = "tower-cache-aside";
/// `Cache-Status` of a miss admitted for storage.
pub const STORED: &str = "tower-cache-aside; fwd=miss; stored";
/// `Cache-Status` of a miss that is not stored and has no detail (HEAD).
pub const MISS: &str = "tower-cache-aside; fwd=miss";
/// `Cache-Status` of a request forwarded because of its method.
pub const METHOD: &str = "tower-cache-aside; fwd=method";
/// The `Host` of the requests built by [`get`].
pub const HOST: &str = "example.test";
/// The safety net of every wait on a signal; never reached when all is well.
pub const SIGNAL_TIMEOUT: Duration = Duration::from_secs(20);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Cache-Status` of a miss that is not stored, and why.
pub fn miss(detail: &str) -> String {
    format!("{CACHE}; fwd=miss; detail={detail}")
}

/// `Cache-Status` of a request that was not looked up, and why.
pub fn bypass(detail: &str) -> String {
    format!("{CACHE}; fwd=bypass; detail={detail}")
}

/// Sends a PUT of `path` through `svc` and asserts that its purge removed
/// `purged` entries (`Cache-Status` ends `purged=<n>`); returns the reply.
pub async fn assert_write_purges<S, B>(svc: &S, path: &str, purged: u64) -> Reply
where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: Debug,
    B: Body<Data = Bytes>,
    B::Error: Debug,
{
    let write = send(svc, request(Method::PUT, path, &[])).await;
    let status = write.cache_status();
    assert!(
        status.ends_with(&format!("purged={purged}")),
        "PUT {path}: {status}"
    );
    write
}

/// Through a layer over `store`: a miss of `path` that is stored, a hit,
/// a write that purges it, a miss that is stored again; the store works
/// over its connection.
pub async fn caches_and_purges(store: RedisStore, path: &str) {
    let store = CountingStore::new(Arc::new(store));
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .store_timeout(Duration::from_secs(5))
        .build()
        .expect("a valid layer");
    let origin = Origin::text("user");
    let svc = tower::Layer::layer(&layer, origin.service());
    assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
    store.wait_puts_for(path, 1).await;
    assert_hit(&send(&svc, get(path)).await);
    assert_write_purges(&svc, path, 1).await;
    assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
    assert_eq!(origin.calls(), 3, "{path}");
}

/// Sends GETs through a layer over `store` (200 ms store timeout) whose
/// Redis cannot be reached or logged into: each is answered by the origin,
/// none is a hit, and once the breaker opens they bypass the store
/// (`detail=store-unavailable`).
pub async fn assert_passes_through(store: RedisStore, rounds: usize) {
    let layer = CacheAsideLayer::builder(store)
        .store_timeout(Duration::from_millis(200))
        .build()
        .expect("a valid layer");
    let origin = Origin::text("user");
    let svc = tower::Layer::layer(&layer, origin.service());
    for round in 0..rounds {
        let reply = send(&svc, get("/users/1")).await;
        assert_eq!(reply.status, StatusCode::OK, "round {round}");
        assert_eq!(reply.text(), "user");
        assert!(!reply.is_hit());
    }
    let last = send(&svc, get("/users/1")).await;
    assert_eq!(last.cache_status(), bypass("store-unavailable"));
    assert_eq!(origin.calls(), rounds + 1);
}

/// A plain fred client of a server the test started (for inspecting and
/// corrupting what the layer stored).
pub async fn fred_client(url: &str) -> fred::clients::Client {
    try_fred_client(url)
        .await
        .expect("connect to the test redis-server")
}

/// As [`fred_client`], for a server that may be closing its clients (a
/// primary being demoted): the connection's error, where it failed.
pub async fn try_fred_client(url: &str) -> Result<fred::clients::Client, fred::error::Error> {
    let config = fred::types::config::Config::from_url(url).expect("redis url");
    let client = fred::types::Builder::from_config(config)
        .build()
        .expect("fred client");
    client.init().await?;
    Ok(client)
}

/// One command (`args`: its name, then its arguments) on `client`, as an
/// administrator sends it: routed by no key.
pub async fn admin<R: fred::types::FromValue>(
    client: &fred::clients::Client,
    args: &[&str],
) -> Result<R, fred::error::Error> {
    let (name, rest) = args.split_first().expect("a command");
    let rest: Vec<String> = rest.iter().map(|a| a.to_string()).collect();
    client
        .custom(
            fred::types::CustomCommand::new(name.to_string(), None, false),
            rest,
        )
        .await
}

/// Every key matching `pattern`, by SCAN.
pub async fn scan_keys(client: &fred::clients::Client, pattern: &str) -> Vec<String> {
    use fred::types::{CustomCommand, Value};
    let mut keys = Vec::new();
    let mut cursor = String::from("0");
    loop {
        let reply: Value = client
            .custom(
                CustomCommand::new_static("SCAN", None, false),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    pattern.into(),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await
            .expect("SCAN");
        let Value::Array(mut parts) = reply else {
            panic!("unexpected SCAN reply {reply:?}");
        };
        assert_eq!(parts.len(), 2, "SCAN reply");
        let page = parts.pop().expect("keys");
        cursor = parts
            .pop()
            .and_then(|c| c.as_string())
            .expect("SCAN cursor");
        let Value::Array(page) = page else {
            panic!("unexpected SCAN page {page:?}");
        };
        keys.extend(page.into_iter().filter_map(|k| k.as_string()));
        if cursor == "0" {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Every field of the resource hashes whose keys match `pattern` (a key
/// glob such as `tca:*`), named `<hash>:<field>`: entries read
/// `<prefix>{<resource>}:v:<variant>`, leases `<prefix>{<resource>}:l:<variant>`.
/// The `:t` expiry sets are not listed.
pub async fn cached_fields(client: &fred::clients::Client, pattern: &str) -> Vec<String> {
    use fred::types::{CustomCommand, Value};
    let mut out = Vec::new();
    for key in scan_keys(client, pattern).await {
        let kind: Value = client
            .custom(
                CustomCommand::new_static("TYPE", None, false),
                vec![key.clone()],
            )
            .await
            .expect("TYPE");
        if kind.as_str().as_deref() != Some("hash") {
            continue;
        }
        let fields: Vec<String> = client
            .custom(
                CustomCommand::new_static("HKEYS", None, false),
                vec![key.clone()],
            )
            .await
            .expect("HKEYS");
        out.extend(fields.into_iter().map(|field| format!("{key}:{field}")));
    }
    out.sort();
    out
}

/// A name from [`cached_fields`] split into its hash and its field.
pub fn split_field(name: &str) -> (&str, &str) {
    let at = name.rfind("}:").expect("a <hash>:<field> name");
    (&name[..=at], &name[at + 2..])
}

/// The value of a field named as [`cached_fields`] names it.
pub async fn read_field(client: &fred::clients::Client, name: &str) -> Option<Bytes> {
    use fred::types::CustomCommand;
    let (hash, field) = split_field(name);
    client
        .custom(
            CustomCommand::new_static("HGET", None, false),
            vec![hash.to_owned(), field.to_owned()],
        )
        .await
        .expect("HGET")
}

/// Overwrites a field named as [`cached_fields`] names it.
pub async fn write_field(client: &fred::clients::Client, name: &str, value: Bytes) {
    use fred::types::{CustomCommand, Value};
    let (hash, field) = split_field(name);
    let _: Value = client
        .custom(
            CustomCommand::new_static("HSET", None, false),
            vec![Value::from(hash), Value::from(field), Value::Bytes(value)],
        )
        .await
        .expect("HSET");
}

// ---------------------------------------------------------------------------
// A store that tells what happened to it
// ---------------------------------------------------------------------------

/// Counts of the calls a [`CountingStore`] forwarded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub gets: usize,
    /// Gets that found a value.
    pub found: usize,
    /// Puts that were started (polled at least once).
    pub puts_started: usize,
    pub puts_ok: usize,
    pub puts_failed: usize,
    /// Puts dropped before they finished (the layer's deadline).
    pub puts_abandoned: usize,
    pub removes_done: usize,
    /// Purge calls that finished, whatever their outcome.
    pub purges: usize,
    /// Leases released without a write.
    pub releases: usize,
    /// Purge calls that succeeded.
    pub purges_ok: usize,
    /// Purge calls that returned an error.
    pub purges_failed: usize,
    /// Entries the successful purge calls said they removed.
    pub purged: u64,
}

impl Stats {
    /// Puts that are over, whatever their outcome.
    pub fn puts_finished(&self) -> usize {
        self.puts_ok + self.puts_failed + self.puts_abandoned
    }
}

/// Forwards every call to an inner store, counts it, signals the completion
/// of puts and removes, and remembers the keys put.
///
/// A view from [`Store::bounded`] counts into the same figures, so a layer
/// built on a counting store calls the inner store's bounded view, as it
/// would without the counting.
pub struct CountingStore {
    inner: Arc<dyn Store>,
    counts: Arc<Counts>,
}

/// What a counting store and its bounded views count, together.
struct Counts {
    stats: tokio::sync::watch::Sender<Stats>,
    keys: Mutex<Vec<EntryKey>>,
    /// Finished puts (whatever their outcome) per encoded resource.
    puts_per_resource: Mutex<HashMap<String, usize>>,
}

impl Debug for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingStore")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl CountingStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<CountingStore> {
        Arc::new(CountingStore {
            inner,
            counts: Arc::new(Counts {
                stats: tokio::sync::watch::Sender::new(Stats::default()),
                keys: Mutex::new(Vec::new()),
                puts_per_resource: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// `self` as the layer takes it.
    pub fn as_dyn(self: &Arc<Self>) -> Arc<dyn Store> {
        self.clone()
    }

    pub fn stats(&self) -> Stats {
        *self.counts.stats.borrow()
    }

    /// Every key the layer put, in the order the puts started.
    pub fn keys_put(&self) -> Vec<EntryKey> {
        self.counts
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `done(stats)` holds; panics after [`SIGNAL_TIMEOUT`].
    pub async fn wait_until(&self, what: &str, done: impl FnMut(&Stats) -> bool) -> Stats {
        let mut rx = self.counts.stats.subscribe();
        let stats = match tokio::time::timeout(SIGNAL_TIMEOUT, rx.wait_for(done)).await {
            Ok(Ok(stats)) => *stats,
            Ok(Err(_)) => unreachable!("the sender lives in self"),
            Err(_) => panic!(
                "timed out waiting for {what}; store stats: {:?}",
                self.stats()
            ),
        };
        stats
    }

    /// Waits until `n` puts in all have finished, and asserts they all
    /// succeeded.
    pub async fn wait_puts(&self, n: usize) {
        let stats = self
            .wait_until(&format!("{n} completed puts"), |s| s.puts_finished() >= n)
            .await;
        assert_eq!(
            stats.puts_ok,
            stats.puts_finished(),
            "a put failed or timed out: {stats:?}"
        );
    }

    /// Puts of entries of this resource (an encoded path, such as
    /// `/users/1`) that are over, whatever their outcome.
    pub fn puts_finished_for(&self, resource: &str) -> usize {
        self.counts
            .puts_per_resource
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(resource)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `n` puts of entries of `resource` have finished.
    pub async fn wait_puts_for(&self, resource: &str, n: usize) {
        self.wait_until(&format!("{n} completed puts of {resource}"), |_| {
            self.puts_finished_for(resource) >= n
        })
        .await;
    }

    /// Waits until `n` removes in all have finished.
    pub async fn wait_removes(&self, n: usize) {
        self.wait_until(&format!("{n} completed removes"), |s| s.removes_done >= n)
            .await;
    }

    fn update(&self, f: impl FnOnce(&mut Stats)) {
        self.counts.stats.send_modify(f);
    }

    fn count_purge(&self, result: &Result<u64, tower_cache_aside::Error>) {
        self.update(|s| {
            s.purges += 1;
            match result {
                Ok(removed) => {
                    s.purges_ok += 1;
                    s.purged += removed;
                }
                Err(_) => s.purges_failed += 1,
            }
        });
    }
}

/// Records the outcome of one put, or its abandonment when dropped first.
struct PutGuard<'a> {
    store: &'a CountingStore,
    resource: &'a str,
    ok: Option<bool>,
}

impl Drop for PutGuard<'_> {
    fn drop(&mut self) {
        // The per-resource count first, so that a waiter woken by the
        // stats update below sees it.
        *self
            .store
            .counts
            .puts_per_resource
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(self.resource.to_owned())
            .or_default() += 1;
        let ok = self.ok;
        self.store.update(|s| match ok {
            Some(true) => s.puts_ok += 1,
            Some(false) => s.puts_failed += 1,
            None => s.puts_abandoned += 1,
        });
    }
}

impl CountingStore {
    /// A write of `key`, counted as a put: `puts_ok` when `wrote` says it
    /// did.
    fn counted<'a, T: Send + 'a>(
        &'a self,
        key: &'a EntryKey,
        write: StoreFuture<'a, T>,
        wrote: fn(&Result<T, tower_cache_aside::Error>) -> bool,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move {
            self.counts
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(key.clone());
            self.update(|s| s.puts_started += 1);
            let mut guard = PutGuard {
                store: self,
                resource: key.resource().resource(),
                ok: None,
            };
            let result = write.await;
            guard.ok = Some(wrote(&result));
            drop(guard);
            result
        })
    }
}

impl Store for CountingStore {
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let result = self.inner.get(key).await;
            self.update(|s| {
                s.gets += 1;
                if matches!(result, Ok(Some(_))) {
                    s.found += 1;
                }
            });
            result
        })
    }

    /// Forwarded as one call, so that a store's own batch read is what the
    /// tests exercise (not the trait's default of one `get` per key).
    fn get_many<'a>(&'a self, keys: &'a [EntryKey]) -> StoreFuture<'a, Vec<Option<Bytes>>> {
        Box::pin(async move {
            let result = self.inner.get_many(keys).await;
            self.update(|s| {
                s.gets += keys.len();
                if let Ok(values) = &result {
                    s.found += values.iter().filter(|v| v.is_some()).count();
                }
            });
            result
        })
    }

    fn put<'a>(&'a self, key: &'a EntryKey, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        self.counted(key, self.inner.put(key, value, ttl), Result::is_ok)
    }

    fn lookup<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, Lookup> {
        Box::pin(async move {
            let result = self.inner.lookup(key, lease).await;
            self.update(|s| {
                s.gets += 1;
                if matches!(result, Ok(Lookup::Hit(_))) {
                    s.found += 1;
                }
            });
            result
        })
    }

    fn lease<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, bool> {
        self.inner.lease(key, lease)
    }

    /// Counted as a put: `puts_ok` when it wrote, `puts_failed` when its
    /// lease was lost or the store failed.
    fn fill<'a>(
        &'a self,
        key: &'a EntryKey,
        value: Bytes,
        ttl: Duration,
        token: &'a LeaseToken,
    ) -> StoreFuture<'a, bool> {
        self.counted(key, self.inner.fill(key, value, ttl, token), |r| {
            matches!(r, Ok(true))
        })
    }

    /// Counted as a put of its entry, as `fill` is.
    fn fill_varied<'a>(&'a self, fill: VariedFill<'a>) -> StoreFuture<'a, bool> {
        self.counted(fill.entry, self.inner.fill_varied(fill), |r| {
            matches!(r, Ok(true))
        })
    }

    fn release<'a>(&'a self, key: &'a EntryKey, token: &'a LeaseToken) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let result = self.inner.release(key, token).await;
            self.update(|s| s.releases += 1);
            result
        })
    }

    fn remove<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let result = self.inner.remove(key).await;
            self.update(|s| s.removes_done += 1);
            result
        })
    }

    fn purge_resource<'a>(&'a self, resource: &'a ResourceKey) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let result = self.inner.purge_resource(resource).await;
            self.count_purge(&result);
            result
        })
    }

    fn purge_pattern<'a>(&'a self, pattern: &'a ResourcePattern) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let result = self.inner.purge_pattern(pattern).await;
            self.count_purge(&result);
            result
        })
    }

    fn bounded(&self, timeout: Duration) -> Option<Arc<dyn Store>> {
        Some(Arc::new(CountingStore {
            inner: self.inner.bounded(timeout)?,
            counts: self.counts.clone(),
        }))
    }
}

/// Lets every task spawned so far run up to its first await.
///
/// The suite runs on Tokio's current-thread runtime, whose run queue is
/// first in, first out: a task spawned now is polled after every task
/// spawned before it (such as a background write the layer may have
/// started), so awaiting it means those have started.
pub async fn flush_spawned() {
    tokio::spawn(async {}).await.expect("no-op task");
}

// ---------------------------------------------------------------------------
// The store under test
// ---------------------------------------------------------------------------

/// Which store a behaviour test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Memory,
}

/// A test's store and the layer settings every test starts from.
pub struct Harness {
    pub store: Arc<CountingStore>,
    pub prefix: String,
    pub redis: Option<Arc<RedisServer>>,
}

impl Backend {
    /// A fresh store for the test `name` (its own key prefix on Redis).
    pub async fn harness(self, name: &str) -> Harness {
        let prefix = format!("t:{name}:");
        match self {
            Backend::Memory => Harness {
                store: CountingStore::new(Arc::new(MemoryStore::new())),
                prefix,
                redis: None,
            },
            Backend::Redis => {
                let server = shared_redis();
                let store = RedisStore::connect(&server.url())
                    .await
                    .expect("connect to the test redis-server");
                Harness {
                    store: CountingStore::new(Arc::new(store)),
                    prefix,
                    redis: Some(server),
                }
            }
        }
    }
}

impl Harness {
    /// The builder with this test's prefix and a store deadline that a
    /// loaded machine does not reach.
    pub fn builder(&self) -> Builder {
        CacheAsideLayer::builder(self.store.as_dyn())
            .prefix(self.prefix.clone())
            .store_timeout(Duration::from_secs(5))
    }

    /// The layer with this test's settings, changed by `configure`.
    pub fn layer(&self, configure: impl FnOnce(Builder) -> Builder) -> CacheAsideLayer {
        configure(self.builder())
            .build()
            .expect("valid layer configuration")
    }
}

// ---------------------------------------------------------------------------
// The origin
// ---------------------------------------------------------------------------

type Handler = dyn Fn(&Request<()>) -> Response<TestBody> + Send + Sync;

/// An inner service that counts its calls (in all and per path) and answers
/// through a handler.
#[derive(Clone)]
pub struct Origin {
    handler: Arc<Handler>,
    calls: Arc<AtomicUsize>,
    per_path: Arc<Mutex<HashMap<String, usize>>>,
}

impl Origin {
    pub fn new(
        handler: impl Fn(&Request<()>) -> Response<TestBody> + Send + Sync + 'static,
    ) -> Origin {
        Origin {
            handler: Arc::new(handler),
            calls: Arc::new(AtomicUsize::new(0)),
            per_path: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// An origin that answers 200 with `body` (empty for HEAD) to everything.
    pub fn text(body: &'static str) -> Origin {
        Origin::new(move |req| {
            let body = if req.method() == Method::HEAD {
                ""
            } else {
                body
            };
            Response::builder()
                .header("content-type", "text/plain")
                .body(TestBody::full(body))
                .expect("response")
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls for this path (without the query).
    pub fn calls_for(&self, path: &str) -> usize {
        self.per_path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The origin as a cloneable `tower::service_fn`.
    pub fn service(
        &self,
    ) -> impl Service<
        Request<()>,
        Response = Response<TestBody>,
        Error = Infallible,
        Future = impl std::future::Future<Output = Result<Response<TestBody>, Infallible>>
                     + Send
                     + 'static,
    > + Clone
           + Send
           + Sync
           + 'static {
        let origin = self.clone();
        tower::service_fn(move |req: Request<()>| {
            origin.calls.fetch_add(1, Ordering::SeqCst);
            *origin
                .per_path
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(req.uri().path().to_owned())
                .or_default() += 1;
            let response = (origin.handler)(&req);
            async move { Ok::<_, Infallible>(response) }
        })
    }
}

/// A response body made of given frames, with or without a known length.
#[derive(Debug)]
pub struct TestBody {
    frames: VecDeque<Result<Frame<Bytes>, BoxError>>,
    exact_len: Option<u64>,
    /// Never says it has ended before yielding `None` (like a channel).
    lazy_end: bool,
}

impl TestBody {
    /// One data frame, exact length known (like `Full`).
    pub fn full(data: impl Into<Bytes>) -> TestBody {
        let data = data.into();
        let len = data.len() as u64;
        let frames = if data.is_empty() {
            VecDeque::new()
        } else {
            VecDeque::from([Ok(Frame::data(data))])
        };
        TestBody {
            frames,
            exact_len: Some(len),
            lazy_end: false,
        }
    }

    /// Several data frames and no known length (a streamed body).
    pub fn chunks<I, D>(chunks: I) -> TestBody
    where
        I: IntoIterator<Item = D>,
        D: Into<Bytes>,
    {
        TestBody {
            frames: chunks
                .into_iter()
                .map(|c| Ok(Frame::data(c.into())))
                .collect(),
            exact_len: None,
            lazy_end: false,
        }
    }

    /// The same body, but one that tells its end only by yielding `None`.
    pub fn lazy_end(mut self) -> TestBody {
        self.lazy_end = true;
        self
    }

    /// Data then trailers.
    pub fn with_trailers(data: impl Into<Bytes>, trailers: HeaderMap) -> TestBody {
        TestBody {
            frames: VecDeque::from([Ok(Frame::data(data.into())), Ok(Frame::trailers(trailers))]),
            exact_len: None,
            lazy_end: false,
        }
    }

    /// Data, then an error instead of the end.
    pub fn failing(data: impl Into<Bytes>) -> TestBody {
        TestBody {
            frames: VecDeque::from([
                Ok(Frame::data(data.into())),
                Err::<Frame<Bytes>, BoxError>("the origin's body broke".into()),
            ]),
            exact_len: None,
            lazy_end: false,
        }
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.frames.pop_front())
    }

    fn is_end_stream(&self) -> bool {
        !self.lazy_end && self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}

// ---------------------------------------------------------------------------
// Requests and replies
// ---------------------------------------------------------------------------

/// `GET path` with the test `Host`.
pub fn get(path: &str) -> Request<()> {
    request(Method::GET, path, &[])
}

/// `HEAD path` with the test `Host`.
pub fn head(path: &str) -> Request<()> {
    request(Method::HEAD, path, &[])
}

/// A request with the test `Host` (unless `headers` has one) and `headers`.
pub fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        builder = builder.header("host", HOST);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request")
}

/// A whole response: head, body and trailers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// The layer's `Cache-Status` member; asserts there is exactly one.
    pub fn cache_status(&self) -> String {
        cache_status_of(&self.headers)
    }

    /// The remaining TTL of a hit; `None` for anything else.
    /// The remaining TTL of a fresh hit (collapsed or not); `None` for
    /// anything else, stale hits included.
    pub fn hit_ttl(&self) -> Option<u64> {
        let status = self.cache_status();
        let rest = status.strip_prefix("tower-cache-aside; hit; ttl=")?;
        let ttl = rest.split(';').next().unwrap_or(rest);
        Some(
            ttl.parse()
                .unwrap_or_else(|_| panic!("bad ttl in {status:?}")),
        )
    }

    /// Whether this is a stale hit (`hit; fwd=stale`).
    pub fn is_stale_hit(&self) -> bool {
        self.cache_status()
            .starts_with("tower-cache-aside; hit; fwd=stale; ttl=-")
    }

    pub fn is_hit(&self) -> bool {
        self.hit_ttl().is_some()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// The headers without those the layer computes per response.
    pub fn origin_headers(&self) -> HeaderMap {
        let mut headers = self.headers.clone();
        for name in ["cache-status", "age", "content-length"] {
            headers.remove(name);
        }
        headers
    }
}

/// The layer's `Cache-Status` member in `headers`; asserts there is exactly
/// one.
pub fn cache_status_of(headers: &HeaderMap) -> String {
    let ours: Vec<String> = headers
        .get_all("cache-status")
        .iter()
        .map(|v| v.to_str().expect("ASCII cache-status").to_owned())
        .filter(|v| v.starts_with(CACHE))
        .collect();
    assert_eq!(ours.len(), 1, "one cache-status member of the layer");
    ours.into_iter().next().expect("one member")
}

/// Asserts that `reply` is a hit with an `Age`; returns its TTL.
pub fn assert_hit(reply: &Reply) -> u64 {
    let Some(ttl) = reply.hit_ttl() else {
        panic!("expected a hit, got {:?}", reply.cache_status());
    };
    let age = reply.header("age").expect("a hit has an Age header");
    age.parse::<u64>()
        .unwrap_or_else(|_| panic!("Age {age:?} is a number of seconds"));
    ttl
}

/// Sends one request through a clone of `svc` and reads the whole response.
pub async fn send<S, R, B>(svc: &S, req: Request<R>) -> Reply
where
    S: Service<Request<R>, Response = Response<B>> + Clone,
    S::Error: Debug,
    B: Body<Data = Bytes>,
    B::Error: Debug,
{
    let response = svc.clone().oneshot(req).await.expect("the service answers");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("the body is read whole");
    let trailers = collected.trailers().cloned();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// Sends one request and returns the response without reading its body.
pub async fn send_unread<S, R, B>(svc: &S, req: Request<R>) -> Response<B>
where
    S: Service<Request<R>, Response = Response<B>> + Clone,
    S::Error: Debug,
{
    svc.clone().oneshot(req).await.expect("the service answers")
}

/// A header map from pairs.
pub fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    map
}
