//! What the layer does when the store misbehaves: corrupted or planted
//! values in Redis, a Redis server that goes away and comes back, stores
//! that hang or fail. In every case the client gets the origin's answer,
//! never a panic nor an error of the layer's making.
//!
//! The corruption tests share one `redis-server` (distinct key prefixes);
//! the outage test stops and restarts a server of its own.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::interfaces::{ClientLike, KeysInterface};
use http::{Method, Response, StatusCode};
use tower::Layer;
use tower_cache_aside::store::{
    EntryKey, LeaseRequest, LeaseToken, Lookup, ResourceKey, ResourcePattern, StoreFuture,
};
use tower_cache_aside::{CacheAsideLayer, Error, IntoStore, RedisStore, Store};

use support::{
    assert_hit, cached_fields, flush_spawned, fred_client, get, head, read_field, request, send,
    send_unread, shared_redis, write_field, CountingStore, Origin, RedisServer, TestBody, CACHE,
    METHOD, STORED,
};

/// An origin whose body names the path it answered.
fn path_origin() -> Origin {
    Origin::new(|req| {
        let body = if req.method() == Method::HEAD {
            String::new()
        } else {
            format!("fresh {}", req.uri().path())
        };
        Response::builder()
            .header("content-type", "text/plain")
            .body(TestBody::full(body))
            .unwrap()
    })
}

async fn redis_layer(
    url: &str,
    prefix: &str,
    store_timeout: Duration,
) -> (Arc<CountingStore>, CacheAsideLayer) {
    let store = RedisStore::connect(url).await.expect("connect to redis");
    layer_on(store, prefix, store_timeout)
}

/// A layer on `store`, counted.
fn layer_on(
    store: RedisStore,
    prefix: &str,
    store_timeout: Duration,
) -> (Arc<CountingStore>, CacheAsideLayer) {
    let store = CountingStore::new(Arc::new(store));
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .prefix(prefix)
        .store_timeout(store_timeout)
        .build()
        .unwrap();
    (store, layer)
}

/// The one entry stored for `path` under `prefix` (named as
/// [`cached_fields`] names it).
async fn entry_key_of(raw: &fred::clients::Client, prefix: &str, path: &str) -> String {
    let keys = cached_fields(raw, &format!("{prefix}{{{path}}}")).await;
    assert_eq!(keys.len(), 1, "one entry for {path}: {keys:?}");
    keys.into_iter().next().unwrap()
}

async fn overwrite(raw: &fred::clients::Client, key: &str, value: Vec<u8>) {
    write_field(raw, key, Bytes::from(value)).await;
}

/// Offset of the fingerprint length in the entry layout (magic, version,
/// flags, status, stored_at, ttl).
const FINGERPRINT_LEN_AT: usize = 3 + 1 + 1 + 2 + 8 + 8;

#[tokio::test]
async fn corrupted_entries_are_misses_and_get_replaced() {
    let server = shared_redis();
    let prefix = "t:corrupted:";
    let (store, layer) = redis_layer(&server.url(), prefix, Duration::from_secs(5)).await;
    let origin = path_origin();
    let svc = layer.layer(origin.service());
    let raw = fred_client(&server.url()).await;

    type Spoil = fn(Vec<u8>) -> Vec<u8>;
    let cases: [(&str, Spoil); 8] = [
        ("garbage", |_| b"garbage".to_vec()),
        ("empty", |_| Vec::new()),
        ("json", |_| br#"{"status":200,"body":"not this"}"#.to_vec()),
        ("truncated", |v| v[..v.len() / 2].to_vec()),
        ("newer version", |mut v| {
            v[3] = 0xff;
            v
        }),
        ("trailing bytes", |mut v| {
            v.extend_from_slice(b"??");
            v
        }),
        ("huge length", |mut v| {
            v[FINGERPRINT_LEN_AT..FINGERPRINT_LEN_AT + 4].copy_from_slice(&[0xff; 4]);
            v
        }),
        ("bad status", |mut v| {
            v[5..7].copy_from_slice(&0xffffu16.to_be_bytes());
            v
        }),
    ];
    for (i, (what, spoil)) in cases.into_iter().enumerate() {
        let path = format!("/doc/{i}");
        assert_eq!(
            send(&svc, get(&path)).await.cache_status(),
            STORED,
            "{what}"
        );
        // Each case makes two writes: the first entry and its replacement.
        store.wait_puts(2 * i + 1).await;

        let key = entry_key_of(&raw, prefix, &path).await;
        let good = read_field(&raw, &key).await.expect("the entry");
        assert!(good.starts_with(b"TCA"), "{what}: the layer's entry");
        let bad = spoil(good.to_vec());
        overwrite(&raw, &key, bad.clone()).await;

        // The spoiled value is a miss; the origin answers in full.
        let response = send_unread(&svc, get(&path)).await;
        assert_eq!(response.status(), StatusCode::OK, "{what}");
        assert_eq!(
            support::cache_status_of(response.headers()),
            format!("{CACHE}; fwd=miss; stored; detail=bad-entry"),
            "{what}"
        );
        // The layer removes the bad value in the background; wait for that
        // before the body ends (which starts the write of the fresh entry).
        store.wait_removes(i + 1).await;
        let gone = read_field(&raw, &key).await;
        assert_eq!(gone, None, "{what}: the bad value was removed");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, format!("fresh {path}"), "{what}");
        assert_eq!(origin.calls_for(&path), 2, "{what}");

        // The fresh answer replaced it, and is served.
        store.wait_puts(2 * i + 2).await;
        let now = read_field(&raw, &key).await.expect("the fresh entry");
        assert!(now.starts_with(b"TCA") && now != bad, "{what}: replaced");
        let hit = send(&svc, get(&path)).await;
        assert_hit(&hit);
        assert_eq!(hit.text(), format!("fresh {path}"), "{what}");
        assert_eq!(origin.calls_for(&path), 2, "{what}");
    }
    let stats = store.stats();
    assert_eq!(stats.puts_ok, 2 * cases.len(), "{stats:?}");
    assert_eq!(stats.removes_done, cases.len(), "{stats:?}");
}

#[tokio::test]
async fn an_entry_planted_under_another_key_is_never_served() {
    let server = shared_redis();
    let prefix = "t:planted:";
    let (store, layer) = redis_layer(&server.url(), prefix, Duration::from_secs(5)).await;
    let origin = path_origin();
    let svc = layer.layer(origin.service());
    let raw = fred_client(&server.url()).await;

    for (i, path) in ["/public", "/victim"].into_iter().enumerate() {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED);
        store.wait_puts(i + 1).await;
    }
    // A valid entry, but for another URL, under /victim's key.
    let public = entry_key_of(&raw, prefix, "/public").await;
    let victim = entry_key_of(&raw, prefix, "/victim").await;
    let planted = read_field(&raw, &public)
        .await
        .expect("the entry of /public");
    overwrite(&raw, &victim, planted.to_vec()).await;

    let reply = send(&svc, get("/victim")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .cache_status()
            .starts_with(&format!("{CACHE}; fwd=miss")),
        "{}",
        reply.cache_status()
    );
    assert_eq!(reply.text(), "fresh /victim", "never the planted body");
    store.wait_puts(3).await;
    let hit = send(&svc, get("/victim")).await;
    assert_hit(&hit);
    assert_eq!(hit.text(), "fresh /victim");
    assert_eq!(origin.calls_for("/victim"), 2);
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_a_store_error_miss() {
    use fred::types::{CustomCommand, Value};

    let server = shared_redis();
    let prefix = "t:wrongtype:";
    let (store, layer) = redis_layer(&server.url(), prefix, Duration::from_secs(5)).await;
    let origin = path_origin();
    let svc = layer.layer(origin.service());
    let raw = fred_client(&server.url()).await;

    assert_eq!(send(&svc, get("/typed")).await.cache_status(), STORED);
    store.wait_puts(1).await;
    // A string where the resource's hash was, and a hash where its expiry
    // set was.
    let hash = format!("{prefix}{{/typed}}");
    let times = format!("{hash}:t");
    let _: i64 = raw.del(vec![hash.clone(), times.clone()]).await.unwrap();
    let _: Value = raw
        .custom(
            CustomCommand::new_static("SET", None, false),
            vec![hash.clone(), "not ours".into()],
        )
        .await
        .unwrap();
    let _: Value = raw
        .custom(
            CustomCommand::new_static("HSET", None, false),
            vec![times.clone(), "field".into(), "value".into()],
        )
        .await
        .unwrap();

    // The lookup deletes the foreign value, reads it as absent and takes
    // the lease, so the fresh answer is stored.
    let reply = send(&svc, get("/typed")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.cache_status(), STORED);
    assert_eq!(reply.text(), "fresh /typed");
    store.wait_puts(2).await;
    let hit = send(&svc, get("/typed")).await;
    assert_hit(&hit);
    assert_eq!(hit.text(), "fresh /typed");
}

/// Requests go on while Redis is down, and caching resumes once it is back
/// (fred reconnects by itself with the policy `RedisStore::connect` sets).
#[tokio::test]
async fn requests_succeed_while_redis_is_down_and_caching_resumes_after_restart() {
    let server = RedisServer::launch();
    let store = CountingStore::new(Arc::new(RedisStore::connect(&server.url()).await.unwrap()));
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .prefix("t:outage:")
        .store_timeout(Duration::from_millis(100))
        .purge_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let origin = path_origin();
    let svc = layer.layer(origin.service());

    // Healthy: a miss, then a hit (retried in case a loaded machine makes a
    // store call miss the short deadline).
    until_hit(&svc, &store, "/a").await;
    let puts_ok = store.stats().puts_ok;

    server.stop();
    assert!(!server.is_running());
    // Misses with the store's failure, until the circuit breaker opens
    // (5 failures); then the store is skipped.
    let unavailable = format!("{CACHE}; fwd=bypass; detail=store-unavailable");
    let degraded = |status: &str| {
        status == unavailable
            || (status.starts_with(&format!("{CACHE}; fwd=miss"))
                && (status.ends_with("detail=store-timeout")
                    || status.ends_with("detail=store-error")))
    };
    let mut skipped = 0;
    for round in 0..3 {
        for path in ["/a", "/b"] {
            let reply = send(&svc, get(path)).await;
            assert_eq!(reply.status, StatusCode::OK, "{path} #{round}");
            assert_eq!(reply.text(), format!("fresh {path}"), "{path} #{round}");
            let status = reply.cache_status();
            assert!(degraded(&status), "{path} #{round}: {status}");
            skipped += usize::from(status == unavailable);
        }
        let headed = send(&svc, head("/a")).await;
        assert_eq!(headed.status, StatusCode::OK);
        assert!(
            degraded(&headed.cache_status()),
            "{}",
            headed.cache_status()
        );
    }
    assert!(skipped > 0, "the circuit breaker opened");
    // A write whose purge cannot reach Redis still gets the origin's answer.
    let write = send(&svc, request(Method::POST, "/w", &[])).await;
    assert_eq!(write.status, StatusCode::OK);
    assert_eq!(write.text(), "fresh /w");
    assert!(
        write.cache_status().starts_with(METHOD),
        "{}",
        write.cache_status()
    );
    // Its failed purge is retried later; meanwhile /w is not read from the
    // store (the breaker skips it, or the pending purge fences it).
    let after_write = send(&svc, get("/w")).await;
    assert_eq!(after_write.status, StatusCode::OK);
    assert_eq!(after_write.text(), "fresh /w");
    let status = after_write.cache_status();
    assert!(
        status == unavailable || status == format!("{CACHE}; fwd=miss; detail=purge-pending"),
        "{status}"
    );
    // The writes of the misses above were skipped, not errors for clients.
    let stats = store.stats();
    assert_eq!(stats.puts_ok, puts_ok, "{stats:?}");

    server.start();
    let hit = until_hit(&svc, &store, "/a").await;
    assert_eq!(hit.text(), "fresh /a");
    // And for a path never asked for before.
    let hit = until_hit(&svc, &store, "/c").await;
    assert_eq!(hit.text(), "fresh /c");
    // And for the path whose purge failed, once the retry has gone through.
    let hit = until_hit(&svc, &store, "/w").await;
    assert_eq!(hit.text(), "fresh /w");
}

/// Sends `GET path` until a hit (bounded in count and time), waiting after
/// each miss for its write to finish; every answer must be the origin's.
async fn until_hit<S>(svc: &S, store: &CountingStore, path: &str) -> support::Reply
where
    S: tower::Service<
            http::Request<()>,
            Response = Response<tower_cache_aside::http::ResponseBody<TestBody>>,
            Error = std::convert::Infallible,
        > + Clone,
{
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut statuses = Vec::new();
    for attempt in 0..400 {
        assert!(
            Instant::now() < deadline,
            "no hit after {attempt} attempts: {statuses:?}"
        );
        let finished = store.stats().puts_finished();
        let reply = send(svc, get(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "attempt {attempt}");
        assert_eq!(reply.text(), format!("fresh {path}"), "attempt {attempt}");
        if reply.is_hit() {
            assert_hit(&reply);
            return reply;
        }
        let status = reply.cache_status();
        if status.contains("; stored") {
            store
                .wait_until("the write of a miss", |s| s.puts_finished() > finished)
                .await;
        }
        statuses.push(status);
        // Pacing between retries while fred reconnects.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no hit: {statuses:?}");
}

/// The Redis store bounds the layer's calls itself (`Store::bounded`): a
/// server that stops answering makes a lookup a `store-timeout` miss, from
/// fred's timeout, not a timer of the layer's.
#[tokio::test]
async fn a_paused_redis_is_a_timeout_miss_through_the_stores_own_bound() {
    let server = RedisServer::launch();
    // A client with fred's defaults: no timeout of its own, so only the
    // store's bound can end a command that Redis holds.
    let redis = RedisStore::from(fred_client(&server.url()).await);
    assert!(redis.bounded(Duration::from_millis(200)).is_some());
    let (store, layer) = layer_on(redis, "t:paused:", Duration::from_millis(200));
    let origin = path_origin();
    let svc = layer.layer(origin.service());
    until_hit(&svc, &store, "/a").await;

    let admin = fred_client(&server.url()).await;
    let paused: String = admin
        .custom(
            fred::types::CustomCommand::new_static("CLIENT", None, false),
            vec!["PAUSE", "5000", "ALL"],
        )
        .await
        .expect("CLIENT PAUSE");
    assert_eq!(paused, "OK");
    // `/a` is read by a hinted `HGET`, `/b` by the lookup script.
    for path in ["/a", "/b"] {
        let reply = send(&svc, get(path)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), format!("fresh {path}"));
        assert_eq!(
            reply.cache_status(),
            support::miss("store-timeout"),
            "{path}"
        );
    }
    let _: String = admin
        .custom(
            fred::types::CustomCommand::new_static("CLIENT", None, false),
            vec!["UNPAUSE"],
        )
        .await
        .expect("CLIENT UNPAUSE");
    let hit = until_hit(&svc, &store, "/a").await;
    assert_eq!(hit.text(), "fresh /a");
}

// ---------------------------------------------------------------------------
// Stores that hang or fail
// ---------------------------------------------------------------------------

/// Never answers a read or a write.
struct HangingStore;

/// Fails every call.
struct FailingStore;

impl Store for HangingStore {
    fn get<'a>(&'a self, _: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(std::future::pending())
    }
    fn lookup<'a>(&'a self, _: &'a EntryKey, _: &'a LeaseRequest) -> StoreFuture<'a, Lookup> {
        Box::pin(std::future::pending())
    }
    fn lease<'a>(&'a self, _: &'a EntryKey, _: &'a LeaseRequest) -> StoreFuture<'a, bool> {
        Box::pin(std::future::pending())
    }
    fn fill<'a>(
        &'a self,
        _: &'a EntryKey,
        _: Bytes,
        _: Duration,
        _: &'a LeaseToken,
    ) -> StoreFuture<'a, bool> {
        Box::pin(std::future::pending())
    }
    fn release<'a>(&'a self, _: &'a EntryKey, _: &'a LeaseToken) -> StoreFuture<'a, ()> {
        Box::pin(std::future::pending())
    }
    fn put<'a>(&'a self, _: &'a EntryKey, _: Bytes, _: Duration) -> StoreFuture<'a, ()> {
        Box::pin(std::future::pending())
    }
    fn remove<'a>(&'a self, _: &'a EntryKey) -> StoreFuture<'a, ()> {
        Box::pin(std::future::pending())
    }
    fn purge_resource<'a>(&'a self, _: &'a ResourceKey) -> StoreFuture<'a, u64> {
        Box::pin(std::future::pending())
    }
    fn purge_pattern<'a>(&'a self, _: &'a ResourcePattern) -> StoreFuture<'a, u64> {
        Box::pin(std::future::pending())
    }
}

fn down() -> Error {
    Error::Store("the store is down".into())
}

impl Store for FailingStore {
    fn get<'a>(&'a self, _: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(async { Err(down()) })
    }
    fn lookup<'a>(&'a self, _: &'a EntryKey, _: &'a LeaseRequest) -> StoreFuture<'a, Lookup> {
        Box::pin(async { Err(down()) })
    }
    fn lease<'a>(&'a self, _: &'a EntryKey, _: &'a LeaseRequest) -> StoreFuture<'a, bool> {
        Box::pin(async { Err(down()) })
    }
    fn fill<'a>(
        &'a self,
        _: &'a EntryKey,
        _: Bytes,
        _: Duration,
        _: &'a LeaseToken,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async { Err(down()) })
    }
    fn release<'a>(&'a self, _: &'a EntryKey, _: &'a LeaseToken) -> StoreFuture<'a, ()> {
        Box::pin(async { Err(down()) })
    }
    fn put<'a>(&'a self, _: &'a EntryKey, _: Bytes, _: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async { Err(down()) })
    }
    fn remove<'a>(&'a self, _: &'a EntryKey) -> StoreFuture<'a, ()> {
        Box::pin(async { Err(down()) })
    }
    fn purge_resource<'a>(&'a self, _: &'a ResourceKey) -> StoreFuture<'a, u64> {
        Box::pin(async { Err(down()) })
    }
    fn purge_pattern<'a>(&'a self, _: &'a ResourcePattern) -> StoreFuture<'a, u64> {
        Box::pin(async { Err(down()) })
    }
}

/// Two rounds of GETs through a store that never works: each is a miss
/// with `detail`, answered by the origin, and nothing is written.
async fn every_read_misses_and_nothing_is_written(
    store: Arc<dyn Store>,
    store_timeout: Duration,
    path: &str,
    detail: &str,
) {
    let store = CountingStore::new(store);
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .store_timeout(store_timeout)
        .build()
        .unwrap();
    let origin = path_origin();
    let svc = layer.layer(origin.service());

    for round in 1..=2 {
        let reply = send(&svc, get(path)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), format!("fresh {path}"));
        // Without an answer there is no fill lease, so nothing is written.
        assert_eq!(
            reply.cache_status(),
            format!("{CACHE}; fwd=miss; detail={detail}")
        );
        flush_spawned().await;
        assert_eq!(store.stats().puts_started, 0);
        assert_eq!(origin.calls(), round);
    }
}

#[tokio::test]
async fn a_store_that_never_answers_is_a_timeout_miss_and_nothing_is_written() {
    every_read_misses_and_nothing_is_written(
        Arc::new(HangingStore),
        Duration::from_millis(100),
        "/slow",
        "store-timeout",
    )
    .await;
}

#[tokio::test]
async fn a_failing_store_is_an_error_miss_and_nothing_is_written() {
    every_read_misses_and_nothing_is_written(
        Arc::new(FailingStore),
        Duration::from_secs(5),
        "/broken",
        "store-error",
    )
    .await;
}

// ---------------------------------------------------------------------------
// fred clients as stores
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_fred_client_and_a_fred_pool_are_stores() {
    let server = shared_redis();
    let client = fred_client(&server.url()).await;
    let config = fred::types::config::Config::from_url(&server.url()).unwrap();
    let pool = fred::types::Builder::from_config(config)
        .build_pool(2)
        .unwrap();
    pool.init().await.unwrap();

    let stores: [(&str, Arc<dyn Store>); 3] = [
        ("client", client.clone().into_store()),
        ("pool", pool.clone().into_store()),
        (
            "RedisStore::from",
            Arc::new(RedisStore::from(client.clone())),
        ),
    ];
    for (what, inner) in stores {
        let store = CountingStore::new(inner);
        let layer = CacheAsideLayer::builder(store.as_dyn())
            .prefix(format!("t:fred:{}:", what.replace(':', "")))
            .store_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let origin = path_origin();
        let svc = layer.layer(origin.service());
        assert_eq!(send(&svc, get("/x")).await.cache_status(), STORED, "{what}");
        store.wait_puts(1).await;
        let hit = send(&svc, get("/x")).await;
        assert_hit(&hit);
        assert_eq!(hit.text(), "fresh /x", "{what}");
        assert_eq!(origin.calls(), 1, "{what}");
    }
    // The layer also takes them directly.
    let _ = CacheAsideLayer::new(client);
    let _ = CacheAsideLayer::new(pool);
}

#[tokio::test]
async fn connecting_to_no_server_fails() {
    let url = format!("redis://127.0.0.1:{}", support::free_port());
    let result = tokio::time::timeout(Duration::from_secs(20), RedisStore::connect(&url))
        .await
        .expect("connect gives up by itself");
    assert!(result.is_err(), "nothing listens on {url}");
}

/// Expired variants do not pile up in their resource's hash: each fill
/// drops the resource's expired fields, and their expiries with them.
#[tokio::test]
async fn fills_drop_the_expired_variants_of_their_resource() {
    let server = shared_redis();
    let prefix = "t:trim:";
    let (store, layer) = redis_layer(&server.url(), prefix, Duration::from_secs(5)).await;
    // `?page=keep` lives an hour; the other pages one second.
    let origin = Origin::new(|req| {
        let max_age = if req.uri().query() == Some("page=keep") {
            3600
        } else {
            1
        };
        Response::builder()
            .header("cache-control", format!("max-age={max_age}"))
            .body(TestBody::full(format!("{}", req.uri())))
            .unwrap()
    });
    let svc = layer.layer(origin.service());
    let raw = fred_client(&server.url()).await;
    let entries = || async { cached_fields(&raw, &format!("{prefix}{{/list}}")).await };
    let expiries = || async {
        let count: i64 =
            fred::interfaces::SortedSetsInterface::zcard(&raw, format!("{prefix}{{/list}}:t"))
                .await
                .unwrap();
        count
    };

    for (i, page) in ["keep", "1", "2", "3"].into_iter().enumerate() {
        let reply = send(&svc, get(&format!("/list?page={page}"))).await;
        assert_eq!(reply.cache_status(), STORED, "{page}");
        store.wait_puts(i + 1).await;
    }
    assert_eq!(entries().await.len(), 4);
    assert_eq!(expiries().await, 4);

    // Time, not an event: the one-second pages expire.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let reply = send(&svc, get("/list?page=4")).await;
    assert_eq!(reply.cache_status(), STORED);
    store.wait_puts(5).await;
    assert_eq!(
        entries().await.len(),
        2,
        "keep and 4 are left: {:?}",
        entries().await
    );
    assert_eq!(expiries().await, 2);
    assert_hit(&send(&svc, get("/list?page=keep")).await);
}
